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
what keeps the torch path's host cost near the bare launch (``benchmarks/bench_overhead.py``). Other
frameworks' repeated calls with the same arrays replay their whole launch (``launch_cache.py``).
"""
from __future__ import annotations

import sys
import warnings
import weakref

import numpy as np

from . import checks, config, driver, launch_cache, outputs, plans, streams, tensors, torch_hooks
from .checks import check_m_indptr
from .problem import requested_tiles

__all__ = ["group_gemm_nvfp4_nt_groupwise", "group_gemm_nvfp4_nt_groupwise_ptr", "check_m_indptr"]
_TorchTensor: list = [None]  # torch.Tensor once a torch tensor has been seen (torch is never imported here)


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
                and our extensions: tile_m 16/32/64 (token tiles, with tile_n=128 and swap_ab=True; tile_m 8
                too on compute capability 9.0 only), and tile_n=256 with tile_m=128, tile_k=128,
                swap_ab=False (Hopper's wgmma kernel and the native Blackwell kernel on compute
                capability 12.0/12.1 only). All None
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
                 or plans.plain_tiles(tile_m, tile_n, tile_k, swap_ab))):
        # The torch fast path, inlined: every Python call costs about 0.1 us here.
        flags = config.flags()
        if (check_inputs is None and not flags.check) or check_inputs is False:
            try:
                entry = plans.torch_plans.get((
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
                # plans.TorchPlan's launch, inlined.
                pa, pb, ps, pbs, pm = (a.data_ptr(), b.data_ptr(), a_scale.data_ptr(), b_scale.data_ptr(),
                                       m_indptr.data_ptr())
                palpha = 0 if alpha is None else alpha.data_ptr()
                po = 0 if out is None else out.data_ptr()
                # An odd address (an empty view may sit anywhere) or an output to allocate for an explicit
                # stream (torch's allocator must be told of it): the general path decides.
                if not ((pa | pb) & 15 or (ps | pbs | pm | palpha | po) & 3 or (out is None and stream is not None)):
                    handle = _raw_stream[0](entry.ordinal) if stream is None else streams.resolve_stream(stream, ())
                    if out is None:
                        out = _torch_empty(entry.out_shape, dtype=entry.out_dtype, device=entry.device)
                        po = out.data_ptr()
                    if entry.launch is not None:  # GroupedGemmArgs' order, as a tuple (see TorchPlan)
                        entry.launch(entry.grid, handle, (pa, pb, ps, pbs, pm, palpha, po) + entry.tail)
                    return out
    return _call(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype,
                 stream, check_inputs, config.flags())


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
    flags = config.flags()
    key = (num_groups, n, k, cum_m, a_scale_nbytes, type(out_dtype), out_dtype, tile_m, tile_n, tile_k, swap_ab,
           flags)
    exact = all(type(v) is int for v in key[:5]) and plans.plain_tiles(tile_m, tile_n, tile_k, swap_ab)
    try:
        plan = plans.pointer_plans.get(key) if exact else None
    except TypeError:  # an unhashable out_dtype: canonical_out_dtype names it below
        exact, plan = False, None
    if plan is None:
        plan = checks.make_ptr_plan(num_groups, n, k, cum_m, a_scale_nbytes, out_dtype, tile_m, tile_n, tile_k,
                              swap_ab, flags)
        if exact:
            plans.remember(plans.pointer_plans, key, plan)
    if device is not None and (type(device) is not int or device < 0):
        raise ValueError(f"device={device!r} must be None or a GPU ordinal (int >= 0)")
    checks.check_flag(check_inputs)
    ptrs = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "m_indptr": m_indptr, "out": out}
    for name, value in ptrs.items():
        if type(value) is not int or value < 0:
            raise TypeError(f"{name} must be a device address (int >= 0), got {value!r}")
    alpha = 0 if alpha is None else alpha
    if type(alpha) is not int or alpha < 0:
        raise TypeError(f"alpha must be a device address (int) or None, got {alpha!r}")
    sizes = plan.ptr_sizes
    checks.check_pointers({name: (ptr, sizes[name]) for name, ptr in ptrs.items()})
    if alpha:
        checks.check_pointers({"alpha": (alpha, num_groups)})
    handle = streams.resolve_stream(stream, ())
    ordinal = driver.pointer_device(a) if device is None else device
    kernel, launch_grid = plan.kernel(ordinal)
    p = plan.problem
    checked = flags.check if check_inputs is None else check_inputs
    if checked:
        indptr = _host_m_indptr(m_indptr, p.num_groups, ordinal, handle, explicit=check_inputs is True)
        if indptr is not None:
            check_m_indptr(indptr, p.cum_m, a_scale_nbytes, p.sf_k)
    if launch_grid[0] and launch_grid[1]:
        kernel.launch(launch_grid, handle, plan.args(a, b, a_scale, b_scale, m_indptr, alpha, out))



# ---------------------------------------------------------------------------------------------------
# the general path: any framework
# ---------------------------------------------------------------------------------------------------

def run_with_flags(flags: config.Flags, a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m=None, tile_n=None,
                   tile_k=None, swap_ab=None, out=None, out_dtype=None, *, stream=None, check_inputs=None):
    """``group_gemm_nvfp4_nt_groupwise`` under ``flags`` instead of the NVFP4_DRIVER_* variables (for
    ``selftest --twin``, which must not write the environment); always the general path."""
    return _call(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype, stream,
                 check_inputs, flags)


def _call(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype, stream,
          check_inputs, flags: config.Flags):
    checks.check_flag(check_inputs)
    # An explicit stream is resolved first: DLPack producers are told which stream we will read on.
    explicit = None if stream is None else streams.resolve_stream(stream, ())
    given = (a, b, a_scale, b_scale, m_indptr, alpha, out)
    # A repeated call with the same arrays replays its launch (launch_cache.py says why that is safe).
    cacheable = ((check_inputs is False or (check_inputs is None and not flags.check))
                 and plans.plain_tiles(tile_m, tile_n, tile_k, swap_ab))
    if cacheable:
        options = (tile_m, tile_n, tile_k, swap_ab, type(out_dtype), out_dtype, flags, explicit)
        cache_key, entry, dicts = launch_cache.lookup(given, options)
        if entry is not None:
            return launch_cache.replay(entry, given, explicit)
    else:
        dicts = None
    arrays = {}
    for i, (name, x) in enumerate(zip(plans.NAMES, given)):
        if dicts and dicts[i] is not None:  # the lookup read this CAI dict already: parse it, not a new one
            arrays[name] = tensors.from_cai(x, dicts[i], name)
        elif x is not None or name not in ("alpha", "out"):
            arrays[name] = tensors.as_device_array(x, name, stream=explicit)
    if _TorchTensor[0] is None and any(arr.framework == "torch" for arr in arrays.values()):
        _saw_torch()
        torch_hooks.ensure_registered()
    key = plans.meta_key(arrays, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags)
    plan = plans.array_plans.get(key) if key is not None else None
    if plan is None:
        plan = checks.make_plan(arrays, requested_tiles(tile_m, tile_n, tile_k, swap_ab), out_dtype, flags)
        if key is not None:
            plans.remember(plans.array_plans, key, plan)
    checks.check_pointers({name: (arr.ptr, arr.numel) for name, arr in arrays.items()})
    ordinal = _device_of(arrays)
    kernel, launch_grid = plan.kernel(ordinal)
    handle = explicit if explicit is not None else streams.resolve_stream(None, arrays)
    p = plan.problem
    checked = flags.check if check_inputs is None else check_inputs
    if checked:
        indptr = _host_m_indptr(arrays["m_indptr"].ptr, p.num_groups, ordinal, handle,
                                explicit=check_inputs is True)
        if indptr is not None:
            check_m_indptr(indptr, p.cum_m, plan.a_scale_nbytes, p.sf_k)
    A = arrays["a"]
    if out is None:
        out, out_arr = outputs.allocate(A, (p.cum_m, p.n), p.out_dtype, device=ordinal)
        if explicit is not None and out_arr.framework == "torch":
            _record_stream(out, explicit)
    else:
        out_arr = arrays["out"]
    if launch_grid[0] and launch_grid[1]:  # else: no rows or no groups, nothing to write
        alpha_ptr = arrays["alpha"].ptr if "alpha" in arrays else 0
        kernel.launch(launch_grid, handle, plan.args(A.ptr, arrays["b"].ptr, arrays["a_scale"].ptr,
                                                      arrays["b_scale"].ptr, arrays["m_indptr"].ptr, alpha_ptr,
                                                      out_arr.ptr))
    if out_arr.framework != "torch" and hasattr(out, "stream") and hasattr(out, "__dlpack__"):
        out.stream = handle  # a DeviceBuffer we allocated: consumers order themselves after this launch
    if cacheable:
        launch_cache.remember(cache_key, given, options, arrays, kernel, launch_grid, plan.tail, ordinal,
                              (p.cum_m, p.n), p.out_dtype, handle)
    if (not checked and (given[6] is not None or stream is None)
            and _torch_servable(given, tile_m, tile_n, tile_k, swap_ab)):
        plans.remember_torch(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags, plan, ordinal)
    return out


def _torch_servable(given, tile_m, tile_n, tile_k, swap_ab) -> bool:
    """Whether the torch fast path can serve this call's metadata next time."""
    T = _TorchTensor[0]
    return (T is not None and all(x is None or type(x) is T for x in given)
            and all(given[i] is not None for i in range(5)) and plans.plain_tiles(tile_m, tile_n, tile_k, swap_ab))


