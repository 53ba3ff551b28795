"""The public functions as ``torch.library`` custom ops, so ``torch.compile`` can trace models that call them.

Importing this module imports torch and registers, once per process (``nvfp4_driver.torch_hooks``
does it as soon as torch and nvfp4_driver are both imported, in either order):

- ``torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha=None,
  tile_m=None, tile_n=None, tile_k=None, swap_ab=None, out_dtype=None) -> Tensor``: allocates ``out``;
- ``torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out(a, b, a_scale, b_scale, m_indptr, alpha,
  out, tile_m=None, tile_n=None, tile_k=None, swap_ab=None) -> ()``: writes ``out`` (declared mutated).
  (None tiles: the automatic cut, as in the public function.)
- ``quantize_activations(x, m_indptr, global_scale) -> (a, a_scale)``,
  ``quantize_weights(w, global_scale) -> (b, b_scale)``,
  ``dequantize(q, q_scale, m_indptr=None, global_scale=None, out_dtype=torch.bfloat16) -> Tensor``,
  ``global_scale_from_amax(x, m_indptr=None, per_group=True) -> Tensor``,
  ``alpha_from_global_scales(gsf_a, gsf_b) -> Tensor``,
  ``silu_mul_quantize_activations(gate_up, m_indptr, global_scale) -> (a, a_scale)`` and
  ``silu_mul_global_scale_from_amax(gate_up, m_indptr=None, per_group=True) -> Tensor``:
  ``nvfp4_driver.quantize``'s functions, with the global scales as float32 tensors.

Each has a fake implementation (shapes and dtypes only, no memory touched), which is what dynamo and
AOTAutograd run while tracing. The public functions hand calls made under ``torch.compile`` to these
ops (``compile_hooks``), so a model may call either. Under ``torch.compile`` the stream is the
compiler's (``stream=`` is refused) and the GEMM's checked mode is not available (it synchronises).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import ops, quantize
from .dtypes import canonical_out_dtype
from .layout import SF_ROW_TILE, SF_VEC


# The two GEMM ops are defined through torch.library.Library rather than torch.library.custom_op:
# custom_op's eager dispatch runs a Python autograd kernel, an ADInplaceOrView kernel (the _out form)
# and a backend wrapper (an output-alias check, a dynamo guard) before the body: 18 and 65 us a call
# against 5 and 4 for a Python kernel registered straight on the backend key (no-op body, CPU tensors;
# docs/perf-notes.md, "The GEMM ops defined with torch.library.Library"). The ops carry no gradient
# (codes, scales, indices in; a fresh or caller-owned output), so autograd falls through; the fake kernel
# serves Meta, FakeTensor and tracing.
_LIB = torch.library.Library("nvfp4_driver", "FRAGMENT")
_LIB.define("group_gemm_nvfp4_nt_groupwise(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, Tensor m_indptr, "
            "Tensor? alpha=None, SymInt? tile_m=None, SymInt? tile_n=None, SymInt? tile_k=None, "
            "bool? swap_ab=None, ScalarType? out_dtype=None) -> Tensor")
_LIB.define("group_gemm_nvfp4_nt_groupwise_out(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, "
            "Tensor m_indptr, Tensor? alpha, Tensor(a6!) out, SymInt? tile_m=None, SymInt? tile_n=None, "
            "SymInt? tile_k=None, bool? swap_ab=None) -> ()")


def _gemm(a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m=None, tile_n=None, tile_k=None, swap_ab=None,
          out_dtype=None):
    """``nvfp4_driver.group_gemm_nvfp4_nt_groupwise`` with a fresh ``(cum_m, N)`` output (see there)."""
    return ops.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k,
                                             swap_ab, out_dtype=out_dtype)


def _gemm_out(a, b, a_scale, b_scale, m_indptr, alpha, out, tile_m=None, tile_n=None, tile_k=None, swap_ab=None):
    """``nvfp4_driver.group_gemm_nvfp4_nt_groupwise`` into the caller's ``out`` (see there)."""
    ops.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab,
                                      out=out)
    # What an ADInplaceOrView kernel would do, without a second trip through the dispatcher: autograd must
    # see that out changed (a graph that saved it then refuses to backpropagate). Inference tensors have no
    # version counter (torch releases before 2.13 may refuse the bump) and the dispatcher skips them too.
    if not out.is_inference():
        _increment_version(out)


_increment_version = torch.autograd.graph.increment_version
for _name, _body in (("group_gemm_nvfp4_nt_groupwise", _gemm), ("group_gemm_nvfp4_nt_groupwise_out", _gemm_out)):
    _LIB.impl(_name, _body, "CUDA")
    _LIB.impl(_name, torch.library.fallthrough_kernel, "Autograd")


