"""Training configuration: one dataclass, named recipes (presets), TOML/JSON files and command-line flags.

Precedence, lowest first: the dataclass defaults, the preset (``--preset``, default ``tiny``), a config file
(``--config run.toml`` or ``.json``, whose keys are the field names), then flags (``--lr 1e-3``). The resolved
config is written to ``RUN/train_config.json`` when a run starts and never rewritten; ``--resume`` continues with
the options of the run's last checkpoint (where options changed on an earlier resume are recorded) and its flags.
Every field is type-checked: a wrong type or value is a ValueError naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from enigma_fast.data.fim import FIM_MODES

__all__ = ["PRESETS", "TrainConfig", "load_config_file"]


@dataclass
class TrainConfig:
    """Everything a run needs. Windows and batches count tokens; loss is reported per base."""

    # data
    data: list[str] = field(default_factory=list)  # FASTA/FASTQ files or one prepared token folder; [] = shipped genome
    tokenizer: str = "char"  # "char", "kmer" (all 4^k k-mers, stride k) or a tokenizer.json path
    k: int = 3  # k of the "kmer" tokenizer
    case: str = "upper"  # soft-masked bases: "upper" (fold) or "keep"
    n_policy: str = "split"  # N runs: "split" (cut out) or "keep" (tokens)
    val_fraction: float = 0.1
    split: str = "position"  # "position" (tail of each record) or "record" (whole records)
    rc_augment: float = 0.0  # probability of reverse-complementing a training window
    # model
    model: str = "enbert"  # "enbert" or "enigma"
    model_preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    window: int = 256  # tokens per training window (EnBERT: inputs; Enigma: source + target)
    src_len: int = 0  # Enigma source tokens per window; 0 = half the window
    # "continuation": EnBERT next token, Enigma prefix -> rest; "span": Enigma span corruption (train/span.py);
    # "fim": EnBERT fill-in-the-middle (train/fim.py)
    objective: str = "continuation"
    noise_density: float = 0.15  # span objective: fraction of each window's tokens masked
    mean_span: float = 3.0  # span objective: mean length of a masked span (tokens)
    # span objective: a mixture of denoisers, one drawn per step, e.g. "0.15:3,0.5:1.5,continuation"
    # (noise_density:mean_span, or the continuation task); "" = noise_density and mean_span alone
    span_mix: str = ""
    fim_rate: float = 0.5  # fim objective: fraction of windows reordered (fill-in-the-middle rows)
    fim_mode: str = "psm"  # fim objective: row order, "psm" (prefix-suffix-middle) or "spm" (suffix-prefix-middle)
    # span/fim objectives: an EnBERT model folder scored on the same held-out spans (left context only) at the end
    compare_enbert: str = ""
    init_from: str = ""  # a model folder whose weights start the run (its config must equal the run's)
    # optimisation
    batch_size: int = 16  # windows per micro-batch per process
    grad_accum: int = 1
    max_steps: int = 2000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_windows: int = 64  # held-out windows scored at each periodic eval (the final eval scores all)
    eval_stride: int = 0  # 0 = three quarters of the window (each scored token sees >= window/4 of context)
    codon_eval: bool = True  # at the end: bits by codon position in held-out genes (needs pyrodigal; train/codon_eval)
    log_interval: int = 10
    ckpt_interval: int = 500
    keep_last: int = 2
    max_time: float = 0.0  # seconds; stop (with a checkpoint) once exceeded; 0 = no limit
    time_budget: float = 0.0  # seconds of training steps: the step count is fitted to it (see loop); 0 = off
    # runtime
    device: str = "auto"  # "auto" = cuda when available
    dtype: str = "auto"  # "auto" (bfloat16 autocast on CUDA, float32 on CPU), "float32", "bfloat16"
    compile: bool = False
    strategy: str = "ddp"  # several processes: "ddp" (replicated model) or "fsdp" (FSDP2 sharding, see distributed)
    cpu_offload: bool = False  # fsdp on CUDA: sharded parameters, gradients and optimizer state in host memory
    activation_checkpointing: bool = False  # recompute each block's activations in the backward
    seed: int = 0
    threads: int = 0  # CPU threads per process; 0 = cores / local processes
    out: str = ""  # run folder; "" = runs/<preset>-<timestamp>
    sample_tokens: int = 200  # length of the continuation sampled at the end; 0 = none
    sample_prompt: int = 64  # prompt tokens taken from the held-out part
    preset: str = "tiny"

    def __post_init__(self) -> None:
        self._check_types()
        checks = [
            ("objective", self.objective in ("continuation", "span", "fim"), "'continuation', 'span' or 'fim'"),
            (
                "objective",
                self.objective != "span" or self.model == "enigma",
                "'continuation' or 'fim' for --model enbert (span corruption needs the encoder-decoder)",
            ),
            (
                "objective",
                self.objective != "fim" or self.model == "enbert",
                "'continuation' or 'span' for --model enigma (fill-in-the-middle is for the decoder-only EnBERT)",
            ),
            ("fim_rate", 0.0 < self.fim_rate <= 1.0, "in (0, 1]"),
            ("fim_mode", self.fim_mode in FIM_MODES, "'psm' or 'spm'"),
            ("window", self.objective != "fim" or self.window >= 4, ">= 4 for the fim objective"),
            ("span_mix", not self.span_mix or self.objective == "span", "empty unless objective is 'span'"),
            ("noise_density", 0.0 < self.noise_density < 1.0, "in (0, 1)"),
            ("mean_span", self.mean_span >= 1.0, ">= 1"),
            (
                "tokenizer",
                self.tokenizer in ("char", "kmer") or self.tokenizer.endswith(".json") or Path(self.tokenizer).is_dir(),
                "'char', 'kmer' or a tokenizer.json path",
            ),
            ("case", self.case in ("upper", "keep"), "'upper' or 'keep'"),
            ("n_policy", self.n_policy in ("split", "keep"), "'split' or 'keep'"),
            ("split", self.split in ("position", "record"), "'position' or 'record'"),
            ("model", self.model in ("enbert", "enigma"), "'enbert' or 'enigma'"),
            ("dtype", self.dtype in ("auto", "float32", "bfloat16"), "'auto', 'float32' or 'bfloat16'"),
            ("strategy", self.strategy in ("ddp", "fsdp"), "'ddp' or 'fsdp'"),
            ("cpu_offload", not self.cpu_offload or self.strategy == "fsdp", "false unless strategy is 'fsdp'"),
            ("val_fraction", 0.0 < self.val_fraction < 1.0, "in (0, 1)"),
            ("rc_augment", 0.0 <= self.rc_augment <= 1.0, "in [0, 1]"),
            ("window", self.window >= 2, ">= 2"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("grad_accum", self.grad_accum >= 1, ">= 1"),
            ("max_steps", self.max_steps >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("min_lr", 0 <= self.min_lr <= self.lr, "in [0, lr]"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("grad_clip", self.grad_clip >= 0, ">= 0"),
            ("k", 1 <= self.k <= 8, "in [1, 8]"),
            ("eval_interval", self.eval_interval >= 0, ">= 0 (0 = only at the end)"),
            ("log_interval", self.log_interval >= 1, ">= 1"),
            ("ckpt_interval", self.ckpt_interval >= 0, ">= 0 (0 = only at the end)"),
            ("keep_last", self.keep_last >= 1, ">= 1"),
            ("time_budget", self.time_budget >= 0, ">= 0"),
            (
                "warmup_steps",
                self.time_budget == 0 or self.warmup_steps >= 50,
                ">= 50 with a time_budget (the step time is measured during warmup)",
            ),
            ("src_len", self.src_len == 0 or 0 < self.src_len < self.window, f"0 or in (0, window={self.window})"),
            ("max_time", self.max_time >= 0, ">= 0 (0 = no limit)"),
            ("eval_windows", self.eval_windows >= 1, ">= 1"),
            ("eval_stride", self.eval_stride >= 0, ">= 0 (0 = three quarters of the window)"),
            ("threads", self.threads >= 0, ">= 0 (0 = cores / local processes)"),
            ("sample_tokens", self.sample_tokens >= 0, ">= 0"),
            ("sample_prompt", self.sample_prompt >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    def _check_types(self) -> None:
        """ValueError for a field of the wrong type (from a config file or a saved run: ``"3"`` is not 3, ``"false"``
        not false); an integer where a float is expected becomes that float."""
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "float" and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
                setattr(self, f.name, v)
            ok, expected = {
                "int": (isinstance(v, int) and not isinstance(v, bool), "an integer"),
                "float": (isinstance(v, float) and math.isfinite(v), "a finite number"),
                "str": (isinstance(v, str), "a string"),
                "bool": (isinstance(v, bool), "true or false"),
                "list[str]": (isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of paths"),
                "dict[str, Any]": (isinstance(v, dict) and all(isinstance(k, str) for k in v), "a table of options"),
            }[f.type]
            if not ok:
                raise ValueError(f"{f.name} must be {expected}, got {v!r}")

    @property
    def enigma_src_len(self) -> int:
        return self.src_len or self.window // 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def resolve(
        cls, preset: str | None = None, file_values: dict[str, Any] | None = None, flags: dict[str, Any] | None = None
    ) -> TrainConfig:
        """Defaults < preset < file < flags (see the module doc). Unknown preset or key: ValueError."""
        file_values, flags = dict(file_values or {}), dict(flags or {})
        name = flags.get("preset") or file_values.get("preset") or preset or "tiny"
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        merged: dict[str, Any] = {**PRESETS[name], **file_values, **flags, "preset": name}
        return cls.from_dict(merged)


# The 10-minute schedule of the tiny EnBERT on a 2-core CPU: windows of 128 tokens, 16 a step, a cosine schedule
# fitted to a 480 s budget (docs/training.md).
_TINY_SCHEDULE: dict[str, Any] = dict(
    model="enbert",
    model_preset="tiny",
    window=128,
    batch_size=16,
    lr=2e-3,
    min_lr=2e-4,
    warmup_steps=100,
    time_budget=480.0,
    max_time=570.0,
    max_steps=50_000,
)

# Named recipes. "tiny" is the zero-config default: the tiny EnBERT on the shipped genome within ~10 minutes
# on a 2-core CPU.
PRESETS: dict[str, dict[str, Any]] = {
    # non-overlapping 3-mers: three times the sequence per step (docs/training.md, recipe search)
    "tiny": dict(_TINY_SCHEDULE, tokenizer="kmer", k=3),
    # the zero-config run of earlier versions: one base per token (1.9069 held-out bits/base in 480 s on a Xeon)
    "tiny-char": dict(_TINY_SCHEDULE, tokenizer="char"),
    "tiny-kmer": dict(model="enbert", model_preset="tiny", tokenizer="kmer", k=3, window=128),
    "enigma-tiny": dict(model="enigma", model_preset="tiny", window=256, lr=2e-3, min_lr=2e-4),
    "47m": dict(
        model="enbert",
        model_preset="47m",
        window=1024,
        batch_size=8,
        grad_accum=4,
        lr=6e-4,
        min_lr=6e-5,
        warmup_steps=1000,
        max_steps=50000,
        eval_interval=1000,
        ckpt_interval=2000,
    ),
    "seed": dict(
        model="enigma",
        model_preset="seed",
        window=512,
        batch_size=8,
        grad_accum=4,
        lr=6e-4,
        min_lr=6e-5,
        warmup_steps=1000,
        max_steps=50000,
        eval_interval=1000,
        ckpt_interval=2000,
    ),
}


def load_config_file(path: str) -> dict[str, Any]:
    """Keys and values of a TOML (``.toml``) or JSON file; a ``[train]`` table is used when present."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = p.read_text()
        d = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except ValueError as err:  # TOML/JSON syntax, or not UTF-8
        kind = "TOML" if p.suffix == ".toml" else "JSON"
        raise ValueError(f"config file {path} is not valid {kind}: {err}") from None
    if not isinstance(d, dict) or not isinstance(d.get("train", d), dict):
        raise ValueError(f"config file {path} must hold a table/object of options")
    return dict(d.get("train", d))


def add_flags(p: argparse.ArgumentParser) -> None:
    """One ``--flag`` per field (defaults suppressed, so only given flags override the preset and file)."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name]
        if f.name == "data":
            continue  # positional
        if f.name == "model_overrides":
            p.add_argument(
                "--model-override",
                dest="model_overrides",
                action="append",
                metavar="KEY=VALUE",
                default=argparse.SUPPRESS,
                help="model config field, e.g. d_model=256 (repeatable)",
            )
            continue
        if f.type == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
            continue
        kind = {"int": int, "float": float, "str": str}[f.type]
        shown = default.default if default.default is not dataclasses.MISSING else None
        p.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=f"default: {shown!r}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["d_model=256", "dropout=0.1"]`` -> ``{"d_model": 256, "dropout": 0.1}`` (values parsed as JSON when
    they can be)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key.strip() or not sep:
            raise ValueError(f"--model-override must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
