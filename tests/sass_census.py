"""An instruction census of the native Blackwell cubins, read from their SASS (no GPU needed).

    python tests/sass_census.py > docs/sm120-census.md     # the table docs/sm120.md quotes

For each native kernel (sm120: cp.async, a barrier per k tile; sm120ws: a TMA producer warp and
mbarriers): the steady-state loop (the innermost backward branch whose body holds the block-scaled
MMAs: one k tile), its instructions, OMMAs, shared-memory loads (LDSM among them), mbarrier waits
and block-wide barriers; the copies that fill a stage (sm120: the cp.async in that loop; sm120ws: the
bulk-tensor copies in the producer's loop, the innermost one that holds UTMALDG); registers, shared
memory and the blocks an sm_120 SM holds.
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
MBAR_WAIT = "SYNCS.PHASECHK"  # mbarrier.try_wait on sm_90+ / sm_120
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


def steady_loop(ins: list[tuple[int, str]], *markers: str) -> list[str]:
    """The body of the innermost loop (backward branch) that holds an instruction containing each of
    ``markers`` (default: the OMMA)."""
    markers = markers or (OMMA,)
    best = None
    for i, (addr, text) in enumerate(ins):
        m = re.match(r"BRA(?:\.\S+)?\s+(?:!?U?P\w+,\s*)?(0x[0-9a-f]+)", text)
        if not m or int(m.group(1), 16) > addr:
            continue
        body = [t for a, t in ins[: i + 1] if a >= int(m.group(1), 16)]
        if all(any(mk in t for t in body) for mk in markers) and (best is None or len(body) < len(best)):
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
    loop_ldsm: int           # LDSM (ldmatrix) in that loop
    loop_bar_sync: int       # block-wide barriers in that loop
    loop_waits: int          # mbarrier waits in that loop
    loop_copies: int         # a stage's copies: LDGSTS (cp.async) in that loop, or UTMALDG in the producer's
    tma: int                 # UTMALDG in the whole kernel
    mbar_waits: int          # mbarrier waits in the whole kernel
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
    # The producer's k loop: its copies and its wait for a free stage (each UTMALDG also sits in a
    # tiny ELECT loop of its own, which holds no wait).
    producer = steady_loop(ins, "UTMALDG", "SYNCS.PHASECHK")
    usage = cuobjdump.resource_usage(tool, cubin)
    smem = usage["shared"] + entry["smem_bytes"]

    def count(seq, pred):
        return sum(1 for t in seq if pred(t))

    return Census(
        name=name, target=target, omma=count(texts, lambda t: OMMA in t), loop_instructions=len(loop),
        loop_omma=count(loop, lambda t: OMMA in t),
        loop_lds=count(loop, lambda t: opcode(t).startswith(("LDS", "LDSM"))),
        loop_ldsm=count(loop, lambda t: opcode(t).startswith("LDSM")),
        loop_bar_sync=count(loop, lambda t: opcode(t).startswith("BAR.SYNC")),
        loop_waits=count(loop, lambda t: opcode(t).startswith(MBAR_WAIT)),
        loop_copies=count(loop, lambda t: opcode(t).startswith("LDGSTS")) + count(
            producer, lambda t: opcode(t).startswith("UTMALDG")),
        tma=count(texts, lambda t: opcode(t).startswith("UTMALDG")),
        mbar_waits=count(texts, lambda t: opcode(t).startswith(MBAR_WAIT)),
        ldsm=count(texts, lambda t: opcode(t).startswith("LDSM")),
        bar_sync=count(texts, lambda t: opcode(t).startswith("BAR.SYNC")),
        local=count(texts, lambda t: opcode(t).startswith(("LDL", "STL"))),
        registers=usage["registers"], threads=entry["threads"], smem=smem,
        blocks_per_sm=sm120_blocks_per_sm(usage["registers"], entry["threads"], smem),
    )


NATIVE_FAMILIES = ("sm120ws", "sm120")


def sm120_kernels() -> dict:
    """Every native GEMM kernel, warp-specialized first."""
    manifest = json.loads((CUBINS / "manifest.json").read_text())
    kernels = manifest["kernels"]
    return {n: kernels[n] for fam in NATIVE_FAMILIES for n in sorted(kernels) if kernels[n].get("family") == fam}


def table(tool: str, target: str = "sm_120a") -> str:
    lines = [
        f"| kernel ({target}) | OMMA / k-tile loop | instructions / OMMA | smem loads / OMMA | LDSM / k tile "
        "| copies / k tile | mbarrier waits / k tile | BAR.SYNC / k tile | registers | threads | smem B | blocks / SM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in sm120_kernels().items():
        c = census(tool, name, target, entry)
        copies = f"{c.loop_copies} {'UTMALDG' if c.tma else 'LDGSTS'}"
        lines.append(f"| {name.replace('_nvfp4_grouped_gemm_', ' ')} | {c.loop_omma} | {c.per_omma:.2f} | "
                     f"{c.loads_per_omma:.2f} | {c.loop_ldsm} | {copies} | {c.loop_waits} | {c.loop_bar_sync} | "
                     f"{c.registers} | {c.threads} | {c.smem} | {c.blocks_per_sm} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    found = cuobjdump.find()
    if found is None:
        sys.exit("cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    print("<!-- written by `python tests/sass_census.py`; tests/test_sm120_static.py checks it is current -->")
    print(table(found))
