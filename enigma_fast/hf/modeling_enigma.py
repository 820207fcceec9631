"""``EnigmaForConditionalGeneration``: Enigma as a ``transformers`` sequence-to-sequence model
(``AutoModelForSeq2SeqLM``, ``generate`` with the encoder input), on our fused ops and static KV cache.

    forward(input_ids (B, S) source, attention_mask (B, S), decoder_input_ids (B, T) | None, labels (B, T) | None,
            encoder_outputs | None, cache=DNAKVCache | None) -> Seq2SeqLMOutput(loss, logits (B, T', V), ...)

* As ``transformers``' encoder-decoders (T5, BART): ``labels`` are the targets (``-100`` = ignore); without
  ``decoder_input_ids`` they are ``<bos>`` followed by ``labels[:, :-1]`` (``decoder_start_token_id`` =
  ``config.bos_id``). The decoder tokens sit after the source (continuation: position ``src_len + t``), as Enigma
  is trained by ``python -m enigma_fast.train``; ``decoder_position_ids`` ``(B, T)`` gives other positions (span
  corruption: each token at its sentinel's source position, Enigma's ``tgt_pos``).
* The source is masked by ``attention_mask`` as ``enigma_fast`` masks it with ``src_start``: left padding only
  (``padding_side="left"``), so a padded row gives the result of the row alone.
* ``generate(input_ids, attention_mask=...)`` encodes the source once (``get_encoder``), projects each decoder
  block's cross-attention K/V once into the cache, then runs ``Enigma.decode_step`` per token: the same tokens as
  ``enigma_fast.generation.generate`` on the same source.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from enigma_fast.hf._base import DNAPreTrainedModel, left_padding
from enigma_fast.hf.cache import DNAKVCache
from enigma_fast.hf.configuration import EnigmaHFConfig
from enigma_fast.hf.modeling_enbert import _no_extras
from enigma_fast.models import Enigma
from enigma_fast.models.base import IGNORE_INDEX, check_id_ranges, check_id_tensor
from enigma_fast.models.layers import run_blocks

__all__ = ["EnigmaEncoder", "EnigmaForConditionalGeneration"]


class EnigmaEncoder(nn.Module):
    """The encoder as ``transformers`` calls it: ``forward(input_ids (B, S), attention_mask)`` ->
    ``BaseModelOutput(last_hidden_state (B, S, d_model))``, Enigma's own ``encode``. Holds no parameters of its
    own (it reads the wrapped model's)."""

    main_input_name = "input_ids"

    def __init__(self, core: Enigma) -> None:
        super().__init__()
        self.__dict__["core"] = core  # not a submodule: the parameters are listed once, by the wrapper

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, return_dict: bool = True, **kwargs
    ) -> BaseModelOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (B, S) int tensor, got {tuple(input_ids.shape)}")
        src_start = left_padding(attention_mask, *input_ids.shape)
        return BaseModelOutput(last_hidden_state=self.core.encode(input_ids, src_start))


