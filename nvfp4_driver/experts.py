"""``NVFP4Experts``: a mixture-of-experts expert layer (SiLU-gated MLPs) on NVFP4 weights, as a torch module.

    layer = NVFP4Experts.from_bf16(w13, w2)                 # (E, 2I, H), (E, H, I) -> quantized once
    layer = NVFP4Experts.from_modelopt(safetensors.torch.load_file(path), prefix="model.layers.3.mlp.experts.")
    out = layer(x, topk_ids, topk_weights)                  # (T, H), (T, k), (T, k) -> (T, H)

Per call, all on the current stream, with no host synchronisation (so it can be captured in a CUDA
graph) and, under ``torch.compile``, as one graph (the nvfp4_driver calls become torch.library ops):
the (token, slot) pairs are sorted by expert (``torch.sort``, stable) and the group offsets found
with ``torch.searchsorted`` (``torch.bincount`` would read its maximum on the host); the gathered
rows are quantized, the gate/up grouped GEMM runs, then SiLU(gate) * up fused with the second
quantization (one kernel, and one more for its amax with dynamic scales), the down grouped GEMM, and
the rows go back to their (token, slot) places to be summed with the routing weights in float32 (a
batched matrix product: no atomics, so replays give the same bits).

SiLU * up is ``h = (silu(gate.float()) * up.float()).to(dtype)`` (FlashInfer's silu_and_mul: float32,
one rounding to the rows' dtype). The fused kernels (``silu_mul_quantize_activations``,
``silu_mul_global_scale_from_amax``) compute it in registers and never store h; the unfused path
computes the same expression with torch ops and quantizes it, with the same bits (tests/gpu). The
unfused path runs where the fused one cannot: with ``up_scale_ratio`` (h needs the per-expert ratio),
with a caller's ``dynamic_scale`` (it takes the rows of h) and a dynamic activation scale, or with
``fuse_silu_mul`` False (:data:`FUSE_SILU_MUL_QUANTIZE`).

Conventions (SPEC; ``nvfp4_driver.quantize``): a global scale ``gsf`` is ``448 * 6 / amax`` and a value
is ``e2m1 * ue4m3 / gsf``; ``alpha = 1 / (gsf_act * gsf_w)``. gate/up weights are stacked as vLLM's
``w13``: rows [0, I) the gate projection (ModelOpt's ``gate_proj`` / Mixtral's ``w1``), rows [I, 2I)
the up projection (``up_proj`` / ``w3``).
"""
from __future__ import annotations

import re
from typing import Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F

from . import layout
from .ops import group_gemm_nvfp4_nt_groupwise
from .quantize import (alpha_from_global_scales, global_scale_from_amax, quantize_activations, quantize_weights,
                       silu_mul_global_scale_from_amax, silu_mul_quantize_activations)
from .scale_interleave import interleave_scales

__all__ = ["NVFP4Experts", "QuantizedRows", "FUSE_SILU_MUL_QUANTIZE"]

_GEMM_K = 128  # the grouped GEMM needs K % 128 == 0: H for the gate/up GEMM, I for the down GEMM

FUSE_SILU_MUL_QUANTIZE = True
"""Whether a new layer's ``fuse_silu_mul`` is on: SiLU * up and the down GEMM's quantization (and its
amax) in one kernel that never stores h, instead of torch's silu, multiply and casts, then the
quantizer. Both give the same bits; the fused path moves (R, 2I) 16-bit values in and 4.5 bits per
h element out, the unfused one also writes and reads h and its float32 copies. Measure on your card
with ``python benchmarks/bench_quantize.py --silu-mul`` (fused vs unfused, per shape); set the
attribute of a layer (or this constant before building layers) to choose."""


class QuantizedRows(NamedTuple):
    """Rows grouped by expert and already quantized, for :meth:`NVFP4Experts.grouped_forward`."""

    a: torch.Tensor             # (R, H/2) uint8, packed e2m1
    a_scale: torch.Tensor       # ue4m3 in the 128x4 layout of the call's m_indptr (SPEC §3)
    global_scale: torch.Tensor  # (1,) float32: the gsf they were quantized with (the layer's static one, if any)
    dtype: torch.dtype          # of the layer's output


