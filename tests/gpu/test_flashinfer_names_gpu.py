"""nvfp4_driver.flashinfer on the GPU.

1. FlashInfer's documented test recipe for ``group_gemm_nvfp4_nt_groupwise`` (its
   tests/gemm/test_group_gemm_fp4.py: per-group ``nvfp4_quantize`` with ``448 * 6 / amax`` global scales,
   ``a_scale`` stacked at ``sf_m_offset`` and sized as that test sizes it, every tile_n / tile_k / swap_ab,
   cosine similarity above 0.97 against a bf16 matmul), with its steps unchanged and only the import
   swapped for ``import nvfp4_driver.flashinfer as flashinfer``; then every output is held to SPEC §5
   against the float64 NumPy reference of the quantized inputs, and the checked mode accepts its a_scale.
2. The quantization helpers by FlashInfer's names against nvfp4_driver.reference, byte for byte.
"""
import os

import ml_dtypes
import numpy as np
import pytest

import nvfp4_driver as nd
import nvfp4_driver.flashinfer as flashinfer
from nvfp4_driver import reference as R, testing
from nvfp4_driver.layout import swizzled_offset

torch = pytest.importorskip("torch")
F = torch.nn.functional

SEED = int(os.environ.get("NVFP4_TEST_SEED", np.random.SeedSequence().entropy % 2**32))
OUT_NAME = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


@pytest.fixture
def rng(request):
    return np.random.default_rng([SEED, abs(hash(request.node.nodeid)) % 2**31])


# ------------------------------------------------------------------ 1. FlashInfer's recipe

def gemm_nvfp4_nt_groupwise_ref(a_float, b_float, out_dtype):
    """The recipe's reference: one float32 matmul per group of the unquantized values."""
    out_ref = torch.empty((a_float.shape[0] * a_float.shape[1], b_float.shape[1]), dtype=out_dtype,
                          device=a_float.device)
    for i in range(a_float.shape[0]):
        rows = slice(i * a_float.shape[1], (i + 1) * a_float.shape[1])
        out_ref[rows] = torch.mm(a_float[i].float(), b_float[i].float().T).to(out_dtype)
    return out_ref


def quantize_nvfp4_group_inputs(a_float, b_float, m_indptr):
    """The recipe's quantization: each group on its own, a_scale blocks placed at the kernel's
    sf_m_offset(g) = (m_offset + g * 127) // 128 * 128, total rows = the last offset + its block."""
    alignment = 128
    a_fp4, a_sf, b_fp4, b_sf, alpha = [], [], [], [], []
    for a_group, b_group in zip(a_float, b_float, strict=True):
        a_global_sf = (448 * 6) / a_group.float().abs().nan_to_num().max()
        b_global_sf = (448 * 6) / b_group.float().abs().nan_to_num().max()
        q, s = flashinfer.nvfp4_quantize(a_group, a_global_sf, sfLayout=flashinfer.SfLayout.layout_128x4,
                                         do_shuffle=False)
        a_fp4.append(q)
        a_sf.append(s)
        q, s = flashinfer.nvfp4_quantize(b_group, b_global_sf, sfLayout=flashinfer.SfLayout.layout_128x4,
                                         do_shuffle=False)
        b_fp4.append(q)
        b_sf.append(s)
        alpha.append(1.0 / (a_global_sf * b_global_sf))
    groups, sf_k = a_float.shape[0], a_sf[0].shape[1]
    offsets = m_indptr.cpu().tolist()
    last = groups - 1
    last_offset = (offsets[last] + last * (alignment - 1)) // alignment * alignment
    a_scale = torch.zeros((last_offset + a_sf[last].shape[0], sf_k), dtype=a_sf[0].dtype, device=a_float.device)
    for i in range(groups):
        start = (offsets[i] + i * (alignment - 1)) // alignment * alignment
        a_scale[start:start + a_sf[i].shape[0]] = a_sf[i]
    return (torch.cat(a_fp4, dim=0), torch.stack(b_fp4, dim=0), a_scale, torch.stack(b_sf, dim=0),
            torch.tensor(alpha, dtype=torch.float32, device=a_float.device))


