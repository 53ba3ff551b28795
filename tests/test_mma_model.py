"""The sm120 MMA atom (kernels_cu/sm120_mma.cuh) on the CPU.

(a) The fragment and scale layouts of tests/mma_layouts.py (read off the PTX ISA) against CUTLASS's
    MMA_Traits<SM120::BLOCKSCALED::SM120_16x8x64_TN_VS<e2m1, e2m1, float, ue4m3, 16>>, evaluated
    element by element with a small CuTe layout evaluator.
(b) A NumPy emulation of the twin (the -DNVFP4_TWIN software model), step for step: registers in,
    shuffles by lane arithmetic, the byte-permute e2m1 decode with the header's own constants,
    integer block sums, float32 scaling and accumulation. It must equal the float64 product of the
    decoded, scaled matrices up to float32 rounding of the four block sums, and exactly equal that
    rounding done in k-block order.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import mma_layouts as ml

HEADER = Path(__file__).resolve().parents[1] / "kernels_cu" / "sm120_mma.cuh"


@pytest.fixture
def rng():
    seed = secrets.randbits(63)
    print(f"numpy seed={seed}")  # pytest shows it on failure; rerun with default_rng(seed)
    return np.random.default_rng(seed)


# =============================================================================== (a) CUTLASS
#
# CuTe: a layout is (shape, stride), both nested tuples of the same profile. A coordinate into a
# mode is an integer that is split colexicographically over the mode's shape (first sub-mode
# fastest); the layout's value is the sum of sub-coordinate * stride. The (thread, value) layouts of
# an MMA atom map to an offset in a column-major tile: for (M, K) it is m + M * k.


def cute_size(shape) -> int:
    return shape if isinstance(shape, int) else int(np.prod([cute_size(s) for s in shape]))


def cute_eval(shape, stride, coord: int) -> int:
    """Offset of the integer coordinate ``coord`` in layout ``shape:stride`` (colexicographic)."""
    if isinstance(shape, int):
        if not 0 <= coord < shape:
            raise ValueError(f"coordinate {coord} outside a mode of size {shape}")
        return coord * stride
    if len(shape) != len(stride):
        raise ValueError(f"shape {shape} and stride {stride} differ in rank")
    offset = 0
    for sub_shape, sub_stride in zip(shape, stride):
        size = cute_size(sub_shape)
        offset += cute_eval(sub_shape, sub_stride, coord % size)
        coord //= size
    if coord:
        raise ValueError(f"coordinate outside shape {shape}")
    return offset


def test_cute_eval_basics():
    # Examples worked by hand from CuTe's definition: (4,8):(1,4) is column-major 4x8,
    # (4,8):(8,1) row-major, a stride-0 mode broadcasts.
    assert [cute_eval((4, 8), (1, 4), i) for i in (0, 1, 4, 31)] == [0, 1, 4, 31]
    assert [cute_eval((4, 8), (8, 1), i) for i in (0, 1, 4, 31)] == [0, 8, 1, 31]
    assert [cute_eval(((2, 2), 3), ((1, 0), 2), i) for i in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError):
        cute_eval((4, 8), (1, 4), 32)


# Transcribed from NVIDIA/cutlass include/cute/atom/mma_traits_sm120.hpp (read at commit
# 7107b05535f8977f5ecb9d01ee203205b1fd9bc4), MMA_Traits<SM120::BLOCKSCALED::SM120_16x8x64_TN_VS<..>>:
# (T32, V) -> column-major (M16, K64), (N8, K64) or (M16, N8). CLayout is SM80_16x8_Row from
# include/cute/atom/mma_traits_sm80.hpp. ValTypeA/B are uint4_t and ARegisters/BRegisters uint32_t[4]
# / [2], so value v of A or B is nibble v % 8 of register v // 8 (CuTe recasts the value sequence
# into registers in order); C's value v is register v.
CUTLASS = {
    "A": ((((4, 8), (8, 2, 2)), ((128, 1), (16, 8, 512))), ml.M),
    "B": ((((4, 8), (8, 2)), ((64, 1), (8, 256))), ml.N),
    "SFA": ((((2, 2, 8), 64), ((8, 0, 1), 16)), ml.M),
    "SFB": ((((4, 8), 64), ((0, 1), 8)), ml.N),
    "C": ((((4, 8), (2, 2)), ((32, 1), (16, 8))), ml.M),
}


def cutlass_tv(name: str, lane: int, value: int) -> tuple[int, int]:
    """CUTLASS's (thread, value) -> (row-like, column-like) coordinate for operand ``name``."""
    (shape, stride), rows = CUTLASS[name]
    offset = cute_eval(shape[0], stride[0], lane) + cute_eval(shape[1], stride[1], value)
    return offset % rows, offset // rows


