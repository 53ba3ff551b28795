"""A byte-exact host model of the warp-specialized kernel's data path (nvfp4_grouped_gemm_ws.cuh,
sm120ws_nvfp4_grouped_gemm.cu): global memory -> one stage as the tensor maps' copies place it
(tensor_maps.gemm_map_shapes' boxes, the TMA's 64B/128B swizzle, zero fill out of bounds) ->
each lane's ldmatrix words and scale words, by the kernel's own address formulas (transcribed here)
-> compared with the block-scaled MMA's fragments (tests/mma_layouts.py, from the PTX ISA's figures)
filled straight from the SPEC's tensors. No GPU: this checks the addressing, the twin checks the rest.

TMA's swizzle is CUTLASS's Swizzle<B, 4, 3> for B = log2(span / 16) (cute's get_tma_swizzle_bits:
B = 2 for 64B, 3 for 128B): 16-byte chunk bits [4, 4+B) of the shared-memory address XOR bits
[7, 7+B), on a 1024-aligned stage."""
import numpy as np
import pytest

import mma_layouts
from nvfp4_driver import layout, registry, tensor_maps
from nvfp4_driver.problem import Problem, Tiles

WS_CUTS = sorted((e.tiles for e in registry.entries().values() if e.family == "sm120ws"), key=lambda t: tuple(vars(t).values()))


def tma_box(src: np.ndarray, start: tuple, box: tuple) -> np.ndarray:
    """The box of ``src`` (dims outermost first) at ``start``, zeros where it leaves the tensor."""
    out = np.zeros(box, dtype=np.uint8)
    lo = [max(s, 0) for s in start]
    hi = [min(s + b, d) for s, b, d in zip(start, box, src.shape)]
    if all(h > l for l, h in zip(lo, hi)):
        out[tuple(slice(l - s, h - s) for l, h, s in zip(lo, hi, start))] = src[tuple(slice(l, h) for l, h in zip(lo, hi))]
    return out


