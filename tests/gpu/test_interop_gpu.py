"""Interop on a real GPU: every framework gives the same bits, streams order correctly, CUDA graphs
replay what eager computes, torch.compile traces the torch.library op, and several GPUs stay apart.

The reference of every comparison is the torch path's output for the same problem, itself checked once
against the float64 reference (SPEC §5); every other path must match it bit for bit.
"""
import os
import threading

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before any jax import: leave memory to us

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import driver, testing
from nvfp4_driver.devmem import DeviceBuffer
from seeds import SEED  # tests/gpu is on sys.path (pytest's rootdir-less import)

torch = pytest.importorskip("torch")

NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")


def problem(rng, groups=(37, 0, 1, 128, 200), n=136, k=384):
    return testing.random_problem(rng, list(groups), n=n, k=k, row_offset=5, trailing_rows=7)


def torch_inputs(p, device="cuda"):
    return [torch.from_numpy(np.ascontiguousarray(getattr(p, name))).to(device) for name in NAMES]


def bits(x) -> np.ndarray:
    """16-bit output of any framework -> uint16 numpy bit patterns."""
    if isinstance(x, torch.Tensor):
        return x.view(torch.int16).cpu().numpy().view(np.uint16)
    if isinstance(x, DeviceBuffer):
        return x.to_numpy().view(np.uint16)
    if hasattr(x, "get"):  # CuPy
        return np.asarray(x.get()).view(np.uint16)
    if hasattr(x, "copy_to_host"):  # Numba
        return x.copy_to_host().view(np.uint16)
    return np.asarray(x).view(np.uint16)  # JAX


def torch_reference(p, out_dtype="bfloat16", check=True):
    """The torch path's bits for ``p``, checked against the float64 reference."""
    args = torch_inputs(p)
    out = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out_dtype=out_dtype)
    torch.cuda.synchronize()
    got = bits(out)
    if check:
        ref, abs_sum = p.reference()
        report = testing.tolerance_check(got, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr)
        assert report.ok, f"seed {SEED}: {report}"
    return got


def group_rows(p):
    return slice(int(p.m_indptr[0]), int(p.m_indptr[-1]))


def assert_same_rows(got, want, p):
    """Bitwise on the groups' rows (the others are whatever the allocation held)."""
    rows = group_rows(p)
    np.testing.assert_array_equal(got[rows], want[rows], err_msg=f"seed {SEED}")


# ---------------------------------------------------------------------------------------------------
# frameworks
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
def test_torch_variants_agree(rng, out_dtype):
    p = problem(rng)
    want = torch_reference(p, out_dtype)
    args = torch_inputs(p)
    out = torch.empty((p.cum_m, p.n), dtype=getattr(torch, out_dtype), device="cuda")
    for _ in range(3):  # the first call plans, the next ones take the fast path
        assert nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out) is out
        assert_same_rows(bits(out), want, p)
    # DLPack-only views of the same tensors (what an unknown framework would hand us).
    dl = [DLPackOnly(t) for t in args]
    buf = nd.group_gemm_nvfp4_nt_groupwise(*dl[:5], alpha=dl[5], out_dtype=out_dtype)
    assert isinstance(buf, DeviceBuffer)
    assert_same_rows(bits(buf), want, p)
    # torch.from_dlpack of the DeviceBuffer: zero-copy, same bits.
    t = torch.from_dlpack(buf)
    assert t.data_ptr() == buf.ptr and t.dtype == getattr(torch, out_dtype)
    assert_same_rows(bits(t), want, p)


class DLPackOnly:
    def __init__(self, t):
        self.t = t

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()

    def __dlpack__(self, **kw):
        return self.t.__dlpack__(**kw)


def test_cupy_inputs(rng):
    cupy = pytest.importorskip("cupy")
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    args = [cupy.asarray(getattr(p, name)) for name in NAMES]
    try:
        out = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5])
    except TypeError as exc:  # a CuPy without bfloat16: our message, then float16
        assert "pass out=" in str(exc)
        out = None
    if out is not None:
        assert isinstance(out, cupy.ndarray)
        assert_same_rows(bits(out), want, p)
    want16 = torch_reference(p, "float16", check=False)
    out16 = cupy.empty((p.cum_m, p.n), dtype=cupy.float16)
    nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out16)
    assert_same_rows(bits(out16), want16, p)


def test_numba_inputs(rng):
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("numba sees no GPU")
    p = problem(rng)
    want = torch_reference(p, "float16")
    args = [numba_cuda.to_device(np.ascontiguousarray(getattr(p, name))) for name in NAMES]
    out = numba_cuda.device_array((p.cum_m, p.n), dtype=np.float16)
    nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
    numba_cuda.synchronize()
    assert_same_rows(bits(out), want, p)
    buf = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out_dtype="float16")
    assert isinstance(buf, DeviceBuffer)
    view = numba_cuda.as_cuda_array(buf)  # CAI, no copy
    assert view.__cuda_array_interface__["data"][0] == buf.ptr
    assert_same_rows(view.copy_to_host().view(np.uint16), want, p)


