"""Whole-step decode ops: one call runs a decode step of a whole EnBERT stack (or Enigma's decoder) on packed weights.

The kernels are ``torch.ops.enigma_fast.{decode_pack, decode_step}`` (schemas and the canonical weight order in
csrc/decode/decode.cpp). ``decode_pack`` lays the weights out once for the device's step kernel; ``decode_step``
then runs embeddings, every layer's add+RMSNorm, QKV projection, cache write, relative-position attention over the
cache (and Enigma's cross-attention), output projection, GELU feed-forward, final norm and logits, writing into
caller-owned buffers (caches, ``seqlens``, logits, workspace): a step allocates nothing. Where no kernel serves the
device/dtype (no extension, bfloat16 on CPU, ...) the pack keeps the weights as they are and the step runs
``enigma_fast.reference.decode_step``, the module path's math on plain tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from enigma_fast import _extension, reference
from enigma_fast.reference.decode import check_decode_step, check_decode_weights

__all__ = ["DecodeGeometry", "DecodePack", "decode_pack", "decode_step", "decode_workspace"]

_CPU = frozenset({torch.float32, torch.float64})
_CUDA = frozenset({torch.float32, torch.bfloat16, torch.float16})
_extension.register_op("decode_step", ("decode_pack", "decode_step"), {"cpu": _CPU, "cuda": _CUDA})


class DecodeGeometry(NamedTuple):
    """What a decode step needs to know of the model: ``kind`` 0 (EnBERT) or 1 (Enigma's decoder), ``n_layer``
    blocks of width ``d_model`` with ``n_head`` heads, feed-forward width ``ffn``, ``vocab`` logits, self-attention
    offsets clamped to ``[-(max_rel_pos-1), max_rel_pos-1]``, Enigma's cross-attention bias over
    ``[-cross_rel_pos, cross_rel_pos]`` (0: none) and position table of ``n_pos`` rows, projection ``bias`` and the
    RMSNorm ``eps``."""

    kind: int
    n_layer: int
    d_model: int
    n_head: int
    ffn: int
    vocab: int
    max_rel_pos: int
    cross_rel_pos: int
    bias: bool
    n_pos: int
    eps: float

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def enigma(self) -> bool:
        return self.kind == 1

    def ints(self) -> list[int]:
        """The ``geometry`` argument of the ops (csrc/decode/core/decode_layout.h, GeometryIndex order)."""
        return [
            self.kind,
            self.n_layer,
            self.d_model,
            self.n_head,
            self.ffn,
            self.vocab,
            self.max_rel_pos,
            self.cross_rel_pos,
            int(self.bias),
            self.n_pos,
        ]


@dataclass(frozen=True, eq=False)
class DecodePack:
    """Weights made ready for :func:`decode_step`: ``packed`` in the kernel's layout (None when the reference runs),
    ``weights`` the canonical list it was made from (kept by reference, not copied)."""

    geometry: DecodeGeometry
    weights: tuple[torch.Tensor, ...]
    packed: torch.Tensor | None
    ints: tuple[int, ...]

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype


def decode_pack(weights: Sequence[torch.Tensor], geometry: DecodeGeometry) -> DecodePack:
    """Pack a model's weights, given in the canonical order, for :func:`decode_step`.

    Order (absent biases, Enigma's absent cross bias and EnBERT's position table as empty tensors): ``tok_emb (V,
    d)``, ``pos_emb (n_pos, d)``, ``lm_head (V, d)``, ``norm_f (d,)``, then per layer ``norm1 (d,)``, ``qkv.weight
    (3d, d)``, ``qkv.bias (3d,)``, ``rel_emb (H, 2P-1, D)``, ``out.weight (d, d)``, ``out.bias (d,)``, ``norm2
    (d,)``, ``fc.weight (F, d)``, ``fc.bias (F,)``, ``proj.weight (d, F)``, ``proj.bias (d,)``, and for Enigma
    ``norm_cross (d,)``, ``cross.q.weight (d, d)``, ``cross.q.bias (d,)``, ``cross.out.weight (d, d)``,
    ``cross.out.bias (d,)``, ``cross.rel_bias (H, 2R+1)``. On the CPU every projection becomes 64-column panels
    (``W^T`` in K x 64 blocks, one contiguous stream per panel); on CUDA a flat copy of the matrices.

    Raises:
        TypeError / ValueError naming the weight (index and name), what was expected and what came.
    """
    weights = tuple(weights)
    check_decode_weights(weights, geometry)
    w0 = weights[0]
    packed = None
    if _extension.has_kernel("decode_step", w0.device.type, w0.dtype):
        packed = torch.ops.enigma_fast.decode_pack(list(weights), geometry.ints())
    return DecodePack(geometry, weights, packed, tuple(geometry.ints()))


def decode_workspace(pack: DecodePack, batch: int, max_len: int, memory_len: int = 0) -> torch.Tensor:
    """The ``work`` buffer of :func:`decode_step` for ``batch`` rows, caches of ``max_len`` positions and (Enigma)
    a memory of ``memory_len`` positions: a 1-d tensor of the pack's dtype and device (empty on the reference
    route, which needs none)."""
    n = 0
    if pack.packed is not None:
        n = _extension.EXTENSION.decode_workspace_numel(
            list(pack.ints), batch, max_len, memory_len, pack.device.type == "cuda"
        )
    return torch.empty(n, dtype=pack.dtype, device=pack.device)


def decode_step(
    pack: DecodePack,
    tok: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seqlens: torch.Tensor,
    logits: torch.Tensor,
    work: torch.Tensor,
    *,
    key_start: torch.Tensor | None = None,
    pos_offset: torch.Tensor | None = None,
    memory_k: torch.Tensor | None = None,
    memory_v: torch.Tensor | None = None,
    memory_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step of the whole stack for one new token per row; returns ``logits`` (written in place).

    For row b the token ``tok[b]`` sits at cache position ``p = seqlens[b]`` (Enigma: absolute position
    ``pos_offset[b] + p`` in its position table). Every layer writes the token's key and value into
    ``k_cache[l, b, :, p]`` / ``v_cache[l, b, :, p]`` and attends to the keys ``j`` in ``[key_start[b], p]`` with
    ``s_j = q . (k_j + rel_emb[h, clamp(j - p, -(P-1), P-1) + P-1]) / sqrt(D)``; Enigma's layers then attend to the
    memory ``j`` in ``[memory_start[b], S)`` with ``s_j = q . k_j / sqrt(D) + rel_bias[h, clamp(j - memory_start[b] -
    pos, -R, R) + R]``. The blocks are the modules' pre-norm ``h += attn(norm1(h)); [h += cross(norm_cross(h))]; h +=
    proj(gelu(fc(norm2(h))))``, then ``logits = lm_head(norm_f(h))``. Finally ``seqlens += 1``.

    Args:
        pack: from :func:`decode_pack`.
        tok: ``(B,)`` int64 token ids.
        k_cache, v_cache: ``(L, B, H, Tmax, D)`` contiguous, the pack's dtype; written at ``seqlens``.
        seqlens: ``(B,)`` int32, tokens already in each row's cache (``< Tmax``); advanced by one.
        logits: ``(B, V)`` output buffer. work: :func:`decode_workspace`'s buffer.
        key_start: ``(B,)`` first valid key of each row (left padding), or None.
        pos_offset, memory_k, memory_v, memory_start: Enigma only: ``(B,)`` position of cache slot 0, the projected
            encoder memory ``(L, B, H, S, D)`` (keys and values), ``(B,)`` first valid memory position or None.

    Raises:
        TypeError / ValueError naming the argument, before anything is written: wrong shapes, dtypes or devices,
        token ids outside ``[0, V)``, a full cache or a position outside the table (values checked on the CPU).
    """
    if pack.packed is not None:
        torch.ops.enigma_fast.decode_step(
            pack.packed,
            pack.ints,
            pack.geometry.eps,
            tok,
            k_cache,
            v_cache,
            seqlens,
            key_start,
            pos_offset,
            memory_k,
            memory_v,
            memory_start,
            logits,
            work,
        )
        return logits
    check_decode_step(
        pack.geometry,
        pack.dtype,
        pack.device,
        tok,
        k_cache,
        v_cache,
        seqlens,
        logits,
        key_start,
        pos_offset,
        memory_k,
        memory_v,
        memory_start,
    )
    out = reference.decode_step(
        pack.weights,
        pack.geometry,
        tok,
        k_cache,
        v_cache,
        seqlens,
        key_start=key_start,
        pos_offset=pos_offset,
        memory_k=memory_k,
        memory_v=memory_v,
        memory_start=memory_start,
    )
    return logits.copy_(out)


