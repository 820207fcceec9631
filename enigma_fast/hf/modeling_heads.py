"""The fine-tuning heads of ``enigma_fast.finetune`` as ``transformers`` models: ``AutoModelForSequenceClassification``
and ``AutoModelForTokenClassification`` on EnBERT and Enigma, for ``peft`` and the ``Trainer``.

A wrapper holds one head module of ``enigma_fast.finetune.heads`` (``SequenceClassifier``: pooled states and a
linear layer, classification or regression; ``TokenClassifier``: a linear layer on every token) on its backbone,
built by ``enigma_fast.finetune.folder.build_model`` from the config's ``finetune`` section, and adopts its modules
and buffers, so the tensor names are those of a fine-tuned folder (``backbone.*``, ``head.*``, ``label_mean``,
``label_std``).

    from_pretrained(run_folder, num_labels=2)   a pretrained folder: its weights become ``backbone.*``, the head
                                                is new (our init); transformers' ``num_labels`` / ``id2label`` /
                                                ``problem_type`` ("regression": one value) make the section
    from_pretrained(finetuned_folder)           a folder written by ``enigma_fast.finetune`` (or saved here):
                                                ``load_finetuned`` reads it (a LoRA folder's adapters merged)
    save_pretrained(folder)                     the fine-tuned folder format (config.json with the section,
                                                model.safetensors, tokenizer.json): ``load_finetuned`` reads it

    forward(input_ids (B, T), attention_mask (B, T) | None, labels | None)
        -> SequenceClassifierOutput(loss, logits (B, num_labels)) | TokenClassifierOutput(loss, logits (B, T, C))

``peft``: the backbone's projections are named ``qkv``, ``out`` (attention), ``fc``, ``proj`` (feed-forward); the
head is ``head`` (``modules_to_save=["head"]``). See docs/huggingface.md.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from enigma_fast.hf._base import DNAPreTrainedModel
from enigma_fast.hf.configuration import EnBERTHFConfig, EnigmaHFConfig
from enigma_fast.hf.modeling_enbert import _no_extras
from enigma_fast.models import EnBERT, Enigma, checkpoint
from enigma_fast.models.base import DNALanguageModel

__all__ = [
    "EnBERTForSequenceClassification",
    "EnBERTForTokenClassification",
    "EnigmaForSequenceClassification",
    "EnigmaForTokenClassification",
]


# options of transformers' from_pretrained that mean nothing for a local folder (the Auto classes pass them)
_LOCAL_IGNORED = {
    "adapter_kwargs",
    "cache_dir",
    "code_revision",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
    "_from_auto",
    "_from_pipeline",
}


def _spec_of(config: Any, task_kind: str) -> Any:
    """The ``FinetuneSpec`` of ``config``: its ``finetune`` section, or one made from transformers' task fields
    (``problem_type`` "regression" or one label: regression; otherwise classes named by ``id2label``)."""
    from enigma_fast.finetune.config import DEFAULT_POOLING
    from enigma_fast.finetune.folder import FinetuneSpec

    section = getattr(config, "finetune", None)
    if section is not None:
        spec = FinetuneSpec.from_dict(section)
    else:
        problem = getattr(config, "problem_type", None)
        if problem == "multi_label_classification":
            raise ValueError("problem_type 'multi_label_classification' is not available (one class or value each)")
        n = config.num_labels or 2
        names = [str((config.id2label or {}).get(i, i)) for i in range(n)]
        if all(name == f"LABEL_{i}" for i, name in enumerate(names)):  # transformers' defaults: the class indices
            names = [str(i) for i in range(n)]
        if task_kind == "token":
            task = "token-classification"
        else:
            task = "regression" if problem == "regression" or n == 1 else "classification"
        spec = FinetuneSpec(
            task=task,
            labels=[] if task == "regression" else names,
            pooling=None if task == "token-classification" else DEFAULT_POOLING[config.model_type],
            base_model=str(getattr(config, "_name_or_path", "") or ""),
        )
        spec.validate()
    if (spec.task == "token-classification") != (task_kind == "token"):
        raise ValueError(f"the config's task is {spec.task!r}: load it with the {spec.task} class")
    return spec


class _HeadModel(DNAPreTrainedModel):
    """Base of the four head wrappers; ``backbone_class`` (EnBERT/Enigma) and ``task_kind`` set by each."""

    backbone_class: ClassVar[type[DNALanguageModel]]
    task_kind: ClassVar[str]
    base_model_prefix = "backbone"  # a pretrained folder's tensors are the backbone's
    _tied_weights_keys: ClassVar[dict[str, str]] = {"backbone.lm_head.weight": "backbone.tok_emb.weight"}

    def __init__(self, config: Any, core: nn.Module | None = None) -> None:
        spec = _spec_of(config, self.task_kind)
        plain = dataclasses.replace(spec, mode="full" if spec.mode == "lora" else spec.mode, lora=None)
        config.finetune = plain.to_dict()  # what a save writes: a LoRA model is saved merged (mode full)
        config.id2label = dict(enumerate(spec.labels)) if spec.labels else {0: "value"}
        if spec.task != "token-classification":
            config.problem_type = "regression" if spec.task == "regression" else "single_label_classification"
        super().__init__(config, core)
        self.core.spec = plain

    @classmethod
    def _build_core(cls, config: Any) -> nn.Module:
        from enigma_fast.finetune.folder import FinetuneSpec, build_model

        return build_model(cls.backbone_class(config.to_enigma_fast()), FinetuneSpec.from_dict(config.finetune))

    @classmethod
    def _backbone_class(cls, config: Any) -> type[DNALanguageModel]:
        return cls.backbone_class

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Ours for the backbone and head (normal(0, 0.02) weights, zero biases), and the labels' mean and standard
        deviation of the config's section for a regression head."""
        super()._init_weights(module)
        if module is self and hasattr(self.core, "label_mean"):  # the head's buffers are the wrapper's own
            module = self.core
            spec = self.config.finetune
            init.constant_(module.label_mean, float(spec.get("label_mean", 0.0)))
            init.constant_(module.label_std, float(spec.get("label_std", 1.0)))

    @property
    def spec(self) -> Any:
        """The ``FinetuneSpec`` of the head (``enigma_fast.finetune.folder``)."""
        return self.core.spec

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.tok_emb

    # ---- loading and saving ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """A fine-tuned folder through ``load_finetuned`` (LoRA adapters merged; ``dtype`` applies), anything else
        through transformers (a pretrained folder: the backbone's tensors checked, the head new)."""
        from enigma_fast.finetune.folder import is_finetuned_folder, load_finetuned

        path = Path(pretrained_model_name_or_path)
        if not (path.is_dir() and is_finetuned_folder(path)):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
        config = kwargs.pop("config", None)
        unused = sorted(k for k in kwargs if k not in _LOCAL_IGNORED and kwargs[k] is not None)
        if args or unused:
            raise TypeError(
                f"from_pretrained of a fine-tuned folder takes dtype and config, got {', '.join(unused) or args}"
            )
        head = load_finetuned(path, merge=True)
        if config is None:
            config = cls.config_class.from_pretrained(path)
        model = cls(config, core=head)
        model.core.tokenizer = head.tokenizer
        if dtype is not None and dtype != "auto":
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model.eval()

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """transformers' save (the fine-tuned folder's config.json and model.safetensors), plus the attached
        tokenizer's ``tokenizer.json`` (``load_finetuned`` needs it) when the folder holds none.

        A tied LM head that ``peft`` copied (``modules_to_save=["head"]`` also matches ``backbone.lm_head``: peft
        matches names by suffix) is tied again first, when it still equals the embedding (the classifier never
        trains it); a copy that differs is a ValueError, since the config ties the two."""
        bb = self.backbone
        if self.config.tie_embeddings and bb.lm_head.weight is not bb.tok_emb.weight:
            if not torch.equal(bb.lm_head.weight, bb.tok_emb.weight):
                raise ValueError("backbone.lm_head.weight differs from backbone.tok_emb.weight, which the config ties")
            bb.lm_head.weight = bb.tok_emb.weight
        out = super().save_pretrained(save_directory, *args, **kwargs)
        tok = getattr(self.core, "tokenizer", None)
        f = Path(save_directory) / checkpoint.TOKENIZER_NAME
        if tok is not None and not f.exists() and kwargs.get("is_main_process", True):
            tok.save(f)
        return out

    def attach_tokenizer(self, tok: Any) -> None:
        self.core.tokenizer = tok


class _SequenceHead(_HeadModel):
    task_kind = "sequence"

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple:
        """Logits ``(B, num_labels)`` (regression: ``(B, 1)`` values in the labels' units) of ``input_ids``
        ``(B, T)`` padded on either side (``attention_mask``); loss against ``labels`` ``(B,)`` when given."""
        kwargs.pop("num_items_in_batch", None)
        _no_extras(kwargs, type(self).__name__)
        if input_ids is None:
            raise ValueError("input_ids is required (inputs_embeds is not supported)")
        logits, loss = self.core(input_ids, attention_mask=attention_mask, labels=labels)
        out = SequenceClassifierOutput(loss=loss, logits=logits)
        return out if return_dict is not False else out.to_tuple()


class _TokenHead(_HeadModel):
    task_kind = "token"

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        base_token_index: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple:
        """Per-token logits ``(B, T, C)`` (per base ``(B, L, C)`` with ``base_token_index``); loss against
        ``labels`` (``-100`` ignored) when given."""
        kwargs.pop("num_items_in_batch", None)
        _no_extras(kwargs, type(self).__name__)
        if input_ids is None:
            raise ValueError("input_ids is required (inputs_embeds is not supported)")
        logits, loss = self.core(
            input_ids, attention_mask=attention_mask, labels=labels, base_token_index=base_token_index
        )
        out = TokenClassifierOutput(loss=loss, logits=logits)
        return out if return_dict is not False else out.to_tuple()


class EnBERTForSequenceClassification(_SequenceHead):
    """EnBERT with a sequence head (``last-mean`` pooling by default, as fine-tuning): classification or regression."""

    config_class = EnBERTHFConfig
    backbone_class = EnBERT


class EnigmaForSequenceClassification(_SequenceHead):
    """Enigma's encoder with a sequence head (mean pooling by default): classification or regression."""

    config_class = EnigmaHFConfig
    backbone_class = Enigma


class EnBERTForTokenClassification(_TokenHead):
    """EnBERT with a per-token (per-base) classification head."""

    config_class = EnBERTHFConfig
    backbone_class = EnBERT


class EnigmaForTokenClassification(_TokenHead):
    """Enigma's encoder with a per-token (per-base) classification head."""

    config_class = EnigmaHFConfig
    backbone_class = Enigma
