"""The public operation: FlashInfer's ``group_gemm_nvfp4_nt_groupwise``, same arguments, same bytes.

Every check below runs before any launch (and before any driver call that the check does not itself
need) and raises ValueError/TypeError naming the values. Without the checked mode no call on this path
copies device memory to the host: the grid comes from shapes, and the kernel reads ``m_indptr`` on the
GPU, clamping every entry into ``[0, cum_m]`` so that a malformed ``m_indptr`` never sends a read or
write outside the given tensors.

Per call, only what depends on the pointers is computed afresh (alignment, the stream, the device
when the framework does not say). Everything the metadata decides - shapes, dtypes, strides, devices,
tiles, out_dtype and the NVFP4_DRIVER_* variables - is validated once and kept in a plan keyed by that
metadata: a repeated call with equal metadata passed the same checks before. Exact ``torch.Tensor``
inputs have a second, cheaper key read straight from the tensors (no DeviceArray is built), which is
what keeps the torch path's host cost near the bare launch (``benchmarks/bench_overhead.py``).
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from . import config, driver, tensors, torch_hooks
from .layout import a_scale_group_bases as _a_scale_group_bases, a_scale_rows as _a_scale_rows_needed
from .problem import PACKED_DTYPES, SCALE_DTYPES, Problem, requested_tiles, validate_request
from .variants import grid, kernel_spec, select_variant

_OUT_DTYPE_CODE = {"bfloat16": 0, "float16": 1}
_NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha", "out")
# The kernel copies a and b in 16-byte pieces and scales in 4-byte words, and stores out in pairs.
_ALIGNMENT = {"a": 16, "b": 16, "a_scale": 4, "b_scale": 4, "out": 4, "m_indptr": 4, "alpha": 4}
_MAX_PLANS = 4096  # distinct metadata kept; a serving loop sees one per batch size and layer shape



def group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m: int | None = None,
                                  tile_n: int | None = None, tile_k: int | None = None,
                                  swap_ab: bool | None = None, out=None,
                                  out_dtype=None, *, stream=None, check_inputs: bool | None = None,
                                  skip_check: bool = False):
    """Grouped NVFP4 GEMM: ``out[m, n] = alpha[g] * sum_k A(m, k) * B(g, n, k)`` for m in group g.

    Args (device tensors of one GPU, C-contiguous; any framework: torch, CuPy, Numba, JAX/DLPack):
      a:        (cum_m, K/2) uint8, packed e2m1, element 2i in the low nibble; K % 128 == 0.
      b:        (G, N, K/2) uint8, packed e2m1; row n of group g holds output column n ("NT").
      a_scale:  uint8 (or float8_e4m3fn), >= a_scale_rows(m_indptr) * K/16 bytes: ue4m3 scales in the
                128x4-swizzled layout, group g's rows starting at row sf_base(g) (see
                ``nvfp4_driver.layout``). Bytes past the last whole 128-row block of the tensor are
                never read (they count as zero scales).
      b_scale:  (G, N_pad, K/16) uint8 (or float8_e4m3fn), N_pad = ceil(N/128)*128, 128x4-swizzled.
      m_indptr: (G+1,) int32, non-decreasing; group g owns rows [m_indptr[g], m_indptr[g+1]).
      alpha:    (G,) float32 or None (1.0).
      tile_m, tile_n, tile_k, swap_ab: how the work is cut: FlashInfer's 128; 32/64/128; 128/256; bool,
                and our extensions: tile_m 16/32/64 (token tiles, with tile_n=128 and swap_ab=True), and
                tile_n=256 with tile_m=128, tile_k=128, swap_ab=False (Hopper's wgmma kernel only). All None
                (the default): chosen from the shapes (``variants.auto_tiles``); naming any of them keeps
                FlashInfer's defaults 128/128/128/True for the rest. They never change the result beyond
                float32 summation order.
      out:      (cum_m, N) bfloat16/float16, or None to allocate one: a torch tensor or CuPy array for
                torch/CuPy inputs, else a ``devmem.DeviceBuffer`` (CAI + DLPack: pass it to
                ``jax.numpy.from_dlpack``, ``numba.cuda.as_cuda_array``, ``torch.from_dlpack``).
      out_dtype: "bfloat16"/"float16" or a torch/numpy dtype; default out.dtype, else bfloat16.
      stream:   an int handle, an object with ``__cuda_stream__``, a torch/CuPy stream; default the
                current stream of the inputs' framework (0 for others).
      check_inputs: True copies ``m_indptr`` to the host (waiting for ``stream``) and raises ValueError
                unless it is non-decreasing, ``m_indptr[0] >= 0``, ``m_indptr[G] <= cum_m`` and
                ``a_scale`` holds every scale row the kernel reads (``check_m_indptr``; never more than
                ``a_scale_rows(m_indptr)``); None follows NVFP4_DRIVER_CHECK.
                Off by default: it costs a device-to-host copy and a synchronisation per call, and
                without it the kernel clamps, so malformed values give wrong rows, never stray accesses.
      skip_check: FlashInfer's keyword: True means check_inputs=False (the metadata checks stay: they
                are cached per shape and cost nothing on a repeat call).

    Returns ``out``. Rows outside [m_indptr[0], m_indptr[G]) are not written.
    """
    if skip_check is not False:
        if skip_check is not True:
            raise TypeError(f"skip_check must be True or False, got {skip_check!r}")
        check_inputs = False
    # Under torch.compile the call goes to the torch.library op (dynamo cannot trace a launch through
    # raw pointers); torch_hooks holds what torch_ops offered once torch was imported.
    if torch_hooks.is_compiling is not None and torch_hooks.is_compiling():
        return torch_hooks.traced_forms["group_gemm"](a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n,
                                                      tile_k, swap_ab, out, out_dtype, stream, check_inputs)
    T = _TorchTensor[0]
    if (type(a) is T and type(b) is T and type(a_scale) is T and type(b_scale) is T and type(m_indptr) is T
            and (alpha is None or type(alpha) is T) and (out is None or type(out) is T)
            and ((tile_m is None and tile_n is None and tile_k is None and swap_ab is None)
                 or _plain_tiles(tile_m, tile_n, tile_k, swap_ab))):
        # The torch fast path, inlined: every Python call costs about 0.1 us here.
        flags = config.launch_flags()
        if (check_inputs is None and not flags[3]) or check_inputs is False:
            try:
                entry = _torch_plans.get((
                    a.shape, a.dtype, a.get_device(), a.is_contiguous(),
                    b.shape, b.dtype, b.get_device(), b.is_contiguous(),
                    a_scale.shape, a_scale.dtype, a_scale.get_device(), a_scale.is_contiguous(),
                    b_scale.shape, b_scale.dtype, b_scale.get_device(), b_scale.is_contiguous(),
                    m_indptr.shape, m_indptr.dtype, m_indptr.get_device(), m_indptr.is_contiguous(),
                    None if alpha is None else
                    (alpha.shape, alpha.dtype, alpha.get_device(), alpha.is_contiguous()),
                    None if out is None else (out.shape, out.dtype, out.get_device(), out.is_contiguous()),
                    tile_m, tile_n, tile_k, swap_ab, out_dtype, flags))
            except TypeError:  # an unhashable out_dtype: the general path names it
                entry = None
            if entry is not None:
                # _TorchPlan.run, inlined.
                pa, pb, ps, pbs, pm = (a.data_ptr(), b.data_ptr(), a_scale.data_ptr(), b_scale.data_ptr(),
                                       m_indptr.data_ptr())
                palpha = 0 if alpha is None else alpha.data_ptr()
                po = 0 if out is None else out.data_ptr()
                # An odd address (an empty view may sit anywhere) or an output to allocate for an explicit
                # stream (torch's allocator must be told of it): the general path decides.
                if not ((pa | pb) & 15 or (ps | pbs | pm | palpha | po) & 3 or (out is None and stream is not None)):
                    handle = _raw_stream[0](entry.ordinal) if stream is None else tensors.resolve_stream(stream, ())
                    if out is None:
                        out = _torch_empty(entry.out_shape, dtype=entry.out_dtype, device=entry.device)
                        po = out.data_ptr()
                    if entry.launch is not None:
                        entry.launch(entry.grid, handle, (pa, pb, ps, pbs, pm, palpha, po) + entry.tail)
                    return out
    return _call(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype,
                 stream, check_inputs)


def group_gemm_nvfp4_nt_groupwise_ptr(a: int, b: int, a_scale: int, b_scale: int, m_indptr: int,
                                      alpha: int | None, out: int, *, num_groups: int, n: int, k: int,
                                      cum_m: int, a_scale_nbytes: int, out_dtype="bfloat16", stream: int = 0,
                                      device: int | None = None, tile_m: int | None = None,
                                      tile_n: int | None = None, tile_k: int | None = None,
                                      swap_ab: bool | None = None,
                                      check_inputs: bool | None = None) -> None:
    """The same operation on raw device addresses, for callers with no tensor objects.

    The buffers must hold what ``group_gemm_nvfp4_nt_groupwise`` documents: ``a`` (cum_m, k/2),
    ``b`` (num_groups, n, k/2), ``b_scale`` (num_groups, ceil(n/128)*128, k/16), ``m_indptr``
    (num_groups+1,) int32, ``alpha`` (num_groups,) float32 or None/0, ``out`` (cum_m, n) of
    ``out_dtype``; ``a_scale_nbytes`` is the size of the ``a_scale`` buffer (reads stop there).
    ``device`` defaults to the GPU that owns ``a``. The launch is asynchronous on ``stream``.
    ``tile_*``, ``swap_ab`` and ``check_inputs`` as for the tensor entry point.
    """
    flags = config.launch_flags()
    key = (num_groups, n, k, cum_m, a_scale_nbytes, type(out_dtype), out_dtype, tile_m, tile_n, tile_k, swap_ab,
           flags)
    exact = all(type(v) is int for v in key[:5]) and _plain_tiles(tile_m, tile_n, tile_k, swap_ab)
    try:
        plan = _ptr_plans.get(key) if exact else None
    except TypeError:  # an unhashable out_dtype: canonical_out_dtype names it below
        exact, plan = False, None
    if plan is None:
        plan = _make_ptr_plan(num_groups, n, k, cum_m, a_scale_nbytes, out_dtype, tile_m, tile_n, tile_k,
                              swap_ab, flags)
        if exact:
            _remember(_ptr_plans, key, plan)
    if device is not None and (type(device) is not int or device < 0):
        raise ValueError(f"device={device!r} must be None or a GPU ordinal (int >= 0)")
    _check_flag(check_inputs)
    ptrs = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "m_indptr": m_indptr, "out": out}
    for name, value in ptrs.items():
        if type(value) is not int or value < 0:
            raise TypeError(f"{name} must be a device address (int >= 0), got {value!r}")
    alpha = 0 if alpha is None else alpha
    if type(alpha) is not int or alpha < 0:
        raise TypeError(f"alpha must be a device address (int) or None, got {alpha!r}")
    sizes = plan.ptr_sizes
    _check_pointers({name: (ptr, sizes[name]) for name, ptr in ptrs.items()})
    if alpha:
        _check_pointers({"alpha": (alpha, num_groups)})
    handle = tensors.resolve_stream(stream, ())
    ordinal = driver.pointer_device(a) if device is None else device
    kernel, launch_grid = plan.kernel(ordinal)
    p = plan.problem
    checked = flags[3] if check_inputs is None else check_inputs
    if checked:
        indptr = _host_m_indptr(m_indptr, p.num_groups, ordinal, handle, explicit=check_inputs is True)
        if indptr is not None:
            check_m_indptr(indptr, p.cum_m, a_scale_nbytes, p.sf_k)
    if launch_grid[0] and launch_grid[1]:
        kernel.launch(launch_grid, handle, (a, b, a_scale, b_scale, m_indptr, alpha, out) + plan.tail)


def _make_ptr_plan(num_groups, n, k, cum_m, a_scale_nbytes, out_dtype, tile_m, tile_n, tile_k, swap_ab,
                   flags) -> _Plan:
    for name, value in (("num_groups", num_groups), ("n", n), ("k", k), ("cum_m", cum_m),
                        ("a_scale_nbytes", a_scale_nbytes)):
        if type(value) is not int:
            raise TypeError(f"{name} must be an int, got {value!r}")
    if a_scale_nbytes < 0:
        raise ValueError(f"a_scale_nbytes={a_scale_nbytes!r} must be an int >= 0")
    problem = Problem(num_groups=num_groups, n=n, k=k, cum_m=cum_m,
                      out_dtype=tensors.canonical_out_dtype(out_dtype))
    tiles = requested_tiles(tile_m, tile_n, tile_k, swap_ab)
    validate_request(problem, tiles)
    return _Plan(problem, tiles, a_scale_nbytes, flags)


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


# ---------------------------------------------------------------------------------------------------
# plans: what the metadata decides, computed once
# ---------------------------------------------------------------------------------------------------

class _Plan:
    """A validated problem, cut and NVFP4_DRIVER_* setting; the kernel and grid per GPU, made lazily."""

    __slots__ = ("problem", "tiles", "flags", "a_scale_nbytes", "tail", "_kernels")

    @property
    def ptr_sizes(self) -> dict:
        """Elements of each buffer of the raw-pointer entry point (for its NULL and alignment checks)."""
        p = self.problem
        return {"a": p.cum_m * p.k // 2, "b": p.num_groups * p.n * p.k // 2, "a_scale": self.a_scale_nbytes,
                "b_scale": p.num_groups * p.n_pad * p.sf_k, "m_indptr": p.num_groups + 1, "out": p.cum_m * p.n}

    def __init__(self, problem: Problem, tiles, a_scale_nbytes: int, flags: tuple):
        p = problem
        self.problem, self.tiles, self.flags, self.a_scale_nbytes = problem, tiles, flags, a_scale_nbytes
        # The kernel bounds its a_scale reads by rows, and the swizzle spreads a row's bytes over its
        # whole 128-row block: only whole blocks inside the tensor may be read, so round down.
        rows = a_scale_nbytes // (128 * p.sf_k) * 128
        self.tail = (p.cum_m, rows, p.n, p.k, p.num_groups, _OUT_DTYPE_CODE[p.out_dtype])
        self._kernels: dict[int, tuple] = {}

    def kernel(self, ordinal: int) -> tuple:
        """(PreparedKernel, grid) on GPU ``ordinal``."""
        found = self._kernels.get(ordinal)
        if found is None:
            info = driver.device_info(ordinal)
            variant = select_variant(self.problem, self.tiles, info.capability, force_ptx=self.flags[0],
                                     twin=self.flags[1], portable=self.flags[4])
            found = self._kernels[ordinal] = (driver.prepared(kernel_spec(variant), ordinal),
                                              grid(self.problem, variant))
        return found


_plans: dict = {}          # DeviceArray metadata key -> _Plan
_ptr_plans: dict = {}      # raw-pointer entry point's sizes, tiles and flags -> _Plan
_torch_plans: dict = {}    # torch metadata key -> _TorchPlan
_TorchTensor: list = [None]  # torch.Tensor once a torch tensor has been seen (torch is never imported here)


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _MAX_PLANS:
        cache.clear()  # crude but bounded; a serving loop refills what it uses in one step
    cache[key] = value


def _array_key(arr):
    return None if arr is None else (arr.shape, arr.strides, arr.dtype, arr.device, arr.readonly, arr.framework)


def _meta_key(arrays: dict, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags):
    """The plan key of one call, or None where a value's type could make a cache hit lie (128.0 ==
    128, True == 1) or cannot be hashed: such calls take the full checks every time."""
    if not _plain_tiles(tile_m, tile_n, tile_k, swap_ab):
        return None
    key = (tuple(_array_key(arrays.get(name)) for name in _NAMES), tile_m, tile_n, tile_k, swap_ab,
           type(out_dtype), out_dtype, flags)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _plain_tiles(tile_m, tile_n, tile_k, swap_ab) -> bool:
    """Tile arguments a plan key may hold: ints / a bool, or None (automatic). Other types could make
    a cache hit lie (128.0 == 128, True == 1); such calls take the full checks every time."""
    return ((tile_m is None or type(tile_m) is int) and (tile_n is None or type(tile_n) is int)
            and (tile_k is None or type(tile_k) is int) and (swap_ab is None or type(swap_ab) is bool))


def _make_plan(arrays: dict, tiles, out_dtype, flags) -> _Plan:
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
        out_dtype = tensors.canonical_out_dtype(out_dtype)
    out_arr = arrays.get("out")
    if out_arr is not None:
        tensors.check_array(out_arr, "out", dtype=("bfloat16", "float16"), contiguous=False)
        if out_dtype is None:
            out_dtype = tensors.canonical_out_dtype(out_arr.dtype)
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
        tensors.check_array(out_arr, "out", dtype=("bfloat16", "float16"), shape=(p.cum_m, p.n), writable=True)
        if tensors.canonical_out_dtype(out_arr.dtype) != p.out_dtype:
            raise ValueError(f"out.dtype={out_arr.dtype} but out_dtype={p.out_dtype}")
    tensors.check_same_device(arrays)
    return _Plan(problem, tiles, arrays["a_scale"].nbytes, flags)


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


def _check_pointers(ptrs: dict) -> None:
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


def _check_flag(check_inputs) -> None:
    if check_inputs is not None and type(check_inputs) is not bool:
        raise TypeError(f"check_inputs must be True, False or None, got {check_inputs!r}")


# ---------------------------------------------------------------------------------------------------
# the general path: any framework
# ---------------------------------------------------------------------------------------------------

def _call(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype, stream,
          check_inputs):
    _check_flag(check_inputs)
    # An explicit stream is resolved first: DLPack producers are told which stream we will read on.
    explicit = None if stream is None else tensors.resolve_stream(stream, ())
    given = (a, b, a_scale, b_scale, m_indptr, alpha, out)
    arrays = {}
    for name, x in zip(_NAMES, given):
        if x is not None or name not in ("alpha", "out"):
            arrays[name] = tensors.as_device_array(x, name, stream=explicit)
    if _TorchTensor[0] is None and any(arr.framework == "torch" for arr in arrays.values()):
        _saw_torch()
        torch_hooks.ensure_registered()
    flags = config.launch_flags()
    key = _meta_key(arrays, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags)
    plan = _plans.get(key) if key is not None else None
    if plan is None:
        plan = _make_plan(arrays, requested_tiles(tile_m, tile_n, tile_k, swap_ab), out_dtype, flags)
        if key is not None:
            _remember(_plans, key, plan)
    _check_pointers({name: (arr.ptr, arr.numel) for name, arr in arrays.items()})
    ordinal = _device_of(arrays)
    kernel, launch_grid = plan.kernel(ordinal)
    handle = explicit if explicit is not None else tensors.resolve_stream(None, arrays)
    p = plan.problem
    checked = flags[3] if check_inputs is None else check_inputs
    if checked:
        indptr = _host_m_indptr(arrays["m_indptr"].ptr, p.num_groups, ordinal, handle,
                                explicit=check_inputs is True)
        if indptr is not None:
            check_m_indptr(indptr, p.cum_m, plan.a_scale_nbytes, p.sf_k)
    A = arrays["a"]
    if out is None:
        out, out_arr = tensors.allocate(A, (p.cum_m, p.n), p.out_dtype, device=ordinal)
        if explicit is not None and out_arr.framework == "torch":
            _record_stream(out, explicit)
    else:
        out_arr = arrays["out"]
    if launch_grid[0] and launch_grid[1]:  # else: no rows or no groups, nothing to write
        alpha_ptr = arrays["alpha"].ptr if "alpha" in arrays else 0
        kernel.launch(launch_grid, handle, (A.ptr, arrays["b"].ptr, arrays["a_scale"].ptr, arrays["b_scale"].ptr,
                                            arrays["m_indptr"].ptr, alpha_ptr, out_arr.ptr) + plan.tail)
    if out_arr.framework != "torch" and hasattr(out, "stream") and hasattr(out, "__dlpack__"):
        out.stream = handle  # a DeviceBuffer we allocated: consumers order themselves after this launch
    if (not checked and (given[6] is not None or stream is None)
            and _torch_servable(given, tile_m, tile_n, tile_k, swap_ab)):
        _remember_torch(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags, plan, ordinal)
    return out


def _torch_servable(given, tile_m, tile_n, tile_k, swap_ab) -> bool:
    """Whether the torch fast path can serve this call's metadata next time."""
    T = _TorchTensor[0]
    return (T is not None and all(x is None or type(x) is T for x in given)
            and all(given[i] is not None for i in range(5)) and _plain_tiles(tile_m, tile_n, tile_k, swap_ab))


