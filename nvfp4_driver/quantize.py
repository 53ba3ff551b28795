"""NVFP4 quantization on the GPU: the producers of the grouped GEMM's inputs (SPEC §3, §4).

    a, a_scale = quantize_activations(x, m_indptr, gsf_x)        # (cum_m, K) -> GEMM's a, a_scale
    b, b_scale = quantize_weights(w, gsf_w)                      # (G, N, K)  -> GEMM's b, b_scale
    gsf = global_scale_from_amax(x)                              # 448 * 6 / max|x|, on the GPU
    alpha = alpha_from_global_scales(gsf_x, gsf_w)               # 1 / (gsf_a * gsf_b) per group
    x_hat = dequantize(a, a_scale, m_indptr, gsf_x)              # the inverse
    gsf_h = silu_mul_global_scale_from_amax(gate_up)             # of h = silu(gate) * up, never stored
    a, a_scale = silu_mul_quantize_activations(gate_up, m_indptr, gsf_h)  # (cum_m, 2I) -> h's a, a_scale

Bytes: every output byte equals what :func:`nvfp4_driver.reference.quantize_blocks` (SPEC §4,
float32 steps, correctly rounded, in SPEC's order) gives, placed as SPEC §3 says; the kernels'
codecs are software (``kernels_cu/nvfp4_quantize.cuh``; sm_89+ builds round the ue4m3 scale with the
hardware conversion, whose documented rounding gives the same bytes), so sm_80 ... sm_121a and the
PTX agree.

Non-finite inputs (as in reference.py): a 16-element block holding a NaN gets scale byte 0x7F
(NaN) and codes 7, so it decodes to NaN; a block holding +-inf gets scale 0x7E (448), the inf
becomes +-6 and its finite neighbours are quantized against that scale. A global scale that is not
finite and > 0 cannot be refused without reading it on the host; the kernels treat it as NaN (every
scale byte of its group 0x7F, every code 7), so the GEMM's result is NaN rather than silently wrong.
A Python float global scale is checked on the host and refused with ValueError.

Every check runs before any launch and raises ValueError/TypeError naming the values. Nothing here
copies device memory to the host: sizes come from shapes (``a_scale`` is sized for any
``m_indptr`` of its length), and the kernels read ``m_indptr`` and the global scales on the GPU.
Outputs are allocated in the input's framework (torch, CuPy) on its device; work is queued on
``stream`` (default: the framework's current stream, as for the GEMM). Under ``torch.compile`` each
function hands the call to its ``torch.library`` op (``nvfp4_driver.torch_ops``).
"""
from __future__ import annotations

import numpy as np

from . import config, driver, dtypes, outputs, registry, streams, tensors, torch_hooks
from .layout import SF_VEC, a_scale_rows_upper_bound, padded_n
from .dtypes import PACKED_DTYPES, SCALE_DTYPES
from .variants import quantize_spec

__all__ = ["quantize_activations", "quantize_weights", "dequantize", "global_scale_from_amax",
           "alpha_from_global_scales", "silu_mul_quantize_activations", "silu_mul_global_scale_from_amax"]

# dtype of the unquantized side -> the suffix of its kernels' symbols
_DTYPE_TAG = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}

_K_MULTIPLE = 64        # the swizzle atom is 4 scale columns of 16 elements
_WARPS_PER_BLOCK = 8    # nvfp4_quantize.cu: 256-thread blocks, one unit per warp at a time
_SEGMENT = 1024         # a unit: one row's 1024-element segment (NVFP4_QUANT_STEPS x 512)
_SCALAR_BLOCK = 128     # the per-group scalar kernels
_INT32_MAX = 2**31 - 1
_INPUT_ALIGNMENT = 16   # the row kernels load and store the unquantized side in 16-byte pieces
_SILU_MUL_DTYPES = ("bfloat16", "float16")  # the silu_mul kernels' rows (FlashInfer's silu_and_mul takes these)


# ------------------------------------------------------------------------------------------ checks


