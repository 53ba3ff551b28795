"""Who holds what in ``mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale.scale_vec::4X
.f32.e2m1.e2m1.f32.ue4m3``, as plain functions: the contract of ``kernels_cu/sm120_mma.cuh``.

Sources (PTX ISA 9.x):

- "Matrix Fragments for mma.m16n8k64": for ``.e2m1``, A is four ``.b32`` registers
  of eight elements ``a0..a31``, B two registers ``b0..b15``, C/D four ``.f32`` ``c0..c3``; the
  row/column formulas use ``groupID = laneid >> 2`` and ``threadID_in_group = laneid % 4``.
  "Elements (low to high)": element ``8 * reg + j`` is nibble ``j`` (bits ``4j..4j+3``) of ``reg``.
- "Block Scaling for mma.sync": with ``.scale_vec::4X``, scale_A is M x 4 (16 x 4) and scale_B is
  4 x N (4 x 8), one scale per 16 K elements; all four bytes of the 32-bit scale register are used,
  so ``byte-id`` must be 0; ``thread-id-a`` (0 or 1) picks the lane pair ``laneid % 4 in {2t, 2t+1}``
  of each quad that supplies SF_A, ``thread-id-b`` (0..3) the one lane ``laneid % 4 == t`` that
  supplies SF_B.
- Not in the ISA's text (its figures only, which are images): the quad supplying a row's (column's)
  scales is the quad holding that row of A (column of B); within the pair the first lane carries
  row ``g`` and the second row ``g + 8``; byte ``j`` is k-block ``j``. These are taken from
  CUTLASS's SFALayout/SFBLayout (include/cute/atom/mma_traits_sm120.hpp), which ``test_mma_model.py``
  checks element by element. For ``thread-id-a = 1`` the pair (2, 3) is assumed to play the roles of
  (0, 1); CUTLASS fills lanes 4g+2, 4g+3 exactly so, but issues only ``thread-id-a = 0``.

Coordinates: ``row`` in 0..15 and ``col`` in 0..7 of the 16x8 tile, ``k`` in 0..63, ``kblock = k // 16``.
B is indexed ``(k, col)``: column ``col`` of B is row ``col`` of an "NT" weight matrix.
"""

from __future__ import annotations

M, N, K = 16, 8, 64
SF_VEC = 16
K_BLOCKS = K // SF_VEC  # 4: scale_vec::4X
LANES = 32
A_REGS, B_REGS, C_REGS = 4, 2, 4
NIBBLES = 8  # e2m1 elements per 32-bit register


def _group(lane: int) -> tuple[int, int]:
    """(groupID, threadID_in_group) of a lane."""
    _check(lane, LANES, "lane")
    return lane >> 2, lane % 4


def _check(value: int, bound: int, what: str) -> None:
    if not 0 <= value < bound:
        raise ValueError(f"{what}={value} is outside [0, {bound})")


# ---------------------------------------------------------------- the ISA's formulas, forwards


def a_element(lane: int, i: int) -> tuple[int, int]:
    """(row, k) of element ``a_i`` (i in 0..31) held by ``lane``: Figure 93's formula."""
    group, tig = _group(lane)
    _check(i, A_REGS * NIBBLES, "i")
    row = group if (0 <= i < 8 or 16 <= i < 24) else group + 8
    col = tig * 8 + (i & 7) + (32 if i >= 16 else 0)
    return row, col


def b_element(lane: int, i: int) -> tuple[int, int]:
    """(k, col) of element ``b_i`` (i in 0..15) held by ``lane``: Figures 94-95's formula."""
    group, tig = _group(lane)
    _check(i, B_REGS * NIBBLES, "i")
    row = tig * 8 + (i & 7) + (32 if i >= 8 else 0)
    return row, group


def c_element(lane: int, i: int) -> tuple[int, int]:
    """(row, col) of accumulator ``c_i`` / ``d_i`` (i in 0..3) held by ``lane``: Figure 96."""
    group, tig = _group(lane)
    _check(i, C_REGS, "i")
    row = group if i < 2 else group + 8
    return row, tig * 2 + (i & 1)


# ---------------------------------------------------------------- owners (the inverse maps)


def a_owner(row: int, k: int) -> tuple[int, int, int]:
    """(lane, reg, nibble) holding A[row][k]. A row lives in one quad (lanes 4*(row % 8) + 0..3);
    rows 8..15 sit in the odd registers, k >= 32 in registers 2 and 3."""
    _check(row, M, "row")
    _check(k, K, "k")
    lane = 4 * (row % 8) + (k % 32) // 8
    reg = (row // 8) + 2 * (k // 32)
    return lane, reg, k % 8


def b_owner(k: int, col: int) -> tuple[int, int, int]:
    """(lane, reg, nibble) holding B[k][col]: column ``col`` lives in lanes 4*col + 0..3."""
    _check(k, K, "k")
    _check(col, N, "col")
    return 4 * col + (k % 32) // 8, k // 32, k % 8


def c_owner(row: int, col: int) -> tuple[int, int]:
    """(lane, reg) holding C[row][col] / D[row][col]."""
    _check(row, M, "row")
    _check(col, N, "col")
    return 4 * (row % 8) + col // 2, 2 * (row // 8) + col % 2


def sfa_owner(row: int, kblock: int, thread_id_sel: int = 0) -> tuple[int, int]:
    """(lane, byte) whose scale register supplies SF_A for A[row][16*kblock : 16*kblock + 16],
    for ``thread-id-a = thread_id_sel`` (0 or 1) and ``byte-id-a = 0``."""
    _check(row, M, "row")
    _check(kblock, K_BLOCKS, "kblock")
    _check(thread_id_sel, 2, "thread_id_sel (thread-id-a)")
    return 4 * (row % 8) + 2 * thread_id_sel + row // 8, kblock


def sfb_owner(col: int, kblock: int, thread_id_sel: int = 0) -> tuple[int, int]:
    """(lane, byte) whose scale register supplies SF_B for B[16*kblock : 16*kblock + 16][col],
    for ``thread-id-b = thread_id_sel`` (0..3) and ``byte-id-b = 0``."""
    _check(col, N, "col")
    _check(kblock, K_BLOCKS, "kblock")
    _check(thread_id_sel, 4, "thread_id_sel (thread-id-b)")
    return 4 * col + thread_id_sel, kblock


def sfa_lanes_read(thread_id_sel: int = 0) -> list[int]:
    """Lanes whose ``scale-a-data`` the instruction reads (the others' are ignored)."""
    return sorted({sfa_owner(r, 0, thread_id_sel)[0] for r in range(M)})


def sfb_lanes_read(thread_id_sel: int = 0) -> list[int]:
    """Lanes whose ``scale-b-data`` the instruction reads (the others' are ignored)."""
    return sorted({sfb_owner(c, 0, thread_id_sel)[0] for c in range(N)})
