"""Time the NVFP4 grouped GEMM on MoE shapes against its floors and three peers, in one process on one card.

    python -m nvfp4_driver bench [--quick] [--shapes dsv3,gptoss] [--csv PATH] [--png PATH]
    python benchmarks/bench_moe.py ...          (the same, from a source checkout)
    python -m nvfp4_driver bench --list         (the table and its bytes/FLOPs; no GPU needed)

Implementations, each timed by ``benchmarks.common.time_us`` (L2 flushed, CUDA events, warm-up, median):

- ``ours``     ``group_gemm_nvfp4_nt_groupwise`` on NVFP4 activations and weights (random bytes over
               all 256 values; ue4m3 scales 0x30..0x3F, one binade), alpha = 1 / gsf_w per expert.
- ``bf16``     ``torch._grouped_mm`` on bf16 weights dequantized once, before timing (the same values).
- ``fp8``      ``torch._scaled_grouped_mm``, FP8 rowwise: e4m3 activations and weights, one float32 scale
               per activation row and per weight row (amax / 448), use_fast_accum=False (fp32 sums, as ours).
- ``deq+bf16`` what a user of W4 weights without our GEMM runs: ``nvfp4_driver.dequantize`` of the
               weights into bf16 on every call, then ``torch._grouped_mm``.

The peers see the values ours sees (activations decoded exactly into bf16; weights decoded with the
global scale), so each line also prints ||ours - bf16|| / ||bf16||: about 2e-3 (bf16 rounding of the
weights and of both outputs); above 1e-2 is flagged as a MISMATCH. Ours writes into an output
poisoned first, and a line below the shape's says how many outputs any implementation left
unwritten or not finite.

Floor (docs/perf-notes.md, the device tool's METHOD.md): the bytes of our op's inputs and output
over the measured copy bandwidth, or its FLOPs over the measured dense bf16 matmul rate, whichever
is larger. "x" = peer us / ours us (above 1: ours is faster). gpt-oss-120b's K = 2880 is not a
multiple of 128 (SPEC §2), so it is timed, for every implementation, with K padded to 2944.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import zlib
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Ceilings, floors_us, gpu_banner, measure_ceilings, time_us  # noqa: E402
from nvfp4_driver.layout import a_scale_rows, padded_n  # noqa: E402

IMPLS = ("ours", "bf16", "fp8", "deq+bf16")
SCALE_BYTES = (0x30, 0x40)   # ue4m3 scale bytes drawn from [lo, hi): 0.5 .. 0.9375
SKEW_EXPONENT = 1.0          # expert popularity ~ 1 / rank (Zipf), ranks shuffled
MISMATCH = 1e-2              # ours vs the bf16 peer, relative Frobenius error
POISON = -12352.0            # written into ours' output before its first call; exact in bf16


@dataclasses.dataclass(frozen=True)
class MoeShape:
    """One grouped GEMM of an MoE layer: E experts, each (N, K) weights, rows routed to them."""

    name: str            # unique id; --shapes matches substrings of it
    model: str           # model and projection, for the table
    experts: int         # E = G, the groups of m_indptr
    rows: int            # rows per expert; with skewed=True, the total rows over all experts
    n: int               # output columns (rows of each expert's weight)
    k: int               # reduction length timed; a multiple of 128
    skewed: bool = False  # rows split unevenly by skewed_split (seeded by the name)
    k_model: int = 0     # the model's own K when it was padded up to k, else 0
    quick: bool = False  # one of --quick's shapes

    def group_rows(self) -> list[int]:
        if self.skewed:
            return skewed_split(self.rows, self.experts, zlib.crc32(self.name.encode()))
        return [self.rows] * self.experts

    def m_indptr(self) -> list[int]:
        return [0, *np.cumsum(self.group_rows()).tolist()]

    @property
    def cum_m(self) -> int:
        return self.rows if self.skewed else self.rows * self.experts

    @property
    def flops(self) -> int:
        return 2 * self.cum_m * self.n * self.k

    @property
    def rows_label(self) -> str:
        return f"skew {self.rows}" if self.skewed else f"{self.rows}/exp"


def _padded_k(k: int) -> int:
    return -(-k // 128) * 128


# DeepSeek-V3: 256 routed experts, top-8; per expert gate+up (N, K) = (4096, 7168), down (7168, 2048).
# Qwen3-235B-A22B: 128 experts, top-8; gate+up (3072, 4096), down (4096, 1536).
# gpt-oss-120b: 128 experts, top-4; gate+up (5760, 2880), K padded to 2944 (SPEC §2: K % 128 == 0).
# Decode: 1..16 rows per expert (all experts, or the 8 of one expert-parallel rank); prefill: up to
# 4096 rows per expert; skewed: a seeded Zipf split of a prefill batch's rows (some experts empty).
SHAPES = (
    MoeShape("dsv3-up-e8-m16", "DeepSeek-V3 up", 8, 16, 4096, 7168, quick=True),
    MoeShape("dsv3-up-e256-m1", "DeepSeek-V3 up", 256, 1, 4096, 7168),
    MoeShape("dsv3-up-e256-m8", "DeepSeek-V3 up", 256, 8, 4096, 7168),
    MoeShape("dsv3-up-e32-m1024", "DeepSeek-V3 up", 32, 1024, 4096, 7168),
    MoeShape("dsv3-up-e256-skew8192", "DeepSeek-V3 up", 256, 8192, 4096, 7168, skewed=True),
    MoeShape("dsv3-down-e256-m4", "DeepSeek-V3 down", 256, 4, 7168, 2048),
    MoeShape("dsv3-down-e8-m4096", "DeepSeek-V3 down", 8, 4096, 7168, 2048),
    MoeShape("qwen3-up-e128-m4", "Qwen3-235B up", 128, 4, 3072, 4096, quick=True),
    MoeShape("qwen3-up-e128-m512", "Qwen3-235B up", 128, 512, 3072, 4096),
    MoeShape("qwen3-down-e128-m64", "Qwen3-235B down", 128, 64, 4096, 1536),
    MoeShape("qwen3-down-e128-skew4096", "Qwen3-235B down", 128, 4096, 4096, 1536, skewed=True, quick=True),
    MoeShape("gptoss-up-e128-m2", "gpt-oss-120b up", 128, 2, 5760, _padded_k(2880), k_model=2880),
    MoeShape("gptoss-up-e32-m512", "gpt-oss-120b up", 32, 512, 5760, _padded_k(2880), k_model=2880, quick=True),
    MoeShape("gptoss-up-e128-skew16384", "gpt-oss-120b up", 128, 16384, 5760, _padded_k(2880), skewed=True,
             k_model=2880),
)


def skewed_split(total: int, experts: int, seed: int) -> list[int]:
    """``total`` rows over ``experts`` groups, expert popularity ~ 1/rank (ranks shuffled), seeded."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, experts + 1) ** SKEW_EXPONENT
    rng.shuffle(weights)
    return rng.multinomial(total, weights / weights.sum()).tolist()


