"""ExpertParallelNVFP4 over NCCL against the single-GPU NVFP4Experts on the same quantized weights and tokens.

One GPU: a one-rank NCCL group (FileStore). The layer then runs the very same rows, in the same order,
with the same m_indptr and scales through the same kernels as NVFP4Experts, so the outputs must be
equal bit for bit (decode and prefill sizes, bf16 and fp16, dynamic and static activation scales), and
one call must synchronise with the host exactly once (the split sizes).

Two GPUs (skip with "needs 2 GPUs" on fewer): two processes (spawned here, or this file under
``torchrun --nproc-per-node 2``), each holding half the experts and its own share of the tokens, against
NVFP4Experts holding all experts on one GPU. A rank's grouped GEMMs see fewer groups and other row
counts, so the kernel's cut (``variants.auto_tiles``, chosen from the mean rows per group) may differ and
with it the float32 summation order: a gate/up output may round differently and flip one activation's
fp4 code. So the check is the one torch.compile's output gets in test_experts_gpu.py: within a small
fraction of the NVFP4 quantization error of the float64 pipeline, and within the derived bound. The
number of bit-different elements is printed.
"""
import os
import socket
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import moe_example as ex  # noqa: E402
from test_experts_gpu import check  # noqa: E402

from nvfp4_driver.expert_parallel import ExpertParallelNVFP4  # noqa: E402
from nvfp4_driver.moe import NVFP4Experts  # noqa: E402

HIDDEN, INTER = 1024, 512
# (tokens over all ranks, experts, topk): decode (about 8 rows per expert: the 16-row token tile) and
# prefill (about 500 rows per expert: the 128-row tile), far from auto_tiles' thresholds on every rank.
SIZES = {"decode": (32, 32, 8), "prefill": (1024, 16, 8)}
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def make_inputs(size, dtype, seed, device):
    tokens, experts, topk = SIZES[size]
    x, w13, w2, ids, wts = ex.make_layer(tokens, HIDDEN, INTER, experts, topk, seed, device=device)
    return x.to(dtype), w13, w2, ids, wts


def static_scales(x):
    """448 * 6 / amax of x, and a generous one for SiLU(gate) * up (as test_experts_gpu's graph test)."""
    return dict(input_global_scale=2688.0 / x.abs().max().float().item(), act_global_scale=2688.0 / 20)


def bit_differences(a, b) -> int:
    return int((a.view(torch.int16) != b.view(torch.int16)).sum())


# ------------------------------------------------------------------------------------- one GPU


