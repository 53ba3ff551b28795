"""The torch.library ops without a GPU: registered whatever the import order, fake implementations
(shapes and dtypes from the documented formulas of nvfp4_driver.layout), and the public quantize
functions traced into them by dynamo."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from nvfp4_driver import layout, quantize, torch_hooks, torch_ops  # noqa: F401  (torch_ops: the ops exist)

ROOT = Path(__file__).resolve().parents[1]
OPS = ("group_gemm_nvfp4_nt_groupwise", "group_gemm_nvfp4_nt_groupwise_out", "quantize_activations",
       "quantize_weights", "dequantize", "global_scale_from_amax", "alpha_from_global_scales",
       "silu_mul_quantize_activations", "silu_mul_global_scale_from_amax")


def run_python(code: str) -> str:
    """``code`` in a fresh interpreter (the import order is the point), with this checkout on the path."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("first,second", [("nvfp4_driver", "torch"), ("torch", "nvfp4_driver")])
def test_ops_resolve_whatever_the_import_order(first, second):
    out = run_python(f"""
import sys
import {first}
import {second}
import torch
for name in {OPS!r}:
    getattr(torch.ops.nvfp4_driver, name)
from nvfp4_driver import torch_hooks
assert torch_hooks.is_compiling is not None, "no compile hooks"
# The import hook is gone and torch keeps its own loader.
assert not any(type(f).__name__ == "_TorchImportFinder" for f in sys.meta_path), sys.meta_path
assert "RegisterAfter" not in type(torch.__loader__).__name__, torch.__loader__
assert torch.__spec__.loader is torch.__loader__
print("ok")
""")
    assert out.strip() == "ok"


def test_importing_the_package_does_not_import_torch():
    out = run_python("import sys, nvfp4_driver, nvfp4_driver.moe; print('torch' in sys.modules)")
    assert out.strip() == "False"


def test_a_failed_torch_import_leaves_the_hook_in_place():
    """An ImportError inside torch's import reaches the caller unchanged, and the hook still waits."""
    out = run_python("""
import sys, builtins
import nvfp4_driver
real_import = builtins.__import__
def refuse(name, *args, **kwargs):
    if name == "torch._C":
        raise ImportError("simulated broken torch")
    return real_import(name, *args, **kwargs)
builtins.__import__ = refuse
try:
    import torch
except ImportError as exc:
    print("import failed:", exc)
builtins.__import__ = real_import
print(any(type(f).__name__ == "_TorchImportFinder" for f in sys.meta_path))
""")
    assert "import failed" in out and out.strip().endswith("True"), out


# ------------------------------------------------------------------------------- fake implementations


def fake(shape, dtype):
    return torch.empty(shape, dtype=dtype)


