"""The native kernel's data movement (its sm_90 stand-in), and the Hopper kernels, against other builds, in one process.

    python benchmarks/bench_mainloop.py [--shapes dsv3,qwen3] [--compare DIR,...] [--iters 30]

Per shape (bench_moe.py's table and inputs), kernels launched directly (no automatic choice, no host checks):

- ``standin <family> <cut>``: the native Blackwell kernel built for sm_90 with its MMA replaced by a cheap
  op that consumes every fragment and scale register (``standin_sm_90`` in the manifest). It runs the
  native kernel's loads, index math and stores on this Hopper card, so its time is the native main loop's
  data movement. Both native main loops where a cut has both: ``sm120`` (cp.async, a barrier per k tile)
  and ``sm120ws`` (TMA producer warp, mbarriers, persistent grid; what sm_12x runs for its cuts). Cuts:
  the sm_12x automatic one and every token tile (few rows per group) or the 128-row tiles (many rows).
  It is not a Blackwell result.
- ``hopper <symbol>``: the kernel a compute capability 9.0 GPU runs for the shape.

With ``--compare DIR[,DIR...]`` (directories of cubins and their manifest.json, e.g. an older build or
an experiment) every kernel above whose file is also in DIR is timed from there too, with that
manifest's block size and shared memory, in the same process.

Columns: median us (L2 flushed, CUDA events), GB/s of the op's bytes (bench_moe.impl_bytes: inputs and
output once), that over the measured copy bandwidth, and us over the shape's floor.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_moe import ShapeRun, floor_us, impl_bytes, select_shapes  # noqa: E402
from benchmarks.common import gpu_banner, measure_ceilings, time_us  # noqa: E402
from nvfp4_driver import config, driver, plans, registry, variants  # noqa: E402
from nvfp4_driver.problem import Problem, Tiles  # noqa: E402

TOKEN_TILES = [Tiles(tm, 128, tk, True) for tm in (16, 32, 64) for tk in (128, 256)]
WIDE_TILES = [Tiles(128, 128, tk, swap) for tk in (128, 256) for swap in (False, True)] + [Tiles(128, 256, 128, False)]


def spec_from(manifest: dict, symbol: str, target: registry.Target, folder: Path) -> driver.KernelSpec:
    """The KernelSpec (with an absolute file) of ``symbol``'s ``target`` build in ``manifest``."""
    return registry.read_entries({symbol: manifest["kernels"][symbol]})[symbol].spec(target, folder)