def swizzle(rows: np.ndarray, span: int) -> bytes:
    """A (rows, span) box as the TMA writes it to a 1024-aligned address with the span's swizzle."""
    flat = np.zeros(rows.size, dtype=np.uint8)
    mask = span // 16 - 1
    for r in range(rows.shape[0]):
        for c in range(span // 16):
            addr = r * span + 16 * c
            phys = addr ^ (((addr >> 7) & mask) << 4)
            flat[phys:phys + 16] = rows[r, 16 * c:16 * c + 16]
    return flat.tobytes()


def ldmatrix_x4(smem: bytes, addresses: list[int]) -> list[list[int]]:
    """ldmatrix.x4 .b16: lane 8m + g gives row g of matrix m; lane (g, p) gets bytes [4p, 4p+4) of row g."""
    return [[int.from_bytes(smem[addresses[8 * m + (lane >> 2)] + 4 * (lane & 3):][:4], "little")
             for m in range(4)] for lane in range(32)]


def nibble(rows: np.ndarray, r: int, k: int) -> int:
    return (int(rows[r, k // 2]) >> (4 * (k % 2))) & 0xF


def word_from(elements) -> int:
    return sum(code << (4 * j) for j, code in enumerate(elements))


# (row or column, k-block, byte) whose scale each lane's register supplies, per the MMA's selectors 0
SFA_READ = {lane: [(r, kb, byte) for r in range(16) for kb in range(4)
                   for owner, byte in [mma_layouts.sfa_owner(r, kb)] if owner == lane] for lane in range(32)}
SFB_READ = {lane: [(c, kb, byte) for c in range(8) for kb in range(4)
                   for owner, byte in [mma_layouts.sfb_owner(c, kb)] if owner == lane] for lane in range(32)}


def sf_word(r: int, w: int) -> int:
    return w * 128 + (r & 31) * 4 + (r >> 5)


def swizzled_chunk(row: int, chunk: int, span: int) -> int:
    return row * span + ((chunk ^ ((row * span >> 7) & (span // 16 - 1))) << 4)


CASES = [(t, False) for t in WS_CUTS] + [(t, True) for t in WS_CUTS if t.tile_k == 128 and t.tile_m in (16, 128)]


@pytest.mark.parametrize("tiles,short", CASES, ids=lambda v: (f"m{v.tile_m}n{v.tile_n}k{v.tile_k}{'s' if v.swap_ab else ''}"
                                                             if isinstance(v, Tiles) else ("short" if v else "tight")))
def test_stage_to_fragments(tiles, short):
    rng = np.random.default_rng(7)
    tm, tn, tk, swap = tiles.tile_m, tiles.tile_n, tiles.tile_k, tiles.swap_ab
    g_count, n, k = 2, 136, 384                       # N past a tile; K = 384: tile_k 256's second tile half empty
    m_indptr = np.array([3, 3 + 2 * tm + 5, 3 + 2 * tm + 5 + 40], dtype=np.int64)
    cum_m = int(m_indptr[-1]) + 2
    sf_k, n_pad = k // 16, (n + 127) // 128 * 128
    a = rng.integers(0, 256, (cum_m, k // 2), dtype=np.uint8)
    b = rng.integers(0, 256, (g_count, n, k // 2), dtype=np.uint8)
    bases = layout.a_scale_group_bases(m_indptr.astype(np.int32))
    # tight (what the kernel may read ends with a_scale), or a whole block short (that block reads as zeros)
    a_rows = layout.a_scale_rows(m_indptr.astype(np.int32)) - (128 if short else 0)
    a_scale = rng.integers(0, 256, a_rows * sf_k, dtype=np.uint8)
    b_scale = rng.integers(0, 256, g_count * n_pad * sf_k, dtype=np.uint8)
    shapes = tensor_maps.gemm_map_shapes(Problem(g_count, n, k, cum_m, "bfloat16"), tiles, a_rows)
    span = tk // 2
    assert shapes["a"][2] == (span, tm) and shapes["a"][3] == span and shapes["b"][2] == (span, tn, 1)

    # m tiles: whole, running past its group's end (into the next group), a group's first; the last
    # n tile (rows past N) and the first
    cases = [(0, tm, 0), (0, 2 * tm, (n - 1) // tn * tn), (1, 0, (n - 1) // tn * tn)]
    for (group, local, n0), kt in ((c, kt) for c in cases for kt in range((k + tk - 1) // tk)):
        row_begin = int(m_indptr[group]) + local
        sf_row = int(bases[group]) + local
        # the four boxes (tensor_maps' dims reversed: outermost first)
        s_a = swizzle(tma_box(a, (row_begin, kt * span), (tm, span)), span)
        s_b = swizzle(tma_box(b, (group, n0, kt * span), (1, tn, span))[0], span)
        sf_dims = lambda d: tuple(reversed(d))  # noqa: E731
        sa_src = a_scale.reshape(sf_dims(shapes["a_scale"][0]))
        sb_src = b_scale.reshape(sf_dims(shapes["b_scale"][0]))
        quads = tk // 64
        sf_box = sf_dims(shapes["a_scale"][2])  # (1, lines, 256): the kernel asks for line kt * TK/32
        sb_blocks = max(1, tn // 128)  # the weight tile's 128-row scale blocks, one after another
        assert sf_dims(shapes["b_scale"][2]) == (sb_blocks,) + sf_box[1:] and sf_box[2] * sf_box[1] == quads * 512
        s_sa = tma_box(sa_src, (sf_row >> 7, kt * (tk // 32), 0), sf_box).tobytes()
        s_sb = tma_box(sb_src, (group * (n_pad // 128) + (n0 >> 7), kt * (tk // 32), 0),
                       sf_dims(shapes["b_scale"][2])).tobytes()
        assert len(s_sa) == quads * 512 and len(s_sb) == sb_blocks * quads * 512

        # what the MMA must see, from the SPEC tensors (zero past K, N, cum_m, a_scale's whole blocks)
        def tok(r, kk):   # A element of tile row r
            row, kk = row_begin + r, kt * tk + kk
            return nibble(a, row, kk) if row < cum_m and kk < k else 0

        def wgt(r, kk):   # B element of tile row (column) r
            col, kk = n0 + r, kt * tk + kk
            return nibble(b[group], col, kk) if col < n and kk < k else 0

        def tok_sf(r, kb):
            row, kb = sf_row + r, kt * tk // 16 + kb
            return a_scale[layout.swizzled_offset(row, kb, sf_k)] if row < a_rows and kb < sf_k else 0

        def wgt_sf(r, kb):
            row, kb = n0 + r, kt * tk // 16 + kb
            return b_scale[group * n_pad * sf_k + layout.swizzled_offset(row, kb, sf_k)] if kb < sf_k else 0

        p_data, q_data, p_sf, q_sf = (s_b, s_a, s_sb, s_sa) if swap else (s_a, s_b, s_sa, s_sb)
        p_el, q_el, p_scale, q_scale = (wgt, tok, wgt_sf, tok_sf) if swap else (tok, wgt, tok_sf, wgt_sf)
        p_row0, q_row0 = (n0 & 127, sf_row & 127) if swap else (sf_row & 127, n0 & 127)
        warp_m, warp_n = min(tm, 64), 64 if tn > 128 else 32  # WsConfig's WARP_M, WARP_N
        p_tiles, q_tiles = (warp_n // 16, warp_m // 8) if swap else (warp_m // 16, warp_n // 8)
        for warp in range((tm // warp_m) * (tn // warp_n)):
            wm, wn = warp % (tm // warp_m), warp // (tm // warp_m)
            p_base, q_base = (wn * warp_n, wm * warp_m) if swap else (wm * warp_m, wn * warp_n)
            # the stage view: with several B scale blocks, q_sf starts at the block of this warp's Q
            # rows and the row origin moves back by 128 per block
            q_block = q_base >> 7 if sb_blocks > 1 else 0
            w_q_sf, w_q_row0 = q_sf[q_block * quads * 512:], q_row0 - 128 * q_block
            for kc in range(tk // 64):
                for i in range(p_tiles):
                    rows = [p_base + i * 16 + (ln & 7) + ((ln >> 3) & 1) * 8 for ln in range(32)]
                    got = ldmatrix_x4(p_data, [swizzled_chunk(r, 2 * kc + (ln >> 4), span) for ln, r in enumerate(rows)])
                    for lane in range(32):
                        for reg in range(4):
                            want = word_from(p_el(p_base + i * 16 + mma_layouts.a_element(lane, 8 * reg + j)[0],
                                                  kc * 64 + mma_layouts.a_element(lane, 8 * reg + j)[1]) for j in range(8))
                            assert got[lane][reg] == want, (kt, warp, kc, i, lane, reg)
                        g, p = lane >> 2, lane & 3
                        if not swap and tm == 128:  # load_p's paired scales: one 8-byte load for i and i + 2
                            base = sf_word(p_row0 + p_base + (i % 2) * 16 + g + (8 if p & 1 else 0), kc)
                            assert base % 2 == 0  # the 8-byte load is aligned
                            index = base + i // 2
                        else:
                            index = sf_word(p_row0 + p_base + i * 16 + g + (8 if p & 1 else 0), kc)
                        word = int.from_bytes(p_sf[4 * index:][:4], "little") & 0x7F7F7F7F
                        for row, kb, byte in SFA_READ[lane]:
                            assert (word >> (8 * byte)) & 0xFF == p_scale(p_base + i * 16 + row, kc * 4 + kb) & 0x7F
                for j in range(0, q_tiles, 2):
                    rows = [q_base + (j + (ln >> 4)) * 8 + (ln & 7) for ln in range(32)]
                    got = ldmatrix_x4(q_data, [swizzled_chunk(r, 2 * kc + ((ln >> 3) & 1), span) for ln, r in enumerate(rows)])
                    for h in range(2):
                        for lane in range(32):
                            for reg in range(2):
                                want = word_from(q_el(q_base + (j + h) * 8 + mma_layouts.b_element(lane, 8 * reg + jj)[1],
                                                      kc * 64 + mma_layouts.b_element(lane, 8 * reg + jj)[0]) for jj in range(8))
                                assert got[lane][2 * h + reg] == want, (kt, warp, kc, j, h, lane, reg)
                            g = lane >> 2
                            q_row = w_q_row0 + q_base + (j + h) * 8 + g
                            assert 0 <= q_row < 128  # a row of the block the view points at
                            word = int.from_bytes(w_q_sf[4 * sf_word(q_row, kc):][:4], "little") & 0x7F7F7F7F
                            for col, kb, byte in SFB_READ[lane]:
                                assert (word >> (8 * byte)) & 0xFF == q_scale(q_base + (j + h) * 8 + col, kc * 4 + kb) & 0x7F
