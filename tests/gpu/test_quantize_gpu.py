"""The quantizer kernels on the GPU against nvfp4_driver.reference (SPEC §3, §4): every output byte.

Inputs are fresh random values every run, spread over many binades per 16-element block, plus the
cases SPEC §4 singles out, built on purpose: all-zero blocks, exact e2m1 ties (scaled values of
0.25, 0.75, ..., 5 exactly), exact e4m3 ties (a scaled amax exactly halfway between two scale
values), blocks that saturate the scale at 448 and the codes at 6, scales in e4m3's subnormal
range, and NaN / +-inf / -0 inputs. Every byte of ``a``, ``a_scale`` (including the padding rows
and the rows of ``a`` outside the groups), ``b`` and ``b_scale`` is compared.
"""
from __future__ import annotations

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import driver, layout, quantize as q, reference as R, variants
from seeds import SEED  # tests/gpu is on sys.path (pytest's rootdir-less import)

torch = pytest.importorskip("torch")

TORCH = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Binades per block: float16 holds 2^-24 .. 65504, the others far more.
SPREAD = {"bfloat16": 40, "float16": 10, "float32": 60}


POISON = 0xA5  # nonzero: every padding byte and every row outside the groups must read 0


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every array the ops allocate starts as POISON bytes (queued on the current stream before the
    kernel), so a byte the kernel fails to write (a padding scale row, a row outside the groups)
    cannot pass for a zero that the caching allocator happened to hand back."""
    real = q.outputs.allocate

    def allocate(like, shape, dtype, **kw):
        out, arr = real(like, shape, dtype, **kw)
        if isinstance(out, torch.Tensor):
            out.view(torch.uint8).fill_(POISON)
        return out, arr

    monkeypatch.setattr(q.outputs, "allocate", allocate)


def tie_blocks(rng, count: int, max_exp: int) -> np.ndarray:
    """(count, 16) blocks whose scaled values are exact e2m1 ties when the global scale is a power of
    two: the block max is 6 * 2^e, so amax * (1/6) rounds to 2^e exactly and the scale is 2^-e * gsf-free."""
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.0, 6.0, 5.5, 4.5, 3.0, 0.5])
    blocks = rng.choice(ties, size=(count, 16)) * rng.choice([-1.0, 1.0], size=(count, 16))
    blocks[:, rng.integers(0, 16)] = 6.0
    return blocks * 2.0 ** rng.integers(-max_exp, max_exp, size=(count, 1))


def e4m3_tie_amaxes(gsf: float) -> np.ndarray:
    """float32 block maxima a with gsf * (a * (1/6)) exactly halfway between two ue4m3 values."""
    sixth = np.float32(1) / np.float32(6)
    vals = R.UE4M3_VALUES[1:0x7E].astype(np.float64)
    mids = ((vals[1:] + vals[:-1]) / 2).astype(np.float32)
    found = []
    for m in mids:
        target = np.float32(m)
        guess = np.float32(6 * float(m) / gsf)
        cand = guess.view(np.uint32) + np.arange(-64, 65, dtype=np.int64)
        cand = cand.astype(np.uint32).view(np.float32)
        hit = cand[(np.float32(gsf) * (cand * sixth)) == target]
        if hit.size:
            found.append(hit[0])
    return np.array(found, dtype=np.float32)


def make_input(rng, rows: int, k: int, dtype: str, *, specials: bool = False, ties: bool = True) -> np.ndarray:
    """(rows, k) float32 values exactly representable in ``dtype``."""
    spread = SPREAD[dtype]
    x = rng.standard_normal((rows, k)) * 2.0 ** rng.integers(-spread // 2, spread // 2, size=(rows, k // 16)).repeat(16, 1)
    blocks = x.reshape(-1, 16)
    nb = blocks.shape[0]
    pick = rng.permutation(nb)
    zero, tie, big = pick[: nb // 16], pick[nb // 16: nb // 4], pick[nb // 4: nb // 4 + nb // 32]
    blocks[zero] = 0.0
    if ties:
        blocks[tie] = tie_blocks(rng, tie.size, min(spread // 2, 12))
    blocks[big] *= 2.0 ** min(spread // 3, 14)  # far above the rest: its scale saturates at 448
    if specials:
        flat = blocks.reshape(-1)
        spots = rng.choice(flat.size, size=max(4, flat.size // 500), replace=False)
        flat[spots] = rng.choice([np.nan, np.inf, -np.inf, -0.0, -np.nan], size=spots.size)
    if dtype == "float16":
        x = np.clip(x, -60000, 60000)
    t = torch.from_numpy(x.astype(np.float32)).to(TORCH[dtype])
    return t.to(torch.float32).numpy()


def to_device(x32: np.ndarray, dtype: str):
    return torch.from_numpy(x32).to(TORCH[dtype]).cuda()


def expected_activations(x32, ind, gsf):
    """Reference bytes: a (cum_m, K/2) with zero rows outside the groups, a_scale at its upper-bound size."""
    cum_m, k = x32.shape
    groups = len(ind) - 1
    a = np.zeros((cum_m, k // 2), np.uint8)
    sf = np.zeros((cum_m, k // 16), np.uint8)
    for g in range(groups):
        lo, hi = int(ind[g]), int(ind[g + 1])
        if hi > lo:
            codes, s = R.quantize_blocks(x32[lo:hi], np.float32(gsf[g]))
            a[lo:hi], sf[lo:hi] = R.pack_fp4(codes), s
    placed = R.grouped_a_scale(sf, ind)
    full = np.zeros((layout.a_scale_rows_upper_bound(cum_m, groups), k // 16), np.uint8)
    full[: placed.shape[0]] = placed
    return a, full


def assert_bytes_equal(got, want, what: str, record_bytes):
    got = got.cpu().numpy() if hasattr(got, "cpu") else got
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"seed {SEED}: {what}: {len(bad)} bytes differ, first at {bad[:4].tolist()}: " \
                          f"{[(int(got[tuple(i)]), int(want[tuple(i)])) for i in bad[:4]]}"
    record_bytes(got.size)


def assert_weights_equal(b, b_scale, w32, gsf, record_bytes):
    """Every group's b and b_scale against the reference, gsf[g] the group's global scale."""
    for g in range(w32.shape[0]):
        packed, swizzled = R.quantize(w32[g], gsf[g])
        assert_bytes_equal(b[g], packed, f"b[{g}]", record_bytes)
        assert_bytes_equal(b_scale[g], swizzled, f"b_scale[{g}]", record_bytes)


def global_scale_arg(kind: str, gsf: np.ndarray):
    if kind == "python":
        return float(gsf[0])
    if kind == "scalar":
        return torch.tensor(gsf[0], dtype=torch.float32, device="cuda")
    if kind == "single":
        return torch.from_numpy(gsf[:1].astype(np.float32)).cuda()
    return torch.from_numpy(gsf.astype(np.float32)).cuda()


CASES = [
    # (group sizes, rows before the first group, rows after the last, K)
    ([37, 0, 1, 128, 200], 5, 7, 128),
    ([300, 0, 129, 3], 0, 0, 384),
    ([0, 0], 3, 2, 256),
    ([130, 260, 5], 1, 0, 2048),
    ([50, 77], 2, 3, 7168),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("gs_kind", ["per_group", "single", "scalar", "python"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_quantize_activations_bit_exact(rng, record_bytes, dtype, gs_kind, case):
    sizes, before, after, k = CASES[case]
    ind = np.concatenate([[before], before + np.cumsum(sizes)]).astype(np.int32)
    cum_m = int(ind[-1]) + after
    x32 = make_input(rng, cum_m, k, dtype)
    groups = len(sizes)
    amax = float(np.nanmax(np.abs(x32))) or 1.0
    # Global scales: the usual 448*6/amax, one far too large (scales saturate), one far too small
    # (many scales subnormal or zero), one a power of two (the e2m1 ties stay exact).
    choices = np.float32([448 * 6 / amax, 448 * 6 / amax * 2.0**12, 448 * 6 / amax * 2.0**-9, 2.0**3])
    gsf = np.float32(rng.choice(choices, size=groups)) if gs_kind == "per_group" else np.full(groups, choices[rng.integers(4)], np.float32)
    a, a_scale = q.quantize_activations(to_device(x32, dtype), torch.from_numpy(ind).cuda(),
                                        global_scale_arg(gs_kind, gsf))
    want_a, want_sf = expected_activations(x32, ind, gsf)
    assert a.dtype == torch.uint8 and a_scale.dtype == torch.uint8 and a.is_cuda
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("resident", [1, None])
def test_persistent_walk_many_units_per_warp(rng, record_bytes, monkeypatch, dtype, resident):
    """Each warp walks many units: a grid of one block per SM (resident=1) or the full wave, over
    enough rows that every warp crosses groups, empty groups, padding scale rows and rows outside
    the groups; its loads for the next unit are in flight while it encodes the current one."""
    if resident is not None:
        monkeypatch.setattr(q, "_resident_blocks", lambda spec, ordinal: resident)
    sizes = [300, 0, 1, 127, 129, 0, 1500, 3, 400]
    k = 1536  # two units per row, the second half-filled
    ind = np.concatenate([[9], 9 + np.cumsum(sizes)]).astype(np.int32)
    cum_m = int(ind[-1]) + 11
    x32 = make_input(rng, cum_m, k, dtype)
    gsf = np.float32(rng.choice([448 * 6 / 40.0, 3.0, 2.0**-3, 2.0**9], size=len(sizes)))
    x = to_device(x32, dtype)
    ind_d, gs_d = torch.from_numpy(ind).cuda(), torch.from_numpy(gsf).cuda()
    a, a_scale = q.quantize_activations(x, ind_d, gs_d)
    want_a, want_sf = expected_activations(x32, ind, gsf)
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)
    # The inverse walks the same units: exact decode of every row, zeros outside the groups.
    out = q.dequantize(a, a_scale, ind_d, out_dtype=torch.float32).cpu().numpy()
    want = np.zeros(x32.shape, np.float32)
    for g in range(len(sizes)):
        lo, hi = ind[g], ind[g + 1]
        if hi > lo:
            codes, s = R.quantize_blocks(x32[lo:hi], gsf[g])
            want[lo:hi] = R.dequantize(R.pack_fp4(codes), s)
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
    # amax: one running max per warp and group, flushed when a warp's units change group.
    got = q.global_scale_from_amax(x, ind_d).cpu().numpy()
    for g in range(len(sizes)):
        lo, hi = ind[g], ind[g + 1]
        amax = np.float32(np.abs(x32[lo:hi]).max()) if hi > lo else np.float32(0)
        want_g = np.float32(1) if amax == 0 else np.float32(448 * 6) / amax
        assert got[g].view(np.uint32) == want_g.view(np.uint32), (g, got[g], want_g)
    # Weights: runs of N rows, N_pad - N padding scale rows between them.
    w32 = np.stack([make_input(rng, 300, 512, dtype) for _ in range(5)])
    b, b_scale = q.quantize_weights(torch.from_numpy(w32).to(TORCH[dtype]).cuda(), torch.from_numpy(gsf[:5]).cuda())
    assert_weights_equal(b, b_scale, w32, gsf[:5], record_bytes)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("blocks", [1, 37, 4000])
@pytest.mark.parametrize("groups", [9, 31, 32, 300])
def test_quantize_spans_any_grid(rng, record_bytes, monkeypatch, dtype, blocks, groups):
    """Any grid of quantize_rows must write every byte: one block walking everything, 37 blocks, or
    more warps than units (4000 blocks: most warps exit at once). The units cross groups, empty groups,
    padding scale rows and rows outside the groups; K = 1600 ends each row on a partial 512-element
    step. Up to 256 groups are looked up in the block's shared-memory copy (9 and 31: one round of
    probes, 32: two); 300 groups in m_indptr itself."""
    real_launch = q.driver.launch

    def launch(spec, ordinal, grid, stream, args):
        if spec.symbol.startswith("nvfp4_quantize_rows"):
            grid = (blocks, 1, 1)
        real_launch(spec, ordinal, grid, stream, args)

    monkeypatch.setattr(q.driver, "launch", launch)
    k = 1600
    sizes = rng.integers(0, 4, size=groups)
    sizes[rng.integers(0, groups)] += 130  # one group spans two 128-row scale tiles
    sizes[rng.integers(0, groups)] = 0
    ind = np.concatenate([[3], 3 + np.cumsum(sizes)]).astype(np.int32)
    cum_m = int(ind[-1]) + 5
    x32 = make_input(rng, cum_m, k, dtype)
    gsf = np.float32(rng.choice([448 * 6 / 40.0, 3.0, 2.0**-3, 2.0**9], size=groups))
    a, a_scale = q.quantize_activations(to_device(x32, dtype), torch.from_numpy(ind).cuda(),
                                        torch.from_numpy(gsf).cuda())
    want_a, want_sf = expected_activations(x32, ind, gsf)
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)
    w32 = np.stack([make_input(rng, 70, k, dtype) for _ in range(3)])
    b, b_scale = q.quantize_weights(torch.from_numpy(w32).to(TORCH[dtype]).cuda(), float(gsf[0]))
    assert_weights_equal(b, b_scale, w32, np.full(3, gsf[0], np.float32), record_bytes)


@pytest.mark.parametrize("k", [1088, 7168])
def test_padding_scale_rows_after_every_data_row_count(rng, record_bytes, k):
    """The padding scale rows of a tile are zeroed as the tail of each lane's 16-byte word (rows l,
    l + 32, l + 64, l + 96): groups of 1..129 rows end their last tile at every kind of word
    boundary (d = 31, 32, 33, 63, ...), on K = 1088 (17 chunks of 512 bytes: a full slice of 16 and
    one of 1) and DeepSeek's 7168 (112 chunks). Weights with N = 97 leave 31 padding rows per group."""
    sizes = [1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129, 0, 2, 255, 256, 257]
    ind = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    x32 = make_input(rng, int(ind[-1]) + 3, k, "bfloat16")
    gsf = np.float32(rng.choice([448 * 6 / 40.0, 3.0, 2.0**-3], size=len(sizes)))
    a, a_scale = q.quantize_activations(to_device(x32, "bfloat16"), torch.from_numpy(ind).cuda(),
                                        torch.from_numpy(gsf).cuda())
    want_a, want_sf = expected_activations(x32, ind, gsf)
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)
    w32 = np.stack([make_input(rng, 97, k, "bfloat16") for _ in range(3)])
    b, b_scale = q.quantize_weights(torch.from_numpy(w32).to(torch.bfloat16).cuda(), float(gsf[0]))
    assert_weights_equal(b, b_scale, w32, np.full(3, gsf[0], np.float32), record_bytes)


