"""Whole launches of the general path (CuPy, Numba, JAX, DeviceBuffer, DeviceArray), kept per call key.

The general path (``ops._call``) reads every argument through its protocol, builds a DeviceArray per
argument, looks the plan up, checks addresses and resolves the device: 25-60 µs of Python a call on an
H200 host, 5-11x the bare launch (docs/perf-notes.md, "Host cost per call for every framework"). A
repeated call with the same arrays can skip all of it: this module reads from each argument only the
values its DeviceArray was built from (a *key*, cheaper than the DeviceArray: attributes instead of a
protocol dict where the object is one we know: DeviceBuffer, CuPy, numba.cuda's device arrays), and
keeps, per tuple of keys and call options, the launch the general path made: kernel, grid and every
argument. A hit replays it.

Why a hit is safe:

- A key holds every value the general path's checks, plan and launch read from that argument (address,
  shape, strides, dtype, device, read-only flag, CAI stream), together with the object's type. Equal keys
  mean equal DeviceArrays, and the general path validated those.
- Where a producer does not say which GPU holds the memory (Numba and other CAI producers, JAX through
  its buffer pointer), the general path asked the driver, and a freed address can come back on another
  GPU. There the entry also holds a weak reference to the object and a hit needs the very same object,
  alive (so its memory is the same allocation). A new object at a reused address misses and is read again.
- JAX arrays are read with ``unsafe_buffer_pointer()`` (public, cheap, and raises once the array is
  deleted or donated). The first call went through DLPack, whose ``__dlpack__(stream=s)`` made ``s``
  wait for the array's producer; JAX arrays are immutable, so later launches on the same ``s`` need no
  new wait. The launch stream is part of the key: on another stream the first call's wait orders
  nothing, so that call takes DLPack again.
- Calls in the checked mode, with tile arguments of other types (128.0 == 128), or with any torch tensor
  never come here (torch has its own fast path in ``ops``).

Entries hold no strong reference to the caller's arrays. At most ``_MAX_ENTRIES`` are kept: the table is
cleared when full (a serving loop refills what it uses in one step).
"""
from __future__ import annotations

import sys
import weakref
from typing import Any

from . import outputs, streams
from .tensors import DeviceArray

_MAX_ENTRIES = 4096


class Entry:
    """One launch to replay: what ``ops._call`` computed for one call key."""

    __slots__ = ("launch", "grid", "args", "head", "tail", "like", "ordinal", "out_shape", "out_dtype", "stream",
                 "refs", "tag_out")

    def __init__(self, launch, grid, head, tail, out_ptr, like, ordinal, out_shape, out_dtype, stream, refs,
                 tag_out):
        self.launch = launch            # PreparedKernel.launch, or None when the grid is empty
        self.grid = grid
        self.head, self.tail = head, tail  # the six input addresses; the ABI's constants after out
        self.args = None if out_ptr is None else head + (out_ptr,) + tail  # all of them, when out is given
        self.like = like                # argument a without its object: the framework and device to allocate in
        self.ordinal = ordinal
        self.out_shape, self.out_dtype = out_shape, out_dtype
        self.stream = stream            # the default stream: an int, or None for "ask CuPy each call"
        self.refs = refs                # ((index, weakref), ...) of the arguments that must be the same objects
        self.tag_out = tag_out          # out is a DeviceBuffer: it remembers the stream that wrote it


_entries: dict = {}
_readers: dict = {}   # type -> (reader, needs identity); filled as the general path meets each type


def _buffer_key(x) -> tuple:
    # Our own DeviceBuffer: the attributes its __cuda_array_interface__ dict would be built from.
    return (x.ptr, x.shape, x.dtype.name, x.device, x.stream)


def _cupy_key(x) -> tuple:
    data = x.data  # cupy.cuda.MemoryPointer: the address and its GPU, no dict, no Device object
    return (data.ptr, data.device_id, x.shape, x.strides, x.dtype)


