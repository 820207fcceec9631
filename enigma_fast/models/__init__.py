"""DNA language models: configs with presets, EnBERT (decoder-only), Enigma (encoder-decoder), checkpoints."""

from __future__ import annotations

from enigma_fast.models.config import EnBERTConfig, EnigmaConfig, config_from_dict
from enigma_fast.models.enbert import EnBERT
from enigma_fast.models.enigma import Enigma, SpanBatch

__all__ = ["EnBERT", "EnBERTConfig", "Enigma", "EnigmaConfig", "SpanBatch", "config_from_dict", "load_model"]


def load_model(path: str, device: str = "cpu") -> EnBERT | Enigma:
    """Load a checkpoint folder of either model, choosing the class from its config's ``model_type``.

    Raises FileNotFoundError for a missing folder or file, ValueError/TypeError (one line) for a config or weights
    file that does not describe a valid model.
    """
    from enigma_fast.models.checkpoint import read_config

    cfg = read_config(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: config.json must hold a JSON object, got {type(cfg).__name__}")
    kind = cfg.get("model_type")
    classes = {"enbert": EnBERT, "enigma": Enigma}
    if kind not in classes:
        raise ValueError(f"{path}: unknown model_type {kind!r}; expected one of {sorted(classes)}")
    return classes[kind].from_pretrained(path, device=device)
