"""NumPy oracle for NVFP4: the codecs (SPEC §1), the quantizer (SPEC §4) and the float64
grouped GEMM (SPEC §2).

Independent of every GPU path: it shares no code with the kernels, only the contract. Arrays
may be NumPy arrays or torch CPU tensors (a GPU tensor is copied to the host). Shapes use
``K`` for the reduction length, ``sf_k = K / 16`` for scale columns, ``G`` for groups.

Non-finite inputs (the SPEC leaves them open; these choices are deterministic):

- :func:`encode_e2m1` maps NaN of either sign to code 7 (+6): satfinite picks the largest
  finite magnitude, and a NaN's sign bit carries no meaning. ``+-inf`` saturate to ``+-6``.
- :func:`encode_ue4m3` maps NaN to 0x7F (the e4m3fn NaN) and ``+inf`` to 0x7E (448).
- :func:`quantize_blocks`: a block holding a NaN has ``max|x| = NaN``, so its scale byte is
  0x7F and the whole block decodes to NaN (the NaN is not silently dropped); its codes are
  all 7. A block holding ``+-inf`` gets scale byte 0x7E (448), the inf becomes ``+-6`` and
  its finite neighbours are quantized against that scale.
"""

from __future__ import annotations

import numpy as np

from .layout import (
    SF_VEC,
    _host_bytes,
    _host_indptr,
    _host_numpy,
    a_scale_group_bases,
    a_scale_rows,
    padded_n,
    swizzle_scales,
    swizzled_offset,
    unswizzle_scales,
)

E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)
"""Value of every e2m1 code 0..15 (sign in bit 3; code 8 is -0)."""

E2M1_MAX = 6.0
UE4M3_MAX = 448.0
_E2M1_MAX_CODE = 7
_UE4M3_MAX_BYTE = 0x7E
_UE4M3_NAN_BYTE = 0x7F


def _build_ue4m3_table() -> np.ndarray:
    # bias 7, 3 mantissa bits: exponent field 0 is subnormal (m * 2**-9).
    b = np.arange(128, dtype=np.int64)
    exp_field, man = b >> 3, b & 7
    normal = np.ldexp((8 + man).astype(np.float64), (exp_field - 10).astype(np.int32))
    subnormal = np.ldexp(man.astype(np.float64), -9)
    values = np.where(exp_field == 0, subnormal, normal)
    values[_UE4M3_NAN_BYTE] = np.nan
    # The sign bit of a scale byte is ignored (design.md): bytes 0x80.. repeat 0x00..
    return np.concatenate([values, values]).astype(np.float32)


UE4M3_VALUES = _build_ue4m3_table()
"""Value of every scale byte 0..255 as ``float8_e4m3fn(byte & 0x7F)`` (0x7F, 0xFF: NaN)."""

_UE4M3_F64 = UE4M3_VALUES.astype(np.float64)
# byte -> low-nibble value + 1j * high-nibble value: one scalar gather decodes two fp4
# elements, and the complex128 result viewed as float64 is already in element order.
_E2M1_PAIRS_C128 = np.empty(256, dtype=np.complex128)
_E2M1_PAIRS_C128.real = E2M1_VALUES[np.arange(256) & 0xF]
_E2M1_PAIRS_C128.imag = E2M1_VALUES[np.arange(256) >> 4]


# ----------------------------------------------------------------------------- input helpers