def _device_of(arrays: dict) -> int:
    """The one GPU of the call. Arrays whose framework does not say (CAI producers such as Numba, raw
    pointers) are asked of the driver, each of them: a kernel on one GPU must not touch another's memory."""
    known = {arr.device for arr in arrays.values() if arr.device is not None}
    unknown = [(name, arr) for name, arr in arrays.items() if arr.device is None and arr.numel]
    if not unknown:
        if known:
            return known.pop()  # check_same_device in checks.make_plan: at most one
        return driver.pointer_device(arrays["m_indptr"].ptr)  # everything empty but m_indptr
    owners = {name: _pointer_device(arr) for name, arr in unknown}
    for name, arr in arrays.items():
        if arr.device is not None:
            owners[name] = arr.device
    if len(set(owners.values())) > 1:
        items = [f"{n} on cuda:{d}" for n, d in owners.items()]
        raise ValueError(f"{items[0].replace(' on ', ' is on ', 1)} but {', '.join(items[1:])}; "
                         f"all arrays must be on one device")
    return next(iter(owners.values()))


_owners: dict = {}  # id(object) -> (weak reference to it, address, GPU): pointer_device's answers per object
_MAX_OWNERS = 4096


def _pointer_device(arr) -> int:
    """``driver.pointer_device(arr.ptr)`` (four driver calls), remembered per producer object: the same
    object, alive and at the same address, holds the same allocation, so on the same GPU. A new object at
    a reused address (an allocation freed and made again, perhaps on another GPU) is asked again: the
    weak reference must give back this very object. (A wrapper object that outlives its memory, then reports
    the same address reallocated on another GPU, would be answered from here: passing an array whose memory
    was freed is outside the contract of any launch.)"""
    obj, ptr = arr.obj, arr.ptr
    found = _owners.get(id(obj))
    if found is not None and found[1] == ptr and found[0]() is obj:
        return found[2]
    device = driver.pointer_device(ptr)
    try:
        ref = weakref.ref(obj)
    except TypeError:  # no weak references (None, a DeviceArray from raw pointers): asked every time
        return device
    if len(_owners) >= _MAX_OWNERS:
        _owners.clear()
    _owners[id(obj)] = (ref, ptr, device)
    return device


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
