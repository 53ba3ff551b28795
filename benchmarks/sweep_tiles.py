"""Time every compiled variant of one family on the benchmark shapes (launched directly, bypassing
the automatic choice), to choose the defaults. One process, one card, L2 flushed before each run.

    python benchmarks/sweep_tiles.py [--family sm80] [--target sm_90] [--quick] [--shapes dsv3-up,gptoss]

The shapes and their inputs are bench_moe.py's (``--shapes`` filters them as there).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import torch
except ImportError:  # main() says so in one line (common.require_cuda)
    torch = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_moe import ShapeRun, floor_us, select_shapes  # noqa: E402
from benchmarks.common import gpu_banner, measure_ceilings, require_cuda, time_us  # noqa: E402
from nvfp4_driver import config, driver, plans, registry, variants  # noqa: E402
from nvfp4_driver.problem import Problem  # noqa: E402


def launcher(problem, variant, run, spec=None):
    """A no-argument launch of ``variant`` on ``run``'s tensors, as the op launches it; ``spec``: another
    build of the same kernel (benchmarks/compare_builds.py)."""
    a, b, a_scale, b_scale, m_indptr, alpha, out = (run.a, run.b, run.a_scale, run.b_scale, run.m_indptr,
                                                    run.alpha, run.out)
    stream = torch.cuda.current_stream().cuda_stream
    plan = plans.Plan(problem, variant.tiles, a_scale.numel(), config.Flags())  # the op's own arguments
    args = plan.args(a.data_ptr(), b.data_ptr(), a_scale.data_ptr(), b_scale.data_ptr(), m_indptr.data_ptr(),
                     alpha.data_ptr(), out.data_ptr())
    # the op's launcher: the TMA kernels' tensor maps and persistent grid included
    kernel, g = plans.launcher(problem, variant, plan.a_scale_rows, 0, driver.device_info(0).sm_count, spec=spec)
    return lambda: kernel.launch(g, stream, args)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="sm80")
    p.add_argument("--target", default="sm_90")
    p.add_argument("--quick", action="store_true", help="bench_moe.py's four --quick shapes")
    p.add_argument("--shapes", default=None, help="comma-separated substrings of bench_moe.py's shape names")
    args = p.parse_args()
    require_cuda("sweep_tiles.py")
    ceil = measure_ceilings()
    print(gpu_banner())
    print(f"ceilings: copy {ceil.copy_gbps:.0f} GB/s, bf16 {ceil.bf16_tflops:.0f} TFLOP/s")
    # The registry's entries of the family, each made a Variant directly (no name looked up twice).
    target = registry.Target.parse(args.target)
    kernels = sorted((e for e in registry.entries().values() if e.family == args.family and e.tiles is not None),
                     key=lambda e: e.name)
    for shape in select_shapes(args.quick, args.shapes):
        run = ShapeRun(shape)
        problem = Problem(shape.experts, shape.n, shape.k, shape.cum_m, "bfloat16")
        floor = floor_us(shape, ceil)
        results = []
        for entry in kernels:
            results.append((time_us(launcher(problem, variants.Variant(entry, target), run), iters=20), entry.name))
        results.sort()
        print(f"{shape.name} E={shape.experts} rows={shape.rows_label} N={shape.n} K={shape.k}: floor {floor:.1f} us; "
              f"best {results[0][0]:.1f} us ({100 * floor / results[0][0]:.0f}% of floor) {results[0][1]}")
        for t, name in results[:6]:
            print(f"    {t:9.1f} us  {name}")
        m128 = [r for r in results if "_m128n128k128_swapab" in r[1]]
        if m128:
            print(f"    FlashInfer default m128n128k128_swapab: {m128[0][0]:.1f} us")
        del run
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
