"""Time NVFP4 activation quantization against the byte floor and the same work in plain PyTorch.

    python benchmarks/bench_quantize.py [--baseline OLD.cubin ...]

Quantizing is memory-bound: per bf16 element it reads 2 bytes and writes 0.5625 (half a byte of
e2m1 code plus a sixteenth of a scale byte), and it writes the zero padding scale rows of every
group (SPEC §3: a_scale has ((cum_m + 127 G) // 128) * 128 rows). The floor is those bytes at the
measured copy bandwidth. The peer is the SPEC §4 quantizer written in eager PyTorch ops (float32
math, float8 scale conversion, comparisons for e2m1, the swizzle as a permute), timed in the same
process on the same card; the last column says whether its bytes equal ours.

Three timings of one call, each the median of many:
  flush  benchmarks.common.time_us: L2 flushed by a 256 MB memset before each launch. The memset
         leaves the L2 full of dirty lines, which the timed kernel then pays to write back (about
         50 MB, 17 us at 3 TB/s): a fixed tax that dominates a 15 us kernel.
  clean  the same, but the L2 is flushed by reading 256 MB (a sum), which leaves only clean lines.
  graph  20 launches captured in a CUDA graph, rotating over input copies larger than the L2,
         replayed; no host overhead and no flush: the steady state of back-to-back layers.
% of floor uses "clean". One line per shape: the three timings | GB/s | floor | % | torch | x | bytes.
For one group and for the decode-sized calls, a "copy" line times torch's device copy of the same
number of bytes (half read, half written) the same two ways, and a "read x" line torch's float32
sum of x (the quantizer's 2 bytes per element of reads alone, against their own floor): what plain
streaming kernels achieve at this size.

--silu-mul: instead, SiLU * up fused with the quantizer against the unfused path, per MoE shape (the
down GEMM's input of NVFP4Experts: R = T * topk rows of gate | up, I columns each, E groups), with
dynamic scales (fused: silu_mul_global_scale_from_amax + silu_mul_quantize_activations, two kernels;
unfused: torch's (F.silu(gate.float()) * up.float()).to(bf16), global_scale_from_amax,
quantize_activations) and with a static one (no amax), "clean" and "graph" timings as above, the byte
floor of the fused kernels (gate and up read once, codes and scales written; dynamic: gate and up read
twice) and whether the bytes agree. The "x" columns are unfused / fused: above 1, fusing is faster
(nvfp4_driver.experts.FUSE_SILU_MUL_QUANTIZE).

--baseline FILE (repeatable): another build of ``nvfp4_quantize_rows_bf16`` with the same ABI (e.g.
the committed one, ``git show HEAD:nvfp4_driver/cubins/nvfp4_quantize_rows_bf16.sm_90.cubin``),
launched through the same host code and timed in the same process, one extra line per shape, after
checking that its bytes equal the shipped kernel's.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
from pathlib import Path

try:
    import torch
except ImportError:  # main() says so in one line (common.require_cuda)
    torch = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (L2_FLUSH_BYTES, floors_us, gpu_banner, measure_ceilings,  # noqa: E402
                               require_cuda, time_us)
from nvfp4_driver import quantize as q  # noqa: E402
from nvfp4_driver.layout import a_scale_rows_upper_bound  # noqa: E402

# (rows, K, groups): 16M and 64M elements, then decode-sized calls (DeepSeek-V3's K = 7168 over 256
# experts at 2 and at 0-1 tokens per expert, Qwen3-30B-A3B's K = 2048 over 128 at 4), where the
# padding scale rows (each group's scale rows end on a 128-row tile) are most of the bytes written.
# Groups split the rows evenly, the remainder going to the first ones.
SHAPES = [(4096, 4096, 1), (4096, 4096, 8), (2048, 7168, 1), (8192, 8192, 1), (16384, 4096, 32),
          (512, 7168, 256), (64, 7168, 256), (512, 2048, 128)]
BYTES_PER_ELEMENT = 2 + 0.5 + 1 / 16
ONE_SIXTH = 1.0 / 6.0  # float32(1/6) once converted; the peer multiplies in float32 like SPEC §4


def torch_quantize(x: torch.Tensor, gsf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC §4 for one group whose rows are a multiple of 128, in eager PyTorch: (packed, swizzled sf)."""
    rows, k = x.shape
    blocks = x.float().view(rows, k // 16, 16)
    amax = blocks.abs().amax(-1)
    sixth = torch.tensor(ONE_SIXTH, dtype=torch.float32, device=x.device)
    y = gsf * (amax * sixth)
    sf = torch.where(torch.isnan(y), y, y.clamp(max=448.0)).to(torch.float8_e4m3fn)
    sf_val = sf.float()
    scale = torch.where(sf_val == 0, torch.zeros_like(sf_val), 1.0 / (sf_val * (1.0 / gsf)))
    v = blocks * scale[..., None]
    m = torch.nan_to_num(v.abs(), nan=6.0).clamp(max=6.0)
    code = ((m > 0.25).to(torch.uint8) + (m >= 0.75) + (m > 1.25) + (m >= 1.75) + (m > 2.5) + (m >= 3.5)
            + (m > 5.0)).to(torch.uint8)
    code |= (torch.signbit(v) & ~torch.isnan(v)).to(torch.uint8) << 3
    code = code.view(rows, k)
    packed = code[:, 0::2] | (code[:, 1::2] << 4)
    sf_bytes = sf.view(torch.uint8).view(rows // 128, 4, 32, k // 64, 4).permute(0, 3, 2, 1, 4).reshape(rows, k // 16)
    return packed, sf_bytes


def even_m_indptr(rows: int, groups: int) -> torch.Tensor:
    """m_indptr of `groups` groups splitting `rows` evenly, the remainder to the first groups."""
    counts = [rows // groups + (g < rows % groups) for g in range(groups)]
    return torch.tensor([0] + counts, dtype=torch.int64).cumsum(0).to(torch.int32).cuda()


def time_clean_us(fn, iters: int = 50, warmup: int = 5) -> float:
    """Median us of fn() with the L2 flushed by reading 256 MB before each run (see the docstring)."""
    flush = torch.ones(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    sink = torch.empty((), dtype=torch.float32, device="cuda")
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, stop in zip(starts, stops):
        torch.sum(flush, dim=0, out=sink)
        # ~100 us of GPU time before the timed call: the host's launch of fn (tens of us of Python)
        # must be queued before the GPU reaches the start event, or the gap is timed too.
        torch.cuda._sleep(200_000)
        start.record()
        fn()
        stop.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, stops)) * 1e3


def time_graph_us(calls, reps: int = 20, replays: int = 10) -> float:
    """Per-call us of ``reps`` launches cycling over ``calls`` (one per input copy), in one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in calls:
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for r in range(reps):
            calls[r % len(calls)]()
    graph.replay()
    times = []
    for _ in range(replays):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) * 1e3 / reps)
    return statistics.median(times)


def copies_beyond_l2(x: torch.Tensor) -> list[torch.Tensor]:
    """Enough copies of x that rotating over them defeats the L2 (at least 128 MB in all, 2 copies)."""
    count = max(2, -(-128 * 2**20 // (x.numel() * x.element_size())))
    return [x] + [x.clone() for _ in range(count - 1)]


@contextlib.contextmanager
def kernel_file(path: str | None):
    """Within the block, quantize_rows for bf16 runs the cubin at ``path`` (None: the shipped one)."""
    if path is None:
        yield
        return
    shipped = q._spec
    file = str(Path(path).resolve())
    replaced = {}  # made once: the launch path stays as cheap as the shipped one's (clean timing)

    def spec(op, tag, ordinal):
        if (op, tag) != ("quantize_rows", "bf16"):
            return shipped(op, tag, ordinal)
        if ordinal not in replaced:
            replaced[ordinal] = dataclasses.replace(shipped(op, tag, ordinal), file=file)
        return replaced[ordinal]

    q._spec = spec
    try:
        yield
    finally:
        q._spec = shipped


# (name, rows R = tokens * topk, I, E): NVFP4Experts' down-GEMM input at decode and prefill sizes.
SILU_MUL_SHAPES = [("dsv3 T=64", 64 * 8, 2048, 256), ("dsv3 T=8192", 8192 * 8, 2048, 256),
                   ("qwen3 T=64", 64 * 8, 768, 128), ("qwen3 T=8192", 8192 * 8, 768, 128),
                   ("dense-ish", 4096, 4096, 8)]


def unfused_silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    k = gate_up.shape[1] // 2
    return (torch.nn.functional.silu(gate_up[:, :k].float()) * gate_up[:, k:].float()).to(gate_up.dtype)


def bench_silu_mul(ceil) -> None:
    """Fused vs unfused SiLU * up + quantization (see the module docstring, --silu-mul)."""
    print(f"{'shape':13} {'R':>6} {'I':>5} {'E':>3} {'scale':7} | {'fused':>7} {'unfused':>7} {'x':>5} clean us | "
          f"{'fused':>7} {'unfused':>7} {'x':>5} graph us | {'floor':>6} {'%floor':>6} | bytes")
    for name, rows, inter, groups in SILU_MUL_SHAPES:
        gate_up = torch.randn(rows, 2 * inter, dtype=torch.bfloat16, device="cuda") * 2
        m_indptr = even_m_indptr(rows, groups)
        gsf = q.global_scale_from_amax(unfused_silu_mul(gate_up))
        copies = copies_beyond_l2(gate_up)
        out_bytes = rows * inter // 2 + a_scale_rows_upper_bound(rows, groups) * inter // 16
        in_bytes = rows * 2 * inter * 2
        paths = {
            "dynamic": (lambda g: q.silu_mul_quantize_activations(g, m_indptr, q.silu_mul_global_scale_from_amax(g)),
                        lambda g: (lambda h: q.quantize_activations(h, m_indptr, q.global_scale_from_amax(h)))(
                            unfused_silu_mul(g)),
                        2 * in_bytes + out_bytes),
            "static": (lambda g: q.silu_mul_quantize_activations(g, m_indptr, gsf),
                       lambda g: q.quantize_activations(unfused_silu_mul(g), m_indptr, gsf),
                       in_bytes + out_bytes),
        }
        for scale, (fused, unfused, nbytes) in paths.items():
            a, a_scale = fused(gate_up)
            b, b_scale = unfused(gate_up)
            same = "equal" if torch.equal(a, b) and torch.equal(a_scale, b_scale) else "DIFF"
            clean = [time_clean_us(lambda f=f: f(gate_up)) for f in (fused, unfused)]
            graph = [time_graph_us([lambda c=c, f=f: f(c) for c in copies]) for f in (fused, unfused)]
            floor = floors_us(nbytes, 0, ceil)[0]
            print(f"{name:13} {rows:6} {inter:5} {groups:3} {scale:7} | {clean[0]:7.1f} {clean[1]:7.1f} "
                  f"{clean[1] / clean[0]:5.2f}          | {graph[0]:7.1f} {graph[1]:7.1f} {graph[1] / graph[0]:5.2f}"
                  f"          | {floor:6.1f} {100 * floor / clean[0]:5.1f}% | {same}", flush=True)
        del gate_up, copies


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", action="append", default=[], help="another quantize_rows_bf16 cubin to time")
    ap.add_argument("--silu-mul", action="store_true", help="time SiLU * up fused with the quantizer vs unfused")
    args = ap.parse_args(argv)
    require_cuda("bench_quantize.py")
    ceil = measure_ceilings()
    print(gpu_banner())
    if args.silu_mul:
        print(f"measured copy bandwidth {ceil.copy_gbps:.0f} GB/s (read + write); bf16 gate | up rows")
        bench_silu_mul(ceil)
        return
    print(f"measured copy bandwidth {ceil.copy_gbps:.0f} GB/s (read + write); bf16 input, "
          f"{BYTES_PER_ELEMENT} B moved per element")
    print(f"{'op':9} {'rows':>5} {'K':>5} {'G':>2} {'Melem':>5} | {'flush':>6} {'clean':>6} {'graph':>6} us | "
          f"{'GB/s':>5} {'floor':>5} {'%floor':>6} | {'torch us':>8} {'x torch':>7} {'bytes':>5}")
    for rows, k, groups in SHAPES:
        x = torch.randn(rows, k, dtype=torch.bfloat16, device="cuda") * 3
        m_indptr = even_m_indptr(rows, groups)
        gsf = q.global_scale_from_amax(x)
        nbytes = rows * k * 2 + rows * k // 2 + a_scale_rows_upper_bound(rows, groups) * k // 16
        floor = floors_us(nbytes, 0, ceil)[0]
        for label, path in [("quantize", None)] + [(Path(b).stem[:9], b) for b in args.baseline]:
            with kernel_file(path):
                ours = lambda: q.quantize_activations(x, m_indptr, gsf)  # noqa: E731
                flush_us, clean_us = time_us(ours), time_clean_us(ours)
                graph_us = time_graph_us([lambda c=c: q.quantize_activations(c, m_indptr, gsf)
                                          for c in copies_beyond_l2(x)])
                a, a_scale = ours()
            peer_us, same = float("nan"), "-"
            if path is None:
                shipped = (a, a_scale)
                if groups == 1:
                    peer_us = time_clean_us(lambda: torch_quantize(x, gsf), iters=10)
                    pa, psf = torch_quantize(x, gsf)
                    same = "equal" if torch.equal(a, pa) and torch.equal(a_scale[:rows], psf) else "DIFF"
            else:  # a baseline: its bytes against the shipped kernel's
                same = "equal" if torch.equal(a, shipped[0]) and torch.equal(a_scale, shipped[1]) else "DIFF"
            print(f"{label:9} {rows:5} {k:5} {groups:2} {rows * k / 2**20:5.0f} | {flush_us:6.1f} {clean_us:6.1f} "
                  f"{graph_us:6.1f}    | {nbytes / clean_us / 1e3:5.0f} {floor:5.1f} {100 * floor / clean_us:5.1f}% | "
                  f"{peer_us:8.1f} {peer_us / clean_us:7.1f} {same:>5}")
        if groups == 1 or rows * k < 2**22:  # the practical floor: torch's copy of the same bytes
            src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
            pairs = [(torch.empty_like(src), src.clone()) for _ in range(max(2, -(-2**27 // nbytes)))]
            c_clean = time_clean_us(lambda: pairs[0][0].copy_(pairs[0][1]))
            c_graph = time_graph_us([lambda d=d, s_=s_: d.copy_(s_) for d, s_ in pairs])
            print(f"{'copy':9} {rows:5} {k:5} {'':2} {rows * k / 2**20:5.0f} | {'':6} {c_clean:6.1f} "
                  f"{c_graph:6.1f}    | {nbytes / c_clean / 1e3:5.0f} {floor:5.1f} {100 * floor / c_clean:5.1f}% |")
            # and reading x alone (a float32 sum): the quantizer's reads without its writes
            read_bytes = rows * k * 2
            read_floor = floors_us(read_bytes, 0, ceil)[0]
            r_clean = time_clean_us(lambda: torch.sum(x, dtype=torch.float32))
            r_graph = time_graph_us([lambda c=c: torch.sum(c, dtype=torch.float32) for c in copies_beyond_l2(x)])
            print(f"{'read x':9} {rows:5} {k:5} {'':2} {rows * k / 2**20:5.0f} | {'':6} {r_clean:6.1f} "
                  f"{r_graph:6.1f}    | {read_bytes / r_clean / 1e3:5.0f} {read_floor:5.1f} "
                  f"{100 * read_floor / r_clean:5.1f}% |")
            del src, pairs
        if groups == 1 and k == 4096:
            amax = lambda: q.global_scale_from_amax(x)  # noqa: E731
            amax_bytes = rows * k * 2
            amax_floor = floors_us(amax_bytes, 0, ceil)[0]
            a_flush, a_clean = time_us(amax), time_clean_us(amax)
            a_graph = time_graph_us([lambda c=c: q.global_scale_from_amax(c) for c in copies_beyond_l2(x)])
            peer_amax = time_clean_us(lambda: 448 * 6 / x.abs().amax().float())
            print(f"{'amax->gsf':9} {rows:5} {k:5} {groups:2} {rows * k / 2**20:5.0f} | {a_flush:6.1f} {a_clean:6.1f} "
                  f"{a_graph:6.1f}    | {amax_bytes / a_clean / 1e3:5.0f} {amax_floor:5.1f} "
                  f"{100 * amax_floor / a_clean:5.1f}% | {peer_amax:8.1f} {peer_amax / a_clean:7.1f} {'-':>5}")
        del x


if __name__ == "__main__":
    main()
