"""Interop pieces that need no GPU: DeviceBuffer's DLPack export, the output allocation for frameworks
other than torch and CuPy, and the torch.library ops (fake implementations, dynamo tracing)."""
import gc
import weakref

import numpy as np
import pytest
import torch

import nvfp4_driver as nd
from nvfp4_driver import devmem, dlpack, driver, ops, outputs, plans, tensors
from nvfp4_driver.devmem import DeviceBuffer, _DType
from nvfp4_driver.dlpack import read_capsule

FAKE_PTR = 0x7F00_0000_0000


def fake_buffer(shape=(3, 8), dtype="bfloat16", device=0, stream=None):
    """A DeviceBuffer over an address nobody dereferences (no cuMemAlloc)."""
    buf = object.__new__(DeviceBuffer)
    buf.shape, buf.dtype, buf.device, buf.stream = shape, _DType(dtype), device, stream
    buf.nbytes = int(np.prod(shape)) * buf.dtype.itemsize
    buf.ptr = FAKE_PTR
    return buf


def forget(buf):
    buf.ptr = 0  # never cuMemFree the fake address


@pytest.mark.parametrize("versioned", [False, True])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "uint8", "int32", "float32"])
def test_dlpack_export_describes_the_buffer(versioned, dtype):
    buf = fake_buffer((5, 6), dtype, device=1)
    assert buf.__dlpack_device__() == (dlpack.kDLCUDA, 1)
    capsule = buf.__dlpack__(max_version=(1, 1) if versioned else None)
    view = read_capsule(capsule, "out")
    assert (view.ptr, view.shape, view.strides, view.dtype, view.device_type, view.device_id, view.readonly) == \
        (FAKE_PTR, (5, 6), (6, 1), dtype, dlpack.kDLCUDA, 1, False)
    # Our own marshaller takes it back as a device array.
    arr = tensors.as_device_array(buf, "out")
    assert (arr.ptr, arr.shape, arr.dtype) == (FAKE_PTR, (5, 6), dtype)
    del capsule, view
    forget(buf)


def test_dlpack_export_keeps_the_buffer_alive_until_released():
    buf = fake_buffer()
    ref = weakref.ref(buf)
    capsule = buf.__dlpack__()
    forget(buf)
    del buf
    gc.collect()
    assert ref() is not None and len(devmem._exports) == 1  # the capsule holds it
    del capsule  # never consumed: its destructor calls the deleter
    gc.collect()
    assert ref() is None and not devmem._exports


def test_dlpack_consumer_calls_the_deleter():
    import ctypes

    buf = fake_buffer()
    forget(buf)
    capsule = buf.__dlpack__()
    # What a consumer does: take the pointer, rename the capsule, call the deleter when done.
    get = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
    rename = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_SetName", ctypes.pythonapi))
    address = get(capsule, b"dltensor")
    assert rename(capsule, b"used_dltensor") == 0
    del capsule
    gc.collect()
    assert address in devmem._exports  # renamed: the destructor leaves the tensor to its consumer
    managed = dlpack.DLManagedTensor.from_address(address)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(managed.deleter)(address)
    assert address not in devmem._exports


def test_dlpack_orders_the_consumer_after_the_writer(monkeypatch):
    waits = []
    monkeypatch.setattr(driver, "stream_wait", lambda consumer, producer, device: waits.append((consumer, producer)))
    buf = fake_buffer(stream=0xAB)
    buf.__dlpack__(stream=0xCD)
    buf.__dlpack__(stream=None)   # the legacy default stream
    buf.__dlpack__(stream=-1)     # the consumer asks for no ordering
    buf.__dlpack__(stream=0xAB)   # the same stream: nothing to wait for
    buf.stream = 0                # written on the legacy stream, read on it
    buf.__dlpack__(stream=1)
    assert waits == [(0xCD, 0xAB), (1, 0xAB)]
    with pytest.raises(ValueError, match="stream=0 is not a DLPack CUDA stream"):
        buf.__dlpack__(stream=0)
    with pytest.raises(BufferError, match="copy=True"):
        buf.__dlpack__(copy=True)
    assert buf.__cuda_array_interface__["stream"] == 1  # CAI forbids 0: the legacy stream is 1
    forget(buf)


