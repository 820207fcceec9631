"""Registering EnBERT and Enigma with ``transformers``' Auto classes (no ``trust_remote_code``, no copied code).

Three steps, each needing only the part of ``transformers`` its Auto module needs (``enigma_fast.hf._hook`` runs each
when that Auto module has been imported, so ``import enigma_fast`` never imports ``transformers`` itself):

* ``register_configs``: ``AutoConfig`` knows ``model_type`` "enbert" and "enigma";
* ``register_tokenizers``: ``AutoTokenizer`` gives ``EnigmaDNATokenizer`` for both;
* ``register_models``: ``AutoModelForCausalLM`` -> ``EnBERTForCausalLM``, ``AutoModelForSeq2SeqLM`` ->
  ``EnigmaForConditionalGeneration``, ``AutoModelForSequenceClassification`` / ``AutoModelForTokenClassification``
  -> the heads of ``enigma_fast.finetune`` on either backbone (``enigma_fast.hf.modeling_heads``).

``register_all`` runs the three (what ``from enigma_fast.hf import ...`` does). Each is idempotent.
"""

from __future__ import annotations

import logging

__all__ = ["TESTED_TRANSFORMERS", "register_all", "register_configs", "register_models", "register_tokenizers"]

logger = logging.getLogger(__name__)

TESTED_TRANSFORMERS = ("5.25", "5.26")  # [lower, upper): the range the `hf` extra pins and the tests ran on
_done: set[str] = set()


def _check_version() -> None:
    import transformers
    from packaging.version import Version

    v = Version(transformers.__version__)
    lo, hi = (Version(x) for x in TESTED_TRANSFORMERS)
    if not lo <= v < hi:
        logger.warning(
            "enigma_fast.hf is tested with transformers >=%s,<%s; found %s (pip install 'enigma_fast[hf]')",
            *TESTED_TRANSFORMERS,
            transformers.__version__,
        )


def register_configs() -> None:
    """``AutoConfig``: model_type "enbert" -> ``EnBERTHFConfig``, "enigma" -> ``EnigmaHFConfig``."""
    if "configs" in _done:
        return
    _check_version()
    from transformers.models.auto.configuration_auto import AutoConfig

    from enigma_fast.hf.configuration import EnBERTHFConfig, EnigmaHFConfig

    for cfg in (EnBERTHFConfig, EnigmaHFConfig):
        AutoConfig.register(cfg.model_type, cfg, exist_ok=True)
    _done.add("configs")


def register_tokenizers() -> None:
    """``AutoTokenizer``: ``EnigmaDNATokenizer`` for both model types."""
    if "tokenizers" in _done:
        return
    register_configs()
    from transformers.models.auto.tokenization_auto import AutoTokenizer

    from enigma_fast.hf.configuration import EnBERTHFConfig, EnigmaHFConfig
    from enigma_fast.hf.tokenization import EnigmaDNATokenizer

    for cfg in (EnBERTHFConfig, EnigmaHFConfig):
        AutoTokenizer.register(cfg, EnigmaDNATokenizer, exist_ok=True)
    _done.add("tokenizers")


def register_models() -> None:
    """``AutoModelForCausalLM`` (EnBERT), ``AutoModelForSeq2SeqLM`` (Enigma), and the sequence and token
    classification heads on both."""
    if "models" in _done:
        return
    register_configs()
    from transformers.models.auto import modeling_auto

    from enigma_fast.hf.configuration import EnBERTHFConfig, EnigmaHFConfig
    from enigma_fast.hf.modeling_enbert import EnBERTForCausalLM
    from enigma_fast.hf.modeling_enigma import EnigmaForConditionalGeneration
    from enigma_fast.hf.modeling_heads import (
        EnBERTForSequenceClassification,
        EnBERTForTokenClassification,
        EnigmaForSequenceClassification,
        EnigmaForTokenClassification,
    )

    modeling_auto.AutoModelForCausalLM.register(EnBERTHFConfig, EnBERTForCausalLM, exist_ok=True)
    modeling_auto.AutoModelForSeq2SeqLM.register(EnigmaHFConfig, EnigmaForConditionalGeneration, exist_ok=True)
    for auto, enbert, enigma in (
        (
            modeling_auto.AutoModelForSequenceClassification,
            EnBERTForSequenceClassification,
            EnigmaForSequenceClassification,
        ),
        (modeling_auto.AutoModelForTokenClassification, EnBERTForTokenClassification, EnigmaForTokenClassification),
    ):
        auto.register(EnBERTHFConfig, enbert, exist_ok=True)
        auto.register(EnigmaHFConfig, enigma, exist_ok=True)
    _done.add("models")


def register_all() -> None:
    """Every registration (configs, tokenizers, models)."""
    register_configs()
    register_tokenizers()
    register_models()
