"""Reference whole-step decode: the module path's math (EnBERT / Enigma decoder blocks) on plain weight tensors.

The oracle of ``enigma_fast.ops.decode_step`` and its fallback where no kernel serves; written for clarity. It
calls the reference ops the modules' kernels are tested against (``rms_norm``, ``add_rms_norm``,
``rel_attention_with_kvcache``) and ``torch.nn.functional`` for the rest, in the order the modules run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from enigma_fast.reference.attention import rel_attention_with_kvcache
from enigma_fast.reference.rms_norm import add_rms_norm, rms_norm

__all__ = ["check_decode_step", "check_decode_weights", "decode_step", "decode_weight_shapes"]

_LAYER_NAMES = (
    "norm1",
    "qkv.weight",
    "qkv.bias",
    "rel_emb",
    "out.weight",
    "out.bias",
    "norm2",
    "fc.weight",
    "fc.bias",
    "proj.weight",
    "proj.bias",
)
_CROSS_NAMES = ("norm_cross", "cross.q.weight", "cross.q.bias", "cross.out.weight", "cross.out.bias", "cross.rel_bias")


def decode_weight_shapes(geometry: Any) -> list[tuple[str, tuple[int, ...] | None]]:
    """Names and shapes of the canonical weight list for ``geometry`` (a ``DecodeGeometry``); None = must be empty
    (an absent bias, Enigma's absent cross bias, EnBERT's position table)."""
    g = geometry
    d, H, D, P, R = g.d_model, g.n_head, g.d_model // g.n_head, g.max_rel_pos, g.cross_rel_pos
    enigma = g.kind == 1

    def opt(present: bool, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        return shape if present else None

    out = [("tok_emb", (g.vocab, d)), ("pos_emb", opt(enigma, (g.n_pos, d))), ("lm_head", (g.vocab, d))]
    out.append(("norm_f", (d,)))
    for layer in range(g.n_layer):
        shapes = [(d,), (3 * d, d), opt(g.bias, (3 * d,)), (H, 2 * P - 1, D), (d, d), opt(g.bias, (d,)), (d,)]
        shapes += [(g.ffn, d), opt(g.bias, (g.ffn,)), (d, g.ffn), opt(g.bias, (d,))]
        names = list(_LAYER_NAMES)
        if enigma:
            shapes += [(d,), (d, d), opt(g.bias, (d,)), (d, d), opt(g.bias, (d,)), opt(R > 0, (H, 2 * R + 1))]
            names += list(_CROSS_NAMES)
        out += [(f"layer {layer} {n}", s) for n, s in zip(names, shapes, strict=True)]
    return out


def check_decode_weights(weights: Sequence[torch.Tensor], geometry: Any) -> None:
    """Check ``geometry`` and the canonical weight list against it (count, shapes, one dtype and device).
    TypeError / ValueError, one line naming the weight by index and name."""
    g = geometry
    for name in ("kind", "n_layer", "d_model", "n_head", "ffn", "vocab", "max_rel_pos", "cross_rel_pos", "n_pos"):
        v = getattr(g, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"geometry.{name} must be an int, got {type(v).__name__} {v!r}")
    if g.kind not in (0, 1):
        raise ValueError(f"geometry.kind must be 0 (EnBERT) or 1 (Enigma), got {g.kind}")
    for name in ("n_layer", "d_model", "n_head", "ffn", "vocab", "max_rel_pos"):
        if getattr(g, name) < 1:
            raise ValueError(f"geometry.{name} must be >= 1, got {getattr(g, name)}")
    if g.d_model % g.n_head:
        raise ValueError(f"geometry.d_model must be divisible by n_head={g.n_head}, got {g.d_model}")
    if g.cross_rel_pos < 0 or (g.kind == 0 and (g.cross_rel_pos or g.n_pos)) or (g.kind == 1 and g.n_pos < 1):
        raise ValueError(
            f"geometry: cross_rel_pos must be >= 0 and 0 for an EnBERT, n_pos >= 1 for an Enigma and 0 for an EnBERT; "
            f"got kind {g.kind}, cross_rel_pos {g.cross_rel_pos}, n_pos {g.n_pos}"
        )
    if not g.eps >= 0:
        raise ValueError(f"geometry.eps must be >= 0, got {g.eps}")
    want = decode_weight_shapes(g)
    if len(weights) != len(want):
        raise ValueError(f"weights must hold {len(want)} tensors for this geometry, got {len(weights)}")
    first = weights[0]
    for i, ((name, shape), w) in enumerate(zip(want, weights, strict=True)):
        label = f"weights[{i}] ({name})"
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{label} must be a tensor, got {type(w).__name__}")
        if w.device != first.device:
            raise ValueError(f"{label} must be on {first.device}, got {w.device}")
        if shape is None:
            if w.numel():
                raise ValueError(f"{label} must be empty for this geometry, got shape {tuple(w.shape)}")
            continue
        if not w.dtype.is_floating_point or w.dtype != first.dtype:
            raise TypeError(f"{label} must be floating point like weights[0] ({first.dtype}), got {w.dtype}")
        if tuple(w.shape) != shape:
            raise ValueError(f"{label} must be {shape}, got {tuple(w.shape)}")


def _check_vector(name: str, t: Any, B: int, device: torch.device, int32_only: bool = False) -> None:
    want = "int32" if int32_only else "int32 or int64"
    if not isinstance(t, torch.Tensor) or t.dtype not in ((torch.int32,) if int32_only else (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a ({B},) {want} tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if tuple(t.shape) != (B,) or t.device != device:
        raise ValueError(f"{name} must be a ({B},) {want} tensor on {device}, got {tuple(t.shape)} on {t.device}")


def check_decode_step(
    geometry: Any,
    dtype: torch.dtype,
    device: torch.device,
    tok: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seqlens: torch.Tensor,
    logits: torch.Tensor,
    key_start: torch.Tensor | None,
    pos_offset: torch.Tensor | None,
    memory_k: torch.Tensor | None,
    memory_v: torch.Tensor | None,
    memory_start: torch.Tensor | None,
) -> None:
    """The shape, dtype and device checks of the step kernel, and its value checks (token ids, cache room, Enigma
    positions: one host read). TypeError / ValueError naming the argument."""
    g = geometry
    if not isinstance(tok, torch.Tensor) or tok.dtype != torch.int64 or tok.dim() != 1 or tok.shape[0] < 1:
        raise ValueError(f"tok must be a (B,) int64 tensor with B >= 1, got {getattr(tok, 'dtype', tok)!s}")
    B = tok.shape[0]
    H, D, L = g.n_head, g.d_model // g.n_head, g.n_layer
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(t, torch.Tensor) or t.dim() != 5 or tuple(t.shape[:3]) != (L, B, H) or t.shape[4] != D:
            raise ValueError(f"{name} must be (L, B, H, Tmax, D) = ({L}, {B}, {H}, *, {D}), got {tuple(t.shape)}")
        if t.dtype != dtype or t.device != device:
            raise TypeError(f"{name} must be {dtype} on {device}, got {t.dtype} on {t.device}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache must have k_cache's shape {tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
    _check_vector("seqlens", seqlens, B, device, int32_only=True)
    for name, t in (("key_start", key_start), ("pos_offset", pos_offset), ("memory_start", memory_start)):
        if t is not None:
            _check_vector(name, t, B, device)
    if tuple(logits.shape) != (B, g.vocab) or logits.dtype != dtype:
        raise ValueError(f"logits must be a ({B}, {g.vocab}) {dtype} tensor, got {logits.dtype} {tuple(logits.shape)}")
    enigma = g.kind == 1
    if (memory_k is None) == enigma or (memory_v is None) == enigma:
        raise ValueError("memory_k and memory_v are needed for an Enigma decoder and taken by no EnBERT")
    if not enigma and (pos_offset is not None or memory_start is not None):
        raise ValueError("pos_offset and memory_start are for an Enigma decoder; an EnBERT has no positions or memory")
    if enigma:
        for name, t in (("memory_k", memory_k), ("memory_v", memory_v)):
            if t.dim() != 5 or tuple(t.shape[:3]) != (L, B, H) or t.shape[4] != D or t.shape != memory_k.shape:
                raise ValueError(f"{name} must be (L, B, H, S, D) = ({L}, {B}, {H}, *, {D}), got {tuple(t.shape)}")
    Tmax = k_cache.shape[3]
    bad_tok = (tok < 0) | (tok >= g.vocab)
    full = (seqlens < 0) | (seqlens >= Tmax)
    checks = [bad_tok.any(), full.any()]
    if enigma:
        pos = seqlens.long() + (0 if pos_offset is None else pos_offset.long())
        checks.append(((pos < 0) | (pos >= g.n_pos)).any())
    flags = torch.stack(checks).tolist()
    if flags[0]:
        b = int(bad_tok.nonzero()[0, 0])
        raise ValueError(f"tok must hold token ids in [0, vocab_size={g.vocab}), got {int(tok[b])} at tok[{b}]")
    if flags[1]:
        b = int(full.nonzero()[0, 0])
        raise ValueError(
            f"seqlens[{b}] = {int(seqlens[b])} leaves no room in the caches for one more token (Tmax = {Tmax})"
        )
    if enigma and flags[2]:
        raise ValueError(f"a token's position pos_offset + seqlens is outside the position table [0, {g.n_pos})")


def decode_step(
    weights: Sequence[torch.Tensor],
    geometry: Any,
    tok: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seqlens: torch.Tensor,
    *,
    key_start: torch.Tensor | None = None,
    pos_offset: torch.Tensor | None = None,
    memory_k: torch.Tensor | None = None,
    memory_v: torch.Tensor | None = None,
    memory_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step on the canonical weight list (see ``enigma_fast.ops.decode_step`` for the math and shapes);
    writes the caches and advances ``seqlens`` like the kernel; returns the logits ``(B, V)``."""
    g = geometry
    B, d, H, D, eps = tok.shape[0], g.d_model, g.n_head, g.d_model // g.n_head, g.eps
    enigma = g.kind == 1
    per = len(_LAYER_NAMES) + (len(_CROSS_NAMES) if enigma else 0)
    tok_emb, pos_emb, lm_head, norm_f = weights[:4]
    h = F.embedding(tok, tok_emb)  # (B, d)
    pos = None
    if enigma:
        pos = seqlens.long() + (0 if pos_offset is None else pos_offset.long())  # (B,)
        h = h + F.embedding(pos, pos_emb)
    f = None
    for layer in range(g.n_layer):
        w = list(weights[4 + layer * per : 4 + (layer + 1) * per])
        bias = [t if t.numel() else None for t in w]
        y, h = (rms_norm(h, w[0], eps), h) if f is None else add_rms_norm(f, h, w[0], eps)
        q, k, v = F.linear(y, w[1], bias[2]).view(B, 3, H, 1, D).unbind(1)  # each (B, H, 1, D)
        att = rel_attention_with_kvcache(
            q, k_cache[layer], v_cache[layer], w[3], cache_seqlens=seqlens, k_new=k, v_new=v, key_start=key_start
        )
        a = F.linear(att.reshape(B, d), w[4], bias[5])
        if enigma:
            y, h = add_rms_norm(a, h, w[11], eps)
            q2 = F.linear(y, w[12], bias[13]).view(B, H, 1, D)
            a = F.linear(_cross(q2, memory_k[layer], memory_v[layer], memory_start, bias[16], pos), w[14], bias[15])
        y, h = add_rms_norm(a, h, w[6], eps)
        f = F.linear(F.gelu(F.linear(y, w[7], bias[8])), w[9], bias[10])
    y, _ = add_rms_norm(f, h, norm_f, eps)
    seqlens.add_(1)
    return F.linear(y, lm_head)