def _numba_key(x) -> tuple:
    # numba.cuda's DeviceNDArray: the attributes its __cuda_array_interface__ property builds the dict
    # from (the dict costs ~2.4 us a read on the H200 host: a contiguity walk and a stream conversion per
    # access). All are plain attributes a caller could reassign, so all are read, never trusted: the
    # address (gpu_data may be replaced), shape, strides, dtype, and the stream as the int the dict would
    # hold (the object itself would keep the stream alive here). The address is the int of the pointer
    # object's device_pointer, from which numba's device_ctypes_pointer builds a ctypes value per access
    # (0.6 of the 0.7 us this read took that way; _is_numba_array checks that both agree).
    stream = x.stream
    return (int(x.gpu_data.device_pointer), x.shape, x.strides, x.dtype, int(stream) if stream != 0 else None)


def _is_numba_array(x) -> bool:
    """``x``'s class is numba.cuda's device array class, or a subclass that keeps its
    ``__cuda_array_interface__`` (what _numba_key reads is then what that property reads), and ``x``'s
    address reads the same both ways (numba-cuda's pointer objects; older numba's ctypes pointers take
    the CAI dict instead)."""
    cls = type(x)
    for base in cls.__mro__:
        if base.__name__ == "DeviceNDArrayBase" and base.__module__.startswith(("numba.", "numba_cuda.")):
            cai = base.__dict__.get("__cuda_array_interface__")
            if cai is None or getattr(cls, "__cuda_array_interface__", None) is not cai:
                return False
            try:
                return int(x.gpu_data.device_pointer) == (x.device_ctypes_pointer.value or 0)
            except (AttributeError, TypeError, ValueError):  # int() of a ctypes value raises either
                return False
    return False


def _cai_key(x):
    return _cai_values(x.__cuda_array_interface__)  # built per access by most producers: see call_key


def _cai_values(cai):
    typestr = cai["typestr"]
    if typestr[1] == "V":  # the dtype comes from x.dtype, not from the dict: no key
        return None
    return (typestr, cai["data"], cai["shape"], cai.get("strides"), cai.get("stream"), cai.get("mask"))


def _jax_key(x) -> tuple:
    return (x.unsafe_buffer_pointer(), x.shape, x.dtype)


def _array_key(x):
    return x if x.device is not None else None  # a DeviceArray: hashable; without a device, no identity to hold


def learn(x, arr: DeviceArray) -> None:
    """Note how to key objects of ``x``'s type, from the DeviceArray the general path built for ``x``."""
    cls = type(x)
    if cls in _readers or arr.framework == "torch":  # torch: the fast path in ops, never this table
        return
    module = cls.__module__
    if cls is DeviceArray:
        _readers[cls] = (_array_key, False)
    elif module == "nvfp4_driver.devmem" and cls.__name__ == "DeviceBuffer":
        _readers[cls] = (_buffer_key, False)
    elif arr.framework == "cupy" and cls is getattr(sys.modules.get("cupy"), "ndarray", None):
        _readers[cls] = (_cupy_key, False)
    elif module.startswith(("jax", "jaxlib")) and hasattr(x, "unsafe_buffer_pointer"):
        _readers[cls] = (_jax_key, True)
    elif arr.framework == "cai" and arr.device is None and _is_numba_array(x):
        _readers[cls] = (_numba_key, True)
    elif arr.framework == "cai" and arr.device is None:
        _readers[cls] = (_cai_key, True)


def call_key(given: tuple, options: tuple, dicts: list | None = None):
    """The cache key of one call (its seven arguments, ``None`` for absent ones), or None where some
    argument has no reader (torch tensors, bare DLPack producers, a type not seen yet). ``dicts``, when
    given, receives each argument's ``__cuda_array_interface__`` dict where one was read (else None):
    on a miss the general path parses those instead of asking the producer to build them again."""
    keys = []
    for x in given:
        if x is None:
            keys.append(None)
            if dicts is not None:
                dicts.append(None)
            continue
        found = _readers.get(type(x))
        if found is None:
            return None
        reader = found[0]
        if reader is _cai_key:
            cai = x.__cuda_array_interface__
            key = _cai_values(cai)
            if dicts is not None:
                dicts.append(cai)
        else:
            key = reader(x)
            if dicts is not None:
                dicts.append(None)
        if key is None:
            return None
        keys.append(key)
    return (tuple(keys), options)


