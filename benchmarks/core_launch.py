"""A launcher over cuda.core's ``launch`` with ``driver.PreparedKernel``'s interface, which
``bench_overhead.py`` times against ours on the same GEMM kernel (issue 15 item 4). It measured slower
(8.60 against 5.23 µs on the H200 host: the arguments typed per call), so the package launches through
PreparedKernel and this stays with the benchmarks.

cuda.core (1.2) is imported when the first ``CoreKernel`` is made.
"""
from __future__ import annotations

import numpy as np

from nvfp4_driver import driver

# cuda.core's launch reads a Python int as a pointer-sized integer and a Python float as a double, and
# takes other widths only as numpy or ctypes scalars of that width: each ABI type's converter.
_CONVERT = {"ptr": int, "i64": np.int64, "i32": np.int32, "f32": np.float32}


class CoreKernel:
    """One kernel on one device, launched through ``cuda.core.launch``: the kernel is the CUkernel of the
    library ``driver`` loaded (its ABI checked and its shared-memory limit raised there), the arguments
    converted per the manifest's types, the stream wrapped per call (a handle value may be reused by a
    later stream of another context, so no wrapper is kept across calls)."""

    __slots__ = ("spec", "ordinal", "ctx", "ctx_id", "kernel", "_configs", "_convert", "_symbol", "_core")

    @staticmethod
    def supports(spec: driver.KernelSpec) -> bool:
        # A CUtensorMap by value reaches cuda.core only as its own TensorMapDescriptor, built from a
        # memory view; ours are encoded bytes (tensor_maps.py): those kernels keep PreparedKernel.
        return all(t in _CONVERT for t in spec.param_types)

    def __init__(self, spec: driver.KernelSpec, ordinal: int):
        import cuda.core as core
        if not self.supports(spec):
            raise TypeError(f"{spec.symbol} takes ({', '.join(spec.param_types)}); cuda.core's launch takes "
                            f"no raw tensor map")
        self.spec, self.ordinal, self._symbol = spec, ordinal, spec.symbol
        driver.function(spec, ordinal)  # loads the library, checks the ABI, sets the shared-memory limit
        drv = driver.driver()
        handle = driver.check(drv.cuLibraryGetKernel(driver.load_library(spec.file), spec.symbol.encode()),
                              f"cuLibraryGetKernel({spec.symbol})")
        # driver.function raised the limit on the context's CUfunction; a launch by CUkernel is given it on
        # the kernel too, so it never depends on which handle the driver resolves the launch through.
        device = driver.check(drv.cuDeviceGet(ordinal), f"cuDeviceGet({ordinal})")
        driver.check(drv.cuKernelSetAttribute(
            drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, spec.smem_bytes, handle, device),
            "cuKernelSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")
        self.kernel = core.Kernel.from_handle(int(handle))
        self.ctx = driver.primary_context(ordinal)
        self.ctx_id = int(self.ctx)
        self._configs: dict = {}
        self._convert = tuple(_CONVERT[t] for t in spec.param_types)
        self._core = (core.launch, core.LaunchConfig, core.Stream.from_handle, core.LEGACY_DEFAULT_STREAM)

    def launch(self, grid: tuple[int, int, int], stream: int, args: tuple) -> None:
        """Launch on ``stream`` (an int CUstream handle) with ``args`` in the manifest's order."""
        launch, config_type, from_handle, legacy = self._core
        config = self._configs.get(grid)
        if config is None:
            spec = self.spec
            config = self._configs[grid] = config_type(grid=grid, block=(spec.threads, 1, 1),
                                                       shmem_size=spec.smem_bytes)
        if len(args) != len(self._convert):
            raise TypeError(f"{self._symbol} takes ({', '.join(self.spec.param_types)}), got {args!r}")
        values = [convert(a) for convert, a in zip(self._convert, args)]
        # 0 is the legacy default stream, which cuda.core names rather than wraps.
        where = from_handle(stream) if stream else legacy
        drv = driver.driver()
        current = driver.check(drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
        pushed = current is None or int(current) != self.ctx_id
        if pushed:  # cuda.core launches in the current context, as PreparedKernel does after this check
            driver.check(drv.cuCtxPushCurrent(self.ctx), "cuCtxPushCurrent")
        try:
            launch(where, config, self.kernel, *values)
        finally:
            if pushed:
                driver.check(drv.cuCtxPopCurrent(), "cuCtxPopCurrent")
