"""``python -m enigma_fast.train ... --dry-run``: parameters, memory per GPU and tokens per step of a run, computed
from the model built on the meta device (nothing is allocated) and the formulas below; nothing is trained.

Notation: N parameters, W ranks, N_b parameters of the largest transformer block, N_r those of the root (token
and position embeddings, final norms, LM head), d = d_model, V the vocabulary, m the feed-forward expansion, L the
blocks, B windows per micro-batch per rank, T tokens per window (Enigma: S source and T target tokens), p bytes of
a gathered FSDP2 parameter (2 in bfloat16, else 4) and a bytes of an activation (2 with bfloat16, 4 in float32).

Model state, bytes per GPU (AdamW keeps two float32 moments per parameter; master weights stay float32):

    ddp   weights 4N + gradients 4N + AdamW 8N + DDP's gradient buckets 4N (W > 1)
          + autocast's bfloat16 copies of the weights 2N (bfloat16 on CUDA)
    fsdp  weights 4N/W + gradients 4N/W + AdamW 8N/W           (in host memory instead with --cpu-offload)
          + gathered parameters p (N_r + 2 N_b)                 (the root and two blocks: current + prefetched)
          + unsharded gradients being reduced (p + 4) max(N_b, N_r)

Activations kept for the backward per rank (the tensors each block saves, counted from the code and checked
against ``torch.autograd.graph.saved_tensors_hooks`` in float32 on the CPU); c = 9 + 2m tensors of d per token
per self-attention block (19 for m = 5), c + 4 for a decoder block with cross-attention:

    EnBERT  B T (L c d a + 2 d a + 4 V)
            checkpointed: B T (L 2 d a + d a + 4 V)  kept (each block's inputs (f, h))
                          + B T c d a                recomputed in the backward, one block at a time
    Enigma  B S (L_e c + 2) d a + B T L_d (c + 4) d a + B S L_d 2 d a + B T (2 d a + 4 V) + L_d X
            checkpointed: B (S L_e + T L_d) 2 d a + B T (d a + 4 V)                    kept
                          + max(B S c d a, B T (c + 4) d a + B S 2 d a + X)            recomputed

where X = B T S (H a + 8) when the cross-attention carries its relative-position bias (``cross_rel_pos`` > 0: the
(B, H, T, S) bias and the (B, T, S) int64 offsets it is gathered with), else 0.

The 4 V bytes per token are the float32 log-probabilities the loss keeps. Not counted: transient buffers of a
backward step (the largest is about one block's activations, or the logits' gradient B T V (4 + a)), the CUDA
context, NCCL buffers and allocator fragmentation: ``RESERVE_GIB`` is set aside for them when the estimate says
whether a GPU fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from enigma_fast.train.config import TrainConfig

__all__ = ["GPUS_GIB", "RESERVE_GIB", "MemoryEstimate", "activation_bytes", "estimate", "model_shape", "report"]

GIB = 1024**3
RESERVE_GIB = 3.0  # CUDA context, NCCL buffers, allocator slack
# usable memory of the two GPU sizes the tables quote (nvidia-smi totals: 81,559 MiB and 143,771 MiB)
GPUS_GIB = {"80 GB": 81_559 / 1024, "141 GB": 143_771 / 1024}


@dataclass
class ModelShape:
    """Sizes the estimate needs, read off a model built on the meta device."""

    kind: str  # "enbert" or "enigma"
    params: int  # N
    block_params: int  # N_b (the largest block)
    root_params: int  # N_r
    n_blocks: int  # L (Enigma: L_e + L_d)
    n_encoder: int  # L_e (0 for EnBERT)
    n_decoder: int  # L_d (EnBERT: L)
    d_model: int
    ffn_mult: int
    vocab: int
    n_head: int = 0
    cross_rel_pos: int = 0  # Enigma: R of the cross-attention's relative-position bias (0: none)


def model_shape(cfg: TrainConfig, vocab_size: int, bos_id: int = 2) -> ModelShape:
    """Build the run's model on the meta device (no memory) and count its parameters: total, per block, root."""
    from enigma_fast.models import EnBERT, Enigma
    from enigma_fast.models.layers import Block
    from enigma_fast.train.loop import _model_config

    mcfg = _model_config(cfg, vocab_size, bos_id)
    with torch.device("meta"):
        model = (EnBERT if cfg.model == "enbert" else Enigma)(mcfg)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    per_block = [sum(p.numel() for p in b.parameters()) for b in blocks]
    total = model.num_parameters()
    enc = getattr(mcfg, "n_encoder_layer", 0)
    return ModelShape(
        cfg.model,
        total,
        max(per_block),
        total - sum(per_block),
        len(blocks),
        enc,
        len(blocks) - enc,
        mcfg.d_model,
        mcfg.ffn_mult,
        vocab_size,
        mcfg.n_head,
        getattr(mcfg, "cross_rel_pos", 0),
    )


