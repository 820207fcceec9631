"""What EnBERT and Enigma share: weight init, loss, checkpoint folders and the ``generate`` entry point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from enigma_fast import tokenizers
from enigma_fast.models import checkpoint
from enigma_fast.nn import KVCache

__all__ = ["DNALanguageModel"]


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
    def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) over targets != ignore_index; logits ``(B, T, V)``, targets
        ``(B, T)``."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=ignore_index)

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

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
        """Build the model from ``path/config.json`` and load ``path/model.safetensors`` (errors list every
        missing, unexpected or mis-shaped tensor); attaches ``path/tokenizer.json`` as ``model.tokenizer``."""
        config = cls.config_class.from_dict(checkpoint.read_config(path))
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
        from enigma_fast.generation import generate  # the generator is built on the models, not the reverse

        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, **kwargs)