@pytest.mark.parametrize("rows,groups,k", [(0, 1, 64), (1, 1, 128), (300, 7, 256), (513, 256, 7168)])
def test_quantize_activations_fake_shapes(rows, groups, k):
    with FakeTensorMode():
        x = fake((rows, k), torch.bfloat16)
        a, a_scale = torch.ops.nvfp4_driver.quantize_activations(x, fake((groups + 1,), torch.int32),
                                                                 fake((groups,), torch.float32))
    assert (tuple(a.shape), a.dtype) == ((rows, k // 2), torch.uint8)
    assert (tuple(a_scale.shape), a_scale.dtype) == ((layout.a_scale_rows_upper_bound(rows, groups), k // 16),
                                                     torch.uint8)


@pytest.mark.parametrize("groups,n,k", [(1, 8, 64), (3, 130, 256), (4, 256, 512)])
def test_quantize_weights_and_dequantize_fake_shapes(groups, n, k):
    with FakeTensorMode():
        b, b_scale = torch.ops.nvfp4_driver.quantize_weights(fake((groups, n, k), torch.float16),
                                                             fake((1,), torch.float32))
        w = torch.ops.nvfp4_driver.dequantize(b, b_scale, None, fake((groups,), torch.float32), torch.float32)
        x = torch.ops.nvfp4_driver.dequantize(fake((5, k // 2), torch.uint8), fake((256, k // 16), torch.uint8),
                                              fake((3,), torch.int32))
    assert (tuple(b.shape), b.dtype) == ((groups, n, k // 2), torch.uint8)
    assert tuple(b_scale.shape) == (groups, layout.padded_n(n), k // 16) and b_scale.dtype == torch.uint8
    assert (tuple(w.shape), w.dtype) == ((groups, n, k), torch.float32)
    assert (tuple(x.shape), x.dtype) == ((5, k), torch.bfloat16)


def test_scale_op_fake_shapes():
    with FakeTensorMode():
        x2, x3 = fake((10, 128), torch.bfloat16), fake((6, 32, 64), torch.float32)
        ind = fake((5,), torch.int32)
        shapes = [tuple(torch.ops.nvfp4_driver.global_scale_from_amax(*args).shape) for args in
                  [(x2,), (x2, ind), (x2, ind, False), (x3,), (x3, None, False)]]
        alphas = [tuple(torch.ops.nvfp4_driver.alpha_from_global_scales(fake(a, torch.float32),
                                                                        fake(b, torch.float32)).shape)
                  for a, b in [((1,), (7,)), ((7,), (1,)), ((7,), (7,)), ((), (1,))]]
    assert shapes == [(1,), (4,), (1,), (6,), (1,)]
    assert alphas == [(7,), (7,), (7,), (1,)]


@pytest.mark.parametrize("call,match", [
    (lambda: torch.ops.nvfp4_driver.quantize_activations(fake((4, 96), torch.bfloat16), fake((3,), torch.int32),
                                                         fake((1,), torch.float32)), r"K=96"),
    (lambda: torch.ops.nvfp4_driver.quantize_activations(fake((4, 128), torch.bfloat16), fake((3,), torch.int64),
                                                         fake((1,), torch.float32)), r"int32"),
    (lambda: torch.ops.nvfp4_driver.quantize_activations(fake((4, 128), torch.bfloat16), fake((3,), torch.int32),
                                                         fake((3,), torch.float32)), r"\(G,\) = \(2,\)"),
    (lambda: torch.ops.nvfp4_driver.quantize_weights(fake((4, 128), torch.bfloat16), fake((1,), torch.float32)),
     r"3-D"),
    (lambda: torch.ops.nvfp4_driver.dequantize(fake((4, 64), torch.uint8), fake((128, 8), torch.uint8)),
     r"need m_indptr"),
    (lambda: torch.ops.nvfp4_driver.alpha_from_global_scales(fake((2,), torch.float32), fake((3,), torch.float32)),
     r"each must be 1 or G"),
])
def test_fake_implementations_refuse_bad_shapes(call, match):
    with FakeTensorMode(), pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------- tracing


def test_dynamo_traces_the_public_quantizers_into_the_ops():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def block(x, w, m_indptr):
        gs_w = quantize.global_scale_from_amax(w)
        b, b_scale = quantize.quantize_weights(w, gs_w)
        gs_x = quantize.global_scale_from_amax(x, m_indptr)
        a, a_scale = quantize.quantize_activations(x, m_indptr, 2.5)  # a Python float becomes a tensor
        alpha = quantize.alpha_from_global_scales(gs_x, gs_w)
        return a, a_scale, b, b_scale, alpha, quantize.dequantize(b, b_scale, global_scale=gs_w, out_dtype="fp16")

    torch._dynamo.reset()
    x, w, ind = (torch.empty(s, dtype=d, device="meta") for s, d in
                 [((40, 256), torch.bfloat16), ((3, 64, 256), torch.bfloat16), ((4,), torch.int32)])
    a, a_scale, b, b_scale, alpha, w_hat = torch.compile(block, backend=backend, fullgraph=True)(x, w, ind)
    assert tuple(a_scale.shape) == (layout.a_scale_rows_upper_bound(40, 3), 16) and tuple(alpha.shape) == (3,)
    assert (tuple(w_hat.shape), w_hat.dtype) == ((3, 64, 256), torch.float16)
    (gm,) = graphs
    targets = [str(n.target).removesuffix(".default") for n in gm.graph.nodes if n.op == "call_function"]
    for name in ("quantize_weights", "quantize_activations", "alpha_from_global_scales", "dequantize"):
        assert targets.count(f"nvfp4_driver.{name}") == 1, targets
    assert targets.count("nvfp4_driver.global_scale_from_amax") == 2, targets
    torch._dynamo.reset()


def test_traced_forms_refuse_a_stream_and_a_bad_float_scale():
    x, ind = torch.empty((8, 64), dtype=torch.bfloat16, device="meta"), torch.empty((2,), dtype=torch.int32,
                                                                                    device="meta")
    with pytest.raises(ValueError, match="not available under torch.compile"):
        torch_ops.traced_quantize_activations(x, ind, 1.0, stream=7)
    with pytest.raises(ValueError, match="finite and > 0"):
        torch_ops.traced_quantize_activations(x, ind, float("inf"), stream=None)


def test_gemm_ops_dispatch_straight_to_their_bodies_on_cuda():
    """Both GEMM ops: our own kernel on CUDA, autograd a fallthrough, Meta from the fake (no custom_op
    wrappers: they cost ten times the body's dispatch)."""
    def active(name):  # dispatch key -> where its active kernel was registered, and how
        lines = torch._C._dispatch_dump(name).splitlines()
        return {line.split(":")[0]: line for line in lines if ": registered at " in line and "(inactive)" not in line}

    ours = torch_ops.__file__
    for name in ("group_gemm_nvfp4_nt_groupwise", "group_gemm_nvfp4_nt_groupwise_out"):
        kernels = active(f"nvfp4_driver::{name}")
        assert ours in kernels["CUDA"] and "fallthrough" in kernels["Autograd[alias]"], kernels
        assert "custom_ops.py" not in "".join(kernels.values()) and "ADInplaceOrView" not in kernels, kernels
        assert "Meta" in kernels, kernels
    meta = [torch.empty(s, dtype=d, device="meta") for s, d in (((50, 128), torch.uint8), ((3, 64, 128), torch.uint8),
                                                                ((640, 16), torch.uint8), ((3, 128, 16), torch.uint8),
                                                                ((4,), torch.int32))]
    y = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(*meta)
    assert y.device.type == "meta" and tuple(y.shape) == (50, 64)


@pytest.fixture
def gemm_out_on_cpu(monkeypatch):
    """The _out op's CUDA body registered for CPU tensors too, with the public function stubbed (no GPU):
    what the dispatcher and the body do around the launch."""
    calls = []
    monkeypatch.setattr(torch_ops.ops, "group_gemm_nvfp4_nt_groupwise", lambda *args, out: calls.append(out))
    lib = torch.library.Library("nvfp4_driver", "IMPL")
    lib.impl("group_gemm_nvfp4_nt_groupwise_out", torch_ops._gemm_out, "CPU")
    args = [torch.empty(s, dtype=torch.uint8) for s in ((16, 64), (1, 8, 64), (128, 8), (1, 128, 8))]
    yield lambda out: torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out(
        *args, torch.zeros(2, dtype=torch.int32), None, out), calls
    lib._destroy()


def test_gemm_out_op_bumps_the_version_of_out(gemm_out_on_cpu):
    """Autograd must learn that out was written: a graph that saved out refuses to backpropagate."""
    call, calls = gemm_out_on_cpu
    out = torch.ones((16, 8), dtype=torch.bfloat16)
    x = torch.ones((16, 8), dtype=torch.bfloat16, requires_grad=True)
    y = (x * out).sum()  # saves out for x's gradient
    version = out._version
    call(out)
    assert calls == [out] and out._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    with torch.inference_mode():  # no version counter: neither bumped nor refused, inside or outside the mode
        frozen = torch.ones((16, 8), dtype=torch.bfloat16)
        call(frozen)
    call(frozen)
    assert len(calls) == 3


def test_opcheck_passes_on_the_gemm_ops_with_a_cpu_stand_in(monkeypatch):
    """torch.library.opcheck (schema, fake against real, AOT dispatch) on both GEMM ops, their bodies
    registered for CPU with the launch stood in by a write of out's shape: the fakes and the schemas'
    mutation annotations agree with what the bodies do."""
    def stand_in(a, b, *rest, out=None, out_dtype=None):
        y = torch.full((a.shape[0], b.shape[1]), 2.0, dtype=out_dtype or torch.bfloat16) if out is None else out
        return y.fill_(3.0)
    monkeypatch.setattr(torch_ops.ops, "group_gemm_nvfp4_nt_groupwise", stand_in)
    lib = torch.library.Library("nvfp4_driver", "IMPL")
    try:
        lib.impl("group_gemm_nvfp4_nt_groupwise", torch_ops._gemm, "CPU")
        lib.impl("group_gemm_nvfp4_nt_groupwise_out", torch_ops._gemm_out, "CPU")
        args = [torch.zeros(s, dtype=torch.uint8) for s in ((16, 64), (1, 8, 64), (128, 8), (1, 128, 8))]
        args += [torch.tensor([0, 16], dtype=torch.int32), torch.ones(1)]
        tests = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
        torch.library.opcheck(torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise.default, (*args, None, None, None,
                              None, torch.float16), test_utils=tests)
        out = torch.zeros((16, 8), dtype=torch.bfloat16)
        torch.library.opcheck(torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out.default, (*args, out),
                              test_utils=tests)
    finally:
        lib._destroy()