@pytest.mark.parametrize("ind", [[3, 200, 60, 303], [-5, 10, 10, 99999], [400, 0, 0, 50], [7, 7, 2, -1]])
def test_malformed_m_indptr_stays_inside(rng, record_bytes, ind):
    """m_indptr is read on the GPU only, so a malformed one (decreasing, negative, past cum_m) cannot be
    refused; its bytes are unspecified, but the walk must end and every access stay inside the tensors
    (compute-sanitizer's memcheck runs this file), and the next valid call must be exact."""
    x32 = make_input(rng, 300, 256, "bfloat16")
    x = to_device(x32, "bfloat16")
    q.quantize_activations(x, torch.tensor(ind, dtype=torch.int32, device="cuda"), 1.0)
    torch.cuda.synchronize()
    good = np.array([0, 100, 300], np.int32)
    a, a_scale = q.quantize_activations(x, torch.from_numpy(good).cuda(), 2.0)
    want_a, want_sf = expected_activations(x32, good, [2.0, 2.0])
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_quantize_activations_non_finite(rng, record_bytes, dtype):
    x32 = make_input(rng, 300, 256, dtype, specials=True)
    x32[7, :16] = np.nan  # a whole NaN block
    x32[8, 16:32] = -0.0
    ind = np.array([2, 150, 290], np.int32)
    gsf = np.float32([448 * 6 / 50.0, 2.0**-4])
    a, a_scale = q.quantize_activations(to_device(x32, dtype), torch.from_numpy(ind).cuda(),
                                        torch.from_numpy(gsf).cuda())
    want_a, want_sf = expected_activations(x32, ind, gsf)
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)
    codes = R.unpack_fp4(want_a[7])[:16]
    assert (codes == 7).all() and R.unswizzle_scales(want_sf, 128, 16)[7 - ind[0], 0] == 0x7F  # sf_base(0) = 0