def _register() -> None:
    ext = _extension.EXTENSION

    @torch.library.register_fake("enigma_fast::decode_pack")
    def _(weights, geometry):
        torch._check(len(weights) > 0, lambda: "decode_pack: weights must not be empty")
        n = ext.decode_packed_numel(list(geometry), weights[0].device.type == "cuda")
        return weights[0].new_empty((n,))

    @torch.library.register_fake("enigma_fast::decode_step")
    def _(
        packed,
        geometry,
        eps,
        tok,
        k_cache,
        v_cache,
        seqlens,
        key_start,
        pos_offset,
        memory_k,
        memory_v,
        memory_start,
        logits,
        work,
    ):
        n = ext.decode_packed_numel(list(geometry), packed.device.type == "cuda")
        torch._check(packed.dim() == 1 and packed.shape[0] == n, lambda: f"decode_step: packed must be ({n},)")
        B = tok.shape[0]
        L, H, V = geometry[1], geometry[3], geometry[5]
        torch._check(k_cache.dim() == 5 and k_cache.shape[:3] == (L, B, H), lambda: "decode_step: bad k_cache")
        torch._check(v_cache.shape == k_cache.shape, lambda: "decode_step: v_cache must have k_cache's shape")
        torch._check(logits.shape == (B, V), lambda: f"decode_step: logits must be ({B}, {V})")
        for name, t in (("k_cache", k_cache), ("v_cache", v_cache), ("logits", logits), ("work", work)):
            msg = f"decode_step: {name} must be {packed.dtype} on {packed.device}"
            torch._check(t.dtype == packed.dtype and t.device == packed.device, lambda msg=msg: msg)
        return None


if _extension.EXTENSION is not None:
    _register()
