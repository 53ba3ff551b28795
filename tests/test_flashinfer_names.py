"""nvfp4_driver.flashinfer on the CPU: FlashInfer's documented signatures, the host and NumPy paths
against transcriptions of FlashInfer's own index rules, skip_check, the manifest answer, and the
NotImplementedError of every option we do not write. The GPU quantizers are in tests/gpu."""
import inspect
import json

import ml_dtypes
import numpy as np
import pytest
import torch

import nvfp4_driver.flashinfer as flashinfer
from nvfp4_driver import ops, registry, variants
from test_bad_inputs import _checked_case, fake_gpu  # noqa: F401 (fixture)

# FlashInfer's documented signatures (its API docs / docstrings): (name, default) in order; ... = required.
DOCUMENTED = {
    "fp4_quantize": [("input", ...), ("global_scale", None), ("sf_vec_size", 16), ("sf_use_ue8m0", False),
                     ("is_sf_swizzled_layout", True), ("is_sf_8x4_layout", False),
                     ("is_global_scale_inversed", False), ("enable_pdl", None), ("backend", "cuda")],
    "nvfp4_quantize": [("a", ...), ("a_global_sf", ...), ("sfLayout", flashinfer.SfLayout.layout_128x4),
                       ("do_shuffle", False), ("sf_vec_size", 16), ("enable_pdl", None), ("backend", "cuda"),
                       ("per_token_activation", False), ("expanded_idx_to_permuted_idx", None)],
    "silu_and_mul_nvfp4_quantize": [("input", ...), ("global_scale", ...), ("sf_vec_size", 16),
                                    ("is_sf_swizzled_layout", True), ("is_sf_8x4_layout", False),
                                    ("enable_pdl", None)],
    "block_scale_interleave": [("unswizzled_sf", ...)],
    "e2m1_and_ufp8sf_scale_to_float": [("e2m1_tensor", ...), ("ufp8_scale_tensor", ...),
                                       ("global_scale_tensor", None), ("sf_vec_size", 16), ("ufp8_type", 1),
                                       ("is_sf_swizzled_layout", True), ("is_sf_8x4_layout", False)],
    "gemm.group_gemm_nvfp4_nt_groupwise": [("a", ...), ("b", ...), ("a_scale", ...), ("b_scale", ...),
                                           ("m_indptr", ...), ("alpha", None), ("tile_m", 128), ("tile_n", 128),
                                           ("tile_k", 128), ("swap_ab", True), ("out", None), ("out_dtype", None),
                                           ("skip_check", False)],
    "gemm.pad_indptr_to_multiple_of_4": [("m_indptr", ...)],
}


def _resolve(name):
    obj = flashinfer
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_signature_is_flashinfers(name):
    params = inspect.signature(_resolve(name)).parameters.values()
    got = [(p.name, ... if p.default is inspect.Parameter.empty else p.default) for p in params]
    assert got == DOCUMENTED[name]


def test_names_where_flashinfer_has_them():
    assert flashinfer.nvfp4_block_scale_interleave is flashinfer.block_scale_interleave
    assert [(m.name, int(m)) for m in flashinfer.SfLayout] == [("layout_128x4", 0), ("layout_8x4", 1),
                                                               ("layout_linear", 2)]
    assert not hasattr(flashinfer, "group_gemm_nvfp4_nt_groupwise")  # flashinfer.gemm only, as FlashInfer


# ------------------------------------------------------------------------- block_scale_interleave

