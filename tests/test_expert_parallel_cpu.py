"""ExpertParallelNVFP4's dispatch and combine on the CPU: gloo process groups of 2, 3 and 4 processes
(one torch.multiprocessing spawn of 4, subgroups of 2 and 3), a float64 reference expert (a matrix per
expert) in place of the GPU experts, every rank's output against a NumPy reference of the whole layer
over all ranks' tokens.

Every process builds every rank's tokens from one seed, so it knows what each rank must send and
receive. The cases cover uneven shares (E % W != 0, different T per rank), a rank with no tokens, a rank
whose experts no token picks, k = 1, ids outside [0, E), and the dynamic activation scale agreed over
the group; and the layer around a real NVFP4Experts (its kernels replaced by nvfp4_driver.reference)
against NVFP4Experts holding all experts, bit for bit, with both transports. One case runs a
deliberately broken local expert (rows of a group reversed) and checks that the comparison catches it,
so a wrong permutation anywhere in the path cannot pass.
"""
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
mp = pytest.importorskip("torch.multiprocessing")

import moe_example as ex  # noqa: E402
from nvfp4_driver import expert_parallel as ep_module, experts as experts_module  # noqa: E402
from nvfp4_driver.expert_parallel import ExpertParallelNVFP4, agreed_global_scale, expert_blocks  # noqa: E402
from nvfp4_driver.moe import NVFP4Experts  # noqa: E402

HIDDEN = 16

# (name, experts, tokens per rank, topk, experts no token picks, extra ids outside [0, E) on rank 0)
CASES = {
    2: [("uneven_tokens", 8, [37, 5], 3, (), False),
        ("odd_experts_empty_rank0", 5, [0, 19], 2, (), False),
        ("rank1_owns_no_routed_expert", 6, [11, 7], 2, (3, 4, 5), False),
        ("top1_one_token_each", 4, [1, 1], 1, (), False),
        ("dropped_slots", 6, [9, 4], 2, (), True)],
    3: [("uneven_experts_and_tokens", 7, [13, 0, 29], 4, (), False),
        ("rank2_owns_no_routed_expert", 8, [6, 10, 3], 2, (6, 7), False)],
    4: [("ten_experts_four_ranks", 10, [9, 17, 0, 3], 3, (0, 1, 2), False)],
}


