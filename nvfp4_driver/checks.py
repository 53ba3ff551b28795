"""The metadata checks of the GEMM: every one runs before any launch, in the order that names the
root cause first, and raises ValueError/TypeError naming the values; what passes becomes a Plan.
Also the checks that need values (``check_m_indptr``, on host data) or addresses (``check_pointers``)."""
from __future__ import annotations

import numpy as np

from . import tensors
from .dtypes import OUT_DTYPES, PACKED_DTYPES, SCALE_DTYPES, canonical_out_dtype
from .layout import a_scale_group_bases as _a_scale_group_bases, a_scale_rows as _a_scale_rows_needed
from .plans import Plan
from .problem import Problem, requested_tiles, validate_request

# The kernel copies a and b in 16-byte pieces and scales in 4-byte words, and stores out in pairs.
_ALIGNMENT = {"a": 16, "b": 16, "a_scale": 4, "b_scale": 4, "out": 4, "m_indptr": 4, "alpha": 4}


def make_ptr_plan(num_groups, n, k, cum_m, a_scale_nbytes, out_dtype, tile_m, tile_n, tile_k, swap_ab,
                   flags) -> Plan:
    for name, value in (("num_groups", num_groups), ("n", n), ("k", k), ("cum_m", cum_m),
                        ("a_scale_nbytes", a_scale_nbytes)):
        if type(value) is not int:
            raise TypeError(f"{name} must be an int, got {value!r}")
    if a_scale_nbytes < 0:
        raise ValueError(f"a_scale_nbytes={a_scale_nbytes!r} must be an int >= 0")
    problem = Problem(num_groups=num_groups, n=n, k=k, cum_m=cum_m,
                      out_dtype=canonical_out_dtype(out_dtype))
    tiles = requested_tiles(tile_m, tile_n, tile_k, swap_ab)
    validate_request(problem, tiles)
    return Plan(problem, tiles, a_scale_nbytes, flags)


def check_m_indptr(indptr, cum_m: int, a_scale_nbytes: int, sf_k: int) -> None:
    """The checked mode's test of ``m_indptr``'s values (host data): what the kernel cannot refuse.

    Raises ValueError naming the entries unless ``m_indptr[0] >= 0``, the entries never decrease,
    ``m_indptr[G] <= cum_m``, and ``a_scale`` (``a_scale_nbytes`` bytes) holds every scale row the
    kernel reads: up to the end of the last non-empty group's 128-row blocks,
    ``max over g of sf_base(g) + ceil(rows_g / 128) * 128`` rows of ``sf_k = K/16`` bytes (SPEC §3).
    That is never more than ``a_scale_rows(m_indptr)``, and it is what FlashInfer's own test allocates.
    """
    ind = np.asarray(indptr).astype(np.int64).reshape(-1)
    groups = ind.shape[0] - 1
    if ind[0] < 0:
        raise ValueError(f"m_indptr[0]={int(ind[0])} must be >= 0")
    down = np.flatnonzero(np.diff(ind) < 0)
    if down.size:
        g = int(down[0])
        raise ValueError(f"m_indptr must be non-decreasing, but m_indptr[{g}]={int(ind[g])} > "
                         f"m_indptr[{g + 1}]={int(ind[g + 1])}")
    if ind[-1] > cum_m:
        raise ValueError(f"m_indptr[{groups}]={int(ind[-1])} exceeds cum_m={cum_m} (the rows of a and out)")
    # The kernel reads a group's scale rows in whole 128-row blocks from sf_base(g) (tiles of 16..128
    # rows never straddle one), and nothing for an empty group: ask for exactly those bytes.
    sizes = np.diff(ind)
    ends = _a_scale_group_bases(ind) + (sizes + 127) // 128 * 128
    rows = int(ends[sizes > 0].max()) if (sizes > 0).any() else 0
    if rows * sf_k > a_scale_nbytes:
        raise ValueError(f"a_scale has {a_scale_nbytes} bytes ({a_scale_nbytes // sf_k} rows of K/16={sf_k}) "
                         f"but this m_indptr needs {rows} rows ({rows * sf_k} bytes), the end of its last "
                         f"non-empty group's 128-row scale blocks: group g's scales start at row "
                         f"((m_indptr[g] + 127*g) // 128) * 128 (nvfp4_driver.a_scale_group_bases(m_indptr) "
                         f"lists them); a_scale_rows(m_indptr)={_a_scale_rows_needed(ind)} rows always suffice"
                         + _tight_stacking_hint(ind, a_scale_nbytes, sf_k))


