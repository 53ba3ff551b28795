"""The driver layer on a toy kernel before any GEMM: loading, launching, argument passing, ABI."""
import struct

import numpy as np
import pytest

from nvfp4_driver import driver, registry, variants
from nvfp4_driver.devmem import DeviceBuffer

_SIZES = {"ptr": 8, "i64": 8, "i32": 4, "f32": 4, "tmap": 16}  # tmap: 128 bytes, placed 16-aligned here; checked apart


@pytest.mark.parametrize("force_ptx", [False, True])
def test_probe_echoes_its_arguments(force_ptx):
    cap = driver.device_info(0).capability
    spec = variants.probe_spec(cap, force_ptx=force_ptx)
    out = DeviceBuffer((8,), "int32")
    rng = np.random.default_rng()
    i64 = int(rng.integers(-2**62, 2**62))
    i32 = int(rng.integers(-2**31, 2**31))
    f32 = float(np.float32(rng.standard_normal() * 1e6))
    driver.launch(spec, 0, (1, 1, 1), 0, registry.probe().args(out=out.ptr, i64=i64, i32=i32, f32=f32))
    got = out.to_numpy().view(np.int64)
    assert got[0] == i64 and got[1] == i32
    assert struct.unpack("<f", struct.pack("<I", int(got[2]) & 0xFFFFFFFF))[0] == f32
    assert got[3] == out.ptr


def test_launch_errors_carry_the_driver_name():
    cap = driver.device_info(0).capability
    spec = variants.probe_spec(cap)
    out = DeviceBuffer((8,), "int32")
    with pytest.raises(driver.CudaError, match="CUDA_ERROR_INVALID_VALUE"):
        driver.launch(driver.KernelSpec(spec.file, spec.symbol, 4096, 0, spec.param_types), 0, (1, 1, 1), 0,
                      registry.probe().args(out=out.ptr, i64=1, i32=2, f32=3.0))


def test_every_gemm_kernel_abi_matches_manifest():
    """cuFuncGetParamInfo on every image this GPU can load vs the manifest's parameter list."""
    cap = driver.device_info(0).capability
    loadable = {variants.target_for(cap)[1].name, "compute_80"}
    if cap == (9, 0):
        loadable.add("twin_sm_90")
    checked = 0
    gemm_families = {f.value for f in variants.Family}
    for name, entry in variants.manifest()["kernels"].items():
        if entry["family"] not in gemm_families:  # the probe; the quantizer family has its own test
            continue
        for target in loadable & set(entry["targets"]):
            v = variants.variant_for(variants.Family(entry["family"]), variants.Tiles(
                entry["tile_m"], entry["tile_n"], entry["tile_k"], entry["swap_ab"]), target)
            spec = variants.kernel_spec(v)
            layout, offset = [], 0
            for t in spec.param_types:
                offset = (offset + _SIZES[t] - 1) // _SIZES[t] * _SIZES[t]
                layout.append((offset, 128 if t == "tmap" else _SIZES[t]))
                offset += layout[-1][1]
            declared = driver.param_info(spec, 0)
            if "tmap" in spec.param_types:  # where the compiler puts a map is its own (driver.layout_mismatch)
                first = spec.param_types.index("tmap")
                assert declared[:first] == layout[:first], (name, target)
                assert driver.layout_mismatch(spec.param_types, declared) is None, (name, target, declared)
            else:
                assert declared == layout, (name, target)
            checked += 1
    assert checked >= 24
