"""What the ``transformers`` wrappers of EnBERT and Enigma share: the wrapped model, weight init, folder checks,
left padding, the KV cache for ``generate``, activation checkpointing.

A wrapper holds one of our models (``self.core``: an ``EnBERT``/``Enigma`` built from ``config.to_enigma_fast()``) and
adopts its child modules as its own, so the parameter names are exactly ours (``tok_emb.weight``,
``blocks.0.attn.qkv.weight``, ...): ``model.safetensors`` is the same file for both libraries, ``peft`` finds our
projections by their names, and whatever ``transformers`` or ``peft`` does to a child module (moving it, loading it,
replacing a ``Linear`` by a LoRA layer) the wrapped model sees, since both hold the same module objects. The
forward passes call the wrapped model's own code paths (``forward``, ``prefill``, ``decode_step``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from enigma_fast import tokenizers
from enigma_fast.hf.cache import DNAKVCache
from enigma_fast.models import checkpoint
from enigma_fast.models.base import DNALanguageModel
from enigma_fast.models.layers import CrossAttention
from enigma_fast.nn import RelativeMultiHeadAttention

__all__ = ["DNAPreTrainedModel", "left_padding"]


def left_padding(mask: torch.Tensor | None, batch: int, length: int, *, right_ok: bool = False) -> torch.Tensor | None:
    """Left-padding starts ``(B,)`` int32 of an attention mask ``(B, T)`` (1 = token, 0 = padding), or None when no
    row is padded. Each row must be zeros then ones (``padding_side="left"``) with at least one token; with
    ``right_ok`` (a causal model without a cache, which never looks ahead), ones then zeros is accepted too and gives
    None: the padding then sits after every real token. One host read. ValueError naming the row otherwise."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or tuple(mask.shape) != (batch, length):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"attention_mask must be a ({batch}, {length}) tensor of 0/1, got {got}")
    m = mask.bool()
    n = m.sum(1)
    start = length - n
    pos = torch.arange(length, device=mask.device)
    left = m == (pos[None, :] >= start[:, None])
    right = m == (pos[None, :] < n[:, None])
    ok_left, ok_right, empty = left.all(1), right.all(1), n == 0
    bad = empty | ~(ok_left | (ok_right if right_ok else torch.zeros_like(ok_left)))
    stats = torch.stack([bad.any(), ok_left.all(), start.max() > 0]).tolist()
    if stats[0]:
        b = int(bad.nonzero()[0, 0])
        what = "no token" if bool(empty[b]) else "not zeros then ones (padding_side='left')"
        raise ValueError(f"attention_mask row {b} has {what}; rows must be left-padded with at least one token")
    if not stats[1] or not stats[2]:  # right padding (causal, no cache) or no padding at all
        return None
    return start.to(torch.int32).contiguous()


