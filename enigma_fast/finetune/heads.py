"""Task heads on a pretrained EnBERT or Enigma: sequence classification / regression and per-base (token)
classification, as plain ``nn.Module``s with ``forward(input_ids, attention_mask=None, labels=None) ->
(logits, loss)``.

Backbone states ``h`` ``(B, T, d_model)``: EnBERT, the output of its final norm (causal: ``h[t]`` has read tokens
0..t); Enigma, its encoder's output (bidirectional). The decoder of Enigma and the LM heads are not used.

Padding. ``attention_mask`` ``(B, T)`` marks real tokens with 1; the real tokens of a row must be one run, padded on
the left or on the right. Right-padded rows are moved to the left inside ``forward`` (and per-token outputs moved
back), so both layouts give the same results; left-padded rows go straight to the models' ``key_start`` /
``src_start``, under which a row reads exactly as it would alone (relative attention is shift-invariant). Padding
changes no output (tested).

Pooling (sequence heads), over the real tokens of a row:

    last: z = h[last real token]          (EnBERT: the one state that has read the whole sequence)
    mean: z = (1 / n) sum_t h[t]
    logits = W dropout(z) + b             (B, num_labels)

Regression (``num_labels = 1``): ``logits * label_std + label_mean`` is the prediction in the labels' units and the
loss is ``mean(((pred - y) / label_std)^2)``, the MSE of standardised targets. Classification: cross-entropy.

Token classification: per-token logits ``(B, T, C)``; with ``base_token_index`` ``(B, L)`` (the column of each
base's token, as ``data.collate`` makes it) they are spread to bases, ``(B, L, C)``: every base of a k-mer gets its
token's logits, and ``labels`` are then per base ``(B, L)`` (``-100`` = ignore).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from enigma_fast.models.layers import run_blocks

__all__ = ["POOLINGS", "SequenceClassifier", "TokenClassifier", "align_left", "backbone_kind", "backbone_states"]

POOLINGS = ("last", "mean")


def backbone_kind(backbone: nn.Module) -> str:
    """``"enbert"`` or ``"enigma"`` (also through a peft wrapper, whose attributes reach the wrapped model)."""
    kind = getattr(getattr(backbone, "config", None), "model_type", None)
    if kind not in ("enbert", "enigma"):
        raise TypeError(f"backbone must be an EnBERT or Enigma model, got {type(backbone).__name__}")
    return kind


def backbone_states(backbone: nn.Module, input_ids: torch.Tensor, key_start: torch.Tensor | None) -> torch.Tensor:
    """Hidden states ``(B, T, d_model)`` of left-padded ids ``(B, T)`` whose row b starts at ``key_start[b]``
    (None: no padding). EnBERT: its blocks and final norm; Enigma: its encoder and encoder norm."""
    if backbone_kind(backbone) == "enbert":
        h = backbone.drop(backbone.tok_emb(input_ids))
        return run_blocks(backbone.blocks, backbone.norm_f, h, key_start=key_start)
    return backbone.encode(input_ids, key_start)


def align_left(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Move every row's real tokens to the end of the row: ``(ids, key_start, shift)``. ``ids`` ``(B, T)``;
    ``key_start`` ``(B,)`` (None when no row is padded); ``shift`` ``(B,)`` how far each row moved right (None when
    none moved), so column ``c`` of the input is column ``c + shift`` of the output. ValueError when a row's real
    tokens are not one run or a row has none."""
    if attention_mask is None:
        return input_ids, None, None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(attention_mask.shape)}"
        )
    m = attention_mask.bool()
    B, T = m.shape
    n = m.sum(1)
    cols = torch.arange(T, device=m.device)
    first = torch.where(m, cols, T).amin(1)
    last = torch.where(m, cols, -1).amax(1)
    stats = torch.stack([(n == 0).any(), ((last - first + 1) != n).any(), (last != T - 1).any(), (first != 0).any()])
    empty, holes, moved, padded = stats.tolist()
    if empty:
        raise ValueError("attention_mask: every row needs at least one real token (a 1)")
    if holes:
        raise ValueError("attention_mask: the real tokens of a row must be one run (padding on the left or right)")
    if not moved:
        return input_ids, (first if padded else None), None
    shift = (T - 1 - last).long()  # right padding: move the run to the end
    src = (cols[None, :] - shift[:, None]) % T  # output column c reads input column c - shift
    ids = torch.gather(input_ids, 1, src)
    ids = torch.where(cols[None, :] >= (T - n)[:, None], ids, torch.full_like(ids, pad_id))
    return ids, (T - n), shift


