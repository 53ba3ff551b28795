"""dtype names: the one spelling the package compares against, and every way a caller may write one.

A caller's dtype (a torch dtype, a numpy dtype or type, an ml_dtypes type, a numpy typestr, or a
name such as ``"bf16"``) becomes a canonical name here; nothing else in the package keeps a table
of dtypes. Nothing here imports torch: the torch table is built from an already-imported torch.
"""
from __future__ import annotations

import sys
from typing import Any

# Canonical dtype name -> bytes per element. float4_e2m1fn_x2 is torch's packed pair (one byte, two codes).
ITEMSIZE: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "float8_e4m3fn": 1, "float4_e2m1fn_x2": 1,
    "uint16": 2, "int16": 2, "float16": 2, "bfloat16": 2,
    "uint32": 4, "int32": 4, "float32": 4,
    "uint64": 8, "int64": 8, "float64": 8,
}
# Short names callers write (FlashInfer's "bf16", torch's "half") -> canonical name.
ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}

OUT_DTYPES = ("bfloat16", "float16")  # what the GEMM writes
# dtypes whose bytes are read as packed e2m1 pairs / ue4m3 scales: FlashInfer passes uint8, and
# torch's packed fp4 and fp8 types view the same bytes.
PACKED_DTYPES = ("uint8", "int8", "float4_e2m1fn_x2")
SCALE_DTYPES = ("uint8", "int8", "float8_e4m3fn")

# (kind, itemsize) of a numpy typestr -> canonical name. 'V' (void) is handled by typestr_name.
_TYPESTR: dict[tuple[str, int], str] = {
    ("b", 1): "bool",
    ("u", 1): "uint8", ("u", 2): "uint16", ("u", 4): "uint32", ("u", 8): "uint64",
    ("i", 1): "int8", ("i", 2): "int16", ("i", 4): "int32", ("i", 8): "int64",
    ("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64",
}
TORCH_DTYPES: dict[Any, str] = {}  # torch dtype -> canonical name, filled by torch_table()
_OUT_ACCEPTED = ("torch.bfloat16, torch.float16, 'bfloat16', 'bf16', 'float16', 'fp16', 'half', "
                 "numpy.float16, ml_dtypes.bfloat16 (jax.numpy.bfloat16/float16)")


def torch_table() -> dict[Any, str]:
    """torch dtype -> canonical name, built on first use from the imported torch (getattr: older
    torch builds lack some of these dtypes)."""
    if not TORCH_DTYPES:
        torch = sys.modules["torch"]
        for canon in ITEMSIZE:
            dt = getattr(torch, canon, None)
            if dt is not None:
                TORCH_DTYPES[dt] = canon
    return TORCH_DTYPES


def typestr_name(typestr: Any, x: Any, name: str) -> str:
    """Canonical name of a numpy array-interface typestr ('|u1', '<f2', ...).

    bfloat16 and fp8 have no typestr of their own: ml_dtypes (what CuPy uses for bfloat16)
    reports them as raw bytes, '<V2' / '|V1', with an uninformative descr. We accept a 'V'
    typestr only when the object's own ``.dtype`` names an ml_dtypes type of that size;
    a bare '<V2' is refused, since it may just as well be a 2-byte struct.
    """
    if not isinstance(typestr, str) or len(typestr) < 3 or not typestr[2:].isdigit():
        raise ValueError(f"{name}.__cuda_array_interface__['typestr']={typestr!r} is not a "
                         f"numpy typestr such as '|u1' or '<f2'")
    order, kind, size = typestr[0], typestr[1], int(typestr[2:])
    if order == ">" and size > 1:
        raise ValueError(f"{name} is big-endian (typestr {typestr!r}); GPUs are little-endian")
    if kind == "V":
        dt_name = str(getattr(getattr(x, "dtype", None), "name", ""))
        if dt_name in ("bfloat16", "float8_e4m3fn") and ITEMSIZE[dt_name] == size:
            return dt_name
        raise TypeError(f"{name} has typestr {typestr!r} (raw bytes) and dtype "
                        f"{dt_name or 'unknown'}; only ml_dtypes bfloat16/float8_e4m3fn arrays "
                        f"are read from a 'V' typestr")
    canon = _TYPESTR.get((kind, size))
    if canon is None:
        raise TypeError(f"{name} has typestr {typestr!r}, which nvfp4_driver does not support "
                        f"(supported: {', '.join(ITEMSIZE)})")
    return canon


def dtype_name(x: Any) -> str:
    """Canonical dtype name of a canonical string, a torch dtype, a numpy dtype-like (numpy
    type, numpy.dtype, ml_dtypes type) or a numpy typestr ('<f2'). TypeError otherwise."""
    if isinstance(x, str):
        if x in ITEMSIZE:
            return x
        if len(x) >= 3 and x[0] in "<>|=" and x[2:].isdigit():
            return typestr_name(x, None, "dtype")
        raise TypeError(f"dtype {x!r} is not one of {', '.join(ITEMSIZE)}")
    if type(x).__module__.startswith("torch"):
        canon = torch_table().get(x)
        if canon is None:
            raise TypeError(f"torch dtype {x} has no counterpart in nvfp4_driver")
        return canon
    if x is None:
        raise TypeError("dtype is None")
    import numpy
    try:
        dt = numpy.dtype(x)
    except TypeError as e:
        raise TypeError(f"{x!r} ({type(x).__name__}) is not a dtype") from e
    if dt.name in ITEMSIZE:
        return dt.name
    raise TypeError(f"dtype {dt} is not one of {', '.join(ITEMSIZE)}")


def name_or_alias(value: Any) -> str | None:
    """The canonical name of a dtype or an alias ('bf16', 'half', ...); None where it is neither.
    Case does not matter in a string; a bool or number is never a dtype (numpy would read some)."""
    if isinstance(value, str):
        low = value.lower()
        return ALIASES.get(low) or (low if low in ITEMSIZE else None)
    if value is None or isinstance(value, (bool, int, float)):
        return None  # numpy.dtype(None) would be float64; None has no meaning here
    try:
        return dtype_name(value)
    except TypeError:
        return None


def canonical_out_dtype(value: Any) -> str:
    """'bfloat16' or 'float16' for a user's out_dtype; ValueError listing what is accepted."""
    canon = name_or_alias(value)
    if canon not in OUT_DTYPES:
        raise ValueError(f"out_dtype={value!r} is not supported; accepted: {_OUT_ACCEPTED}")
    return canon
