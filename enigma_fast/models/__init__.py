"""DNA language models: configs with presets, EnBERT (decoder-only), Enigma (encoder-decoder), checkpoints."""

from enigma_fast.models.config import EnBERTConfig, EnigmaConfig
from enigma_fast.models.enbert import EnBERT
from enigma_fast.models.enigma import Enigma

__all__ = ["EnBERT", "EnBERTConfig", "Enigma", "EnigmaConfig", "load_model"]


def load_model(path: str, device: str = "cpu"):
    """Load a checkpoint folder of either model, choosing the class from its config's ``model_type``."""
    from enigma_fast.models.checkpoint import read_config

    kind = read_config(path).get("model_type")
    classes = {"enbert": EnBERT, "enigma": Enigma}
    if kind not in classes:
        raise ValueError(f"{path}: unknown model_type {kind!r}; expected one of {sorted(classes)}")
    return classes[kind].from_pretrained(path, device=device)