def cutlass_values(name: str) -> int:
    return cute_size(CUTLASS[name][0][0][1])


def test_cutlass_layouts_cover_their_tiles():
    assert cutlass_values("A") == 32 and cutlass_values("B") == 16 and cutlass_values("C") == 4
    for name, extent in (("A", ml.M * ml.K), ("B", ml.K * ml.N), ("C", ml.M * ml.N)):
        seen = {cutlass_tv(name, t, v) for t in range(ml.LANES) for v in range(cutlass_values(name))}
        assert len(seen) == extent, name  # a bijection: every element held exactly once


def lane_holdings(lane: int) -> dict[str, list]:
    """What ``lane`` holds per mma_layouts (the PTX ISA), in register order."""
    regs_a = [[None] * ml.NIBBLES for _ in range(ml.A_REGS)]
    regs_b = [[None] * ml.NIBBLES for _ in range(ml.B_REGS)]
    regs_c = [None] * ml.C_REGS
    for row in range(ml.M):
        for k in range(ml.K):
            owner, reg, nib = ml.a_owner(row, k)
            if owner == lane:
                regs_a[reg][nib] = (row, k)
    for k in range(ml.K):
        for col in range(ml.N):
            owner, reg, nib = ml.b_owner(k, col)
            if owner == lane:
                regs_b[reg][nib] = (k, col)
    for row in range(ml.M):
        for col in range(ml.N):
            owner, reg = ml.c_owner(row, col)
            if owner == lane:
                regs_c[reg] = (row, col)
    return {"A": regs_a, "B": regs_b, "C": regs_c}


