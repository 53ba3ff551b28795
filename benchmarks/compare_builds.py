"""Time the package's GEMM cubins against another build of the same kernels, in one process.

    python benchmarks/compare_builds.py --baseline OLD_CUBIN_DIR [--shapes dsv3-up,qwen3] [--quick]

For each of bench_moe.py's shapes, the kernel the automatic choice picks on this GPU is launched
from ``nvfp4_driver/cubins`` and from ``OLD_CUBIN_DIR`` (a copy of that folder from another commit:
same symbol, same ABI), on the same inputs, alternately, L2 flushed before each run. A kernel step
is measured this way before it is kept (docs/perf-notes.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

try:
    import torch
except ImportError:  # main() says so in one line (common.require_cuda)
    torch = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_moe import ShapeRun, floor_us, select_shapes  # noqa: E402
from benchmarks.common import gpu_banner, measure_ceilings, require_cuda, time_us  # noqa: E402
from benchmarks.sweep_tiles import launcher  # noqa: E402
from nvfp4_driver import variants  # noqa: E402
from nvfp4_driver.problem import Problem  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", type=Path, help="another build's cubins/ folder (required)")
    p.add_argument("--quick", action="store_true", help="bench_moe.py's four --quick shapes")
    p.add_argument("--shapes", default=None, help="comma-separated substrings of bench_moe.py's shape names")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the two builds (median of 20 each)")
    args = p.parse_args()
    require_cuda("compare_builds.py")
    if args.baseline is None:
        p.error("--baseline DIR is required")
    ceil = measure_ceilings()
    print(gpu_banner())
    cap = torch.cuda.get_device_capability()
    print("| shape | kernel | floor us | baseline us | this build us | this / baseline |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in select_shapes(args.quick, args.shapes):
        run = ShapeRun(shape)
        problem = Problem(shape.experts, shape.n, shape.k, shape.cum_m, "bfloat16")
        variant = variants.select_variant(problem, None, cap)
        ours = launcher(problem, variant, run)
        spec = variants.kernel_spec(variant)
        old_spec = dataclasses.replace(spec, file=str(args.baseline.resolve() / spec.file))
        old = launcher(problem, variant, run, spec=old_spec)
        new_t, old_t = [], []
        for _ in range(args.rounds):
            old_t.append(time_us(old, iters=20))
            new_t.append(time_us(ours, iters=20))
        o, n = sorted(old_t)[len(old_t) // 2], sorted(new_t)[len(new_t) // 2]
        print(f"| {shape.name} | {spec.symbol} | {floor_us(shape, ceil):.1f} | {o:.1f} | {n:.1f} | {n / o:.3f} |")
        del run
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