def _tight_stacking_hint(ind: np.ndarray, a_scale_nbytes: int, sf_k: int) -> str:
    """The sf_base trap (SPEC §3): an a_scale of exactly the per-group 128-row blocks stacked one after
    another, with a group that such a stacking puts elsewhere than sf_base(g) (from group 2 on)."""
    sizes = np.diff(ind)
    blocks = (sizes + 127) // 128 * 128
    if int(blocks.sum()) * sf_k != a_scale_nbytes:
        return ""
    tight = np.concatenate(([0], np.cumsum(blocks)[:-1]))
    bases = _a_scale_group_bases(ind)
    wrong = np.flatnonzero((tight != bases) & (sizes > 0))
    if not wrong.size:  # every group would sit at its base: only the size is short
        return ""
    g = int(wrong[0])
    return (f". a_scale has exactly the rows of the groups' 128-row blocks stacked tightly "
            f"(sum of ceil(rows_g/128)*128 = {int(blocks.sum())}), the sf_base trap: group {g} starts at row "
            f"a_scale_group_bases(m_indptr)[{g}]={int(bases[g])}, not at row {int(tight[g])}; allocate "
            f"a_scale_rows(m_indptr) rows and put group g's scales at row a_scale_group_bases(m_indptr)[g] "
            f"(nvfp4_driver.quantize_activations writes this layout)")




def make_plan(arrays: dict, tiles, out_dtype, flags) -> Plan:
    """Every metadata check, in the order that names the root cause first; no driver call."""
    ind = tensors.check_array(arrays["m_indptr"], "m_indptr", dtype="int32", ndim=1)
    num_groups = ind.shape[0] - 1
    if num_groups < 0:
        raise ValueError(f"m_indptr.shape={ind.shape} but it needs G+1 >= 1 entries")
    _check_quantized(arrays["a"], "a")
    A = tensors.check_array(arrays["a"], "a", dtype=PACKED_DTYPES, ndim=2)
    k = 2 * A.shape[1]
    _check_quantized(arrays["b"], "b")
    B = tensors.check_array(arrays["b"], "b", dtype=PACKED_DTYPES, ndim=3)
    if B.shape[0] != num_groups or B.shape[2] != k // 2:
        raise ValueError(f"b.shape={B.shape} but (G, N, K/2) needs G={num_groups} from m_indptr.shape="
                         f"{ind.shape} and K/2={k // 2} from a.shape={A.shape}" + _unpacked_hint(A.shape, B.shape))
    if out_dtype is not None:
        out_dtype = canonical_out_dtype(out_dtype)
    out_arr = arrays.get("out")
    if out_arr is not None:
        tensors.check_array(out_arr, "out", dtype=OUT_DTYPES, contiguous=False)
        if out_dtype is None:
            out_dtype = canonical_out_dtype(out_arr.dtype)
    problem = Problem(num_groups=num_groups, n=B.shape[1], k=k, cum_m=A.shape[0],
                      out_dtype=out_dtype or "bfloat16")
    validate_request(problem, tiles)
    p = problem
    tensors.check_array(arrays["a_scale"], "a_scale", dtype=SCALE_DTYPES)
    bs = tensors.check_array(arrays["b_scale"], "b_scale", dtype=SCALE_DTYPES)
    if bs.nbytes != p.num_groups * p.n_pad * p.sf_k:
        hint = ""
        if 2 * bs.nbytes == p.num_groups * p.n_pad * p.sf_k:
            hint = (f", twice what it holds, as if K were doubled: if a and b hold one e2m1 code per byte "
                    f"(K={p.k // 2} columns each), pack two codes per byte, element 2i in the low nibble "
                    f"(a (cum_m, K/2), b (G, N, K/2)), as {_QUANTIZERS} do")
        raise ValueError(f"b_scale has {bs.nbytes} bytes (shape {bs.shape}) but (G, N_pad, K/16) = "
                         f"({p.num_groups}, {p.n_pad}, {p.sf_k}) needs {p.num_groups * p.n_pad * p.sf_k}{hint}")
    if "alpha" in arrays:
        tensors.check_array(arrays["alpha"], "alpha", dtype="float32", shape=(p.num_groups,))
    if out_arr is not None:
        tensors.check_array(out_arr, "out", dtype=OUT_DTYPES, shape=(p.cum_m, p.n), writable=True)
        if canonical_out_dtype(out_arr.dtype) != p.out_dtype:
            raise ValueError(f"out.dtype={out_arr.dtype} but out_dtype={p.out_dtype}")
    tensors.check_same_device(arrays)
    return Plan(problem, tiles, arrays["a_scale"].nbytes, flags)


