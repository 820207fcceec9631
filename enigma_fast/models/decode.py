"""The weights of a model's decode step, in the order ``enigma_fast.ops.decode_pack`` takes them.

The models own this list (which tensor is which is their knowledge); the generator's whole-step path calls
``model.decode_weights()`` and packs the result once (``enigma_fast.generation.whole_step``).
"""

from __future__ import annotations

from typing import Any

import torch

from enigma_fast import ops

__all__ = ["decode_weights"]


def decode_weights(model: Any, enigma: bool) -> tuple[list[torch.Tensor], ops.DecodeGeometry]:
    """The canonical weight list of ``enigma_fast.ops.decode_pack`` for an EnBERT or an Enigma (its decoder), and
    the geometry. The tensors are the model's parameters themselves (no copies). ``enigma``: the model is an
    Enigma (its decoder blocks, learned positions and cross-attention), else an EnBERT."""
    c = model.config
    blocks = model.decoder if enigma else model.blocks
    empty = model.tok_emb.weight.new_empty(0)

    def bias(lin: torch.nn.Linear) -> torch.Tensor:
        return lin.bias if lin.bias is not None else empty

    weights = [
        model.tok_emb.weight,
        model.pos_emb.weight if enigma else empty,
        model.lm_head.weight,
        model.norm_f.weight,
    ]
    for blk in blocks:
        a, f = blk.attn, blk.ffn
        weights += [blk.norm1.weight, a.qkv.weight, bias(a.qkv), a.rel_emb, a.out.weight, bias(a.out)]
        weights += [blk.norm2.weight, f.fc.weight, bias(f.fc), f.proj.weight, bias(f.proj)]
        if enigma:
            x = blk.cross
            rel_bias = x.rel_bias if x.rel_bias is not None else empty
            weights += [blk.norm_cross.weight, x.q.weight, bias(x.q), x.out.weight, bias(x.out), rel_bias]
    geometry = ops.DecodeGeometry(
        kind=1 if enigma else 0,
        n_layer=len(blocks),
        d_model=c.d_model,
        n_head=c.n_head,
        ffn=blocks[0].ffn.fc.out_features,
        vocab=c.vocab_size,
        max_rel_pos=c.max_rel_pos,
        cross_rel_pos=c.cross_rel_pos if enigma else 0,
        bias=bool(c.bias),
        n_pos=c.block_size if enigma else 0,
        eps=float(c.norm_eps),
    )
    return weights, geometry
