"""How the trainer spreads a model over processes (``--strategy``), per-block activation checkpointing, gradient
sync across accumulation steps, gradient clipping, and the full model gathered at the end of a sharded run.

``ddp``
    Every rank holds the whole model, its gradients and the AdamW state; ``DistributedDataParallel`` averages the
    gradients across ranks after each backward. Memory per GPU does not shrink with more GPUs.
``fsdp``
    PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``): every transformer block, and then the root (token
    and position embeddings, final norms, LM head), is one unit whose parameters are sharded along dim 0 over the
    ranks as DTensors. A unit's parameters are all-gathered just before its forward (and again before its
    backward) and freed after it, so the model's ops -- the fused RMSNorm and attention kernels included -- only
    ever see whole, plain tensors; gradients are reduce-scattered (averaged), so each rank keeps the gradient of
    its own shard and AdamW updates only that shard. On CUDA with bfloat16 the parameters are gathered in
    bfloat16 and the gradients reduced in float32 (``MixedPrecisionPolicy``), while the sharded master copy and
    the AdamW state stay float32. ``--cpu-offload`` keeps the shards, their gradients and the AdamW state in host
    memory (``CPUOffloadPolicy``; the optimizer step then runs on the CPU).

A run with ``--strategy fsdp`` in one process (no ``torchrun``) gets a single-rank process group, so it writes
the same sharded checkpoints and can be resumed by any number of processes (and the reverse).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Parallel", "STRATEGIES", "clip_grad_norm_sharded", "full_model_from_state", "init_single_process_group"]

logger = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")


def init_single_process_group(device_type: str) -> None:
    """Start a one-rank process group (an in-memory store, no network) unless one exists: what FSDP2 and DCP
    need to run in a single process launched without ``torchrun``."""
    if dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of an EnBERT or Enigma, in execution order (the FSDP2 units below the root)."""
    from enigma_fast.models.layers import Block

    return [m for m in model.modules() if isinstance(m, Block)]


def clip_grad_norm_sharded(params: Any, max_norm: float, device: torch.device) -> torch.Tensor:
    """Clip the gradients of (FSDP2-sharded) ``params`` in place to a global L2 norm of at most ``max_norm``;
    returns the norm before clipping (a float32 scalar on ``device``).

    ``norm = sqrt(sum_p sum_i g_pi^2)`` over every rank's shards, accumulated in float64 and all-reduced, then
    rounded once to float32; every gradient is multiplied by ``min(1, max_norm / (norm + 1e-6))`` (the formula of
    ``torch.nn.utils.clip_grad_norm_``). In float64 the partial sums of any sharding round to the same float32
    norm, so the clipping -- and the run -- does not depend on the number of ranks.
    """
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        local = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad for p in params if p.grad is not None]
        sq = torch.zeros((), dtype=torch.float64, device=device)
        for g in local:
            sq += g.double().square().sum().to(device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sq)
        norm = sq.sqrt().float()
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for dev in {g.device for g in local}:
            torch._foreach_mul_([g for g in local if g.device == dev], coef.to(dev))
    return norm