# dtypes of values that were never quantized: the commonest first mistake is to pass them as a or b.
_UNQUANTIZED_DTYPES = ("bfloat16", "float16", "float32", "float64")
_QUANTIZERS = "nvfp4_driver.quantize_activations / nvfp4_driver.quantize_weights"
_QUANTIZE_HINT = {
    "a": "quantize first with nvfp4_driver.quantize_activations(x, m_indptr, global_scale) -> (a, a_scale) "
         "(or nvfp4_driver.quantize_weights for b)",
    "b": "quantize first with nvfp4_driver.quantize_weights(w, global_scale) -> (b, b_scale) "
         "(or nvfp4_driver.quantize_activations for a)",
}


def _check_quantized(arr, name: str) -> None:
    """A bf16/fp16/fp32 ``a`` or ``b`` holds values, not e2m1 codes: say how to make the codes."""
    if arr.dtype in _UNQUANTIZED_DTYPES:
        raise TypeError(f"{name}.dtype={arr.dtype} but one of {', '.join(PACKED_DTYPES)} is required "
                        f"(packed e2m1, two 4-bit codes per byte): {name} (shape {arr.shape}) holds unquantized "
                        f"values; {_QUANTIZE_HINT[name]}")


def _unpacked_hint(a_shape, b_shape) -> str:
    """When a's and b's last dimensions differ by exactly 2x, one of them holds one e2m1 code per byte."""
    if len(b_shape) != 3 or not a_shape[1] or not b_shape[2]:
        return ""
    if a_shape[1] == 2 * b_shape[2]:
        return (f"; a.shape[1]={a_shape[1]} is 2*b.shape[2]: a looks unpacked (one e2m1 code per byte, K columns "
                f"instead of K/2={b_shape[2]}): pack two codes per byte, element 2i in the low nibble, "
                f"as nvfp4_driver.quantize_activations does")
    if b_shape[2] == 2 * a_shape[1]:
        return (f"; b.shape[2]={b_shape[2]} is 2*a.shape[1]: b looks unpacked (one e2m1 code per byte, K columns "
                f"instead of K/2={a_shape[1]}): pack two codes per byte, element 2i in the low nibble, "
                f"as nvfp4_driver.quantize_weights does")
    return ""


def check_pointers(ptrs: dict) -> None:
    """``{name: (address, element count)}``: non-empty arrays need a non-NULL, aligned address."""
    for name, (ptr, numel) in ptrs.items():
        if not numel:
            continue
        if ptr == 0:
            raise ValueError(f"{name} has {numel} elements but its address is 0 (NULL)")
        need = _ALIGNMENT.get(name, 1)
        if ptr % need:
            raise ValueError(f"{name} starts at 0x{ptr:x}, which is not {need}-byte aligned; "
                             f"the kernel needs that (pass a tensor that starts at its allocation)")


def check_flag(check_inputs) -> None:
    if check_inputs is not None and type(check_inputs) is not bool:
        raise TypeError(f"check_inputs must be True, False or None, got {check_inputs!r}")
