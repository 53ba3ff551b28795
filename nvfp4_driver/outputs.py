"""Outputs the caller did not pass: allocated in the inputs' framework, on their device."""
from __future__ import annotations

import sys
from typing import Any

from .dtypes import dtype_name
from .tensors import DeviceArray, as_device_array


def allocate(like: DeviceArray, shape: tuple[int, ...], dtype: str, *,
             device: int | None = None) -> tuple[Any, DeviceArray]:
    """Allocate an uninitialized C-contiguous array in `like`'s framework and on its device.

    Returns (the framework's object, its DeviceArray). torch and CuPy inputs get a torch tensor or
    a CuPy array. For every other framework (JAX, Numba, other DLPack/CAI producers, raw pointers):
    with ``device`` (a GPU ordinal) a :class:`nvfp4_driver.devmem.DeviceBuffer` on that GPU, which
    exposes ``__cuda_array_interface__`` and ``__dlpack__`` (``jax.numpy.from_dlpack(out)``,
    ``numba.cuda.as_cuda_array(out)``, ``torch.from_dlpack(out)`` take it without a copy); without
    ``device``, a TypeError asking for ``out=``. CuPy has bfloat16 only through ml_dtypes (recent
    CuPy); where it is missing, a TypeError says to pass out= or use float16.
    """
    canon = dtype_name(dtype)
    shape = tuple(int(s) for s in shape)
    if like.framework == "torch":
        torch = sys.modules.get("torch")
        if torch is None:
            import torch
        out = torch.empty(shape, dtype=getattr(torch, canon), device=like.obj.device)
        return out, as_device_array(out, "out")
    if like.framework == "cupy":
        cupy = sys.modules.get("cupy")
        if cupy is None:
            import cupy
        device = like.device if like.device is not None else like.obj.device.id
        if canon == "bfloat16":
            try:
                import ml_dtypes
                np_dtype = ml_dtypes.bfloat16
                with cupy.cuda.Device(device):
                    out = cupy.empty(shape, dtype=np_dtype)
            except (ImportError, TypeError, ValueError, NotImplementedError) as e:
                raise TypeError(
                    f"cannot allocate a bfloat16 output with CuPy ({type(e).__name__}: {e}): "
                    f"this CuPy has no bfloat16; pass out= (a CUDA bfloat16 array, e.g. from "
                    f"torch) or out_dtype='float16'") from e
        else:
            import numpy
            with cupy.cuda.Device(device):
                out = cupy.empty(shape, dtype=numpy.dtype(canon))
        return out, as_device_array(out, "out")
    if device is not None:
        from .devmem import DeviceBuffer

        buf = DeviceBuffer(shape, canon, device)
        arr = as_device_array(buf, "out")
        return buf, arr._replace(device=device)
    raise TypeError(f"cannot allocate the output for {like.framework} inputs; pass out= "
                    f"(a C-contiguous CUDA array of shape {shape} and dtype {canon})")
