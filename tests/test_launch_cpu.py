"""The launch path without a GPU: argument packing, context handling and per-thread buffers of
``driver.PreparedKernel``, against a fake cuda.bindings driver module that records what it is given."""
import ctypes
import enum
import threading

import pytest

from nvfp4_driver import config, driver
from nvfp4_driver.driver import KernelSpec, PreparedKernel

GEMM_TYPES = ("ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr", "i64", "i64", "i32", "i32", "i32", "i32")
_READ = {"ptr": ctypes.c_uint64, "i64": ctypes.c_int64, "i32": ctypes.c_int32, "f32": ctypes.c_float}


class FakeDriver:
    """Just enough of cuda.bindings.driver for PreparedKernel.launch."""

    class CUresult(enum.IntEnum):
        CUDA_SUCCESS = 0
        CUDA_ERROR_INVALID_VALUE = 1

    def __init__(self, current=None):
        self.current = current
        self.calls = []
        self.fail_launch = False

    def cuCtxGetCurrent(self):
        self.calls.append(("get",))
        return 0, self.current

    def cuCtxPushCurrent(self, ctx):
        self.calls.append(("push", ctx))
        return (0,)

    def cuCtxPopCurrent(self):
        self.calls.append(("pop",))
        return 0, None

    def cuGetErrorName(self, err):
        return 0, b"CUDA_ERROR_INVALID_VALUE"

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        # Read every argument back through the void** the driver would read.
        ptrs = (ctypes.c_void_p * len(self.types)).from_address(params)
        values = tuple(ctypes.string_at(ptrs[i], 128) if t == "tmap" else _READ[t].from_address(ptrs[i]).value
                       for i, t in enumerate(self.types))
        self.calls.append(("launch", fn, (gx, gy, gz), (bx, by, bz), smem, stream, values, extra))
        return (1,) if self.fail_launch else (0,)


class Ctx:
    def __init__(self, value):
        self.value = value

    def __int__(self):
        return self.value


KERNEL_CTX = Ctx(0xC0)  # the primary context every kernel of these tests gets


def make_kernel(types, drv):
    """A PreparedKernel built by its own constructor (its packer, context and buffers as the launch
    path makes them); only the CUfunction and the primary context come from stand-ins."""
    drv.types = types
    return PreparedKernel(KernelSpec("k.cubin", "my_kernel", 256, 1024, tuple(types)), 0)


@pytest.fixture
def fake_driver(monkeypatch):
    drv = FakeDriver()
    monkeypatch.setitem(driver._state, "driver", drv)
    monkeypatch.setattr(driver, "_SUCCESS", 0)
    monkeypatch.setattr(driver, "function", lambda spec, ordinal: "FN")
    monkeypatch.setattr(driver, "primary_context", lambda ordinal: KERNEL_CTX)
    return drv


def test_gemm_arguments_arrive_in_order(fake_driver):
    kernel = make_kernel(GEMM_TYPES, fake_driver)
    args = (0x7F00_0000_0000, 2**64 - 16, 0x10, 0x20, 0x30, 0, 0x40, 2**40 + 3, 12345, 4096, 7168, 256, 1)
    fake_driver.current = Ctx(0xC0)  # another object for the same context
    kernel.launch((3, 4, 1), 77, args)
    (launch,) = [c for c in fake_driver.calls if c[0] == "launch"]
    assert launch[1:] == ("FN", (3, 4, 1), (256, 1, 1), 1024, 77, args, 0)
    assert [c[0] for c in fake_driver.calls] == ["get", "launch"]  # its context was already current


def test_every_parameter_type(fake_driver):
    types = ("ptr", "i64", "i32", "f32", "i32", "ptr")
    kernel = make_kernel(types, fake_driver)
    args = (0xDEADBEEF0, -2**62, -5, 1.5, 2**31 - 1, 0)
    kernel.launch((1, 1, 1), 0, args)
    launch = [c for c in fake_driver.calls if c[0] == "launch"][0]
    assert launch[6] == args


def test_other_context_is_pushed_and_popped(fake_driver):
    kernel = make_kernel(("i32",), fake_driver)
    for current in (None, Ctx(0xAB)):
        fake_driver.calls.clear()
        fake_driver.current = current
        kernel.launch((1, 1, 1), 0, (1,))
        assert fake_driver.calls[:2] == [("get",), ("push", KERNEL_CTX)]
        assert [c[0] for c in fake_driver.calls] == ["get", "push", "launch", "pop"]


