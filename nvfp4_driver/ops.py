"""The public operation: FlashInfer's ``group_gemm_nvfp4_nt_groupwise``, same arguments, same bytes.

Every check below runs before any launch and raises ValueError/TypeError naming the values. No
call on this path copies device memory to the host: the grid comes from shapes, and the kernel
reads ``m_indptr`` on the GPU.
"""
from __future__ import annotations

from . import driver, tensors
from .problem import Problem, Tiles, validate
from .variants import grid, kernel_spec, select_variant

# dtypes accepted for bytes: FlashInfer passes uint8 (and torch's packed fp4 / fp8 types view the
# same bytes).
_PACKED_DTYPES = ("uint8", "int8", "float4_e2m1fn_x2")
_SCALE_DTYPES = ("uint8", "int8", "float8_e4m3fn")
_OUT_DTYPE_CODE = {"bfloat16": 0, "float16": 1}


def group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m: int = 128,
                                  tile_n: int = 128, tile_k: int = 128, swap_ab: bool = True, out=None,
                                  out_dtype=None, *, stream=None):
    """Grouped NVFP4 GEMM: ``out[m, n] = alpha[g] * sum_k A(m, k) * B(g, n, k)`` for m in group g.

    Args (device tensors of one GPU, C-contiguous; any framework: torch, CuPy, Numba, JAX/DLPack):
      a:        (cum_m, K/2) uint8, packed e2m1, element 2i in the low nibble; K % 128 == 0.
      b:        (G, N, K/2) uint8, packed e2m1; row n of group g holds output column n ("NT").
      a_scale:  uint8 (or float8_e4m3fn), >= a_scale_rows(m_indptr) * K/16 bytes: ue4m3 scales in the
                128x4-swizzled layout, group g's rows starting at row sf_base(g) (see
                ``nvfp4_driver.layout``). Bytes past the end of the tensor are never read.
      b_scale:  (G, N_pad, K/16) uint8 (or float8_e4m3fn), N_pad = ceil(N/128)*128, 128x4-swizzled.
      m_indptr: (G+1,) int32, non-decreasing; group g owns rows [m_indptr[g], m_indptr[g+1]).
      alpha:    (G,) float32 or None (1.0).
      tile_m, tile_n, tile_k, swap_ab: how the work is cut (128; 32/64/128; 128/256; bool). They never
                change the result beyond float32 summation order.
      out:      (cum_m, N) bfloat16/float16, or None to allocate one in the inputs' framework.
      out_dtype: "bfloat16"/"float16" or a torch dtype; default out.dtype, else bfloat16.
      stream:   an int handle, an object with ``__cuda_stream__``, a torch/CuPy stream; default the
                current stream of the inputs' framework (0 for others).

    Returns ``out``. Rows outside [m_indptr[0], m_indptr[G]) are not written.
    """
    arrays = {
        "a": tensors.as_device_array(a, "a"),
        "b": tensors.as_device_array(b, "b"),
        "a_scale": tensors.as_device_array(a_scale, "a_scale"),
        "b_scale": tensors.as_device_array(b_scale, "b_scale"),
        "m_indptr": tensors.as_device_array(m_indptr, "m_indptr"),
    }
    if alpha is not None:
        arrays["alpha"] = tensors.as_device_array(alpha, "alpha")
    A = arrays["a"]
    tensors.check_array(A, "a", dtype=_PACKED_DTYPES, ndim=2)
    k = 2 * A.shape[1]
    tensors.check_array(arrays["m_indptr"], "m_indptr", dtype="int32", ndim=1)
    num_groups = arrays["m_indptr"].shape[0] - 1
    B = arrays["b"]
    tensors.check_array(B, "b", dtype=_PACKED_DTYPES, ndim=3)
    if B.shape[0] != num_groups or B.shape[2] != k // 2:
        raise ValueError(f"b.shape={B.shape} but (G, N, K/2) needs G={num_groups} from m_indptr "
                         f"and K/2={k // 2} from a.shape={A.shape}")
    if out_dtype is not None:
        out_dtype = tensors.canonical_out_dtype(out_dtype)
    out_arr = None
    if out is not None:
        out_arr = tensors.as_device_array(out, "out")
        arrays["out"] = out_arr
        if out_dtype is None:
            out_dtype = tensors.canonical_out_dtype(out_arr.dtype)
    problem = Problem(num_groups=num_groups, n=B.shape[1], k=k, cum_m=A.shape[0],
                      out_dtype=out_dtype or "bfloat16")
    tiles = Tiles(tile_m, tile_n, tile_k, swap_ab)
    validate(problem, tiles)
    _check_operands(problem, arrays, out_arr)

    ordinal = tensors.check_same_device(arrays)
    if ordinal is None:
        ordinal = driver.pointer_device(A.ptr)
    variant = select_variant(problem, tiles, driver.device_info(ordinal).capability)
    if out_arr is None:
        out, out_arr = tensors.allocate(A, (problem.cum_m, problem.n), problem.out_dtype)
    alpha_ptr = arrays["alpha"].ptr if alpha is not None else 0
    _launch(problem, variant, ordinal, tensors.resolve_stream(stream, list(arrays.values())), A.ptr, B.ptr,
            arrays["a_scale"].ptr, arrays["b_scale"].ptr, arrays["m_indptr"].ptr, alpha_ptr, out_arr.ptr,
            arrays["a_scale"].nbytes)
    return out


