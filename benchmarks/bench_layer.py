"""Tokens per second of a whole MoE expert layer: ``NVFP4Experts`` against the same layer in bf16.

    python benchmarks/bench_layer.py [--shapes dsv3,qwen3] [--tokens 64,8192] [--topk 8] [--iters 30]

Both layers take the same x (T, H) bf16 and routing (T, k) and do the same steps: sort the (token,
slot) pairs by expert (torch.sort, searchsorted), gather the rows, gate/up grouped GEMM, SiLU * up,
down grouped GEMM, the float32 weighted sum per token. They differ only in the GEMMs:

- ``nvfp4``  ``NVFP4Experts.from_bf16(w13, w2)`` (dynamic activation scales: an amax pass and a
             quantization before each GEMM, the grouped NVFP4 GEMMs of nvfp4_driver).
- ``bf16``   ``torch._grouped_mm`` on the bf16 weights (torch >= 2.8), one call per projection.
- ``nvfp4 unfused`` (with ``--unfused``): the nvfp4 layer with ``fuse_silu_mul = False`` (torch's SiLU * up,
             then the quantizer), the same bits: what fusing SiLU * up into the quantizer saves per layer.

Each is timed eagerly (``benchmarks.common.time_us``: warm-up, L2 flushed, CUDA events, median) and as
a CUDA graph replay of the same call (no Python or launch cost: what a serving engine's decode step
sees). tokens/s = T / time. Weights are random bf16 (w ~ N(0, 1/fan_in)), routing a top-k of random
softmax scores, so experts get about T*k/E rows each. ``err`` is ||nvfp4 - bf16|| / ||bf16|| of the
layer outputs (four NVFP4 roundings: about 0.23 on such random data, tests/moe_example.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import gpu_banner, require_cuda, time_us  # noqa: E402


@dataclasses.dataclass(frozen=True)
class LayerShape:
    name: str
    hidden: int        # H
    inter: int         # I, per expert (w13 is (E, 2I, H), w2 (E, H, I))
    experts: int       # E (routed experts; a shared expert is a dense layer, not timed here)


SHAPES = (
    LayerShape("dsv3", 7168, 2048, 256),     # DeepSeek-V3 / R1 routed experts
    LayerShape("qwen3", 2048, 768, 128),     # Qwen3-30B-A3B
)


def bf16_layer(x, topk_ids, topk_weights, w13, w2):
    """The layer of NVFP4Experts.forward with torch._grouped_mm on bf16 weights (same routing and combine)."""
    import torch
    import torch.nn.functional as F

    tokens, k = topk_ids.shape
    experts, two_inter, hidden = w13.shape
    flat = topk_ids.reshape(-1)
    expert_of_row, order = torch.sort(flat, stable=True)
    offs = torch.searchsorted(expert_of_row, torch.arange(1, experts + 1, device=x.device, dtype=flat.dtype),
                              out_int32=True)
    xs = x.index_select(0, order // k)
    h = torch._grouped_mm(xs, w13.transpose(-2, -1), offs=offs)
    act = F.silu(h[:, :two_inter // 2]) * h[:, two_inter // 2:]
    y = torch._grouped_mm(act, w2.transpose(-2, -1), offs=offs)
    y_slots = torch.empty_like(y).index_copy_(0, order, y).view(tokens, k, hidden)
    return torch.bmm(topk_weights.float().unsqueeze(1), y_slots.float()).view(tokens, hidden).to(x.dtype)


def graph_of(torch, fn):
    """``fn`` captured in a CUDA graph (after a warm-up on the capture stream): returns graph.replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def unfused_call(layer, *args):
    """The layer with SiLU * up unfused (the same bits), for one call."""
    layer.fuse_silu_mul = False
    try:
        return layer(*args)
    finally:
        layer.fuse_silu_mul = True


def bench(shape: LayerShape, token_counts, topk: int, iters: int, unfused: bool = False) -> None:
    import torch

    from nvfp4_driver.moe import NVFP4Experts

    g = torch.Generator(device="cuda").manual_seed(0)
    e, h, i = shape.experts, shape.hidden, shape.inter
    w13 = (torch.randn(e, 2 * i, h, device="cuda", dtype=torch.bfloat16, generator=g) * h**-0.5)
    w2 = (torch.randn(e, h, i, device="cuda", dtype=torch.bfloat16, generator=g) * i**-0.5)
    layer = NVFP4Experts.from_bf16(w13, w2)
    for tokens in token_counts:
        x = torch.randn(tokens, h, device="cuda", dtype=torch.bfloat16, generator=g)
        scores = torch.softmax(torch.randn(tokens, e, device="cuda", generator=g), -1)
        wts, ids = torch.topk(scores, topk)
        calls = {"nvfp4": lambda: layer(x, ids, wts), "bf16": lambda: bf16_layer(x, ids, wts, w13, w2)}
        if unfused:
            calls["nvfp4 unfused"] = lambda: unfused_call(layer, x, ids, wts)
        outs = {name: fn() for name, fn in calls.items()}
        err = float((outs["nvfp4"].float() - outs["bf16"].float()).norm() / outs["bf16"].float().norm())
        us = {}
        for name, fn in calls.items():
            us[name] = time_us(fn, iters=iters)
            us[name + " graph"] = time_us(graph_of(torch, fn), iters=iters)
        cells = "  ".join(f"{name} {t:9.1f} us {tokens / t * 1e6:12,.0f} tok/s" for name, t in us.items())
        print(f"{shape.name:6s} H={h} I={i} E={e} T={tokens:5d} k={topk}  {cells}  "
              f"x(graph) {us['bf16 graph'] / us['nvfp4 graph']:.2f}  err {err:.3f}", flush=True)
        del x, outs
    del layer, w13, w2
    torch.cuda.empty_cache()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(s.name for s in SHAPES), help="comma-separated shape names")
    p.add_argument("--tokens", default="64,8192", help="comma-separated token counts (decode, prefill)")
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--iters", type=int, default=30, help="timed runs per implementation (median)")
    p.add_argument("--unfused", action="store_true", help="also time the nvfp4 layer with SiLU * up unfused")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.shapes.split(",")
    unknown = [n for n in names if n not in {s.name for s in SHAPES}]
    if unknown:
        print(f"bench_layer: unknown shapes {unknown}; known: {[s.name for s in SHAPES]}", file=sys.stderr)
        return 2
    torch = require_cuda("bench_layer.py")
    if not hasattr(torch, "_grouped_mm"):
        print(f"bench_layer.py times the bf16 layer with torch._grouped_mm (torch >= 2.8); torch "
              f"{torch.__version__} has none; nothing was timed", file=sys.stderr)
        return 2
    print(gpu_banner())
    print(f"torch {torch.__version__}; median of {args.iters}, L2 flushed before each run; "
          f"x(graph) = bf16 graph us / nvfp4 graph us (above 1: NVFP4 faster)")
    for shape in SHAPES:
        if shape.name in names:
            bench(shape, [int(t) for t in args.tokens.split(",")], args.topk, args.iters, args.unfused)
    return 0


if __name__ == "__main__":
    sys.exit(main())
