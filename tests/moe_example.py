"""The README's MoE example, loaded from README.md, and the float64 pipelines that bound its error.

Shared by tests/test_moe_example.py (the example run on the CPU through a backend built on
nvfp4_driver.reference) and tests/gpu/test_moe_example_gpu.py (the real kernels).

How the error bound is chosen. The NVFP4 layer differs from the exact layer by the error of four
NVFP4 roundings (x, w13, the activation, w2). Its size depends on the data, so it is measured on the
same inputs: ``nvfp4_f64`` is the layer in float64 with the quantizer of SPEC §4
(``reference.quantize_blocks``, bit-identical to the GPU kernels) applied at the same four points,
and ``e_q = |nvfp4_f64 - exact_f64| / |exact_f64|`` (Frobenius norms). The GPU layer differs from
``nvfp4_f64`` only by float32 accumulation and bf16 rounding of h and y (relative 2^-9 each), which
also moves a few activation codes across rounding boundaries; such a re-draw leaves the error's
size unchanged up to fluctuations that shrink like 1/sqrt(outputs) (under 1% for 10^5 outputs).
So ``|gpu - exact| <= (1 + margin) e_q |exact| + 2^-8 |exact|``, and through the bf16 layer (whose
own error vs exact, e_bf16, is measured too):

    |gpu - bf16| / |bf16|  <=  1.25 e_q + e_bf16 + 2^-8          (BOUND_VS_BF16)

with a 25% margin, far above the fluctuation. A second, tighter check compares the GPU layer with
``nvfp4_f64`` directly: their difference is only the re-drawn codes and bf16 rounding, a small
fraction of e_q (``RATIO_VS_NVFP4_F64``, measured on the CPU with the reference backend at about
0.1 and asserted at 0.35).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nvfp4_driver import layout, reference as R

README = Path(__file__).resolve().parents[1] / "README.md"
MARGIN = 1.25
BF16_SLACK = 2.0**-8
RATIO_VS_NVFP4_F64 = 0.35
_TWO688 = np.float32(448 * 6)


def example_source() -> str:
    text = README.read_text()
    m = re.search(r"<!-- moe-example:begin -->\s*```python\n(.*?)```\s*<!-- moe-example:end -->", text, re.S)
    if m is None:
        raise AssertionError("README.md has no moe-example block")
    return m.group(1)


def load_example(backend: dict) -> dict:
    """Exec the README's example with ``backend`` providing group_gemm_nvfp4_nt_groupwise and the
    quantize functions; returns its namespace (quantize_experts, moe_nvfp4, moe_bf16)."""
    namespace = {"torch": torch, "F": F, **backend}
    exec(compile(example_source(), str(README), "exec"), namespace)
    return namespace


def make_layer(tokens: int, hidden: int, inter: int, experts: int, topk: int, seed: int, device: str):
    """Random bf16 layer inputs, as in the README: (x, w13, w2, topk_ids, topk_weights)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g).bfloat16()
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g) / hidden**0.5).bfloat16()
    w2 = (torch.randn(experts, hidden, inter, generator=g) / inter**0.5).bfloat16()
    topk_weights, topk_ids = torch.topk(torch.softmax(torch.randn(tokens, experts, generator=g), -1), topk)
    return tuple(t.to(device) for t in (x, w13, w2, topk_ids, topk_weights))


def _silu(v):
    return v / (1.0 + np.exp(-v))


def _q64(x: np.ndarray, gsf: np.float32) -> np.ndarray:
    """x rounded through SPEC §4 with global scale gsf, decoded, divided by gsf: float64."""
    codes, sf = R.quantize_blocks(x.astype(np.float32), gsf)
    return R.dequantize(R.pack_fp4(codes), sf).astype(np.float64) / np.float64(gsf)


def _gsf(x: np.ndarray) -> np.float32:
    amax = np.float32(np.abs(x.astype(np.float32)).max())
    return np.float32(1) if amax == 0 else _TWO688 / amax


