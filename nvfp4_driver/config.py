"""Every environment variable the package reads, parsed in one place (prefix ``NVFP4_DRIVER_``).

- ``NVFP4_DRIVER_LOG=1``: print each variant decision (problem, GPU, kernel, target) to stderr, once
  per distinct decision.
- ``NVFP4_DRIVER_FORCE_PTX=1``: use the portable PTX (JIT-compiled by the driver) even where a cubin
  exists for the GPU; for testing the path that future GPUs take.
- ``NVFP4_DRIVER_TWIN=1``: on an sm_90 GPU, run the native Blackwell kernel's twin (its FP4 MMA
  replaced by a software model); for testing that kernel where no Blackwell GPU is at hand.
"""
from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def log_decisions() -> bool:
    return _flag("NVFP4_DRIVER_LOG")


def force_ptx() -> bool:
    return _flag("NVFP4_DRIVER_FORCE_PTX")


def twin() -> bool:
    return _flag("NVFP4_DRIVER_TWIN")
