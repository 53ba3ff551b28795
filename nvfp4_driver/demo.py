"""``python -m nvfp4_driver demo``: one small MoE expert layer, quantized, run, checked, timed."""
from __future__ import annotations

import numpy as np

from . import driver, reference, testing
from .devmem import DeviceBuffer, time_ms
from .layout import padded_n, swizzle_scales
from .selftest import run_on_gpu, upload

FP4_MAX, E4M3_MAX = 6.0, 448.0


def make_layer(rng, tokens=512, experts=8, n=512, k=1024):
    """Route ``tokens`` to ``experts`` (top-1), quantize activations and weights as FlashInfer does."""
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    w = (rng.standard_normal((experts, n, k)) * 0.05).astype(np.float32)
    expert_of = rng.integers(0, experts, size=tokens)
    order = np.argsort(expert_of, kind="stable")
    x = x[order]
    counts = np.bincount(expert_of, minlength=experts)
    m_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)

    gsf_a = np.float32(E4M3_MAX * FP4_MAX / np.abs(x).max())
    codes, sf = reference.quantize_blocks(x, gsf_a)
    a, a_scale = reference.pack_fp4(codes), reference.grouped_a_scale(sf, m_indptr)
    b = np.empty((experts, n, k // 2), np.uint8)
    b_scale = np.empty((experts, padded_n(n), k // 16), np.uint8)
    b_sf = np.empty((experts, n, k // 16), np.uint8)
    gsf_b = np.empty(experts, np.float32)
    for e in range(experts):
        gsf_b[e] = E4M3_MAX * FP4_MAX / np.abs(w[e]).max()
        codes_e, b_sf[e] = reference.quantize_blocks(w[e], gsf_b[e])
        b[e], b_scale[e] = reference.pack_fp4(codes_e), swizzle_scales(b_sf[e])
    alpha = (np.float32(1) / (gsf_a * gsf_b)).astype(np.float32)
    problem = testing.RandomProblem(a, b, a_scale, b_scale, m_indptr, alpha, sf, b_sf)
    exact = np.concatenate([x[m_indptr[e]:m_indptr[e + 1]].astype(np.float64) @ w[e].T.astype(np.float64)
                            for e in range(experts)])
    return problem, exact


def run_demo(seed: int | None = None) -> int:
    rng = np.random.default_rng(seed)
    p, exact = make_layer(rng)
    ref, abs_sum = p.reference()
    quant_err = np.linalg.norm(ref - exact) / np.linalg.norm(exact)
    print(f"demo: {p.cum_m} tokens, {p.num_groups} experts, N={p.n}, K={p.k}; rows per expert "
          f"{np.diff(p.m_indptr).tolist()}")
    print(f"reference (float64 of the NVFP4 inputs) vs unquantized float64 layer: relative error "
          f"{quant_err:.4f} (4-bit quantization)")
    if not driver.is_available():
        print("no GPU (no CUDA driver or device): ran the reference only")
        return 0
    info = driver.device_info(0)
    bufs = upload(p, 0)
    bits = run_on_gpu(p, bufs, None, "bfloat16", 0)  # the automatic cut, as a call without tiles
    report = testing.tolerance_check(bits, ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr)
    out = testing.bf16_bits_to_float(bits).astype(np.float64)
    print(f"GPU {info.name}: kernel vs reference {report}; vs unquantized: relative error "
          f"{np.linalg.norm(out - exact) / np.linalg.norm(exact):.4f}")
    out_buf = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    from .ops import group_gemm_nvfp4_nt_groupwise

    def launch():
        group_gemm_nvfp4_nt_groupwise(bufs["a"], bufs["b"], bufs["a_scale"], bufs["b_scale"], bufs["m_indptr"],
                                      alpha=bufs["alpha"], out=out_buf, stream=0)

    median = float(np.median(time_ms(launch, iters=50)))
    flops = 2.0 * p.cum_m * p.n * p.k
    print(f"kernel time: {median * 1e3:.1f} us median of 50 (CUDA events, legacy stream), "
          f"{flops / median / 1e9:.2f} TFLOP/s")
    return 0 if report.ok else 1
