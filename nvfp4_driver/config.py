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

The variables are read on every call (:func:`flags`), so a test (or a user) may change them between
calls; code that wants other settings (``selftest --twin``) passes a :class:`Flags` of its own.
"""
from __future__ import annotations

import os
from typing import NamedTuple


class Flags(NamedTuple):
    """The settings one call depends on. A tuple: it is part of the per-call plan cache's key."""

    force_ptx: bool = False
    twin: bool = False
    log: bool = False
    check: bool = False
    portable: bool = False


_VARIABLES = Flags("NVFP4_DRIVER_FORCE_PTX", "NVFP4_DRIVER_TWIN", "NVFP4_DRIVER_LOG", "NVFP4_DRIVER_CHECK",
                   "NVFP4_DRIVER_PORTABLE")  # each field's variable
FLAG_NAMES = tuple(_VARIABLES)
_TRUE = {"1", "true", "yes", "on"}
_DEFAULTS = Flags()


# The one speed trick of this module. flags() runs on every call of every entry point, the torch
# fast path included. os.environ.get of an unset name raises and catches a KeyError inside the
# Mapping protocol: five of them measured 5.4 us (CPython 3.11, 2026-12-03), a quarter of the whole
# torch call, against 0.18 us for five misses in the dictionary behind os.environ. So the misses go
# to that dictionary (keys as os.environ encodes them); any hit, and any os.environ that is not
# CPython's, takes the public way.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
_encodekey = getattr(os.environ, "encodekey", None)
_KEYS = tuple(_encodekey(name) if _encodekey is not None else name for name in FLAG_NAMES)


def flags() -> Flags:
    """The NVFP4_DRIVER_* settings now: the one place they are read."""
    data = _ENVIRON_DATA
    if data is not None:
        f, t, lg, c, pt = _KEYS
        if f not in data and t not in data and lg not in data and c not in data and pt not in data:
            return _DEFAULTS
    return Flags(*(os.environ.get(name, "").strip().lower() in _TRUE for name in FLAG_NAMES))