def test_jax_inputs(rng):
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("no GPU backend for jax")
    import jax.numpy as jnp

    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    args = [jnp.asarray(getattr(p, name)) for name in NAMES]
    for x in args:
        x.block_until_ready()
    buf = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5])
    assert isinstance(buf, DeviceBuffer)
    y = jnp.from_dlpack(buf)  # the documented way back into JAX
    assert y.dtype == jnp.bfloat16 and y.shape == (p.cum_m, p.n)
    assert_same_rows(np.asarray(y).view(np.uint16), want, p)
    # JAX reads the memory after we drop our reference: the export keeps it alive.
    del buf
    assert_same_rows(np.asarray(y + 0).view(np.uint16), want, p)


def test_raw_pointers(rng):
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in NAMES}
    out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    nd.group_gemm_nvfp4_nt_groupwise_ptr(
        *(bufs[name].ptr for name in NAMES), out.ptr, num_groups=p.num_groups, n=p.n, k=p.k, cum_m=p.cum_m,
        a_scale_nbytes=bufs["a_scale"].nbytes)
    assert_same_rows(out.to_numpy().view(np.uint16), want, p)


def test_mixed_frameworks_in_one_call(rng):
    cupy = pytest.importorskip("cupy")
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    t = torch_inputs(p)
    mixed = [t[0], cupy.asarray(p.b), DeviceBuffer.from_numpy(p.a_scale), DLPackOnly(t[3]), t[4],
             cupy.asarray(p.alpha)]
    out = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    nd.group_gemm_nvfp4_nt_groupwise(*mixed[:5], alpha=mixed[5], out=out)
    torch.cuda.synchronize()
    assert_same_rows(bits(out), want, p)


# ---------------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------------

def _delay(stream):
    """Keep ``stream`` busy for a few milliseconds, so a launch that ignores the ordering runs first."""
    with torch.cuda.stream(stream):
        torch.cuda._sleep(20_000_000)


@pytest.mark.parametrize("how", ["stream=", "current stream"])
def test_producer_op_consumer_on_three_streams(rng, how):
    p_old, p_new = problem(rng), problem(rng)
    want = torch_reference(p_new, "bfloat16")
    args = torch_inputs(p_old)  # the buffers hold the old problem until the producer overwrites them
    host = [torch.from_numpy(np.ascontiguousarray(getattr(p_new, name))).pin_memory() for name in NAMES]
    out = torch.full((p_new.cum_m, p_new.n), float("nan"), dtype=torch.bfloat16, device="cuda")
    producer, ours = torch.cuda.Stream(), torch.cuda.Stream()
    for _ in range(3):
        torch.cuda.synchronize()
        _delay(producer)
        with torch.cuda.stream(producer):
            for dst, src in zip(args, host):
                dst.copy_(src, non_blocking=True)
        ours.wait_stream(producer)
        if how == "stream=":
            nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, stream=ours)
        else:
            with torch.cuda.stream(ours):
                nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
        torch.cuda.current_stream().wait_stream(ours)
        got = out.clone()  # the consumer, on the default stream
        assert_same_rows(bits(got), want, p_new)
        for t, name in zip(args, NAMES):  # back to the old values for the next round
            t.copy_(torch.from_numpy(np.ascontiguousarray(getattr(p_old, name))))


def test_allocated_output_on_explicit_stream_is_tied_to_it(rng):
    """out=None with stream=: torch's allocator is told the output is used on that stream."""
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    args = torch_inputs(p)
    # Load the kernel first: a module's first load may wait for the GPU to go idle, which would let
    # the delay below finish (and the allocator rightly reuse the block) before the check. Seen once
    # in four runs on a 2 x H100 machine.
    nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5])
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    _delay(side)
    out = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], stream=side)
    ptr = out.data_ptr()
    del out  # freed while the kernel may still run on `side`: must not be handed out again yet
    other = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    assert other.data_ptr() != ptr
    torch.cuda.synchronize()
    out = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], stream=side)
    torch.cuda.current_stream().wait_stream(side)
    assert_same_rows(bits(out), want, p)


