"""The first mistakes a newcomer makes, and the messages that must tell them what to do instead:
unquantized a/b, a forgotten pack (one e2m1 code per byte), and a tightly stacked a_scale (the
sf_base trap, SPEC §3) in checked mode.

The arrays are test_bad_inputs.py's fakes (addresses never dereferenced) and the driver layer is its
failing stand-in, or its fake sm_90 GPU that records launches: every check here runs on the CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from nvfp4_driver import a_scale_group_bases, a_scale_rows, layout, ops
from nvfp4_driver.ops import check_m_indptr, group_gemm_nvfp4_nt_groupwise_ptr
from nvfp4_driver.testing import a_scale_rows_read
from test_bad_inputs import (BASE_PTR, Arg, Case, ReachedDriver, fake_gpu,  # noqa: F401 (fixtures)
                             no_driver)

G, N, K, CUM_M = 3, 64, 256, 400


def _case(kind="cupy", a=("uint8", (CUM_M, K // 2)), b=("uint8", (G, N, K // 2)), a_scale_rows_=None,
          b_scale_cols=K // 16, k_scale=K):
    sf_rows = layout.a_scale_rows_upper_bound(CUM_M, G) if a_scale_rows_ is None else a_scale_rows_
    args = {"a": Arg(a[1], a[0], BASE_PTR, kind=kind),
            "b": Arg(b[1], b[0], BASE_PTR + (1 << 32), kind=kind),
            "a_scale": Arg((sf_rows, k_scale // 16), "uint8", BASE_PTR + (2 << 32), kind=kind),
            "b_scale": Arg((G, 128, b_scale_cols), "uint8", BASE_PTR + (3 << 32), kind=kind),
            "m_indptr": Arg((G + 1,), "int32", BASE_PTR + (4 << 32), kind=kind),
            "out": Arg((CUM_M, N), "bfloat16", BASE_PTR + (5 << 32), kind=kind)}
    return Case(args, {"stream": 0}, G, N, K, CUM_M)


def test_the_base_case_is_valid():
    """Without the mistakes below, the same call gets as far as the driver: each test's fault is its own."""
    with pytest.raises(ReachedDriver):
        _case().call()


