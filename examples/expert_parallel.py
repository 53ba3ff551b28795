"""A mixture-of-experts layer split over GPUs with ExpertParallelNVFP4, one process per GPU:

    torchrun --nproc-per-node 2 examples/expert_parallel.py

Every rank builds the same bf16 expert weights (one seed), keeps and quantizes its block of experts,
routes its own tokens, and runs the layer; then rank 0 compares every rank's output with NVFP4Experts
holding all experts on its one GPU (the same quantized weights, all tokens).
"""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
from nvfp4_driver.moe import ExpertParallelNVFP4, NVFP4Experts  # noqa: E402

TOKENS_PER_RANK, HIDDEN, INTER, EXPERTS, TOPK = 256, 1024, 512, 16, 4


def main() -> int:
    if not torch.cuda.is_available() or "RANK" not in os.environ:
        print("run me with torchrun on CUDA GPUs: torchrun --nproc-per-node 2 examples/expert_parallel.py",
              file=sys.stderr)
        return 2
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast (NVLS) buffers
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()

    g = torch.Generator().manual_seed(0)  # the same weights and all ranks' tokens on every rank
    w13 = (torch.randn(EXPERTS, 2 * INTER, HIDDEN, generator=g) / HIDDEN**0.5).bfloat16().cuda()
    w2 = (torch.randn(EXPERTS, HIDDEN, INTER, generator=g) / INTER**0.5).bfloat16().cuda()
    x_all = torch.randn(world * TOKENS_PER_RANK, HIDDEN, generator=g).bfloat16().cuda()
    logits = torch.randn(world * TOKENS_PER_RANK, EXPERTS, generator=g).cuda()
    wts_all, ids_all = torch.topk(torch.softmax(logits, -1), TOPK)

    mine = slice(rank * TOKENS_PER_RANK, (rank + 1) * TOKENS_PER_RANK)
    single = NVFP4Experts.from_bf16(w13, w2)(x_all, ids_all, wts_all) if rank == 0 else None
    for transport in ("bf16", "nvfp4"):  # rows sent as they are, or quantized first (4.5 bits per element)
        layer = ExpertParallelNVFP4.from_bf16(w13, w2, transport=transport)  # this rank's experts only
        out = layer(x_all[mine], ids_all[mine], wts_all[mine])
        print(f"rank {rank}: {layer.extra_repr()}, transport={transport}: out {tuple(out.shape)} {out.dtype}")

        gathered = [torch.empty_like(out) for _ in range(world)]
        dist.all_gather(gathered, out)
        if rank == 0:
            ep = torch.cat(gathered).float()
            rel = ((ep - single.float()).norm() / single.float().norm()).item()
            print(f"transport={transport}: expert-parallel vs single-GPU NVFP4Experts, relative difference "
                  f"{rel:.2e} (0, or float32 summation order)")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
