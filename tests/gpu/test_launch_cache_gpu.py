"""launch_cache on a GPU: a replayed launch writes the same bits as the general path's launch, for every
framework the cache keys (CuPy, Numba, JAX, DeviceBuffer). The CPU side (what hits, what misses, stale
addresses, bounds): tests/test_launch_cache.py."""
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before any jax import: leave memory to us

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import launch_cache, plans
from nvfp4_driver.devmem import DeviceBuffer
from test_interop_gpu import NAMES, assert_same_rows, bits, problem, torch_reference  # tests/gpu is on sys.path

torch = pytest.importorskip("torch")


@pytest.fixture
def counted(monkeypatch):
    """One entry per call that ran the general path (its plan lookup); a replay runs none."""
    monkeypatch.setattr(launch_cache, "_entries", {})
    runs = []
    real = plans.meta_key
    monkeypatch.setattr(plans, "meta_key", lambda *args: runs.append(1) or real(*args))
    return runs


def run_three_times(call, poison, read_bits, counted, want, p, sync):
    """The first call takes the general path, the next two replay it; each must write ``want``."""
    for i in range(3):
        poison()
        call()
        sync()
        assert_same_rows(read_bits(), want, p)
        if i == 0:
            assert len(counted) == 1 and launch_cache._entries, "the general path left no launch to replay"
    assert len(counted) == 1, f"{len(counted) - 1} of the two repeated calls ran the general path again"


def test_device_buffer_replay_same_bits(rng, counted):
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    args = [DeviceBuffer.from_numpy(getattr(p, name)) for name in NAMES]
    out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    run_three_times(lambda: nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out),
                    lambda: out.fill_bytes(0xFF), lambda: bits(out), counted, want, p, torch.cuda.synchronize)


def test_cupy_replay_same_bits(rng, counted):
    cupy = pytest.importorskip("cupy")
    p = problem(rng)
    want = torch_reference(p, "float16", check=False)
    args = [cupy.asarray(getattr(p, name)) for name in NAMES]
    out = cupy.empty((p.cum_m, p.n), dtype=cupy.float16)
    run_three_times(lambda: nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out),
                    lambda: out.view(cupy.uint16).fill(0xFFFF), lambda: bits(out), counted, want, p,
                    cupy.cuda.get_current_stream().synchronize)


def test_numba_replay_same_bits(rng, counted):
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("numba sees no GPU")
    p = problem(rng)
    want = torch_reference(p, "float16", check=False)
    args = [numba_cuda.to_device(np.ascontiguousarray(getattr(p, name))) for name in NAMES]
    out = numba_cuda.device_array((p.cum_m, p.n), dtype=np.float16)
    poison = np.full((p.cum_m, p.n), 0xFFFF, dtype=np.uint16).view(np.float16)
    run_three_times(lambda: nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out),
                    lambda: out.copy_to_device(poison), lambda: bits(out), counted, want, p, numba_cuda.synchronize)


@pytest.mark.parametrize("stream", ["default", "torch side stream"])
def test_jax_replay_same_bits(rng, counted, stream):
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("no GPU backend for jax")
    import jax.numpy as jnp

    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    args = [jnp.asarray(getattr(p, name)) for name in NAMES]
    out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    side = torch.cuda.Stream() if stream != "default" else None
    kw = {} if side is None else {"stream": side.cuda_stream}

    def sync():
        torch.cuda.synchronize()
    run_three_times(lambda: nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, **kw),
                    lambda: out.fill_bytes(0xFF), lambda: bits(out), counted, want, p, sync)
    (entry,) = launch_cache._entries.values()
    assert entry.refs, "JAX arrays are replayed only for the very same objects"