def test_allocate_device_buffer_for_other_frameworks(monkeypatch):
    made = []

    class Recorder(DeviceBuffer):
        def __init__(self, shape, dtype, device=0):
            made.append((shape, dtype, device))
            self.shape, self.dtype, self.device, self.stream = tuple(shape), _DType(dtype), device, None
            self.nbytes, self.ptr = 0, FAKE_PTR

    monkeypatch.setattr(devmem, "DeviceBuffer", Recorder)
    like = tensors.DeviceArray(FAKE_PTR, (4, 8), (8, 1), "uint8", None, "cai", None)
    obj, arr = outputs.allocate(like, (5, 16), "float16", device=3)
    assert made == [((5, 16), "float16", 3)]
    assert (arr.shape, arr.dtype, arr.device, arr.ptr) == ((5, 16), "float16", 3, FAKE_PTR)
    forget(obj)


# ---------------------------------------------------------------------------------------------------
# torch.library
# ---------------------------------------------------------------------------------------------------

def meta_inputs(g=3, cum_m=50, n=64, k=256):
    def t(shape, dtype=torch.uint8):
        return torch.empty(shape, dtype=dtype, device="meta")
    return (t((cum_m, k // 2)), t((g, n, k // 2)), t((640, k // 16)), t((g, 128, k // 16)), t((g + 1,), torch.int32),
            t((g,), torch.float32))


def test_ops_are_registered_once_torch_is_imported():
    from nvfp4_driver import torch_hooks

    assert torch_hooks.is_compiling is not None and set(torch_hooks.traced_forms) == {
        "group_gemm", "quantize_activations", "quantize_weights", "dequantize", "global_scale_from_amax",
        "alpha_from_global_scales", "silu_mul_quantize_activations", "silu_mul_global_scale_from_amax"}
    assert hasattr(torch.ops.nvfp4_driver, "group_gemm_nvfp4_nt_groupwise")
    assert hasattr(torch.ops.nvfp4_driver, "group_gemm_nvfp4_nt_groupwise_out")


@pytest.mark.parametrize("out_dtype", [None, torch.float16, torch.bfloat16])
def test_fake_implementation_gives_shape_and_dtype(out_dtype):
    y = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(*meta_inputs(), out_dtype=out_dtype)
    assert y.device.type == "meta" and tuple(y.shape) == (50, 64) and y.dtype == (out_dtype or torch.bfloat16)
    with pytest.raises(ValueError, match=r"b\.shape=\(3, 64, 128\) but K/2=64"):
        a, *rest = meta_inputs()
        torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(a[:, :64], *rest)


def test_dynamo_traces_the_public_function_into_the_ops():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def block(a, b, a_scale, b_scale, m_indptr, alpha, out):
        y = nd.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_n=64, out_dtype="fp16")
        nd.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, out=out)
        return y.float() * 2

    torch._dynamo.reset()
    compiled = torch.compile(block, backend=backend, fullgraph=True)
    args = meta_inputs()
    out = torch.empty((50, 64), dtype=torch.bfloat16, device="meta")
    y = compiled(*args, out)
    assert tuple(y.shape) == (50, 64) and y.dtype == torch.float32
    (gm,) = graphs
    targets = {str(node.target).removesuffix(".default") for node in gm.graph.nodes if node.op == "call_function"}
    assert {"nvfp4_driver.group_gemm_nvfp4_nt_groupwise", "nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out"} <= targets
    torch._dynamo.reset()


