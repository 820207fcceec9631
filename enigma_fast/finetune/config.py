"""Options of a fine-tuning run: one dataclass, checked when made, saved with the run (``finetune_config.json``).

Defaults were chosen on the validation splits of the shipped genome's benchmark (docs/finetune.md); ``lr`` and
``pooling`` left as None take the defaults of the mode and of the backbone (``resolved``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from enigma_fast.finetune.data import TASKS
from enigma_fast.finetune.folder import MODES
from enigma_fast.finetune.heads import POOLINGS

__all__ = ["DEFAULT_LR", "DEFAULT_POOLING", "FinetuneConfig"]

# measured on the validation splits (docs/finetune.md, "Choices")
DEFAULT_LR = {"full": 3e-4, "lora": 2e-3, "probe": 3e-3}
DEFAULT_POOLING = {"enbert": "last", "enigma": "mean"}
DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class FinetuneConfig:
    """Every option of a run. Data: ``train``, ``valid``, ``test`` (test may be empty: no test metrics); ``model``:
    the pretrained folder. Schedule: ``epochs`` over the training file, or ``max_steps`` when > 0 (the smaller
    wins), fitted to ``time_budget`` seconds when > 0 (the step count is re-fitted from the measured step time, so
    the schedule ends within the budget); ``max_time`` > 0 stops at once when passed. Linear warmup over
    ``warmup`` (a fraction of the steps), then linear decay to 0. Validation every ``eval_interval`` steps (0: twice
    an epoch, at least every 10 and at most every 200 steps); early stopping after ``patience`` validations without
    a better ``metric`` (default: mcc, or pearson for regression); the best validated weights are the result."""

    model: str = ""
    train: str = ""
    valid: str = ""
    test: str = ""
    task: str = "classification"
    mode: str = "full"
    pooling: str | None = None
    init: str = "pretrained"
    lr: float | None = None
    head_lr: float | None = None
    weight_decay: float = 0.01
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: float = 3.0
    max_steps: int = 0
    time_budget: float = 0.0
    max_time: float = 0.0
    warmup: float = 0.06
    eval_interval: int = 0
    patience: int = 6
    metric: str | None = None
    head_dropout: float = 0.1
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    log_interval: int = 10
    keep_last: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError (one line, naming the option) for a value of the wrong type or out of range."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = str(f.type)
            if v is None and "None" in kind:
                continue
            if kind.startswith("int") and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
                raise ValueError(f"{f.name} must be an int, got {v!r}")
            if kind.startswith("float") and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise ValueError(f"{f.name} must be a number, got {v!r}")
            if kind.startswith("float") and not math.isfinite(v):
                raise ValueError(f"{f.name} must be finite, got {v!r}")
            if kind.startswith("str") and not isinstance(v, str):
                raise ValueError(f"{f.name} must be a string, got {v!r}")
        choices = {"task": TASKS, "mode": MODES, "init": ("pretrained", "random"), "dtype": DTYPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.pooling is not None and self.task == "token-classification":
            raise ValueError("pooling applies to sequence tasks, not token-classification")
        metrics = ("pearson", "spearman") if self.task == "regression" else ("mcc", "accuracy", "f1", "auroc")
        if self.metric is not None and self.metric not in metrics:
            raise ValueError(f"metric for {self.task} must be one of {', '.join(metrics)}, got {self.metric!r}")
        positive = ("batch_size", "eval_batch_size", "patience", "lora_r", "log_interval", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_interval", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "head_lr", "lora_alpha", "epochs"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        for name in ("weight_decay", "time_budget", "max_time", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("warmup", "head_dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def resolved(self, kind: str) -> FinetuneConfig:
        """A copy with ``lr``, ``head_lr``, ``pooling`` and ``metric`` filled in for a backbone of ``kind``."""
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.mode]
        pooling = self.pooling
        if pooling is None and self.task != "token-classification":
            pooling = DEFAULT_POOLING[kind]
        return dataclasses.replace(
            self,
            lr=lr,
            head_lr=self.head_lr if self.head_lr is not None else lr,
            pooling=pooling,
            metric=self.metric or ("pearson" if self.task == "regression" else "mcc"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> FinetuneConfig:
        """The config of a parsed finetune_config.json; ValueError for unknown or bad fields."""
        if not isinstance(d, dict):
            raise ValueError(f"a fine-tuning config must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fine-tuning options: {', '.join(sorted(unknown))}")
        return cls(**d)