def _device_of(arrays: dict) -> int:
    """The one GPU of the call. Arrays whose framework does not say (CAI producers such as Numba, raw
    pointers) are asked of the driver, each of them: a kernel on one GPU must not touch another's memory."""
    known = {arr.device for arr in arrays.values() if arr.device is not None}
    unknown = [(name, arr) for name, arr in arrays.items() if arr.device is None and arr.numel]
    if not unknown:
        if known:
            return known.pop()  # check_same_device in _make_plan: at most one
        return driver.pointer_device(arrays["m_indptr"].ptr)  # everything empty but m_indptr
    owners = {name: driver.pointer_device(arr.ptr) for name, arr in unknown}
    for name, arr in arrays.items():
        if arr.device is not None:
            owners[name] = arr.device
    if len(set(owners.values())) > 1:
        items = [f"{n} on cuda:{d}" for n, d in owners.items()]
        raise ValueError(f"{items[0].replace(' on ', ' is on ', 1)} but {', '.join(items[1:])}; "
                         f"all arrays must be on one device")
    return next(iter(owners.values()))


def _record_stream(out, handle: int) -> None:
    """torch allocated ``out`` on its current stream; if we write it on another one, tell the caching
    allocator, or it could hand the memory out again while our kernel still writes it."""
    torch = sys.modules["torch"]
    device = out.device
    if handle == torch.cuda.current_stream(device).cuda_stream:
        return
    if handle in (0, 1):
        s = torch.cuda.default_stream(device)
    else:
        s = torch.cuda.ExternalStream(handle, device=device)
    out.record_stream(s)