@torch.library.register_fake("nvfp4_driver::group_gemm_nvfp4_nt_groupwise", lib=_LIB)
def _(a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m=None, tile_n=None, tile_k=None, swap_ab=None,
      out_dtype=None):
    _check_shapes(a, b, m_indptr)
    return a.new_empty((a.shape[0], b.shape[1]), dtype=out_dtype or torch.bfloat16)


@torch.library.register_fake("nvfp4_driver::group_gemm_nvfp4_nt_groupwise_out", lib=_LIB)
def _(a, b, a_scale, b_scale, m_indptr, alpha, out, tile_m=None, tile_n=None, tile_k=None, swap_ab=None):
    _check_shapes(a, b, m_indptr)
    if out.dim() != 2 or out.shape[1] != b.shape[1]:
        raise ValueError(f"out.shape={tuple(out.shape)} but (cum_m, N) with N={b.shape[1]} is required")


def _check_shapes(a, b, m_indptr) -> None:
    """What tracing can check without values: the ranks and the sizes shared between operands (the
    real call checks everything else before its launch)."""
    if a.dim() != 2 or b.dim() != 3 or m_indptr.dim() != 1:
        raise ValueError(f"a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}, m_indptr.shape="
                         f"{tuple(m_indptr.shape)} but (cum_m, K/2), (G, N, K/2), (G+1,) are required")
    if b.shape[2] != a.shape[1]:
        raise ValueError(f"b.shape={tuple(b.shape)} but K/2={a.shape[1]} from a.shape={tuple(a.shape)}")


def traced_gemm(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype, stream,
                check_inputs):
    """The public function's body while torch.compile traces it: one of the two ops above."""
    if stream is not None or check_inputs:
        raise ValueError(f"stream={stream!r} and check_inputs={check_inputs!r} are not available under "
                         f"torch.compile: the compiled graph chooses the stream, and the checked mode "
                         f"synchronises; call outside the compiled region for them")
    if isinstance(out_dtype, str):
        out_dtype = getattr(torch, canonical_out_dtype(out_dtype))
    if out is None:
        return torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(
            a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out_dtype)
    if out_dtype is not None and out_dtype != out.dtype:
        raise ValueError(f"out.dtype={out.dtype} but out_dtype={out_dtype}")
    torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out(a, b, a_scale, b_scale, m_indptr, alpha, out, tile_m,
                                                             tile_n, tile_k, swap_ab)
    return out



# ---------------------------------------------------------------------------------------------------
# the quantizers
# ---------------------------------------------------------------------------------------------------