def select_shapes(quick: bool = False, patterns: str | None = None) -> list[MoeShape]:
    """The default table, --quick's four, or those whose name contains one of the comma-separated patterns."""
    shapes = [s for s in SHAPES if s.quick] if quick else list(SHAPES)
    if patterns:
        wanted = [p.strip() for p in patterns.split(",") if p.strip()]
        shapes = [s for s in shapes if any(p in s.name for p in wanted)]
        if not shapes:
            raise ValueError(f"--shapes {patterns!r} matches none of {[s.name for s in SHAPES]}"
                             + (" (with --quick)" if quick else ""))
    return shapes


def impl_bytes(shape: MoeShape) -> dict[str, int]:
    """Bytes each implementation must move through device memory (each input read once, outputs written once)."""
    e, n, k, m = shape.experts, shape.n, shape.k, shape.cum_m
    out = m * n * 2                                       # bf16 output, every implementation
    offsets = 4 * e                                       # int32 group ends (torch) / m_indptr minus one entry
    w_fp4 = e * n * k // 2 + e * padded_n(n) * k // 16    # packed e2m1 + swizzled ue4m3 block scales
    return {
        "ours": (m * k // 2 + a_scale_rows(shape.m_indptr()) * k // 16 + w_fp4
                 + 4 * (e + 1) + 4 * e + out),            # + m_indptr + alpha
        "bf16": m * k * 2 + e * n * k * 2 + offsets + out,
        "fp8": m * k + 4 * m + e * n * k + 4 * e * n + offsets + out,
        # dequantize reads fp4 + scales + gsf and writes bf16 weights; _grouped_mm reads them again
        "deq+bf16": w_fp4 + 4 * e + 2 * (e * n * k * 2) + m * k * 2 + offsets + out,
    }


