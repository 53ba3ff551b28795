"""An instruction census of the native Blackwell cubins, read from their SASS (no GPU needed).

    python tests/sass_census.py > docs/sm120-census.md     # the table docs/sm120.md quotes

For each sm120 kernel: the steady-state loop (the innermost backward branch whose body holds the
block-scaled MMAs: one k tile), its instructions, OMMAs, shared-memory loads and block-wide barriers,
the async copies that fill the next stage, registers, shared memory and the blocks an sm_120 SM holds.
tests/test_sm120_static.py checks the cubins against it and that the committed table is current.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cuobjdump  # noqa: E402

CUBINS = Path(__file__).resolve().parents[1] / "nvfp4_driver" / "cubins"
OMMA = "OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X"
# sm_120 / sm_121 per SM: 100 KiB of shared memory (1 KiB of it reserved per block), 64 Ki registers,
# 1,536 threads, 32 blocks (CUDA programming guide, compute capability 12.x).
SM120_SMEM, SM120_RESERVED, SM120_REGS, SM120_THREADS, SM120_BLOCKS = 102_400, 1_024, 65_536, 1_536, 32

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def instructions(sass: str) -> list[tuple[int, str]]:
    """(address, instruction text without predicate guard) of every SASS instruction."""
    out = []
    for m in _LINE.finditer(sass):
        text = re.sub(r"^@!?U?P[T0-9]+\s+", "", m.group(2).strip())
        out.append((int(m.group(1), 16), text))
    return out


def opcode(text: str) -> str:
    return text.split()[0] if text else ""


def steady_loop(ins: list[tuple[int, str]]) -> list[str]:
    """The body of the innermost loop (backward branch) that holds OMMA instructions."""
    best = None
    for i, (addr, text) in enumerate(ins):
        m = re.match(r"BRA(?:\.\S+)?\s+(?:!?U?P\w+,\s*)?(0x[0-9a-f]+)", text)
        if not m or int(m.group(1), 16) > addr:
            continue
        body = [t for a, t in ins[: i + 1] if a >= int(m.group(1), 16)]
        if any(OMMA in t for t in body) and (best is None or len(body) < len(best)):
            best = body
    return best or []


@dataclasses.dataclass(frozen=True)
class Census:
    name: str
    target: str
    omma: int                # in the whole kernel
    loop_instructions: int   # in the steady-state loop
    loop_omma: int
    loop_lds: int            # LDS / LDSM in that loop
    loop_bar_sync: int       # block-wide barriers in that loop
    loop_copies: int         # LDGSTS (cp.async) in that loop: the next stage's loads
    ldsm: int
    bar_sync: int
    local: int               # LDL / STL
    registers: int
    threads: int
    smem: int                # dynamic + static shared memory per block
    blocks_per_sm: int       # on sm_120

    @property
    def per_omma(self) -> float:
        return self.loop_instructions / self.loop_omma if self.loop_omma else float("nan")

    @property
    def loads_per_omma(self) -> float:
        return self.loop_lds / self.loop_omma if self.loop_omma else float("nan")


def sm120_blocks_per_sm(registers: int, threads: int, smem: int) -> int:
    warps = -(-threads // 32)
    regs_per_warp = -(-registers * 32 // 256) * 256  # allocated per warp in units of 256
    by_regs = SM120_REGS // (regs_per_warp * warps)
    by_smem = SM120_SMEM // (smem + SM120_RESERVED)
    return min(by_regs, by_smem, SM120_THREADS // threads, SM120_BLOCKS)


def census(tool: str, name: str, target: str, entry: dict) -> Census:
    cubin = CUBINS / entry["targets"][target]["file"]
    ins = instructions(cuobjdump.sass(tool, cubin))
    texts = [t for _, t in ins]
    loop = steady_loop(ins)
    usage = cuobjdump.resource_usage(tool, cubin)
    smem = usage["shared"] + entry["smem_bytes"]

    def count(seq, pred):
        return sum(1 for t in seq if pred(t))

    return Census(
        name=name, target=target, omma=count(texts, lambda t: OMMA in t), loop_instructions=len(loop),
        loop_omma=count(loop, lambda t: OMMA in t),
        loop_lds=count(loop, lambda t: opcode(t).startswith(("LDS", "LDSM"))),
        loop_bar_sync=count(loop, lambda t: opcode(t).startswith("BAR.SYNC")),
        loop_copies=count(loop, lambda t: opcode(t).startswith("LDGSTS")),
        ldsm=count(texts, lambda t: opcode(t).startswith("LDSM")),
        bar_sync=count(texts, lambda t: opcode(t).startswith("BAR.SYNC")),
        local=count(texts, lambda t: opcode(t).startswith(("LDL", "STL"))),
        registers=usage["registers"], threads=entry["threads"], smem=smem,
        blocks_per_sm=sm120_blocks_per_sm(usage["registers"], entry["threads"], smem),
    )


def sm120_kernels() -> dict:
    manifest = json.loads((CUBINS / "manifest.json").read_text())
    return {n: e for n, e in sorted(manifest["kernels"].items()) if e.get("family") == "sm120"}


def table(tool: str, target: str = "sm_120a") -> str:
    lines = [
        f"| kernel ({target}) | OMMA / k-tile loop | instructions / OMMA | smem loads / OMMA | cp.async / k tile "
        "| BAR.SYNC / k tile | registers | threads | smem B | blocks / SM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in sm120_kernels().items():
        c = census(tool, name, target, entry)
        lines.append(f"| {name.removeprefix('sm120_nvfp4_grouped_gemm_')} | {c.loop_omma} | {c.per_omma:.2f} | "
                     f"{c.loads_per_omma:.2f} | {c.loop_copies} | {c.loop_bar_sync} | {c.registers} | "
                     f"{c.threads} | {c.smem} | {c.blocks_per_sm} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    found = cuobjdump.find()
    if found is None:
        sys.exit("cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    print("<!-- written by `python tests/sass_census.py`; tests/test_sm120_static.py checks it is current -->")
    print(table(found))
