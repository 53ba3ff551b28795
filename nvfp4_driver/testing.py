"""Random problems and the SPEC §5 check, shared by the GPU tests, ``demo`` and ``selftest``.

Pure NumPy; no GPU needed. A GPU test reads::

    p = random_problem(rng, [5, 0, 130], n=256, k=384)
    ref, abs_sum = p.reference()
    ...run the kernel on p.a, p.b, p.a_scale, p.b_scale, p.m_indptr, p.alpha into an `out`
       poisoned with POISON_BITS["bfloat16"]...
    report = tolerance_check(out_bits, ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr)
    assert report.ok, report
    assert check_untouched(out_bits, POISON_BITS["bfloat16"], p.m_indptr).ok
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import (
    _host_indptr,
    a_scale_group_bases,
    a_scale_rows,
    padded_n,
    swizzled_offset,
)
from .reference import dequantize, group_gemm_with_abs

POISON_BITS = {"bfloat16": 0xFFBD, "float16": 0xFDBD}
"""Fill patterns for ``out`` before a launch: NaNs with an odd payload, so neither a stored
result nor a canonical NaN the kernel might write can be mistaken for them."""

# (significant bits incl. the implicit one, min normal exponent, max exponent)
_FORMATS = {"bfloat16": (8, -126, 127), "float16": (11, -14, 15)}

_NAN_SCALE_BYTES = np.array([0x7F, 0xFF], dtype=np.uint8)


# ----------------------------------------------------------------------------- random problems


@dataclass(frozen=True, eq=False)
class RandomProblem:
    """One grouped GEMM's inputs, all NumPy on the host, in the layouts of SPEC §2/§3."""

    a: np.ndarray  # (cum_m, K/2) uint8, packed e2m1, every byte value
    b: np.ndarray  # (G, N, K/2) uint8, packed e2m1, every byte value
    a_scale: np.ndarray  # (a_scale_rows(m_indptr), K/16) uint8, swizzled; padding rows garbage
    b_scale: np.ndarray  # (G, N_pad, K/16) uint8, swizzled; padding rows garbage
    m_indptr: np.ndarray  # (G + 1,) int32; m_indptr[0] = row_offset, m_indptr[G] < cum_m
    alpha: np.ndarray | None  # (G,) float32, or None
    a_sf: np.ndarray  # (cum_m, K/16) uint8, row-major scales of a (rows outside groups: 0)
    b_sf: np.ndarray  # (G, N, K/16) uint8, row-major scales of b

    @property
    def num_groups(self) -> int:
        return self.b.shape[0]

    @property
    def n(self) -> int:
        return self.b.shape[1]

    @property
    def k(self) -> int:
        return 2 * self.a.shape[1]

    @property
    def cum_m(self) -> int:
        return self.a.shape[0]

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ref, abs_sum)`` from :func:`nvfp4_driver.reference.group_gemm_with_abs`."""
        return group_gemm_with_abs(self.a, self.b, self.a_scale, self.b_scale, self.m_indptr, self.alpha)


def _garbage_bytes(rng: np.random.Generator, shape) -> np.ndarray:
    """Any byte, a quarter of them NaN scale patterns: padding must never be read."""
    junk = rng.integers(0, 256, size=shape, dtype=np.uint8)
    nan_spots = rng.random(size=shape) < 0.25
    junk[nan_spots] = rng.choice(_NAN_SCALE_BYTES, size=int(nan_spots.sum()))
    return junk


def _scale_bytes(rng: np.random.Generator, shape, zero_fraction: float, sign_bit: bool,
                 byte_range=(1, 0x7F), nan_fraction: float = 0.0) -> np.ndarray:
    # Uniform bytes 0x01..0x7E cover every binade from 2**-9 (subnormal) to 448.
    sf = rng.integers(byte_range[0], byte_range[1], size=shape, dtype=np.uint8)
    sf[rng.random(size=shape) < zero_fraction] = 0
    sf[rng.random(size=shape) < nan_fraction] = 0x7F
    if sign_bit:
        sf |= (rng.random(size=shape) < 0.5).astype(np.uint8) << 7
    return sf


def _place_rows(flat: np.ndarray, rows_sf: np.ndarray, first_row: int) -> None:
    """Write row-major scales at swizzled rows ``first_row..`` of a flat scale buffer."""
    count, sf_k = rows_sf.shape
    if count:
        offs = swizzled_offset(first_row + np.arange(count)[:, None], np.arange(sf_k)[None, :], sf_k)
        flat[offs] = rows_sf


def a_scale_rows_read(m_indptr) -> int:
    """Scale rows the GEMM reads for this ``m_indptr``, stated row by row: every data row of group g
    sits at scale row ``sf_base(g) + m``, and the kernel reads the whole 128-row block around it. The
    end of the last such block (0 without data rows); what the checked mode asks ``a_scale`` to hold."""
    ind = np.asarray(m_indptr, dtype=np.int64)
    end = 0
    for g, base in enumerate(a_scale_group_bases(ind)):
        for m in range(int(ind[g + 1] - ind[g])):
            end = max(end, (int(base) + m) // 128 * 128 + 128)
    return end


def swizzled_scales(rng, m_indptr, a_sf: np.ndarray, b_sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a_scale, b_scale)`` in SPEC §3's layouts from row-major ``a_sf`` (cum_m, K/16) and ``b_sf``
    (G, N, K/16); every padding byte random, a quarter of them NaN patterns."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    m_indptr = np.asarray(m_indptr)
    groups, n, sf_k = b_sf.shape
    a_scale = _garbage_bytes(rng, (a_scale_rows(m_indptr), sf_k))
    a_flat = a_scale.reshape(-1)
    for g, base in enumerate(a_scale_group_bases(m_indptr)):
        _place_rows(a_flat, a_sf[m_indptr[g] : m_indptr[g + 1]], int(base))
    b_scale = _garbage_bytes(rng, (groups, padded_n(n), sf_k))
    for g in range(groups):
        _place_rows(b_scale[g].reshape(-1), b_sf[g], 0)
    return a_scale, b_scale


def _check_shape_arg(value, name: str, multiple: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0 or value % multiple:
        raise ValueError(f"{name}={value} must be a positive multiple of {multiple} (SPEC §2)")
    return int(value)


def random_problem(
    rng,
    group_rows,
    n: int,
    k: int,
    *,
    row_offset: int = 0,
    trailing_rows: int = 3,
    alpha: bool = True,
    out_scale_target: float = 1e3,
    zero_scale_fraction: float = 0.02,
    scale_sign_bit: bool = False,
    scale_byte_range: tuple[int, int] = (1, 0x7F),
    nan_scale_fraction: float = 0.0,
) -> RandomProblem:
    """A fresh random grouped GEMM: every fp4 byte value, scales over all binades.

    Args:
        rng: ``np.random.Generator`` or an int seed.
        group_rows: rows of each group (``G`` non-negative ints; 0 makes an empty group).
        n: output columns ``N``, a multiple of 8. k: reduction length ``K``, a multiple of 128.
        row_offset: rows of ``a`` before group 0 (``m_indptr[0]``); they must stay unwritten.
        trailing_rows: rows of ``a`` after the last group; they must stay unwritten too.
        alpha: draw a per-group ``alpha`` (else None). Each ``alpha[g]`` is chosen so that the
            largest output of a sample of the group's rows and columns is about
            ``out_scale_target``; the default keeps ``|out|`` around 1e3, well inside float16,
            and makes ``alpha`` an arbitrary float32 (not a power of two). Without alpha, sums
            can pass float16's range: the check then expects inf.
        zero_scale_fraction: share of real scale bytes set to 0 (whole blocks decode to 0).
        scale_sign_bit: set bit 7 on half the real scale bytes; kernels and reference must
            ignore it (design.md). Off by default: FlashInfer's quantizer never writes it.
        scale_byte_range: real scale bytes are drawn from ``[lo, hi)`` (default: every finite
            nonzero ue4m3; ``(1, 8)`` gives only subnormal scales).
        nan_scale_fraction: share of real scale bytes set to 0x7F (NaN): their outputs are NaN.

    ``a`` and ``b`` bytes are uniform over 0..255. Real scale bytes are uniform over
    0x01..0x7E (subnormals to 448), a few zero. Padding rows of ``a_scale`` (between groups
    and after the last) and of ``b_scale`` (rows ``N..N_pad``) hold random bytes, a quarter of
    them 0x7F / 0xFF (NaN): any read of them spoils a stored output.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    sizes = [int(r) for r in group_rows]
    if any(r < 0 for r in sizes):
        raise ValueError(f"group_rows={sizes} must be non-negative")
    n = _check_shape_arg(n, "n", 8)
    k = _check_shape_arg(k, "k", 128)
    if row_offset < 0 or trailing_rows < 0:
        raise ValueError(f"row_offset={row_offset} and trailing_rows={trailing_rows} must be >= 0")
    groups, sf_k = len(sizes), k // 16
    m_indptr = (row_offset + np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])).astype(np.int32)
    cum_m = int(m_indptr[-1]) + trailing_rows

    a = rng.integers(0, 256, size=(cum_m, k // 2), dtype=np.uint8)
    b = rng.integers(0, 256, size=(groups, n, k // 2), dtype=np.uint8)
    a_sf = np.zeros((cum_m, sf_k), dtype=np.uint8)
    draw = dict(zero_fraction=zero_scale_fraction, sign_bit=scale_sign_bit, byte_range=scale_byte_range,
                nan_fraction=nan_scale_fraction)
    a_sf[m_indptr[0] : m_indptr[-1]] = _scale_bytes(rng, (int(m_indptr[-1] - m_indptr[0]), sf_k), **draw)
    b_sf = _scale_bytes(rng, (groups, n, sf_k), **draw)
    a_scale, b_scale = swizzled_scales(rng, m_indptr, a_sf, b_sf)

    alphas = None
    if alpha:
        alphas = np.ones(groups, dtype=np.float32)
        for g in range(groups):
            lo, hi = int(m_indptr[g]), int(m_indptr[g + 1])
            if lo == hi:
                continue
            rows = rng.choice(np.arange(lo, hi), size=min(16, hi - lo), replace=False)
            cols = rng.choice(n, size=min(64, n), replace=False)
            sample = dequantize(a[rows], a_sf[rows]).astype(np.float64) @ (
                dequantize(b[g, cols], b_sf[g, cols]).astype(np.float64).T
            )
            peak = float(np.max(np.abs(sample)))
            with np.errstate(over="ignore"):  # a near-zero sample: fall back to 1 below
                scale = np.float32(out_scale_target / peak) if peak > 0 else np.float32(1)
            alphas[g] = scale if np.isfinite(scale) and scale > 0 else np.float32(1)
    return RandomProblem(a, b, a_scale, b_scale, m_indptr, alphas, a_sf, b_sf)


# ----------------------------------------------------------------------------- bits <-> floats


def _bits16(x, what: str) -> np.ndarray:
    """16-bit patterns as uint16: from uint16/int16 arrays, float16 / bfloat16 arrays, torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.element_size() != 2:
            raise TypeError(f"{what} must hold 16-bit values, got {x.dtype}")
        import torch

        return x.view(torch.int16).numpy().view(np.uint16)
    arr = np.asarray(x)
    if arr.dtype.itemsize != 2:
        raise TypeError(f"{what} must hold 16-bit values, got dtype {arr.dtype}")
    return arr.view(np.uint16)


def bf16_bits_to_float(bits) -> np.ndarray:
    """bfloat16 bit patterns (uint16, any shape) -> float32 values, exactly."""
    return (_bits16(bits, "bits").astype(np.uint32) << 16).view(np.float32)


def f16_bits_to_float(bits) -> np.ndarray:
    """float16 bit patterns (uint16, any shape) -> float32 values, exactly."""
    with np.errstate(invalid="ignore"):  # signalling NaN patterns cast quietly
        return _bits16(bits, "bits").view(np.float16).astype(np.float32)


def _as_float64(out, out_dtype: str) -> np.ndarray:
    """Kernel output -> float64: raw uint16/int16 bits are decoded as ``out_dtype``."""
    if hasattr(out, "detach") and hasattr(out, "cpu"):
        out = out.detach().cpu()
        if not out.dtype.is_floating_point:
            out = _bits16(out, "out")
        else:
            import torch

            return out.to(torch.float64).numpy()  # exact from any 16/32-bit float
    arr = np.asarray(out)
    with np.errstate(invalid="ignore"):  # the poison is a signalling NaN; casting it is fine
        if arr.dtype in (np.uint16, np.int16):
            to_float = bf16_bits_to_float if out_dtype == "bfloat16" else f16_bits_to_float
            return to_float(arr).astype(np.float64)
        return arr.astype(np.float64)


# ----------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`tolerance_check`."""

    ok: bool
    out_dtype: str
    checked: int  # elements compared
    failures: int  # elements outside their tolerance
    max_ulps: float  # max |out - ref| / ulp(ref); inf when a NaN or inf is misplaced
    worst: tuple[int, ...] | None  # index of the largest |out - ref| / tolerance
    worst_out: float
    worst_ref: float
    worst_tol: float

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        text = (
            f"{verdict}: {self.failures} of {self.checked} {self.out_dtype} elements out of tolerance, "
            f"max {self.max_ulps:.3g} ulp"
        )
        if self.worst is not None:
            text += (
                f"; worst at {self.worst}: out={self.worst_out!r} ref={self.worst_ref!r} "
                f"tolerance={self.worst_tol:.3g}"
            )
        return text


def _ulp(ref: np.ndarray, out_dtype: str) -> np.ndarray:
    """Spacing of ``out_dtype`` at ``|ref|`` (subnormal spacing near 0, top binade's past max)."""
    bits, emin, emax = _FORMATS[out_dtype]
    mag = np.abs(np.where(np.isfinite(ref), ref, 0.0))
    _, e = np.frexp(mag)  # frexp(0) gives e = 0, which is no binade: zero uses emin
    exp = np.where(mag == 0, emin, np.clip(e.astype(np.int64) - 1, emin, emax))
    return np.ldexp(1.0, (exp - bits + 1).astype(np.int32))


def tolerance_check(out, ref, abs_sum, k: int, out_dtype: str, *, m_indptr=None) -> CheckReport:
    """SPEC §5: is every ``out`` element within ``ulp(ref) + K * 2**-23 * abs_sum`` of ``ref``?

    Args:
        out: the kernel's output, ``(cum_m, N)``: float values (NumPy, torch, any float
            dtype) or raw uint16 bit patterns of ``out_dtype``.
        ref: float64 ``(cum_m, N)`` exact result including ``alpha`` (``group_gemm``).
        abs_sum: float64 ``(cum_m, N)``, ``|alpha| * sum_k |A*B|`` (``group_gemm_with_abs``).
        k: the reduction length K.
        out_dtype: ``"bfloat16"`` or ``"float16"``; ``ulp`` is its spacing at ``|ref|``.
        m_indptr: if given, only rows ``[m_indptr[0], m_indptr[G])`` are compared (the rows
            outside are checked by :func:`check_untouched`); else every element is.

    Where ``|ref|`` plus the tolerance reaches the format's overflow threshold, ``+-inf`` of
    ``ref``'s sign is accepted (float16 overflows at 65520). NaN in ``out`` fails unless
    ``ref`` is NaN there too (a NaN input scale); a NaN ``ref`` asks for a NaN ``out``.
    """
    if out_dtype not in _FORMATS:
        raise ValueError(f"out_dtype={out_dtype!r} must be one of {sorted(_FORMATS)}")
    out64 = _as_float64(out, out_dtype)
    ref = np.asarray(ref, dtype=np.float64)
    abs_sum = np.asarray(abs_sum, dtype=np.float64)
    if not (out64.shape == ref.shape == abs_sum.shape):
        raise ValueError(f"out.shape={out64.shape}, ref.shape={ref.shape}, abs_sum.shape={abs_sum.shape} differ")
    if m_indptr is not None:
        ind = _host_indptr(m_indptr)
        rows = slice(int(ind[0]), int(ind[-1]))
        out64, ref, abs_sum = out64[rows], ref[rows], abs_sum[rows]
        row0 = int(ind[0])
    else:
        row0 = 0

    bits, _, emax = _FORMATS[out_dtype]
    overflow = (2.0 - 2.0 ** -bits) * 2.0**emax
    ulp = _ulp(ref, out_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        tol = ulp + k * 2.0**-23 * np.where(np.isnan(abs_sum), 0.0, abs_sum)
        err = np.abs(out64 - ref)
        both_nan = np.isnan(out64) & np.isnan(ref)
        inf_ok = np.isinf(out64) & (np.sign(out64) == np.sign(ref)) & (np.abs(ref) + tol >= overflow)
        finite = np.isfinite(out64) & np.isfinite(ref)
        err = np.where(finite, err, np.where(both_nan | inf_ok, 0.0, np.inf))
        passed = err <= tol
        ratio = err / tol
    failures = int(np.count_nonzero(~passed))
    checked = int(passed.size)
    if checked == 0:
        return CheckReport(True, out_dtype, 0, 0, 0.0, None, float("nan"), float("nan"), float("nan"))
    flat = int(np.argmax(ratio))
    idx = np.unravel_index(flat, ratio.shape)
    worst = (idx[0] + row0,) + tuple(int(i) for i in idx[1:])
    return CheckReport(
        ok=failures == 0,
        out_dtype=out_dtype,
        checked=checked,
        failures=failures,
        max_ulps=float(np.max(err / ulp)),
        worst=tuple(int(i) for i in worst),
        worst_out=float(out64[idx]),
        worst_ref=float(ref[idx]),
        worst_tol=float(tol[idx]),
    )


@dataclass(frozen=True)
class UntouchedReport:
    """Result of :func:`check_untouched`."""

    ok: bool
    rows_checked: int
    changed: int  # elements outside the groups' rows that no longer hold the poison
    first_changed: tuple[int, int] | None

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.rows_checked} rows outside the groups still hold the poison"
        return (
            f"FAILED: {self.changed} elements outside the groups' rows were written "
            f"(of {self.rows_checked} rows); first at {self.first_changed}"
        )


def check_untouched(out_bits, poison_bits, m_indptr) -> UntouchedReport:
    """Do rows outside ``[m_indptr[0], m_indptr[G])`` still hold the poison, bit for bit?

    Args:
        out_bits: ``(cum_m, N)`` 16-bit output as uint16 / int16 / float16 / bfloat16 (NumPy or
            torch); compared as bit patterns, so NaN poison compares equal to itself.
        poison_bits: the pattern written before the launch: an int (e.g. ``POISON_BITS[...]``)
            or an array of bit patterns broadcastable to ``out_bits`` (a copy of the poisoned
            buffer).
        m_indptr: ``(G + 1,)`` row offsets (host data).
    """
    bits = _bits16(out_bits, "out_bits")
    if bits.ndim != 2:
        raise ValueError(f"out_bits must be 2-D (cum_m, N), got shape {bits.shape}")
    poison = np.broadcast_to(
        _bits16(poison_bits, "poison_bits") if np.ndim(poison_bits) else np.uint16(poison_bits), bits.shape
    )
    ind = _host_indptr(m_indptr)
    if ind[-1] > bits.shape[0]:
        raise ValueError(f"m_indptr[G]={int(ind[-1])} exceeds out_bits rows {bits.shape[0]}")
    outside = np.ones(bits.shape[0], dtype=bool)
    outside[int(ind[0]) : int(ind[-1])] = False
    diff = (bits != poison) & outside[:, None]
    changed = int(np.count_nonzero(diff))
    first = None
    if changed:
        r, c = np.argwhere(diff)[0]
        first = (int(r), int(c))
    return UntouchedReport(changed == 0, int(np.count_nonzero(outside)), changed, first)