def test_launch_failure_pops_and_names_the_error(fake_driver):
    kernel = make_kernel(("i32",), fake_driver)
    fake_driver.fail_launch = True
    with pytest.raises(driver.CudaError, match=r"cuLaunchKernel\(my_kernel\) failed with CUDA_ERROR_INVALID_VALUE"):
        kernel.launch((1, 1, 1), 0, (1,))
    assert [c[0] for c in fake_driver.calls] == ["get", "push", "launch", "pop"]


@pytest.mark.parametrize("args", [(2**64, 1), (-1, 1), (1, 2**31), ("x", 1), (1.5, 1)])
def test_values_that_do_not_fit_are_type_errors(fake_driver, args):
    kernel = make_kernel(("ptr", "i32"), fake_driver)
    with pytest.raises(TypeError, match=r"my_kernel takes \(ptr, i32\)"):
        kernel.launch((1, 1, 1), 0, args)
    assert not fake_driver.calls


def test_buffers_are_per_thread(fake_driver):
    kernel = make_kernel(("i64",), fake_driver)
    seen = {}
    alive = threading.Barrier(4)  # a finished thread's buffers are freed, and their address reused

    def work(i):
        kernel.launch((1, 1, 1), 0, (i,))
        seen[i] = kernel._local.buffers[2]
        alive.wait()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen.values())) == 4  # four threads, four parameter arrays
    assert sorted(c[6][0] for c in fake_driver.calls if c[0] == "launch") == [0, 1, 2, 3]


def test_launch_checks_the_argument_count():
    spec = KernelSpec("k.cubin", "my_kernel", 256, 0, ("ptr", "i32"))
    with pytest.raises(TypeError, match="my_kernel takes 2 arguments, got 3"):
        driver.launch(spec, 0, (1, 1, 1), 0, (1, 2, 3))


def test_flags_follow_the_environment(monkeypatch):
    for name in config.FLAG_NAMES:
        monkeypatch.delenv(name, raising=False)
    assert config.flags() == config.Flags() == (False, False, False, False, False)
    monkeypatch.setenv("NVFP4_DRIVER_CHECK", " Yes ")
    monkeypatch.setenv("NVFP4_DRIVER_TWIN", "0")
    assert config.flags() == config.Flags(check=True)
    assert config.flags().check and not config.flags().twin
    monkeypatch.setenv("NVFP4_DRIVER_FORCE_PTX", "on")
    monkeypatch.setenv("NVFP4_DRIVER_LOG", "TRUE")
    assert config.flags() == config.Flags(force_ptx=True, log=True, check=True)
    monkeypatch.delenv("NVFP4_DRIVER_CHECK")
    assert config.flags() == config.Flags(force_ptx=True, log=True)
    monkeypatch.setenv("NVFP4_DRIVER_PORTABLE", "1")
    assert config.flags() == config.Flags(force_ptx=True, log=True, portable=True) and config.flags().portable

def test_tensor_map_parameters_get_aligned_128_byte_slots(fake_driver):
    """A CUtensorMap parameter (the TMA kernels' "tmap") sits 64-byte aligned in the parameter space
    after the scalars, and its 128 bytes reach the launch unchanged."""
    types = ("ptr", "i32", "tmap", "i32", "tmap")
    assert driver.expected_layout(types) == [(0, 8), (8, 4), (16, 128), (144, 4), (160, 128)]
    # what sm_90 and sm_120 images report for the same list (their parameter bases differ)
    assert driver.layout_mismatch(types, [(0, 8), (8, 4), (16, 128), (144, 4), (160, 128)]) is None
    assert driver.layout_mismatch(types, [(0, 8), (8, 4), (128, 128), (256, 4), (384, 128)]) is None
    assert "parameter 1" in driver.layout_mismatch(types, [(0, 8), (12, 4), (16, 128), (144, 4), (160, 128)])
    assert "parameter 3" in driver.layout_mismatch(types, [(0, 8), (8, 4), (16, 128), (136, 4), (160, 128)])
    kernel = make_kernel(types, fake_driver)
    maps = (bytes(range(128)), bytes(range(128, 256)))
    kernel.launch((1, 1, 1), 0, (0x1234, 7, maps[0], -3, maps[1]))
    params = kernel._local.buffers[1]
    assert all(p % 64 == 0 for p in (params[2], params[4]))
    (launch,) = [c for c in fake_driver.calls if c[0] == "launch"]
    assert launch[6] == (0x1234, 7, maps[0], -3, maps[1])
