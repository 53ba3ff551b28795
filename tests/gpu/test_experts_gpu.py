"""NVFP4Experts on the GPU: against the bf16 layer and the float64 NVFP4 pipeline within the bound
derived in tests/moe_example.py (bf16 and fp16 inputs, dynamic and static activation scales), loaded
from a synthetic ModelOpt checkpoint written with safetensors, captured in a CUDA graph and replayed
on new inputs, and compiled with torch.compile(fullgraph=True)."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import modelopt_checkpoint as ck  # noqa: E402
import moe_example as ex  # noqa: E402
from test_moe_example_gpu import GPU_BACKEND  # noqa: E402

from nvfp4_driver.moe import NVFP4Experts  # noqa: E402

MOE_BF16 = ex.load_example(GPU_BACKEND)["moe_bf16"]


def check(out, x, w13, w2, ids, wts):
    torch.cuda.synchronize()
    assert out.dtype == x.dtype and tuple(out.shape) == tuple(x.shape)
    exact64, nvfp4_64 = ex.layers_f64(x, w13, w2, ids, wts)
    return ex.check_errors(out, MOE_BF16(x, ids, wts, w13, w2), exact64, nvfp4_64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens,hidden,inter,experts,topk,seed", [
    (512, 1024, 512, 8, 2, 1),     # the README example's sizes
    (200, 1024, 384, 16, 4, 2),    # ragged groups, K = 384 for the down GEMM
    (24, 512, 256, 64, 8, 3),      # decode-like: most experts get no rows or one
])
def test_from_bf16_within_the_derived_bound(dtype, tokens, hidden, inter, experts, topk, seed):
    x, w13, w2, ids, wts = (t.to(dtype) if t.is_floating_point() else t
                            for t in ex.make_layer(tokens, hidden, inter, experts, topk, seed, device="cuda"))
    layer = NVFP4Experts.from_bf16(w13, w2)
    report = check(layer(x, ids, wts), x, w13, w2, ids, wts)
    print(f"{dtype} T={tokens} H={hidden} I={inter} E={experts} k={topk}: {report}")


@pytest.mark.parametrize("split_gate_up", [False, True])
def test_from_modelopt_safetensors_checkpoint(tmp_path, split_gate_up):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    x, w13, w2, ids, wts = ex.make_layer(300, 512, 256, 8, 3, 4, device="cuda")
    in_amax, act_amax = ck.routed_amaxes(x, ids, wts, w13, w2)
    tensors, w13_dec, w2_dec = ck.make_checkpoint(w13, w2, in_amax, act_amax, split_gate_up=split_gate_up)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(tensors, str(path))
    layer = NVFP4Experts.from_modelopt(safetensors_torch.load_file(str(path)), ck.PREFIX)
    assert layer.w13.is_cuda and (layer.up_scale_ratio is not None) == split_gate_up
    out = layer(x, ids, wts)
    torch.cuda.synchronize()
    want = ck.expected_layer_f64(tensors, x, ids, wts, w13_dec, w2_dec)
    exact64 = ex.moe_f64(x, ids, wts, w13.float().cpu().numpy(), w2.float().cpu().numpy())
    print(ex.check_errors(out, MOE_BF16(x, ids, wts, w13, w2), exact64, want))


def test_static_scales_from_bf16_equal_from_modelopt_bytes():
    """A fused-aware checkpoint of the weights from_bf16 quantizes (same global scales) loads into the
    same bytes, and both layers give the same bits."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    x, w13, w2, ids, wts = ex.make_layer(128, 512, 256, 4, 2, 6, device="cuda")
    in_amax, act_amax = ck.routed_amaxes(x, ids, wts, w13, w2)
    tensors, _, _ = ck.make_checkpoint(w13, w2, in_amax, act_amax, split_gate_up=False)
    loaded = NVFP4Experts.from_modelopt(tensors, ck.PREFIX)
    # from_bf16 with the checkpoint's global scales: quantize_weights must give the checkpoint's bytes.
    from nvfp4_driver.quantize import quantize_weights
    b13, s13 = quantize_weights(w13, loaded.w13_global_scale)
    b2, s2 = quantize_weights(w2, loaded.w2_global_scale)
    assert torch.equal(b13, loaded.w13) and torch.equal(s13, loaded.w13_scale)
    assert torch.equal(b2, loaded.w2) and torch.equal(s2, loaded.w2_scale)
    built = NVFP4Experts(b13, s13, loaded.w13_global_scale, b2, s2, loaded.w2_global_scale,
                         input_global_scale=loaded.input_global_scale, act_global_scale=loaded.act_global_scale)
    assert torch.equal(built(x, ids, wts), loaded(x, ids, wts))