def activation_bytes(s: ModelShape, cfg: TrainConfig, a: int, checkpointed: bool) -> tuple[int, int]:
    """Bytes of activations of one rank's micro-batch (the module doc's formulas): ``(kept, recomputed)``, the
    tensors kept from the forward for the backward and, with ``checkpointed``, those of the one block recomputed
    at a time during the backward (0 without)."""
    B, d, V = cfg.batch_size, s.d_model, s.vocab
    c = 9 + 2 * s.ffn_mult
    if s.kind == "enbert":
        T, L = cfg.window, s.n_decoder
        if checkpointed:
            return B * T * (L * 2 * d * a + d * a + 4 * V), B * T * c * d * a
        return B * T * (L * c * d * a + 2 * d * a + 4 * V), 0
    S = cfg.enigma_src_len
    T = cfg.window - S
    Le, Ld = s.n_encoder, s.n_decoder
    # cross-attention with a relative-position bias keeps its (B, H, T, S) bias and (B, T, S) int64 offsets
    xb = B * T * S * (s.n_head * a + 8) if s.cross_rel_pos > 0 else 0
    if checkpointed:
        one = max(B * S * c * d * a, B * T * (c + 4) * d * a + B * S * 2 * d * a + xb)
        return B * (S * Le + T * Ld) * 2 * d * a + B * T * (d * a + 4 * V), one
    kept = B * S * (Le * c + 2) * d * a + B * T * Ld * (c + 4) * d * a + B * S * Ld * 2 * d * a + Ld * xb
    return kept + B * T * (2 * d * a + 4 * V), 0


@dataclass
class MemoryEstimate:
    """Bytes per GPU of one strategy (see the module doc), the activations with and without checkpointing."""

    strategy: str
    world: int
    bf16: bool
    cpu_offload: bool
    weights: int
    grads: int
    optimizer: int
    comm: int  # ddp: gradient buckets; fsdp: gathered parameters + unsharded gradients being reduced
    autocast_copies: int
    activations: int
    activations_checkpointed: int
    host: int  # fsdp --cpu-offload: sharded state in host memory, per rank

    def total(self, checkpointed: bool) -> int:
        """Bytes per GPU: model state on the GPU plus the activations (checkpointed or not)."""
        gpu_state = 0 if self.cpu_offload else self.weights + self.grads + self.optimizer
        acts = self.activations_checkpointed if checkpointed else self.activations
        return gpu_state + self.comm + self.autocast_copies + acts