def make_case(seed, experts, tokens, topk, unpicked, dropped):
    """Every rank's tokens (float64), ids and weights, and the experts' matrices, from one seed."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((experts, HIDDEN, HIDDEN))
    picked = np.array([e for e in range(experts) if e not in unpicked])
    per_rank = []
    for t in tokens:
        x = rng.standard_normal((t, HIDDEN)) * np.exp2(rng.integers(-8, 9, (t, 1)))
        ids = np.array([rng.choice(picked, size=topk, replace=False) for _ in range(t)], np.int64).reshape(t, topk)
        if dropped and t:
            ids[0, 0], ids[-1, -1] = -1, experts  # a dropped slot and one past the last expert
        wts = rng.random((t, topk))
        per_rank.append((x, ids.astype(np.int64), wts))
    return weights, per_rank


def reference_layer(x, ids, wts, weights):
    """sum over slots of weight * (x @ W[expert]); slots with ids outside [0, E) add nothing."""
    out = np.zeros_like(x)
    for slot in range(ids.shape[1]):
        valid = (ids[:, slot] >= 0) & (ids[:, slot] < weights.shape[0])
        e = np.clip(ids[:, slot], 0, weights.shape[0] - 1)
        out += np.where(valid[:, None], wts[:, slot, None] * np.einsum("th,thn->tn", x, weights[e]), 0)
    return out


def local_reference(weights, start, expected_rows, broken=False):
    """The injected local experts: group g's rows times W[start + g], read through m_indptr like the GEMM.
    Checks that it receives exactly the rows routed to its experts and that the ids match m_indptr."""
    def run(rows, m_indptr, local_ids):
        ind = m_indptr.tolist()
        assert m_indptr.dtype == torch.int32 and ind[0] == 0 and ind[-1] == rows.shape[0] == expected_rows
        assert torch.equal(local_ids, torch.repeat_interleave(torch.arange(len(ind) - 1), torch.tensor(ind).diff()))
        out = torch.full_like(rows, float("nan"))  # poison: a row left unwritten shows up as NaN
        for g in range(len(ind) - 1):
            y = rows[ind[g]:ind[g + 1]] @ torch.from_numpy(weights[start + g])
            out[ind[g]:ind[g + 1]] = y.flip(0) if broken and ind[g + 1] - ind[g] > 1 else y
        return out
    return run


def check_case(group, seed, experts, tokens, topk, unpicked, dropped, broken=False):
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    weights, per_rank = make_case(seed, experts, tokens, topk, unpicked, dropped)
    start, stop = expert_blocks(experts, world)[rank]
    routed_here = sum(int(((ids >= start) & (ids < stop)).sum()) for _, ids, _ in per_rank)
    layer = ExpertParallelNVFP4(local_reference(weights, start, routed_here, broken), experts, group)
    x, ids, wts = per_rank[rank]
    out = layer(torch.from_numpy(x), torch.from_numpy(ids), torch.from_numpy(wts))
    want = reference_layer(x, ids, wts, weights)
    assert out.dtype == torch.float64 and out.shape == x.shape
    return np.allclose(out.numpy(), want, rtol=1e-12, atol=1e-12 * np.abs(want).max(initial=1.0))


def check_agreed_scale(group):
    """agreed_global_scale: float32 448 * 6 / (max|rows| over all ranks), one rank with no rows."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    rng = np.random.default_rng(100 + world)
    all_rows = [rng.standard_normal((0 if r == 1 else 5 + r, 64)).astype(np.float32) * 2.0 ** (3 * r - 4)
                for r in range(world)]
    got = agreed_global_scale(torch.from_numpy(all_rows[rank]), group)
    amax = np.float32(max(np.abs(r).max(initial=0) for r in all_rows))
    assert got.dtype == torch.float32 and got.shape == (1,)
    assert got.item() == np.float32(2688.0) / amax, (got.item(), amax)
    zeros = agreed_global_scale(torch.zeros(3 if rank else 0, 64), group)
    assert zeros.item() == 1.0  # amax 0 everywhere: 1, as global_scale_from_amax


def use_reference_kernels():
    """NVFP4Experts' GPU calls computed by nvfp4_driver.reference on CPU tensors (as test_experts_cpu)."""
    backend = ex.reference_backend()
    gemm = backend.pop("group_gemm_nvfp4_nt_groupwise")
    for name, fn in backend.items():
        setattr(experts_module, name, fn)
    experts_module.group_gemm_nvfp4_nt_groupwise = lambda *args, out_dtype: gemm(*args).to(out_dtype)
    ep_module.quantize_activations = backend["quantize_activations"]  # the sender's, transport="nvfp4"


def check_nvfp4_experts(group, static, only_rank0_experts, transport):
    """The layer around real NVFP4Experts (reference kernels) against NVFP4Experts on all tokens, bit for
    bit: the same rows per expert in the same order, and dynamic scales agreed over the ranks; with
    transport="nvfp4" the rows are quantized by their sender and the scales placed by their owner.
    With only_rank0_experts, rank 1 receives no rows and must still join the scale all-reduces."""
    rank = dist.get_rank(group)
    tokens, hidden, inter, experts, topk = 24, 256, 128, 4, 2
    x, w13, w2, ids, wts = ex.make_layer(tokens, hidden, inter, experts, topk, 40 + static, device="cpu")
    if only_rank0_experts:
        ids = ids % 2
        ids[:, 1] = 1 - ids[:, 0]
    scales = dict(input_global_scale=2688.0 / x.abs().max().float().item(), act_global_scale=2688.0 / 20)
    single = NVFP4Experts.from_bf16(w13, w2, **(scales if static else {}))
    mine = slice(0, 10) if rank == 0 else slice(10, tokens)
    layer = ExpertParallelNVFP4.from_experts(single, group, transport=transport)
    out = layer(x[mine], ids[mine], wts[mine])
    want = single(x, ids, wts)[mine]
    assert torch.equal(out, want), \
        f"rank {rank}: static={static} {transport}: {int((out != want).sum())} elements differ"