@pytest.fixture(scope="module")
def one_rank_nccl(tmp_path_factory):
    if not dist.is_available() or not dist.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    os.environ.update(MULTICAST_OFF)
    store = dist.FileStore(str(tmp_path_factory.mktemp("ep") / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


@pytest.mark.parametrize("transport", ["bf16", "nvfp4"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("size", sorted(SIZES))
def test_one_rank_equals_nvfp4_experts_bit_for_bit(one_rank_nccl, size, dtype, static, transport):
    """transport="nvfp4" too: the sender quantizes all rows as one group with the scale the layer would
    compute (agreed_global_scale: the same correctly rounded 2688 / amax), and a row's bytes do not
    depend on its group, so the GEMMs read the same bytes."""
    x, w13, w2, ids, wts = make_inputs(size, dtype, seed=21, device="cuda")
    single = NVFP4Experts.from_bf16(w13, w2, **(static_scales(x) if static else {}))
    layer = ExpertParallelNVFP4.from_experts(single, transport=transport)
    assert layer.num_local_experts == single.num_experts
    out = layer(x, ids, wts)
    want = single(x, ids, wts)
    torch.cuda.synchronize()
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, want), f"{bit_differences(out, want)} elements differ"
    if not static and transport == "bf16" and dtype == torch.bfloat16:
        # against the float64 NVFP4 pipeline too, as NVFP4Experts is (the bf16 reference layer there
        # takes bf16 tokens; fp16 layers are held to the same bound in test_experts_gpu.py)
        print(check(out, x, w13, w2, ids, wts))


def test_one_rank_from_bf16_keeps_nvfp4_experts_bytes(one_rank_nccl):
    _, w13, w2, _, _ = make_inputs("decode", torch.bfloat16, seed=22, device="cuda")
    single = NVFP4Experts.from_bf16(w13, w2)
    layer = ExpertParallelNVFP4.from_bf16(w13, w2)
    for name in ("w13", "w13_scale", "w13_global_scale", "w2", "w2_scale", "w2_global_scale"):
        assert torch.equal(getattr(layer.experts, name), getattr(single, name)), name


@pytest.mark.parametrize("transport", ["bf16", "nvfp4"])
def test_one_host_sync_per_call(one_rank_nccl, transport):
    """torch reports every synchronising CUDA call in "warn" mode: a call makes exactly one (the splits)."""
    x, w13, w2, ids, wts = make_inputs("decode", torch.bfloat16, seed=23, device="cuda")
    layer = ExpertParallelNVFP4.from_bf16(w13, w2, transport=transport)
    layer(x, ids, wts)  # warm-up: modules load, checks are cached
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            layer(x, ids, wts)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # torch also warns once per process that the debug mode is a prototype: not a synchronisation
    syncs = [str(w.message) for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
    assert len(syncs) == 1, syncs


# ------------------------------------------------------------------------------------- two GPUs


def two_gpu_check(rank, world, size, dtype, static, transport):
    """Rank ``rank``'s share of the tokens (uneven: 3/8 on rank 0) through the expert-parallel layer,
    against NVFP4Experts with all experts on this GPU over all tokens."""
    x, w13, w2, ids, wts = make_inputs(size, dtype, seed=31, device=f"cuda:{rank}")
    single = NVFP4Experts.from_bf16(w13, w2, **(static_scales(x) if static else {}))
    layer = ExpertParallelNVFP4.from_experts(single, transport=transport)
    cut = [0, 3 * x.shape[0] // 8, x.shape[0]] if world == 2 else [x.shape[0] * r // world for r in range(world + 1)]
    mine = slice(cut[rank], cut[rank + 1])
    out = layer(x[mine], ids[mine], wts[mine])
    want = single(x, ids, wts)[mine]
    torch.cuda.synchronize()
    assert out.dtype == dtype and out.shape == x[mine].shape
    # The NVFP4 quantization error of this share (float64 pipeline) sets the scale of the comparison.
    exact64, nvfp4_64 = ex.layers_f64(x[mine], w13, w2, ids[mine], wts[mine])
    ratio = ex.rel(out, want.float().cpu().numpy()) / ex.rel(nvfp4_64, exact64)
    print(f"rank {rank}: {size} {dtype} static={static} {transport}: {bit_differences(out, want)} of "
          f"{out.numel()} elements differ from NVFP4Experts; |ep - single| / |nvfp4_f64 - exact| = {ratio:.3g}")
    assert ratio <= ex.RATIO_VS_NVFP4_F64, f"rank {rank}: expert-parallel output strays from NVFP4Experts"
    if transport == "nvfp4":  # the same bytes reach the same GEMMs as with bf16 rows: the same bits
        bf16_rows = ExpertParallelNVFP4.from_experts(single)(x[mine], ids[mine], wts[mine])
        assert torch.equal(out, bf16_rows), f"rank {rank}: {bit_differences(out, bf16_rows)} elements differ"


def _two_gpu_worker(rank, world, port, cases):
    os.environ.update(MULTICAST_OFF)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for case in cases:
            two_gpu_check(rank, world, *case)
    finally:
        dist.destroy_process_group()


TWO_GPU_CASES = [(size, dtype, static, transport) for size in sorted(SIZES)
                 for dtype in (torch.bfloat16, torch.float16) for static in (False, True)
                 for transport in ("bf16", "nvfp4")]


def test_two_gpus_against_single_gpu_nvfp4_experts():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {torch.cuda.device_count()}")
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_gpu_worker, args=(2, port, TWO_GPU_CASES), nprocs=2, join=True)


if __name__ == "__main__":  # torchrun --nproc-per-node 2 tests/gpu/test_expert_parallel_gpu.py
    os.environ.update(MULTICAST_OFF)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl")
    try:
        for case in TWO_GPU_CASES:
            two_gpu_check(rank, world, *case)
    finally:
        dist.destroy_process_group()