def layers_f64(x, w13, w2, topk_ids, topk_weights) -> tuple[np.ndarray, np.ndarray]:
    """(exact_f64, nvfp4_f64): the layer in float64 without and with SPEC §4 quantization."""
    w13 = w13.float().cpu().numpy()
    w2 = w2.float().cpu().numpy()
    experts = w13.shape[0]
    w13q = np.stack([_q64(w13[e], _gsf(w13[e])) for e in range(experts)])
    w2q = np.stack([_q64(w2[e], _gsf(w2[e])) for e in range(experts)])

    def dynamic(rows, bounds):
        return _q64(rows, _gsf(rows))

    return (moe_f64(x, topk_ids, topk_weights, w13, w2),
            moe_f64(x, topk_ids, topk_weights, w13q, w2q, quant_x=dynamic, quant_act=dynamic))


def per_expert_quantizer(gsf):
    """For moe_f64: rows of expert e rounded through SPEC §4 with the static global scale gsf[e]
    (one value: all experts)."""
    gsf = np.asarray(gsf, np.float32).reshape(-1)

    def quant(rows, bounds):
        out = rows.copy()
        for e in range(len(bounds) - 1):
            lo, hi = bounds[e], bounds[e + 1]
            if hi > lo:
                out[lo:hi] = _q64(rows[lo:hi], gsf[e if gsf.size > 1 else 0])
        return out
    return quant


def moe_f64(x, topk_ids, topk_weights, w13, w2, *, quant_x=None, quant_act=None) -> np.ndarray:
    """The layer in float64 on the given weights (NumPy (E, 2I, H) gate rows then up rows, (E, H, I)):
    rows sorted by expert (stable), ``quant_x(rows, bounds)`` / ``quant_act(rows, bounds)`` round the
    two GEMMs' inputs (None: exact), SiLU(gate) * up, the weighted sum per token."""
    x = x.float().cpu().numpy()
    ids = topk_ids.cpu().numpy()
    wts = topk_weights.float().cpu().numpy().astype(np.float64)
    experts, two_inter, _ = w13.shape
    inter = two_inter // 2
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    token_of_row = order // ids.shape[1]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=experts))])
    a = x[token_of_row].astype(np.float64)
    if quant_x is not None:
        a = quant_x(a, bounds)
    h = np.zeros((a.shape[0], two_inter))
    for e in range(experts):
        lo, hi = bounds[e], bounds[e + 1]
        h[lo:hi] = a[lo:hi] @ np.asarray(w13[e], np.float64).T
    act = _silu(h[:, :inter]) * h[:, inter:]
    if quant_act is not None:
        act = quant_act(act, bounds)
    y = np.zeros((a.shape[0], w2.shape[1]))
    for e in range(experts):
        lo, hi = bounds[e], bounds[e + 1]
        y[lo:hi] = act[lo:hi] @ np.asarray(w2[e], np.float64).T
    out = np.zeros((x.shape[0], w2.shape[1]))
    np.add.at(out, token_of_row, y * wts.reshape(-1)[order, None])
    return out


def rel(a, b) -> float:
    a = a.float().cpu().numpy() if hasattr(a, "cpu") else a
    b = b.float().cpu().numpy() if hasattr(b, "cpu") else b
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def check_errors(out, ref_bf16, exact64, nvfp4_64) -> dict:
    """The two bounds of the module docstring; returns the measured errors (assert on failure)."""
    e_q = rel(nvfp4_64, exact64)
    e_bf16 = rel(ref_bf16, exact64)
    e_out = rel(out, ref_bf16)
    e_out_q = rel(out, nvfp4_64)
    report = dict(e_q=e_q, e_bf16=e_bf16, e_out_vs_bf16=e_out, e_out_vs_nvfp4_f64=e_out_q,
                  bound=MARGIN * e_q + e_bf16 + BF16_SLACK)
    assert 0.02 < e_q < 0.5, f"the float64 NVFP4 pipeline's error {e_q:.3g} is implausible for 4 bits: {report}"
    assert e_out <= report["bound"], f"NVFP4 layer vs bf16 layer beyond the quantization bound: {report}"
    assert e_out_q <= RATIO_VS_NVFP4_F64 * e_q, f"NVFP4 layer strays from the float64 NVFP4 pipeline: {report}"
    return report


