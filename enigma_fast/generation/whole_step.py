"""The generator's whole-step decode path: one native call per decode step instead of the modules' per-layer ops.

``WholeStepDecoder`` owns the static buffers of one generation (caches stacked over the layers, ``seqlens``, logits,
workspace) and the model's packed weights (``enigma_fast.ops.decode_pack``, made once and kept on the model until a
parameter changes). It gives the generator the model's own hooks: ``allocate_cache`` (the model's cache dict, whose
per-layer ``KVCache`` tensors are views of the stacked caches, so the model's fused prefill fills them) and
``step(tok, cache)`` with ``model.decode_step``'s interface and results. On CUDA the step and the sampling are
captured once in a CUDA graph (``enigma_fast.generation.cuda_graph``).

``decode_path`` selects the path: ``"auto"`` (the whole-step path where it serves the model, device and dtype and
``compile`` is off), ``"whole_step"`` (required: ValueError naming why when it does not serve) or ``"module"``.
"""

from __future__ import annotations

from typing import Any

import torch

from enigma_fast import _extension, ops
from enigma_fast.nn import KVCache

__all__ = ["DECODE_PATHS", "WholeStepDecoder", "packed_weights", "whole_step_decoder"]

DECODE_PATHS = ("auto", "whole_step", "module")


def _identity(t: torch.Tensor) -> tuple[int, int, int] | None:
    """What tells a weight from another or from its own earlier contents: storage, object and version counter
    (inference tensors have none: they cannot be modified in place outside inference mode)."""
    if not t.numel():
        return None
    return id(t), t.data_ptr(), 0 if t.is_inference() else t._version


def packed_weights(model: Any) -> ops.DecodePack:
    """``decode_pack`` of the model's weights, kept on the model and made again only when a parameter was replaced
    or modified in place (its version counter moved), or the device or dtype changed."""
    weights, geometry = model.decode_weights()
    w0 = weights[0]
    routed = _extension.has_kernel("decode_step", w0.device.type, w0.dtype)  # the pack's layout follows the route
    key = (geometry, routed, w0.dtype, w0.device, tuple(_identity(t) for t in weights))
    held = model.__dict__.get("_whole_step_pack")
    if held is not None and held[0] == key:
        return held[1]
    with torch.no_grad():
        pack = ops.decode_pack([t.detach() for t in weights], geometry)
    model.__dict__["_whole_step_pack"] = (key, pack)
    return pack


def _why_not(model: Any, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the whole-step path cannot serve this generation (None when it can)."""
    if not callable(getattr(model, "decode_weights", None)):
        return f"the whole-step path runs EnBERT and Enigma models (decode_weights), got {type(model).__name__}"
    if model.training and model.config.dropout > 0:
        return "the model is in training mode with dropout (call model.eval())"
    # the native step reads the weights and nothing else: a forward hook, or a module of another library in place of
    # ours (a peft LoRA layer, say), would change what the module path computes without the native step seeing it
    global_hooks = torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks
    for name, m in model.named_modules():
        if global_hooks or m._forward_hooks or m._forward_pre_hooks:
            return f"module {name or type(model).__name__!r} has forward hooks (the native step would skip them)"
        if not type(m).__module__.startswith(("torch.nn.", "enigma_fast.")):
            return f"module {name!r} is a {type(m).__module__}.{type(m).__name__}, which the native step cannot run"
    norms = [m for m in model.modules() if type(m).__name__ == "RMSNorm"]
    if any(getattr(m, "weight", None) is None for m in norms):
        return "the model has RMSNorm layers without weights"
    if not _extension.has_kernel("decode_step", device.type, dtype):
        return f"no whole-step kernel for {dtype} on {device.type} (see enigma_fast.backend_info())"
    return None


def whole_step_decoder(
    model: Any,
    batch: int,
    max_len: int,
    memory_len: int,
    device: torch.device,
    dtype: torch.dtype,
    decode_path: str = "auto",
    compile: bool = False,
) -> WholeStepDecoder | None:
    """The whole-step decoder for one generation, or None for the module path (``decode_path``, see the module
    doc). ValueError when ``decode_path`` is not a known path, or is ``"whole_step"`` and the path cannot serve."""
    if decode_path not in DECODE_PATHS:
        raise ValueError(f"decode_path must be one of {', '.join(map(repr, DECODE_PATHS))}, got {decode_path!r}")
    if decode_path == "module" or (decode_path == "auto" and compile):
        return None
    why = _why_not(model, device, dtype)
    if why is not None:
        if decode_path == "whole_step":
            raise ValueError(f"decode_path='whole_step': {why}")
        return None
    return WholeStepDecoder(model, batch, max_len, memory_len, device, dtype)


class WholeStepDecoder:
    """Static buffers and packed weights of one generation on the whole-step path.

    Shapes: caches ``(L, B, H, max_len, D)``, ``seqlens (B,)`` int32 (shared with the model's cache dict),
    ``logits (B, V)``; ``memory_len``: Enigma's source length S (0 for EnBERT).
    """

    def __init__(
        self, model: Any, batch: int, max_len: int, memory_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.model = model
        self.pack = packed_weights(model)
        g = self.pack.geometry
        shape = (g.n_layer, batch, g.n_head, max_len, g.head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.seqlens = torch.zeros(batch, dtype=torch.int32, device=device)
        self.logits = torch.empty(batch, g.vocab, dtype=dtype, device=device)
        self.work = ops.decode_workspace(self.pack, batch, max_len, memory_len if g.enigma else 0)
        self.key_start: torch.Tensor | None = None
        self.pos_offset: torch.Tensor | None = None
        self.memory_k: torch.Tensor | None = None
        self.memory_v: torch.Tensor | None = None
        self.memory_start: torch.Tensor | None = None

    def allocate_cache(self) -> dict:
        """The model's cache dict (as ``model.allocate_cache`` makes it) over this decoder's stacked caches."""
        layers = [KVCache(self.k_cache[i], self.v_cache[i], self.seqlens) for i in range(self.k_cache.shape[0])]
        return {"layers": layers, "seqlens": self.seqlens}

    def start(self, cache: dict) -> None:
        """Take what the model's prefill left in ``cache``: EnBERT's left padding; Enigma's projected memory (made
        contiguous once, stacked over the layers), its left padding and the position of cache slot 0."""
        ks = cache.get("key_start")
        if self.pack.geometry.enigma:
            self.memory_k = torch.stack([k for k, _ in cache["memory_kv"]]).contiguous()
            self.memory_v = torch.stack([v for _, v in cache["memory_kv"]]).contiguous()
            ms = cache.get("memory_start")
            self.memory_start = ms.contiguous() if ms is not None else None
            self.pos_offset = cache["first_pos"].long().contiguous()
        elif ks is not None:
            self.key_start = ks.contiguous()

    def step(self, tok: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """``model.decode_step``'s interface: one token per row ``tok (B, 1)``; returns the logits ``(B, V)`` (this
        decoder's buffer, rewritten by the next step) and advances the cache by one."""
        return ops.decode_step(
            self.pack,
            tok.reshape(-1).contiguous(),
            self.k_cache,
            self.v_cache,
            self.seqlens,
            self.logits,
            self.work,
            key_start=self.key_start,
            pos_offset=self.pos_offset,
            memory_k=self.memory_k,
            memory_v=self.memory_v,
            memory_start=self.memory_start,
        )
