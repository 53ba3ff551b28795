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


def test_gemm_op_dispatches_straight_to_its_body_on_cuda():
    """The functional GEMM op's eager CUDA calls skip custom_op's Python autograd kernel and backend wrapper
    (a kernel of our own for CUDA, a fallthrough for autograd); meta/fake dispatch is custom_op's, and
    the _out form keeps custom_op's kernels (its ADInplaceOrView kernel bumps out's version counter)."""
    from nvfp4_driver import torch_ops

    def active(name):  # dispatch key -> where its active kernel was registered, and how
        lines = torch._C._dispatch_dump(name).splitlines()
        return {line.split(":")[0]: line for line in lines if ": registered at " in line and "(inactive)" not in line}

    gemm, gemm_out = active("nvfp4_driver::group_gemm_nvfp4_nt_groupwise"), active(
        "nvfp4_driver::group_gemm_nvfp4_nt_groupwise_out")
    ours = torch_ops.__file__
    assert ours in gemm["CUDA"] and ours in gemm["Autograd[alias]"] and "fallthrough" in gemm["Autograd[alias]"]
    assert "custom_ops.py" in gemm["Meta"]
    assert "CUDA" not in gemm_out and "custom_ops.py" in gemm_out["Autograd[alias]"] and "ADInplaceOrView" in gemm_out
    meta = [torch.empty(s, dtype=d, device="meta") for s, d in (((50, 128), torch.uint8), ((3, 64, 128), torch.uint8),
                                                                ((640, 16), torch.uint8), ((3, 128, 16), torch.uint8),
                                                                ((4,), torch.int32))]
    y = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(*meta)
    assert y.device.type == "meta" and tuple(y.shape) == (50, 64)