# ---------------------------------------------------------------------------------------------------
# 1. unquantized a or b
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["torch", "cupy", "cai"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_unquantized_a_says_quantize_activations(kind, dtype):
    case = _case(kind, a=(dtype, (CUM_M, K)))  # the activations themselves, (cum_m, K)
    with pytest.raises(TypeError) as info:
        case.call()
    msg = str(info.value)
    assert msg.startswith(f"a.dtype={dtype} but "), msg
    assert "quantize first with nvfp4_driver.quantize_activations(x, m_indptr, global_scale)" in msg, msg
    assert f"(shape ({CUM_M}, {K}))" in msg, msg


@pytest.mark.parametrize("kind", ["torch", "cupy", "cai"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_unquantized_b_says_quantize_weights(kind, dtype):
    case = _case(kind, b=(dtype, (G, N, K)))  # the weights themselves, (G, N, K)
    with pytest.raises(TypeError) as info:
        case.call()
    msg = str(info.value)
    assert msg.startswith(f"b.dtype={dtype} but "), msg
    assert "quantize first with nvfp4_driver.quantize_weights(w, global_scale)" in msg, msg


def test_both_unquantized_names_a_first():
    case = _case(a=("bfloat16", (CUM_M, K)), b=("bfloat16", (G, N, K)))
    with pytest.raises(TypeError, match=r"^a\.dtype=bfloat16 .*quantize_activations"):
        case.call()


def test_the_named_quantizers_exist():
    """The message must name functions a user can call."""
    import nvfp4_driver
    for name in ("quantize_activations", "quantize_weights"):
        assert callable(getattr(nvfp4_driver, name)) and name in nvfp4_driver.__all__


# ---------------------------------------------------------------------------------------------------
# 2. a forgotten pack: one e2m1 code per byte
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["torch", "cupy", "cai"])
def test_unpacked_a_is_named(kind):
    case = _case(kind, a=("uint8", (CUM_M, K)))  # K codes per row instead of K/2 bytes
    with pytest.raises(ValueError) as info:
        case.call()
    msg = str(info.value)
    assert msg.startswith(f"b.shape=({G}, {N}, {K // 2}) but (G, N, K/2) needs"), msg  # the old text stays
    assert f"a.shape[1]={K} is 2*b.shape[2]: a looks unpacked" in msg, msg
    assert "nvfp4_driver.quantize_activations" in msg and "b looks unpacked" not in msg, msg


def test_unpacked_b_is_named():
    case = _case(b=("uint8", (G, N, K)))
    with pytest.raises(ValueError) as info:
        case.call()
    msg = str(info.value)
    assert f"b.shape[2]={K} is 2*a.shape[1]: b looks unpacked" in msg, msg
    assert "nvfp4_driver.quantize_weights" in msg and "a looks unpacked" not in msg, msg


def test_a_and_b_both_unpacked():
    """Consistent shapes but K read as twice the real one: the scales' size gives it away."""
    case = _case(a=("uint8", (CUM_M, K)), b=("uint8", (G, N, K)))  # b_scale and a_scale sized for the real K
    with pytest.raises(ValueError) as info:
        case.call()
    msg = str(info.value)
    assert msg.startswith(f"b_scale has {G * 128 * K // 16} bytes"), msg
    assert "as if K were doubled: if a and b hold one e2m1 code per byte" in msg, msg


def test_other_shape_mismatches_get_no_pack_hint():
    case = _case(b=("uint8", (G, N, K // 2 + 64)))
    with pytest.raises(ValueError) as info:
        case.call()
    assert "unpacked" not in str(info.value) and "b.shape=" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# 3. the sf_base trap: a_scale stacked tightly, caught in checked mode
# ---------------------------------------------------------------------------------------------------

def _tight_rows(m_indptr):
    sizes = np.diff(np.asarray(m_indptr))
    return int(((sizes + 127) // 128 * 128).sum())


@pytest.mark.parametrize("m_indptr,first_wrong", [
    ([0, 128, 256, 384], 2),   # the documented example: group 2 at row 384, not 256
    ([0, 100, 200, 300], 2),
    ([0, 5, 5, 10, 20], 2),    # an empty group 1 moves group 2's base, not its tight offset
])
def test_tight_a_scale_names_a_scale_group_bases(fake_gpu, monkeypatch, m_indptr, first_wrong):
    tight, need = _tight_rows(m_indptr), a_scale_rows_read(m_indptr)
    assert tight < need and m_indptr[-1] <= CUM_M  # a trap, within the case's rows
    case = _case(a_scale_rows_=tight)
    monkeypatch.setattr(ops, "_host_m_indptr", lambda *a, **k: np.array(m_indptr, np.int32))
    case.kwargs["check_inputs"] = True
    with pytest.raises(ValueError) as info:
        case.call()
    msg = str(info.value)
    assert f"needs {need} rows" in msg and f"a_scale_rows(m_indptr)={a_scale_rows(m_indptr)} rows" in msg, msg
    assert "sf_base trap" in msg and "a_scale_group_bases(m_indptr)" in msg, msg
    bases = a_scale_group_bases(m_indptr)
    assert f"group {first_wrong} starts at row a_scale_group_bases(m_indptr)[{first_wrong}]=" \
           f"{bases[first_wrong]}" in msg, msg
    assert not fake_gpu.launches
    # The same call with the rows the kernel reads launches.
    case.args["a_scale"].shape = (need, K // 16)
    case.call()
    assert len(fake_gpu.launches) == 1


def test_tight_a_scale_unchecked_is_not_read_back(fake_gpu, monkeypatch):
    """Without the checked mode nothing reads m_indptr (the kernel clamps): the call launches."""
    def fail(*args, **kwargs):
        raise AssertionError("m_indptr was read without check_inputs")
    monkeypatch.setattr(ops, "_host_m_indptr", fail)
    _case(a_scale_rows_=384).call()
    assert len(fake_gpu.launches) == 1


@pytest.mark.parametrize("sizes", [[128, 128, 128], [5, 300, 0, 17, 129], [64, 64, 64, 64], [200, 60],
                                   [1, 1, 1, 1], [0, 0, 130, 5]])
@pytest.mark.parametrize("sf_k", [8, 16, 448])
def test_check_m_indptr_tight_stacking(sizes, sf_k):
    """The host check alone (both entry points call it). A tight stacking that misplaces a group names
    it and its a_scale_group_bases row; one that misplaces none (only its size is short) or an
    a_scale short by other amounts gets the plain message, which still names a_scale_group_bases."""
    ind = np.concatenate(([0], np.cumsum(sizes))).astype(np.int32)
    tight, need = _tight_rows(ind), a_scale_rows_read(ind)
    blocks = np.concatenate(([0], np.cumsum((np.diff(ind) + 127) // 128 * 128)))[:-1]
    bases = a_scale_group_bases(ind)
    misplaced = [g for g in range(len(sizes)) if sizes[g] and blocks[g] != bases[g]]
    if tight >= need:
        check_m_indptr(ind, int(ind[-1]), tight * sf_k, sf_k)  # no trap: a tight stacking is large enough
        assert not misplaced
    else:
        with pytest.raises(ValueError) as info:
            check_m_indptr(ind, int(ind[-1]), tight * sf_k, sf_k)
        msg = str(info.value)
        assert f"needs {need} rows" in msg and "a_scale_group_bases(m_indptr)" in msg, msg
        if misplaced:
            g = misplaced[0]
            assert "sf_base trap" in msg, msg
            assert (f"group {g} starts at row a_scale_group_bases(m_indptr)[{g}]={bases[g]}, not at row "
                    f"{blocks[g]}") in msg, msg
        else:
            assert "sf_base trap" not in msg, msg
    # Short by a whole block but not a tight stacking: the plain message.
    if need - 128 != tight and need >= 128:
        with pytest.raises(ValueError) as info:
            check_m_indptr(ind, int(ind[-1]), (need - 128) * sf_k, sf_k)
        assert "sf_base trap" not in str(info.value) and "a_scale_group_bases" in str(info.value)
    check_m_indptr(ind, int(ind[-1]), need * sf_k, sf_k)  # enough: no error


def test_ptr_entry_point_checked_mode_names_the_trap(fake_gpu, monkeypatch):
    ind = np.array([0, 128, 256, 384], np.int32)
    monkeypatch.setattr(ops, "_host_m_indptr", lambda *a, **k: ind)
    ptrs = dict(a=BASE_PTR, b=BASE_PTR + (1 << 32), a_scale=BASE_PTR + (2 << 32), b_scale=BASE_PTR + (3 << 32),
                m_indptr=BASE_PTR + (4 << 32), alpha=None, out=BASE_PTR + (6 << 32))
    with pytest.raises(ValueError, match=r"a_scale_group_bases\(m_indptr\)\[2\]=384, not at row 256"):
        group_gemm_nvfp4_nt_groupwise_ptr(**ptrs, num_groups=3, n=N, k=K, cum_m=384, a_scale_nbytes=384 * K // 16,
                                          device=0, check_inputs=True)
    assert not fake_gpu.launches