def _check_k(k: int, what: str) -> None:
    if k <= 0 or k % _K_MULTIPLE:
        raise ValueError(f"K={k} ({what}) must be a positive multiple of {_K_MULTIPLE}: a scale byte "
                         f"covers 16 elements and the swizzled layout groups 4 of them (the GEMM "
                         f"needs K % 128 == 0)")
    if k > _INT32_MAX - 2 * _SEGMENT:
        raise ValueError(f"K={k} ({what}) is too large: at most {_INT32_MAX - 2 * _SEGMENT}")


def _unquantized(x, name: str, ndim: tuple[int, ...]) -> tensors.DeviceArray:
    arr = tensors.as_device_array(x, name)
    tensors.check_array(arr, name, dtype=tuple(_DTYPE_TAG))  # and C-contiguous
    if len(arr.shape) not in ndim:
        want = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{name}.shape={arr.shape} must be {want}")
    _check_alignment(arr, name)
    return arr


def _check_alignment(arr: tensors.DeviceArray, name: str) -> None:
    if arr.numel and arr.ptr % _INPUT_ALIGNMENT:
        raise ValueError(f"{name} starts at 0x{arr.ptr:x}, which is not {_INPUT_ALIGNMENT}-byte aligned; the "
                         f"kernel reads it in 16-byte pieces (pass a tensor that starts at its allocation)")


def _indptr(m_indptr) -> tensors.DeviceArray:
    arr = tensors.as_device_array(m_indptr, "m_indptr")
    tensors.check_array(arr, "m_indptr", dtype="int32", ndim=1)
    if arr.shape[0] < 1:
        raise ValueError(f"m_indptr.shape={arr.shape} but it needs G + 1 >= 1 entries")
    if arr.shape[0] - 1 > _INT32_MAX:
        raise ValueError(f"G={arr.shape[0] - 1} groups do not fit in int32")
    return arr


def _global_scale(global_scale, groups: int, arrays: dict, name: str = "global_scale") -> tuple[int, int, float]:
    """(device pointer or 0, stride 0/1, value for pointer 0) of a global scale argument.

    A Python/NumPy real number is checked here (finite, > 0) and passed by value. A device tensor
    holds float32 values: one for every group (stride 0) or one per group (G values, stride 1);
    its values are read on the GPU only.
    """
    if isinstance(global_scale, (float, int, np.floating, np.integer)) and not isinstance(global_scale, (bool, np.bool_)):
        return 0, 0, check_scalar_global_scale(global_scale, name)
    arr = tensors.as_device_array(global_scale, name)
    tensors.check_array(arr, name, dtype="float32")
    if arr.numel == 1:
        stride = 0
    elif arr.numel == groups and len(arr.shape) == 1:
        stride = 1
    else:
        raise ValueError(f"{name}.shape={arr.shape} but it must hold one float32 for all groups or one "
                         f"per group, (G,) = ({groups},)")
    arrays[name] = arr
    return arr.ptr, stride, 1.0


# Where float64 -> float32 rounding leaves the positive finite numbers: from halfway between FLT_MAX
# and 2^128 on it gives inf, up to half the smallest subnormal it gives 0 (ties to even, both ways).
_F32_ROUNDS_TO_INF = 2.0**128 - 2.0**103
_F32_ROUNDS_TO_ZERO = 2.0**-150


def check_scalar_global_scale(global_scale, name: str = "global_scale") -> float:
    """A host (Python/NumPy) global scale as the float32 value the kernels get; ValueError unless
    finite and > 0 there. Plain float comparisons, so that dynamo can trace it too."""
    value = float(global_scale)
    if not _F32_ROUNDS_TO_ZERO < value < _F32_ROUNDS_TO_INF:
        raise ValueError(f"{name}={global_scale!r} must be finite and > 0 in float32 (FlashInfer: 448 * 6 / amax)")
    return float(np.float32(value))


def _device(arrays: dict, first: tensors.DeviceArray) -> int:
    ordinal = tensors.check_same_device(arrays)
    return driver.pointer_device(first.ptr) if ordinal is None else ordinal


