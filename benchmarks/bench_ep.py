"""Tokens per second of ExpertParallelNVFP4 on DeepSeek-V3's expert shapes, on 1 or N GPUs.

    python benchmarks/bench_ep.py                                # one GPU (a one-rank NCCL group)
    torchrun --nproc-per-node 2 benchmarks/bench_ep.py           # two GPUs: experts split, tokens per rank

DeepSeek-V3's MoE layer: 256 routed experts, top-8, hidden 7168, intermediate 2048 (gate+up GEMM
N x K = 4096 x 7168, down 7168 x 2048). Every rank routes its own tokens (decode: 64, prefill: 8,192;
uniform random top-8 over all experts); the weights are random NVFP4 bytes (all 256 values, ue4m3
scales 0x30..0x3F as bench_moe.py), so no bf16 copy of the 5.6 GB of expert weights is ever made.

Per phase and shape, one line (the slowest rank's median, ``benchmarks.common.time_us``: L2 flushed,
CUDA events, warm-up):
  layer     one call of the layer: routing, the count exchange and its host read, both all-to-alls,
            the experts, the weighted sum;
  a2a       the all-to-alls of the rows alone (dispatch and return, same splits): bf16 rows there, or
            with --transport nvfp4 e2m1 bytes and ue4m3 scales there (two calls); x.dtype rows back;
  experts   the local experts alone on the rows this rank received (quantize, gate/up GEMM, SiLU * up,
            quantize, down GEMM; with dynamic scales their two 4-byte all-reduces);
  tokens/s  all ranks' tokens / layer time.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_moe import SCALE_BYTES  # noqa: E402  (ue4m3 0.5 .. 0.9375: products far from overflow)
from benchmarks.common import gpu_banner, require_cuda, time_us  # noqa: E402

HIDDEN, INTER, EXPERTS, TOPK = 7168, 2048, 256, 8


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Tokens/s of ExpertParallelNVFP4, DeepSeek-V3 shapes, 1 or N GPUs.")
    p.add_argument("--decode-tokens", type=int, default=64, help="tokens per rank, decode (default 64)")
    p.add_argument("--prefill-tokens", type=int, default=8192, help="tokens per rank, prefill (default 8192)")
    p.add_argument("--static-scales", action="store_true", help="static activation scales (no all-reduces)")
    p.add_argument("--transport", choices=("bf16", "nvfp4", "both"), default="both",
                   help="how the rows travel (default: both, one line each)")
    p.add_argument("--iters", type=int, default=30)
    return p.parse_args(argv)


def init_group(torch, dist):
    """NCCL over the ranks torchrun started, or a one-rank group without torchrun."""
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    if "RANK" in os.environ:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
        dist.init_process_group("nccl")
    else:  # an in-process store: nothing to rendezvous with
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)


def random_local_experts(torch, experts: int, static: bool):
    """This rank's experts as random NVFP4 bytes (NVFP4Experts' buffer layout)."""
    from nvfp4_driver import layout
    from nvfp4_driver.moe import NVFP4Experts

    def weights(n, k):
        codes = torch.randint(0, 256, (experts, n, k // 2), dtype=torch.uint8, device="cuda")
        scales = torch.randint(*SCALE_BYTES, (experts, layout.padded_n(n), k // 16), dtype=torch.uint8, device="cuda")
        return codes, scales, torch.full((experts,), 1.0, device="cuda")

    # Static gsf = 448 * 6 / amax for inputs of amax 4 (randn) and activations of amax 64.
    statics = {name: torch.tensor([2688.0 / amax], device="cuda")
               for name, amax in (("input_global_scale", 4.0), ("act_global_scale", 64.0))} if static else {}
    return NVFP4Experts(*weights(2 * INTER, HIDDEN), *weights(HIDDEN, INTER), **statics)


def bench_phase(torch, dist, layer, tokens: int, iters: int) -> dict:
    x = torch.randn(tokens, HIDDEN, device="cuda").bfloat16()
    topk_weights, topk_ids = torch.topk(torch.softmax(torch.randn(tokens, EXPERTS, device="cuda"), -1), TOPK)

    seen = {}
    run_local = layer._local

    def recording(rows, m_indptr, local_ids):  # keeps the received rows for the experts-alone timing
        seen.update(rows=rows, m_indptr=m_indptr, local_ids=local_ids)
        return run_local(rows, m_indptr, local_ids)

    layer._local = recording
    layer(x, topk_ids, topk_weights)
    layer._local = run_local
    rows = seen["rows"]
    received = torch.empty(rows.a.shape[0] if layer.transport == "nvfp4" else rows.shape[0], HIDDEN,
                           dtype=x.dtype, device="cuda")

    # The splits of this routing, for the all-to-alls alone (one host read, outside the timing).
    sorted_ids, order = torch.sort(topk_ids.reshape(-1), stable=True)
    edges = torch.tensor([start for start, _ in layer.blocks] + [EXPERTS], device="cuda", dtype=sorted_ids.dtype)
    send = torch.searchsorted(sorted_ids, edges).diff()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)
    send_splits, recv_splits = send.tolist(), recv.tolist()
    xs = x.index_select(0, order // TOPK)
    back = torch.empty_like(xs)

    if layer.transport == "nvfp4":  # what travels: e2m1 bytes and ue4m3 scales there, x.dtype back
        wire = [(xs.new_empty(xs.shape[0], HIDDEN // 2, dtype=torch.uint8),
                 xs.new_empty(received.shape[0], HIDDEN // 2, dtype=torch.uint8)),
                (xs.new_empty(xs.shape[0], HIDDEN // 16, dtype=torch.uint8),
                 xs.new_empty(received.shape[0], HIDDEN // 16, dtype=torch.uint8))]
    else:
        wire = [(xs, torch.empty_like(received))]

    def a2a():
        for send_buf, recv_buf in wire:
            dist.all_to_all_single(recv_buf, send_buf, recv_splits, send_splits)
        dist.all_to_all_single(back, received, send_splits, recv_splits)

    times = {
        "layer": time_us(lambda: layer(x, topk_ids, topk_weights), iters),
        "a2a": time_us(a2a, iters),
        "experts": time_us(lambda: run_local(seen["rows"], seen["m_indptr"], seen["local_ids"]), iters),
    }
    slowest = torch.tensor([times["layer"], times["a2a"], times["experts"]], device="cuda", dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    layer_us, a2a_us, experts_us = slowest.tolist()
    return dict(tokens=tokens * layer.world_size, rows_here=received.shape[0], layer_us=layer_us, a2a_us=a2a_us,
                experts_us=experts_us, tokens_per_s=tokens * layer.world_size / (layer_us * 1e-6))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch = require_cuda("bench_ep.py")
    import torch.distributed as dist

    from nvfp4_driver.expert_parallel import ExpertParallelNVFP4, expert_blocks

    init_group(torch, dist)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        start, stop = expert_blocks(EXPERTS, world)[rank]
        torch.manual_seed(1234 + rank)
        experts = random_local_experts(torch, stop - start, args.static_scales)
        if rank == 0:
            print(f"{gpu_banner()}; {world} GPU(s); DeepSeek-V3 experts E={EXPERTS} H={HIDDEN} I={INTER} top-{TOPK}, "
                  f"{'static' if args.static_scales else 'dynamic'} activation scales, bf16 tokens")
            print(f"{'phase':8} {'transport':9} {'tokens':>7} {'layer us':>10} {'a2a us':>9} {'experts us':>11} "
                  f"{'tokens/s':>12}")
        transports = ("bf16", "nvfp4") if args.transport == "both" else (args.transport,)
        for phase, tokens in (("decode", args.decode_tokens), ("prefill", args.prefill_tokens)):
            for transport in transports:
                layer = ExpertParallelNVFP4(experts, EXPERTS, transport=transport)
                r = bench_phase(torch, dist, layer, tokens, args.iters)
                if rank == 0:
                    print(f"{phase:8} {transport:9} {r['tokens']:>7} {r['layer_us']:>10.1f} {r['a2a_us']:>9.1f} "
                          f"{r['experts_us']:>11.1f} {r['tokens_per_s']:>12,.0f}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
