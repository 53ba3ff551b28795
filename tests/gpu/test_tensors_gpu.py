"""tensors.py with the real frameworks on a GPU (the CPU side, through fakes: tests/test_tensors.py),
and the torch fast path of the op: what a repeated call skips, and what it costs on the host."""
import os
import types

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before any jax import: leave memory to us

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import config, ops, plans, tensors, testing
from nvfp4_driver.outputs import allocate
from nvfp4_driver.streams import resolve_stream
from nvfp4_driver.tensors import as_device_array

torch = pytest.importorskip("torch")


def dlpack_only(t):
    """Only the DLPack half of a torch tensor (a torch tensor itself takes the torch path)."""
    return types.SimpleNamespace(__dlpack__=t.__dlpack__, __dlpack_device__=t.__dlpack_device__)


def test_torch_tensor_and_alloc_and_stream():
    t = torch.zeros(6, 8, dtype=torch.uint8, device="cuda")[1:, ::2]
    a = as_device_array(t, "a")
    assert (a.ptr, a.shape, a.strides, a.dtype, a.device) == \
        (t.data_ptr(), (5, 4), (8, 2), "uint8", t.device.index)
    for dtype, tdtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        obj, out = allocate(a, (3, 16), dtype)
        assert obj.dtype == tdtype and obj.device == t.device and obj.shape == (3, 16)
        assert out.ptr == obj.data_ptr() and out.is_contiguous
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        assert resolve_stream(None, {"a": a}) == s.cuda_stream
    assert resolve_stream(None, {"a": a}) == torch.cuda.current_stream().cuda_stream
    assert resolve_stream(s, {"a": a}) == s.cuda_stream
    # Via DLPack only (what a foreign framework would hand us).
    d = as_device_array(dlpack_only(t), "a")
    assert (d.ptr, d.shape, d.strides, d.dtype, d.device, d.framework) == \
        (t.data_ptr(), (5, 4), (8, 2), "uint8", t.device.index, "dlpack")
    bf = torch.zeros(4, dtype=torch.bfloat16, device="cuda")
    assert as_device_array(dlpack_only(bf), "out").dtype == "bfloat16"


def test_torch_fast_path_is_taken_and_cheap(rng, monkeypatch, record_ulps):
    """A repeated torch call with ``out=`` hits the fast path's plan: it never enters the general path
    (``ops._call``) nor reads an array protocol (``tensors.as_device_array``), gives the reference's
    answer, and adds to a bare launch of the same kernel at most half of what the general path adds.

    Measured on an H200 host: 6.0-6.3 us over the launch, the general path 45-53 us over it. A ratio,
    not a time, so that a slower host slows both sides alike."""
    from benchmarks.common import host_us_per_call  # the benchmarks' timing helper (repository root)

    monkeypatch.setattr(plans, "torch_plans", {})  # this call's plan alone
    p = testing.random_problem(rng, [16], n=8, k=128, row_offset=0, trailing_rows=0)  # one block
    t = [torch.from_numpy(np.ascontiguousarray(getattr(p, name))).cuda()
         for name in ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")]
    out = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")

    def call():
        nd.group_gemm_nvfp4_nt_groupwise(t[0], t[1], t[2], t[3], t[4], alpha=t[5], out=out)

    call()  # the first call takes the general path and leaves the plan
    (entry,) = plans.torch_plans.values()
    real_call = ops._call
    slow = {"ops._call": 0, "tensors.as_device_array": 0}

    def counted(label, real):
        def wrapper(*args, **kwargs):
            slow[label] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ops, "_call", counted("ops._call", ops._call))
    monkeypatch.setattr(tensors, "as_device_array", counted("tensors.as_device_array", tensors.as_device_array))
    out.view(torch.int16).fill_(int(np.uint16(testing.POISON_BITS["bfloat16"]).view(np.int16)))
    call()
    torch.cuda.synchronize()
    ref, abs_sum = p.reference()
    report = testing.tolerance_check(out, ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr)
    assert report.ok, report
    record_ulps(report)

    fast_us = host_us_per_call(call, rounds=20)
    assert slow == {"ops._call": 0, "tensors.as_device_array": 0}, f"a repeated torch call went the slow way: {slow}"
    stream = torch.cuda.current_stream().cuda_stream
    args = tuple(x.data_ptr() for x in t) + (out.data_ptr(),) + entry.tail
    launch_us = host_us_per_call(lambda: entry.launch(entry.grid, stream, args), rounds=20)
    general_us = host_us_per_call(lambda: real_call(t[0], t[1], t[2], t[3], t[4], t[5], None, None, None, None, out,
                                                    None, None, None, config.flags()), rounds=20)
    print(f"host us per call: torch fast path {fast_us:.2f}, its bare launch {launch_us:.2f}, "
          f"the general path {general_us:.2f}")
    assert fast_us - launch_us <= (general_us - launch_us) / 2, (fast_us, launch_us, general_us)


def test_cupy():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("no CUDA device for cupy")
    x = cupy.zeros((4, 6), dtype=cupy.float16)[:, 1::2]
    a = as_device_array(x, "a")
    assert (a.ptr, a.shape, a.strides, a.dtype, a.device, a.framework) == \
        (x.data.ptr, (4, 3), (6, 2), "float16", x.device.id, "cupy")
    obj, out = allocate(a, (2, 8), "float16")
    assert out.ptr == obj.data.ptr and obj.dtype == np.float16 and obj.shape == (2, 8)
    try:
        obj, out = allocate(a, (2, 8), "bfloat16")
        assert out.dtype == "bfloat16" and out.ptr == obj.data.ptr
    except TypeError as e:  # older CuPy: must be our message, not CuPy's
        assert "pass out=" in str(e)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        assert resolve_stream(None, [a]) == s.ptr
    assert resolve_stream(s, [a]) == s.ptr


def test_numba():
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("no CUDA device for numba")
    d = numba_cuda.to_device(np.arange(12, dtype=np.int32).reshape(3, 4))
    a = as_device_array(d, "m_indptr")
    cai_ = d.__cuda_array_interface__
    assert (a.ptr, a.shape, a.strides, a.dtype, a.framework) == \
        (cai_["data"][0], (3, 4), (4, 1), "int32", "cai")
    assert resolve_stream(None, [a]) == (cai_.get("stream") or 0)


def test_jax():
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("no GPU backend for jax")
    import jax.numpy as jnp
    x = jnp.arange(32, dtype=jnp.uint8).reshape(4, 8)
    a = as_device_array(x, "a")
    assert (a.ptr, a.shape, a.strides, a.dtype) == \
        (x.unsafe_buffer_pointer(), (4, 8), (8, 1), "uint8")
    bf = jnp.zeros((2, 8), dtype=jnp.bfloat16)  # no CAI for bfloat16: DLPack
    b = as_device_array(bf, "out", stream=0)
    assert (b.ptr, b.shape, b.dtype) == (bf.unsafe_buffer_pointer(), (2, 8), "bfloat16")
    assert b.framework in ("dlpack", "cai")
    with pytest.raises(TypeError, match="pass out="):
        allocate(b, (2, 8), "bfloat16")