def test_traced_call_refuses_stream_and_checked_mode():
    from nvfp4_driver import torch_ops

    args = meta_inputs()
    with pytest.raises(ValueError, match="not available under torch.compile"):
        torch_ops.traced_gemm(*args, 128, 128, 128, True, None, None, 5, None)
    with pytest.raises(ValueError, match="not available under torch.compile"):
        torch_ops.traced_gemm(*args, 128, 128, 128, True, None, None, None, True)


def test_torch_fast_path_key_is_the_remembered_one(monkeypatch):
    """The key the public function builds inline equals the one _remember_torch stores (else the fast
    path would never hit and every call would silently take the general path)."""
    from nvfp4_driver import config

    launches = []
    a, b = torch.zeros(100, 128, dtype=torch.uint8), torch.zeros(2, 64, 128, dtype=torch.uint8)
    a_scale, b_scale = torch.zeros(512, 16, dtype=torch.uint8), torch.zeros(2, 128, 16, dtype=torch.uint8)
    m_indptr, alpha = torch.zeros(3, dtype=torch.int32), torch.ones(2)
    out = torch.empty(100, 64, dtype=torch.float16)
    entry = object.__new__(plans.TorchPlan)
    entry.launch, entry.grid, entry.tail = (lambda grid, stream, args: launches.append(args)), (3, 1, 1), (1,)
    entry.ordinal, entry.out_shape, entry.out_dtype, entry.device = 0, (100, 64), torch.float16, a.device
    monkeypatch.setattr(plans, "torch_plans", {})
    monkeypatch.setattr(ops, "_raw_stream", [lambda device: 0])
    monkeypatch.setattr(ops, "_TorchTensor", [torch.Tensor])  # as after a first torch call, whatever ran before
    given = (a, b, a_scale, b_scale, m_indptr, alpha, out)
    plans.torch_plans[plans.torch_key(given, 128, 64, 256, False, "fp16", config.flags())] = entry
    assert nd.group_gemm_nvfp4_nt_groupwise(*given[:5], alpha, 128, 64, 256, False, out, "fp16") is out
    assert len(launches) == 1 and launches[0][:7] == tuple(t.data_ptr() for t in given) and launches[0][7:] == (1,)
    # Any other metadata misses and takes the general path (which refuses CPU tensors).
    with pytest.raises(ValueError, match="on the CPU"):
        nd.group_gemm_nvfp4_nt_groupwise(*given[:5], alpha, 128, 64, 256, True, out, "fp16")


class _FakeCupyNdarray:
    """The attributes _from_cupy reads from a cupy.ndarray, and the CAI that CuPy would give."""
    __module__ = "cupy._core.core"

    def __init__(self, shape, dtype, strides=None, ptr=FAKE_PTR, device=0):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.strides = strides or tuple(int(np.prod(shape[i + 1:])) * self.dtype.itemsize for i in range(len(shape)))
        self.data = type("MemoryPointer", (), {"ptr": ptr})()
        self.device = type("Device", (), {"id": device})()

    @property
    def __cuda_array_interface__(self):
        return {"version": 3, "shape": self.shape, "typestr": self.dtype.str, "data": (self.data.ptr, False),
                "strides": self.strides, "stream": None}


@pytest.mark.parametrize("shape,dtype,strides", [((4, 8), "uint8", None), ((3, 5), "float16", (20, 4)),
                                                 ((2, 0, 3), "int32", None), ((6,), "float32", (8,))])
def test_cupy_attribute_path_matches_the_cai_path(monkeypatch, shape, dtype, strides):
    x = _FakeCupyNdarray(shape, dtype, strides, device=2)
    via_cai = tensors.as_device_array(x, "a")
    monkeypatch.setattr(tensors, "_CUPY_NDARRAY", [_FakeCupyNdarray])
    via_attributes = tensors.as_device_array(x, "a")
    fields = ("ptr", "shape", "strides", "dtype", "device", "framework", "readonly")
    assert [getattr(via_attributes, f) for f in fields] == [getattr(via_cai, f) for f in fields]
    assert via_attributes.obj is x
