"""LoRA adapters on a backbone through ``peft`` (an optional dependency: ``pip install enigma_fast[finetune]``).

LoRA (Hu et al., 2021) replaces a frozen linear map ``W`` ``(out, in)`` by ``W + (alpha / r) B A`` with trainable
``A`` ``(r, in)`` (random) and ``B`` ``(out, r)`` (zeros at the start, so training starts from the pretrained
model). Here the adapted maps are the fused QKV and output projections of every self-attention block and the two
feed-forward layers (EnBERT's blocks, Enigma's encoder blocks): ``TARGETS`` (a regular expression peft matches on
full module names). Everything else of the backbone is frozen; the task head stays trainable.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

__all__ = ["TARGETS", "adapter_state", "apply_lora", "base_state", "load_adapter", "merge_lora", "require_peft"]

TARGETS = r".*(blocks|encoder)\.\d+\.(attn\.(qkv|out)|ffn\.(fc|proj))"
_ADAPTER_KEY = re.compile(r"\.lora_(A|B)\.weight$")


def require_peft() -> Any:
    """The ``peft`` module, or an ImportError of one line saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ImportError(
            "LoRA needs the peft package: pip install 'enigma_fast[finetune]' (or pip install peft)"
        ) from None
    return peft


def apply_lora(backbone: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.05) -> nn.Module:
    """``backbone`` wrapped by ``peft.get_peft_model`` with rank-``r`` LoRA on ``TARGETS``; only the adapters are
    trainable. The wrapper forwards attribute access to the backbone (``wrapped.blocks`` etc.)."""
    peft = require_peft()
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"lora rank r must be an int >= 1, got {r!r}")
    if not alpha > 0:
        raise ValueError(f"lora alpha must be > 0, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {dropout}")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGETS, bias="none")
    return peft.get_peft_model(backbone, config)


def is_lora(backbone: nn.Module) -> bool:
    """True when ``backbone`` is a peft wrapper."""
    return hasattr(backbone, "get_base_model") and hasattr(backbone, "peft_config")


def adapter_state(wrapped: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of a peft-wrapped backbone (``peft.get_peft_model_state_dict``), contiguous on the CPU."""
    peft = require_peft()
    return {k: v.detach().contiguous().cpu() for k, v in peft.get_peft_model_state_dict(wrapped).items()}


def base_state(wrapped: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the backbone under a peft wrapper, without the adapters and under the backbone's own
    names (peft's ``...qkv.base_layer.weight`` is the backbone's ``...qkv.weight``)."""
    out = {}
    for k, v in wrapped.get_base_model().state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    return out


def load_adapter(wrapped: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load adapter ``tensors`` (as ``adapter_state`` wrote them) into ``wrapped``; ValueError naming ``source`` and
    every missing, unexpected or mis-shaped tensor when they are not exactly the adapters the config makes."""
    peft = require_peft()
    want = peft.get_peft_model_state_dict(wrapped)
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    shapes = sorted(
        f"{k}: file {tuple(tensors[k].shape)}, config {tuple(want[k].shape)}"
        for k in set(want) & set(tensors)
        if tensors[k].shape != want[k].shape
    )
    problems = [
        f"{what}: {', '.join(names)}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("mismatched shapes", shapes))
        if names
    ]
    if problems:
        raise ValueError(
            f"cannot load {source}: its adapters are not those its config describes: " + " | ".join(problems)
        )
    peft.set_peft_model_state_dict(wrapped, tensors)


def merge_lora(wrapped: nn.Module) -> nn.Module:
    """The backbone with ``W + (alpha / r) B A`` merged into every adapted weight (``merge_and_unload``): a plain
    EnBERT/Enigma that computes what the wrapped one does, without the adapter's extra matmuls."""
    return wrapped.merge_and_unload()