@pytest.mark.parametrize("m", [4, 128, 512])
@pytest.mark.parametrize("n", [128, 256, 512])
@pytest.mark.parametrize("k", [128, 256, 512])
@pytest.mark.parametrize("group_size", [1, 2, 4])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_group_gemm_nvfp4(m, n, k, group_size, out_dtype, record_ulps):
    device = torch.device("cuda")
    major, minor = torch.cuda.get_device_capability(device)
    if not flashinfer.gemm.group_gemm_nvfp4_nt_groupwise.is_compute_capability_supported(major * 10 + minor):
        pytest.skip(f"no group_gemm_nvfp4_nt_groupwise build for compute capability {major}.{minor}")

    torch.random.manual_seed(SEED)
    a_float = torch.randn((group_size, m, k), dtype=torch.bfloat16, device=device)
    b_float = torch.randn((group_size, n, k), dtype=torch.bfloat16, device=device)
    m_indptr = torch.arange(0, (group_size + 1) * m, m, dtype=torch.int32, device=device)

    a_fp4, b_fp4, a_scale, b_scale, alpha = quantize_nvfp4_group_inputs(a_float, b_float, m_indptr)
    out_ref = gemm_nvfp4_nt_groupwise_ref(a_float, b_float, out_dtype)

    # Ours: the exact result of the quantized inputs, once per case (it does not depend on the cut).
    # The reference takes a_scale_rows(m_indptr) rows; the ones past the recipe's a_scale belong to no group.
    ind = m_indptr.cpu().numpy()
    a_scale_host = np.zeros((nd.a_scale_rows(ind), a_scale.shape[1]), np.uint8)
    a_scale_host[: a_scale.shape[0]] = a_scale.cpu().numpy()
    exact, abs_sum = R.group_gemm_with_abs(a_fp4.cpu(), b_fp4.cpu(), a_scale_host, b_scale.cpu(), ind, alpha.cpu())
    for swap_ab in [True, False]:
        for tile_n in [32, 64, 128]:
            for tile_k in [128, 256]:
                out = flashinfer.gemm.group_gemm_nvfp4_nt_groupwise(
                    a_fp4, b_fp4, a_scale, b_scale, m_indptr, alpha, tile_m=128, tile_n=tile_n, tile_k=tile_k,
                    swap_ab=swap_ab, out_dtype=out_dtype)
                cos_sim = F.cosine_similarity(out_ref.reshape(-1).float(), out.reshape(-1).float(), dim=0)
                assert cos_sim > 0.97
                report = testing.tolerance_check(out.float().cpu().numpy(), exact, abs_sum, k,
                                                 OUT_NAME[out_dtype], m_indptr=ind)
                assert report.ok, f"seed {SEED} swap_ab={swap_ab} tile_n={tile_n} tile_k={tile_k}: {report}"
                record_ulps(report)
    # The checked mode asks for the rows the kernel reads, which is what this recipe allocates.
    assert a_scale.shape[0] == testing.a_scale_rows_read(ind)
    checked = nd.group_gemm_nvfp4_nt_groupwise(a_fp4, b_fp4, a_scale, b_scale, m_indptr, alpha,
                                               out_dtype=out_dtype, check_inputs=True)
    assert testing.tolerance_check(checked.float().cpu().numpy(), exact, abs_sum, k, OUT_NAME[out_dtype]).ok


# ------------------------------------------------------------------ 2. the quantization helpers