def _as_float32(x, what: str) -> np.ndarray:
    """``x`` (NumPy of any real float/int dtype incl. ml_dtypes bfloat16, or a torch tensor)
    as float32. Conversions from 16-bit floats are exact; float64 is rounded once."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_complex():
            raise TypeError(f"{what} must be real, got {x.dtype}")
        import torch

        return x.to(torch.float32).numpy()
    arr = np.asarray(x)
    if arr.dtype.kind in "cOSU":
        raise TypeError(f"{what} must be a real numeric array, got dtype {arr.dtype}")
    try:  # ml_dtypes' bfloat16 / float8 are kind "V" but cast exactly
        return arr.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a real numeric array, got dtype {arr.dtype}") from exc


def _as_codes(x, what: str, limit: int) -> np.ndarray:
    arr = _host_numpy(x, what)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= limit):
        raise ValueError(f"{what} values must lie in [0, {limit}), got [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.uint8)


def _check_global_scale(global_scale) -> np.float32:
    gs = _host_numpy(global_scale, "global_scale")
    if gs.size != 1:
        raise ValueError(f"global_scale must be one number, got shape {gs.shape}")
    gsf = np.float32(gs.reshape(()))
    if not np.isfinite(gsf) or gsf <= 0:
        raise ValueError(f"global_scale={float(gsf)!r} must be finite and > 0 (FlashInfer: 448 * 6 / amax)")
    return gsf


# ----------------------------------------------------------------------------- codecs


def _round_magnitude(mag: np.ndarray, man_bits: int, min_exp: int, max_index: int) -> np.ndarray:
    """Round finite ``mag >= 0`` (float32) to the nearest minifloat, ties to even, saturating.

    Returns the format's unsigned bit pattern (int64). The pattern is linear in
    ``(exponent - min_exp) * 2**man_bits + steps``, where ``steps`` counts quanta of the
    value's binade; a carry out of the mantissa lands on the next exponent by itself, and
    subnormals are the ``exponent == min_exp`` case with ``steps < 2**man_bits``.
    """
    _, e = np.frexp(mag)  # mag = f * 2**e with f in [0.5, 1)
    exp = np.where(mag < np.float32(2.0**min_exp), min_exp, e.astype(np.int64) - 1)
    # Scaling by a power of two is exact here, so rint (ties to even) is the only rounding.
    steps = np.rint(np.ldexp(mag, (man_bits - exp).astype(np.int32)))
    index = (exp - min_exp) * (1 << man_bits) + steps.astype(np.int64)
    return np.minimum(index, max_index)


def decode_e2m1(codes) -> np.ndarray:
    """e2m1 codes (integers 0..15, any shape) -> float32 values of the same shape (-0 for 8)."""
    return E2M1_VALUES[_as_codes(codes, "codes", 16)]


def encode_e2m1(x) -> np.ndarray:
    """float32 values (any shape) -> e2m1 codes (uint8 0..15, same shape).

    Round to nearest, ties to even; magnitudes above 6 saturate to 6 (``cvt.rn.satfinite``);
    the sign is kept, so a negative value that rounds to zero gives code 8 (-0).
    NaN gives code 7 (+6), whatever its sign bit; ``+-inf`` give 7 / 15.
    Inputs in other dtypes are converted to float32 first.
    """
    x = _as_float32(x, "x")
    nan = np.isnan(x)
    finite = np.isfinite(x)
    mag = np.where(finite, np.abs(x), np.float32(0))
    index = _round_magnitude(mag, man_bits=1, min_exp=0, max_index=_E2M1_MAX_CODE)
    index = np.where(finite, index, _E2M1_MAX_CODE)
    sign = np.signbit(x) & ~nan
    return (index | (sign.astype(np.int64) << 3)).astype(np.uint8)


def decode_ue4m3(scale_bytes) -> np.ndarray:
    """Scale bytes (any shape, uint8 or a one-byte dtype) -> float32 ``float8_e4m3fn(b & 0x7F)``.

    The sign bit is ignored; 0x7F and 0xFF decode to NaN.
    """
    return UE4M3_VALUES[_host_bytes(scale_bytes, "scale_bytes")]


def encode_ue4m3(x) -> np.ndarray:
    """Non-negative float32 values (any shape) -> ue4m3 bytes (uint8 0x00..0x7F, same shape).

    e4m3 round to nearest, ties to even, saturating finite results at 448 (0x7E) as
    ``cvt.rn.satfinite.e4m3x2.f32`` does; ``+inf`` also gives 0x7E, NaN gives 0x7F.
    -0 encodes as 0x00. Negative inputs raise ValueError: a block scale is a magnitude.
    """
    x = _as_float32(x, "x")
    if np.any(x < 0):
        raise ValueError(f"encode_ue4m3 needs x >= 0, got min {float(np.min(x[x < 0]))!r}")
    finite = np.isfinite(x)
    mag = np.where(finite, np.abs(x), np.float32(0))
    index = _round_magnitude(mag, man_bits=3, min_exp=-6, max_index=_UE4M3_MAX_BYTE)
    index = np.where(finite, index, _UE4M3_MAX_BYTE)
    index = np.where(np.isnan(x), _UE4M3_NAN_BYTE, index)
    return index.astype(np.uint8)


def pack_fp4(codes) -> np.ndarray:
    """e2m1 codes ``(..., K)`` (0..15, K even) -> packed bytes ``(..., K/2)`` uint8.

    Element ``2i`` goes to the low nibble of byte ``i``, element ``2i + 1`` to the high one.
    """
    c = _as_codes(codes, "codes", 16)
    if c.ndim == 0 or c.shape[-1] % 2:
        raise ValueError(f"codes must have an even last dimension, got shape {c.shape}")
    return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


def unpack_fp4(packed) -> np.ndarray:
    """Packed bytes ``(..., K/2)`` -> e2m1 codes ``(..., K)`` uint8 (low nibble first)."""
    p = _host_bytes(packed, "packed")
    if p.ndim == 0:
        raise ValueError("packed must have at least one dimension")
    codes = np.stack([p & 0xF, p >> 4], axis=-1)
    return codes.reshape(*p.shape[:-1], 2 * p.shape[-1])


# ----------------------------------------------------------------------------- quantizer


def quantize_blocks(x, global_scale) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §4 quantizer, unswizzled: ``x (rows, K)`` -> ``(codes, sf)``.

    Per 16-element block along K, every step in float32 and in this order::

        sf    = e4m3_rn_satfinite(gsf * (max|x| * (1f / 6f)))
        scale = 1f / (float(sf) * (1f / gsf))            # 0 where sf == 0
        q[i]  = e2m1_rn_satfinite(x[i] * scale)

    Args:
        x: ``(rows, K)`` real values, ``K % 16 == 0``; converted to float32 (exact for
            float16 / bfloat16, NumPy, ml_dtypes or torch CPU).
        global_scale: finite float32 ``gsf > 0`` (FlashInfer's convention ``448 * 6 / amax``);
            a Python float or a one-element array / tensor.

    Returns:
        ``codes``: ``(rows, K)`` uint8 e2m1 codes (unpacked). ``sf``: ``(rows, K/16)`` uint8
        ue4m3 bytes, row-major.
    """
    x = _as_float32(x, "x")
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[1] % SF_VEC:
        raise ValueError(f"x must be 2-D (rows, K) with K a positive multiple of {SF_VEC}, got shape {x.shape}")
    gsf = _check_global_scale(global_scale)
    rows, k = x.shape
    blocks = x.reshape(rows, k // SF_VEC, SF_VEC)
    one = np.float32(1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        amax = np.max(np.abs(blocks), axis=-1)
        sf = encode_ue4m3(gsf * (amax * (one / np.float32(6))))
        sf_value = UE4M3_VALUES[sf]
        scale = np.where(sf == 0, np.float32(0), one / (sf_value * (one / gsf))).astype(np.float32)
        codes = encode_e2m1(blocks * scale[..., None])
    return codes.reshape(rows, k), sf


def quantize(x, global_scale) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §4 quantizer in the GEMM's formats: ``x (rows, K)`` -> ``(packed, scales)``.

    Args:
        x: ``(rows, K)`` real values, ``K % 64 == 0`` (the swizzle atom is 4 scale columns).
        global_scale: finite ``gsf > 0``, see :func:`quantize_blocks`.

    Returns:
        ``packed``: ``(rows, K/2)`` uint8, two e2m1 codes per byte (element 2i low nibble).
        ``scales``: ``(ceil(rows/128)*128, K/16)`` uint8 ue4m3 bytes in the 128x4 swizzled
        layout of SPEC §3, padding rows zero. For a grouped ``a_scale`` use
        :func:`quantize_blocks` + :func:`grouped_a_scale` instead.
    """
    codes, sf = quantize_blocks(x, global_scale)
    return pack_fp4(codes), swizzle_scales(sf)


# ----------------------------------------------------------------------------- SiLU * up


def round_to_16_bits(x, dtype: str) -> np.ndarray:
    """float32 values rounded to nearest even into ``dtype`` ("bfloat16" or "float16"), returned as the
    float32 values of the result (exact): what torch's ``.to(dtype)`` of a float32 tensor gives. float16
    overflows to +-inf past 65504 (and its rounding range); bfloat16 keeps float32's range."""
    x = np.asarray(x, np.float32)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    if dtype != "bfloat16":
        raise ValueError(f"dtype={dtype!r} must be 'bfloat16' or 'float16'")
    bits = x.view(np.uint32).astype(np.uint64)
    # Add half an ulp of bfloat16 minus one, plus the kept lsb (ties to even), then cut the low half.
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return np.where(np.isnan(x), x, rounded.view(np.float32))


def silu_mul(gate_up, dtype: str) -> np.ndarray:
    """FlashInfer's silu_and_mul on ``gate_up (rows, 2K)``: ``h = silu(gate) * up`` (gate the first K
    columns, up the last K), in float32 and rounded to ``dtype`` ("bfloat16"/"float16"), as float32.

    Every step in float32, as torch's CUDA silu computes ``x / (1 + exp(-x))``: ``exp(-x)`` rounded to
    float32 (evaluated in float64, rounded once; inf from -x > ln(FLT_MAX) ~ 88.72 on, so silu(x) is -0
    there though the real value is a tiny negative number), ``1 + e`` and the quotient correctly rounded,
    then the product with up (one rounding) and the rounding to ``dtype`` (nearest even). The GPU kernels
    and torch use CUDA's ``expf`` (within 2 ulp) instead of a correctly rounded exp, so their float32
    silu can differ from this one by a few float32 ulps; after the 16-bit rounding that leaves h one ulp
    of ``dtype`` apart on the rare elements whose product lies that close to a rounding midpoint. The GPU
    tests therefore compare the kernels with torch bit for bit, and torch's h with this one within one
    ulp of ``dtype``.
    """
    x = _as_float32(gate_up, "gate_up")
    if x.ndim != 2 or x.shape[1] % 2:
        raise ValueError(f"gate_up must be 2-D (rows, 2K), got shape {x.shape}")
    k = x.shape[1] // 2
    gate, up = x[:, :k], x[:, k:]
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-gate.astype(np.float64)).astype(np.float32)  # float32's exp: inf past FLT_MAX
        silu32 = gate / (np.float32(1) + e)                       # float32 add and division
        h32 = silu32 * up
    return round_to_16_bits(h32, dtype)


def silu_mul_quantize_blocks(gate_up, global_scale, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_blocks` of :func:`silu_mul` (gate_up, dtype): ``(codes (rows, K), sf (rows, K/16))``."""
    return quantize_blocks(silu_mul(gate_up, dtype), global_scale)


def dequantize(packed, sf_rowmajor) -> np.ndarray:
    """Exact decode: ``packed (rows, K/2)`` uint8 and ``sf_rowmajor (rows, K/16)`` bytes ->
    float32 ``(rows, K)`` with ``x = e2m1(code) * ue4m3(scale)`` (exact in float32)."""
    codes = unpack_fp4(packed)
    sf = _host_bytes(sf_rowmajor, "sf_rowmajor")
    if codes.ndim != 2 or codes.shape[1] % SF_VEC:
        raise ValueError(f"packed must be 2-D (rows, K/2) with K % 16 == 0, got K={codes.shape[-1]}")
    rows, k = codes.shape
    if sf.shape != (rows, k // SF_VEC):
        raise ValueError(f"sf_rowmajor.shape={sf.shape} but expected (rows, K/16)={(rows, k // SF_VEC)}")
    vals = E2M1_VALUES[codes].reshape(rows, k // SF_VEC, SF_VEC) * UE4M3_VALUES[sf][..., None]
    return vals.reshape(rows, k)


def grouped_a_scale(sf_rowmajor, m_indptr) -> np.ndarray:
    """Build the GEMM's ``a_scale`` from row-major scales of all rows of ``a``.

    Row ``m_indptr[g] + m`` of ``sf_rowmajor`` goes to scale row ``sf_base(g) + m``
    (see :func:`nvfp4_driver.layout.a_scale_group_bases`) of the swizzled layout; other
    rows are zero. Not a tight stacking: for three groups of 128 rows, group 2 starts at
    row 384.

    Args:
        sf_rowmajor: ``(rows, K/16)`` bytes with ``rows >= m_indptr[G]`` (e.g. the ``sf`` of
            :func:`quantize_blocks` on all of ``a``); ``K/16`` a multiple of 4.
        m_indptr: ``(G + 1,)`` non-decreasing row offsets (host data).

    Returns:
        ``(a_scale_rows(m_indptr), K/16)`` uint8, swizzled.
    """
    sf = _host_bytes(sf_rowmajor, "sf_rowmajor")
    ind = _host_indptr(m_indptr)
    if sf.ndim != 2:
        raise ValueError(f"sf_rowmajor must be 2-D (rows, K/16), got shape {sf.shape}")
    if sf.shape[0] < ind[-1]:
        raise ValueError(f"sf_rowmajor has {sf.shape[0]} rows but m_indptr[G]={int(ind[-1])}")
    bases = a_scale_group_bases(ind)
    placed = np.zeros((a_scale_rows(ind), sf.shape[1]), dtype=np.uint8)
    for g, base in enumerate(bases):
        lo, hi = int(ind[g]), int(ind[g + 1])
        placed[base : base + hi - lo] = sf[lo:hi]
    return swizzle_scales(placed)


# ----------------------------------------------------------------------------- grouped GEMM

# Elements of B decoded per gather: 4 MiB float64 temporaries stay in cache (measured 4x
# faster than one gather over a 4096 x 7168 group).
_DECODE_ELEMENTS = 1 << 19
# Elements of B per matmul (256 MiB float64): few, large BLAS calls, because many small
# ones made OpenBLAS's threads thrash (10x slower) on a shared 2-core machine.
_GEMM_ELEMENTS = 1 << 25


def _decode_operand(packed: np.ndarray, sf: np.ndarray) -> np.ndarray:
    """``packed (R, K/2)`` uint8, ``sf (R, K/16)`` uint8 -> float64 ``(R, K)``, exact."""
    rows = packed.shape[0]
    vals = _E2M1_PAIRS_C128[packed].view(np.float64).reshape(rows, sf.shape[1], SF_VEC)
    vals *= _UE4M3_F64[sf][..., None]
    return vals.reshape(rows, -1)


def _scale_bytes(buf, what: str, need: int, inner: tuple[int, ...]) -> np.ndarray:
    """Scale bytes as a flat array: flat input, or any shape ending in ``inner``."""
    arr = _host_bytes(buf, what)
    if arr.ndim > 1 and arr.shape[-len(inner) :] != inner:
        raise ValueError(f"{what}.shape={arr.shape} but expected (..., {', '.join(map(str, inner))}) or flat bytes")
    flat = arr.reshape(-1)
    if flat.size < need:
        raise ValueError(f"{what} has {flat.size} bytes but needs at least {need}")
    return flat


def _group_gemm(a, b, a_scale, b_scale, m_indptr, alpha, columns, want_abs: bool):
    a = _host_bytes(a, "a")
    b = _host_bytes(b, "b")
    if a.ndim != 2:
        raise ValueError(f"a must be 2-D (cum_m, K/2), got shape {a.shape}")
    cum_m, half_k = a.shape
    k = 2 * half_k
    if k == 0 or k % (SF_VEC * 4):
        raise ValueError(f"K={k} (2 * a.shape[1]) must be a positive multiple of 64 for the 128x4 scale layout")
    if b.ndim != 3 or b.shape[2] != half_k:
        raise ValueError(f"b.shape={b.shape} but expected (G, N, K/2={half_k}) from a")
    groups, n, _ = b.shape
    sf_k = k // SF_VEC
    ind = _host_indptr(m_indptr)
    if ind.shape[0] != groups + 1:
        raise ValueError(f"m_indptr has {ind.shape[0]} entries but b.shape[0]={groups} needs G + 1 = {groups + 1}")
    if ind[-1] > cum_m:
        raise ValueError(f"m_indptr[G]={int(ind[-1])} exceeds cum_m={cum_m} rows of a")
    sf_rows = a_scale_rows(ind)
    a_sf_flat = _scale_bytes(a_scale, "a_scale", sf_rows * sf_k, (sf_k,))
    n_pad = padded_n(n)
    b_sf_flat = _scale_bytes(b_scale, "b_scale", groups * n_pad * sf_k, (n_pad, sf_k))
    if alpha is None:
        alpha64 = np.ones(groups, dtype=np.float64)
    else:
        alpha32 = _as_float32(alpha, "alpha").reshape(-1)
        if alpha32.shape != (groups,):
            raise ValueError(f"alpha has {alpha32.size} values but G={groups}")
        alpha64 = alpha32.astype(np.float64)
    if columns is not None:
        columns = _host_numpy(columns, "columns")
        if columns.ndim != 1 or columns.dtype.kind not in "iu":
            raise ValueError(f"columns must be a 1-D integer array, got shape {columns.shape} dtype {columns.dtype}")
        columns = columns.astype(np.int64)
        if columns.size and (columns.min() < 0 or columns.max() >= n):
            raise ValueError(f"columns must lie in [0, N={n}), got [{int(columns.min())}, {int(columns.max())}]")
    n_out = n if columns is None else columns.shape[0]

    out = np.full((cum_m, n_out), np.nan, dtype=np.float64)
    abs_out = np.full((cum_m, n_out), np.nan, dtype=np.float64) if want_abs else None
    a_sf = unswizzle_scales(a_sf_flat[: sf_rows * sf_k], sf_rows, sf_k)
    bases = a_scale_group_bases(ind)
    block_rows = max(1, _GEMM_ELEMENTS // k)
    sub_rows = max(1, _DECODE_ELEMENTS // k)
    with np.errstate(invalid="ignore", over="ignore"):
        for g in range(groups):
            lo, hi = int(ind[g]), int(ind[g + 1])
            if lo == hi:
                continue
            base = int(bases[g])
            a_vals = _decode_operand(a[lo:hi], a_sf[base : base + hi - lo])
            group_sf = b_sf_flat[g * n_pad * sf_k : (g + 1) * n_pad * sf_k]
            if columns is None:
                b_sf = unswizzle_scales(group_sf, n, sf_k)
            else:
                b_sf = group_sf[swizzled_offset(columns[:, None], np.arange(sf_k), sf_k)]
            for c0 in range(0, n_out, block_rows):
                c1 = min(n_out, c0 + block_rows)
                b_vals = np.empty((c1 - c0, k), dtype=np.float64)
                for r0 in range(c0, c1, sub_rows):
                    r1 = min(c1, r0 + sub_rows)
                    packed = b[g, r0:r1] if columns is None else b[g, columns[r0:r1]]
                    b_vals[r0 - c0 : r1 - c0] = _decode_operand(packed, b_sf[r0:r1])
                out[lo:hi, c0:c1] = (a_vals @ b_vals.T) * alpha64[g]
                if want_abs:
                    np.abs(b_vals, out=b_vals)
                    abs_out[lo:hi, c0:c1] = (np.abs(a_vals) @ b_vals.T) * abs(alpha64[g])
    return out, abs_out


def group_gemm(a, b, a_scale, b_scale, m_indptr, alpha=None, *, columns=None) -> np.ndarray:
    """The grouped NVFP4 GEMM of SPEC §2 in float64, inputs decoded exactly.

    ``out[m, n] = alpha[g] * sum_k A(m, k) * B(g, n, k)`` for rows ``m`` of group ``g``;
    every product is exact in float64 and the sum's rounding is far below any out_dtype ulp.

    Args:
        a: ``(cum_m, K/2)`` uint8, packed e2m1; ``K % 64 == 0`` (the GEMM contract asks
            ``K % 128 == 0``; ``problem.validate`` checks that, not the oracle).
        b: ``(G, N, K/2)`` uint8, packed e2m1, row ``n`` of group ``g`` is output column ``n``.
        a_scale: ue4m3 bytes, ``(rows, K/16)`` or flat, at least ``a_scale_rows(m_indptr) *
            K/16`` bytes; row ``m`` of group ``g`` at ``swz(sf_base(g) + m, kb)``.
        b_scale: ue4m3 bytes, ``(G, N_pad, K/16)`` or flat (``N_pad = ceil(N/128)*128``);
            group ``g`` starts at byte ``g * N_pad * K/16``, row ``n`` at ``swz(n, kb)``.
        m_indptr: ``(G + 1,)`` non-decreasing row offsets, ``m_indptr[G] <= cum_m``; empty
            groups and ``m_indptr[0] > 0`` allowed (host data; a GPU tensor is copied).
        alpha: ``(G,)`` float32 or None (means 1).
        columns: optional 1-D integer array of output columns to compute, for problems too
            big to decode whole (a weight over 4 GiB); None means all N.

    Returns:
        float64 ``(cum_m, N)`` (``(cum_m, len(columns))`` with ``columns``); rows outside
        ``[m_indptr[0], m_indptr[G])`` are NaN.
    """
    return _group_gemm(a, b, a_scale, b_scale, m_indptr, alpha, columns, want_abs=False)[0]


def group_gemm_with_abs(
    a, b, a_scale, b_scale, m_indptr, alpha=None, *, columns=None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`group_gemm` plus ``abs_sum[m, n] = |alpha[g]| * sum_k |A(m, k) * B(g, n, k)|``.

    ``abs_sum`` is what SPEC §5's float32 summation slack ``K * 2**-23 * abs_sum`` needs.
    Same arguments as :func:`group_gemm`. Returns ``(ref, abs_sum)``, both float64
    ``(cum_m, N)`` with NaN outside the groups' rows.
    """
    return _group_gemm(a, b, a_scale, b_scale, m_indptr, alpha, columns, want_abs=True)
