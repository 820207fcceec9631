"""What a run records: ``metrics.csv``, TensorBoard events (when tensorboard is installed), ``loss.png``, and the
progress bar (tqdm when installed, else a log line every ``log_interval`` steps).

Every row of metrics.csv has the same columns; a column a row has no value for is left empty (training rows
have no validation figures and the reverse). Losses are in nats per token, ``*_bpb`` in bits per base.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "MetricsLog", "Progress", "plot_losses", "read_metrics"]

logger = logging.getLogger(__name__)

COLUMNS = ("step", "kind", "tokens", "bases", "lr", "loss", "bpb", "accuracy", "elapsed_s", "bases_per_s")


class MetricsLog:
    """Appends rows to ``run_dir/metrics.csv`` (and TensorBoard). On resume, rows after ``resume_step`` are
    dropped first, so a resumed run's file reads as if it had never stopped."""

    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        rows = read_metrics(self.path) if resume_step is not None and self.path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self._f = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=COLUMNS)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=resume_step)
            except ImportError:
                logger.info("tensorboard is not installed: no TensorBoard events (metrics.csv has everything)")

    def log(self, step: int, kind: str, **values: Any) -> None:
        """One row: ``kind`` is "train" or "val"; values keyed by COLUMNS."""
        row = {"step": step, "kind": kind, **{k: _fmt(v) for k, v in values.items()}}
        self._w.writerow(row)
        self._f.flush()
        if self.tb is not None:
            for k in ("loss", "bpb", "accuracy", "lr", "bases_per_s"):
                if values.get(k) is not None:
                    self.tb.add_scalar(f"{kind}/{k}", float(values[k]), step)

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    return v


def read_metrics(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a metrics.csv as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Progress:
    """A tqdm bar over steps on an interactive or captured stream; without tqdm, an INFO line every ``every``
    steps."""

    def __init__(self, start: int, total: int | None, every: int, enabled: bool = True) -> None:
        self.every, self.bar = every, None
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
        except ImportError:
            pass

    def update(self, step: int, **info: float) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif step % self.every == 0:
            logger.info("step %d %s", step, text)

    def set_total(self, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def write(self, msg: str) -> None:
        """Log ``msg`` without breaking the bar."""
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            logger.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_losses(
    metrics_csv: str | os.PathLike, out_png: str | os.PathLike, baseline_bpb: float | None = None, title: str = ""
) -> bool:
    """Plot training and validation bits/base against step into ``out_png``; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no loss.png")
        return False
    rows = read_metrics(metrics_csv)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, style in (("train", dict(lw=1, alpha=0.8)), ("val", dict(marker="o", lw=1.5))):
        pts = [(int(r["step"]), float(r["bpb"])) for r in rows if r["kind"] == kind and r["bpb"]]
        pts = [(s, v) for s, v in pts if math.isfinite(v)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{kind} bits/base", **style)
    if baseline_bpb is not None:
        ax.axhline(baseline_bpb, color="gray", ls="--", label=f"Markov baseline {baseline_bpb:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per base")
    lo = [float(r["bpb"]) for r in rows if r["bpb"]]
    if lo:
        ax.set_ylim(min(lo + [baseline_bpb or 9]) - 0.02, min(max(lo), 2.2) + 0.02)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return True