@pytest.mark.parametrize("static", [False, True])
def test_cuda_graph_replays_new_inputs(static):
    """No host sync anywhere in forward: it captures, and replays on new routing and activations give
    the bits of eager calls on them."""
    tokens, hidden, inter, experts, topk = 96, 512, 256, 16, 4
    x, w13, w2, ids, wts = ex.make_layer(tokens, hidden, inter, experts, topk, 8, device="cuda")
    # Static gsf = 448 * 6 / amax, of x and (a generous estimate) of SiLU(gate) * up.
    scales = dict(input_global_scale=2688.0 / x.abs().max().float().item(), act_global_scale=2688.0 / 20) \
        if static else {}
    layer = NVFP4Experts.from_bf16(w13, w2, **scales)
    static_in = [t.clone() for t in (x, ids, wts)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        layer(*static_in)  # warm-up on the capture stream: modules load, checks are cached
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = layer(*static_in)
    for seed in (9, 10, 11):
        new = ex.make_layer(tokens, hidden, inter, experts, topk, seed, device="cuda")
        for dst, src in zip(static_in, (new[0], new[3], new[4])):
            dst.copy_(src)
        static_out.fill_(float("nan"))  # poison: the replay must write every element
        graph.replay()
        eager = layer(new[0], new[3], new[4])
        torch.cuda.synchronize()
        assert torch.equal(static_out, eager), f"seed {seed}"


def test_torch_compile_fullgraph():
    x, w13, w2, ids, wts = ex.make_layer(256, 512, 256, 8, 4, 12, device="cuda")
    layer = NVFP4Experts.from_bf16(w13, w2)

    class Block(torch.nn.Module):
        """The layer between two torch operations, as a model would call it."""

        def __init__(self):
            super().__init__()
            self.experts = layer

        def forward(self, x, ids, wts):
            return self.experts(x * 1, ids, wts) + 0

    torch._dynamo.reset()
    compiled = torch.compile(Block(), fullgraph=True)
    out = compiled(x, ids, wts)
    print(check(out, x, w13, w2, ids, wts))
    # Inductor may round SiLU * up once instead of twice, so a few activation codes may differ from
    # eager; the two stay within the same small fraction of the quantization error.
    eager = layer(x, ids, wts)
    exact64, nvfp4_64 = ex.layers_f64(x, w13, w2, ids, wts)
    assert ex.rel(out, eager.float().cpu().numpy()) <= ex.RATIO_VS_NVFP4_F64 * ex.rel(nvfp4_64, exact64)
    torch._dynamo.reset()


def test_empty_batch():
    _, w13, w2, _, _ = ex.make_layer(4, 256, 128, 4, 2, 13, device="cuda")
    layer = NVFP4Experts.from_bf16(w13, w2)
    out = layer(torch.empty(0, 256, dtype=torch.bfloat16, device="cuda"),
                torch.empty(0, 2, dtype=torch.int64, device="cuda"), torch.empty(0, 2, device="cuda"))
    torch.cuda.synchronize()
    assert tuple(out.shape) == (0, 256)
    np.testing.assert_array_equal(out.cpu().float().numpy(), np.zeros((0, 256)))
