"""``python -m nvfp4_driver selftest``: the dispatched kernels on this machine's GPUs, checked.

For every GPU: each case runs the kernel the dispatcher picks (default options, then every tile
option) on fresh random inputs and compares with the float64 reference by SPEC §5. Then, as lines of
their own, the cases whose answer on Blackwell only the hardware can give (the PTX ISA leaves them
unspecified or we could not run them there): scale bytes with bit 7 set, NaN scale bytes, subnormal
scales, and a K = 7168 sum that cancels to zero, whose error is printed against SPEC's tolerance.
Framework-free: device memory comes from ``devmem.DeviceBuffer``. Exit status: 0 all passed, 1 a
failure, 2 no GPU.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from . import config, driver, registry, testing
from .devmem import DeviceBuffer
from .ops import run_with_flags
from .problem import Problem, Tiles
from .variants import Family, checkout_only_builds_missing, select_variant, wgmma_cuts

# (group rows, N, K): decode-like and prefill-like, empty groups, K=384 for tile_k=256, N=8.
SHAPES = [
    ([1, 0, 7, 3], 256, 512),
    ([37, 0, 1, 128, 200], 136, 384),
    ([128, 128, 128], 64, 256),
    ([1], 8, 128),
    ([300, 5, 0, 64], 512, 1024),
]
# None: the automatic cut (what a call without tile arguments runs); then every compiled cut.
OPTIONS = [None] + sorted(registry.family_cuts(Family.SM80.value),
                          key=lambda t: (t.tile_m != 128, t.tile_m, t.tile_n, t.tile_k, t.swap_ab))
# Cuts that exist on some kinds of GPU only: tile_n 256 is the Hopper wgmma kernel's (on 9.0 the
# (128, 128, 128, either swap_ab) and (32 or 64, 128, 128, True) cuts above run there too) and the native
# kernel's (sm_12x and its twin); tile_m 8 is Hopper's sm90ws kernel's.
HOPPER_ONLY = sorted((wgmma_cuts() | registry.family_cuts(Family.SM90WS.value)) - registry.family_cuts(Family.SM80.value),
                     key=lambda t: (t.tile_n, t.tile_m, t.tile_k))
NATIVE_ONLY = sorted(registry.family_cuts(Family.SM120WS.value) - registry.family_cuts(Family.SM80.value),
                     key=lambda t: t.tile_n)


def _cancelling(rng) -> testing.RandomProblem:
    """K = 7168 where the second half of K repeats the first with B negated: every exact sum is 0, so
    the whole output is float32 rounding, which SPEC §5 bounds by K * 2**-23 * sum |A*B|."""
    p = testing.random_problem(rng, [16, 1, 0, 37], n=256, k=7168, alpha=False)
    half, sf_half = p.k // 4, p.k // 32  # bytes and scale columns of half of K
    a, b, a_sf, b_sf = p.a.copy(), p.b.copy(), p.a_sf.copy(), p.b_sf.copy()
    a[:, half:], a_sf[:, sf_half:] = a[:, :half], a_sf[:, :sf_half]
    b[:, :, half:], b_sf[:, :, sf_half:] = b[:, :, :half] ^ 0x88, b_sf[:, :, :sf_half]  # 0x88: both signs
    a_scale, b_scale = testing.swizzled_scales(rng, p.m_indptr, a_sf, b_sf)
    return testing.RandomProblem(a, b, a_scale, b_scale, p.m_indptr, None, a_sf, b_sf)


# name -> problem builder. On Blackwell each answers a question the PTX ISA leaves open (the kernels
# mask bit 7 of every scale byte, as SPEC §1 reads it); on any other GPU they check the same contract.
HARDWARE_CASES = {
    "scale bytes with bit 7 set": lambda rng: testing.random_problem(rng, [64, 3, 130], n=256, k=1024,
                                                                    scale_sign_bit=True),
    "NaN scale bytes (0x7F)": lambda rng: testing.random_problem(rng, [40, 90], n=128, k=512,
                                                                nan_scale_fraction=0.002),
    "subnormal scales only": lambda rng: testing.random_problem(rng, [33, 128], n=256, k=1024,
                                                               scale_byte_range=(1, 8)),
    "K = 7168 cancellation": _cancelling,
}


def upload(p: testing.RandomProblem, device: int) -> dict:
    names = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")
    return {n: DeviceBuffer.from_numpy(getattr(p, n), device=device) for n in names if getattr(p, n) is not None}


def run_on_gpu(p: testing.RandomProblem, bufs: dict, tiles: Tiles | None, out_dtype: str, device: int,
               flags: config.Flags) -> np.ndarray:
    """Run the op into a poisoned output; return its bit patterns (uint16, (cum_m, N))."""
    out = DeviceBuffer((p.cum_m, p.n), out_dtype, device=device)
    out.fill_bytes(0xFF)
    cut = {} if tiles is None else dict(tile_m=tiles.tile_m, tile_n=tiles.tile_n, tile_k=tiles.tile_k,
                                        swap_ab=tiles.swap_ab)
    run_with_flags(flags, bufs["a"], bufs["b"], bufs["a_scale"], bufs["b_scale"], bufs["m_indptr"],
                   alpha=bufs.get("alpha"), out=out, **cut)
    return out.to_numpy()


def check_case(p, bits, out_dtype, ulps: bool = True) -> tuple[bool, str]:
    """(passed, what to print); ``ulps=False`` leaves out the error in ulps (meaningless where the exact
    result is 0, as in the cancellation case)."""
    ref, abs_sum = p.reference()
    report = testing.tolerance_check(bits, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr)
    untouched = testing.check_untouched(bits, 0xFFFF, p.m_indptr)
    ok = report.ok and untouched.ok
    worst = abs(report.worst_out - report.worst_ref) / report.worst_tol if report.checked else 0.0
    text = (("" if not ulps else f"max {report.max_ulps:.2f} ulp, ") + f"worst error {worst:.3g} x the SPEC tolerance"
            if report.ok else str(report))
    if not untouched.ok:
        text += f"; {untouched}"
    return ok, text


def run_selftest(seed: int | None = None, twin: bool = False) -> int:
    """Run the grid of cases on every GPU; ``twin``: on sm_90 GPUs, the sm120 kernel's twin."""
    env = config.flags()
    flags = env._replace(twin=True) if twin else env  # passed to each call: nothing is written to os.environ
    if flags.twin:
        missing = checkout_only_builds_missing("twin_sm_90")
        if missing:  # an installed wheel: say so once, before any case
            print(f"selftest --twin: {missing}", file=sys.stderr)
            return 2
    try:
        ordinals = list(range(driver.device_count()))
    except (driver.NoCudaDriverError, driver.NoCudaDeviceError) as exc:
        print(f"selftest: no GPU ({exc}); nothing was checked")
        return 2
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
    print(f"selftest: seed {seed}")
    rng = np.random.default_rng(seed)
    failures = total = 0
    for device in ordinals:
        info = driver.device_info(device)
        for rows, n, k in SHAPES:
            p = testing.random_problem(rng, rows, n=n, k=k, row_offset=int(rng.integers(0, 4)))
            bufs = upload(p, device)
            hopper = info.capability == (9, 0) and not (flags.twin or flags.portable or flags.force_ptx)
            native = flags.twin or (info.capability in ((12, 0), (12, 1)) and not flags.force_ptx)
            for i, tiles in enumerate(OPTIONS + (HOPPER_ONLY if hopper else []) + (NATIVE_ONLY if native else [])):
                out_dtype = ("bfloat16", "float16")[i % 2]
                problem = Problem(p.num_groups, p.n, p.k, p.cum_m, out_dtype)
                variant = select_variant(problem, tiles, info.capability, flags.force_ptx, flags.twin, flags.portable,
                                         flags.log)
                t0 = time.perf_counter()
                bits = run_on_gpu(p, bufs, tiles, out_dtype, device, flags)
                ok, text = check_case(p, bits, out_dtype)
                total += 1
                failures += not ok
                print(f"{'PASS' if ok else 'FAIL'}  GPU {device} {info.name}  {variant.symbol} ({variant.target})  "
                      f"G={p.num_groups} N={n} K={k} rows={rows} {out_dtype}  {text}  "
                      f"[{(time.perf_counter() - t0) * 1e3:.0f} ms incl. copies]")
        for name, build in HARDWARE_CASES.items():
            p = build(rng)
            bufs = upload(p, device)
            for i, tiles in enumerate((None, Tiles(128, 128, 128, False))):
                out_dtype = ("bfloat16", "float16")[i % 2]
                variant = select_variant(Problem(p.num_groups, p.n, p.k, p.cum_m, out_dtype), tiles, info.capability,
                                         flags.force_ptx, flags.twin, flags.portable, flags.log)
                ok, text = check_case(p, run_on_gpu(p, bufs, tiles, out_dtype, device, flags), out_dtype, ulps=False)
                total += 1
                failures += not ok
                print(f"{'PASS' if ok else 'FAIL'}  GPU {device} {info.name}  [hardware question] {name}: "
                      f"{variant.symbol} ({variant.target})  {out_dtype}  {text}")
    print(f"selftest: {total - failures} passed, {failures} failed")
    return 1 if failures else 0
