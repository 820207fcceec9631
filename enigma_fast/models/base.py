"""What EnBERT and Enigma share: weight init, loss, input ranges, checkpoint folders and the ``generate`` entry
point.

Input checks (``enigma_fast.nn.ids``, shared with the generator): token id tensors must be ``(B, T)`` int32/int64
on the model's device, and their values in ``[0, vocab_size)``, checked with one host read per call; a bad id
raises a one-line ValueError naming the tensor, the range, the value and its position.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from enigma_fast import tokenizers
from enigma_fast.generation import generate as _generate
from enigma_fast.models import checkpoint
from enigma_fast.nn import KVCache
from enigma_fast.nn.ids import IdRange, check_id_ranges, check_id_tensor

__all__ = ["IGNORE_INDEX", "DNALanguageModel", "IdRange", "check_id_ranges", "check_id_tensor"]

IGNORE_INDEX = -100  # targets with this value are left out of the loss


class DNALanguageModel(nn.Module):
    """Base class: seed-style init (normal(0, 0.02) weights, zero biases), cross-entropy loss, save/load.

    Subclasses set ``config_class`` and implement ``forward`` plus the generation hooks ``allocate_cache``,
    ``prefill`` and ``decode_step`` that :mod:`enigma_fast.generation` drives.
    """

    config_class: ClassVar[type]
    tokenizer: Any = None  # set by from_pretrained when the folder holds tokenizer.json

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @staticmethod
    def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) over targets != ignore_index; logits ``(B, T, V)``, targets
        ``(B, T)``."""
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).long(), ignore_index=ignore_index
        )

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every transformer block's activations during the backward instead of keeping them
        (non-reentrant ``torch.utils.checkpoint`` per block): a block then keeps only its inputs, two
        ``(B, T, d_model)`` tensors, at the cost of a second forward of each block. Results and gradients are
        unchanged; generation and ``torch.no_grad`` are unaffected."""
        from enigma_fast.models.layers import Block

        for m in self.modules():
            if isinstance(m, Block):
                m.activation_checkpointing = bool(enabled)

    def _device(self) -> torch.device:
        return self.tok_emb.weight.device

    def _id_range(self, name: str, t: torch.Tensor | None, targets: bool = False) -> IdRange:
        """Token ids of ``t`` in ``[0, vocab_size)`` (targets: or ``IGNORE_INDEX``)."""
        V = self.config.vocab_size
        if targets:
            return IdRange(name, t, 0, V, f"token ids in [0, vocab_size={V}) or {IGNORE_INDEX}", IGNORE_INDEX)
        return IdRange(name, t, 0, V, f"token ids in [0, vocab_size={V})")

    @staticmethod
    def _start_range(name: str, t: torch.Tensor | None, length: int) -> IdRange:
        """Left-padding starts ``t`` ``(B,)`` in ``[0, length)``: at least one real token per row."""
        return IdRange(name, t, 0, length, f"left-padding starts in [0, {length}) (at least one real token per row)")

    # -------------------------------------------------------------------------------------------------------
    # checkpoints
    # -------------------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, tokenizer: Any = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and (given or attached) ``tokenizer.json`` to folder ``path``,
        atomically. No pickle is involved."""
        tok = tokenizer if tokenizer is not None else self.tokenizer
        return checkpoint.save_state(self, self.config.to_dict(), path, tok)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> DNALanguageModel:
        """Build the model from ``path/config.json`` (validated by ``config_class.from_dict``: a wrong field type
        or value in the file raises a one-line ValueError naming the file and the field) and load
        ``path/model.safetensors``
        (errors list every missing, unexpected or mis-shaped tensor); attaches ``path/tokenizer.json`` as
        ``model.tokenizer``."""
        raw = checkpoint.read_config(path)
        try:
            config = cls.config_class.from_dict(raw)
        except (TypeError, ValueError) as err:  # one line: the file, then the field, expected and got
            raise ValueError(f"{Path(path) / checkpoint.CONFIG_NAME}: {err}") from None
        model = cls(config)
        checkpoint.load_state(model, path)
        tok_file = Path(path) / checkpoint.TOKENIZER_NAME
        if tok_file.is_file():
            model.tokenizer = tokenizers.from_file(str(tok_file))
        model.to(device=device, dtype=dtype)
        return model.eval()

    # -------------------------------------------------------------------------------------------------------
    # generation
    # -------------------------------------------------------------------------------------------------------
    def _layer_caches(self, n_layer: int, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``n_layer`` static KV caches of ``max_len`` positions sharing one ``seqlens`` ``(batch,)`` tensor."""
        c = self.config
        seqlens = torch.zeros(batch, dtype=torch.int32, device=device)
        caches = []
        for _ in range(n_layer):
            kv = KVCache.allocate(batch, c.n_head, max_len, c.head_dim, dtype=dtype, device=device)
            kv.seqlens = seqlens
            caches.append(kv)
        return {"layers": caches, "seqlens": seqlens}

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` after the prompts ``idx`` ``(B, T)`` with the KV-cached generator; returns
        ``(B, T + max_new_tokens)``: the prompts followed by the new tokens. Other keyword arguments
        (``prompt_lengths``, ``eos_id``, ``seed``, ``compile``) are those of
        :func:`enigma_fast.generation.generate`."""
        return _generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, **kwargs)