def test_device_buffer_dlpack_waits_for_its_writer(rng):
    """A DeviceBuffer written on a busy side stream, consumed through DLPack on another stream."""
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    dl = [DLPackOnly(t) for t in torch_inputs(p)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    for _ in range(3):
        _delay(side)
        buf = nd.group_gemm_nvfp4_nt_groupwise(*dl[:5], alpha=dl[5], stream=side)
        assert buf.stream == side.cuda_stream
        consumer = torch.from_dlpack(buf)  # torch passes its current (default) stream
        assert_same_rows(bits(consumer.clone()), want, p)


def test_cupy_current_stream(rng):
    cupy = pytest.importorskip("cupy")
    p = problem(rng)
    want = torch_reference(p, "float16", check=False)
    args = [cupy.asarray(getattr(p, name)) for name in NAMES]
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        out = cupy.empty((p.cum_m, p.n), dtype=cupy.float16)
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
        s.synchronize()
    assert_same_rows(bits(out), want, p)


# ---------------------------------------------------------------------------------------------------
# CUDA graphs
# ---------------------------------------------------------------------------------------------------

def _fill(static, p):
    for t, name in zip(static, NAMES):
        t.copy_(torch.from_numpy(np.ascontiguousarray(getattr(p, name))))


@pytest.mark.parametrize("give_out", [True, False])
def test_torch_cuda_graph_replays_match_eager(rng, give_out):
    sizes = (40, 0, 130, 7)
    static = torch_inputs(problem(rng, sizes, n=96, k=256))
    static_out = torch.empty((static[0].shape[0], 96), dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: plans and modules are made before capture
        for _ in range(2):
            nd.group_gemm_nvfp4_nt_groupwise(*static[:5], alpha=static[5], out=static_out if give_out else None)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = nd.group_gemm_nvfp4_nt_groupwise(*static[:5], alpha=static[5],
                                                    out=static_out if give_out else None)
    for i in range(12):
        # New values in the same buffers, the group sizes too (same G, same cum_m).
        cut = sorted(rng.integers(0, 178, size=3))
        new_sizes = [int(cut[0]), int(cut[1] - cut[0]), int(cut[2] - cut[1]), int(177 - cut[2])]
        p = testing.random_problem(rng, new_sizes, n=96, k=256, row_offset=5, trailing_rows=7)
        # a_scale_rows depends on m_indptr[G] and G only, both fixed here: the captured buffer fits.
        assert p.a_scale.shape == tuple(static[2].shape)
        _fill(static, p)
        graph.replay()
        eager = nd.group_gemm_nvfp4_nt_groupwise(*static[:5], alpha=static[5])
        torch.cuda.synchronize()
        assert_same_rows(bits(captured), bits(eager), p)
        if i == 0:
            ref, abs_sum = p.reference()
            assert testing.tolerance_check(bits(captured), ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr).ok


def test_checked_mode_refuses_capture_and_variable_steps_aside(rng, monkeypatch):
    p = problem(rng, (30, 60), n=64, k=128)
    args = torch_inputs(p)
    out = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, check_inputs=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="check_inputs=True cannot run while stream .* captured"):
        with torch.cuda.graph(graph):
            nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, check_inputs=True)
    monkeypatch.setenv("NVFP4_DRIVER_CHECK", "1")
    graph = torch.cuda.CUDAGraph()
    with pytest.warns(RuntimeWarning, match="NVFP4_DRIVER_CHECK"):
        from nvfp4_driver import ops
        ops._warned_capture[0] = False
        with torch.cuda.graph(graph):
            nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert_same_rows(bits(out), torch_reference(p, "bfloat16", check=False), p)


def test_cupy_graph(rng):
    cupy = pytest.importorskip("cupy")
    if not hasattr(cupy.cuda.Stream, "begin_capture"):
        pytest.skip("this CuPy cannot capture graphs")
    p = problem(rng, (50, 20), n=64, k=256)
    static = [cupy.asarray(getattr(p, name)) for name in NAMES]
    out = cupy.zeros((p.cum_m, p.n), dtype=cupy.float16)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        nd.group_gemm_nvfp4_nt_groupwise(*static[:5], alpha=static[5], out=out)  # warm-up
        s.begin_capture()
        nd.group_gemm_nvfp4_nt_groupwise(*static[:5], alpha=static[5], out=out)
        graph = s.end_capture()
    for _ in range(5):
        q = testing.random_problem(rng, [50, 20], n=64, k=256, row_offset=5, trailing_rows=7)
        for dst, name in zip(static, NAMES):
            dst.set(np.ascontiguousarray(getattr(q, name)), stream=s)
        graph.launch(s)
        s.synchronize()
        assert_same_rows(bits(out), torch_reference(q, "float16", check=False), q)


# ---------------------------------------------------------------------------------------------------
# torch.library / torch.compile
# ---------------------------------------------------------------------------------------------------

