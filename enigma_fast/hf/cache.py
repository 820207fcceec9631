"""``transformers`` cache interface over enigma_fast's static KV caches.

``DNAKVCache`` is a ``transformers.Cache`` whose layers are our ``enigma_fast.nn.KVCache`` buffers, allocated once by
the model's own ``allocate_cache`` (``(B, H, Tmax, D)`` keys and values per block, one shared ``seqlens`` ``(B,)``
int32): ``generate`` in ``transformers`` drives our fused prefill and ``rel_attention_with_kvcache`` decode steps
through it, exactly as ``enigma_fast.generation`` does. Beside the per-layer buffers it holds what our decode steps
read (``state``): the left-padding starts ``key_start`` ``(B,)`` fixed at the prefill (so the attention mask is
read once, not every step) and, for Enigma, the encoder's cross-attention K/V.

Every row holds the same number of positions (left padding aligns the prompts), kept on the host as ``length``,
so ``get_seq_length`` never reads the device. Beam search (``reorder_cache``), ``num_return_sequences``
(``batch_repeat_interleave``) and rollbacks (``crop``) act on every buffer of ``state``.

For an EnBERT the buffers are, where it can serve (``enigma_fast.generation.whole_step``: float32/float64 on CPU,
no hooks or foreign modules), those of a ``WholeStepDecoder`` (``fast``): the layers are views of its stacked
caches, so the prefill runs the modules as always and every one-token step is one native call
(``ops.decode_step``), as in our own generator. An operation that replaces the buffers (beam search's reordering,
``batch_repeat_interleave``, ``batch_select_indices``) drops ``fast``: later steps run the modules.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from enigma_fast.generation.whole_step import WholeStepDecoder, whole_step_decoder
from enigma_fast.nn import KVCache

__all__ = ["DNAKVCache", "DNAKVLayer"]


class DNAKVLayer(CacheLayerMixin):
    """One block's static cache: ``keys``/``values`` are the ``KVCache`` buffers ``(B, H, Tmax, D)``."""

    is_compileable = False
    is_croppable = True
    supports_early_init = False

    def __init__(self, kv: KVCache, owner: DNAKVCache) -> None:
        self.kv, self.owner, self.is_initialized = kv, owner, True

    @property
    def keys(self) -> torch.Tensor:
        return self.kv.k

    @keys.setter
    def keys(self, value: torch.Tensor) -> None:
        self.kv.k = value

    @property
    def values(self) -> torch.Tensor:
        return self.kv.v

    @values.setter
    def values(self, value: torch.Tensor) -> None:
        self.kv.v = value

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing: the buffers are allocated with the cache."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple:
        """Write ``(B, H, T, D)`` keys/values at the positions the current forward fills (``owner.length`` on) and
        return the whole static buffers. The length advances once per forward, after every block (``advance``)."""
        start, t = self.owner.length, key_states.shape[2]
        if start + t > self.kv.k.shape[2]:
            raise ValueError(f"the cache holds {self.kv.k.shape[2]} positions, {start} used, {t} more asked")
        self.kv.k[:, :, start : start + t].copy_(key_states)
        self.kv.v[:, :, start : start + t].copy_(value_states)
        return self.kv.k, self.kv.v

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.kv.k.shape[2], 0

    def get_seq_length(self) -> int:
        return self.owner.length

    def get_max_length(self) -> int:
        return self.kv.k.shape[2]

    def reset(self) -> None:
        self.kv.k.zero_()
        self.kv.v.zero_()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.kv.k = self.kv.k.index_select(0, beam_idx.to(self.kv.k.device))
        self.kv.v = self.kv.v.index_select(0, beam_idx.to(self.kv.v.device))

    def crop(self, tokens_to_remove: int) -> None:
        """Nothing per layer: positions past the shared length are ignored and overwritten (``DNAKVCache.crop``)."""

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.kv.k = self.kv.k.repeat_interleave(repeats, dim=0)
        self.kv.v = self.kv.v.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.kv.k = self.kv.k[indices]
        self.kv.v = self.kv.v[indices]


def _map_rows(value: Any, fn: Any) -> Any:
    """``fn`` applied to every batch-major tensor of a state entry (a tensor, a list/tuple of them, or None)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list | tuple):
        return type(value)(_map_rows(v, fn) for v in value)
    return value


class DNAKVCache(Cache):
    """``transformers.Cache`` holding a model's static KV caches (``model.allocate_cache(batch, max_len, ...)``).

    ``state`` is the dict our ``prefill``/``decode_step`` read and write: ``layers`` (one ``KVCache`` per block, all
    sharing ``seqlens``), ``key_start`` (left padding, set at the prefill) and, for Enigma, ``memory_kv``,
    ``memory_start``, ``first_pos``. ``length`` (host int) is the number of positions every row holds.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch: int,
        max_len: int,
        device: torch.device,
        dtype: torch.dtype,
        whole_step: bool = True,
    ):
        enbert = getattr(getattr(model, "config", None), "model_type", None) == "enbert"
        self.fast: WholeStepDecoder | None = None
        if whole_step and enbert:  # None where the native step cannot serve (dtype, device, hooks, ...)
            self.fast = whole_step_decoder(model, batch, max_len, 0, torch.device(device), dtype, "auto")
        self.state: dict[str, Any] = (
            self.fast.allocate_cache() if self.fast is not None else model.allocate_cache(batch, max_len, device, dtype)
        )
        self.length = 0
        super().__init__(layers=[DNAKVLayer(kv, self) for kv in self.state["layers"]])

    @property
    def max_len(self) -> int:
        return self.state["layers"][0].k.shape[2]

    @property
    def seqlens(self) -> torch.Tensor:
        return self.state["seqlens"]

    def advance(self, n: int) -> None:
        """Record ``n`` more positions in every row (after a forward's blocks have written them)."""
        self.state["seqlens"].add_(n)
        self.length += n

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self.max_len

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.max_len, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        return self.state["seqlens"].shape[0]

    def reset(self) -> None:
        super().reset()
        self.state["seqlens"].zero_()
        self.length = 0

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last ``-tokens_to_remove`` positions (transformers' convention: a count <= 0; later writes
        overwrite them)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a count <= 0 of positions to remove, got {tokens_to_remove}")
        n = -int(tokens_to_remove)
        if n > self.length:
            raise ValueError(f"cannot remove {n} positions from a cache holding {self.length}")
        if n:
            self.state["seqlens"].sub_(n)
            self.length -= n

    def _rows(self, fn: Any) -> None:
        """Apply a batch-dimension map to every per-row buffer (the layers' K/V are handled by the layers)."""
        seqlens = fn(self.state["seqlens"])
        for kv in self.state["layers"]:
            kv.seqlens = seqlens
        self.state["seqlens"] = seqlens
        for key in ("key_start", "memory_kv", "memory_start", "first_pos"):
            if key in self.state:
                self.state[key] = _map_rows(self.state[key], fn)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.fast = None  # the layers get new buffers: the modules run the later steps
        super().reorder_cache(beam_idx)
        self._rows(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.fast = None
        super().batch_repeat_interleave(repeats)
        self._rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.fast = None
        super().batch_select_indices(indices)
        self._rows(lambda t: t[indices])

    def __repr__(self) -> str:
        return f"DNAKVCache(layers={len(self.layers)}, batch={self.batch_size}, length={self.length}/{self.max_len})"
