"""Every environment variable the package reads, parsed in one place (prefix ``NVFP4_DRIVER_``).

- ``NVFP4_DRIVER_LOG=1``: print each variant decision (problem, GPU, kernel, target) to stderr, once
  per distinct decision.
- ``NVFP4_DRIVER_FORCE_PTX=1``: use the portable PTX (JIT-compiled by the driver) even where a cubin
  exists for the GPU; for testing the path that future GPUs take.
- ``NVFP4_DRIVER_TWIN=1``: on an sm_90 GPU, run the native Blackwell kernel's twin (its FP4 MMA
  replaced by a software model); for testing that kernel where no Blackwell GPU is at hand. The twin
  cubins are in a source checkout only, not in the wheel (``variants.CHECKOUT_ONLY_TARGETS``).
- ``NVFP4_DRIVER_PORTABLE=1``: on an sm_90 GPU, run the portable ``mma.sync`` kernel even for the
  cuts the Hopper ``wgmma`` kernel serves; for testing the portable kernel and comparing the two.
- ``NVFP4_DRIVER_CHECK=1``: every call runs as with ``check_inputs=True``: ``m_indptr`` is copied to
  the host and checked before the launch (a device-to-host copy and a stream synchronisation per
  call, which is why it is off by default).

The variables are read on every call, so a test (or a user) may change them between calls. A read
goes straight to the environment's dictionary: ``os.environ.get`` of an unset name costs about a
microsecond (it raises and catches a KeyError), four of them a tenth of the per-call budget.
"""
from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_TRUE_BYTES = {v.encode() for v in _TRUE}
_KEYS: dict[str, object] = {}  # variable name -> its key in os.environ._data (bytes on POSIX)


def _key(name: str):
    key = _KEYS.get(name)
    if key is None:
        encodekey = getattr(os.environ, "encodekey", None)
        key = _KEYS[name] = encodekey(name) if encodekey is not None else name
    return key


def _flag(name: str) -> bool:
    data = getattr(os.environ, "_data", None)
    if data is None:  # not CPython's os._Environ: the public, slower way
        return os.environ.get(name, "").strip().lower() in _TRUE
    value = data.get(_key(name))
    if value is None:
        return False
    if isinstance(value, bytes):
        return value.strip().lower() in _TRUE_BYTES
    return value.strip().lower() in _TRUE


def log_decisions() -> bool:
    return _flag("NVFP4_DRIVER_LOG")


def force_ptx() -> bool:
    return _flag("NVFP4_DRIVER_FORCE_PTX")


def twin() -> bool:
    return _flag("NVFP4_DRIVER_TWIN")


def portable() -> bool:
    return _flag("NVFP4_DRIVER_PORTABLE")


def check_inputs() -> bool:
    return _flag("NVFP4_DRIVER_CHECK")


_FLAG_NAMES = ("NVFP4_DRIVER_FORCE_PTX", "NVFP4_DRIVER_TWIN", "NVFP4_DRIVER_LOG", "NVFP4_DRIVER_CHECK",
               "NVFP4_DRIVER_PORTABLE")
_FLAG_KEYS = tuple(_key(name) for name in _FLAG_NAMES)
_ALL_FALSE = (False, False, False, False, False)


def launch_flags() -> tuple[bool, bool, bool, bool, bool]:
    """``(force_ptx, twin, log, check, portable)``: the variables one call depends on, read together.
    A plain tuple, not a NamedTuple: it is part of the per-call plan cache's key and built on every
    call, and the common case (none set) costs five dictionary misses."""
    data = getattr(os.environ, "_data", None)
    if data is not None:
        f, t, lg, c, pt = _FLAG_KEYS
        if f not in data and t not in data and lg not in data and c not in data and pt not in data:
            return _ALL_FALSE
    return tuple(_flag(name) for name in _FLAG_NAMES)
