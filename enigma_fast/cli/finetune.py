"""``python -m enigma_fast.finetune``: fine-tune a pretrained EnBERT/Enigma on labelled sequences.

    python -m enigma_fast.finetune --model runs/tiny/final --train train.csv --valid valid.csv --test test.csv \\
        --task classification --out ft/promoters [--mode full|lora|probe]
    python -m enigma_fast.finetune --resume ft/promoters

Files: CSV/TSV with a header naming ``sequence`` and ``label`` (the GUE / Nucleotide Transformer layout), or
FASTA/FASTQ with the label in the header (``label=VALUE`` or its last word); token-classification labels are a
string of one class character per base. ``--out`` (absent or empty) becomes the fine-tuned model folder
(config.json, model.safetensors [, adapter_model.safetensors], tokenizer.json) with metrics.json (accuracy, F1,
MCC, AUROC and per-class figures; Pearson and Spearman for regression) and metrics.csv over steps. A user error is
one line on stderr and exit code 2; SIGINT/SIGTERM checkpoint and exit 128 + the signal (continue with --resume).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from enigma_fast.cli._common import (
    ArgumentParser,
    UsageError,
    add_device_argument,
    float_in,
    int_at_least,
    parse_device,
    require_path,
    run_main,
)

__all__ = ["main"]

PROG = "python -m enigma_fast.finetune"


def _parser() -> argparse.ArgumentParser:
    from enigma_fast.finetune.config import DEFAULT_LR

    p = ArgumentParser(prog=PROG, description=__doc__)
    g = p.add_argument_group("data and model")
    g.add_argument("--model", help="pretrained model folder (config.json, model.safetensors, tokenizer.json)")
    g.add_argument("--train", help="training file: CSV/TSV (sequence,label) or FASTA with labels in the headers")
    g.add_argument("--valid", help="validation file (early stopping and model choice)")
    g.add_argument("--test", default="", help="test file (optional): its metrics go to metrics.json")
    g.add_argument("--task", choices=["classification", "regression", "token-classification"])
    g.add_argument("--out", help="run folder, absent or empty; becomes the fine-tuned model folder")
    g.add_argument("--resume", metavar="OUT", help="continue the interrupted run in OUT with its saved options")
    m = p.add_argument_group("what trains")
    m.add_argument("--mode", choices=["full", "lora", "probe"], default="full", help="default: full")
    m.add_argument(
        "--pooling",
        choices=["last", "mean", "last-mean"],
        help="sequence tasks (default: EnBERT last-mean, Enigma mean)",
    )
    m.add_argument("--random-init", action="store_true", help="start from random weights of the same architecture")
    m.add_argument("--lora-r", type=int_at_least(1), default=8, help="LoRA rank (default 8)")
    m.add_argument("--lora-alpha", type=float_in(0, lo_open=True), default=16.0, help="LoRA alpha (default 16)")
    m.add_argument("--lora-dropout", type=float_in(0, 1, hi_open=True), default=0.05)
    m.add_argument("--head-dropout", type=float_in(0, 1, hi_open=True), default=0.1)
    s = p.add_argument_group("schedule")
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    s.add_argument("--lr", type=float_in(0, lo_open=True), help=f"peak learning rate (default by mode: {lrs})")
    s.add_argument("--head-lr", type=float_in(0, lo_open=True), help="the head's learning rate (default --lr)")
    s.add_argument("--weight-decay", type=float_in(0), default=0.01)
    s.add_argument("--batch-size", type=int_at_least(1), default=32)
    s.add_argument("--eval-batch-size", type=int_at_least(1), default=64)
    s.add_argument("--epochs", type=float_in(0, lo_open=True), default=3.0, help="passes over --train (default 3)")
    s.add_argument("--max-steps", type=int_at_least(0), default=0, help="at most this many steps (0: no limit)")
    s.add_argument("--time-budget", type=float_in(0), default=0.0, help="seconds the schedule is fitted to")
    s.add_argument("--max-time", type=float_in(0), default=0.0, help="stop at once after this many seconds")
    s.add_argument("--warmup", type=float_in(0, 1, hi_open=True), default=0.06, help="warmup fraction of the steps")
    s.add_argument("--eval-interval", type=int_at_least(0), default=0, help="steps between validations (0: auto)")
    s.add_argument("--patience", type=int_at_least(1), default=6, help="validations without a better metric")
    s.add_argument("--metric", help="validation metric (default mcc; regression pearson)")
    s.add_argument("--grad-clip", type=float_in(0), default=1.0)
    s.add_argument("--seed", type=int_at_least(0), default=0)
    r = p.add_argument_group("machine")
    add_device_argument(r)
    r.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: bfloat16 autocast on CUDA and on CPUs with bfloat16 matrix units (AMX/AVX512-BF16), else float32",
    )
    r.add_argument("--threads", type=int_at_least(0), default=0, help="torch threads (0: torch's default)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _config(args: argparse.Namespace):
    from enigma_fast.finetune import FinetuneConfig

    missing = [f"--{k}" for k in ("model", "train", "valid", "task", "out") if not getattr(args, k)]
    if missing:
        raise UsageError(f"{', '.join(missing)} must be given (or --resume OUT alone)")
    require_path(args.model, "--model folder", folder=True)
    for flag in ("train", "valid", "test"):
        if getattr(args, flag):
            require_path(getattr(args, flag), f"--{flag} file")
    return FinetuneConfig(
        model=args.model,
        train=args.train,
        valid=args.valid,
        test=args.test,
        task=args.task,
        mode=args.mode,
        pooling=args.pooling,
        init="random" if args.random_init else "pretrained",
        lr=args.lr,
        head_lr=args.head_lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        time_budget=args.time_budget,
        max_time=args.max_time,
        warmup=args.warmup,
        eval_interval=args.eval_interval,
        patience=args.patience,
        metric=args.metric,
        head_dropout=args.head_dropout,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        grad_clip=args.grad_clip,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
    )


def _run(args: argparse.Namespace) -> int:
    from enigma_fast.finetune import FinetuneConfig, finetune

    parse_device(args.device)
    if args.resume:
        given = [f"--{k}" for k in ("model", "train", "valid", "test", "task", "out") if getattr(args, k)]
        if given:
            raise UsageError(f"--resume continues a run with its saved options; drop {', '.join(given)}")
        res = finetune(
            FinetuneConfig(device=args.device, threads=args.threads),
            args.resume,
            resume=True,
            progress=not args.no_progress,
        )
        out = args.resume
    else:
        cfg = _config(args)
        if cfg.mode == "lora":
            from enigma_fast.finetune.lora import require_peft

            require_peft()  # before any work
        res = finetune(cfg, args.out, progress=not args.no_progress)
        out = args.out
    if "interrupted_by_signal" in res:
        return 128 + int(res["interrupted_by_signal"])
    for split in ("valid", "test"):
        if split in res:
            m = res[split]
            figures = ", ".join(
                f"{k} {m[k]:.4f}" for k in ("mcc", "accuracy", "f1", "auroc", "pearson", "spearman") if k in m
            )
            print(f"{split}: {figures}")
    print(f"model folder: {out} ({os.path.join(out, 'metrics.json')}); {res['steps']} steps in {res['train_s']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and fine-tune; returns the exit code (2 with one line on stderr for a user error)."""
    return run_main(_parser(), _run, argv, errors=(ImportError,))