# ------------------------------------------------------------------ a backend built on the oracle


def _np(t):
    return t.detach().cpu().float().numpy() if t.dtype != torch.uint8 else t.detach().cpu().numpy()


def reference_backend() -> dict:
    """The example's GPU calls, computed by nvfp4_driver.reference on CPU tensors (same bytes)."""

    def global_scale_from_amax(x, m_indptr=None, *, per_group=True):
        v = _np(x)
        if v.ndim == 3 and per_group:
            return torch.from_numpy(np.array([_gsf(v[g]) for g in range(v.shape[0])], np.float32))
        return torch.from_numpy(np.array([_gsf(v)], np.float32))

    def quantize_weights(w, gs):
        v, g = _np(w), _np(gs)
        outs = [R.quantize(v[e], g[e if g.size > 1 else 0]) for e in range(v.shape[0])]
        return (torch.from_numpy(np.stack([o[0] for o in outs])), torch.from_numpy(np.stack([o[1] for o in outs])))

    def quantize_activations(x, m_indptr, gs):
        v, ind, g = _np(x), m_indptr.cpu().numpy(), _np(gs)
        rows, k = v.shape
        a = np.zeros((rows, k // 2), np.uint8)
        sf = np.zeros((rows, k // 16), np.uint8)
        for e in range(len(ind) - 1):
            lo, hi = ind[e], ind[e + 1]
            if hi > lo:
                codes, s = R.quantize_blocks(v[lo:hi], g[e if g.size > 1 else 0])
                a[lo:hi], sf[lo:hi] = R.pack_fp4(codes), s
        placed = R.grouped_a_scale(sf, ind)
        full = np.zeros((layout.a_scale_rows_upper_bound(rows, len(ind) - 1), k // 16), np.uint8)
        full[: placed.shape[0]] = placed
        return torch.from_numpy(a), torch.from_numpy(full)

    def alpha_from_global_scales(ga, gb):
        return torch.from_numpy((np.float32(1) / (_np(ga) * _np(gb))).astype(np.float32))

    def silu_mul(gate_up):  # h of the fused kernels, as the float32 values of gate_up's dtype
        dtype = "float16" if gate_up.dtype == torch.float16 else "bfloat16"
        return torch.from_numpy(R.silu_mul(_np(gate_up), dtype)).to(gate_up.dtype)

    def silu_mul_global_scale_from_amax(gate_up, m_indptr=None, *, per_group=True):
        return global_scale_from_amax(silu_mul(gate_up))

    def silu_mul_quantize_activations(gate_up, m_indptr, gs):
        return quantize_activations(silu_mul(gate_up), m_indptr, gs)

    def group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha=None):
        out = R.group_gemm(a.numpy(), b.numpy(), a_scale.numpy(), b_scale.numpy(), m_indptr.cpu().numpy(),
                           None if alpha is None else alpha.numpy())
        return torch.from_numpy(out.astype(np.float32)).bfloat16()

    return dict(global_scale_from_amax=global_scale_from_amax, quantize_weights=quantize_weights,
                quantize_activations=quantize_activations, alpha_from_global_scales=alpha_from_global_scales,
                silu_mul_global_scale_from_amax=silu_mul_global_scale_from_amax,
                silu_mul_quantize_activations=silu_mul_quantize_activations,
                group_gemm_nvfp4_nt_groupwise=group_gemm_nvfp4_nt_groupwise)
