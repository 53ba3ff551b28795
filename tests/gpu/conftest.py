"""GPU tests: skipped cleanly without a driver, a GPU or a CUDA build of torch.

The largest error (in units in the last place of the output dtype) over the whole run is printed
at the end, for the closing notes of the issues.
"""
import pytest

from nvfp4_driver import driver

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
def record_ulps(request):
    def record(value: float):
        _MAX_ULPS.append((float(value), request.node.nodeid))
    return record


def pytest_terminal_summary(terminalreporter):
    if _MAX_ULPS:
        worst = max(_MAX_ULPS)
        terminalreporter.write_line(
            f"largest error over {len(_MAX_ULPS)} GEMM checks: {worst[0]:.3f} ulp of the output dtype ({worst[1]})")