_warned_capture = [False]


def _host_m_indptr(ptr: int, num_groups: int, ordinal: int, stream: int, explicit: bool):
    """m_indptr's values on the host, read in ``stream``'s order; None where the checked mode must
    step aside: NVFP4_DRIVER_CHECK during CUDA graph capture (a synchronisation would break it)."""
    if driver.stream_is_capturing(stream, ordinal):
        if explicit:
            raise RuntimeError(f"check_inputs=True cannot run while stream 0x{stream:x} is being captured "
                               f"into a CUDA graph: it copies m_indptr to the host and waits; check "
                               f"before capturing, or call with check_inputs=False")
        if not _warned_capture[0]:
            _warned_capture[0] = True
            warnings.warn("NVFP4_DRIVER_CHECK is set, but the launch is being captured into a CUDA "
                          "graph, where m_indptr cannot be read back: captured launches run unchecked",
                          RuntimeWarning, stacklevel=4)
        return None
    raw = driver.read_device(ptr, 4 * (num_groups + 1), ordinal, stream)
    return np.frombuffer(raw, dtype=np.int32)


# ---------------------------------------------------------------------------------------------------
# the torch fast path
# ---------------------------------------------------------------------------------------------------

class _TorchPlan:
    """What the fast path needs for one torch metadata key: the launch and the output's description.

    The key (see the public function) holds, per tensor, exactly what the checks depended on: shape,
    dtype, device and contiguity (torch's is_contiguous() is our C-order rule: size-1 dimensions and
    empty tensors are contiguous). A hit therefore passed every metadata check before; only the
    addresses are new, and the public function checks them.
    """

    __slots__ = ("launch", "grid", "tail", "ordinal", "out_shape", "out_dtype", "device")

    def __init__(self, plan: _Plan, ordinal: int, device):
        torch = sys.modules["torch"]
        kernel, self.grid = plan.kernel(ordinal)
        self.launch = kernel.launch if self.grid[0] and self.grid[1] else None  # None: nothing to write
        self.tail, self.ordinal, self.device = plan.tail, ordinal, device
        self.out_shape = (plan.problem.cum_m, plan.problem.n)
        self.out_dtype = getattr(torch, plan.problem.out_dtype)


