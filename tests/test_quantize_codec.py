"""The quantizer kernels' codecs on the CPU: kernels_cu/nvfp4_quantize.cuh built for the host and
compared with nvfp4_driver.reference (SPEC §4), byte for byte.

The header is the code the GPU runs (its float steps go through __fmul_rn/__fadd_rn/__frcp_rn on
the device and plain IEEE float32 operations here), so a mismatch here is a mismatch on every GPU.
The inputs walk every bfloat16 and float16 value, every float32 within 4096 ulps of each rounding
boundary and of each representable value, and random bit patterns; the block quantizer gets the
cases SPEC §4 names (ties, saturation, zero blocks, subnormal scales, NaN and Inf).
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from nvfp4_driver import reference as R

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def host_codec(tmp_path_factory):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    lib = tmp_path_factory.mktemp("codec") / "libcodec.so"
    # -ffp-contract=off: no FMA may fuse the separately rounded steps, as -fmad=false on the device.
    subprocess.run([cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off",
                    str(ROOT / "tests" / "quantize_codec_host.cpp"), "-o", str(lib)], check=True)
    so = ctypes.CDLL(str(lib))
    p = ctypes.c_void_p
    for fn in (so.encode_e2m1_n, so.encode_ue4m3_n):
        fn.argtypes = [p, p, ctypes.c_int64]
    so.decode_n.argtypes = [p, p, p, p, ctypes.c_int64]
    so.quantize_blocks.argtypes = [p, ctypes.c_int64, ctypes.c_int64, ctypes.c_float, p, p]
    so.quantize_blocks.restype = ctypes.c_int64
    return so


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def host_encode(so, fn: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint8)
    getattr(so, fn)(_ptr(x), _ptr(out), x.size)
    return out


def host_quantize(so, x: np.ndarray, gsf: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, k = x.shape
    codes = np.empty((rows, k), dtype=np.uint8)
    sf = np.empty((rows, k // 16), dtype=np.uint8)
    host_quantize.plain_blocks = so.quantize_blocks(_ptr(x), rows, k, ctypes.c_float(gsf), _ptr(codes), _ptr(sf))
    return codes, sf


def _near(values, ulps: int = 4096) -> np.ndarray:
    """Every float32 within ``ulps`` of each value (both signs), as one array."""
    bits = np.abs(np.asarray(values, dtype=np.float32)).view(np.uint32).astype(np.int64)
    steps = np.arange(-ulps, ulps + 1)
    around = (bits[:, None] + steps[None, :]).reshape(-1)
    around = around[(around >= 0) & (around < 0x7F800000)].astype(np.uint32).view(np.float32)
    return np.concatenate([around, -around])


_SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, np.float32(3.4028235e38),
                     np.float32(1.4e-45), np.float32(1.1754944e-38)], dtype=np.float32)
_SNAN = np.array([0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FC00001, 0xFFFFFFFF], dtype=np.uint32).view(np.float32)


def _all16() -> np.ndarray:
    b = np.arange(1 << 16, dtype=np.uint32)
    bf16 = (b << 16).view(np.float32)
    f16 = b.astype(np.uint16).view(np.float16).astype(np.float32)
    return np.concatenate([bf16, f16])


def test_e2m1_encoder_matches_reference(host_codec, rng):
    boundaries = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 7.0] + list(R.E2M1_VALUES[:8])
    x = np.concatenate([_all16(), _near(boundaries), _SPECIAL, _SNAN,
                        rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    got = host_encode(host_codec, "encode_e2m1_n", x)
    with np.errstate(invalid="ignore"):
        want = R.encode_e2m1(x)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(hex(int(x.view(np.uint32)[i])), int(want[i]), int(got[i])) for i in bad[:8]]
    # The oracle's oracle: ml_dtypes rounds to nearest even and saturates fp4 at 6 (finite inputs).
    finite = np.isfinite(x)
    expected = R.encode_e2m1(np.clip(x[finite], -6, 6).astype(ml_dtypes.float4_e2m1fn).astype(np.float32))
    np.testing.assert_array_equal(got[finite], expected)


def test_ue4m3_encoder_matches_reference(host_codec, rng):
    values = R.UE4M3_VALUES[:0x7F]
    mids = (values[1:].astype(np.float64) + values[:-1]) / 2
    x = np.concatenate([np.abs(_all16()), _near(np.concatenate([values, mids, [464.0, 480.0, 2.0**-6, 2.0**-9]])),
                        np.abs(_SPECIAL), np.abs(_SNAN),
                        rng.integers(0, 1 << 31, size=1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    x = np.abs(x)
    got = host_encode(host_codec, "encode_ue4m3_n", x)
    with np.errstate(invalid="ignore"):
        want = R.encode_ue4m3(x)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(hex(int(x.view(np.uint32)[i])), int(want[i]), int(got[i])) for i in bad[:8]]
    finite = np.isfinite(x)
    expected = np.minimum(x[finite], 448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(got[finite], expected)


def test_decoders_are_exact(host_codec):
    codes = np.arange(256, dtype=np.uint8) & 0xF
    scales = np.arange(256, dtype=np.uint8)
    e2m1 = np.empty(256, np.float32)
    ue4m3 = np.empty(256, np.float32)
    host_codec.decode_n(_ptr(codes), _ptr(scales), _ptr(e2m1), _ptr(ue4m3), 256)
    np.testing.assert_array_equal(e2m1.view(np.uint32), R.E2M1_VALUES[codes].view(np.uint32))
    nan = np.isnan(R.UE4M3_VALUES)
    np.testing.assert_array_equal(np.isnan(ue4m3), nan)
    np.testing.assert_array_equal(ue4m3[~nan], R.UE4M3_VALUES[~nan])


def tie_blocks(rng, rows: int) -> np.ndarray:
    """Blocks whose scaled values land exactly on e2m1 ties (0.25, 0.75, ..., 5) and on e4m3 ties.

    The block max is 6 * 2^e, so sf = gsf * 2^e exactly (gsf a power of two) and the scale is an
    exact power of two: every element's scaled value is then exactly the chosen tie point.
    """
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.0, 6.0, 5.5, 4.5, 3.0])
    blocks = rng.choice(ties, size=(rows, 16)) * rng.choice([-1.0, 1.0], size=(rows, 16))
    blocks[:, 0] = 6.0
    return (blocks * 2.0 ** rng.integers(-20, 20, size=(rows, 1))).astype(np.float32)


def crafted_rows(rng) -> np.ndarray:
    """(rows, 64) float32 covering SPEC §4's cases, 4 blocks per row."""
    parts = [
        tie_blocks(rng, 64).reshape(16, 64),
        np.zeros((2, 64), np.float32),                                               # all-zero blocks
        (rng.standard_normal((8, 64)) * 2.0 ** rng.integers(-40, 40, (8, 1))).astype(np.float32),
        (rng.standard_normal((4, 64)) * 1e37).astype(np.float32),                     # saturates
        (rng.standard_normal((4, 64)) * 1e-42).astype(np.float32),                    # subnormal inputs
    ]
    special = (rng.standard_normal((8, 64))).astype(np.float32)
    special[0, 3], special[1, 17], special[2, 40] = np.nan, np.inf, -np.inf
    special[3, :16] = -0.0
    special[4, 5] = -np.nan
    special[5, 20:36] = np.inf
    parts.append(special)
    # e4m3 ties: amax such that gsf * amax / 6 lies halfway between two scale values.
    mids = (R.UE4M3_VALUES[1:0x7E].astype(np.float64) + R.UE4M3_VALUES[:0x7D]) / 2
    tie_rows = np.zeros((len(mids) // 4 + 1, 64), np.float32)
    flat = tie_rows.reshape(-1, 16)
    flat[: len(mids), 0] = (mids * 6).astype(np.float32)
    flat[: len(mids), 1:] = rng.uniform(-1, 1, (len(mids), 15)).astype(np.float32) * flat[: len(mids), :1]
    parts.append(tie_rows)
    return np.concatenate(parts)


@pytest.mark.parametrize("gsf", [1.0, 448 * 6 / 3.7, 2.0**-20, 2.0**30, 1e-30, 3e38, 2.0**-140])
def test_block_quantizer_matches_reference(host_codec, rng, gsf):
    x = crafted_rows(rng)
    codes, sf = host_quantize(host_codec, x, gsf)
    want_codes, want_sf = R.quantize_blocks(x, gsf)
    np.testing.assert_array_equal(sf, want_sf)
    np.testing.assert_array_equal(codes, want_codes)
    if gsf in (1.0, 448 * 6 / 3.7):  # both encoder paths ran (the others make nearly every block special)
        assert 0 < host_quantize.plain_blocks < x.size // 16, host_quantize.plain_blocks


def test_random_blocks_and_global_scales(host_codec, rng):
    for _ in range(20):
        x = (rng.standard_normal((32, 256)) * 2.0 ** rng.integers(-30, 30, (32, 16)).repeat(16, 1)).astype(np.float32)
        gsf = float(np.float32(448 * 6 / np.abs(x).max() * 2.0 ** rng.integers(-6, 7)))
        codes, sf = host_quantize(host_codec, x, gsf)
        want_codes, want_sf = R.quantize_blocks(x, gsf)
        np.testing.assert_array_equal(sf, want_sf)
        np.testing.assert_array_equal(codes, want_codes)


@pytest.mark.parametrize("gsf", [0.0, -1.0, np.inf, np.nan])
def test_invalid_global_scale_gives_nan_scales(host_codec, rng, gsf):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    x[0] = 0
    codes, sf = host_quantize(host_codec, x, gsf)
    assert (sf == 0x7F).all() and (codes == 7).all()