class EnigmaForConditionalGeneration(DNAPreTrainedModel, GenerationMixin):
    """Enigma (``enigma_fast.models.Enigma``, kept as ``self.core``) with the ``transformers`` seq2seq interface."""

    config_class = EnigmaHFConfig
    config: EnigmaHFConfig
    core_class = Enigma

    def __init__(self, config: EnigmaHFConfig) -> None:
        super().__init__(config)
        # transformers reads `model.encoder.main_input_name` when an `encoder` attribute exists: ours is the
        # encoder blocks (a ModuleList) adopted from the wrapped model
        self.encoder.main_input_name = "input_ids"
        self._hf_encoder = [EnigmaEncoder(self.core)]  # a list: not registered as a submodule
        g = self.generation_config
        g.decoder_start_token_id = g.bos_token_id = config.bos_id

    def get_encoder(self, modality: str | None = None) -> EnigmaEncoder:
        return self._hf_encoder[0]

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_emb

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """``<bos>`` + labels[:, :-1]; ignored (-100) positions become ``<pad>`` (or ``<bos>`` without one)."""
        pad = self.generation_config.pad_token_id
        pad = self.config.bos_id if pad is None else pad
        start = torch.full_like(labels[:, :1], self.config.bos_id)
        return torch.cat([start, labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, pad)], dim=1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        decoder_position_ids: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        cache: DNAKVCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput | tuple:
        """Decoder logits ``(B, T', vocab)`` for the source ``input_ids`` ``(B, S)`` (or its ``encoder_outputs``)
        and ``decoder_input_ids`` ``(B, T)``; see the module doc."""
        kwargs.pop("num_items_in_batch", None)
        if cache is None:  # the name of transformers < 5.25
            cache = kwargs.pop("past_key_values", None)
        _no_extras(kwargs, type(self).__name__)
        core = self.core
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("decoder_input_ids or labels is required")
            decoder_input_ids = self._shift_right(labels)
        B, T = decoder_input_ids.shape
        if decoder_attention_mask is not None:
            left_padding(decoder_attention_mask, B, decoder_attention_mask.shape[1], right_ok=True)  # checks only
        memory = None
        if encoder_outputs is not None:
            memory = (
                encoder_outputs[0] if isinstance(encoder_outputs, tuple | list) else encoder_outputs.last_hidden_state
            )
        if input_ids is None and memory is None:
            raise ValueError("input_ids (the source) or encoder_outputs is required")
        S = memory.shape[1] if memory is not None else input_ids.shape[1]
        src_start = left_padding(attention_mask, memory.shape[0] if memory is not None else input_ids.shape[0], S)
        if cache is not None:
            if not isinstance(cache, DNAKVCache):
                raise TypeError(f"cache must be a DNAKVCache, got {type(cache).__name__}")
            if memory is None:
                memory = core.encode(input_ids, src_start)
            logits = self._cached(decoder_input_ids, memory, src_start, cache, logits_to_keep)
        elif memory is None:
            logits, _ = core(input_ids, decoder_input_ids, src_start=src_start, tgt_pos=decoder_position_ids)
            logits = logits[:, -logits_to_keep:] if logits_to_keep else logits
        else:
            pos = decoder_position_ids
            if pos is None:
                pos = core._src_len(memory, src_start)[:, None] + torch.arange(T, device=memory.device)[None, :]
            check_id_tensor("decoder_input_ids", decoder_input_ids, memory.device, shape=(memory.shape[0], None))
            check_id_ranges([core._id_range("decoder_input_ids", decoder_input_ids)])
            h = core.drop(core.tok_emb(decoder_input_ids) + core.pos_emb(pos.long()))
            y = run_blocks(core.decoder, core.norm_f, h, memory=memory, memory_start=src_start, cross_pos=pos)
            logits = core.lm_head(y[:, -logits_to_keep:] if logits_to_keep else y)
        loss = None
        if labels is not None:
            if logits.shape[1] != labels.shape[1]:
                raise ValueError(
                    f"labels {tuple(labels.shape)} need logits for every decoder position, got {tuple(logits.shape)}"
                )
            loss = core.lm_loss(logits, labels)
        out = Seq2SeqLMOutput(loss=loss, logits=logits, cache=cache, encoder_last_hidden_state=memory)
        return out if return_dict is not False else out.to_tuple()

    def _cached(
        self,
        idx: torch.Tensor,
        memory: torch.Tensor,
        src_start: torch.Tensor | None,
        cache: DNAKVCache,
        logits_to_keep: int,
    ) -> torch.Tensor:
        """Decoder tokens ``idx`` ``(B, T)`` on our static caches: an empty cache keeps the cross-attention K/V of
        ``memory`` and runs the fused prefill (positions ``src_len + t``); then decode steps."""
        core, state = self.core, cache.state
        B, T = idx.shape
        if cache.length + T > cache.max_len:
            raise ValueError(f"the cache holds {cache.max_len} positions, {cache.length} used, {T} more asked")
        if cache.length == 0:
            check_id_tensor("decoder_input_ids", idx, memory.device, shape=(memory.shape[0], None))
            check_id_ranges([core._id_range("decoder_input_ids", idx)])
            state["memory_kv"] = [blk.cross.project_memory(memory) for blk in core.decoder]
            state["memory_start"] = src_start
            state["first_pos"] = core._src_len(memory, src_start)
            pos = state["first_pos"][:, None] + torch.arange(T, device=idx.device)[None, :]
            if int(pos.max()) >= self.config.block_size:
                raise ValueError(
                    f"decoder positions reach {int(pos.max())}, beyond block_size {self.config.block_size}"
                )
            h = core.drop(core.tok_emb(idx) + core.pos_emb(pos))
            y = run_blocks(
                core.decoder,
                core.norm_f,
                h,
                caches=state["layers"],
                prefill=True,
                memory_kv=state["memory_kv"],
                memory_start=src_start,
                cross_pos=pos,
            )
            state["seqlens"].fill_(T)
            cache.length = T
            return core.lm_head(y[:, -logits_to_keep:] if logits_to_keep else y)
        if T == 1 and logits_to_keep in (0, 1):  # the generator's own decode step
            logits = core.decode_step(idx, state)[:, None]
        else:
            pos = state["first_pos"][:, None] + state["seqlens"].long()[:, None] + torch.arange(T, device=idx.device)
            h = core.drop(core.tok_emb(idx) + core.pos_emb(pos))
            y = run_blocks(
                core.decoder,
                core.norm_f,
                h,
                caches=state["layers"],
                memory_kv=state["memory_kv"],
                memory_start=state["memory_start"],
                cross_pos=pos,
            )
            state["seqlens"].add_(T)
            logits = core.lm_head(y[:, -logits_to_keep:] if logits_to_keep else y)
        cache.length += T
        return logits

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        cache: DNAKVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        use_cache: bool = True,
        next_sequence_length: int | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One ``generate`` step: the decoder tokens the cache does not hold yet (all without a cache), the
        encoder output and the source mask."""
        held = cache.length if cache is not None else 0
        inputs = {
            "decoder_input_ids": input_ids[:, held:] if held else input_ids,
            "encoder_outputs": encoder_outputs,
            "attention_mask": attention_mask,
            "use_cache": use_cache,
        }
        if cache is not None:
            inputs["cache"] = cache
        for key, value in kwargs.items():
            if key not in ("labels", "decoder_attention_mask"):
                inputs[key] = value
        return inputs

    def _prepare_cache_for_generation(
        self, generation_config: Any, model_kwargs: dict, generation_mode: Any, batch_size: int, max_cache_length: int
    ) -> None:
        """Refuse a source + target beyond ``block_size`` (as ``enigma_fast.generation`` does), then allocate."""
        memory = model_kwargs["encoder_outputs"].last_hidden_state
        S, limit = memory.shape[1], self.config.block_size
        if S + generation_config.max_length > limit:
            raise ValueError(
                f"a {S}-token source leaves room for {max(limit - S - 1, 0)} new tokens within the model's block_size "
                f"{limit}, asked for {generation_config.max_length - 1}"
            )
        super()._prepare_cache_for_generation(
            generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
        )