def _launch(op: str, tag: str | None, ordinal: int, grid: tuple[int, int, int], stream: int, /, **args) -> None:
    """Launch the quantizer kernel of ``op`` (and dtype ``tag``) with its parameters named."""
    driver.launch(_spec(op, tag, ordinal), ordinal, grid, stream, registry.quantizer(op, tag).args(**args))


def _spec(op: str, tag: str | None, ordinal: int) -> driver.KernelSpec:
    return quantize_spec(op, tag, driver.device_info(ordinal).capability, config.flags().force_ptx)


def _launch_rows(op: str, tag: str, ordinal: int, rows: int, k: int, stream: int, /, **args) -> None:
    """Launch a row kernel (quantize, dequantize, amax) over ``rows`` rows of K=``k`` elements (the
    silu_mul kernels: pass the input row's 2K; their units are 512 elements of h, as many as there are
    1024-element pieces of the input row).

    Its warps walk the units (row, 1024-element segment) with a grid stride, so any grid is correct;
    the persistent grid is what one wave of resident blocks holds, min(ceil(units / 8), SMs x blocks
    per SM). The SM count and the occupancy are asked of the driver once per kernel and device.
    """
    spec = _spec(op, tag, ordinal)
    units = rows * -(-k // _SEGMENT)
    wave = driver.device_info(ordinal).sm_count * _resident_blocks(spec, ordinal)
    driver.launch(spec, ordinal, (min(-(-units // _WARPS_PER_BLOCK), wave), 1, 1), stream,
                  registry.quantizer(op, tag).args(**args))


_resident: dict[tuple[str, str, int], int] = {}


def _resident_blocks(spec: driver.KernelSpec, ordinal: int) -> int:
    """Blocks of ``spec`` that one SM of device ``ordinal`` holds at once (cuOccupancy..., cached)."""
    key = (spec.file, spec.symbol, ordinal)
    count = _resident.get(key)
    if count is None:
        drv = driver.driver()
        fn = driver.function(spec, ordinal)
        with driver._ContextGuard(ordinal):
            count = driver.check(drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(fn, spec.threads, spec.smem_bytes),
                                 "cuOccupancyMaxActiveBlocksPerMultiprocessor")
        count = max(1, int(count))
        _resident[key] = count
    return count


# ------------------------------------------------------------------------------------- quantizers


def quantize_activations(x, m_indptr, global_scale, *, stream=None):
    """Quantize stacked activations into the GEMM's ``a`` and grouped ``a_scale`` (SPEC §3, §4).

    Args:
      x:            (cum_m, K) bfloat16, float16 or float32, C-contiguous, 16-byte aligned;
                    K a positive multiple of 64 (the GEMM needs K % 128 == 0).
      m_indptr:     (G+1,) int32 on the GPU, non-decreasing: group g owns rows
                    [m_indptr[g], m_indptr[g+1]) of x. Empty groups and m_indptr[0] > 0 are fine.
      global_scale: float32 on the GPU, one value for all groups (shape () or (1,)) or one per
                    group (G,); or a Python float. FlashInfer's convention: 448 * 6 / amax
                    (:func:`global_scale_from_amax`).
      stream:       as for the GEMM: an int handle, a torch/CuPy stream, an object with
                    ``__cuda_stream__``; default the current stream of x's framework.

    Returns ``(a, a_scale)`` in x's framework and device:
      a:       (cum_m, K/2) uint8, two e2m1 codes per byte (element 2i in the low nibble). Rows
               outside [m_indptr[0], m_indptr[G]) hold zeros (e2m1 +0).
      a_scale: (a_scale_rows_upper_bound(cum_m, G), K/16) uint8, ue4m3 in the 128x4-swizzled
               layout; row m of group g at scale row sf_base(g) + m. Sized from shapes alone, it
               is never smaller than ``a_scale_rows(m_indptr)`` (what the GEMM reads); every other
               byte is zero.
    """
    traced = torch_hooks.traced("quantize_activations")
    if traced is not None:
        return traced(x, m_indptr, global_scale, stream)
    X = _unquantized(x, "x", (2,))
    k = X.shape[1]
    _check_k(k, "x.shape[1]")
    M = _indptr(m_indptr)
    arrays = {"x": X, "m_indptr": M}
    return _quantize_rows("quantize_rows", "x", X, k, k, arrays, M.ptr, M.shape[0] - 1, 0, global_scale, stream)


def _quantize_rows(op: str, source: str, X, k: int, width: int, arrays: dict, indptr_ptr: int, groups: int,
                   group_rows: int, global_scale, stream):
    """``(a, a_scale)`` allocated in X's framework for X's rows, and ``op`` launched to fill them
    (``source`` names its input parameter, ``width`` the elements of one input row)."""
    rows = X.shape[0]
    gs_ptr, gs_stride, gs_value = _global_scale(global_scale, groups, arrays)
    sf_rows = a_scale_rows_upper_bound(rows, groups)
    ordinal = _device(arrays, X)
    a, A = outputs.allocate(X, (rows, k // 2), "uint8")
    a_scale, S = outputs.allocate(X, (sf_rows, k // SF_VEC), "uint8")
    if max(rows, sf_rows):
        _launch_rows(op, _DTYPE_TAG[X.dtype], ordinal, max(rows, sf_rows), width,
                     streams.resolve_stream(stream, arrays),
                     **{source: X.ptr}, q=A.ptr, q_scale=S.ptr, global_scale=gs_ptr, m_indptr=indptr_ptr, rows=rows,
                     sf_rows=sf_rows, k=k, num_groups=groups, group_rows=group_rows, gs_stride=gs_stride,
                     gs_value=gs_value)
    return a, a_scale


def quantize_weights(w, global_scale, *, stream=None):
    """Quantize per-expert weights into the GEMM's ``b`` and ``b_scale`` (SPEC §2, §3, §4).

    Args:
      w:            (G, N, K) bfloat16, float16 or float32, C-contiguous, 16-byte aligned; row n of
                    group g holds output column n's K values ("NT"). K a positive multiple of 64.
      global_scale: float32 on the GPU, one for all groups or (G,) one per group; or a Python float.
      stream:       as in :func:`quantize_activations`.

    Returns ``(b, b_scale)``: b (G, N, K/2) uint8 e2m1 pairs; b_scale (G, N_pad, K/16) uint8,
    N_pad = ceil(N/128)*128, each group's block 128x4-swizzled, padding rows zero.
    """
    traced = torch_hooks.traced("quantize_weights")
    if traced is not None:
        return traced(w, global_scale, stream)
    W = _unquantized(w, "w", (3,))
    groups, n, k = W.shape
    _check_k(k, "w.shape[2]")
    if n > _INT32_MAX:
        raise ValueError(f"N={n} (w.shape[1]) must fit in int32")
    arrays = {"w": W}
    gs_ptr, gs_stride, gs_value = _global_scale(global_scale, groups, arrays)
    n_pad = padded_n(n)
    ordinal = _device(arrays, W)
    b, B = outputs.allocate(W, (groups, n, k // 2), "uint8")
    b_scale, S = outputs.allocate(W, (groups, n_pad, k // SF_VEC), "uint8")
    if groups * n_pad:
        _launch_rows("quantize_rows", _DTYPE_TAG[W.dtype], ordinal, groups * n_pad, k,
                     streams.resolve_stream(stream, arrays),
                     x=W.ptr, q=B.ptr, q_scale=S.ptr, global_scale=gs_ptr, m_indptr=0, rows=groups * n,
                     sf_rows=groups * n_pad, k=k, num_groups=groups, group_rows=n, gs_stride=gs_stride,
                     gs_value=gs_value)
    return b, b_scale


def out_dtype_name(out_dtype) -> str:
    """dequantize's out_dtype (a name, an alias or a torch dtype) -> 'bfloat16' | 'float16' | 'float32'."""
    canon = dtypes.name_or_alias(out_dtype)
    if canon not in _DTYPE_TAG:
        raise ValueError(f"out_dtype={out_dtype!r} must be bfloat16, float16 or float32 (a name or a torch dtype)")
    return canon


def dequantize(q, q_scale, m_indptr=None, global_scale=None, *, out_dtype="bfloat16", stream=None):
    """The inverse of the quantizers: ``out = e2m1(code) * ue4m3(scale) * (1 / global_scale)``.

    Args:
      q:            (cum_m, K/2) uint8 activations (then ``m_indptr`` is required and ``q_scale`` is
                    the grouped a_scale), or (G, N, K/2) uint8 weights (then ``m_indptr`` is None and
                    ``q_scale`` is (G, N_pad, K/16)). K a positive multiple of 64.
      q_scale:      the swizzled ue4m3 scales (uint8 or float8_e4m3fn), C-contiguous. For activations,
                    reads stop at its end: a row whose scale row lies beyond gets NaN.
      m_indptr:     (G+1,) int32 on the GPU for activations, else None.
      global_scale: None (no division: the decode is exact in every output dtype, since each value
                    has at most 6 significant bits in [2^-10, 2688]), or the global scale(s) the data
                    was quantized with, as in :func:`quantize_activations`; then each value is
                    ``decoded * rcp(gsf)`` in float32 (both steps correctly rounded), then rounded once
                    to ``out_dtype``.
      out_dtype:    "bfloat16" (default), "float16" or "float32" (or a torch dtype).

    Returns ``out`` of shape q.shape[:-1] + (K,) in q's framework. Activation rows outside the groups
    are 0.
    """
    traced = torch_hooks.traced("dequantize")
    if traced is not None:
        return traced(q, q_scale, m_indptr, global_scale, out_dtype, stream)
    Q = tensors.as_device_array(q, "q")
    tensors.check_array(Q, "q", dtype=PACKED_DTYPES)
    if len(Q.shape) not in (2, 3):
        raise ValueError(f"q.shape={Q.shape} must be 2-D (cum_m, K/2) activations or 3-D (G, N, K/2) weights")
    k = 2 * Q.shape[-1]
    _check_k(k, "2 * q.shape[-1]")
    sf_k = k // SF_VEC
    out_canon = out_dtype_name(out_dtype)
    S = tensors.as_device_array(q_scale, "q_scale")
    tensors.check_array(S, "q_scale", dtype=SCALE_DTYPES)
    arrays = {"q": Q, "q_scale": S}
    if len(Q.shape) == 3:
        if m_indptr is not None:
            raise ValueError("m_indptr must be None for 3-D q (weights, (G, N, K/2)); 2-D q is activations")
        groups, n, _ = Q.shape
        if n > _INT32_MAX:
            raise ValueError(f"N={n} (q.shape[1]) must fit in int32")
        need = groups * padded_n(n) * sf_k
        if S.nbytes != need:
            raise ValueError(f"q_scale has {S.nbytes} bytes (shape {S.shape}) but (G, N_pad, K/16) = "
                             f"({groups}, {padded_n(n)}, {sf_k}) needs {need}")
        rows, sf_rows, group_rows, indptr_ptr = groups * n, groups * padded_n(n), n, 0
    else:
        if m_indptr is None:
            raise ValueError("m_indptr is required for 2-D q (activations); pass 3-D (G, N, K/2) q for weights")
        M = _indptr(m_indptr)
        arrays["m_indptr"] = M
        groups = M.shape[0] - 1
        rows, sf_rows, group_rows, indptr_ptr = Q.shape[0], S.nbytes // sf_k, 0, M.ptr
    if global_scale is None:
        gs_ptr, gs_stride, gs_value = 0, 0, 1.0
    else:
        gs_ptr, gs_stride, gs_value = _global_scale(global_scale, groups, arrays)
    ordinal = _device(arrays, Q)
    out, O = outputs.allocate(Q, (*Q.shape[:-1], k), out_canon)
    if rows:
        _launch_rows("dequantize_rows", _DTYPE_TAG[out_canon], ordinal, rows, k,
                     streams.resolve_stream(stream, arrays),
                     q=Q.ptr, q_scale=S.ptr, global_scale=gs_ptr, m_indptr=indptr_ptr, out=O.ptr, rows=rows,
                     sf_rows=sf_rows, k=k, num_groups=groups, group_rows=group_rows, gs_stride=gs_stride,
                     gs_value=gs_value)
    return out


# ----------------------------------------------------------------- SiLU * up fused with the quantizer


def _gate_up(gate_up) -> tuple[tensors.DeviceArray, int]:
    """``gate_up`` checked as (rows, 2K) 16-bit rows; returns it and K."""
    arr = tensors.as_device_array(gate_up, "gate_up")
    tensors.check_array(arr, "gate_up", dtype=_SILU_MUL_DTYPES)  # and C-contiguous
    if len(arr.shape) != 2 or arr.shape[1] % 2:
        raise ValueError(f"gate_up.shape={arr.shape} must be 2-D (rows, 2K): gate in columns [0, K), up in [K, 2K)")
    k = arr.shape[1] // 2
    _check_k(k, "gate_up.shape[1] / 2")
    _check_k(2 * k, "gate_up.shape[1]")  # the kernels address the up half with int32 columns
    _check_alignment(arr, "gate_up")
    return arr, k


def _silu_mul_groups(m_indptr, rows: int, arrays: dict) -> tuple[int, int, int]:
    """(m_indptr pointer or 0, G, group_rows) of the silu_mul kernels. None: one group of every row,
    placed as a single matrix's scales (the kernels' weights mode with N = rows: scale row r for row r)."""
    if m_indptr is None:
        if rows > _INT32_MAX:
            raise ValueError(f"gate_up.shape[0]={rows} rows must fit in int32 with m_indptr=None")
        return 0, 1, rows
    M = _indptr(m_indptr)
    arrays["m_indptr"] = M
    return M.ptr, M.shape[0] - 1, 0


def silu_mul_quantize_activations(gate_up, m_indptr, global_scale, *, stream=None):
    """``quantize_activations(h, m_indptr, global_scale)`` of ``h = silu(gate) * up``, h never stored.

    One kernel reads each row's gate and up halves and quantizes h from registers: per element
    ``h = round_to_dtype(float32(silu(gate)) * up)`` with ``silu(x) = x / (1 + expf(-x))`` in float32 (CUDA's
    expf, a correctly rounded division), FlashInfer's ``silu_and_mul`` semantics; the bytes equal
    ``quantize_activations((F.silu(gate.float()) * up.float()).to(gate_up.dtype), m_indptr, global_scale)``
    on the same GPU, bit for bit (torch's CUDA silu is that formula; kernels_cu/nvfp4_quantize.cu says why
    the FMA torch's build forms gives the same value).

    Args:
      gate_up:      (cum_m, 2K) bfloat16 or float16, C-contiguous, 16-byte aligned: gate in columns
                    [0, K), up in [K, 2K) (vLLM's w13 order; the gate/up GEMM's output). K a positive
                    multiple of 64 (the down GEMM needs K % 128 == 0).
      m_indptr:     (G+1,) int32 on the GPU, as in :func:`quantize_activations`; or None: all rows are
                    one group whose scale row r is row r (a single matrix, FlashInfer's layout).
      global_scale: of h, as in :func:`quantize_activations` (:func:`silu_mul_global_scale_from_amax`).
      stream:       as in :func:`quantize_activations`.

    Returns ``(a, a_scale)`` as :func:`quantize_activations` returns them for h: a (cum_m, K/2) uint8;
    a_scale (a_scale_rows_upper_bound(cum_m, G), K/16) uint8, 128x4-swizzled (G = 1 for None).
    """
    traced = torch_hooks.traced("silu_mul_quantize_activations")
    if traced is not None:
        return traced(gate_up, m_indptr, global_scale, stream)
    X, k = _gate_up(gate_up)
    arrays = {"gate_up": X}
    indptr_ptr, groups, group_rows = _silu_mul_groups(m_indptr, X.shape[0], arrays)
    return _quantize_rows("silu_mul_quantize_rows", "gate_up", X, k, 2 * k, arrays, indptr_ptr, groups, group_rows,
                          global_scale, stream)


# --------------------------------------------------------------------------------- global scales


def global_scale_from_amax(x, m_indptr=None, *, per_group: bool = True, stream=None):
    """FlashInfer's global scale ``448 * 6 / max|x|`` (float32, correctly rounded), on the GPU.

    Args:
      x:         (cum_m, K) activations or (G, N, K) weights, bfloat16/float16/float32, K a positive
                 multiple of 64, C-contiguous, 16-byte aligned.
      m_indptr:  for 2-D x: None (one scale over all rows) or (G+1,) int32 on the GPU (then rows
                 outside [m_indptr[0], m_indptr[G]) are ignored). Must be None for 3-D x.
      per_group: with groups (m_indptr, or 3-D x): True gives one scale per group, False one for all.
      stream:    as in :func:`quantize_activations`.

    Returns a float32 tensor in x's framework: (G,) per group, else (1,). Edge cases: a group whose
    values are all zero (or that is empty) gets 1.0, which quantizes zeros exactly (448 * 6 / 0 would
    be inf); a quotient too large for float32 (amax < 2688 / FLT_MAX) is clamped to FLT_MAX; an amax
    of inf gives 0 and NaN gives NaN, which the quantizers turn into NaN scales for that group.
    """
    traced = torch_hooks.traced("global_scale_from_amax")
    if traced is not None:
        return traced(x, m_indptr, per_group, stream)
    X = _unquantized(x, "x", (2, 3))
    k = X.shape[-1]
    _check_k(k, f"x.shape[{len(X.shape) - 1}]")
    if type(per_group) is not bool:
        raise TypeError(f"per_group must be a bool, got {per_group!r}")
    arrays = {"x": X}
    if len(X.shape) == 3:
        if m_indptr is not None:
            raise ValueError("m_indptr must be None for 3-D x (weights, (G, N, K)); groups are its first dimension")
        groups, n, _ = X.shape
        if per_group and n > _INT32_MAX:
            raise ValueError(f"N={n} (x.shape[1]) must fit in int32")
        rows, indptr_ptr = groups * n, 0
        group_rows = n if per_group else 0
        count = groups if per_group else 1
    elif m_indptr is None:
        rows, indptr_ptr, groups, group_rows, count = X.shape[0], 0, 1, 0, 1
        per_group = False
    else:
        M = _indptr(m_indptr)
        arrays["m_indptr"] = M
        rows, indptr_ptr, groups, group_rows = X.shape[0], M.ptr, M.shape[0] - 1, 0
        count = groups if per_group else 1
    def amax(ordinal, amax_ptr, handle):
        if rows:
            _launch_rows("amax_rows", _DTYPE_TAG[X.dtype], ordinal, rows, k, handle,
                         x=X.ptr, amax_bits=amax_ptr, m_indptr=indptr_ptr, rows=rows, k=k, num_groups=groups,
                         group_rows=group_rows, per_group=int(per_group))
    return _scales_from(amax, X, arrays, count, stream)


def silu_mul_global_scale_from_amax(gate_up, m_indptr=None, *, per_group: bool = True, stream=None):
    """``global_scale_from_amax(h, m_indptr, per_group=per_group)`` of ``h = silu(gate) * up``, h never stored.

    Args:
      gate_up:   (cum_m, 2K) bfloat16 or float16 as in :func:`silu_mul_quantize_activations`; h is
                 what that function quantizes, so the two agree with the unfused pair bit for bit.
      m_indptr:  None (one scale over all rows) or (G+1,) int32 on the GPU (rows outside
                 [m_indptr[0], m_indptr[G]) ignored).
      per_group: with m_indptr: True one scale per group, False one for all.
      stream:    as in :func:`quantize_activations`.

    Returns float32 (G,) per group, else (1,), with :func:`global_scale_from_amax`'s edge cases.
    """
    traced = torch_hooks.traced("silu_mul_global_scale_from_amax")
    if traced is not None:
        return traced(gate_up, m_indptr, per_group, stream)
    X, k = _gate_up(gate_up)
    if type(per_group) is not bool:
        raise TypeError(f"per_group must be a bool, got {per_group!r}")
    arrays = {"gate_up": X}
    rows = X.shape[0]
    if m_indptr is None:
        indptr_ptr, groups, count = 0, 1, 1
    else:
        M = _indptr(m_indptr)
        arrays["m_indptr"] = M
        indptr_ptr, groups = M.ptr, M.shape[0] - 1
        count = groups if per_group else 1
    def amax(ordinal, amax_ptr, handle):
        if rows:
            _launch_rows("silu_mul_amax_rows", _DTYPE_TAG[X.dtype], ordinal, rows, 2 * k, handle,
                         gate_up=X.ptr, amax_bits=amax_ptr, m_indptr=indptr_ptr, rows=rows, k=k, num_groups=groups,
                         group_rows=0, per_group=int(per_group and m_indptr is not None))
    return _scales_from(amax, X, arrays, count, stream)


def _scales_from(amax, X, arrays: dict, count: int, stream):
    """The (count,) float32 global scales: zeroed accumulators, ``amax(ordinal, ptr, stream)`` (an amax
    kernel's launch into them, as bit patterns), then global_scale_from_amax in place."""
    ordinal = _device(arrays, X)
    out, O = outputs.allocate(X, (count,), "float32")
    if count == 0:
        return out
    handle = streams.resolve_stream(stream, arrays)
    _zero_words(O.ptr, count, ordinal, handle)
    amax(ordinal, O.ptr, handle)
    _launch("global_scale_from_amax", None, ordinal, (-(-count // _SCALAR_BLOCK), 1, 1), handle, scale=O.ptr, n=count)
    return out


def _zero_words(ptr: int, count: int, ordinal: int, stream: int) -> None:
    """Queue a 4-byte memset of ``count`` words at ``ptr`` on ``stream`` (the amax accumulators)."""
    drv = driver.driver()
    with driver._ContextGuard(ordinal):
        driver.check(drv.cuMemsetD32Async(drv.CUdeviceptr(ptr), 0, count, drv.CUstream(stream)),
                     "cuMemsetD32Async")


def alpha_from_global_scales(gsf_a, gsf_b, *, stream=None):
    """The GEMM's ``alpha[g] = 1 / (gsf_a[g] * gsf_b[g])`` (float32, each step correctly rounded).

    Args:
      gsf_a, gsf_b: float32 tensors on the GPU, each one value (shape () or (1,)) or one per group
                    (G,); G is the longer one (both (G,) must agree).
      stream:       as in :func:`quantize_activations`.

    Returns ``alpha`` (G,) float32 in gsf_a's framework ((1,) when both are single values).
    """
    traced = torch_hooks.traced("alpha_from_global_scales")
    if traced is not None:
        return traced(gsf_a, gsf_b, stream)
    A = tensors.as_device_array(gsf_a, "gsf_a")
    B = tensors.as_device_array(gsf_b, "gsf_b")
    for name, arr in (("gsf_a", A), ("gsf_b", B)):
        tensors.check_array(arr, name, dtype="float32")
        if arr.numel != 1 and len(arr.shape) != 1:
            raise ValueError(f"{name}.shape={arr.shape} must be () or (1,) (one value) or (G,) (one per group)")
        if arr.numel == 0:
            raise ValueError(f"{name} is empty; it needs one value or one per group")
    if A.numel != 1 and B.numel != 1 and A.numel != B.numel:
        raise ValueError(f"gsf_a has {A.numel} values but gsf_b has {B.numel}; each must be 1 or G")
    count = max(A.numel, B.numel)
    if count > _INT32_MAX:
        raise ValueError(f"G={count} does not fit in int32")
    arrays = {"gsf_a": A, "gsf_b": B}
    ordinal = _device(arrays, A)
    alpha, O = outputs.allocate(A, (count,), "float32")
    _launch("alpha_from_global_scales", None, ordinal, (-(-count // _SCALAR_BLOCK), 1, 1),
            streams.resolve_stream(stream, arrays),
            gs_a=A.ptr, gs_b=B.ptr, alpha=O.ptr, a_stride=int(A.numel != 1), b_stride=int(B.numel != 1), n=count)
    return alpha
