"""The quantizers' torch.library ops on the GPU: ``torch.library.opcheck`` on each (schema, fake
implementation against the real outputs, AOT dispatch), their bytes equal to the public functions'
and to nvfp4_driver.reference's, and the README's MoE example compiled as one graph."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import moe_example as ex  # noqa: E402
from test_moe_example_gpu import GPU_BACKEND  # noqa: E402
from test_quantize_gpu import poisoned_outputs  # noqa: E402,F401  (autouse: every output starts as poison bytes)

from nvfp4_driver import quantize as q, reference as R, torch_ops  # noqa: E402,F401  (torch_ops: registered)

OPCHECK_TESTS = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")


def random_values(rng, shape, dtype=torch.bfloat16):
    """Values over many binades (never zeros), exactly representable in ``dtype``."""
    v = rng.standard_normal(shape) * 2.0 ** rng.integers(-8, 8, size=shape)
    return torch.from_numpy(v.astype(np.float32)).to(dtype).cuda()


def m_indptr_for(rng, rows: int, groups: int):
    cuts = np.sort(rng.integers(0, rows + 1, size=groups - 1))
    return torch.tensor(np.concatenate([[0], cuts, [rows]]), dtype=torch.int32, device="cuda")


def test_opcheck_quantize_activations_and_dequantize(rng):
    x = random_values(rng, (200, 256))
    ind = m_indptr_for(rng, 200, 5)
    gs = q.global_scale_from_amax(x, ind)
    torch.library.opcheck(torch.ops.nvfp4_driver.quantize_activations.default, (x, ind, gs), test_utils=OPCHECK_TESTS)
    a, a_scale = torch.ops.nvfp4_driver.quantize_activations(x, ind, gs)
    a_pub, a_scale_pub = q.quantize_activations(x, ind, gs)
    assert torch.equal(a, a_pub) and torch.equal(a_scale, a_scale_pub)
    torch.library.opcheck(torch.ops.nvfp4_driver.dequantize.default, (a, a_scale, ind, gs, torch.float32),
                          test_utils=OPCHECK_TESTS)
    x_hat = torch.ops.nvfp4_driver.dequantize(a, a_scale, ind, gs, torch.float32)
    assert torch.equal(x_hat, q.dequantize(a, a_scale, ind, gs, out_dtype="float32"))


def test_opcheck_quantize_weights_against_the_reference(rng):
    w = random_values(rng, (3, 130, 128), torch.float16)
    gs = q.global_scale_from_amax(w)
    torch.library.opcheck(torch.ops.nvfp4_driver.quantize_weights.default, (w, gs), test_utils=OPCHECK_TESTS)
    b, b_scale = torch.ops.nvfp4_driver.quantize_weights(w, gs)
    w_np, gs_np = w.float().cpu().numpy(), gs.cpu().numpy()
    for g in range(3):
        want_b, want_scale = R.quantize(w_np[g], gs_np[g])  # (N, K/2) codes, (N_pad, K/16) swizzled scales
        np.testing.assert_array_equal(b[g].cpu().numpy(), want_b)
        np.testing.assert_array_equal(b_scale[g].cpu().numpy(), want_scale)


@pytest.mark.parametrize("args", ["2d", "2d_groups", "3d", "3d_one"])
def test_opcheck_global_scale_from_amax(rng, args):
    x2, x3 = random_values(rng, (70, 128)), random_values(rng, (4, 33, 64), torch.float32)
    call = {"2d": (x2, None, True), "2d_groups": (x2, m_indptr_for(rng, 70, 3), True), "3d": (x3, None, True),
            "3d_one": (x3, None, False)}[args]
    torch.library.opcheck(torch.ops.nvfp4_driver.global_scale_from_amax.default, call, test_utils=OPCHECK_TESTS)
    got = torch.ops.nvfp4_driver.global_scale_from_amax(*call)
    assert torch.equal(got, q.global_scale_from_amax(call[0], call[1], per_group=call[2]))


def test_opcheck_alpha_from_global_scales(rng):
    ga = torch.tensor([3.5], device="cuda")
    gb = torch.from_numpy(rng.uniform(0.5, 2e4, size=6).astype(np.float32)).cuda()
    torch.library.opcheck(torch.ops.nvfp4_driver.alpha_from_global_scales.default, (ga, gb), test_utils=OPCHECK_TESTS)
    alpha = torch.ops.nvfp4_driver.alpha_from_global_scales(ga, gb)
    want = np.float32(1) / (np.float32(3.5) * gb.cpu().numpy())
    np.testing.assert_array_equal(alpha.cpu().numpy(), want)


def test_readme_moe_example_compiles_as_one_graph():
    """The issue's symptom: the example's quantizers broke the graph. Now fullgraph=True compiles it,
    and the compiled layer stays within the example's derived error bound (tests/moe_example.py)."""
    ns = ex.load_example(GPU_BACKEND)
    x, w13, w2, ids, wts = ex.make_layer(256, 512, 256, 8, 2, 5, device="cuda")
    experts = ns["quantize_experts"](w13, w2)
    torch._dynamo.reset()
    compiled = torch.compile(ns["moe_nvfp4"], fullgraph=True)
    out = compiled(x, ids, wts, *experts)
    ref = ns["moe_bf16"](x, ids, wts, w13, w2)
    torch.cuda.synchronize()
    exact64, nvfp4_64 = ex.layers_f64(x, w13, w2, ids, wts)
    print(ex.check_errors(out, ref, exact64, nvfp4_64))
    torch._dynamo.reset()
