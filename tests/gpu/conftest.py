"""GPU tests: skipped cleanly without a driver, a GPU or a CUDA build of torch.

The largest error (in units in the last place of the output dtype) over the whole run is printed
at the end, for the closing notes of the issues.
"""
import numpy as np
import pytest

from nvfp4_driver import driver
from seeds import SEED, seed_for  # tests/gpu is on sys.path (pytest's rootdir-less import)

_MAX_ULPS: list[tuple[float, str]] = []


def _gpu_ready() -> tuple[bool, str]:
    if not driver.is_available():
        return False, "no CUDA driver or GPU"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch has no CUDA"
    return True, ""


def pytest_collection_modifyitems(config, items):
    ready, why = _gpu_ready()
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if not ready:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def rng(request):
    """A generator for this test, seeded by :func:`seeds.seed_for`; the seed and the command that
    replays it are printed, so pytest shows them with a failure."""
    seed = seed_for(request.node.nodeid)
    print(f"numpy seed={seed}; replay: NVFP4_TEST_SEED={SEED} python -m pytest '{request.node.nodeid}'")
    return np.random.default_rng(seed)


_MAX_ALLOWANCE: list[tuple[float, str]] = []


@pytest.fixture
def record_ulps(request):
    """Record a check's largest error: in ulps of the output dtype, and as the fraction of SPEC §5's
    per-element allowance (1 ulp + K * 2**-23 * sum|A*B|) that the worst element used."""
    def record(report):
        _MAX_ULPS.append((float(report.max_ulps), request.node.nodeid))
        used = abs(report.worst_out - report.worst_ref) / report.worst_tol if report.worst_tol else 0.0
        _MAX_ALLOWANCE.append((used, request.node.nodeid))
    return record


_BYTES_CHECKED: list[int] = []


@pytest.fixture
def record_bytes():
    """Record how many output bytes a bit-exact check compared (summed in the closing line)."""
    return _BYTES_CHECKED.append


def pytest_terminal_summary(terminalreporter):
    if _BYTES_CHECKED:
        terminalreporter.write_line(
            f"bit-exact quantizer checks: {sum(_BYTES_CHECKED):,} output bytes in {len(_BYTES_CHECKED)} checks")
    if _MAX_ULPS:
        worst = max(_MAX_ULPS)
        terminalreporter.write_line(
            f"largest error over {len(_MAX_ULPS)} GEMM checks: {worst[0]:.3f} ulp of the output dtype ({worst[1]})")
        used = max(_MAX_ALLOWANCE)
        terminalreporter.write_line(
            f"largest fraction of the SPEC tolerance used: {used[0]:.3f} ({used[1]})")