def _cross(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    memory_start: torch.Tensor | None,
    rel_bias: torch.Tensor | None,
    pos: torch.Tensor,
) -> torch.Tensor:
    """Cross-attention of one query per row ``q (B, H, 1, D)`` to memory ``k, v (B, H, S, D)``: scores
    ``q . k_j / sqrt(D) + rel_bias[h, clamp(j - memory_start - pos, -R, R) + R]``, keys ``j >= memory_start``.
    Returns ``(B, H * D)``."""
    B, H, _, D = q.shape
    S = k.shape[2]
    j = torch.arange(S, device=q.device).view(1, S)
    start = torch.zeros(B, 1, dtype=torch.long, device=q.device) if memory_start is None else memory_start.view(B, 1)
    s = (q @ k.transpose(-1, -2)) * D**-0.5  # (B, H, 1, S)
    if rel_bias is not None:
        R = (rel_bias.shape[1] - 1) // 2
        off = (j - start - pos.view(B, 1)).clamp(-R, R) + R  # (B, S)
        s = s + rel_bias[:, off].permute(1, 0, 2).unsqueeze(2).to(s.dtype)
    s = s.masked_fill((j < start).view(B, 1, 1, S), float("-inf"))
    return (torch.softmax(s, dim=-1) @ v).reshape(B, H * D)