class _Head(nn.Module):
    """What both heads share: the backbone, its kind, and the left alignment of the inputs."""

    def __init__(self, backbone: nn.Module, num_labels: int, dropout: float) -> None:
        super().__init__()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be an int >= 1, got {num_labels!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.kind = backbone_kind(backbone)
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.d_model, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.frozen_backbone = False  # probe mode: backbone states under no_grad, backbone in eval mode

    def _states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        ids, key_start, shift = align_left(input_ids, attention_mask)
        if self.frozen_backbone:
            was = self.backbone.training
            self.backbone.eval()
            with torch.no_grad():
                h = backbone_states(self.backbone, ids, key_start)
            self.backbone.train(was)
        else:
            h = backbone_states(self.backbone, ids, key_start)
        return h, key_start, shift


class SequenceClassifier(_Head):
    """A backbone, a pooling of its states and a linear layer: one prediction per sequence.

    ``forward(input_ids, attention_mask=None, labels=None) -> (logits, loss)``: ids ``(B, T)``, mask ``(B, T)``
    (1 = token, padding on either side), labels ``(B,)`` class indices (int64) or values (float); logits ``(B,
    num_labels)`` (regression: ``(B, 1)`` predictions in the labels' units); loss a scalar or None. See the module
    doc for the pooling and the losses.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        *,
        pooling: str = "last",
        dropout: float = 0.1,
        regression: bool = False,
        label_mean: float = 0.0,
        label_std: float = 1.0,
    ) -> None:
        super().__init__(backbone, num_labels, dropout)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if regression and num_labels != 1:
            raise ValueError(f"regression predicts one value: num_labels must be 1, got {num_labels}")
        if not label_std > 0:
            raise ValueError(f"label_std must be > 0, got {label_std}")
        self.pooling, self.regression = pooling, regression
        self.register_buffer("label_mean", torch.tensor(float(label_mean)))
        self.register_buffer("label_std", torch.tensor(float(label_std)))

    def pool(self, h: torch.Tensor, key_start: torch.Tensor | None) -> torch.Tensor:
        """Pooled states ``(B, d_model)`` of left-aligned states ``h`` ``(B, T, d_model)`` (row b real from
        ``key_start[b]``)."""
        if self.pooling == "last":
            return h[:, -1]
        if key_start is None:
            return h.mean(1)
        T = h.shape[1]
        w = (torch.arange(T, device=h.device)[None, :] >= key_start[:, None]).to(h.dtype)  # (B, T)
        return (h * w[..., None]).sum(1) / w.sum(1, keepdim=True)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, key_start, _ = self._states(input_ids, attention_mask)
        z = self.pool(h, key_start)
        logits = self.head(self.dropout(z)).float()  # (B, C)
        loss = None
        if self.regression:
            logits = logits * self.label_std + self.label_mean
            if labels is not None:
                loss = (((logits[:, 0] - labels.float()) / self.label_std) ** 2).mean()
        elif labels is not None:
            loss = F.cross_entropy(logits, labels.long())
        return logits, loss


class TokenClassifier(_Head):
    """A backbone and a linear layer on every token: one prediction per token, or per base.

    ``forward(input_ids, attention_mask=None, labels=None, base_token_index=None) -> (logits, loss)``: ids and mask
    ``(B, T)``; without ``base_token_index`` logits are per token ``(B, T, C)`` (in the columns of the input) and
    labels ``(B, T)``; with it (``(B, L)``, the column of each base's token) logits are per base ``(B, L, C)`` and
    labels ``(B, L)``. Labels ``-100`` are ignored; the loss is the mean cross-entropy over the others.
    """

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        base_token_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, _, shift = self._states(input_ids, attention_mask)
        if shift is not None:  # back to the input's columns
            T = h.shape[1]
            src = (torch.arange(T, device=h.device)[None, :] + shift[:, None]) % T
            h = torch.gather(h, 1, src[..., None].expand_as(h))
        logits = self.head(self.dropout(h)).float()  # (B, T, C)
        if base_token_index is not None:
            if base_token_index.dim() != 2 or base_token_index.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"base_token_index must be (B, L) with B = {input_ids.shape[0]}, got "
                    f"{tuple(base_token_index.shape)}"
                )
            idx = base_token_index.long()[..., None].expand(-1, -1, logits.shape[-1])
            logits = torch.gather(logits, 1, idx)  # (B, L, C)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels must be {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(), ignore_index=-100)
        return logits, loss


def make_head(task: str, backbone: nn.Module, num_labels: int, **kw: Any) -> nn.Module:
    """The head module of ``task``: a ``SequenceClassifier`` (classification, regression) or ``TokenClassifier``."""
    if task == "token-classification":
        kw.pop("pooling", None)
        return TokenClassifier(backbone, num_labels, dropout=kw.get("dropout", 0.1))
    return SequenceClassifier(backbone, num_labels, regression=task == "regression", **kw)