def _torch_key(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags):
    """The fast path's key, as the public function builds it inline."""
    def meta(x):
        return None if x is None else (x.shape, x.dtype, x.get_device(), x.is_contiguous())

    a, b, a_scale, b_scale, m_indptr, alpha, out = given
    return (*meta(a), *meta(b), *meta(a_scale), *meta(b_scale), *meta(m_indptr), meta(alpha), meta(out),
            tile_m, tile_n, tile_k, swap_ab, out_dtype, flags)


def _remember_torch(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags, plan, ordinal) -> None:
    try:
        key = _torch_key(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags)
        hash(key)
    except TypeError:
        return
    _remember(_torch_plans, key, _TorchPlan(plan, ordinal, given[0].device))


_raw_stream: list = [None]
_torch_empty = None  # torch.empty once torch is seen


def _saw_torch() -> None:
    """torch is imported: note torch.Tensor for the fast path's type tests (the torch.library ops are
    torch_hooks' business)."""
    torch = sys.modules["torch"]
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    # The private call skips building a torch.cuda.Stream object (about 1 us vs 10 us).
    _raw_stream[0] = raw if raw is not None else (lambda device: torch.cuda.current_stream(device).cuda_stream)
    global _torch_empty
    _torch_empty = torch.empty
    _TorchTensor[0] = torch.Tensor


if "torch" in sys.modules:  # else at the first torch tensor
    _saw_torch()