@torch.library.custom_op("nvfp4_driver::quantize_activations", mutates_args=())
def quantize_activations(x: torch.Tensor, m_indptr: torch.Tensor,
                         global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nvfp4_driver.quantize.quantize_activations`` (see there): ``(a, a_scale)``."""
    return quantize.quantize_activations(x, m_indptr, global_scale)


@quantize_activations.register_fake
def _(x, m_indptr, global_scale):
    rows, k = _unquantized_shape(x, (2,))
    groups = _groups(m_indptr)
    _check_global_scale(global_scale, groups)
    # layout.a_scale_rows_upper_bound, written out: it must take symbolic sizes too.
    sf_rows = (rows + (SF_ROW_TILE - 1) * groups) // SF_ROW_TILE * SF_ROW_TILE
    return x.new_empty((rows, k // 2), dtype=torch.uint8), x.new_empty((sf_rows, k // SF_VEC), dtype=torch.uint8)


@torch.library.custom_op("nvfp4_driver::quantize_weights", mutates_args=())
def quantize_weights(w: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nvfp4_driver.quantize.quantize_weights`` (see there): ``(b, b_scale)``."""
    return quantize.quantize_weights(w, global_scale)


@quantize_weights.register_fake
def _(w, global_scale):
    groups, n, k = _unquantized_shape(w, (3,))
    _check_global_scale(global_scale, groups)
    n_pad = (n + SF_ROW_TILE - 1) // SF_ROW_TILE * SF_ROW_TILE
    return (w.new_empty((groups, n, k // 2), dtype=torch.uint8),
            w.new_empty((groups, n_pad, k // SF_VEC), dtype=torch.uint8))


@torch.library.custom_op("nvfp4_driver::dequantize", mutates_args=())
def dequantize(q: torch.Tensor, q_scale: torch.Tensor, m_indptr: Optional[torch.Tensor] = None,
               global_scale: Optional[torch.Tensor] = None, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """``nvfp4_driver.quantize.dequantize`` (see there)."""
    return quantize.dequantize(q, q_scale, m_indptr, global_scale, out_dtype=out_dtype)


@dequantize.register_fake
def _(q, q_scale, m_indptr=None, global_scale=None, out_dtype=torch.bfloat16):
    if q.dim() not in (2, 3) or (q.dim() == 2) != (m_indptr is not None):
        raise ValueError(f"q.shape={tuple(q.shape)} with m_indptr {'given' if m_indptr is not None else 'None'}: "
                         f"2-D activations need m_indptr, 3-D weights take None")
    _check_k(2 * q.shape[-1], "2 * q.shape[-1]")
    if global_scale is not None:
        _check_global_scale(global_scale, q.shape[0] if m_indptr is None else _groups(m_indptr))
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"out_dtype={out_dtype} must be torch.bfloat16, torch.float16 or torch.float32")
    return q.new_empty((*q.shape[:-1], 2 * q.shape[-1]), dtype=out_dtype)


@torch.library.custom_op("nvfp4_driver::global_scale_from_amax", mutates_args=())
def global_scale_from_amax(x: torch.Tensor, m_indptr: Optional[torch.Tensor] = None,
                           per_group: bool = True) -> torch.Tensor:
    """``nvfp4_driver.quantize.global_scale_from_amax`` (see there)."""
    return quantize.global_scale_from_amax(x, m_indptr, per_group=per_group)


@global_scale_from_amax.register_fake
def _(x, m_indptr=None, per_group=True):
    shape = _unquantized_shape(x, (2, 3))
    if len(shape) == 3 and m_indptr is not None:
        raise ValueError("m_indptr must be None for 3-D x (weights, (G, N, K)); groups are its first dimension")
    groups = shape[0] if len(shape) == 3 else (None if m_indptr is None else _groups(m_indptr))
    return x.new_empty((groups if per_group and groups is not None else 1,), dtype=torch.float32)


@torch.library.custom_op("nvfp4_driver::alpha_from_global_scales", mutates_args=())
def alpha_from_global_scales(gsf_a: torch.Tensor, gsf_b: torch.Tensor) -> torch.Tensor:
    """``nvfp4_driver.quantize.alpha_from_global_scales`` (see there)."""
    return quantize.alpha_from_global_scales(gsf_a, gsf_b)


@alpha_from_global_scales.register_fake
def _(gsf_a, gsf_b):
    for name, t in (("gsf_a", gsf_a), ("gsf_b", gsf_b)):
        if t.dtype != torch.float32 or t.dim() > 1 or t.numel() == 0:
            raise ValueError(f"{name} (shape {tuple(t.shape)}, {t.dtype}) must be float32 of shape (), (1,) or (G,)")
    if gsf_a.numel() != 1 and gsf_b.numel() != 1 and gsf_a.numel() != gsf_b.numel():
        raise ValueError(f"gsf_a has {gsf_a.numel()} values but gsf_b has {gsf_b.numel()}; each must be 1 or G")
    return gsf_a.new_empty((gsf_b.numel() if gsf_a.numel() == 1 else gsf_a.numel(),))


@torch.library.custom_op("nvfp4_driver::silu_mul_quantize_activations", mutates_args=())
def silu_mul_quantize_activations(gate_up: torch.Tensor, m_indptr: Optional[torch.Tensor],
                                  global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nvfp4_driver.quantize.silu_mul_quantize_activations`` (see there): ``(a, a_scale)`` of silu(gate) * up."""
    return quantize.silu_mul_quantize_activations(gate_up, m_indptr, global_scale)


@silu_mul_quantize_activations.register_fake
def _(gate_up, m_indptr, global_scale):
    rows, k = _gate_up_shape(gate_up)
    groups = 1 if m_indptr is None else _groups(m_indptr)
    _check_global_scale(global_scale, groups)
    sf_rows = (rows + (SF_ROW_TILE - 1) * groups) // SF_ROW_TILE * SF_ROW_TILE  # as for quantize_activations
    return (gate_up.new_empty((rows, k // 2), dtype=torch.uint8),
            gate_up.new_empty((sf_rows, k // SF_VEC), dtype=torch.uint8))


@torch.library.custom_op("nvfp4_driver::silu_mul_global_scale_from_amax", mutates_args=())
def silu_mul_global_scale_from_amax(gate_up: torch.Tensor, m_indptr: Optional[torch.Tensor] = None,
                                    per_group: bool = True) -> torch.Tensor:
    """``nvfp4_driver.quantize.silu_mul_global_scale_from_amax`` (see there)."""
    return quantize.silu_mul_global_scale_from_amax(gate_up, m_indptr, per_group=per_group)


@silu_mul_global_scale_from_amax.register_fake
def _(gate_up, m_indptr=None, per_group=True):
    _gate_up_shape(gate_up)
    groups = None if m_indptr is None else _groups(m_indptr)
    return gate_up.new_empty((groups if per_group and groups is not None else 1,), dtype=torch.float32)


def _gate_up_shape(gate_up) -> tuple:
    """(rows, K) of a (rows, 2K) gate/up input, refused as the real op refuses it."""
    if gate_up.dtype not in (torch.bfloat16, torch.float16) or gate_up.dim() != 2 or gate_up.shape[1] % 2:
        raise ValueError(f"gate_up (shape {tuple(gate_up.shape)}, {gate_up.dtype}) must be (rows, 2K) bfloat16 "
                         f"or float16")
    k = gate_up.shape[1] // 2
    _check_k(k, "gate_up.shape[1] / 2")
    _check_k(2 * k, "gate_up.shape[1]")
    return gate_up.shape[0], k


def _unquantized_shape(x, ndims: tuple[int, ...]) -> tuple:
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32) or x.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"x (shape {tuple(x.shape)}, {x.dtype}) must be {want} bfloat16, float16 or float32")
    _check_k(x.shape[-1], f"x.shape[{x.dim() - 1}]")
    return tuple(x.shape)


_check_k = quantize._check_k  # the real op's K rule, bound included: a fake must refuse what it refuses


def _groups(m_indptr):
    if m_indptr.dtype != torch.int32 or m_indptr.dim() != 1 or m_indptr.shape[0] < 1:
        raise ValueError(f"m_indptr (shape {tuple(m_indptr.shape)}, {m_indptr.dtype}) must be (G+1,) int32")
    return m_indptr.shape[0] - 1


def _check_global_scale(global_scale, groups) -> None:
    if global_scale.dtype != torch.float32 or global_scale.numel() not in (1, groups):
        raise ValueError(f"global_scale (shape {tuple(global_scale.shape)}, {global_scale.dtype}) must be float32 "
                         f"with one value or one per group, (G,) = ({groups},)")


# ---------------------------------------------------------------------------------------------------
# what the public functions call while torch.compile traces them
# ---------------------------------------------------------------------------------------------------


def _no_stream(stream) -> None:
    if stream is not None:
        raise ValueError(f"stream={stream!r} is not available under torch.compile: the compiled graph chooses "
                         f"the stream; call outside the compiled region for it")


def _scale_tensor(global_scale, like: torch.Tensor, name: str = "global_scale"):
    """A Python float global scale becomes a float32 tensor (checked here, at trace time)."""
    if global_scale is None or isinstance(global_scale, torch.Tensor):
        return global_scale
    value = quantize.check_scalar_global_scale(float(global_scale), name)
    return torch.full((1,), value, dtype=torch.float32, device=like.device)


def traced_quantize_activations(x, m_indptr, global_scale, stream):
    _no_stream(stream)
    return torch.ops.nvfp4_driver.quantize_activations(x, m_indptr, _scale_tensor(global_scale, x))


def traced_quantize_weights(w, global_scale, stream):
    _no_stream(stream)
    return torch.ops.nvfp4_driver.quantize_weights(w, _scale_tensor(global_scale, w))


def traced_dequantize(q, q_scale, m_indptr, global_scale, out_dtype, stream):
    _no_stream(stream)
    dtype = getattr(torch, quantize.out_dtype_name(out_dtype))
    return torch.ops.nvfp4_driver.dequantize(q, q_scale, m_indptr, _scale_tensor(global_scale, q), dtype)


def traced_global_scale_from_amax(x, m_indptr, per_group, stream):
    _no_stream(stream)
    return torch.ops.nvfp4_driver.global_scale_from_amax(x, m_indptr, per_group)


def traced_alpha_from_global_scales(gsf_a, gsf_b, stream):
    _no_stream(stream)
    return torch.ops.nvfp4_driver.alpha_from_global_scales(gsf_a, gsf_b)


def traced_silu_mul_quantize_activations(gate_up, m_indptr, global_scale, stream):
    _no_stream(stream)
    return torch.ops.nvfp4_driver.silu_mul_quantize_activations(gate_up, m_indptr,
                                                                _scale_tensor(global_scale, gate_up))


def traced_silu_mul_global_scale_from_amax(gate_up, m_indptr, per_group, stream):
    _no_stream(stream)
    return torch.ops.nvfp4_driver.silu_mul_global_scale_from_amax(gate_up, m_indptr, per_group)


def compile_hooks():
    """``(is_compiling, {public function: its traced form})``, asked for by ``nvfp4_driver.torch_hooks``."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if is_compiling is None:  # torch < 2.3
        is_compiling = torch._dynamo.is_compiling
    return is_compiling, {
        "group_gemm": traced_gemm,
        "quantize_activations": traced_quantize_activations,
        "quantize_weights": traced_quantize_weights,
        "dequantize": traced_dequantize,
        "global_scale_from_amax": traced_global_scale_from_amax,
        "alpha_from_global_scales": traced_alpha_from_global_scales,
        "silu_mul_quantize_activations": traced_silu_mul_quantize_activations,
        "silu_mul_global_scale_from_amax": traced_silu_mul_global_scale_from_amax,
    }