class DNAPreTrainedModel(PreTrainedModel):
    """Base of the wrappers: ``core_class`` is the wrapped enigma_fast model (EnBERT or Enigma)."""

    core_class: ClassVar[type[DNALanguageModel]]
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["Block"]
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "tok_emb.weight"}

    def __init__(self, config: Any, core: nn.Module | None = None) -> None:
        super().__init__(config)
        self._adopt(core if core is not None else self._build_core(config))
        self.post_init()

    @classmethod
    def _build_core(cls, config: Any) -> nn.Module:
        """The wrapped model of ``config`` (a subclass may wrap something else: a task head on a backbone)."""
        return cls.core_class(config.to_enigma_fast())

    def _adopt(self, core: nn.Module) -> None:
        """Make ``core``'s children, parameters and buffers this module's own: the same dicts, so the same objects
        under the same names, whatever is later added or replaced on either side (a LoRA layer, a resized
        embedding); ``core`` itself is kept beside them, not as a submodule (its tensors are listed once)."""
        if self._modules or self._parameters or self._buffers:
            raise RuntimeError(f"{type(self).__name__} holds modules of its own before adopting the wrapped model")
        for name in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
            self.__dict__[name] = core.__dict__[name]
        self.__dict__["core"] = core
        params = list(core.parameters())
        if params and params[0].device.type != "meta":  # built for real: already initialised by our constructors
            for m in self.modules():
                m._is_hf_initialized = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Our initialisation (the seed's): normal(0, 0.02) weights, zero biases, ones for norms, normal(0, 0.02)
        relative-position embeddings, the local starting bias of cross-attention. Used for weights a folder lacks
        (a new head); a model built from a config keeps the weights our constructor drew."""
        super()._init_weights(module)  # Linear, Embedding: normal(0, 0.02), zero bias; RMSNorm: ones
        if isinstance(module, RelativeMultiHeadAttention):
            init.normal_(module.rel_emb, mean=0.0, std=0.02)
        elif isinstance(module, CrossAttention) and module.rel_bias is not None:
            init.copy_(module.rel_bias, CrossAttention.local_bias(module.n_head, module.rel_pos))

    def train(self, mode: bool = True) -> DNAPreTrainedModel:
        super().train(mode)
        self.core.training = mode
        return self

    # ---- activation checkpointing: our per-block recomputation ----------------------------------------------
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: Any = None, **kwargs: Any) -> None:
        """Recompute each block in the backward (``enigma_fast`` ``set_activation_checkpointing``)."""
        self.core.set_activation_checkpointing(True)

    def activation_checkpointing_disable(self) -> None:
        self.core.set_activation_checkpointing(False)

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(getattr(m, "activation_checkpointing", False) for m in self.modules())

    @property
    def is_gradient_checkpointing(self) -> bool:  # transformers' older name, still read by peft and the Trainer
        return self.is_activation_checkpointing

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None, **kwargs: Any) -> None:
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.activation_checkpointing_disable()

    # ---- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """``transformers``' ``from_pretrained``, refusing (one-line ValueError, as ``enigma_fast`` does) a local folder
        whose ``model.safetensors`` holds other tensors than its config implies; attaches the folder's
        ``tokenizer.json`` as ``model.core.tokenizer`` and takes its special ids for ``generation_config``."""
        path = Path(pretrained_model_name_or_path)
        if path.is_dir() and (path / checkpoint.CONFIG_NAME).is_file() and (path / checkpoint.WEIGHTS_NAME).is_file():
            cls._check_folder(path, kwargs.get("config"))
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        loaded = model[0] if isinstance(model, tuple) else model
        if path.is_dir() and (path / checkpoint.TOKENIZER_NAME).is_file():
            loaded.attach_tokenizer(tokenizers.from_file(str(path / checkpoint.TOKENIZER_NAME)))
        return model

    @classmethod
    def _check_folder(cls, path: Path, config: Any) -> None:
        """The names, shapes and dtypes of ``path/model.safetensors`` against the model its config builds (read
        from the file's header; no tensor is loaded). ValueError listing every offender."""
        from safetensors import safe_open

        if config is None or isinstance(config, str | os.PathLike):
            raw = json.loads((path / checkpoint.CONFIG_NAME).read_text())
            config = cls.config_class.from_dict(raw) if isinstance(raw, dict) else raw
        with torch.device("meta"):
            core = cls._backbone_class(config)(config.to_enigma_fast())
        want = dict(core.named_parameters())  # tied weights listed once
        f = path / checkpoint.WEIGHTS_NAME
        try:
            with safe_open(str(f), "pt") as st:
                got = {k: (tuple(st.get_slice(k).get_shape()), st.get_slice(k).get_dtype()) for k in st.keys()}
        except Exception as err:  # a damaged or foreign file
            raise ValueError(f"{f} is not a readable safetensors file ({err})") from None
        problems = []
        missing = sorted(set(want) - set(got))
        unexpected = sorted(set(got) - set(want))
        shapes = sorted(
            f"{k}: checkpoint {got[k][0]}, model {tuple(want[k].shape)}"
            for k in set(want) & set(got)
            if got[k][0] != tuple(want[k].shape)
        )
        dtypes = sorted(
            f"{k}: checkpoint {got[k][1]}" for k in set(want) & set(got) if not got[k][1].startswith(("F", "BF"))
        )
        for what, items in (("missing", missing), ("unexpected", unexpected)):
            if items:
                problems.append(f"{what} tensors: " + ", ".join(items))
        if shapes:
            problems.append("mismatched shapes: " + "; ".join(shapes))
        if dtypes:
            problems.append("non-floating dtypes: " + "; ".join(dtypes))
        if problems:
            raise ValueError(
                f"cannot load {f}: its tensors are not those of the model its config describes: " + " | ".join(problems)
            )

    @classmethod
    def _backbone_class(cls, config: Any) -> type[DNALanguageModel]:
        """The class of the pretrained model a folder holds (checked by ``_check_folder``)."""
        return cls.core_class

    def attach_tokenizer(self, tok: tokenizers.DNATokenizer) -> None:
        """Keep ``tok`` as ``model.core.tokenizer`` and use its ``<pad>``/``<eos>``/``<bos>`` ids in
        ``generation_config`` (``generate`` then stops a row at ``<eos>`` and pads it after). As our generator,
        ``generate`` writes only tokens made of the training data's letters (``tok.output_mask``; ``<eos>`` too):
        every other id is in ``generation_config.suppress_tokens`` (set it to None to sample the whole
        vocabulary)."""
        self.core.tokenizer = tok
        g = self.generation_config
        g.pad_token_id, g.eos_token_id, g.bos_token_id = tok.pad_id, tok.eos_id, tok.bos_id
        allowed = tok.output_mask(self.config.vocab_size).clone()
        allowed[tok.eos_id] = True
        g.suppress_tokens = (~allowed).nonzero().flatten().tolist()

    # ---- generate ------------------------------------------------------------------------------------------
    def _new_cache(self, batch: int, positions: int) -> DNAKVCache:
        p = next(self.parameters())
        return DNAKVCache(self.core, batch, positions, p.device, p.dtype)

    def _prepare_cache_for_generation(
        self, generation_config: Any, model_kwargs: dict, generation_mode: Any, batch_size: int, max_cache_length: int
    ) -> None:
        """``generate``'s cache: our static caches (``DNAKVCache``) for every row and every position ``generate``
        will feed (``max_length - 1``). A cache passed by the caller must be a ``DNAKVCache``."""
        user = model_kwargs.get("cache")
        if user is not None:
            if not isinstance(user, DNAKVCache):
                raise TypeError(f"cache must be a DNAKVCache (model.make_cache), got {type(user).__name__}")
            user._is_user_defined = True
            return
        if generation_config.use_cache is False:
            return
        if generation_config.cache_implementation not in (None, "static", "dynamic"):
            raise ValueError(
                f"cache_implementation {generation_config.cache_implementation!r} is not available for "
                f"{type(self).__name__}: it runs on enigma_fast's static KV cache (use None)"
            )
        rows = max(generation_config.num_beams, generation_config.num_return_sequences) * batch_size
        model_kwargs["cache"] = self._new_cache(rows, max(1, max_cache_length))

    def _valid_auto_compile_criteria(self, model_kwargs: dict, generation_config: Any) -> bool:
        return False  # the decode step runs our fused ops eagerly (see enigma_fast.generation's compile=True)

    def make_cache(self, batch: int, max_len: int) -> DNAKVCache:
        """An empty ``DNAKVCache`` of ``max_len`` positions for ``batch`` rows (to pass as ``cache``)."""
        return self._new_cache(batch, max_len)