def check_refusals(group):
    """Bad constructions say what to do instead (raised on every rank, before any collective)."""
    rank = dist.get_rank(group)
    with pytest.raises(ValueError, match=f"rank {rank} owns experts \\[{2 * rank}, {2 * rank + 2}\\) of 4 but "
                                         f"local_experts holds 4"):
        ExpertParallelNVFP4(_experts_of(4), 4, group)
    with pytest.raises(ValueError, match="needs NVFP4Experts"):
        ExpertParallelNVFP4(lambda r, m, i: r, 4, group, transport="nvfp4")
    with pytest.raises(ValueError, match="must be 'bf16'"):
        ExpertParallelNVFP4(lambda r, m, i: r, 4, group, transport="fp8")
    per_expert = _experts_of(2, input_global_scale=torch.ones(2), act_global_scale=torch.ones(2))
    with pytest.raises(ValueError, match="one input_global_scale for all experts"):
        ExpertParallelNVFP4(per_expert, 4, group, transport="nvfp4")


def _experts_of(count, **scales):
    """An NVFP4Experts of ``count`` experts with valid buffer shapes (H = I = 128); contents unused."""
    def stack(n, k):
        return (torch.zeros(count, n, k // 2, dtype=torch.uint8), torch.zeros(count, n, k // 16, dtype=torch.uint8),
                torch.ones(count))
    return NVFP4Experts(*stack(256, 128), *stack(128, 128), **scales)


def run_cases(group):
    world = dist.get_world_size(group)
    for i, (name, *params) in enumerate(CASES[world]):
        assert check_case(group, 1000 * world + i, *params), f"rank {dist.get_rank()}: {name} (W={world}) differs"
    # The check can fail: reversing the rows of every group of the local experts must be caught.
    caught = torch.tensor([int(not check_case(group, 1000 * world, *CASES[world][0][1:], broken=True))])
    dist.all_reduce(caught, group=group)  # some rank must see it (a rank may get single-row groups only)
    assert caught.item() > 0, f"W={world}: a broken permutation went unnoticed"
    check_agreed_scale(group)
    if world == 2:
        check_refusals(group)
        use_reference_kernels()
        for transport in ("bf16", "nvfp4"):
            for static, only_rank0_experts in ((False, False), (True, False), (False, True)):
                check_nvfp4_experts(group, static, only_rank0_experts, transport)


def worker(rank, world, port, errors):
    """One spawn for all group sizes (spawning costs seconds a process): groups of ranks [0, W) for each
    W in CASES, built from one gloo world. A failure's traceback goes to ``errors``/rank<r>.txt too:
    spawn reports only the first process to die, often a peer whose connection closed."""
    try:
        run_all_groups(rank, world, port)
    except BaseException:
        (Path(errors) / f"rank{rank}.txt").write_text(traceback.format_exc())
        raise


def run_all_groups(rank, world, port):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # where a process group starts (see tests/gpu)
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        groups = {w: dist.new_group(list(range(w))) if w < world else None for w in sorted(CASES)}
        for w, group in groups.items():
            if rank < w:
                run_cases(group)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dispatch_and_combine_over_gloo(tmp_path):
    try:
        mp.spawn(worker, args=(max(CASES), free_port(), str(tmp_path)), nprocs=max(CASES), join=True)
    except mp.ProcessRaisedException:
        # The assertion first: the others are mostly peers that lost their connection.
        reports = sorted((p.read_text() for p in tmp_path.glob("rank*.txt")), key=lambda t: "AssertionError" not in t)
        pytest.fail("\n".join(reports), pytrace=False)


def test_expert_blocks():
    assert expert_blocks(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert expert_blocks(256, 8)[-1] == (224, 256)
    assert expert_blocks(3, 3) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError, match="at most 2 ranks"):
        expert_blocks(2, 3)
    with pytest.raises(ValueError, match="positive int"):
        expert_blocks(8, 0)


def test_needs_an_initialised_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ExpertParallelNVFP4(lambda r, m, i: r, 8)


_WITHOUT_TORCH = """
import sys
class NoTorch:  # as if torch were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(name)
sys.meta_path.insert(0, NoTorch())
import nvfp4_driver.moe
print("torch" in sys.modules)
"""


def test_moe_exports_the_layer_lazily():
    import nvfp4_driver.moe as moe
    assert moe.ExpertParallelNVFP4 is ExpertParallelNVFP4
    r = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr  # moe imports without torch
