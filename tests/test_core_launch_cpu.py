"""core_launch.CoreKernel without a GPU: the arguments reach cuda.core's launch as the widths of the
kernel's ABI (read back from the bytes cuda.core's own argument packer writes, where cuda.core is
installed), the stream and launch configuration are the ones asked for, the primary context is made
current around the launch, and it refuses kernels with a raw tensor map."""
from __future__ import annotations

import ctypes
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ (a source checkout's)
from benchmarks import core_launch  # noqa: E402
from nvfp4_driver import driver  # noqa: E402
from nvfp4_driver.driver import KernelSpec  # noqa: E402

SPEC = KernelSpec("k.cubin", "my_kernel", 128, 4096, ("ptr", "ptr", "i32", "i64", "f32", "i32"))
ARGS = (0x7F00_0000_0100, 0x7F00_0000_0200, -5, 1 << 40, 0.375, 7)
_FMT = {"ptr": "<Q", "i64": "<q", "i32": "<i", "f32": "<f"}


class FakeDriver:
    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self):
        self.current, self.calls = None, []

    def cuCtxGetCurrent(self):
        return 0, self.current

    def cuCtxPushCurrent(self, ctx):
        self.calls.append("push")
        return (0,)

    def cuCtxPopCurrent(self):
        self.calls.append("pop")
        return 0, None

    class CUfunction_attribute:
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8

    def cuLibraryGetKernel(self, lib, name):
        return 0, 0xBEEF

    def cuDeviceGet(self, ordinal):
        return 0, ("device", ordinal)

    def cuKernelSetAttribute(self, attrib, value, kernel, device):
        self.calls.append(("limit", attrib, value, kernel, device))
        return (0,)


class FakeCore(types.ModuleType):
    """cuda.core as CoreKernel uses it; launch records its call and, with the real cuda.core present,
    the bytes its argument packer (ParamHolder) made of each value."""

    LEGACY_DEFAULT_STREAM = "legacy"

    def __init__(self):
        super().__init__("cuda.core")
        self.launches = []
        self.Kernel = types.SimpleNamespace(from_handle=lambda handle: ("kernel", handle))
        self.Stream = types.SimpleNamespace(from_handle=lambda handle: ("stream", handle))
        self.LaunchConfig = lambda **kw: kw

    def launch(self, stream, config, kernel, *values):
        self.launches.append((stream, config, kernel, values, packed(values)))


try:  # imported before any test puts FakeCore in its place
    from cuda.core._kernel_arg_handler import ParamHolder
except ImportError:
    ParamHolder = None


def packed(values):
    if ParamHolder is None:
        return None
    holder = ParamHolder(values)
    slots = (ctypes.c_void_p * len(values)).from_address(holder.ptr)
    return [ctypes.string_at(slots[i], struct.calcsize(_FMT[t])) for i, t in enumerate(SPEC.param_types)]


@pytest.fixture
def core(monkeypatch):
    drv, fake = FakeDriver(), FakeCore()
    monkeypatch.setitem(driver._state, "driver", drv)
    monkeypatch.setattr(driver, "function", lambda spec, ordinal: "FN")
    monkeypatch.setattr(driver, "load_library", lambda file: "LIB")
    monkeypatch.setattr(driver, "primary_context", lambda ordinal: 0xC0)
    monkeypatch.setitem(sys.modules, "cuda.core", fake)
    if "cuda" in sys.modules:  # `import cuda.core` takes the package's attribute once the real one is loaded
        monkeypatch.setattr(sys.modules["cuda"], "core", fake, raising=False)
    monkeypatch.setattr(driver, "_prepared", {})
    fake.drv = drv
    return fake


def test_arguments_reach_cuda_core_at_the_abi_widths(core):
    kernel = core_launch.CoreKernel(SPEC, 0)
    kernel.launch((3, 2, 1), 0x5000, ARGS)
    stream, config, handle, values, raw = core.launches[0]
    assert stream == ("stream", 0x5000) and handle == ("kernel", 0xBEEF)
    assert config == dict(grid=(3, 2, 1), block=(128, 1, 1), shmem_size=4096)
    assert [type(v) for v in values] == [int, int, np.int32, np.int64, np.float32, np.int32]
    if ParamHolder is not None:  # what cuda.core hands the driver, byte for byte
        assert raw == [struct.pack(_FMT[t], a) for t, a in zip(SPEC.param_types, ARGS)]
    assert core.drv.calls == [("limit", 8, 4096, 0xBEEF, ("device", 0)), "push", "pop"]  # no context current:
    # the primary one, around the launch only


def test_default_stream_and_current_context(core):
    core.drv.current = 0xC0
    kernel = core_launch.CoreKernel(SPEC, 0)
    kernel.launch((1, 1, 1), 0, ARGS)
    assert core.launches[0][0] == "legacy" and core.drv.calls[1:] == []
    with pytest.raises(TypeError, match=r"my_kernel takes \(ptr, ptr, i32, i64, f32, i32\)"):
        kernel.launch((1, 1, 1), 0, ARGS[:-1])


def test_kernels_with_a_raw_tensor_map_are_refused(core):
    tma = KernelSpec("k.cubin", "tma_kernel", 128, 0, ("ptr", "i32", "tmap"))
    assert core_launch.CoreKernel.supports(SPEC) and not core_launch.CoreKernel.supports(tma)
    with pytest.raises(TypeError, match="no raw tensor map"):
        core_launch.CoreKernel(tma, 0)