def flashinfer_sf_index(row, col, cols):
    """FlashInfer's (TensorRT-LLM's) computeSFIndex for the 128x4 layout, transcribed: columns padded to 4."""
    padded_cols = -(-cols // 4) * 4
    return (col % 4 + (col // 4) * 512 + (row % 32) * 16 + (row % 128) // 32 * 4
            + (row // 128) * 128 * padded_cols)


def interleaved_by_index(sf: np.ndarray) -> np.ndarray:
    experts, rows, cols = sf.shape
    size = -(-rows // 128) * 128 * -(-cols // 4) * 4
    out = np.zeros(experts * size, np.uint8)
    for e in range(experts):
        for r in range(rows):
            for c in range(cols):
                out[e * size + flashinfer_sf_index(r, c, cols)] = sf[e, r, c]
    return out


@pytest.mark.parametrize("shape", [(1, 4), (77, 6), (130, 8), (3, 50, 3), (2, 128, 12)])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_block_scale_interleave_is_flashinfers_layout(rng, shape, kind):
    sf = rng.integers(0, 256, size=shape, dtype=np.uint8)
    got = flashinfer.block_scale_interleave(torch.from_numpy(sf) if kind == "torch" else sf)
    assert isinstance(got, torch.Tensor if kind == "torch" else np.ndarray)
    got = np.asarray(got)
    assert got.ndim == 1 and got.dtype == np.uint8
    assert np.array_equal(got, interleaved_by_index(sf.reshape((-1,) + shape[-2:])))


def test_block_scale_interleave_dtypes():
    with pytest.raises(NotImplementedError, match="bfloat16"):
        flashinfer.block_scale_interleave(torch.zeros(4, 4, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="torch.uint8"):
        flashinfer.block_scale_interleave(torch.zeros(4, 4, dtype=torch.int16))


# ---------------------------------------------------------------------- e2m1_and_ufp8sf_scale_to_float

def decoded_by_ml_dtypes(packed: np.ndarray, sf: np.ndarray, gs: np.float32) -> np.ndarray:
    """An independent decode: ml_dtypes' e2m1 and e4m3fn (sign bit cleared, SPEC §1)."""
    codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1)
    values = codes.view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    scales = (sf & 0x7F).view(ml_dtypes.float8_e4m3fn).astype(np.float32) * gs
    return values * np.repeat(scales, 16, axis=1)


@pytest.mark.parametrize("m,k", [(1, 64), (130, 128), (5, 48), (200, 256)])
@pytest.mark.parametrize("swizzled", [True, False])
def test_e2m1_and_ufp8sf_scale_to_float(rng, m, k, swizzled):
    packed = rng.integers(0, 256, size=(m, k // 2), dtype=np.uint8)
    sf = rng.integers(0, 256, size=(m, k // 16), dtype=np.uint8)
    gs = np.float32(2.0 ** rng.uniform(-20, 5))
    buf = interleaved_by_index(sf[None]) if swizzled else sf.reshape(-1)
    got = flashinfer.e2m1_and_ufp8sf_scale_to_float(torch.from_numpy(packed), torch.from_numpy(buf),
                                                    torch.tensor([gs]), is_sf_swizzled_layout=swizzled)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (m, k)
    want = decoded_by_ml_dtypes(packed, sf, gs)
    assert np.array_equal(got.numpy(), want, equal_nan=True)


@pytest.mark.parametrize("kwargs,exc,needle", [
    ({"ufp8_type": 0}, NotImplementedError, "ufp8_type=0"),
    ({"sf_vec_size": 32}, NotImplementedError, "sf_vec_size=32"),
    ({"is_sf_8x4_layout": True}, NotImplementedError, "is_sf_8x4_layout"),
    ({"global_scale_tensor": None}, ValueError, "global_scale_tensor is required"),
    ({"ufp8_scale_tensor": torch.zeros(100, dtype=torch.uint8)}, ValueError, "needs 1024"),
])
def test_e2m1_and_ufp8sf_scale_to_float_refusals(kwargs, exc, needle):
    args = dict(e2m1_tensor=torch.zeros(2, 64, dtype=torch.uint8), ufp8_scale_tensor=torch.zeros(1024, dtype=torch.uint8),
                global_scale_tensor=torch.ones(1))
    args.update(kwargs)
    with pytest.raises(exc, match=needle):
        flashinfer.e2m1_and_ufp8sf_scale_to_float(**args)


# ------------------------------------------------------------------------- pad_indptr_to_multiple_of_4

def padding_by_loop(ind):
    """FlashInfer's compute_padding_mapping, one row at a time."""
    padded = [0]
    for g in range(len(ind) - 1):
        padded.append(padded[-1] + -(-(ind[g + 1] - ind[g]) // 4) * 4)
    rank = [0] * ind[-1]
    for g in range(len(ind) - 1):
        for i in range(ind[g + 1] - ind[g]):
            rank[ind[g] + i] = padded[g] + i
    return padded, rank


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_pad_indptr_to_multiple_of_4(rng, kind):
    for _ in range(20):
        ind = np.concatenate(([rng.integers(0, 5)], rng.integers(0, 9, size=rng.integers(1, 6)))).cumsum()
        ind = ind.astype(np.int32)
        arg = torch.from_numpy(ind) if kind == "torch" else ind
        padded, rank = flashinfer.gemm.pad_indptr_to_multiple_of_4(arg)
        want_padded, want_rank = padding_by_loop(ind.tolist())
        assert np.asarray(padded).dtype == np.int32 and np.asarray(rank).dtype == np.int32
        assert np.asarray(padded).tolist() == want_padded and np.asarray(rank).tolist() == want_rank


# ------------------------------------------------------------------------------- the GEMM's extras

def test_is_compute_capability_supported_reads_the_manifest(monkeypatch):
    supported = flashinfer.gemm.group_gemm_nvfp4_nt_groupwise.is_compute_capability_supported
    assert [supported(cc) for cc in (70, 75, 80, 86, 89, 90, 100, 120, 121)] == [False] * 2 + [True] * 7
    # Drop the sm_120a build of the default cut from a copy of the manifest: 12.0 is no longer served.
    edited = json.loads(json.dumps(variants.manifest()))
    del edited["kernels"]["sm120_nvfp4_grouped_gemm_m128n128k128_swapab"]["targets"]["sm_120a"]
    edited_entries = registry.read_entries(edited["kernels"])
    monkeypatch.setattr(registry, "entries", lambda: edited_entries)
    registry._gemm_index.cache_clear()
    try:
        assert not supported(120) and supported(121)
    finally:
        registry._gemm_index.cache_clear()
    with pytest.raises(TypeError, match="major\\*10\\+minor"):
        supported("sm_120")


@pytest.mark.parametrize("entry", ["flashinfer", "nvfp4_driver"])
def test_skip_check_skips_the_m_indptr_read(fake_gpu, monkeypatch, entry):
    case = _checked_case()
    for arg in case.args.values():
        arg.kind = "cai"  # FlashInfer's signature has no stream=: CAI arrays without one launch on stream 0
    seen = []
    monkeypatch.setattr(ops, "_host_m_indptr", lambda ptr, *a, **k: seen.append(ptr) or np.array([0, 50, 40, 100],
                                                                                                  np.int32))
    monkeypatch.setenv("NVFP4_DRIVER_CHECK", "1")
    gemm = (flashinfer.gemm.group_gemm_nvfp4_nt_groupwise if entry == "flashinfer"
            else ops.group_gemm_nvfp4_nt_groupwise)
    made = {name: arg.make() for name, arg in case.args.items()}
    call = [made[n] for n in ("a", "b", "a_scale", "b_scale", "m_indptr")]
    with pytest.raises(ValueError, match="non-decreasing"):  # skip_check=False: the variable's check runs
        gemm(*call, out=made["out"])
    assert len(seen) == 1 and not fake_gpu.launches
    gemm(*call, out=made["out"], skip_check=True)
    assert len(seen) == 1 and len(fake_gpu.launches) == 1
    with pytest.raises(TypeError, match="skip_check"):
        gemm(*call, out=made["out"], skip_check=1)


# ------------------------------------------------------------------ options we do not write (no GPU)

X = torch.zeros(4, 64, dtype=torch.bfloat16)


@pytest.mark.parametrize("call,needle", [
    (lambda: flashinfer.fp4_quantize(X, sf_use_ue8m0=True), "sf_use_ue8m0=True"),
    (lambda: flashinfer.fp4_quantize(X, sf_vec_size=32), "sf_vec_size=32"),
    (lambda: flashinfer.fp4_quantize(X, is_sf_8x4_layout=True), "is_sf_8x4_layout=True"),
    (lambda: flashinfer.fp4_quantize(X.to(torch.float8_e4m3fn)), "input.dtype"),
    (lambda: flashinfer.nvfp4_quantize(X, 1.0, do_shuffle=True), "do_shuffle=True"),
    (lambda: flashinfer.nvfp4_quantize(X, 1.0, per_token_activation=True), "per_token_activation=True"),
    (lambda: flashinfer.nvfp4_quantize(X, 1.0, sfLayout=flashinfer.SfLayout.layout_8x4), "sfLayout"),
    (lambda: flashinfer.silu_and_mul_nvfp4_quantize(X, 1.0, sf_vec_size=32), "sf_vec_size=32"),
])
def test_unsupported_options_say_so(call, needle):
    with pytest.raises(NotImplementedError, match=needle):
        call()


@pytest.mark.parametrize("call,needle", [
    (lambda: flashinfer.fp4_quantize(torch.zeros(4, 40, dtype=torch.bfloat16)), "K % 16 == 0 along its last"),
    (lambda: flashinfer.fp4_quantize(X, backend="triton"), "backend='triton'"),
    (lambda: flashinfer.silu_and_mul_nvfp4_quantize(torch.zeros(4, 48), 1.0), "2K with K % 16 == 0"),
])
def test_bad_arguments_say_what_is_wrong(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
