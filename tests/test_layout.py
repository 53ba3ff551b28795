"""SPEC §3 index math: the swizzle formula against the atom's definition, group bases."""


import numpy as np
import pytest
import torch

from nvfp4_driver.layout import (
    a_scale_group_bases,
    a_scale_rows,
    a_scale_rows_upper_bound,
    padded_n,
    swizzle_scales,
    swizzled_offset,
    unswizzle_scales,
)


def atom_definition(rows_pad: int, sf_k: int) -> np.ndarray:
    """Swizzled position -> (row, kb), built from the atom's description, not the formula.

    CUTLASS's atom covers 128 rows x 4 scale columns in 512 bytes: the byte at
    [row % 32][(row % 128) // 32][kb % 4]; atoms run along K first, then down the rows.
    Returns ``owner`` of shape (rows_pad * sf_k, 2): ``owner[offset] = (row, kb)``.
    """
    owner = np.full((rows_pad * sf_k, 2), -1, dtype=np.int64)
    pos = 0
    for row_tile in range(rows_pad // 128):
        for col_tile in range(sf_k // 4):
            for r32 in range(32):
                for quarter in range(4):
                    for c4 in range(4):
                        owner[pos] = (row_tile * 128 + quarter * 32 + r32, col_tile * 4 + c4)
                        pos += 1
    return owner


@pytest.mark.parametrize("rows_pad,sf_k", [(128, 4), (256, 8), (384, 24)])
def test_swizzled_offset_matches_atom_definition(rows_pad, sf_k):
    owner = atom_definition(rows_pad, sf_k)
    rows, kbs = np.meshgrid(np.arange(rows_pad), np.arange(sf_k), indexing="ij")
    offs = swizzled_offset(rows, kbs, sf_k)
    assert offs.dtype == np.int64
    # A bijection onto [0, rows_pad * sf_k) that agrees with the definition everywhere.
    assert np.array_equal(np.sort(offs.ravel()), np.arange(rows_pad * sf_k))
    assert np.array_equal(owner[offs.ravel()], np.stack([rows.ravel(), kbs.ravel()], axis=1))


def test_swizzled_offset_reshape_construction():
    # The same atom as an axis permutation: (t, i, j, c, l) row-major -> (t, c, j, i, l).
    rows_pad, sf_k = 256, 16
    ids = np.arange(rows_pad * sf_k).reshape(rows_pad, sf_k)
    swz = ids.reshape(rows_pad // 128, 4, 32, sf_k // 4, 4).transpose(0, 3, 2, 1, 4).ravel()
    rows, kbs = np.divmod(swz, sf_k)
    assert np.array_equal(swizzled_offset(rows, kbs, sf_k), np.arange(rows_pad * sf_k))


@pytest.mark.parametrize(
    "row,kb,sf_k,expected",
    [(0, 0, 8, 0), (1, 0, 8, 16), (32, 0, 8, 4), (0, 1, 8, 1), (0, 4, 8, 512),
     (128, 0, 8, 1024), (33, 5, 8, 533), (127, 3, 4, 31 * 16 + 3 * 4 + 3)],
)
def test_swizzled_offset_hand_values(row, kb, sf_k, expected):
    got = swizzled_offset(row, kb, sf_k)
    assert type(got) is int and got == expected


def test_swizzled_offset_is_64_bit_and_broadcasts():
    sf_k = 448  # K = 7168
    rows = np.array([[2**25 + 77], [3]], dtype=np.int32)
    kbs = np.array([0, 5, 447], dtype=np.int32)
    got = swizzled_offset(rows, kbs, sf_k)
    assert got.shape == (2, 3) and got.dtype == np.int64
    r, kb = 2**25 + 77, 447
    expect = (r // 128) * 128 * sf_k + (kb // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + kb % 4
    assert expect > 2**32 and got[0, 2] == expect


@pytest.mark.parametrize(
    "kwargs,exc,needle",
    [(dict(row=0, kb=0, sf_k=6), ValueError, "sf_k=6"), (dict(row=0, kb=8, sf_k=8), ValueError, "kb"),
     (dict(row=-1, kb=0, sf_k=8), ValueError, "row"), (dict(row=0.5, kb=0, sf_k=8), TypeError, "row"),
     (dict(row=0, kb=0, sf_k=8.0), TypeError, "sf_k")],
)
def test_swizzled_offset_refusals(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        swizzled_offset(**kwargs)


@pytest.mark.parametrize("rows,sf_k", [(1, 8), (128, 8), (200, 16), (300, 4), (0, 8)])
def test_swizzle_places_every_byte_by_the_formula(rng, rows, sf_k):
    sf = rng.integers(0, 256, size=(rows, sf_k), dtype=np.uint8)
    buf = swizzle_scales(sf)
    rows_pad = -(-rows // 128) * 128
    assert buf.shape == (rows_pad, sf_k) and buf.dtype == np.uint8
    flat = buf.ravel()
    r, c = np.meshgrid(np.arange(rows), np.arange(sf_k), indexing="ij")
    assert np.array_equal(flat[swizzled_offset(r, c, sf_k)], sf)
    pad = np.ones(flat.size, dtype=bool)
    pad[swizzled_offset(r, c, sf_k).ravel()] = False
    assert not flat[pad].any(), "padding rows must be zero"
    assert np.array_equal(unswizzle_scales(buf, rows, sf_k), sf)


def test_unswizzle_accepts_flat_torch_and_extra_bytes(rng):
    sf = rng.integers(0, 256, size=(130, 8), dtype=np.uint8)
    buf = swizzle_scales(sf).ravel()
    longer = np.concatenate([buf, rng.integers(0, 256, 1000, dtype=np.uint8)])
    assert np.array_equal(unswizzle_scales(torch.from_numpy(longer), 130, 8), sf)
    as_f8 = torch.from_numpy(buf.copy()).view(torch.float8_e4m3fn)
    assert np.array_equal(unswizzle_scales(as_f8, 130, 8), sf)
    with pytest.raises(ValueError, match="needs 2048"):
        unswizzle_scales(buf[:1000], 130, 8)
    with pytest.raises(ValueError, match="sf_k=6"):
        swizzle_scales(np.zeros((4, 6), np.uint8))
    with pytest.raises(TypeError, match="dtype float32"):
        swizzle_scales(np.zeros((4, 8), np.float32))


def test_padded_n():
    assert [padded_n(n) for n in (0, 1, 8, 128, 129, 4096)] == [0, 128, 128, 128, 256, 4096]
    with pytest.raises(ValueError, match="n=-8"):
        padded_n(-8)


@pytest.mark.parametrize(
    "m_indptr,bases,rows",
    [
        ([0, 128, 256, 384], [0, 128, 384], 640),  # the pitfall: group 2 at 384, not 256
        ([0, 0, 0, 5], [0, 0, 128], 384),  # empty groups still advance the base
        ([5, 10], [0], 128),  # m_indptr[0] > 0 does not shift group 0's rows
        ([130, 131, 131, 300], [128, 256, 384], 640),
        ([0], [], 0),
        ([0, 4, 8, 12], [0, 128, 256], 384),  # small groups: one base per group,
    ],
)
def test_a_scale_group_bases_examples(m_indptr, bases, rows):
    for form in (m_indptr, np.array(m_indptr, np.int32), torch.tensor(m_indptr, dtype=torch.int32)):
        got = a_scale_group_bases(form)
        assert got.dtype == np.int64 and got.tolist() == bases
        assert a_scale_rows(form) == rows


def test_a_scale_regions_are_disjoint_and_fit(rng):
    for _ in range(200):
        groups = int(rng.integers(1, 12))
        sizes = rng.integers(0, 300, groups) * (rng.random(groups) < 0.8)
        m_indptr = int(rng.integers(0, 400)) + np.concatenate([[0], np.cumsum(sizes)])
        bases = a_scale_group_bases(m_indptr)
        total = a_scale_rows(m_indptr)
        assert total % 128 == 0 and np.all(bases % 128 == 0)
        used = np.zeros(total, dtype=np.int64)
        for g in range(groups):
            used[bases[g] : bases[g] + sizes[g]] += 1
        assert used.max(initial=0) <= 1 and bases[-1] + sizes[-1] <= total
        cum_m = int(m_indptr[-1] + rng.integers(0, 50))
        assert total <= a_scale_rows_upper_bound(cum_m, groups)


@pytest.mark.parametrize(
    "m_indptr,exc,needle",
    [([0, 5, 3], ValueError, r"m_indptr\[1\]=5 > m_indptr\[2\]=3"), ([-1, 4], ValueError, "m_indptr\\[0\\]=-1"),
     ([[0, 1]], ValueError, "1-D"), ([], ValueError, "1-D"), ([0.0, 1.0], TypeError, "integer")],
)
def test_m_indptr_refusals(m_indptr, exc, needle):
    with pytest.raises(exc, match=needle):
        a_scale_rows(m_indptr)


def test_upper_bound_refusals():
    with pytest.raises(ValueError, match="num_groups=-1"):
        a_scale_rows_upper_bound(10, -1)
    assert a_scale_rows_upper_bound(384, 3) == 640