def floor_us(shape: MoeShape, ceil: Ceilings) -> float:
    """Our op's floor: the larger of its bytes over the copy rate and its FLOPs over the bf16 rate."""
    return max(floors_us(impl_bytes(shape)["ours"], shape.flops, ceil))


# ------------------------------------------------------------------------------------ on the GPU


class Unavailable(RuntimeError):
    """A peer this torch does not have."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:150] if text else ''}"


def _rowwise_fp8(t):
    """(e4m3 values, float32 scale per row) with t ~ values * scale[..., None]; scale = amax / 448."""
    import torch

    scale = t.abs().amax(-1).float().clamp(min=1e-12) / 448.0
    return (t.float() / scale.unsqueeze(-1)).to(torch.float8_e4m3fn), scale


class ShapeRun:
    """The inputs of one shape on the GPU and a builder for every implementation's call."""

    def __init__(self, shape: MoeShape):
        import torch

        import nvfp4_driver as nd

        self.torch, self.nd, self.shape = torch, nd, shape
        s = shape
        g = torch.Generator(device="cuda").manual_seed(zlib.crc32(s.name.encode()))
        u8 = dict(dtype=torch.uint8, device="cuda", generator=g)
        self.m_indptr = torch.tensor(s.m_indptr(), dtype=torch.int32, device="cuda")
        self.offs = self.m_indptr[1:]                     # torch's offs: each group's end row
        self.a = torch.randint(0, 256, (s.cum_m, s.k // 2), **u8)
        self.b = torch.randint(0, 256, (s.experts, s.n, s.k // 2), **u8)
        self.a_scale = torch.randint(*SCALE_BYTES, (a_scale_rows(s.m_indptr()), s.k // 16), **u8)
        self.b_scale = torch.randint(*SCALE_BYTES, (s.experts, padded_n(s.n), s.k // 16), **u8)
        self.gsf_w = 0.5 + 1.5 * torch.rand(s.experts, dtype=torch.float32, device="cuda", generator=g)
        self.alpha = 1.0 / self.gsf_w
        self.out = torch.empty((s.cum_m, s.n), dtype=torch.bfloat16, device="cuda")
        self._x = self._w = None

    def x(self):
        """The activations decoded exactly into bf16 (what the peers multiply)."""
        if self._x is None:
            self._x = self.nd.dequantize(self.a, self.a_scale, self.m_indptr)
        return self._x

    def w(self):
        """The weights decoded with their global scales into bf16, (E, N, K) row-major."""
        if self._w is None:
            self._w = self.nd.dequantize(self.b, self.b_scale, None, self.gsf_w)
        return self._w

    def _grouped_mm(self):
        gm = getattr(self.torch, "_grouped_mm", None)
        if gm is None:
            raise Unavailable(f"torch {self.torch.__version__} has no torch._grouped_mm")
        return gm

    def build(self, impl: str):
        """A zero-argument callable running ``impl`` once and returning its (cum_m, N) bf16 output."""
        torch, nd = self.torch, self.nd
        if impl == "ours":
            return lambda: nd.group_gemm_nvfp4_nt_groupwise(self.a, self.b, self.a_scale, self.b_scale,
                                                            self.m_indptr, alpha=self.alpha, out=self.out)
        if impl == "bf16":
            gm, x, w_t = self._grouped_mm(), self.x(), self.w().transpose(-2, -1)
            return lambda: gm(x, w_t, offs=self.offs)
        if impl == "fp8":
            sgm = getattr(torch, "_scaled_grouped_mm", None)
            if sgm is None:
                raise Unavailable(f"torch {torch.__version__} has no torch._scaled_grouped_mm")
            x8, sx = _rowwise_fp8(self.x())
            w = self.w()
            w8 = torch.empty(w.shape, dtype=torch.float8_e4m3fn, device="cuda")
            sw = torch.empty(w.shape[:2], dtype=torch.float32, device="cuda")
            for e in range(w.shape[0]):  # one expert at a time: a float32 copy of all weights may not fit
                w8[e], sw[e] = _rowwise_fp8(w[e])
            self._w = None  # the last user of the bf16 weights
            # mat2 must be column-major per group: the transposed view of (E, N, K) row-major
            return lambda: sgm(x8, w8.transpose(-2, -1), sx, sw, offs=self.offs, out_dtype=torch.bfloat16)
        if impl == "deq+bf16":
            gm, x = self._grouped_mm(), self.x()
            self._w = None
            return lambda: gm(x, nd.dequantize(self.b, self.b_scale, None, self.gsf_w).transpose(-2, -1),
                              offs=self.offs)
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")


def _rel_err(out, ref) -> float:
    diff = (out.float() - ref.float()).norm()
    return float(diff / ref.float().norm())


def _bad_outputs(out, poison: float | None) -> str:
    """'' or how many outputs are not finite / still hold the poison (never written)."""
    import torch

    notes = []
    nonfinite = int((~torch.isfinite(out)).sum())
    if nonfinite:
        notes.append(f"{nonfinite} of {out.numel()} outputs are NaN/inf")
    if poison is not None:
        unwritten = int((out == poison).sum())
        if unwritten:
            notes.append(f"{unwritten} outputs unwritten (still {poison:g})")
    return "; ".join(notes)


def bench_shape(shape: MoeShape, iters: int) -> dict[str, dict]:
    """{impl: {"us": float | None, "note": str, "err": float | None}} for one shape."""
    import torch

    run = ShapeRun(shape)
    run.out.fill_(POISON)  # every element of ours must be written (all rows lie inside the groups)
    results, outputs = {}, {}
    for impl in IMPLS:
        try:
            fn = run.build(impl)
            out = fn()  # also the first warm-up
            outputs[impl] = out.clone() if impl == "ours" else out
            note = _bad_outputs(out, POISON if impl == "ours" else None)
            results[impl] = {"us": time_us(fn, iters=iters), "note": note, "err": None}
        except Exception as exc:  # noqa: BLE001 - a peer that raises is reported, never fatal
            results[impl] = {"us": None, "note": _reason(exc), "err": None}
            outputs.pop(impl, None)
            torch.cuda.empty_cache()
    ref = outputs.get("bf16", outputs.get("deq+bf16"))
    if ref is not None:
        for impl, out in outputs.items():
            results[impl]["err"] = _rel_err(out, ref)
    del run, outputs, ref
    torch.cuda.empty_cache()
    return results


# ------------------------------------------------------------------------------------ reporting


def csv_rows(shape: MoeShape, results: dict[str, dict], ceil: Ceilings) -> list[dict]:
    floor = floor_us(shape, ceil)
    nbytes = impl_bytes(shape)
    ours_us = results["ours"]["us"]
    rows = []
    for impl in IMPLS:
        r = results[impl]
        us = r["us"]
        rows.append({
            "shape": shape.name, "model": shape.model, "experts": shape.experts, "rows": shape.rows_label,
            "cum_m": shape.cum_m, "n": shape.n, "k": shape.k, "k_model": shape.k_model or shape.k,
            "impl": impl, "us": us, "tflops": shape.flops / us / 1e6 if us else None,
            "gbps": nbytes[impl] / us / 1e3 if us else None, "bytes": nbytes[impl], "flops": shape.flops,
            "flop_per_byte": shape.flops / nbytes[impl], "floor_us": floor,
            "pct_of_floor": 100 * floor / us if us else None,
            "peer_over_ours": us / ours_us if us and ours_us else None,
            "rel_err_vs_bf16": r["err"], "note": r["note"],
        })
    target, met = target_verdict(shape, rows)
    for row in rows:
        row["regime"] = regime(shape)
        row["target"] = target if row["impl"] == "ours" else ""
        row["meets_target"] = met if row["impl"] == "ours" else None
    return rows


# Issue 12's targets, by regime (rows per expert): decode at most 1.35x the floor; the middle at least
# 50% of the floor and faster than bf16; prefill at least 600 TFLOP/s and 0.85x bf16's speed.
DECODE_MAX_FLOOR_RATIO = 1.35
MIDDLE_MIN_PCT, PREFILL_MIN_TFLOPS, PREFILL_MIN_VS_BF16 = 50.0, 600.0, 0.85


def regime(shape: MoeShape) -> str:
    """"decode" (at most 16 rows per expert), "prefill" (at least 512, evenly), else "middle"."""
    if shape.skewed:
        return "middle"
    return "decode" if shape.rows <= 16 else "prefill" if shape.rows >= 512 else "middle"


def target_verdict(shape: MoeShape, rows: list[dict]) -> tuple[str, bool | None]:
    """(what the target of the shape's regime asks, met?), from ours' and bf16's rows; None: not timed."""
    by = {r["impl"]: r for r in rows}
    ours, vs_bf16 = by["ours"], by["bf16"]["peer_over_ours"]
    if not ours["us"]:
        return "not timed", None
    kind = regime(shape)
    if kind == "decode":
        ratio = ours["us"] / ours["floor_us"]
        return f"decode <= {DECODE_MAX_FLOOR_RATIO}x floor: {ratio:.2f}x", ratio <= DECODE_MAX_FLOOR_RATIO
    if kind == "middle":
        met = ours["pct_of_floor"] >= MIDDLE_MIN_PCT and vs_bf16 is not None and vs_bf16 > 1.0
        return f"middle >= {MIDDLE_MIN_PCT:.0f}% floor, > bf16: {ours['pct_of_floor']:.0f}%, {vs_bf16 or 0:.2f}x", met
    met = ours["tflops"] >= PREFILL_MIN_TFLOPS and vs_bf16 is not None and vs_bf16 >= PREFILL_MIN_VS_BF16
    return (f"prefill >= {PREFILL_MIN_TFLOPS:.0f} TFLOP/s, >= {PREFILL_MIN_VS_BF16}x bf16: "
            f"{ours['tflops']:.0f}, {vs_bf16 or 0:.2f}x"), met


def _is_wrong(row: dict) -> bool:
    """An output with NaN/inf or unwritten elements, or farther than MISMATCH from the bf16 peer's."""
    err = row["rel_err_vs_bf16"]
    return bool(row["note"]) or (err is not None and not err <= MISMATCH)


def _cell(value, fmt: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}{fmt}}"


HEADER = (f"{'#':>2} {'shape':25} {'E':>3} {'cum_m':>6} {'N':>5} {'K':>5} | {'ours us':>9} {'TFLOP/s':>7} "
          f"{'GB/s':>5} {'%floor':>6} | {'bf16 us':>9} {'x':>5} | {'fp8 us':>9} {'x':>5} | "
          f"{'deq+bf16':>9} {'x':>5} | err ours | issue 12 target")


def format_line(index: int, shape: MoeShape, rows: list[dict]) -> str:
    by = {r["impl"]: r for r in rows}
    o = by["ours"]
    peers = " | ".join(f"{_cell(by[p]['us'], '.1f', 9)} {_cell(by[p]['peer_over_ours'], '.2f', 5)}"
                       for p in IMPLS[1:])
    err = o["rel_err_vs_bf16"]
    flag = " MISMATCH" if o["us"] is not None and _is_wrong(o) else ""
    verdict = {True: "met", False: "missed", None: "-"}[o["meets_target"]]
    return (f"{index:2} {shape.name:25} {shape.experts:3} {shape.cum_m:6} {shape.n:5} {shape.k:5} | "
            f"{_cell(o['us'], '.1f', 9)} {_cell(o['tflops'], '.1f', 7)} {_cell(o['gbps'], '.0f', 5)} "
            f"{_cell(o['pct_of_floor'], '.1f', 5) + '%' if o['pct_of_floor'] else '   n/a'} | {peers} | {_cell(err, '.1e', 7)}{flag} | {verdict}: {o['target']}")


def write_csv(path: str, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_roofline(path: str, rows: list[dict], ceil: Ceilings, banner: str) -> str:
    """Log-log roofline (FLOP/byte vs TFLOP/s), one marker per implementation per shape; what was done."""
    try:
        import matplotlib
    except ImportError:
        return "roofline PNG skipped: matplotlib is missing (pip install matplotlib, or '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 7))
    ridge = ceil.bf16_tflops * 1e3 / ceil.copy_gbps       # FLOP/byte where the two ceilings meet
    intensities = [r["flop_per_byte"] for r in rows] + [ridge]
    lo, hi = min(intensities) / 2, max(intensities) * 2
    ax.plot([lo, ridge], [ceil.copy_gbps * lo / 1e3, ceil.bf16_tflops], "k--", lw=1,
            label=f"copy {ceil.copy_gbps:.0f} GB/s")
    ax.plot([ridge, hi], [ceil.bf16_tflops] * 2, "k-", lw=1, label=f"bf16 matmul {ceil.bf16_tflops:.0f} TFLOP/s")
    markers = {"ours": ("o", "tab:red"), "bf16": ("s", "tab:blue"), "fp8": ("^", "tab:green"),
               "deq+bf16": ("D", "tab:orange")}
    names = list(dict.fromkeys(r["shape"] for r in rows))
    wrong = [r for r in rows if r["impl"] == "ours" and r["tflops"] and _is_wrong(r)]
    if wrong:
        ax.scatter([r["flop_per_byte"] for r in wrong], [r["tflops"] for r in wrong], marker="x", color="tab:red",
                   label="ours, wrong output (MISMATCH)", zorder=3)
    for impl, (marker, color) in markers.items():
        pts = [r for r in rows if r["impl"] == impl and r["tflops"] and not (impl == "ours" and _is_wrong(r))]
        ax.scatter([r["flop_per_byte"] for r in pts], [r["tflops"] for r in pts], marker=marker, color=color,
                   label=impl, zorder=3)
        if impl == "ours":
            pts += wrong
        if impl == "ours":
            for r in pts:
                ax.annotate(str(names.index(r["shape"])), (r["flop_per_byte"], r["tflops"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved by that implementation)")
    ax.set_ylabel("TFLOP/s (FP8 may pass the bf16 line: its tensor-core rate is twice bf16's)")
    ax.set_title(f"MoE grouped GEMM, {banner.split(' (')[0]}; numbers: shape # of the table", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return f"roofline PNG: {path}"


def print_table(shapes: list[MoeShape]) -> None:
    """--list: the shapes with their group sizes, bytes and FLOPs; no GPU."""
    print(f"{'#':>2} {'shape':25} {'model':18} {'E':>3} {'rows':>10} {'cum_m':>6} {'N':>5} {'K':>5} "
          f"{'ours MB':>8} {'GFLOP':>8} {'FLOP/B':>7}  note")
    for i, s in enumerate(shapes):
        nbytes = impl_bytes(s)["ours"]
        note = f"K {s.k_model} padded to {s.k}" if s.k_model else ""
        if s.skewed:
            sizes = s.group_rows()
            note += f"{'; ' if note else ''}rows per expert {min(sizes)}..{max(sizes)}, {sizes.count(0)} empty"
        print(f"{i:2} {s.name:25} {s.model:18} {s.experts:3} {s.rows_label:>10} {s.cum_m:6} {s.n:5} {s.k:5} "
              f"{nbytes / 1e6:8.1f} {s.flops / 1e9:8.1f} {s.flops / nbytes:7.1f}  {note}")


def _default_path(name: str) -> str:
    return str(Path(os.environ["OUT"]) / name) if os.environ.get("OUT") else name


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m nvfp4_driver bench",
                                description="NVFP4 grouped GEMM vs bf16 / FP8 / dequantize+bf16 on MoE shapes",
                                epilog=__doc__.split("\n\n")[-1])
    p.add_argument("--quick", action="store_true", help="four shapes (decode, skewed, padded-K prefill)")
    p.add_argument("--shapes", default=None, help="comma-separated substrings of shape names (see --list)")
    p.add_argument("--list", action="store_true", help="print the shape table with bytes and FLOPs, time nothing")
    p.add_argument("--iters", type=int, default=50, help="timed runs per implementation (median)")
    p.add_argument("--csv", default=None, help="default: $OUT/bench_moe.csv when $OUT is set, else bench_moe.csv")
    p.add_argument("--png", default=None, help="roofline plot; default: $OUT/roofline.png or roofline.png")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        shapes = select_shapes(args.quick, args.shapes)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.list:
        print_table(shapes)
        return 0
    try:
        import torch
    except ImportError as exc:
        print(f"bench needs torch built with CUDA and a CUDA GPU: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"bench needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, "
              f"CUDA build: {torch.version.cuda or 'none, a CPU-only build'}); "
              f"'python -m nvfp4_driver bench --list' shows the shapes without one",
              file=sys.stderr)
        return 2
    csv_path = args.csv or _default_path("bench_moe.csv")
    png_path = args.png or _default_path("roofline.png")
    ceil = measure_ceilings()
    banner = gpu_banner()
    print(banner)
    print(f"torch {torch.__version__}; measured ceilings: copy {ceil.copy_gbps:.0f} GB/s, "
          f"bf16 matmul {ceil.bf16_tflops:.0f} TFLOP/s; median of {args.iters}, L2 flushed")
    print("x = peer us / ours us (above 1: ours faster); err = ||ours - bf16|| / ||bf16||; "
          "gpt-oss K 2880 timed as 2944 (SPEC: K % 128 == 0)")
    print(HEADER)
    all_rows = []
    for i, shape in enumerate(shapes):
        results = bench_shape(shape, args.iters)
        rows = csv_rows(shape, results, ceil)
        all_rows += rows
        print(format_line(i, shape, rows), flush=True)
        for impl in IMPLS:
            if results[impl]["us"] is None:
                print(f"   {impl}: n/a ({results[impl]['note']})", flush=True)
            elif results[impl]["note"]:
                print(f"   {impl}: {results[impl]['note']}", flush=True)
    write_csv(csv_path, all_rows)
    print(f"CSV: {csv_path}")
    print(write_roofline(png_path, all_rows, ceil, banner))
    return 0


if __name__ == "__main__":
    sys.exit(main())