def group_gemm_nvfp4_nt_groupwise_ptr(a: int, b: int, a_scale: int, b_scale: int, m_indptr: int,
                                      alpha: int | None, out: int, *, num_groups: int, n: int, k: int,
                                      cum_m: int, a_scale_nbytes: int, out_dtype="bfloat16", stream: int = 0,
                                      device: int | None = None, tile_m: int = 128, tile_n: int = 128,
                                      tile_k: int = 128, swap_ab: bool = True) -> None:
    """The same operation on raw device addresses, for callers with no tensor objects.

    The buffers must hold what ``group_gemm_nvfp4_nt_groupwise`` documents: ``a`` (cum_m, k/2),
    ``b`` (num_groups, n, k/2), ``b_scale`` (num_groups, ceil(n/128)*128, k/16), ``m_indptr``
    (num_groups+1,) int32, ``alpha`` (num_groups,) float32 or None/0, ``out`` (cum_m, n) of
    ``out_dtype``; ``a_scale_nbytes`` is the size of the ``a_scale`` buffer (reads stop there).
    ``device`` defaults to the GPU that owns ``a``. The launch is asynchronous on ``stream``.
    """
    problem = Problem(num_groups=num_groups, n=n, k=k, cum_m=cum_m,
                      out_dtype=tensors.canonical_out_dtype(out_dtype))
    tiles = Tiles(tile_m, tile_n, tile_k, swap_ab)
    validate(problem, tiles)
    ptrs = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "m_indptr": m_indptr, "out": out}
    for name, value in ptrs.items():
        if type(value) is not int or value < 0:
            raise TypeError(f"{name} must be a device address (int >= 0), got {value!r}")
    alpha = 0 if alpha is None else alpha
    if type(alpha) is not int or alpha < 0:
        raise TypeError(f"alpha must be a device address (int) or None, got {alpha!r}")
    if type(a_scale_nbytes) is not int or a_scale_nbytes < 0:
        raise ValueError(f"a_scale_nbytes={a_scale_nbytes!r} must be an int >= 0")
    ordinal = driver.pointer_device(a) if device is None else device
    variant = select_variant(problem, tiles, driver.device_info(ordinal).capability)
    _check_alignment({"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "out": out})
    _launch(problem, variant, ordinal, tensors.resolve_stream(stream, []), a, b, a_scale, b_scale, m_indptr,
            alpha, out, a_scale_nbytes)


def _check_operands(problem: Problem, arrays: dict, out_arr) -> None:
    """Shapes, dtypes, sizes and alignment of everything but a, b and m_indptr (checked above)."""
    p = problem
    tensors.check_array(arrays["a_scale"], "a_scale", dtype=_SCALE_DTYPES)
    tensors.check_array(arrays["b_scale"], "b_scale", dtype=_SCALE_DTYPES,
                        min_nbytes=p.num_groups * p.n_pad * p.sf_k)
    bs = arrays["b_scale"]
    if bs.nbytes != p.num_groups * p.n_pad * p.sf_k:
        raise ValueError(f"b_scale has {bs.nbytes} bytes (shape {bs.shape}) but (G, N_pad, K/16) = "
                         f"({p.num_groups}, {p.n_pad}, {p.sf_k}) needs {p.num_groups * p.n_pad * p.sf_k}")
    if "alpha" in arrays:
        tensors.check_array(arrays["alpha"], "alpha", dtype="float32", shape=(p.num_groups,))
    if out_arr is not None:
        tensors.check_array(out_arr, "out", dtype=("bfloat16", "float16"), shape=(p.cum_m, p.n), writable=True)
        if tensors.canonical_out_dtype(out_arr.dtype) != p.out_dtype:
            raise ValueError(f"out.dtype={out_arr.dtype} but out_dtype={p.out_dtype}")
    _check_alignment({name: arr.ptr for name, arr in arrays.items() if arr.numel})


# The kernel copies a and b in 16-byte pieces and scales in 4-byte words, and stores out in pairs.
_ALIGNMENT = {"a": 16, "b": 16, "a_scale": 4, "b_scale": 4, "out": 4, "m_indptr": 4, "alpha": 4}


def _check_alignment(ptrs: dict) -> None:
    for name, ptr in ptrs.items():
        need = _ALIGNMENT.get(name, 1)
        if ptr % need:
            raise ValueError(f"{name} starts at 0x{ptr:x}, which is not {need}-byte aligned; "
                             f"the kernel needs that (pass a tensor that starts at its allocation)")


def _launch(problem: Problem, variant, ordinal: int, stream: int, a, b, a_scale, b_scale, m_indptr, alpha,
            out, a_scale_nbytes: int) -> None:
    gx, gy, gz = grid(problem, variant)
    if gx == 0 or gy == 0:
        return  # no rows or no groups: nothing to write
    spec = kernel_spec(variant)
    a_scale_rows = a_scale_nbytes // problem.sf_k
    driver.launch(spec, ordinal, (gx, gy, gz), stream,
                  (a, b, a_scale, b_scale, m_indptr, alpha, out, problem.cum_m, a_scale_rows, problem.n,
                   problem.k, problem.num_groups, _OUT_DTYPE_CODE[problem.out_dtype]))