@pytest.mark.parametrize("lane", range(ml.LANES), ids=lambda lane: f"lane{lane:02d}")
def test_fragments_match_cutlass(lane):
    held = lane_holdings(lane)
    for v in range(cutlass_values("A")):
        m, k = cutlass_tv("A", lane, v)
        assert held["A"][v // 8][v % 8] == (m, k), f"A value {v}"
        assert ml.a_element(lane, v) == (m, k)
    for v in range(cutlass_values("B")):
        n, k = cutlass_tv("B", lane, v)
        assert held["B"][v // 8][v % 8] == (k, n), f"B value {v}"
        assert ml.b_element(lane, v) == (k, n)
    for v in range(cutlass_values("C")):
        m, n = cutlass_tv("C", lane, v)
        assert held["C"][v] == (m, n), f"C value {v}"
        assert ml.c_element(lane, v) == (m, n)


def _distinct_in_order(items):
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


@pytest.mark.parametrize("lane", range(ml.LANES), ids=lambda lane: f"lane{lane:02d}")
def test_scale_layouts_match_cutlass(lane):
    # CUTLASS fills every lane of a quad (stride-0 modes): lanes 4g+2, 4g+3 repeat 4g, 4g+1 for A,
    # and all four lanes hold column g's scales for B. The PTX selectors pick which of them the
    # hardware reads; CUTLASS issues thread-id-a = thread-id-b = 0. Each copy CUTLASS makes must be
    # exactly what the PTX layout asks of that lane for the selector under which it is read.
    tid_a, tid_b = (lane % 4) // 2, lane % 4
    sfa = [cutlass_tv("SFA", lane, v) for v in range(cutlass_values("SFA"))]
    sfb = [cutlass_tv("SFB", lane, v) for v in range(cutlass_values("SFB"))]
    assert [k for _, k in sfa] == list(range(ml.K)) and [k for _, k in sfb] == list(range(ml.K))
    (row,) = {m for m, _ in sfa}  # one row of A per lane
    (col,) = {n for n, _ in sfb}  # one column of B per lane
    # Register bytes: CuTe drops the stride-0 repeats (16 values per scale) and packs the distinct
    # scales into the 32-bit register in order of k, so byte j = k-block j.
    a_blocks = _distinct_in_order([k // ml.SF_VEC for _, k in sfa])
    b_blocks = _distinct_in_order([k // ml.SF_VEC for _, k in sfb])
    assert a_blocks == b_blocks == list(range(ml.K_BLOCKS))
    for byte, kblock in enumerate(a_blocks):
        assert ml.sfa_owner(row, kblock, tid_a) == (lane, byte)
        assert ml.sfb_owner(col, kblock, tid_b) == (lane, byte)
    # Under the selector CUTLASS uses (0), the lanes read are exactly those CUTLASS's layout assigns
    # to distinct rows: 4g (row g) and 4g + 1 (row g + 8); 4g for column g.
    if lane in ml.sfa_lanes_read(0):
        assert ml.sfa_owner(row, 0, 0)[0] == lane
    if lane in ml.sfb_lanes_read(0):
        assert ml.sfb_owner(col, 0, 0)[0] == lane


def ownership_table() -> list[str]:
    """One line per lane: the record of who holds what (selectors 0, as the kernel issues)."""

    def span(cells):
        (r,) = {c[0] for c in cells}
        ks = [c[1] for c in cells]
        return f"[{r:2d}][{ks[0]:2d}..{ks[-1]:2d}]"

    lines = []
    for lane in range(ml.LANES):
        held = lane_holdings(lane)
        a = " ".join(f"a{r}=A{span(held['A'][r])}" for r in range(ml.A_REGS))
        b = " ".join(
            f"b{r}=B[{held['B'][r][0][0]:2d}..{held['B'][r][-1][0]:2d}][{held['B'][r][0][1]}]"
            for r in range(ml.B_REGS)
        )
        c = " ".join(f"d{r}=D[{m:2d}][{n}]" for r, (m, n) in enumerate(held["C"]))
        sfa = [(r, kb) for r in range(ml.M) for kb in range(ml.K_BLOCKS) if ml.sfa_owner(r, kb)[0] == lane]
        sfb = [(n, kb) for n in range(ml.N) for kb in range(ml.K_BLOCKS) if ml.sfb_owner(n, kb)[0] == lane]
        sa = f"sfa=SFA[{sfa[0][0]:2d}][0..3]" if sfa else "sfa=(unread)  "
        sb = f"sfb=SFB[0..3][{sfb[0][0]}]" if sfb else "sfb=(unread)"
        lines.append(f"lane {lane:2d}: {a} | {b} | {c} | {sa} {sb}")
    return lines


def test_ownership_table(capsys):
    lines = ownership_table()
    print("\n".join(lines))
    assert lines[0].startswith("lane  0: a0=A[ 0][ 0.. 7] a1=A[ 8][ 0.. 7] a2=A[ 0][32..39] a3=A[ 8][32..39]")
    assert "b0=B[ 0.. 7][0] b1=B[32..39][0]" in lines[0] and "sfa=SFA[ 0][0..3] sfb=SFB[0..3][0]" in lines[0]
    assert lines[1].endswith("sfa=SFA[ 8][0..3] sfb=(unread)")
    assert lines[31].startswith("lane 31: a0=A[ 7][24..31] a1=A[15][24..31] a2=A[ 7][56..63] a3=A[15][56..63]")
    assert "d0=D[ 7][6] d1=D[ 7][7] d2=D[15][6] d3=D[15][7]" in lines[31]
    assert lines[31].endswith("sfa=(unread)   sfb=(unread)")


# ----------------------------------------------------------------------------- bijections


def test_owner_maps_are_bijections():
    a = {ml.a_owner(r, k) for r in range(ml.M) for k in range(ml.K)}
    assert a == {(l, g, j) for l in range(ml.LANES) for g in range(ml.A_REGS) for j in range(ml.NIBBLES)}
    b = {ml.b_owner(k, c) for k in range(ml.K) for c in range(ml.N)}
    assert b == {(l, g, j) for l in range(ml.LANES) for g in range(ml.B_REGS) for j in range(ml.NIBBLES)}
    c = {ml.c_owner(r, n) for r in range(ml.M) for n in range(ml.N)}
    assert c == {(l, g) for l in range(ml.LANES) for g in range(ml.C_REGS)}
    # The forward formulas of the ISA invert the owner maps.
    for lane in range(ml.LANES):
        for i in range(32):
            assert ml.a_owner(*ml.a_element(lane, i)) == (lane, i // 8, i % 8)
        for i in range(16):
            k, col = ml.b_element(lane, i)
            assert ml.b_owner(k, col) == (lane, i // 8, i % 8)
        for i in range(4):
            assert ml.c_owner(*ml.c_element(lane, i)) == (lane, i)


@pytest.mark.parametrize("tid", [0, 1, 2, 3])
def test_scale_owner_maps_are_bijections(tid):
    if tid < 2:
        sfa = {ml.sfa_owner(r, kb, tid) for r in range(ml.M) for kb in range(ml.K_BLOCKS)}
        lanes = ml.sfa_lanes_read(tid)
        assert lanes == sorted(4 * g + 2 * tid + h for g in range(8) for h in range(2))
        assert sfa == {(l, byte) for l in lanes for byte in range(4)}
    sfb = {ml.sfb_owner(n, kb, tid) for n in range(ml.N) for kb in range(ml.K_BLOCKS)}
    lanes = ml.sfb_lanes_read(tid)
    assert lanes == [4 * g + tid for g in range(8)]
    assert sfb == {(l, byte) for l in lanes for byte in range(4)}


def test_registers_are_aligned_words_of_k_contiguous_rows():
    # Each A register is 8 consecutive K elements of one row starting at a multiple of 8, nibble j =
    # element j: one aligned 32-bit word of a row-major e2m1 matrix (SPEC §1 packing). Same for B
    # columns (rows of the NT weight) and for the scale register (4 consecutive k-blocks of a row).
    for lane in range(ml.LANES):
        held = lane_holdings(lane)
        for cells in held["A"]:
            assert len({r for r, _ in cells}) == 1
            assert [k for _, k in cells] == list(range(cells[0][1], cells[0][1] + 8))
            assert cells[0][1] % 8 == 0
        for cells in held["B"]:
            assert len({c for _, c in cells}) == 1
            assert [k for k, _ in cells] == list(range(cells[0][0], cells[0][0] + 8))


def test_owner_functions_reject_out_of_range():
    with pytest.raises(ValueError, match="row=16"):
        ml.a_owner(16, 0)
    with pytest.raises(ValueError, match="thread-id-a"):
        ml.sfa_owner(0, 0, 2)
    with pytest.raises(ValueError, match="kblock=4"):
        ml.sfb_owner(0, 4)


# =========================================================================== (b) the twin model


def header_tables() -> tuple[int, int, int, int]:
    """The (positive lo, hi, negative lo, hi) byte tables of twin::e2m1x4_to_s8x4, read from the
    header so that this emulation runs the constants the GPU runs."""
    src = HEADER.read_text()
    found = re.findall(r"__byte_perm\((0x[0-9A-Fa-f]+)u, (0x[0-9A-Fa-f]+)u, index\)", src)
    assert len(found) == 2, "e2m1x4_to_s8x4's two table look-ups not found in the header"
    (p_lo, p_hi), (n_lo, n_hi) = found
    return int(p_lo, 16), int(p_hi, 16), int(n_lo, 16), int(n_hi, 16)


def byte_perm(x, y, s):
    """CUDA __byte_perm: byte n of the result is byte ((s >> 4n) & 7) of the 8 bytes {y:x}."""
    pool = (np.asarray(y, np.uint64) << np.uint64(32)) | np.asarray(x, np.uint64)
    s = np.asarray(s, np.uint64)
    out = np.zeros(np.broadcast(pool, s).shape, np.uint64)
    for n in range(4):
        sel = (s >> np.uint64(4 * n)) & np.uint64(7)
        out |= ((pool >> (sel * np.uint64(8))) & np.uint64(0xFF)) << np.uint64(8 * n)
    return out.astype(np.uint32)


def e2m1x4_to_s8x4(codes):
    """twin::e2m1x4_to_s8x4: nibbles 0..3 of ``codes`` -> 4 int8 lanes of 2 * value."""
    p_lo, p_hi, n_lo, n_hi = header_tables()
    codes = np.asarray(codes, np.uint32)
    index = codes & np.uint32(0x7777)
    pos = byte_perm(p_lo, p_hi, index)
    neg = byte_perm(n_lo, n_hi, index)
    pick = np.uint32(0x3210) | ((codes >> np.uint32(1)) & np.uint32(0x4444))
    return byte_perm(pos, neg, pick)


def dp4a(x, y, acc):
    xs = np.asarray(x, np.uint32).view(np.int8).reshape(-1, 4).astype(np.int64)
    ys = np.asarray(y, np.uint32).view(np.int8).reshape(-1, 4).astype(np.int64)
    return acc + (xs * ys).sum(axis=1)


def dot8_e2m1(x, y, acc):
    acc = dp4a(e2m1x4_to_s8x4(x), e2m1x4_to_s8x4(y), acc)
    return dp4a(e2m1x4_to_s8x4(x >> np.uint32(16)), e2m1x4_to_s8x4(y >> np.uint32(16)), acc)


def ue4m3_to_float(byte):
    """twin::ue4m3_to_float, in float32 as the GPU computes it."""
    bits = np.asarray(byte, np.uint32) & np.uint32(0x7F)
    exp_field = bits >> np.uint32(3)
    significand = np.where(exp_field > 0, (bits & np.uint32(7)) | np.uint32(8), bits & np.uint32(7))
    exponent = np.where(exp_field > 0, exp_field.astype(np.int64), 1) - 10
    pow2 = ((exponent + 127) << 23).astype(np.uint32).view(np.float32)
    value = significand.astype(np.float32) * pow2
    return np.where(bits == 0x7F, np.float32(np.nan), value).astype(np.float32)


def twin_mma(regs_a, regs_b, sfa, sfb, d, tid_a=0, tid_b=0):
    """The twin body of mma_nvf4_16x8x64, all 32 lanes at once (axis 0 = lane).

    regs_a (32, 4) uint32, regs_b (32, 2) uint32, sfa / sfb (32,) uint32, d (32, 4) float32.
    A shuffle ``__shfl_sync(m, v, src)`` is ``v[src]``. Returns the new d.
    """
    lane = np.arange(32)
    quad = lane & ~3
    col_quad = (lane & 3) << 3
    sfa_lo, sfa_hi = sfa[quad + 2 * tid_a], sfa[quad + 2 * tid_a + 1]
    sfb_0, sfb_1 = sfb[col_quad + tid_b], sfb[col_quad + 4 + tid_b]
    total = np.zeros((32, 4, 4), np.int64)  # [lane, d index, k-block]
    for q in range(4):
        a_lo_k0, a_hi_k0 = regs_a[quad + q, 0], regs_a[quad + q, 1]
        a_lo_k1, a_hi_k1 = regs_a[quad + q, 2], regs_a[quad + q, 3]
        b0_k0, b1_k0 = regs_b[col_quad + q, 0], regs_b[col_quad + 4 + q, 0]
        b0_k1, b1_k1 = regs_b[col_quad + q, 1], regs_b[col_quad + 4 + q, 1]
        kb0, kb1 = q >> 1, (q >> 1) + 2
        for o, (x0, y0, x1, y1) in enumerate(
            [(a_lo_k0, b0_k0, a_lo_k1, b0_k1), (a_lo_k0, b1_k0, a_lo_k1, b1_k1),
             (a_hi_k0, b0_k0, a_hi_k1, b0_k1), (a_hi_k0, b1_k0, a_hi_k1, b1_k1)]
        ):
            total[:, o, kb0] = dot8_e2m1(x0, y0, total[:, o, kb0])
            total[:, o, kb1] = dot8_e2m1(x1, y1, total[:, o, kb1])
    d = np.array(d, np.float32, copy=True)
    quarter = np.float32(0.25)
    for kb in range(4):
        shift = np.uint32(8 * kb)
        sa_lo = ue4m3_to_float((sfa_lo >> shift) & np.uint32(0xFF))
        sa_hi = ue4m3_to_float((sfa_hi >> shift) & np.uint32(0xFF))
        sb_0 = ue4m3_to_float((sfb_0 >> shift) & np.uint32(0xFF))
        sb_1 = ue4m3_to_float((sfb_1 >> shift) & np.uint32(0xFF))
        with np.errstate(invalid="ignore"):
            for o, (sa, sb) in enumerate([(sa_lo, sb_0), (sa_lo, sb_1), (sa_hi, sb_0), (sa_hi, sb_1)]):
                term = total[:, o, kb].astype(np.float32) * (quarter * sa * sb)
                d[:, o] = d[:, o] + term
    return d


# ----------------------------------------------------------------------------- building registers


def pack_registers(a_codes, b_codes, sfa_bytes, sfb_bytes, c, tid_a, tid_b, rng):
    """Per-lane registers for A (16, 64) / B (64, 8) e2m1 codes, scale bytes SFA (16, 4) /
    SFB (8, 4), C (16, 8), through the mma_layouts owner functions. Scale registers of lanes the
    instruction does not read get random bytes: the model must ignore them."""
    regs_a = np.zeros((32, 4), np.uint32)
    regs_b = np.zeros((32, 2), np.uint32)
    sfa = rng.integers(0, 2**32, 32, dtype=np.uint64).astype(np.uint32)
    sfb = rng.integers(0, 2**32, 32, dtype=np.uint64).astype(np.uint32)
    d = np.zeros((32, 4), np.float32)
    for row in range(ml.M):
        for k in range(ml.K):
            lane, reg, nib = ml.a_owner(row, k)
            regs_a[lane, reg] |= np.uint32(a_codes[row, k]) << np.uint32(4 * nib)
    for k in range(ml.K):
        for col in range(ml.N):
            lane, reg, nib = ml.b_owner(k, col)
            regs_b[lane, reg] |= np.uint32(b_codes[k, col]) << np.uint32(4 * nib)
    for lane in ml.sfa_lanes_read(tid_a):
        sfa[lane] = 0
    for lane in ml.sfb_lanes_read(tid_b):
        sfb[lane] = 0
    for row in range(ml.M):
        for kb in range(ml.K_BLOCKS):
            lane, byte = ml.sfa_owner(row, kb, tid_a)
            sfa[lane] |= np.uint32(sfa_bytes[row, kb]) << np.uint32(8 * byte)
    for col in range(ml.N):
        for kb in range(ml.K_BLOCKS):
            lane, byte = ml.sfb_owner(col, kb, tid_b)
            sfb[lane] |= np.uint32(sfb_bytes[col, kb]) << np.uint32(8 * byte)
    for row in range(ml.M):
        for col in range(ml.N):
            lane, reg = ml.c_owner(row, col)
            d[lane, reg] = c[row, col]
    return regs_a, regs_b, sfa, sfb, d


def unpack_d(d_regs):
    out = np.zeros((ml.M, ml.N), np.float32)
    for row in range(ml.M):
        for col in range(ml.N):
            out[row, col] = d_regs[ml.c_owner(row, col)]
    return out


def decode_e2m1(codes):
    return np.asarray(codes, np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)


def decode_ue4m3(byte):
    return (np.asarray(byte, np.uint8) & np.uint8(0x7F)).view(ml_dtypes.float8_e4m3fn).astype(np.float64)


def reference(a_codes, b_codes, sfa_bytes, sfb_bytes, c):
    """(block terms (16, 8, 4) in float64, exact; float64 D; float32 D summed in k-block order)."""
    a = decode_e2m1(a_codes).reshape(ml.M, ml.K_BLOCKS, ml.SF_VEC)
    b = decode_e2m1(b_codes).reshape(ml.K_BLOCKS, ml.SF_VEC, ml.N)
    raw = np.einsum("mjk,jkn->mnj", a, b)  # per k-block dot products, exact in float64
    with np.errstate(invalid="ignore"):
        terms = raw * decode_ue4m3(sfa_bytes)[:, None, :] * decode_ue4m3(sfb_bytes)[None, :, :]
    d64 = c.astype(np.float64) + terms.sum(axis=2)
    d32 = c.astype(np.float32).copy()
    for kb in range(ml.K_BLOCKS):
        d32 = d32 + terms[:, :, kb].astype(np.float32)
    return terms, d64, d32


def random_tile(rng, nan_scales: bool):
    a_codes = rng.integers(0, 16, (ml.M, ml.K), dtype=np.uint8)
    b_codes = rng.integers(0, 16, (ml.K, ml.N), dtype=np.uint8)
    # Scale bytes over every binade, both values of the ignored sign bit; NaN (0x7F / 0xFF) only
    # when asked, so most tiles check finite values everywhere.
    high = 256 if nan_scales else 0x7F
    sfa_bytes = rng.integers(0, high, (ml.M, ml.K_BLOCKS), dtype=np.uint16).astype(np.uint8)
    sfb_bytes = rng.integers(0, high, (ml.N, ml.K_BLOCKS), dtype=np.uint16).astype(np.uint8)
    if not nan_scales:
        sfa_bytes |= (rng.integers(0, 2, sfa_bytes.shape) << 7).astype(np.uint8)
        sfb_bytes |= (rng.integers(0, 2, sfb_bytes.shape) << 7).astype(np.uint8)
    c = (rng.standard_normal((ml.M, ml.N)) * 2.0 ** rng.integers(-8, 20, (ml.M, ml.N))).astype(np.float32)
    return a_codes, b_codes, sfa_bytes, sfb_bytes, c


# ----------------------------------------------------------------------------- the tests


def test_e2m1_decode_matches_ml_dtypes():
    codes = np.arange(1 << 16, dtype=np.uint32)
    lanes = e2m1x4_to_s8x4(codes).view(np.int8).reshape(-1, 4).astype(np.float64) / 2
    nibbles = (codes[:, None] >> (4 * np.arange(4, dtype=np.uint32))) & 0xF
    assert np.array_equal(lanes, decode_e2m1(nibbles))
    # The upper nibbles of the argument are ignored (dot8 passes x >> 16 with them set).
    assert np.array_equal(e2m1x4_to_s8x4(codes | np.uint32(0xABCD0000)), e2m1x4_to_s8x4(codes))


def test_ue4m3_decode_matches_ml_dtypes():
    byte = np.arange(256, dtype=np.uint32)
    ours = ue4m3_to_float(byte).astype(np.float64)
    theirs = decode_ue4m3(byte)
    assert np.array_equal(ours, theirs, equal_nan=True)
    assert np.isnan(ours[[0x7F, 0xFF]]).all() and np.isfinite(np.delete(ours, [0x7F, 0xFF])).all()
    assert ours[0x01] == 2.0**-9 and ours[0x7E] == 448.0 and ours[0x80] == 0.0


@pytest.mark.parametrize("tid_a", [0, 1])
@pytest.mark.parametrize("tid_b", [0, 1, 2, 3])
def test_twin_equals_scaled_product(rng, tid_a, tid_b):
    for trial in range(6):
        tile = random_tile(rng, nan_scales=(trial == 5))
        a_codes, b_codes, sfa_bytes, sfb_bytes, c = tile
        regs = pack_registers(*tile, tid_a, tid_b, rng)
        got = unpack_d(twin_mma(*regs, tid_a=tid_a, tid_b=tid_b))
        terms, d64, d32 = reference(*tile)
        finite = np.isfinite(terms)
        # Each block term is exact in float32, so the float32 k-block-order sum is the model's
        # answer bit for bit, and within the SPEC §5 slack of the float64 product.
        assert np.array_equal(terms[finite].astype(np.float32).astype(np.float64), terms[finite])
        assert np.array_equal(got, d32, equal_nan=True), f"trial {trial}"
        assert np.array_equal(np.isnan(got), np.isnan(d64))
        ok = ~np.isnan(d64)
        slack = (np.abs(c).astype(np.float64) + np.abs(terms).sum(axis=2)) * 2.0**-23 * 5
        assert np.all(np.abs(got[ok] - d64[ok]) <= slack[ok])


def test_twin_ignores_unread_lanes_and_uses_the_read_ones(rng):
    tile = random_tile(rng, nan_scales=False)
    regs_a, regs_b, sfa, sfb, d = pack_registers(*tile, 0, 0, rng)
    base = twin_mma(regs_a, regs_b, sfa, sfb, d)
    for lane in range(32):
        sfa2, sfb2 = sfa.copy(), sfb.copy()
        sfa2[lane] ^= np.uint32(0x01010101)
        sfb2[lane] ^= np.uint32(0x01010101)
        changed_a = not np.array_equal(twin_mma(regs_a, regs_b, sfa2, sfb, d), base, equal_nan=True)
        changed_b = not np.array_equal(twin_mma(regs_a, regs_b, sfa, sfb2, d), base, equal_nan=True)
        assert changed_a == (lane in ml.sfa_lanes_read(0)), lane
        assert changed_b == (lane in ml.sfb_lanes_read(0)), lane


def test_twin_single_element_probes():
    # One nonzero A element, one nonzero B element, scales chosen per k-block: D must light up at
    # exactly (row, col) with the documented value. Catches any swapped register, nibble or byte.
    rng = np.random.default_rng(0)
    for row, k, col in [(0, 0, 0), (8, 7, 1), (3, 33, 6), (15, 63, 7), (9, 16, 4), (4, 47, 3)]:
        a_codes = np.zeros((ml.M, ml.K), np.uint8)
        b_codes = np.zeros((ml.K, ml.N), np.uint8)
        a_codes[row, k], b_codes[k, col] = 0x7, 0xB  # 6 * -1.5
        sfa_bytes = np.full((ml.M, ml.K_BLOCKS), 0x38, np.uint8)  # 1.0
        sfb_bytes = np.full((ml.N, ml.K_BLOCKS), 0x38, np.uint8)
        sfa_bytes[row, k // 16] = 0x40  # 2.0
        sfb_bytes[col, k // 16] = 0x30  # 0.5
        c = np.zeros((ml.M, ml.N), np.float32)
        regs = pack_registers(a_codes, b_codes, sfa_bytes, sfb_bytes, c, 0, 0, rng)
        got = unpack_d(twin_mma(*regs))
        want = np.zeros_like(got)
        want[row, col] = 6 * -1.5 * 2.0 * 0.5
        assert np.array_equal(got, want), (row, k, col)
