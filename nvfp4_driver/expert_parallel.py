"""``ExpertParallelNVFP4``: a mixture-of-experts expert layer whose experts are spread over the ranks of a
``torch.distributed`` process group (one process per GPU, e.g. under ``torchrun``), NCCL on GPUs.

    layer = ExpertParallelNVFP4.from_bf16(w13, w2)           # every rank passes all E experts' weights,
                                                             # keeps and quantizes its own block
    out = layer(x, topk_ids, topk_weights)                   # this rank's tokens: (T, H), (T, k), (T, k)

Rank r owns a contiguous block of experts (:func:`expert_blocks`: E // W each, the first E % W ranks
one more; E >= W). One call, for the tokens of this rank, every rank calling it together:

1. the (token, slot) rows are sorted by expert (stable), which groups them by owning rank too;
2. the row counts per expert travel with one ``all_to_all_single`` (E int64 out, W * E_local in);
3. ONE device-to-host copy of 2W+1 integers: the rows sent to each rank and received from each rank,
   which ``all_to_all_single`` needs as Python ints, and where expert 0's rows start (after ids < 0).
   It is the only host synchronisation of the call (and why the layer does not run in a CUDA graph);
4. the rows go to their owners: with ``transport="bf16"`` (the default) as they are, H values of
   x.dtype (16 bits per element), and each owner quantizes them; with ``transport="nvfp4"`` quantized
   by their sender (e2m1 bytes and one ue4m3 scale per 16 elements: 4.5 bits per element) and the
   scales placed into the owner's 128x4 ``a_scale`` layout on arrival. Each owner sorts what it
   received by local expert (it arrives grouped by source rank) and runs its experts;
5. the results travel back (in x.dtype) along the same splits and are summed with the routing
   weights in float32, as ``NVFP4Experts`` does.

Dynamic activation scales (no static ``input_global_scale``) are agreed over the group: each rank's
max|rows| is all-reduced (MAX, on the device, no host read), so every rank quantizes with the global
scale a single GPU holding all tokens would use (two 4-byte all-reduces per call).

Why quantizing before the all-to-all is compatible with the receiver's grouped layout: a row's ue4m3
scales depend only on the row and the global scale, never on its group; the 128x4 swizzle only decides
where they sit. So the sender quantizes its rows as one group (the scale all ranks agreed on, or the
static one: one for all experts), reads each row's scales out of that layout into plain rows (H/16
bytes), sends them, and the owner writes them to ``swz(sf_base(g) + m, kb)`` of its own groups. The
GEMMs then read the bytes the owner's quantizer would have written: both transports give the same bits.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from . import layout
from .experts import NVFP4Experts, QuantizedRows
from .quantize import quantize_activations
from .scale_interleave import deinterleave_scales, interleave_scales

__all__ = ["ExpertParallelNVFP4", "expert_blocks", "agreed_global_scale"]

_FP4_TIMES_FP8_MAX = 448.0 * 6.0  # FlashInfer's gsf = 448 * 6 / amax
_FLT_MAX = 3.4028234663852886e38

# local(rows (R, H), m_indptr (E_local+1,) int32, local expert of each row (R,)) -> (R, H), same dtype.
LocalExperts = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def expert_blocks(num_experts: int, world_size: int) -> list[tuple[int, int]]:
    """Rank r owns experts ``[start, stop)`` = the r-th pair: E // W experts each, the first E % W ranks
    one more (E = 10, W = 4 -> 3, 3, 2, 2). Every rank owns at least one expert, so E >= W."""
    for name, v in (("num_experts", num_experts), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}={v!r} must be a positive int")
    if num_experts < world_size:
        raise ValueError(f"num_experts={num_experts} < world_size={world_size}: every rank must own at least "
                         f"one expert; use a process group of at most {num_experts} ranks")
    base, extra = divmod(num_experts, world_size)
    starts = [r * base + min(r, extra) for r in range(world_size + 1)]
    return [(starts[r], starts[r + 1]) for r in range(world_size)]


def agreed_global_scale(rows: torch.Tensor, group=None) -> torch.Tensor:
    """FlashInfer's global scale ``448 * 6 / amax`` with amax = max|rows| over every rank of ``group``.

    rows: (R, K) of any float dtype (R may be 0). Returns a (1,) float32 tensor on rows' device,
    correctly rounded, with ``global_scale_from_amax``'s edge cases (amax 0 -> 1, an overflowing
    quotient -> FLT_MAX, amax inf -> 0), so with one rank it equals ``global_scale_from_amax(rows)``.
    One all-reduce of 4 bytes, no host synchronisation; every rank of the group must call it.
    """
    if rows.numel():
        # One reduction pass, no |rows| copy; the max of the values is exact in their own dtype.
        amax = torch.linalg.vector_norm(rows.detach(), float("inf")).float().reshape(1)
    else:
        amax = torch.zeros(1, dtype=torch.float32, device=rows.device)
    dist.all_reduce(amax, op=dist.ReduceOp.MAX, group=group)
    gsf = torch.full_like(amax, _FP4_TIMES_FP8_MAX) / amax  # IEEE division: correctly rounded
    gsf = torch.where(torch.isinf(gsf), torch.full_like(gsf, _FLT_MAX), gsf)
    return torch.where(amax == 0, torch.ones_like(gsf), gsf)


class ExpertParallelNVFP4(torch.nn.Module):
    """E experts sharded over the ranks of ``group``; see the module docstring for what one call does.

    Args:
      local_experts: this rank's experts, ``expert_blocks(E, W)[rank]``: an :class:`NVFP4Experts` of
          that many experts, or any callable ``local(rows, m_indptr, local_ids) -> out`` (rows (R, H)
          grouped by local expert, m_indptr (E_local+1,) int32, local_ids (R,) the local expert of each
          row; out (R, H) of rows' dtype). It is called on every call, R = 0 included; a callable that
          runs collectives must run them then too.
      num_experts: E, over all ranks.
      group: the process group (default: the world). Its backend must support ``all_to_all_single``
          (NCCL for CUDA tensors, gloo for CPU tensors).
      transport: "bf16": the rows travel in x's dtype (16 bits per element) and their owner quantizes
          them; "nvfp4": the sender quantizes them (one global scale for all experts: the static one,
          or the agreed dynamic one) and e2m1 bytes plus ue4m3 scales travel (4.5 bits per element),
          the scales placed into the owner's 128x4 layout on arrival. Both give the same bits.
    """

    def __init__(self, local_experts: "NVFP4Experts | LocalExperts", num_experts: int, group=None, *,
                 transport: str = "bf16"):
        super().__init__()
        if transport not in ("bf16", "nvfp4"):
            raise ValueError(f"transport={transport!r} must be 'bf16' (rows travel as they are) or 'nvfp4' "
                             f"(quantized first: 4.5 bits per element)")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ExpertParallelNVFP4 needs torch.distributed initialised: call "
                               "torch.distributed.init_process_group('nccl') first (torchrun sets the rank)")
        self.group, self.transport = group, transport
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.num_experts = num_experts
        self.blocks = expert_blocks(num_experts, self.world_size)
        self.expert_start, self.expert_stop = self.blocks[self.rank]
        self.num_local_experts = self.expert_stop - self.expert_start
        if isinstance(local_experts, NVFP4Experts):
            if local_experts.num_experts != self.num_local_experts:
                raise ValueError(f"rank {self.rank} owns experts [{self.expert_start}, {self.expert_stop}) of "
                                 f"{num_experts} but local_experts holds {local_experts.num_experts}; build it "
                                 f"with ExpertParallelNVFP4.from_experts or from_bf16")
            self.experts = local_experts
            self._local = self._run_nvfp4_experts
            scale = local_experts.input_global_scale
            if transport == "nvfp4" and scale is not None and scale.numel() != 1:
                raise ValueError("transport='nvfp4' quantizes rows before it knows their expert, so it needs one "
                                 "input_global_scale for all experts (or dynamic scales), not one per expert; "
                                 "use transport='bf16'")
        elif transport == "nvfp4":
            raise ValueError("transport='nvfp4' needs NVFP4Experts as local_experts (a callable takes bf16 rows)")
        elif callable(local_experts):
            self.experts, self._local = None, local_experts
        else:
            raise TypeError(f"local_experts must be an NVFP4Experts or a callable, got {type(local_experts).__name__}")

    # ------------------------------------------------------------------------------------ builders

    @classmethod
    def from_experts(cls, experts: NVFP4Experts, group=None, *, transport: str = "bf16") -> "ExpertParallelNVFP4":
        """Keep this rank's block of an :class:`NVFP4Experts` holding all E experts (same bytes and scales)."""
        start, stop = expert_blocks(experts.num_experts, dist.get_world_size(group))[dist.get_rank(group)]

        def mine(name):
            t = getattr(experts, name)
            keep = t is not None and (t.dim() != 1 or t.numel() == experts.num_experts)  # (1,) scales: shared
            return t[start:stop].contiguous() if keep else t

        local = NVFP4Experts(*(mine(n) for n in ("w13", "w13_scale", "w13_global_scale",
                                                 "w2", "w2_scale", "w2_global_scale")),
                             input_global_scale=mine("input_global_scale"),
                             act_global_scale=mine("act_global_scale"), up_scale_ratio=mine("up_scale_ratio"))
        return cls(local, experts.num_experts, group, transport=transport)

    @classmethod
    def from_bf16(cls, w13, w2, group=None, *, input_global_scale=None, act_global_scale=None,
                  transport: str = "bf16") -> "ExpertParallelNVFP4":
        """Quantize this rank's block of unquantized weights (``NVFP4Experts.from_bf16``'s arguments, all E
        experts on every rank; only the block is quantized and kept). A weight's global scale is per
        expert, so the bytes equal those of ``NVFP4Experts.from_bf16`` on all E experts."""
        experts = w13.shape[0]
        start, stop = expert_blocks(experts, dist.get_world_size(group))[dist.get_rank(group)]

        def mine(s):
            per_expert = isinstance(s, torch.Tensor) and s.dim() == 1 and s.numel() == experts > 1
            return s[start:stop] if per_expert else s

        local = NVFP4Experts.from_bf16(w13[start:stop], w2[start:stop], input_global_scale=mine(input_global_scale),
                                       act_global_scale=mine(act_global_scale))
        return cls(local, experts, group, transport=transport)

    # ------------------------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        """This rank's tokens: x (T, H), topk_ids (T, k) integers, topk_weights (T, k) -> (T, H) of x.dtype.

        T may differ between ranks (0 too); every rank of the group must call it. A slot whose id is
        outside [0, E) (e.g. -1 for a dropped slot) is sent nowhere and adds nothing to its token."""
        tokens, k = topk_ids.shape
        hidden = x.shape[1]
        flat = topk_ids.reshape(-1)
        expert_of_row, order = torch.sort(flat, stable=True)
        bounds = torch.arange(self.num_experts + 1, device=flat.device, dtype=flat.dtype)
        row_bounds = torch.searchsorted(expert_of_row, bounds)  # (E+1,) int64: expert e's rows start here
        send_counts = row_bounds.diff()  # (E,) rows for each expert, in the order of the ranks' blocks

        recv_counts = torch.empty(self.world_size * self.num_local_experts, dtype=send_counts.dtype,
                                  device=flat.device)
        dist.all_to_all_single(recv_counts, send_counts, input_split_sizes=[b - a for a, b in self.blocks],
                               group=self.group)
        recv_counts = recv_counts.view(self.world_size, self.num_local_experts)

        # The call's one device-to-host copy: where the rows of expert 0 start (after ids < 0), the rows
        # to send to every rank and the rows to receive from every rank.
        edges = self._block_edges(row_bounds)
        splits = torch.cat([edges[:1], edges.diff(), recv_counts.sum(1)]).tolist()
        first, send_splits, recv_splits = splits[0], splits[1:self.world_size + 1], splits[self.world_size + 1:]
        sent = slice(first, first + sum(send_splits))  # ids outside [0, E) are not sent: their slots add 0

        xs = x.index_select(0, order[sent] // k)
        received_rows = sum(recv_splits)

        # Received rows come grouped by source rank, then by local expert: regroup them by expert only.
        local_ids = torch.arange(self.num_local_experts, device=flat.device).repeat(self.world_size)
        local_of_row = torch.repeat_interleave(local_ids, recv_counts.reshape(-1), output_size=received_rows)
        local_sorted, local_order = torch.sort(local_of_row, stable=True)
        m_indptr = torch.searchsorted(local_sorted, torch.arange(self.num_local_experts + 1, device=flat.device),
                                      out_int32=True)
        if self.transport == "nvfp4":
            rows = self._exchange_quantized(xs, send_splits, recv_splits, local_order, local_sorted, m_indptr)
        else:
            received = x.new_empty(received_rows, hidden)
            dist.all_to_all_single(received, xs, recv_splits, send_splits, group=self.group)
            rows = received.index_select(0, local_order)
        y = self._local(rows, m_indptr, local_sorted)
        if y.shape != (received_rows, hidden) or y.dtype != x.dtype:
            raise ValueError(f"the local experts returned {tuple(y.shape)} {y.dtype} for {received_rows} rows "
                             f"of {x.dtype}: ({received_rows}, {hidden}) {x.dtype} is needed")
        y_received_order = torch.empty_like(y).index_copy_(0, local_order, y)

        all_sent = sent.stop - sent.start == tokens * k
        y_sorted = x.new_empty(tokens * k, hidden) if all_sent else x.new_zeros(tokens * k, hidden)
        dist.all_to_all_single(y_sorted[sent], y_received_order, send_splits, recv_splits, group=self.group)

        # Row r of y_sorted belongs to (token, slot) order[r]: put it there, then sum the k slots.
        y_slots = torch.empty_like(y_sorted).index_copy_(0, order, y_sorted).view(tokens, k, hidden)
        acc = torch.promote_types(torch.float32, x.dtype)  # float32, as NVFP4Experts (float64 for CPU checks)
        out = torch.bmm(topk_weights.to(acc).unsqueeze(1), y_slots.to(acc))
        return out.view(tokens, hidden).to(x.dtype)

    def _block_edges(self, row_bounds: torch.Tensor) -> torch.Tensor:
        """(E+1,) per-expert row starts -> (W+1,) per-rank row starts, by strided views (no index tensor,
        which would be a host-to-device copy): the first E % W blocks are one expert longer."""
        base, extra = divmod(self.num_experts, self.world_size)
        long_blocks = row_bounds[:extra * (base + 1):base + 1]
        return torch.cat([long_blocks, row_bounds[extra * (base + 1)::base]])

    def _exchange_quantized(self, xs, send_splits, recv_splits, local_order, local_sorted, m_indptr) -> QuantizedRows:
        """Quantize the rows to send, send e2m1 bytes and row-major ue4m3 scales, and place the received
        scales at their rows of the owner's 128x4 layout (SPEC §3: group g's rows from sf_base(g)).

        A row's scales depend only on the row and the global scale, so quantizing here with the scale
        the owner would use gives the bytes the owner's quantizer would write."""
        experts, hidden = self.experts, xs.shape[1]
        sf_k = hidden // 16
        gsf = experts.input_global_scale
        if gsf is None:  # every rank, rows or not: the all-reduce needs all of them
            gsf = agreed_global_scale(xs, self.group)
        sent_rows = xs.shape[0]
        if sent_rows:  # as one group: its scales are the swizzled buffer's rows 0..sent_rows-1
            one_group = torch.arange(2, dtype=torch.int32, device=xs.device) * sent_rows
            a_send, swizzled = quantize_activations(xs, one_group, gsf)
            sf_send = deinterleave_scales(swizzled, sent_rows, sf_k)
        else:
            a_send = torch.empty(0, hidden // 2, dtype=torch.uint8, device=xs.device)
            sf_send = torch.empty(0, sf_k, dtype=torch.uint8, device=xs.device)

        received_rows = sum(recv_splits)
        a_recv = a_send.new_empty(received_rows, hidden // 2)
        sf_recv = sf_send.new_empty(received_rows, sf_k)
        dist.all_to_all_single(a_recv, a_send, recv_splits, send_splits, group=self.group)
        dist.all_to_all_single(sf_recv, sf_send, recv_splits, send_splits, group=self.group)

        # Row-major first, each row at its group's scale row (from sf_base(g)), then swizzled whole.
        placed = sf_recv.new_zeros(layout.a_scale_rows_upper_bound(received_rows, self.num_local_experts), sf_k)
        if received_rows:
            first_row = m_indptr.long().index_select(0, local_sorted)  # of each sorted row's group
            sf_base = (first_row + local_sorted * (layout.SF_ROW_TILE - 1)) // layout.SF_ROW_TILE * layout.SF_ROW_TILE
            scale_row = sf_base + torch.arange(received_rows, device=xs.device) - first_row
            placed[scale_row] = sf_recv.index_select(0, local_order)
        return QuantizedRows(a_recv.index_select(0, local_order), interleave_scales(placed), gsf, xs.dtype)

    def _run_nvfp4_experts(self, rows, m_indptr, local_ids):
        experts = self.experts
        scale = None if self.world_size == 1 else (lambda r: agreed_global_scale(r, self.group))
        if rows.shape[0] if isinstance(rows, torch.Tensor) else rows.a.shape[0]:
            return experts.grouped_forward(rows, m_indptr, local_ids, dynamic_scale=scale)
        # No rows here: still join the all-reduces the other ranks run for their dynamic scales (the
        # input's, unless the senders agreed on it already), and return the (0, H) rows.
        quantized = isinstance(rows, QuantizedRows)
        if scale is not None:
            for static in ((experts.act_global_scale,) if quantized else
                           (experts.input_global_scale, experts.act_global_scale)):
                if static is None:
                    scale(torch.empty(0, experts.hidden_size, device=m_indptr.device))
        return torch.empty(0, experts.hidden_size, dtype=rows.dtype, device=m_indptr.device)

    def extra_repr(self) -> str:
        return (f"rank {self.rank} of {self.world_size}: experts [{self.expert_start}, {self.expert_stop}) "
                f"of {self.num_experts}")