class NVFP4Experts(torch.nn.Module):
    """E experts, each ``down(silu(gate(x)) * up(x))``, on NVFP4 weights; see the module docstring.

    Buffers (all on one GPU; ``E`` experts, hidden size ``H``, intermediate size ``I``):
      w13:       (E, 2I, H/2) uint8, packed e2m1 (element 2i in the low nibble): gate rows, then up rows.
      w13_scale: (E, ceil(2I/128)*128, H/16) uint8, ue4m3 in the 128x4 layout (``quantize_weights``'s).
      w13_global_scale: (E,) float32, the weights' gsf per expert.
      w2, w2_scale, w2_global_scale: the down projection, (E, H, I/2), (E, ceil(H/128)*128, I/16), (E,).
      input_global_scale: None (computed from the routed rows on every call, one for all experts) or
                 (1,) / (E,) float32: a static (calibrated) gsf of the layer's input.
      act_global_scale: likewise for SiLU(gate) * up, the down GEMM's input.
      up_scale_ratio: None, or (E,) float32 multiplying the up half of the gate/up GEMM's output per
                 expert: checkpoints whose gate and up weights have different global scales keep
                 their bytes, the GEMM runs with the gate's and this corrects the up half exactly
                 (up to the rounding of the product in float32).
      w13_alpha, w2_alpha: (E,) float32 ``1 / (gsf_act * gsf_w)``, present with a static activation scale.

    Attribute ``fuse_silu_mul`` (bool, default :data:`FUSE_SILU_MUL_QUANTIZE`): SiLU * up fused with the
    down GEMM's quantization where the layer allows it (see the module docstring); the same bits either way.
    """

    def __init__(self, w13, w13_scale, w13_global_scale, w2, w2_scale, w2_global_scale, *,
                 input_global_scale=None, act_global_scale=None, up_scale_ratio=None):
        super().__init__()
        experts, two_inter, half_hidden = _shape(w13, "w13", 3)
        hidden, inter = 2 * half_hidden, two_inter // 2
        if two_inter % 2 or inter % _GEMM_K or hidden % _GEMM_K:
            raise ValueError(f"w13.shape={tuple(w13.shape)} gives H={hidden}, 2I={two_inter}; the grouped GEMM needs "
                             f"H and I multiples of {_GEMM_K} (K of the gate/up and of the down GEMM)")
        _expect(w2, "w2", (experts, hidden, inter // 2), torch.uint8)
        _expect(w13, "w13", (experts, two_inter, half_hidden), torch.uint8)
        _expect(w13_scale, "w13_scale", (experts, layout.padded_n(two_inter), hidden // 16), torch.uint8)
        _expect(w2_scale, "w2_scale", (experts, layout.padded_n(hidden), inter // 16), torch.uint8)
        for name, t in (("w13_global_scale", w13_global_scale), ("w2_global_scale", w2_global_scale)):
            _expect(t, name, (experts,), torch.float32)
        for name, t in (("input_global_scale", input_global_scale), ("act_global_scale", act_global_scale)):
            if t is not None:
                _expect_scale(t, name, experts)
        if up_scale_ratio is not None:
            _expect(up_scale_ratio, "up_scale_ratio", (experts,), torch.float32)
        self.num_experts, self.hidden_size, self.intermediate_size = experts, hidden, inter
        for name, t in (("w13", w13), ("w13_scale", w13_scale), ("w13_global_scale", w13_global_scale),
                        ("w2", w2), ("w2_scale", w2_scale), ("w2_global_scale", w2_global_scale),
                        ("input_global_scale", input_global_scale), ("act_global_scale", act_global_scale),
                        ("up_scale_ratio", up_scale_ratio)):
            self.register_buffer(name, t)
        # The float32 steps of alpha_from_global_scales (IEEE multiply, then reciprocal), done once here.
        self.register_buffer("w13_alpha", None if input_global_scale is None
                             else torch.reciprocal(input_global_scale * w13_global_scale))
        self.register_buffer("w2_alpha", None if act_global_scale is None
                             else torch.reciprocal(act_global_scale * w2_global_scale))
        self.fuse_silu_mul = FUSE_SILU_MUL_QUANTIZE  # see FUSE_SILU_MUL_QUANTIZE; the bits do not depend on it

    # ------------------------------------------------------------------------------------ builders

    @classmethod
    def from_bf16(cls, w13, w2, *, input_global_scale=None, act_global_scale=None) -> "NVFP4Experts":
        """Quantize unquantized expert weights on their GPU (``quantize_weights``, a gsf per expert).

        Args:
          w13: (E, 2I, H) bfloat16/float16/float32 on the GPU: gate rows [0, I), up rows [I, 2I).
          w2:  (E, H, I), the down projection.
          input_global_scale, act_global_scale: None (dynamic: from each call's rows) or a static gsf,
              ``448 * 6 / amax`` of the layer's input / of SiLU(gate) * up: a float or a float32
              (1,) / (E,) tensor.
        """
        _shape(w13, "w13", 3)
        _shape(w2, "w2", 3)
        if w2.shape[0] != w13.shape[0] or w2.shape[2] * 2 != w13.shape[1] or w2.shape[1] != w13.shape[2]:
            raise ValueError(f"w13.shape={tuple(w13.shape)} (E, 2I, H) and w2.shape={tuple(w2.shape)} (E, H, I) "
                             f"disagree")
        gs13, gs2 = global_scale_from_amax(w13), global_scale_from_amax(w2)
        b13, s13 = quantize_weights(w13, gs13)
        b2, s2 = quantize_weights(w2, gs2)
        return cls(b13, s13, gs13, b2, s2, gs2, input_global_scale=_static_scale(input_global_scale, w13.device),
                   act_global_scale=_static_scale(act_global_scale, w13.device))

    @classmethod
    def from_modelopt(cls, tensors: Mapping[str, torch.Tensor], prefix: str = "", *,
                      projections=("gate_proj", "up_proj", "down_proj"), device=None) -> "NVFP4Experts":
        """The experts of one MoE layer from an NVIDIA ModelOpt NVFP4 checkpoint (its safetensors tensors).

        Args:
          tensors: name -> tensor (e.g. ``safetensors.torch.load_file(path)``), holding for every expert
              e and projection p the ModelOpt export ``{prefix}{e}.{p}.weight`` (N, K/2) uint8 (element 2i
              in the low nibble), ``.weight_scale`` (N, K/16) float8_e4m3fn in plain row-major order,
              ``.weight_scale_2`` and ``.input_scale`` float32 (one value each). Other names are ignored.
          prefix: the experts' common prefix, e.g. ``"model.layers.3.mlp.experts."``.
          projections: the names of gate, up and down (Mixtral's exports use ``("w1", "w3", "w2")``).
          device: where the layer lives; default the current CUDA device.

        Scales. ModelOpt stores dequantization multipliers: ``weight_scale_2 = amax / (6 * 448)``
        (``NVFP4QTensor.get_weights_scaling_factor_2``) and ``input_scale = amax / (6 * 448)``
        (``get_activation_scaling_factor``), a value being ``e2m1 * weight_scale * weight_scale_2``. Our
        gsf is the reciprocal, ``448 * 6 / amax``, so gsf = 1 / scale. gate and up see the same input: its
        gsf per expert is 1 / max(their input_scale) (as vLLM's ModelOptNvFp4FusedMoE, which also stacks
        w13 as [gate; up]). Where gate's and up's weight_scale_2 differ (exports do that), the GEMM uses
        the gate's and ``up_scale_ratio = up / gate`` corrects the up half (vLLM keeps only the gate's).
        The plain scales are interleaved into the 128x4 layout on the GPU.
        """
        device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        experts = _expert_count(tensors, prefix, projections)
        gate, up, down = (_stack_projection(tensors, prefix, p, experts, device) for p in projections)
        if gate["weight"].shape != up["weight"].shape:
            raise ValueError(f"{projections[0]}.weight {tuple(gate['weight'].shape)} and {projections[1]}.weight "
                             f"{tuple(up['weight'].shape)} must have one shape (I, H/2)")
        w13 = torch.cat([gate["weight"], up["weight"]], dim=1).contiguous()
        w13_scale = interleave_scales(torch.cat([gate["weight_scale"], up["weight_scale"]], dim=1))
        w2_scale = interleave_scales(down["weight_scale"])
        ratio = up["weight_scale_2"] / gate["weight_scale_2"]
        up_scale_ratio = None if bool(torch.all(ratio == 1)) else ratio  # a host read, at load time only
        return cls(w13, w13_scale, torch.reciprocal(gate["weight_scale_2"]), down["weight"], w2_scale,
                   torch.reciprocal(down["weight_scale_2"]),
                   input_global_scale=torch.reciprocal(torch.maximum(gate["input_scale"], up["input_scale"])),
                   act_global_scale=torch.reciprocal(down["input_scale"]), up_scale_ratio=up_scale_ratio)

    # ------------------------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """x (T, H) bfloat16/float16 on the layer's GPU; topk_ids (T, k) integers in [0, E) (others give
        undefined rows for their tokens); topk_weights (T, k) -> (T, H) of x.dtype."""
        tokens, k = topk_ids.shape
        flat = topk_ids.reshape(-1)
        expert_of_row, order = torch.sort(flat, stable=True)
        bounds = torch.arange(self.num_experts + 1, device=flat.device, dtype=flat.dtype)
        m_indptr = torch.searchsorted(expert_of_row, bounds, out_int32=True)
        y = self.grouped_forward(x.index_select(0, order // k), m_indptr, expert_of_row)

        # Row r of y belongs to (token, slot) order[r]: put it there, then sum the k slots in float32.
        y_slots = torch.empty_like(y).index_copy_(0, order, y).view(tokens, k, self.hidden_size)
        out = torch.bmm(topk_weights.float().unsqueeze(1), y_slots.float())
        return out.view(tokens, self.hidden_size).to(x.dtype)

    def grouped_forward(self, xs, m_indptr: torch.Tensor, expert_of_row: torch.Tensor, *,
                        dynamic_scale=None) -> torch.Tensor:
        """The experts on rows already grouped by expert (what ``forward`` runs after routing).

        Args:
          xs: (R, H) bfloat16/float16 on the layer's GPU, the rows of expert e at [m_indptr[e], m_indptr[e+1]);
              or :class:`QuantizedRows`, those rows already quantized (expert parallelism sends them so).
          m_indptr: (E+1,) int32 on the GPU, non-decreasing, m_indptr[E] = R.
          expert_of_row: (R,) integers, the expert of each row (read only with ``up_scale_ratio``).
          dynamic_scale: None, or a callable rows (R', K) -> (1,) float32 gsf used for the dynamic
              activation scales instead of ``global_scale_from_amax(rows)`` (expert parallelism passes
              one that agrees over all ranks).

        Returns (R, H) of the rows' dtype.
        """
        inter = self.intermediate_size
        if isinstance(xs, QuantizedRows):
            a, a_scale, dtype = xs.a, xs.a_scale, xs.dtype
            alpha = self.w13_alpha if self.input_global_scale is not None else \
                alpha_from_global_scales(xs.global_scale, self.w13_global_scale)
        else:
            dtype = xs.dtype
            a, a_scale, alpha = self._quantize(xs, m_indptr, self.input_global_scale, self.w13_alpha,
                                               self.w13_global_scale, dynamic_scale)
        h = group_gemm_nvfp4_nt_groupwise(a, self.w13, a_scale, self.w13_scale, m_indptr, alpha, out_dtype=dtype)
        static = self.act_global_scale is not None
        if self.fuse_silu_mul and self.up_scale_ratio is None and (static or dynamic_scale is None):
            # h (R, 2I) is gate | up per row: the fused kernels read it as it stands.
            gsf, alpha = self.act_global_scale, self.w2_alpha
            if not static:
                gsf = silu_mul_global_scale_from_amax(h)
                alpha = alpha_from_global_scales(gsf, self.w2_global_scale)
            a, a_scale = silu_mul_quantize_activations(h, m_indptr, gsf)
        else:
            gate, up = h[:, :inter].float(), h[:, inter:].float()
            if self.up_scale_ratio is not None:
                ratio = self.up_scale_ratio.index_select(0, expert_of_row.clamp(0, self.num_experts - 1))
                up = up * ratio[:, None]
            act = (F.silu(gate) * up).to(dtype)
            a, a_scale, alpha = self._quantize(act, m_indptr, self.act_global_scale, self.w2_alpha,
                                               self.w2_global_scale, dynamic_scale)
        return group_gemm_nvfp4_nt_groupwise(a, self.w2, a_scale, self.w2_scale, m_indptr, alpha, out_dtype=dtype)

    @staticmethod
    def _quantize(rows, m_indptr, act_gsf, alpha, weight_gsf, dynamic_scale):
        """``rows`` (cum_m, K) -> (a, a_scale, alpha) for the GEMM with weights of global scale ``weight_gsf``."""
        if act_gsf is None:
            act_gsf = global_scale_from_amax(rows) if dynamic_scale is None else dynamic_scale(rows)
            alpha = alpha_from_global_scales(act_gsf, weight_gsf)
        a, a_scale = quantize_activations(rows, m_indptr, act_gsf)
        return a, a_scale, alpha

    def extra_repr(self) -> str:
        static = "static" if self.input_global_scale is not None else "dynamic"
        return (f"experts={self.num_experts}, hidden={self.hidden_size}, intermediate={self.intermediate_size}, "
                f"activation scales {static}, up_scale_ratio={'yes' if self.up_scale_ratio is not None else 'no'}")


# ---------------------------------------------------------------------------------------- helpers


def _shape(t, name: str, ndim: int) -> tuple:
    if not isinstance(t, torch.Tensor) or t.dim() != ndim:
        raise ValueError(f"{name} must be a {ndim}-D torch tensor, got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    return tuple(t.shape)


def _expect(t, name: str, shape: tuple, dtype) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape or (t.dtype != dtype and not (dtype == torch.uint8 and t.element_size() == 1)):
        raise ValueError(f"{name} is {tuple(t.shape)} {t.dtype} but {shape} {dtype} is required "
                         f"(E={shape[0]} experts; see NVFP4Experts' docstring)")


def _expect_scale(t, name: str, experts: int) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.numel() not in (1, experts) or t.dim() != 1:
        desc = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} is {desc} but a float32 (1,) or (E,) = ({experts},) tensor or None is required")


def _static_scale(value, device) -> Optional[torch.Tensor]:
    """A static gsf given as a float (or a 0-d tensor) -> a float32 (1,) tensor on ``device``."""
    if value is None or (isinstance(value, torch.Tensor) and value.dim() == 1):
        return value
    return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(1)


def _expert_count(tensors: Mapping, prefix: str, projections) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\." + re.escape(projections[0]) + r"\.weight$")
    ids = sorted(int(m.group(1)) for name in tensors for m in [pattern.match(name)] if m)
    if not ids:
        raise ValueError(f"no tensor named '{prefix}<e>.{projections[0]}.weight' among {len(tensors)} tensors "
                         f"(e.g. {sorted(tensors)[:3]}); pass the experts' prefix, e.g. "
                         f"'model.layers.3.mlp.experts.', and projections= for other names")
    if ids != list(range(len(ids))):
        missing = sorted(set(range(ids[-1] + 1)) - set(ids))
        raise ValueError(f"experts must be numbered 0..E-1 under '{prefix}', but {missing[:8]} are missing")
    return len(ids)


_FIELDS = {"weight": (torch.uint8, 2), "weight_scale": (torch.float8_e4m3fn, 2),
           "weight_scale_2": (torch.float32, 0), "input_scale": (torch.float32, 0)}


def _stack_projection(tensors: Mapping, prefix: str, proj: str, experts: int, device) -> dict:
    """One projection's four ModelOpt fields of every expert, stacked on ``device``: weight (E, N, K/2)
    uint8, weight_scale (E, N, K/16) uint8 (the e4m3 bytes), weight_scale_2 and input_scale (E,) float32."""
    out = {}
    for field, (dtype, ndim) in _FIELDS.items():
        parts = []
        for e in range(experts):
            name = f"{prefix}{e}.{proj}.{field}"
            t = tensors.get(name)
            if t is None:
                raise ValueError(f"'{name}' is missing: a ModelOpt NVFP4 expert has weight, weight_scale, "
                                 f"weight_scale_2 and input_scale per projection")
            if t.dtype != dtype or (t.dim() != ndim and not (ndim == 0 and t.numel() == 1)):
                raise ValueError(f"'{name}' is {tuple(t.shape)} {t.dtype} but ModelOpt's NVFP4 export has "
                                 f"{'one ' if ndim == 0 else f'{ndim}-D '}{dtype}")
            parts.append(t.reshape(()) if ndim == 0 else t)
        if len({tuple(p.shape) for p in parts}) > 1:
            raise ValueError(f"'{prefix}<e>.{proj}.{field}' differs in shape between experts")
        stacked = torch.stack(parts).to(device)
        out[field] = stacked.view(torch.uint8) if dtype == torch.float8_e4m3fn else stacked
    k_half, sf_k = out["weight"].shape[2], out["weight_scale"].shape[2]
    if out["weight_scale"].shape[1] != out["weight"].shape[1] or 2 * k_half != 16 * sf_k:
        raise ValueError(f"'{prefix}<e>.{proj}': weight (N, K/2) = {tuple(out['weight'].shape[1:])} and "
                         f"weight_scale (N, K/16) = {tuple(out['weight_scale'].shape[1:])} disagree")
    return out