def lookup(given: tuple, options: tuple) -> tuple:
    """(the call's key, the entry to replay or None, the CAI dicts read per argument or None). The key
    is None where the call cannot be cached (see :func:`call_key`) or an argument could not be read:
    the general path reads it again and words any refusal (a deleted JAX array raises here, and again
    there)."""
    dicts: list = []
    try:
        key = call_key(given, options, dicts)
        entry = _entries.get(key) if key is not None else None
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError):
        return None, None, None
    if key is None:
        return None, None, None
    if entry is not None:
        for index, ref in entry.refs:
            if ref() is not given[index]:
                return key, None, dicts
    return key, entry, dicts


def replay(entry: Entry, given: tuple, explicit: int | None):
    """Launch ``entry`` (from :func:`lookup`) for this call's arguments; return its ``out``."""
    if explicit is not None:
        handle = explicit
    elif entry.stream is not None:
        handle = entry.stream
    else:
        handle = streams.resolve_stream(None, (entry.like,))  # CuPy's current stream, asked per call
    out = given[6]
    if out is None:
        out, out_arr = outputs.allocate(entry.like, entry.out_shape, entry.out_dtype, device=entry.ordinal)
        args = entry.head + (out_arr.ptr,) + entry.tail
    else:
        args = entry.args
    if entry.launch is not None:
        entry.launch(entry.grid, handle, args)
    if entry.tag_out or (given[6] is None and entry.like.framework != "cupy"):
        out.stream = handle
    return out


def remember(key, given: tuple, options: tuple, arrays: dict, kernel, grid, tail: tuple, ordinal: int,
             out_shape: tuple, out_dtype: str, default_stream: int) -> None:
    """Keep the launch ``ops._call`` just made under ``key`` (from :func:`lookup` before the call; None
    when some argument's type had no reader yet). ``arrays``: the call's DeviceArrays by name."""
    out = given[6]
    tag_out = out is not None and arrays["out"].framework != "torch" and hasattr(out, "stream") \
        and hasattr(out, "__dlpack__")
    if key is None:
        for x, name in zip(given, ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha", "out")):
            if x is not None:
                learn(x, arrays[name])
    try:
        if key is None or tag_out:  # tag_out: the call just wrote out.stream, which its key holds
            key = call_key(given, options)
            if key is None:
                return
            hash(key)
        refs = tuple((i, weakref.ref(x)) for i, x in enumerate(given)
                     if x is not None and _readers[type(x)][1])
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError):
        return  # unhashable, or an object that takes no weak reference: never cached
    A = arrays["a"]
    head = tuple(arrays[n].ptr if n in arrays else 0 for n in ("a", "b", "a_scale", "b_scale", "m_indptr",
                                                               "alpha"))
    out_ptr = arrays["out"].ptr if out is not None else None
    like = A._replace(obj=None, keepalive=None)
    stream = None if A.framework == "cupy" else default_stream
    entry = Entry(kernel.launch if grid[0] and grid[1] else None, grid, head, tail, out_ptr, like, ordinal,
                  out_shape, out_dtype, stream, refs, tag_out)
    if len(_entries) >= _MAX_ENTRIES:
        _entries.clear()
    _entries[key] = entry


def clear() -> None:
    _entries.clear()


def describe(x: Any) -> str:
    """Which reader keys ``x`` (for tests and the CPU profile)."""
    found = _readers.get(type(x))
    return "none" if found is None else found[0].__name__.strip("_")
