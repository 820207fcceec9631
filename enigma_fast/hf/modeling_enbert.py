"""``EnBERTForCausalLM``: EnBERT as a ``transformers`` causal language model (Auto classes, ``generate``, pipelines,
``peft``, ``Trainer``), running on our fused ops and static KV cache.

    forward(input_ids (B, T), attention_mask (B, T) | None, labels (B, T) | None, cache=DNAKVCache | None)
        -> CausalLMOutputWithPast(loss, logits (B, T', V), cache)

* ``labels`` follow ``transformers``: the inputs themselves (``-100`` = ignore), shifted inside, so the loss is
  the mean cross-entropy of ``logits[:, :-1]`` against ``labels[:, 1:]``.
* ``attention_mask``: left padding (``padding_side="left"``) is masked exactly as ``enigma_fast`` does with
  ``key_start`` (relative attention is shift-invariant, so a padded row gives the logits of the row alone); without
  a cache, right padding is accepted too (a causal model never looks at later positions).
* With ``cache`` (our ``DNAKVCache``): an empty cache runs the fused prefill of all ``T`` tokens; a
  cache holding positions runs ``T`` decode positions with ``rel_attention_with_kvcache`` (one new token:
  ``EnBERT.decode_step`` itself). The left padding is read from the mask at the prefill and kept in the cache.
* ``logits_to_keep`` = k > 0 computes the logits of the last k positions only (``generate`` asks for 1).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from enigma_fast.hf._base import DNAPreTrainedModel, left_padding
from enigma_fast.hf.cache import DNAKVCache
from enigma_fast.hf.configuration import EnBERTHFConfig
from enigma_fast.models import EnBERT
from enigma_fast.models.base import IGNORE_INDEX, check_id_ranges, check_id_tensor
from enigma_fast.models.layers import run_blocks

__all__ = ["EnBERTForCausalLM", "step_output"]


def step_output(logits: torch.Tensor, cache: DNAKVCache) -> CausalLMOutputWithPast:
    """``CausalLMOutputWithPast(logits=logits, cache=cache)`` for a decode step, built without the dataclass
    machinery: ``ModelOutput``'s ``__init__``/``__post_init__`` look the fields up for every attribute (about 10 us on
    a 2-core CPU, as much as a tiny model's whole decode step). The result is the same object: the two keys in the
    dict, the two attributes set, every other field its class default (None); a test compares it with the
    dataclass-built one."""
    out = CausalLMOutputWithPast.__new__(CausalLMOutputWithPast)
    OrderedDict.__setitem__(out, "logits", logits)
    OrderedDict.__setitem__(out, "cache", cache)
    object.__setattr__(out, "logits", logits)
    object.__setattr__(out, "cache", cache)
    return out


def _no_extras(kwargs: dict[str, Any], owner: str) -> None:
    """TypeError for keyword arguments a forward does not take (``transformers`` passes ``None`` for unused ones)."""
    extra = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
    if extra:
        raise TypeError(f"{owner}.forward got unsupported arguments: {', '.join(extra)}")


class EnBERTForCausalLM(DNAPreTrainedModel, GenerationMixin):
    """EnBERT (``enigma_fast.models.EnBERT``, kept as ``self.core``) with the ``transformers`` causal-LM interface."""

    config_class = EnBERTHFConfig
    config: EnBERTHFConfig
    core_class = EnBERT

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.tok_emb

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: DNAKVCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits ``(B, T', vocab)`` (T' = T, or ``logits_to_keep``) of token ids ``input_ids`` ``(B, T)``; see the
        module doc for ``attention_mask``, ``labels`` and ``cache``. ``output_hidden_states`` (no cache):
        the embeddings, every block's output and the final normalised state, each ``(B, T, d_model)``."""
        if (  # generate's one-token step on the whole-step decoder: one native call, nothing else to do
            type(cache) is DNAKVCache
            and cache.fast is not None
            and cache.length
            and labels is None
            and not output_hidden_states
            and not kwargs
            and logits_to_keep in (0, 1)
            and return_dict is not False
            and isinstance(input_ids, torch.Tensor)
            and input_ids.dim() == 2
            and input_ids.shape[1] == 1
            and cache.length < cache.max_len
        ):
            logits = cache.fast.step(input_ids)  # (B, V): the decoder's buffer, rewritten by the next step
            cache.length += 1
            return step_output(logits.clone()[:, None], cache)
        kwargs.pop("num_items_in_batch", None)  # Trainer's loss normalisation hint: our loss is a mean already
        if cache is None:  # the name of transformers < 5.25
            cache = kwargs.pop("past_key_values", None)
        _no_extras(kwargs, type(self).__name__)
        if input_ids is None:
            raise ValueError("input_ids is required (inputs_embeds is not supported)")
        core = self.core
        B, T = input_ids.shape if input_ids.dim() == 2 else (0, 0)
        hidden = None
        if cache is not None:
            if not isinstance(cache, DNAKVCache):
                raise TypeError(f"cache must be a DNAKVCache, got {type(cache).__name__}")
            if output_hidden_states:
                raise ValueError("output_hidden_states is not available with a cache")
            logits = self._cached(input_ids, attention_mask, cache, logits_to_keep)
        else:
            key_start = left_padding(attention_mask, B, T, right_ok=True) if attention_mask is not None else None
            if output_hidden_states:
                y, hidden = self._with_states(input_ids, key_start)
                logits = core.lm_head(y[:, -logits_to_keep:] if logits_to_keep else y)
            elif logits_to_keep:
                core._check(input_ids, None, key_start)
                y = run_blocks(core.blocks, core.norm_f, core.drop(core.tok_emb(input_ids)), key_start=key_start)
                logits = core.lm_head(y[:, -logits_to_keep:])
            else:
                logits, _ = core(input_ids, key_start=key_start)
        loss = None
        if labels is not None:
            if logits.shape[1] != T:
                raise ValueError("labels need the logits of every position (logits_to_keep=0)")
            check_id_tensor("labels", labels, logits.device, shape=(B, T))
            check_id_ranges([core._id_range("labels", labels, targets=True)])
            loss = core.lm_loss(logits[:, :-1], labels[:, 1:], ignore_index=IGNORE_INDEX)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache, hidden_states=hidden)
        return out if return_dict is not False else out.to_tuple()

    def _with_states(self, idx: torch.Tensor, key_start: torch.Tensor | None) -> tuple[torch.Tensor, tuple]:
        """The final normalised states and the hidden states of every layer (embeddings first, the final
        normalised state last), running the blocks one by one."""
        core = self.core
        core._check(idx, None, key_start)
        h = core.drop(core.tok_emb(idx))
        states, f = [h], None
        for blk in core.blocks:
            f, h = blk(f, h, key_start=key_start)
            states.append(h + f)
        y, _ = core.norm_f(f, h)
        states[-1] = y
        return y, tuple(states)

    def _cached(
        self, idx: torch.Tensor, mask: torch.Tensor | None, cache: DNAKVCache, logits_to_keep: int
    ) -> torch.Tensor:
        """Prefill (empty cache) or decode ``idx`` ``(B, T)`` on our static caches; logits of the kept positions."""
        core, state = self.core, cache.state
        B, T = idx.shape
        if cache.length + T > cache.max_len:
            raise ValueError(f"the cache holds {cache.max_len} positions, {cache.length} used, {T} more asked")
        if cache.length == 0:
            key_start = left_padding(mask, B, T)
            core._check(idx, None, key_start)
            if logits_to_keep == 1:
                logits = core.prefill(idx, key_start, state)[:, None]
            else:
                h = core.tok_emb(idx)
                y = run_blocks(core.blocks, core.norm_f, h, key_start=key_start, caches=state["layers"], prefill=True)
                state["key_start"] = key_start
                state["seqlens"].fill_(T)
                logits = core.lm_head(y[:, -logits_to_keep:] if logits_to_keep else y)
            cache.length = T
            if cache.fast is not None:  # the whole-step decoder reads the left padding the prefill set
                cache.fast.start(state)
            return logits
        if T == 1 and logits_to_keep in (0, 1) and cache.fast is not None:  # one native call (whole_step.py)
            logits = cache.fast.step(idx).clone()[:, None]  # (the op checks the ids; its buffer is rewritten next step)
        elif T == 1 and logits_to_keep in (0, 1):  # the generator's own module decode step
            logits = core.decode_step(idx, state)[:, None]
        else:
            core._check(idx, None, None)
            y = run_blocks(
                core.blocks, core.norm_f, core.tok_emb(idx), key_start=state.get("key_start"), caches=state["layers"]
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
        use_cache: bool = True,
        next_sequence_length: int | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The inputs of one ``generate`` step: the tokens the cache does not hold yet (all of them without a
        cache), the attention mask while the cache is empty (it is read once, at the prefill)."""
        inputs: dict[str, Any] = {"use_cache": use_cache}
        if cache is not None:
            inputs["cache"] = cache
            held = cache.length
            inputs["input_ids"] = input_ids[:, held:] if held else input_ids
            if not held:
                inputs["attention_mask"] = attention_mask
        else:
            inputs["input_ids"] = input_ids
            inputs["attention_mask"] = attention_mask
        for key, value in kwargs.items():
            if key != "labels":
                inputs[key] = value
        return inputs

    def _update_model_kwargs_for_generation(
        self, outputs: Any, model_kwargs: dict[str, Any], is_encoder_decoder: bool = False, num_new_tokens: int = 1
    ) -> dict[str, Any]:
        """``GenerationMixin``'s update, except that once our cache holds the prompt the attention mask is left as it
        is: the left padding was read from it at the prefill and lives in the cache (``key_start``), and no later
        step reads the mask, so growing it by one column a step (a copy of ``(B, T)`` each time) is work for
        nothing. Without our cache the mask grows as ``transformers`` grows it."""
        cache = outputs.get("cache") if isinstance(outputs, dict) else None
        if type(cache) is DNAKVCache and cache.length and "attention_mask" in model_kwargs:
            mask = model_kwargs.pop("attention_mask")
            try:
                model_kwargs = super()._update_model_kwargs_for_generation(
                    outputs, model_kwargs, is_encoder_decoder, num_new_tokens
                )
            finally:
                model_kwargs["attention_mask"] = mask
            return model_kwargs
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder, num_new_tokens)

    def _prepare_cache_for_generation(
        self, generation_config: Any, model_kwargs: dict, generation_mode: Any, batch_size: int, max_cache_length: int
    ) -> None:
        """Refuse a length beyond ``block_size`` (as ``enigma_fast.generation`` does), then allocate our cache."""
        limit = self.config.block_size
        if generation_config.max_length > limit:
            raise ValueError(
                f"prompt + new tokens = {generation_config.max_length} exceeds the model's block_size {limit}"
            )
        super()._prepare_cache_for_generation(
            generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
        )