def estimate(
    cfg: TrainConfig, shape: ModelShape, world: int, strategy: str | None = None, device_type: str = "cuda"
) -> MemoryEstimate:
    """Memory per GPU of training ``shape`` with ``cfg`` over ``world`` ranks on ``device_type`` (the strategy of
    ``cfg`` unless ``strategy`` is given): bfloat16 when ``cfg.dtype`` is "bfloat16", or "auto" on CUDA."""
    strategy = strategy or cfg.strategy
    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device_type == "cuda")
    a = 2 if bf16 else 4
    N, W = shape.params, max(1, world)
    acts = sum(activation_bytes(shape, cfg, a, checkpointed=False))
    acts_ck = sum(activation_bytes(shape, cfg, a, checkpointed=True))
    if strategy == "ddp":
        return MemoryEstimate(
            "ddp",
            W,
            bf16,
            False,
            4 * N,
            4 * N,
            8 * N,
            4 * N if W > 1 else 0,
            2 * N if bf16 and device_type == "cuda" else 0,
            acts,
            acts_ck,
            0,
        )
    p = 2 if bf16 and device_type == "cuda" else 4  # FSDP2 gathers bfloat16 parameters on CUDA only
    comm = p * (shape.root_params + 2 * shape.block_params) + (p + 4) * max(shape.block_params, shape.root_params)
    sharded = -(-N // W)
    offload = cfg.cpu_offload and strategy == "fsdp"
    return MemoryEstimate(
        "fsdp",
        W,
        bf16,
        offload,
        4 * sharded,
        4 * sharded,
        8 * sharded,
        comm,
        0,
        acts,
        acts_ck,
        16 * sharded if offload else 0,
    )


def _in(n: int, unit: str) -> str:
    return f"{n / (GIB if unit == 'GiB' else 1024**2):,.2f}"


def _fits(total: int) -> str:
    ok = [name for name, cap in GPUS_GIB.items() if total / GIB + RESERVE_GIB <= cap]
    return ", ".join(ok) if ok else "neither"


def report(cfg: TrainConfig, shape: ModelShape, world: int, device_type: str = "cuda") -> str:
    """The ``--dry-run`` text: the model's parameters, tokens per step, and a table of memory per GPU for the run's
    strategy next to the other one, with and without activation checkpointing, and which GPU sizes fit."""
    W = max(1, world)
    tokens_step = cfg.batch_size * cfg.grad_accum * W * cfg.window
    other = "ddp" if cfg.strategy == "fsdp" else "fsdp"
    est = {s: estimate(cfg, shape, W, s, device_type) for s in (cfg.strategy, other)}
    e0 = est[cfg.strategy]
    unit = "GiB" if max(e.total(False) for e in est.values()) >= GIB else "MiB"
    layers = (
        f"{shape.n_blocks} blocks"
        if shape.kind == "enbert"
        else f"{shape.n_encoder} encoder + {shape.n_decoder} decoder blocks"
    )
    dtype = "bfloat16 autocast, float32 master weights" if e0.bf16 else "float32"
    lines = [
        f"model: {shape.kind} {cfg.model_preset}: {shape.params:,} parameters ({layers}, largest "
        f"{shape.block_params:,}; root {shape.root_params:,}); d_model {shape.d_model}, vocabulary {shape.vocab}",
        f"run: {W} rank(s) on {device_type}, {dtype}; {cfg.batch_size} windows x {cfg.grad_accum} accumulation x "
        f"{W} ranks x {cfg.window} tokens = {tokens_step:,} tokens per step",
        "",
        f"memory per GPU, {unit} (formulas: enigma_fast/train/estimate.py, docs/scale.md)",
        "",
        "| term | " + " | ".join(f"{s}{' (chosen)' if s == cfg.strategy else ''}" for s in est) + " |",
        "|---|" + "---:|" * len(est),
    ]
    rows: list[tuple[str, Any]] = [
        ("weights (float32)", lambda e: e.weights),
        ("gradients (float32)", lambda e: e.grads),
        ("AdamW state (2 x float32)", lambda e: e.optimizer),
        ("DDP buckets / FSDP gathered + reducing", lambda e: e.comm),
        ("autocast bfloat16 weight copies", lambda e: e.autocast_copies),
        (f"activations (batch {cfg.batch_size})", lambda e: e.activations),
        ("activations, checkpointed", lambda e: e.activations_checkpointed),
        ("**total**", lambda e: e.total(False)),
        ("**total, activation checkpointing**", lambda e: e.total(True)),
    ]
    for name, get in rows:
        lines.append(f"| {name} | " + " | ".join(_in(get(e), unit) for e in est.values()) + " |")
    if e0.cpu_offload:
        lines.append(
            f"(--cpu-offload: weights, gradients and AdamW state, {_in(e0.host, unit)} {unit} per rank, in host "
            "memory, not in the totals)"
        )
    lines.append("")
    for s, e in est.items():
        lines.append(
            f"{s}: fits on {_fits(e.total(False))} GPUs; with activation checkpointing on "
            f"{_fits(e.total(True))} (with {RESERVE_GIB:.0f} GiB set aside)"
        )
    return "\n".join(lines)
