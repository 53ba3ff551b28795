"""scale_interleave on the CPU: torch tensors (the same torch ops that run on a GPU) and NumPy arrays
against a scatter through layout.swizzled_offset (SPEC §3), with random bytes and odd row counts."""
import numpy as np
import pytest
import torch

from nvfp4_driver.layout import swizzled_offset
from nvfp4_driver.scale_interleave import deinterleave_scales, interleave_scales

SHAPES = [(1, 4), (5, 8), (127, 4), (128, 8), (129, 12), (300, 24), (0, 8)]


def scattered(sf: np.ndarray) -> np.ndarray:
    """The swizzled buffer built byte by byte from the formula: byte (r, kb) at swizzled_offset."""
    rows, sf_k = sf.shape
    rows_pad = -(-rows // 128) * 128
    out = np.zeros(rows_pad * sf_k, dtype=np.uint8)
    r, kb = np.meshgrid(np.arange(rows), np.arange(sf_k), indexing="ij")
    out[swizzled_offset(r.ravel(), kb.ravel(), sf_k)] = sf.ravel()
    return out.reshape(rows_pad, sf_k)


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)


def random_bytes(rng, *shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("rows,sf_k", SHAPES)
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_interleave_matches_formula(rng, rows, sf_k, kind):
    sf = random_bytes(rng, rows, sf_k)
    got = interleave_scales(torch.from_numpy(sf) if kind == "torch" else sf)
    assert isinstance(got, torch.Tensor if kind == "torch" else np.ndarray)
    got = np.asarray(got)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    assert np.array_equal(got, scattered(sf))


@pytest.mark.parametrize("rows,sf_k", SHAPES)
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_deinterleave_inverts_and_ignores_trailing_bytes(rng, rows, sf_k, kind):
    sf = random_bytes(rng, rows, sf_k)
    # Extra trailing bytes (an a_scale sized for more rows) must be ignored, so make them nonzero.
    buf = np.concatenate([scattered(sf).ravel(), random_bytes(rng, 3 * sf_k)])
    got = deinterleave_scales(torch.from_numpy(buf) if kind == "torch" else buf, rows, sf_k)
    assert isinstance(got, torch.Tensor if kind == "torch" else np.ndarray)
    got = np.asarray(got)
    assert got.shape == (rows, sf_k) and got.flags.c_contiguous
    assert np.array_equal(got, sf)


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_batches_are_interleaved_one_by_one(rng, kind):
    sf = random_bytes(rng, 3, 77, 16)
    conv = torch.from_numpy if kind == "torch" else (lambda x: x)
    got = np.asarray(interleave_scales(conv(sf)))
    assert got.shape == (3, 128, 16)
    for g in range(3):
        assert np.array_equal(got[g], scattered(sf[g]))
    back = np.asarray(deinterleave_scales(conv(got), 77, 16))
    assert np.array_equal(back, sf)


def test_torch_keeps_device_and_reads_float8_as_bytes(rng):
    sf = random_bytes(rng, 130, 8)
    sf[sf == 0x7F] = 0  # keep NaN patterns out so the float8 view round-trips by value too
    f8 = torch.from_numpy(sf).view(torch.float8_e4m3fn)
    got = interleave_scales(f8)
    assert got.dtype == torch.uint8 and got.device == f8.device
    assert np.array_equal(got.numpy(), scattered(sf))
    assert np.array_equal(deinterleave_scales(got.view(torch.float8_e4m3fn), 130, 8).numpy(), sf)


def test_non_contiguous_torch_input(rng):
    wide = random_bytes(rng, 200, 16)
    view = torch.from_numpy(wide)[:, ::2]  # (200, 8), stride 2
    assert not view.is_contiguous()
    assert np.array_equal(interleave_scales(view).numpy(), scattered(wide[:, ::2]))


@pytest.mark.parametrize("call,exc,needle", [
    (lambda: interleave_scales(torch.zeros(4, 6, dtype=torch.uint8)), ValueError, "multiple of 4"),
    (lambda: interleave_scales(np.zeros((4, 6), np.uint8)), ValueError, "multiple of 4"),
    (lambda: interleave_scales(torch.zeros(4, 8, dtype=torch.float32)), TypeError, "one-byte"),
    (lambda: interleave_scales(torch.zeros(8, dtype=torch.uint8)), ValueError, "2-D"),
    (lambda: deinterleave_scales(torch.zeros(100, dtype=torch.uint8), 1, 4), ValueError, "needs 512"),
    (lambda: deinterleave_scales(np.zeros(100, np.uint8), 1, 4), ValueError, "needs 512"),
    (lambda: deinterleave_scales(torch.zeros(2, 64, 4, dtype=torch.uint8), 100, 4), ValueError, "each"),
    (lambda: deinterleave_scales(torch.zeros(512, dtype=torch.uint8), -1, 4), ValueError, "rows=-1"),
    (lambda: deinterleave_scales(torch.zeros(512, dtype=torch.uint8), 1, 3), ValueError, "sf_k=3"),
])
def test_errors_say_what_is_wrong(call, exc, needle):
    with pytest.raises(exc, match=needle):
        call()
