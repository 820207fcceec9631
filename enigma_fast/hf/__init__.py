"""EnBERT and Enigma as Hugging Face ``transformers`` models (``pip install "enigma_fast[hf]"``).

After ``import enigma_fast``, with ``transformers`` installed, the Auto classes know our folders (no
``trust_remote_code``, nothing copied): ``AutoConfig``, ``AutoTokenizer`` (``EnigmaDNATokenizer``),
``AutoModelForCausalLM`` (``EnBERTForCausalLM``), ``AutoModelForSeq2SeqLM`` (``EnigmaForConditionalGeneration``),
``AutoModelForSequenceClassification`` and ``AutoModelForTokenClassification`` (the heads of
``enigma_fast.finetune``) load a run folder and a fine-tuned folder as they are on disk; ``generate`` runs our
fused attention on our static KV cache (``DNAKVCache``); ``pipeline("text-generation")``, ``peft`` and the
``Trainer`` work on them. See docs/huggingface.md.

This package imports ``transformers`` only when one of its names is used (``from enigma_fast.hf import
EnBERTForCausalLM``), which also runs every registration; ``import enigma_fast`` only installs the hook of
``enigma_fast.hf._hook`` (registration when ``transformers``' Auto modules load).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DNAKVCache",
    "EnBERTForCausalLM",
    "EnBERTForSequenceClassification",
    "EnBERTForTokenClassification",
    "EnBERTHFConfig",
    "EnigmaDNATokenizer",
    "EnigmaForConditionalGeneration",
    "EnigmaForSequenceClassification",
    "EnigmaForTokenClassification",
    "EnigmaHFConfig",
    "register_all",
]

_WHERE = {
    "DNAKVCache": "enigma_fast.hf.cache",
    "EnBERTForCausalLM": "enigma_fast.hf.modeling_enbert",
    "EnBERTForSequenceClassification": "enigma_fast.hf.modeling_heads",
    "EnBERTForTokenClassification": "enigma_fast.hf.modeling_heads",
    "EnigmaForSequenceClassification": "enigma_fast.hf.modeling_heads",
    "EnigmaForTokenClassification": "enigma_fast.hf.modeling_heads",
    "EnBERTHFConfig": "enigma_fast.hf.configuration",
    "EnigmaDNATokenizer": "enigma_fast.hf.tokenization",
    "EnigmaForConditionalGeneration": "enigma_fast.hf.modeling_enigma",
    "EnigmaHFConfig": "enigma_fast.hf.configuration",
    "register_all": "enigma_fast.hf.registration",
}


def __getattr__(name: str) -> Any:
    """The public names, imported (and every registration run) on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'enigma_fast.hf' has no attribute {name!r}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ImportError(
            f"enigma_fast.hf.{name} needs transformers: pip install 'enigma_fast[hf]' (transformers, peft, accelerate)"
        ) from None
    from enigma_fast.hf.registration import register_all

    register_all()
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
