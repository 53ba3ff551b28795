"""cuobjdump, found by path (the nvidia-cuda-cuobjdump wheel, then a CUDA toolkit), and parsers of
what it prints about a cubin: the kernel parameter table and the resource usage."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path


def find() -> str | None:
    try:
        import nvidia  # namespace package of NVIDIA's wheels
        for root in nvidia.__path__:
            for candidate in sorted(Path(root).glob("cu*/bin/cuobjdump")):
                return str(candidate)
    except ImportError:
        pass
    for candidate in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _run(tool: str, *args: str) -> str:
    # --dump-sass runs nvdisasm, which the nvidia-cuda-nvdisasm wheel puts beside cuobjdump.
    env = dict(os.environ, PATH=f"{Path(tool).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=True, env=env).stdout


@functools.lru_cache(maxsize=4)
def _elf(tool: str, cubin: Path) -> str:
    """``--dump-elf`` of a cubin, kept for the next parser that asks for the same file."""
    return _run(tool, "--dump-elf", str(cubin))


_KPARAM = re.compile(r"Ordinal\s*:\s*(0x[0-9a-f]+)\s+Offset\s*:\s*(0x[0-9a-f]+)\s+Size\s*:\s*(0x[0-9a-f]+)", re.I)


def param_layout(tool: str, cubin: Path) -> list[tuple[int, int]]:
    """[(offset, size)] of each kernel parameter in ordinal order, from EIATTR_KPARAM_INFO."""
    found = {int(o, 16): (int(off, 16), int(size, 16)) for o, off, size in _KPARAM.findall(_elf(tool, cubin))}
    return [found[i] for i in sorted(found)]


_MAX_THREADS = re.compile(
    r"EIATTR_MAX_THREADS\s+Format:\s*\w+\s+Value:\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", re.I)


def max_threads(tool: str, cubin: Path) -> tuple[int, int, int] | None:
    """The block the kernel was compiled for (``__launch_bounds__``: EIATTR_MAX_THREADS), or None."""
    m = _MAX_THREADS.search(_elf(tool, cubin))
    return None if m is None else tuple(int(v, 16) for v in m.groups())


_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def resource_usage(tool: str, cubin: Path) -> dict:
    """Registers, stack, static shared and local memory of the cubin's (single) kernel."""
    m = _USAGE.search(_run(tool, "--dump-resource-usage", str(cubin)))
    if m is None:
        raise ValueError(f"no resource usage line for {cubin.name}")
    return dict(zip(("registers", "stack", "shared", "local"), map(int, m.groups())))


@functools.lru_cache(maxsize=64)
def sass(tool: str, cubin: Path) -> str:
    """``--dump-sass`` of a cubin, kept: the static tests read each native cubin several times."""
    return _run(tool, "--dump-sass", str(cubin))
