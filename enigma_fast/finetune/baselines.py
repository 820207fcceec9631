"""Baselines the fine-tuned models are compared with, on the same files: a k-mer spectrum with logistic regression
(scikit-learn) and a small CNN trained from scratch (the kind GUE and the Nucleotide Transformer benchmark report).

k-mer logistic regression. A sequence's features are the frequencies of every k-mer over A/C/G/T for k = 1..``kmax``
(4 + 16 + ... + 4^kmax columns; k-mer counts divided by the number of k-mers of each k), scaled to unit variance;
``LogisticRegression`` (lbfgs, multinomial) with the inverse regularisation ``C`` chosen on the validation file
from ``C_GRID``. Token tasks: each base gets the k-mer frequencies of the ``context`` bases centred on it (clipped
at the sequence ends), and the model is fitted on ``max_train_bases`` bases drawn at random from the training file.

CNN. One-hot bases (A, C, G, T, other) -> four blocks ``conv(k=9, dilation d) -> BatchNorm -> ReLU -> dropout`` of
``channels`` channels, d = 1, 2, 4, 8 (a receptive field of 121 bases, same-length outputs), then: sequence tasks,
the states of every position flattened into one linear layer (the position of a pattern in the window can count,
as it must for the reading frame); token tasks, a 1x1 convolution per base. AdamW, validation every half epoch,
early stopping, the best validated weights; the same budget rules as fine-tuning.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enigma_fast.finetune.data import LabelledData, class_names, label_indices
from enigma_fast.finetune.metrics import classification_metrics, regression_metrics

__all__ = ["C_GRID", "SmallCNN", "kmer_features", "kmer_logistic", "one_hot", "train_cnn"]

logger = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0)
_CODE = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
    _CODE[ord(chr(_b).lower())] = _i


def _codes(seq: str) -> np.ndarray:
    return _CODE[np.frombuffer(seq.encode("latin-1"), dtype=np.uint8)]


def _kmer_ids(codes: np.ndarray, k: int) -> np.ndarray:
    """``(L - k + 1,)`` id of the k-mer starting at each position (base-4 number), -1 where it holds a non-ACGT."""
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    ids = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for j in range(k):
        c = codes[j : j + n]
        ids = ids * 4 + np.minimum(c, 3)
        bad |= c > 3
    ids[bad] = -1
    return ids


def kmer_features(seqs: list[str], kmax: int = 6) -> np.ndarray:
    """``(N, sum_k 4^k)`` float32 k-mer frequencies of each sequence, k = 1..kmax (see the module doc)."""
    width = sum(4**k for k in range(1, kmax + 1))
    out = np.zeros((len(seqs), width), dtype=np.float32)
    for i, s in enumerate(seqs):
        codes = _codes(s)
        off = 0
        for k in range(1, kmax + 1):
            ids = _kmer_ids(codes, k)
            ids = ids[ids >= 0]
            if len(ids):
                out[i, off : off + 4**k] = np.bincount(ids, minlength=4**k) / len(ids)
            off += 4**k
    return out


def _base_features(seq: str, kmax: int, context: int, rows: np.ndarray | None = None) -> Any:
    """Sparse CSR ``(len(rows), sum_k 4^k)``: per base (``rows``, default all) the k-mer frequencies of the
    ``context`` bases centred on it."""
    from scipy import sparse

    codes = _codes(seq)
    L = len(codes)
    rows = np.arange(L) if rows is None else rows
    lo = np.clip(rows - context // 2, 0, L)
    hi = np.clip(rows - context // 2 + context, 0, L)
    blocks, off = [], 0
    for k in range(1, kmax + 1):
        ids = _kmer_ids(codes, k)
        n = len(ids)
        width = max(1, context - k + 1)
        starts = np.clip(lo, 0, max(n, 0))
        ends = np.clip(hi - k + 1, 0, max(n, 0))
        cols = starts[:, None] + np.arange(width)[None, :]  # (R, width) k-mer starts in each window
        valid = cols < ends[:, None]
        got = np.where(valid, ids[np.minimum(cols, max(n - 1, 0))] if n else -1, -1)
        keep = got >= 0
        r_idx = np.broadcast_to(np.arange(len(rows))[:, None], got.shape)[keep]
        count = np.maximum(keep.sum(1), 1)
        data = (1.0 / count)[r_idx]
        blocks.append(sparse.csr_matrix((data, (r_idx, got[keep])), shape=(len(rows), 4**k), dtype=np.float32))
        off += 4**k
    return sparse.hstack(blocks, format="csr")


def kmer_logistic(
    train: LabelledData,
    valid: LabelledData,
    test: LabelledData | None,
    task: str,
    *,
    kmax: int = 6,
    context: int = 100,
    max_train_bases: int = 40000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the k-mer logistic regression of the module doc on ``train``, choose ``C`` on ``valid``; returns
    ``{"valid": metrics, "test": metrics, "C": ..., "fit_s": ...}``. Needs scikit-learn (and scipy)."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ImportError("the k-mer baseline needs scikit-learn: pip install 'enigma_fast[finetune]'") from None
    if task == "regression":
        raise ValueError("the k-mer logistic regression baseline is for classification tasks")
    t0 = time.perf_counter()
    classes = class_names(task, train)
    sets = {"train": train, "valid": valid, **({"test": test} if test is not None else {})}
    ys = {k: label_indices(task, v, classes) for k, v in sets.items()}
    rng = np.random.default_rng(seed)
    if task == "token-classification":
        from scipy import sparse

        total = sum(len(s) for s in train.seqs)
        take = min(max_train_bases, total)
        pick = np.sort(rng.choice(total, size=take, replace=False))
        offsets = np.r_[0, np.cumsum([len(s) for s in train.seqs])]
        X_parts, y_parts = [], []
        for i, s in enumerate(train.seqs):
            rows = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
            if len(rows):
                X_parts.append(_base_features(s, kmax, context, rows))
                y_parts.append(ys["train"][i][rows])
        X = sparse.vstack(X_parts, format="csr")
        y = np.concatenate(y_parts)
        scaler = StandardScaler(with_mean=False).fit(X)

        def features(split: str) -> list[Any]:
            return [scaler.transform(_base_features(s, kmax, context)) for s in sets[split].seqs]

        def evaluate(clf: Any, split: str, feats: list[Any]) -> dict[str, Any]:
            prob = np.concatenate([clf.predict_proba(f) for f in feats])
            return classification_metrics(np.concatenate(ys[split]), prob, classes)

    else:
        X = kmer_features(train.seqs, kmax)
        y = np.asarray(ys["train"])
        scaler = StandardScaler().fit(X)

        def features(split: str) -> Any:
            return scaler.transform(kmer_features(sets[split].seqs, kmax))

        def evaluate(clf: Any, split: str, feats: Any) -> dict[str, Any]:
            return classification_metrics(np.asarray(ys[split]), clf.predict_proba(feats), classes)

    Xs = scaler.transform(X)
    valid_feats = features("valid")
    best = None
    for C in C_GRID:
        clf = LogisticRegression(C=C, max_iter=500, random_state=seed).fit(Xs, y)
        m = evaluate(clf, "valid", valid_feats)
        logger.info("k-mer logistic regression C=%g: valid mcc %.4f", C, m["mcc"])
        if best is None or m["mcc"] > best[1]["mcc"]:
            best = (C, m, clf)
    C, valid_m, clf = best
    out = {"C": C, "kmax": kmax, "valid": valid_m, "train_records": len(train)}
    if test is not None:
        out["test"] = evaluate(clf, "test", features("test"))
    out["fit_s"] = round(time.perf_counter() - t0, 2)
    return out


# ----------------------------------------------------------------------------------------------------------------
# CNN
# ----------------------------------------------------------------------------------------------------------------
def one_hot(seqs: list[str], length: int) -> torch.Tensor:
    """``(N, length)`` int64 base codes (A, C, G, T = 0..3, other 4), right-padded with 5 (no base)."""
    out = np.full((len(seqs), length), 5, dtype=np.int64)
    for i, s in enumerate(seqs):
        c = _codes(s[:length])
        out[i, : len(c)] = c
    return torch.from_numpy(out)


class SmallCNN(nn.Module):
    """The CNN of the module doc. ``forward(codes)``: codes ``(B, L)`` (``one_hot``) -> logits ``(B, C)``
    (sequence tasks, ``length`` = L fixed) or ``(B, L, C)`` (token tasks)."""

    def __init__(
        self, num_labels: int, length: int, token: bool, channels: int = 64, kernel: int = 9, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.token = token
        layers: list[nn.Module] = []
        c_in = 5
        for d in (1, 2, 4, 8):
            layers += [
                nn.Conv1d(c_in, channels, kernel, padding=d * (kernel // 2), dilation=d),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            c_in = channels
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv1d(channels, num_labels, 1) if token else nn.Linear(channels * length, num_labels)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = F.one_hot(codes, 6)[..., :5].transpose(1, 2).float()  # (B, 5, L); code 5 (padding) is all zeros
        h = self.body(x)
        if self.token:
            return self.out(h).transpose(1, 2)
        return self.out(h.flatten(1))


def train_cnn(
    train: LabelledData,
    valid: LabelledData,
    test: LabelledData | None,
    task: str,
    *,
    batch_size: int = 64,
    lr: float = 1e-3,
    epochs: float = 10.0,
    time_budget: float = 0.0,
    patience: int = 6,
    seed: int = 0,
    channels: int = 64,
) -> dict[str, Any]:
    """Train ``SmallCNN`` on ``train`` with early stopping on ``valid`` (mcc; regression: pearson); returns
    ``{"valid": metrics, "test": metrics, "steps": ..., "train_s": ...}``."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    classes = class_names(task, train)
    token = task == "token-classification"
    length = max(len(s) for s in train.seqs)
    sets = {"train": train, "valid": valid, **({"test": test} if test is not None else {})}
    X = {k: one_hot(v.seqs, length if not token else max(len(s) for s in v.seqs)) for k, v in sets.items()}
    Y: dict[str, torch.Tensor] = {}
    for k, v in sets.items():
        y = label_indices(task, v, classes)
        if token:
            t = torch.full(X[k].shape, -100, dtype=torch.int64)
            for i, a in enumerate(y):
                t[i, : len(a)] = torch.from_numpy(a)
            Y[k] = t
        else:
            Y[k] = torch.tensor(y, dtype=torch.float32 if task == "regression" else torch.int64)
    C = 1 if task == "regression" else len(classes)
    model = SmallCNN(C, length, token, channels=channels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    n = len(train)
    spe = math.ceil(n / batch_size)
    total = max(1, math.ceil(epochs * spe))
    every = max(10, spe // 2)
    metric = "pearson" if task == "regression" else "mcc"

    def run(split: str) -> dict[str, Any]:
        model.eval()
        with torch.inference_mode():
            outs = [model(X[split][i : i + 256]) for i in range(0, len(X[split]), 256)]
        model.train()
        out = torch.cat(outs).float()
        if task == "regression":
            return regression_metrics(Y[split].numpy(), out[:, 0].numpy())
        prob = torch.softmax(out, -1)
        if token:
            keep = Y[split] >= 0
            return classification_metrics(Y[split][keep].numpy(), prob[keep].numpy(), classes)
        return classification_metrics(Y[split].numpy(), prob.numpy(), classes)

    best, best_state, since, step, times = None, None, 0, 0, []
    model.train()
    while step < total:
        epoch, i = divmod(step, spe)
        rows = torch.from_numpy(
            np.random.default_rng([seed, epoch]).permutation(n)[i * batch_size : (i + 1) * batch_size]
        )
        logits = model(X["train"][rows])
        y = Y["train"][rows]
        if task == "regression":
            loss = F.mse_loss(logits[:, 0], y)
        else:
            loss = F.cross_entropy(logits.reshape(-1, C), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        times.append(time.perf_counter())
        if time_budget and len(times) == 20:
            per = float(np.median(np.diff(times[2:])))
            total = min(total, step + int(max(0.0, time_budget - (time.perf_counter() - t0)) / per))
        if step % every == 0 or step == total:
            m = run("valid")
            if best is None or m[metric] > best[metric]:
                best, since = m, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since += 1
                if since >= patience:
                    break
    model.load_state_dict(best_state)
    out = {"valid": run("valid"), "steps": step, "parameters": sum(p.numel() for p in model.parameters())}
    if test is not None:
        out["test"] = run("test")
    out["train_s"] = round(time.perf_counter() - t0, 2)
    return out
