"""Metrics of fine-tuned predictions, in numpy (scikit-learn is not needed; the tests check equality with it).

Classification, from true classes ``y`` ``(N,)`` and class probabilities ``p`` ``(N, C)`` (prediction = argmax):

    accuracy = mean(pred == y)
    MCC      = (c s - sum_k t_k p_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))     (Gorodkin's R_K; the
               binary phi coefficient for C = 2; 0 when a factor of the denominator is 0)
               c: correct predictions, s: N, t_k: true count of class k, p_k: predicted count of class k
    F1       = binary: F1 of the last class (the positive one); multi-class: the unweighted mean over classes
    AUROC    = binary: P(score of a positive > score of a negative), ties counting 1/2 (the Mann-Whitney U / n+ n-),
               on p[:, 1]; multi-class: the mean over classes of the one-vs-rest AUROC; NaN when a class is absent

plus per class: precision, recall, F1 and support. Regression, from true ``y`` and predicted ``v``: Pearson r,
Spearman rho (Pearson of the average ranks), MSE, MAE and R^2. Token classification: the classification metrics
over every labelled base.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "main_metric", "regression_metrics", "roc_auc"]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of ``x``, ties sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    out = np.empty(len(x), dtype=np.float64)
    out[order] = avg[group]
    return out


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` ``(N,)`` for binary ``y`` ``(N,)`` (1 positive), ties counting 1/2:
    ``(sum of the positives' ranks - n+ (n+ + 1) / 2) / (n+ n-)``. NaN when a class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = _ranks(np.asarray(score, dtype=np.float64))
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _mcc(conf: np.ndarray) -> float:
    t = conf.sum(axis=1).astype(np.float64)  # true counts
    p = conf.sum(axis=0).astype(np.float64)  # predicted counts
    c = float(np.trace(conf))
    s = float(conf.sum())
    cov_yp = c * s - float(t @ p)
    cov_pp = s * s - float(p @ p)
    cov_yy = s * s - float(t @ t)
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return cov_yp / math.sqrt(cov_yy * cov_pp)


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str] | None = None) -> dict[str, Any]:
    """Metrics of class probabilities ``prob`` ``(N, C)`` against true classes ``y`` ``(N,)`` in ``[0, C)`` (see
    the module doc): accuracy, mcc, f1, auroc, n, and ``per_class`` {name: precision, recall, f1, support}."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[0] != y.shape[0]:
        raise ValueError(f"prob must be (N, C) with N = {len(y)}, got {prob.shape}")
    C = prob.shape[1]
    names = list(classes) if classes is not None else [str(i) for i in range(C)]
    pred = prob.argmax(axis=1)
    conf = np.bincount(y * C + pred, minlength=C * C).reshape(C, C)
    per_class = {}
    f1s = []
    for k in range(C):
        tp = float(conf[k, k])
        prec = _div(tp, float(conf[:, k].sum()))
        rec = _div(tp, float(conf[k, :].sum()))
        f1 = _div(2 * prec * rec, prec + rec)
        f1s.append(f1)
        per_class[names[k]] = {"precision": prec, "recall": rec, "f1": f1, "support": int(conf[k, :].sum())}
    if C == 2:
        auroc = roc_auc(y == 1, prob[:, 1])
        f1 = f1s[1]
    else:
        aucs = [roc_auc(y == k, prob[:, k]) for k in range(C)]
        auroc = float(np.mean(aucs)) if not any(math.isnan(a) for a in aucs) else math.nan
        f1 = float(np.mean(f1s))
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else math.nan,
        "mcc": _mcc(conf),
        "f1": f1,
        "auroc": auroc,
        "per_class": per_class,
        "confusion": conf.tolist(),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den else math.nan


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Pearson r, Spearman rho, MSE, MAE and R^2 of predictions ``pred`` ``(N,)`` against ``y`` ``(N,)``."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    if y.shape != pred.shape:
        raise ValueError(f"pred must be (N,) with N = {len(y)}, got {pred.shape}")
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "n": int(len(y)),
        "pearson": _pearson(y, pred),
        "spearman": _pearson(_ranks(y), _ranks(pred)),
        "mse": float((err**2).mean()),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot else math.nan,
    }


def main_metric(task: str) -> str:
    """The validation metric that early stopping follows by default: ``mcc`` (classification tasks), ``pearson``
    (regression)."""
    return "pearson" if task == "regression" else "mcc"
