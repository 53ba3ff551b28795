"""``python -m nvfp4_driver {demo,info,selftest,bench}``.

- ``info``: the driver, every GPU, and the kernel each would run.
- ``demo``: quantize a small random MoE layer, run it on the GPU if there is one, compare with the
  reference, print the error and the kernel time; without a GPU, run the reference alone.
- ``selftest``: on every GPU present, the kernel the dispatcher picks, on a grid of shapes and
  options, against the reference; PASS/FAIL per case; exit status 1 on any failure.
- ``bench [args]``: from a source checkout, ``benchmarks/bench_moe.py`` (our GEMM against bf16, FP8
  and dequantize+bf16 peers on MoE shapes; ``bench --help``). benchmarks/ is not in the wheel.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import driver
from .problem import Problem
from .variants import UnsupportedGpuError, select_variant


def _gpus() -> tuple[list[int], str]:
    """GPU ordinals, or [] and the reason there are none."""
    try:
        return list(range(driver.device_count())), ""
    except (driver.NoCudaDriverError, driver.NoCudaDeviceError) as exc:
        return [], str(exc)


def cmd_info(_args) -> int:
    ordinals, why = _gpus()
    if not ordinals:
        print(f"no GPU: {why}")
        return 0
    version = driver.driver_version()
    print(f"CUDA driver: {version // 1000}.{version % 1000 // 10}"
          + ("" if version >= driver.MIN_DRIVER_VERSION else
             f"  (too old: the kernels need {driver.MIN_DRIVER_VERSION // 1000}.0, driver 580+)"))
    example = Problem(num_groups=8, n=4096, k=7168, cum_m=1024, out_dtype="bfloat16")
    for d in ordinals:
        info = driver.device_info(d)
        try:
            v = select_variant(example, None, info.capability)
            kernel = f"{v.symbol} ({'PTX, compiled by the driver' if v.target.is_ptx else f'{v.target} cubin'})"
        except UnsupportedGpuError as exc:
            kernel = f"none: {exc}"
        print(f"GPU {d}: {info.name}, sm_{info.capability[0]}{info.capability[1]}, {info.sm_count} SMs, "
              f"{info.total_memory / 2**30:.0f} GiB; default kernel: {kernel}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(seed=args.seed)


def cmd_selftest(args) -> int:
    from .selftest import run_selftest
    return run_selftest(seed=args.seed, twin=args.twin)


def _checkout_root() -> Path:
    """The folder holding the package: the repository root in a source checkout."""
    return Path(__file__).resolve().parent.parent


def cmd_bench(args) -> int:
    root = _checkout_root()
    script = root / "benchmarks" / "bench_moe.py"
    if not script.is_file():
        print(f"python -m nvfp4_driver bench needs a source checkout: it runs benchmarks/bench_moe.py from "
              f"the repository root next to the package, and {script} does not exist (benchmarks/ is not "
              f"installed with the wheel). Clone the repository and run it there, or install it with "
              f"'pip install -e .[bench]'.", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))  # first, so that no other top-level 'benchmarks' shadows ours
    module = importlib.import_module("benchmarks.bench_moe")
    if Path(module.__file__).resolve() != script:
        print(f"python -m nvfp4_driver bench: 'benchmarks.bench_moe' was imported from {module.__file__}, "
              f"not {script}; another 'benchmarks' package shadows the checkout's", file=sys.stderr)
        return 2
    return module.main(args.bench_args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nvfp4_driver", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="driver, GPUs and the kernel each would use").set_defaults(fn=cmd_info)
    for name, fn, text in (("demo", cmd_demo, "quantize and run a small MoE layer"),
                           ("selftest", cmd_selftest, "check the dispatched kernels against the reference")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
        p.set_defaults(fn=fn)
        if name == "selftest":
            p.add_argument("--twin", action="store_true",
                           help="on sm_90: run the native Blackwell kernel's twin (software FP4 MMA)")
    # every argument after 'bench' (--help included) goes to bench_moe's own parser
    sub.add_parser("bench", add_help=False, help="time our GEMM and its peers on MoE shapes "
                   "(source checkout; 'bench --help')").set_defaults(fn=cmd_bench)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
