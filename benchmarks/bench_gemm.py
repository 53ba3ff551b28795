"""Time the NVFP4 grouped GEMM on MoE shapes against the floors and bf16 torch._grouped_mm.

    python benchmarks/bench_gemm.py [--quick]

One line per shape: us | TFLOP/s | GB/s | % of the floor | x bf16 peer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import floors_us, gpu_banner, measure_ceilings, time_us  # noqa: E402
import nvfp4_driver as nd  # noqa: E402

# (label, experts, rows per expert, N, K)
SHAPES = [
    ("dsv3 up   decode", 8, 16, 4096, 7168),
    ("dsv3 up   decode", 256, 8, 4096, 7168),
    ("dsv3 up  prefill", 32, 1024, 4096, 7168),
    ("dsv3 down prefill", 8, 4096, 7168, 2048),
    ("qwen3 up  decode", 128, 4, 3072, 4096),
    ("gpt-oss  prefill*", 32, 512, 5760, 2944),  # K=2880 padded: SPEC needs K % 128 == 0
]


def nvfp4_inputs(experts, rows, n, k):
    g = torch.Generator(device="cuda").manual_seed(0)
    m_indptr = torch.arange(0, experts + 1, dtype=torch.int32, device="cuda") * rows
    cum_m = experts * rows
    a = torch.randint(0, 256, (cum_m, k // 2), dtype=torch.uint8, device="cuda", generator=g)
    b = torch.randint(0, 256, (experts, n, k // 2), dtype=torch.uint8, device="cuda", generator=g)
    a_scale = torch.randint(0x30, 0x40, (nd.a_scale_rows(m_indptr.cpu()), k // 16), dtype=torch.uint8,
                            device="cuda", generator=g)
    b_scale = torch.randint(0x30, 0x40, (experts, (n + 127) // 128 * 128, k // 16), dtype=torch.uint8,
                            device="cuda", generator=g)
    alpha = torch.full((experts,), 1e-3, dtype=torch.float32, device="cuda")
    out = torch.empty((cum_m, n), dtype=torch.bfloat16, device="cuda")
    return (a, b, a_scale, b_scale, m_indptr), alpha, out


def bf16_peer(experts, rows, n, k):
    grouped_mm = getattr(torch, "_grouped_mm", None)
    if grouped_mm is None:
        return None
    x = torch.randn(experts * rows, k, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(experts, n, k, dtype=torch.bfloat16, device="cuda")
    offs = torch.arange(1, experts + 1, dtype=torch.int32, device="cuda") * rows
    return lambda: grouped_mm(x, w.transpose(-2, -1), offs=offs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="first three shapes only")
    args = p.parse_args()
    ceil = measure_ceilings()
    print(gpu_banner())
    print(f"measured ceilings: copy {ceil.copy_gbps:.0f} GB/s, bf16 matmul {ceil.bf16_tflops:.0f} TFLOP/s")
    print(f"{'shape':18} {'E':>4} {'m':>5} {'N':>5} {'K':>5} | {'us':>8} {'TFLOP/s':>8} {'GB/s':>7} "
          f"{'floor us':>9} {'% floor':>7} | {'bf16 us':>8} {'x bf16':>6}")
    for label, e, rows, n, k in (SHAPES[:3] if args.quick else SHAPES):
        inputs, alpha, out = nvfp4_inputs(e, rows, n, k)
        ours = time_us(lambda: nd.group_gemm_nvfp4_nt_groupwise(*inputs, alpha=alpha, out=out))
        nbytes = sum(t.numel() * t.element_size() for t in (*inputs, alpha, out))
        flops = 2 * e * rows * n * k
        floor = max(floors_us(nbytes, flops, ceil))
        peer = bf16_peer(e, rows, n, k)
        peer_us = time_us(peer) if peer else float("nan")
        print(f"{label:18} {e:4} {rows:5} {n:5} {k:5} | {ours:8.1f} {flops / ours / 1e6:8.1f} "
              f"{nbytes / ours / 1e3:7.0f} {floor:9.1f} {100 * floor / ours:6.1f}% | {peer_us:8.1f} "
              f"{peer_us / ours:6.2f}")
        del inputs, out


if __name__ == "__main__":
    main()