def launcher(run: ShapeRun, problem: Problem, variant: variants.Variant, spec: driver.KernelSpec):
    """The op's own launch of ``variant`` (from ``spec``'s file): its arguments, and for the TMA
    kernels their tensor maps (encoded once, then cached) and persistent grid."""
    import torch

    stream = torch.cuda.current_stream().cuda_stream
    plan = plans.Plan(problem, variant.tiles, run.a_scale.numel(), config.Flags())  # the op's own arguments
    args = plan.args(run.a.data_ptr(), run.b.data_ptr(), run.a_scale.data_ptr(), run.b_scale.data_ptr(),
                     run.m_indptr.data_ptr(), run.alpha.data_ptr(), run.out.data_ptr())
    kernel, grid = plans.launcher(problem, variant, plan.a_scale_rows, 0, driver.device_info(0).sm_count, spec)
    real = getattr(kernel, "grid", grid)  # a TmaGemmLaunch's persistent grid
    return lambda: kernel.launch(grid, stream, args), real


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=None, help="comma-separated substrings of bench_moe.py's shape names")
    p.add_argument("--compare", default="", help="comma-separated directories of cubins with their manifest.json")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--cuts", default="", help="more cuts, e.g. 16x64x256s,128x128x128 (s: swap_ab), timed for both "
                                              "families wherever a build has them (ours or --compare)")
    p.add_argument("--csv", default=None, help="default: $OUT/bench_mainloop.csv when $OUT is set")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_mainloop: needs torch (pip install torch) and an NVIDIA GPU; nothing was timed")
        return 2
    if not torch.cuda.is_available():
        print("bench_mainloop: no CUDA GPU visible; nothing was timed")
        return 2
    ceil = measure_ceilings()
    print(gpu_banner())
    print(f"copy {ceil.copy_gbps:.0f} GB/s, bf16 {ceil.bf16_tflops:.0f} TFLOP/s")
    ours = variants.manifest()
    others = [(Path(d).resolve(), json.loads((Path(d) / "manifest.json").read_text()))
              for d in args.compare.split(",") if d]
    capability = driver.device_info(0).capability
    rows_out = []
    for shape in select_shapes(False, args.shapes):
        run = ShapeRun(shape)
        problem = Problem(shape.experts, shape.n, shape.k, shape.cum_m, "bfloat16")
        nbytes, floor = impl_bytes(shape)["ours"], floor_us(shape, ceil)
        print(f"\n{shape.name}: {nbytes / 1e6:.0f} MB, floor {floor:.1f} us")
        sm12 = variants.select_variant(problem, None, (12, 0))
        cuts = [sm12.tiles]
        rows = shape.cum_m / shape.experts
        cuts += [t for t in (TOKEN_TILES if rows <= 64 else WIDE_TILES) if t not in cuts]
        extra = [Tiles(*(int(x) for x in c.rstrip("s").split("x")), c.endswith("s")) for c in args.cuts.split(",") if c]
        # both native main loops where a cut has both; "auto" marks the one sm_12x would run
        ws, cp = variants.Family.SM120WS, variants.Family.SM120
        ws_cuts, cp_cuts = registry.family_cuts(ws.value), registry.family_cuts(cp.value)
        kernels = [("standin", variants.variant_for(fam, t, "standin_sm_90"), t == cuts[0] and (fam is ws) == (t in ws_cuts))
                   for t in cuts + extra for fam in (ws, cp) if t in (ws_cuts if fam is ws else cp_cuts)]
        hv = variants.select_variant(problem, None, capability)
        portable = registry.family_cuts(variants.Family.SM80.value)
        kernels += [("hopper", hv, False)] + [("hopper", variants.variant_for(variants.Family.SM80, t, "sm_90"), False)
                                              for t in extra if t in portable]
        jobs = []
        for what, v, auto in kernels:
            label = f"{what} {v.family.value} {v.symbol.split('gemm_')[1]}" + (" (sm_12x auto)" if auto else "")
            for folder, manifest in [(driver.CUBIN_DIR, ours)] + others:
                entry = manifest["kernels"].get(v.symbol, {}).get("targets", {}).get(v.target.name)
                if entry and (Path(folder) / entry["file"]).exists():
                    prefix = "" if folder == driver.CUBIN_DIR else f"{Path(folder).name}: "
                    jobs.append((prefix + label, v, spec_from(manifest, v.symbol, v.target, Path(folder))))
        for label, v, spec in jobs:
            fn, grid = launcher(run, problem, v, spec)
            us = time_us(fn, iters=args.iters)
            gbps = nbytes / us / 1e3
            print(f"  {label:58s} {us:9.1f} us  {gbps:7.0f} GB/s  {100 * gbps / ceil.copy_gbps:5.1f}% of copy  "
                  f"{us / floor:5.2f}x floor  grid {grid[0]}x{grid[1]}")
            rows_out.append(dict(shape=shape.name, kernel=label, us=round(us, 2), gbps=round(gbps, 1),
                                 pct_copy=round(100 * gbps / ceil.copy_gbps, 1), x_floor=round(us / floor, 3),
                                 card=torch.cuda.get_device_name()))
        del run
        torch.cuda.empty_cache()
    path = args.csv or (os.path.join(os.environ["OUT"], "bench_mainloop.csv") if os.environ.get("OUT") else None)
    if path and rows_out:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows_out[0]))
            w.writeheader()
            w.writerows(rows_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