def full_model_from_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A plain (unwrapped) copy of ``model``'s class and config holding the full tensors of ``state`` (keyed by
    parameter name) without copying them (built on the meta device, tensors assigned), the LM head tied again where
    the config ties it, and the tokenizer attached."""
    from enigma_fast.models import EnBERT, Enigma

    cfg = model.config
    cls = EnBERT if cfg.model_type == "enbert" else Enigma
    with torch.device("meta"):
        plain = cls(cfg)
    state = dict(state)
    if cfg.tie_embeddings:
        state.setdefault("lm_head.weight", state["tok_emb.weight"])
    plain.load_state_dict(state, assign=True)
    if cfg.tie_embeddings:
        plain.lm_head.weight = plain.tok_emb.weight
    plain.tokenizer = getattr(model, "tokenizer", None)
    return plain


@dataclass
class Parallel:
    """The strategy of a run: ``strategy`` ("ddp" or "fsdp") over ``world`` ranks on ``device``; ``mp_dtype``
    the FSDP2 parameter dtype (None = the parameters' own); ``cpu_offload`` for FSDP2 on CUDA."""

    strategy: str
    world: int
    device: torch.device
    mp_dtype: torch.dtype | None = None
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.cpu_offload and (self.strategy != "fsdp" or self.device.type != "cuda"):
            raise ValueError(
                "cpu_offload moves FSDP2 shards from the GPU to host memory: it needs --strategy fsdp "
                f"on a CUDA device, got --strategy {self.strategy} on {self.device.type}"
            )

    @property
    def sharded(self) -> bool:
        """True for FSDP2: checkpoints are sharded and every rank takes part in forward passes (evaluation)."""
        return self.strategy == "fsdp"

    def wrap(self, model: nn.Module, activation_checkpointing: bool = False) -> nn.Module:
        """Prepare ``model`` (on ``device``) for training; returns the module the training step calls.

        ddp: ``DistributedDataParallel(model)`` with more than one rank, else ``model``. fsdp: ``fully_shard`` on
        each block, then on the root, in place (``model`` itself is returned; build the optimizer afterwards, over
        its now sharded parameters). ``activation_checkpointing`` turns it on for every block first.
        """
        if activation_checkpointing:
            model.set_activation_checkpointing(True)
        if self.strategy == "ddp":
            if self.world <= 1:
                return model
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        # FSDP2 warns that a unit returned a view (an in-place op on it would skip the unit's pre-backward hook):
        # a block returns views of its FFN and norm outputs, which the next block or final norm adds out of place.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPBlock\) returned a view tensor")
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (dist.get_world_size(),))
        mp = MixedPrecisionPolicy()
        if self.mp_dtype is not None:
            mp = MixedPrecisionPolicy(param_dtype=self.mp_dtype, reduce_dtype=torch.float32)
        kw = dict(mesh=mesh, mp_policy=mp, offload_policy=CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy())
        for blk in _blocks(model):
            fully_shard(blk, **kw)
        fully_shard(model, **kw)
        logger.info(
            "FSDP2 over %d rank(s): %d blocks + root sharded%s%s",
            dist.get_world_size(),
            len(_blocks(model)),
            f", parameters gathered in {self.mp_dtype}" if self.mp_dtype else "",
            ", shards offloaded to host memory" if self.cpu_offload else "",
        )
        return model

    @contextlib.contextmanager
    def grad_sync(self, fwd: nn.Module, sync: bool) -> Iterator[None]:
        """Context of one micro-step's forward and backward: gradients are averaged across ranks only when ``sync``
        (the last micro-step of a gradient-accumulation step); before that they accumulate locally."""
        if self.strategy == "fsdp":
            fwd.set_requires_gradient_sync(sync)
            yield
        elif sync or self.world <= 1:
            yield
        else:
            with fwd.no_sync():
                yield

    def clip_grad_norm_(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm to ``max_norm``; returns the norm before clipping. fsdp: see
        :func:`clip_grad_norm_sharded`; ddp: ``torch.nn.utils.clip_grad_norm_``."""
        if self.sharded:
            return clip_grad_norm_sharded(model.parameters(), max_norm, self.device)
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def full_model(self, model: nn.Module) -> nn.Module | None:
        """The trained model, whole and unwrapped, on rank 0 (None on the others). ddp: ``model`` itself. fsdp: a
        collective -- every rank must call it -- that gathers the full state dict to rank 0's host memory
        (``get_model_state_dict(full_state_dict=True, cpu_offload=True)``) and builds a plain model of it there
        (float32, on the CPU)."""
        if not self.sharded:
            return model if not dist.is_initialized() or dist.get_rank() == 0 else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.get_rank() != 0:
            return None
        return full_model_from_state(model, state)