@pytest.mark.parametrize("gsf", [1.0, 448.0 * 6 / 1000.0, 2.0**20])
def test_e4m3_ties(rng, record_bytes, gsf):
    amaxes = e4m3_tie_amaxes(gsf)
    assert amaxes.size > 60  # most of the 124 midpoints are reachable exactly
    blocks = rng.uniform(-1, 1, (amaxes.size, 16)).astype(np.float32) * amaxes[:, None]
    blocks[np.arange(amaxes.size), rng.integers(0, 16, amaxes.size)] = amaxes
    rows = -(-blocks.size // 256)
    x32 = np.zeros((rows * 256,), np.float32)
    x32[: blocks.size] = blocks.reshape(-1)
    x32 = x32.reshape(rows, 256)
    ind = np.array([0, rows], np.int32)
    a, a_scale = q.quantize_activations(to_device(x32, "float32"), torch.from_numpy(ind).cuda(), gsf)
    want_a, want_sf = expected_activations(x32, ind, [gsf])
    assert_bytes_equal(a, want_a, "a", record_bytes)
    assert_bytes_equal(a_scale, want_sf, "a_scale", record_bytes)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("n,k,per_group", [(200, 256, True), (128, 128, False), (8, 1024, True), (136, 384, False)])
def test_quantize_weights_bit_exact(rng, record_bytes, dtype, n, k, per_group):
    groups = 3
    w32 = np.stack([make_input(rng, n, k, dtype) for _ in range(groups)])
    amax = np.nanmax(np.abs(w32.reshape(groups, -1)), axis=1)
    gsf = np.float32(448 * 6 / np.maximum(amax, 1e-30)) if per_group else np.full(groups, 2.0**5, np.float32)
    gs_arg = torch.from_numpy(gsf).cuda() if per_group else float(gsf[0])
    b, b_scale = q.quantize_weights(torch.from_numpy(w32).to(TORCH[dtype]).cuda(), gs_arg)
    assert tuple(b.shape) == (groups, n, k // 2) and tuple(b_scale.shape) == (groups, layout.padded_n(n), k // 16)
    assert_weights_equal(b, b_scale, w32, gsf, record_bytes)


def test_invalid_device_global_scales_give_nan_scales(rng, record_bytes):
    x32 = make_input(rng, 40, 128, "bfloat16")
    ind = np.array([0, 10, 20, 30, 40], np.int32)
    gsf = np.float32([0.0, np.inf, np.nan, 5.0])
    a, a_scale = q.quantize_activations(to_device(x32, "bfloat16"), torch.from_numpy(ind).cuda(),
                                        torch.from_numpy(gsf).cuda())
    a, a_scale = a.cpu().numpy(), a_scale.cpu().numpy()
    sf = R.unswizzle_scales(a_scale, a_scale.shape[0], 8)
    bases = layout.a_scale_group_bases(ind)
    for g in range(3):
        assert (R.unpack_fp4(a[ind[g]:ind[g + 1]]) == 7).all()
        assert (sf[bases[g]: bases[g] + 10] == 0x7F).all()
    codes, s = R.quantize_blocks(x32[30:40], gsf[3])
    np.testing.assert_array_equal(a[30:40], R.pack_fp4(codes))
    np.testing.assert_array_equal(sf[bases[3]: bases[3] + 10], s)
    record_bytes(a.size + a_scale.size)


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("with_gsf", [False, True])
def test_dequantize_inverts(rng, record_bytes, out_dtype, with_gsf):
    ind = np.array([3, 40, 40, 300], np.int32)
    x32 = make_input(rng, 305, 256, "bfloat16")
    gsf = np.float32([448 * 6 / 7.0, 3.0, 0.25])
    ind_d = torch.from_numpy(ind).cuda()
    gs_d = torch.from_numpy(gsf).cuda()
    a, a_scale = q.quantize_activations(to_device(x32, "bfloat16"), ind_d, gs_d)
    out = q.dequantize(a, a_scale, ind_d, gs_d if with_gsf else None, out_dtype=TORCH[out_dtype])
    assert out.dtype == TORCH[out_dtype] and tuple(out.shape) == x32.shape
    want = np.zeros(x32.shape, np.float32)
    for g in range(3):
        lo, hi = ind[g], ind[g + 1]
        codes, s = R.quantize_blocks(x32[lo:hi], gsf[g])
        vals = R.dequantize(R.pack_fp4(codes), s)  # exact float32
        want[lo:hi] = vals * (np.float32(1) / gsf[g]) if with_gsf else vals
    want_t = torch.from_numpy(want).to(TORCH[out_dtype])
    got = out.cpu()
    assert torch.equal(got.view(torch.uint8), want_t.view(torch.uint8)), \
        f"seed {SEED}: max diff {(got.float() - want_t.float()).abs().max()}"
    record_bytes(got.numel() * got.element_size())
    # Weights: the exact decode of quantize_weights' output.
    w32 = np.stack([make_input(rng, 136, 128, "bfloat16") for _ in range(2)])
    b, b_scale = q.quantize_weights(torch.from_numpy(w32).to(torch.bfloat16).cuda(), 2.0**4)
    wout = q.dequantize(b, b_scale, out_dtype=out_dtype).cpu().float().numpy()
    for g in range(2):
        codes, s = R.quantize_blocks(w32[g], 2.0**4)
        np.testing.assert_array_equal(wout[g], R.dequantize(R.pack_fp4(codes), s))
    record_bytes(wout.size * torch.tensor([], dtype=TORCH[out_dtype]).element_size())


def test_global_scale_from_amax(rng):
    x32 = make_input(rng, 200, 128, "bfloat16", ties=False)
    ind = np.array([5, 50, 50, 120, 190], np.int32)  # group 1 empty
    x32[120:190] = 0.0                               # group 3 all zeros
    x = to_device(x32, "bfloat16")
    ind_d = torch.from_numpy(ind).cuda()
    got = q.global_scale_from_amax(x, ind_d).cpu().numpy()
    two688 = np.float32(448 * 6)
    for g, v in enumerate(got):
        lo, hi = ind[g], ind[g + 1]
        amax = np.float32(np.abs(x32[lo:hi]).max()) if hi > lo else np.float32(0)
        want = np.float32(1) if amax == 0 else two688 / amax
        assert v.view(np.uint32) == np.float32(want).view(np.uint32), (g, v, want)
    whole = q.global_scale_from_amax(x).cpu().numpy()
    assert whole.shape == (1,) and whole[0] == two688 / np.float32(np.abs(x32).max())
    inside = q.global_scale_from_amax(x, ind_d, per_group=False).cpu().numpy()
    assert inside[0] == two688 / np.float32(np.abs(x32[5:190]).max())
    # Weights, and the non-finite cases.
    w32 = np.stack([make_input(rng, 64, 256, "float32", ties=False) for _ in range(4)])
    w32[1, 3, 5] = np.nan
    w32[2, 7, 9] = -np.inf
    w32[3] = 0
    gw = q.global_scale_from_amax(torch.from_numpy(w32).cuda()).cpu().numpy()
    assert gw[0] == two688 / np.float32(np.abs(w32[0]).max())
    assert np.isnan(gw[1]) and gw[2] == 0 and gw[3] == 1
    tiny = torch.full((4, 64), 1e-37, dtype=torch.float32, device="cuda")
    assert q.global_scale_from_amax(tiny).item() == np.finfo(np.float32).max


def test_alpha_from_global_scales(rng):
    a = rng.uniform(0.1, 1e4, 5).astype(np.float32)
    b = rng.uniform(0.1, 1e4, 5).astype(np.float32)
    got = q.alpha_from_global_scales(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()).cpu().numpy()
    np.testing.assert_array_equal(got, np.float32(1) / (a * b))
    one = q.alpha_from_global_scales(torch.tensor(a[0], device="cuda"), torch.from_numpy(b).cuda()).cpu().numpy()
    np.testing.assert_array_equal(one, np.float32(1) / (a[0] * b))
    single = q.alpha_from_global_scales(torch.tensor([a[0]], device="cuda"), torch.tensor(b[0], device="cuda"))
    assert tuple(single.shape) == (1,)


def test_ptx_build_and_side_stream_give_the_same_bytes(rng, record_bytes, monkeypatch):
    x32 = make_input(rng, 260, 512, "bfloat16")
    ind = torch.tensor([1, 100, 259], dtype=torch.int32, device="cuda")
    x = to_device(x32, "bfloat16")
    a0, s0 = q.quantize_activations(x, ind, 17.0)
    monkeypatch.setenv("NVFP4_DRIVER_FORCE_PTX", "1")
    a1, s1 = q.quantize_activations(x, ind, 17.0)
    monkeypatch.delenv("NVFP4_DRIVER_FORCE_PTX")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        a2, s2 = q.quantize_activations(x, ind, 17.0)
    torch.cuda.current_stream().wait_stream(side)
    want_a, want_sf = expected_activations(x32, ind.cpu().numpy(), [17.0, 17.0])
    for got_a, got_s in ((a0, s0), (a1, s1), (a2, s2)):
        assert_bytes_equal(got_a, want_a, "a", record_bytes)
        assert_bytes_equal(got_s, want_sf, "a_scale", record_bytes)


@pytest.mark.parametrize("data", ["wide", "gaussian"])
def test_quantized_operands_feed_the_gemm(rng, data):
    """quantize -> GEMM -> compare with the reference GEMM on the same bytes (SPEC §5); on Gaussian
    data also with the unquantized float64 product (the 4-bit error, a loose sanity bound: on data
    spread over 40 binades a few huge products dominate and that error is not a stable number)."""
    from nvfp4_driver import testing

    ind = np.array([0, 70, 70, 200], np.int32)
    if data == "wide":
        x32 = make_input(rng, 200, 256, "bfloat16", ties=False)
        w32 = np.stack([make_input(rng, 64, 256, "bfloat16", ties=False) for _ in range(3)])
    else:
        x32 = torch.randn(200, 256).bfloat16().float().numpy()
        w32 = torch.randn(3, 64, 256).bfloat16().float().numpy()
    ind_d = torch.from_numpy(ind).cuda()
    x = to_device(x32, "bfloat16")
    w = torch.from_numpy(w32).to(torch.bfloat16).cuda()
    gx, gw = q.global_scale_from_amax(x), q.global_scale_from_amax(w)
    a, a_scale = q.quantize_activations(x, ind_d, gx)
    b, b_scale = q.quantize_weights(w, gw)
    alpha = q.alpha_from_global_scales(gx, gw)
    out = nd.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, ind_d, alpha=alpha)
    ref, abs_sum = R.group_gemm_with_abs(a.cpu(), b.cpu(), a_scale.cpu(), b_scale.cpu(), ind, alpha.cpu())
    bits = out.view(torch.int16).cpu().numpy().view(np.uint16)
    report = testing.tolerance_check(bits, ref, abs_sum, 256, "bfloat16", m_indptr=ind)
    assert report.ok, report
    if data == "gaussian":
        exact = np.concatenate([x32[ind[g]:ind[g + 1]].astype(np.float64) @ w32[g].T.astype(np.float64)
                                for g in range(3)])
        approx = out.float().cpu().numpy().astype(np.float64)
        assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 0.25


_SIZES = {"ptr": 8, "i64": 8, "i32": 4, "f32": 4}


def test_quantizer_abi_matches_manifest():
    """cuFuncGetParamInfo of every quantizer image this GPU loads vs the manifest's parameter list."""
    cap = driver.device_info(0).capability
    checked = 0
    for name, entry in variants.manifest()["kernels"].items():
        if entry["family"] != "quantize":
            continue
        for force_ptx in (False, True):
            spec = variants.quantize_spec(entry["op"], entry["dtype"], cap, force_ptx)
            assert spec.symbol == name
            layout_, offset = [], 0
            for t in spec.param_types:
                offset = (offset + _SIZES[t] - 1) // _SIZES[t] * _SIZES[t]
                layout_.append((offset, _SIZES[t]))
                offset += _SIZES[t]
            assert driver.param_info(spec, 0) == layout_, (name, spec.file)
            checked += 1
    assert checked == 30  # 15 symbols (11 plain, 4 silu_mul), cubin and PTX