def test_custom_op_opcheck(rng):
    from nvfp4_driver import torch_ops  # noqa: F401

    # Every row inside a group: opcheck compares whole outputs, and rows outside are never written.
    p = testing.random_problem(rng, [20, 0, 9], n=64, k=128, row_offset=0, trailing_rows=0)
    args = torch_inputs(p)
    torch.library.opcheck(torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise.default,
                          (*args[:5], args[5], 128, 64, 128, True, torch.bfloat16),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    out = torch.empty((p.cum_m, p.n), dtype=torch.float16, device="cuda")
    torch.library.opcheck(torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out.default,
                          (*args[:5], args[5], out, 128, 128, 256, False),
                          test_utils=("test_schema", "test_faketensor"))


def moe_block(a, b, a_scale, b_scale, m_indptr, alpha):
    """A small MoE-ish block: the expert GEMM, then an activation in torch."""
    y = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, 128, 64,
                                                             256, True, torch.bfloat16)
    return y, torch.nn.functional.silu(y.float()) * 0.5


def moe_block_public(a, b, a_scale, b_scale, m_indptr, alpha, out):
    y = nd.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_n=32, out_dtype="float16")
    nd.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, out=out)
    return y * 2, out.float().sum()


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_torch_compile_fullgraph(rng, backend):
    from nvfp4_driver import torch_ops  # noqa: F401

    torch._dynamo.reset()
    p = problem(rng, (33, 0, 90), n=128, k=256)
    args = torch_inputs(p)
    rows = group_rows(p)
    y_eager, z_eager = moe_block(*args)
    compiled = torch.compile(moe_block, fullgraph=True, backend=backend)
    y, z = compiled(*args)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(bits(y)[rows], bits(y_eager)[rows])
    torch.testing.assert_close(z[rows], z_eager[rows], rtol=1e-6, atol=0)
    # The public function, traced: dispatched to the custom ops (functional and out= forms).
    out_e = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    out_c = torch.empty_like(out_e)
    ye, se = moe_block_public(*args, out_e)
    yc, sc = torch.compile(moe_block_public, fullgraph=True, backend=backend)(*args, out_c)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(bits(yc)[rows], bits(ye)[rows])
    np.testing.assert_array_equal(bits(out_c)[rows], bits(out_e)[rows])


# ---------------------------------------------------------------------------------------------------
# several GPUs
# ---------------------------------------------------------------------------------------------------

def _need_two_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {torch.cuda.device_count()}")


def test_tensors_on_gpu1_while_current_is_gpu0(rng):
    _need_two_gpus()
    torch.cuda.set_device(0)
    p = problem(rng)
    want = torch_reference(p, "bfloat16")
    args = torch_inputs(p, "cuda:1")
    for _ in range(2):
        out = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5])
        assert out.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
        torch.cuda.synchronize(1)
        assert_same_rows(bits(out), want, p)
    with torch.cuda.device(1):  # the current stream of GPU 1 is the default there
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            out = nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5])
        side.synchronize()
    assert_same_rows(bits(out), want, p)
    # Modules load once per process (context-independent libraries), functions once per device.
    files = {key[0] for key in driver._functions}
    assert len(driver._libraries) >= len(files)
    assert {key[2] for key in driver._functions} >= {0, 1}


def test_arrays_on_two_gpus_refused(rng):
    _need_two_gpus()
    numba_cuda = pytest.importorskip("numba.cuda")
    p = problem(rng)
    args = torch_inputs(p, "cuda:0")
    with numba_cuda.gpus[1]:
        b1 = numba_cuda.to_device(p.b)  # a CAI array: its device is only known to the driver
    with pytest.raises(ValueError, match=r"b on cuda:1.*all arrays must be on one device|is on cuda:1"):
        nd.group_gemm_nvfp4_nt_groupwise(args[0], b1, *args[2:5], alpha=args[5])
    with pytest.raises(ValueError, match="all arrays must be on one device"):
        nd.group_gemm_nvfp4_nt_groupwise(args[0], args[1].to("cuda:1"), *args[2:5], alpha=args[5])


def test_two_threads_on_two_gpus(rng):
    _need_two_gpus()
    problems = [problem(rng), problem(rng, (300, 5), n=256, k=512)]
    wants = [torch_reference(q, "bfloat16") for q in problems]
    errors = []
    barrier = threading.Barrier(2)

    def work(dev):
        try:
            q, want = problems[dev], wants[dev]
            args = torch_inputs(q, f"cuda:{dev}")
            out = torch.empty((q.cum_m, q.n), dtype=torch.bfloat16, device=f"cuda:{dev}")
            barrier.wait()
            for i in range(200):
                nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
                if i % 50 == 49:
                    torch.cuda.synchronize(dev)
                    assert_same_rows(bits(out), want, q)
        except BaseException as exc:  # reported by the main thread
            errors.append((dev, exc))

    threads = [threading.Thread(target=work, args=(dev,)) for dev in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