def spread_values(rng, rows: int, k: int) -> np.ndarray:
    """(rows, k) float32 values exact in bfloat16, every 16-element block in its own binade range."""
    x = rng.standard_normal((rows, k // 16, 16)) * 2.0 ** rng.integers(-30, 30, size=(rows, k // 16, 1))
    return x.reshape(rows, k).astype(ml_dtypes.bfloat16).astype(np.float32)


def on_gpu(x: np.ndarray, dtype=torch.bfloat16):
    return torch.from_numpy(x).to(device="cuda", dtype=dtype)


def swizzled_by_offset(sf: np.ndarray) -> np.ndarray:
    rows, sf_k = sf.shape
    out = np.zeros(-(-rows // 128) * 128 * sf_k, np.uint8)
    r, c = np.meshgrid(np.arange(rows), np.arange(sf_k), indexing="ij")
    out[swizzled_offset(r.ravel(), c.ravel(), sf_k)] = sf.ravel()
    return out.reshape(-1, sf_k)


def expected_bytes(x: np.ndarray, gsf: float, swizzled: bool):
    """The reference's codes and scales for x (rows, K), K zero-padded to 64 as FlashInfer pads columns."""
    k = x.shape[1]
    padded = np.pad(x, ((0, 0), (0, -k % 64)))
    codes, sf = R.quantize_blocks(padded, np.float32(gsf))
    packed = R.pack_fp4(codes)[:, : k // 2]
    return packed, swizzled_by_offset(sf) if swizzled else sf[:, : k // 16]


@pytest.mark.parametrize("rows,k", [(1, 64), (130, 256), (300, 48), (77, 2048)])
@pytest.mark.parametrize("swizzled", [True, False])
@pytest.mark.parametrize("entry", ["fp4_quantize", "nvfp4_quantize"])
def test_quantize_bytes(rng, rows, k, swizzled, entry, record_bytes):
    x = spread_values(rng, rows, k)
    gsf = np.float32(448 * 6) / np.float32(np.abs(x).max()) * np.float32(2.0 ** rng.integers(-3, 4))
    gs = torch.tensor([gsf], dtype=torch.float32, device="cuda")
    if entry == "fp4_quantize":
        x_q, sf = flashinfer.fp4_quantize(on_gpu(x), gs, is_sf_swizzled_layout=swizzled)
    else:
        layout = flashinfer.SfLayout.layout_128x4 if swizzled else flashinfer.SfLayout.layout_linear
        x_q, sf = flashinfer.nvfp4_quantize(on_gpu(x), gs, sfLayout=layout)
    packed, want_sf = expected_bytes(x, gsf, swizzled)
    assert x_q.dtype == torch.uint8 and sf.dtype == torch.uint8 and x_q.is_cuda and sf.is_cuda
    assert np.array_equal(x_q.cpu().numpy(), packed), f"seed {SEED}"
    assert np.array_equal(sf.cpu().numpy(), want_sf), f"seed {SEED}"
    record_bytes(packed.size + want_sf.size)


def test_fp4_quantize_column_major_and_leading_dims(rng):
    x = spread_values(rng, 6 * 40, 128)
    gsf = float(np.float32(448 * 6) / np.float32(np.abs(x).max()))
    x_q, sf = flashinfer.fp4_quantize(on_gpu(x).reshape(6, 40, 128), torch.tensor([gsf], device="cuda"))
    packed, want_sf = expected_bytes(x, gsf, True)
    assert tuple(x_q.shape) == (6, 40, 64) and np.array_equal(x_q.reshape(240, 64).cpu().numpy(), packed)
    assert np.array_equal(sf.cpu().numpy(), want_sf)
    # A column-major (K, M) view is quantized along M and comes back transposed, as in FlashInfer.
    cm = on_gpu(x[:40].copy()).t()  # shape (128, 40), stride (1, 128)
    q_t, sf_t = flashinfer.fp4_quantize(cm, torch.tensor([gsf], device="cuda"))
    packed, want_sf = expected_bytes(x[:40], gsf, True)
    assert np.array_equal(q_t.t().cpu().numpy(), packed) and np.array_equal(sf_t.t().cpu().numpy(), want_sf)


def test_silu_and_mul_nvfp4_quantize(rng, record_bytes):
    rows, k = 200, 256
    gate_up = (rng.standard_normal((rows, 2 * k)) * 4).astype(ml_dtypes.bfloat16).astype(np.float32)
    inp = on_gpu(gate_up)
    # FlashInfer's intermediate: float32 silu(gate) * up, rounded to the input dtype.
    h = (F.silu(inp[:, :k].float()) * inp[:, k:].float()).to(torch.bfloat16)
    g64, u64 = inp[:, :k].double().cpu().numpy(), inp[:, k:].double().cpu().numpy()
    assert np.allclose(h.double().cpu().numpy(), g64 / (1 + np.exp(-g64)) * u64, rtol=2**-7, atol=1e-30)
    gsf = float(np.float32(448 * 6) / np.float32(h.float().abs().max().item()))
    x_q, sf = flashinfer.silu_and_mul_nvfp4_quantize(inp, torch.tensor([gsf], device="cuda"))
    packed, want_sf = expected_bytes(h.float().cpu().numpy(), gsf, True)
    assert np.array_equal(x_q.cpu().numpy(), packed) and np.array_equal(sf.cpu().numpy(), want_sf), f"seed {SEED}"
    record_bytes(packed.size + want_sf.size)


@pytest.mark.parametrize("shape", [(300, 8), (4, 77, 16), (130, 6)])
def test_block_scale_interleave_on_gpu(rng, shape):
    sf = rng.integers(0, 256, size=shape, dtype=np.uint8)
    got = flashinfer.block_scale_interleave(torch.from_numpy(sf).cuda())
    assert got.is_cuda and got.dtype == torch.uint8 and got.dim() == 1
    mats = sf.reshape((-1,) + shape[-2:])
    cols = -(-shape[-1] // 4) * 4
    want = np.concatenate([swizzled_by_offset(np.pad(m, ((0, 0), (0, cols - shape[-1])))).ravel() for m in mats])
    assert np.array_equal(got.cpu().numpy(), want)


def test_e2m1_and_ufp8sf_scale_to_float_round_trip(rng):
    rows, k = 130, 512
    x = spread_values(rng, rows, k)
    gsf = np.float32(448 * 6) / np.float32(np.abs(x).max())
    x_q, sf = flashinfer.fp4_quantize(on_gpu(x), torch.tensor([gsf], device="cuda"))
    inv = torch.tensor([np.float32(1) / gsf])
    got = flashinfer.e2m1_and_ufp8sf_scale_to_float(x_q, sf, inv)
    assert got.device.type == "cpu" and got.dtype == torch.float32 and tuple(got.shape) == (rows, k)
    packed, sf_rows = x_q.cpu().numpy(), sf.cpu().numpy()
    codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(rows, k).view(ml_dtypes.float4_e2m1fn)
    offs = swizzled_offset(np.arange(rows)[:, None], np.arange(k // 16)[None, :], k // 16)
    scales = sf_rows.reshape(-1)[offs].view(ml_dtypes.float8_e4m3fn).astype(np.float32) * inv.numpy()[0]
    want = codes.astype(np.float32) * np.repeat(scales, 16, axis=1)
    assert np.array_equal(got.numpy(), want, equal_nan=True)


def test_pad_indptr_to_multiple_of_4_on_gpu():
    ind = torch.tensor([3, 3, 10, 11, 19, 40], dtype=torch.int32, device="cuda")
    padded, rank = flashinfer.gemm.pad_indptr_to_multiple_of_4(ind)
    assert padded.is_cuda and rank.is_cuda and padded.dtype == rank.dtype == torch.int32
    assert padded.tolist() == [0, 0, 8, 12, 20, 44]
    want = [0, 0, 0] + list(range(0, 7)) + [8] + list(range(12, 20)) + list(range(20, 41))
    assert rank.tolist() == want
