"""A small synthetic NVIDIA ModelOpt NVFP4 checkpoint of one MoE layer, and what loading it must give.

Shared by tests/test_experts_cpu.py and tests/gpu/test_experts_gpu.py. The tensors follow ModelOpt's
export (``NVFP4QTensor``): per expert and projection ``weight`` (N, K/2) uint8 with element 2i in the
low nibble, ``weight_scale`` (N, K/16) float8_e4m3fn in plain row-major order, ``weight_scale_2`` and
``input_scale`` float32 dequantization multipliers ``amax / (6 * 448)``. The bytes come from
nvfp4_driver.reference (SPEC §4) with global scale ``1 / weight_scale_2``, so the float64 layer on the
decoded weights is exactly what the loaded layer must approximate.
"""
from __future__ import annotations

import numpy as np
import torch

from nvfp4_driver import reference as R

import moe_example as ex

PREFIX = "model.layers.1.mlp.experts."
PROJ = ("gate_proj", "up_proj", "down_proj")
_2688 = np.float32(448 * 6)


def _quantize(w: np.ndarray, amax: np.float32):
    """(packed, plain scales, weight_scale_2, decoded float64) of one (N, K) weight."""
    scale_2 = np.float32(amax / _2688) if amax > 0 else np.float32(1)
    gsf = np.float32(1) / scale_2  # what the loader computes from weight_scale_2
    codes, sf = R.quantize_blocks(w, gsf)
    decoded = R.dequantize(R.pack_fp4(codes), sf).astype(np.float64) / np.float64(gsf)
    return R.pack_fp4(codes), sf, scale_2, decoded


def make_checkpoint(w13, w2, input_amax, act_amax, *, split_gate_up: bool):
    """(tensors, w13_decoded, w2_decoded): a ModelOpt-style dict for ``w13`` (E, 2I, H) (gate rows, then
    up rows) and ``w2`` (E, H, I); ``input_amax`` / ``act_amax`` (E,) give the input scales. With
    ``split_gate_up`` gate and up get weight_scale_2 from their own amax (as many exports do), else one
    from the amax over both (a fused-aware export)."""
    w13 = w13.float().cpu().numpy()
    w2 = w2.float().cpu().numpy()
    experts, two_inter, _ = w13.shape
    inter = two_inter // 2
    tensors, w13_dec, w2_dec = {}, np.zeros(w13.shape), np.zeros(w2.shape)
    for e in range(experts):
        halves = (w13[e, :inter], w13[e, inter:])
        amaxes = [np.abs(h).max() for h in halves] if split_gate_up else [np.abs(w13[e]).max()] * 2
        for p, (proj, w, amax) in enumerate(zip(PROJ, (*halves, w2[e]), (*amaxes, np.abs(w2[e]).max()))):
            packed, sf, scale_2, decoded = _quantize(w, np.float32(amax))
            if p < 2:
                w13_dec[e, p * inter:(p + 1) * inter] = decoded
            else:
                w2_dec[e] = decoded
            # gate and up calibrate the same input, a little apart: the loader takes the larger
            in_amax = act_amax[e] if p == 2 else input_amax[e] * (1.0 if p == 0 else 1.03)
            name = f"{PREFIX}{e}.{proj}."
            tensors[name + "weight"] = torch.from_numpy(packed)
            tensors[name + "weight_scale"] = torch.from_numpy(sf).view(torch.float8_e4m3fn)
            tensors[name + "weight_scale_2"] = torch.tensor(scale_2, dtype=torch.float32)
            tensors[name + "input_scale"] = torch.tensor(np.float32(in_amax) / _2688, dtype=torch.float32)
    tensors["model.layers.1.mlp.gate.weight"] = torch.zeros(experts, w13.shape[2])  # not an expert's: ignored
    return tensors, w13_dec, w2_dec


def routed_amaxes(x, topk_ids, topk_weights, w13, w2):
    """Per-expert amax of the layer input and of SiLU(gate) * up (exact float64 layer): the
    calibration a ModelOpt export stores as input_scale."""
    experts = w13.shape[0]
    found = {}

    def record(key):
        def quant(rows, bounds):
            found[key] = np.array([np.abs(rows[bounds[e]:bounds[e + 1]]).max(initial=0.0) for e in range(experts)])
            return rows
        return quant

    ex.moe_f64(x, topk_ids, topk_weights, w13.float().cpu().numpy(), w2.float().cpu().numpy(),
               quant_x=record("x"), quant_act=record("act"))
    # Experts nobody was routed to get the overall maximum (any positive calibration is valid).
    return [np.where(found[k] > 0, found[k], found[k].max()) for k in ("x", "act")]


def expected_layer_f64(tensors, x, topk_ids, topk_weights, w13_dec, w2_dec):
    """The float64 layer the loaded one computes: decoded checkpoint weights, and the activations
    rounded through SPEC §4 with the static global scales of the checkpoint (1 / input_scale)."""
    experts = w13_dec.shape[0]

    def gsf(proj, other=None):
        scales = np.array([tensors[f"{PREFIX}{e}.{proj}.input_scale"].item() for e in range(experts)], np.float32)
        if other is not None:
            up = np.array([tensors[f"{PREFIX}{e}.{other}.input_scale"].item() for e in range(experts)], np.float32)
            scales = np.maximum(scales, up)
        return np.float32(1) / scales

    return ex.moe_f64(x, topk_ids, topk_weights, w13_dec, w2_dec,
                      quant_x=ex.per_expert_quantizer(gsf("gate_proj", "up_proj")),
                      quant_act=ex.per_expert_quantizer(gsf("down_proj")))
