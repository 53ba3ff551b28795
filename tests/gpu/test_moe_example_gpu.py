"""The README's MoE example on the GPU (read from README.md and run as is) against a bf16 PyTorch
layer, within the error expected of NVFP4 quantization. How that bound is chosen: the docstring of
tests/moe_example.py (in short: the error of the same layer computed in float64 with SPEC §4's
quantizer, measured on the same inputs, plus a 25% margin and bf16 rounding; and the GPU layer
within 0.35x that error of the float64 NVFP4 layer itself)."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import moe_example as ex  # noqa: E402

from nvfp4_driver import group_gemm_nvfp4_nt_groupwise  # noqa: E402
from nvfp4_driver import quantize as q  # noqa: E402

GPU_BACKEND = dict(group_gemm_nvfp4_nt_groupwise=group_gemm_nvfp4_nt_groupwise,
                   quantize_activations=q.quantize_activations, quantize_weights=q.quantize_weights,
                   global_scale_from_amax=q.global_scale_from_amax,
                   alpha_from_global_scales=q.alpha_from_global_scales)


@pytest.mark.parametrize("tokens,hidden,inter,experts,topk,seed", [
    (512, 1024, 512, 8, 2, 1),     # the README's sizes
    (200, 1024, 384, 16, 4, 2),    # ragged groups, K = 384 for the down GEMM, small experts
])
def test_readme_moe_example(tokens, hidden, inter, experts, topk, seed):
    ns = ex.load_example(GPU_BACKEND)
    x, w13, w2, ids, wts = ex.make_layer(tokens, hidden, inter, experts, topk, seed, device="cuda")
    out = ns["moe_nvfp4"](x, ids, wts, *ns["quantize_experts"](w13, w2))
    ref = ns["moe_bf16"](x, ids, wts, w13, w2)
    torch.cuda.synchronize()
    assert out.dtype == torch.bfloat16 and tuple(out.shape) == (tokens, hidden)
    exact64, nvfp4_64 = ex.layers_f64(x, w13, w2, ids, wts)
    report = ex.check_errors(out, ref, exact64, nvfp4_64)
    print(f"MoE T={tokens} H={hidden} I={inter} E={experts} k={topk}: " +
          ", ".join(f"{k}={v:.4f}" for k, v in report.items()))


def test_readme_moe_example_under_cuda_graph():
    """No host sync on the whole path: the example captures into a CUDA graph and replays equal."""
    ns = ex.load_example(GPU_BACKEND)
    x, w13, w2, ids, wts = ex.make_layer(128, 512, 256, 4, 2, 3, device="cuda")
    experts = ns["quantize_experts"](w13, w2)
    eager = ns["moe_nvfp4"](x, ids, wts, *experts)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ns["moe_nvfp4"](x, ids, wts, *experts)  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ns["moe_nvfp4"](x, ids, wts, *experts)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
