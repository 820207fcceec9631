"""The fine-tuning loop behind ``python -m enigma_fast.finetune``, read top to bottom.

    data     -> the three files read and tokenized once; classes (or the label mean and sd) from the training file
    model    -> the pretrained backbone (or the same architecture at random, ``init="random"``), a head, a mode:
                full (every backbone weight trains), lora (peft adapters + head), probe (frozen backbone + head)
    loop     -> shuffled batches (the order of epoch e is a function of (seed, e) only), AdamW (fused where there is
                one), warmup + linear decay, clipping, bfloat16 autocast when asked, validation every eval_interval
                steps, early stopping, atomic checkpoints (exact resume)
    end      -> the best validated weights, metrics of the validation and test files (metrics.json), the model
                folder (config.json, model.safetensors [, adapter_model.safetensors], tokenizer.json)

The run folder ``OUT`` must be absent or empty (or, to resume, a run of its own): nothing is ever overwritten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enigma_fast.finetune import state as ckpt
from enigma_fast.finetune.config import FinetuneConfig
from enigma_fast.finetune.data import class_names, collate, encode, read_labelled
from enigma_fast.finetune.folder import MODEL_NAMES, FinetuneSpec, build_model, lora_section, write_model_files
from enigma_fast.finetune.metrics import classification_metrics, regression_metrics
from enigma_fast.finetune.predict import autocast_factory, predict_encoded, resolve_dtype
from enigma_fast.train.loop import _Stop
from enigma_fast.train.metrics import Progress

__all__ = ["RUN_NAMES", "evaluate", "finetune"]

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
RUN_NAMES = (CONFIG_FILE, "metrics.csv", "metrics.json", "checkpoints", *MODEL_NAMES)
CALIBRATION_STEPS = 20  # time budget: the median of steps 3..20 fits the step count, re-fitted every REFIT steps
REFIT_STEPS = 50


def _lr_scale(step: int, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps to 1, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{out} is not a fine-tuning run folder ({CONFIG_FILE} is missing)")
        if (out / "metrics.json").exists():
            raise FileExistsError(f"{out} holds a finished run (metrics.json); nothing to resume")
        return
    if os.path.lexists(out) and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; fine-tuning never overwrites files")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(
            f"--out {out} is not empty; fine-tuning writes only into a new or empty folder (or resumes a run of "
            f"its own with --resume)"
        )


def _backbone(cfg: FinetuneConfig) -> tuple[torch.nn.Module, Any]:
    from enigma_fast.models import load_model

    model = load_model(cfg.model)
    if model.tokenizer is None:
        raise ValueError(f"{cfg.model} has no tokenizer.json; the fine-tuning data are tokenized with it")
    if cfg.init == "random":
        torch.manual_seed(cfg.seed)
        fresh = type(model)(model.config)
        fresh.tokenizer = model.tokenizer
        model = fresh
    return model.train(), model.tokenizer


def _used(kind: str) -> tuple[str, ...]:
    """Backbone modules the heads read (the rest, Enigma's decoder and an untied LM head, stays frozen)."""
    return ("tok_emb", "blocks", "norm_f") if kind == "enbert" else ("tok_emb", "pos_emb", "encoder", "enc_norm")


def _set_trainable(model: torch.nn.Module, mode: str, kind: str) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    if mode == "full":
        for name in _used(kind):
            for p in getattr(model.backbone, name).parameters():
                p.requires_grad_(True)
    elif mode == "lora":
        for n, p in model.backbone.named_parameters():
            p.requires_grad_(".lora_" in n)
    for p in model.head.parameters():
        p.requires_grad_(True)


def _optimizer(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    groups: dict[tuple[bool, bool], list] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((n.startswith("head."), p.dim() >= 2), []).append(p)
    param_groups = [
        {
            "params": ps,
            "lr": cfg.head_lr if head else cfg.lr,
            "base_lr": cfg.head_lr if head else cfg.lr,
            "weight_decay": cfg.weight_decay if decay else 0.0,
        }
        for (head, decay), ps in sorted(groups.items())
    ]
    try:
        return torch.optim.AdamW(param_groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(param_groups)


def evaluate(
    model: torch.nn.Module, enc: Any, task: str, classes: list[str], batch_size: int, autocast: Callable[[], Any]
) -> dict[str, Any]:
    """Metrics of ``model`` on an encoded labelled set (``metrics`` module): classification metrics over records
    or, for token tasks, over every base; regression metrics."""
    out = predict_encoded(model, enc, task, batch_size=batch_size, autocast=autocast)
    if task == "regression":
        return regression_metrics(np.asarray(enc.targets), out)
    if task == "token-classification":
        return classification_metrics(np.concatenate(enc.targets), np.concatenate(out), classes)
    return classification_metrics(np.asarray(enc.targets), out, classes)


def _device(cfg: FinetuneConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(cfg.device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {cfg.device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r}: no CUDA device is available")
    return dev


def finetune(
    cfg: FinetuneConfig | None,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.train`` into the run folder ``out`` (see the module doc); returns the
    content of ``out/metrics.json``. ``resume=True`` continues the run in ``out`` from its newest checkpoint with
    its saved options (``cfg`` None, or only its device and threads used): on the CPU in float32 the continued run
    equals the uninterrupted one, step for step. ``on_step(step, loss)`` is called after every step. Every check
    of the inputs runs before the first step; a user error is a one-line ValueError/FileNotFoundError/
    FileExistsError."""
    out = Path(out)
    _check_out(out, resume)
    if resume:
        saved = FinetuneConfig.from_dict(json.loads((out / CONFIG_FILE).read_text()))
        if cfg is not None:
            saved.device, saved.threads = cfg.device, cfg.threads
        cfg = saved
    if cfg is None:
        raise ValueError("a FinetuneConfig is needed for a new run")
    for flag, path in (("model", cfg.model), ("train", cfg.train), ("valid", cfg.valid), ("test", cfg.test)):
        if flag != "test" and not path:
            raise ValueError(f"{flag} must be given")
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"{flag}: {path} not found")
    device = _device(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()

    # ---- data and model ----
    backbone, tok = _backbone(cfg)
    kind = backbone.config.model_type
    cfg = cfg.resolved(kind)
    block = int(backbone.config.block_size)
    files = {"train": read_labelled(cfg.train), "valid": read_labelled(cfg.valid)}
    if cfg.test:
        files["test"] = read_labelled(cfg.test)
    classes = class_names(cfg.task, files["train"])
    enc = {k: encode(tok, v, task=cfg.task, classes=classes, max_tokens=block) for k, v in files.items()}
    mean, sd = 0.0, 1.0
    if cfg.task == "regression":
        y = np.asarray(enc["train"].targets, dtype=np.float64)
        mean, sd = float(y.mean()), float(y.std()) or 1.0
    spec = FinetuneSpec(
        task=cfg.task,
        labels=classes,
        pooling=cfg.pooling,
        mode=cfg.mode,
        head_dropout=cfg.head_dropout,
        label_mean=mean,
        label_std=sd,
        lora=lora_section(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) if cfg.mode == "lora" else None,
        init=cfg.init,
        base_model=str(cfg.model),
    )
    torch.manual_seed(cfg.seed + 1)  # the head's (and adapters') initial weights
    model = build_model(backbone, spec)
    _set_trainable(model, cfg.mode, kind)
    model.to(device).train()
    opt = _optimizer(model, cfg)
    n_train = len(enc["train"])
    spe = math.ceil(n_train / cfg.batch_size)  # steps per epoch
    planned = max(1, math.ceil(cfg.epochs * spe))
    if cfg.max_steps:
        planned = min(planned, cfg.max_steps)
    eval_every = cfg.eval_interval or max(10, min(200, spe // 2))
    dtype = resolve_dtype(cfg.dtype, device)
    autocast = autocast_factory(device, dtype)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())

    # ---- run folder, resume ----
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {}
    best: dict[str, torch.Tensor] = ckpt.trainable_state(model)
    if resume:
        c = ckpt.latest(out)
        if c is None:
            raise FileNotFoundError(f"{out} holds no complete checkpoint to resume from")
        state, best = ckpt.load(c, model, opt)
        if state.get("fingerprint") != {k: v.fingerprint for k, v in enc.items()}:
            raise ValueError(f"the data files of {out} changed since the run started; resume needs the same files")
    else:
        (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    step = int(state.get("step", 0))
    total = int(state.get("planned_steps", 0)) or (0 if cfg.time_budget else planned)
    best_metric = state.get("best_metric")
    best_step = int(state.get("best_step", 0))
    best_valid: dict[str, Any] | None = state.get("best_valid")
    since_best = int(state.get("since_best", 0))
    history: list[dict[str, Any]] = list(state.get("history", []))
    elapsed0 = float(state.get("elapsed_s", 0.0))
    log = ckpt.MetricsCSV(out, resume_step=step if resume else None)
    logger.info(
        "%s %s fine-tuning of %s (%s, %d of %d parameters trained) on %d training records (%s); %d classes",
        cfg.mode,
        cfg.task,
        cfg.model,
        kind,
        trainable,
        total_params,
        n_train,
        "; ".join(f"{k} {len(v)}" for k, v in enc.items()),
        len(classes),
    )
    bar = Progress(step, total or None, cfg.log_interval, enabled=progress)
    t_start = time.perf_counter()
    times: list[float] = []
    stopped, early = 0, False
    loss_sum, loss_n, seen = 0.0, 0, 0
    t_log = t_start

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - t_start

    def trainer_state() -> dict[str, Any]:
        return {
            "planned_steps": total,
            "best_metric": best_metric,
            "best_step": best_step,
            "best_valid": best_valid,
            "since_best": since_best,
            "history": history,
            "elapsed_s": elapsed(),
            "fingerprint": {k: v.fingerprint for k, v in enc.items()},
        }

    with _Stop() as stop:
        while step < (total or planned) and not early:
            scale = _lr_scale(step, max(1, round(cfg.warmup * (total or planned))), total or planned)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
            epoch, i = divmod(step, spe)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
            rows = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            batch = collate(enc["train"], rows, tok.pad_id, cfg.task).to(device)
            with autocast():
                if cfg.task == "token-classification":
                    _, loss = model(batch.input_ids, batch.attention_mask, batch.labels, batch.base_token_index)
                else:
                    _, loss = model(batch.input_ids, batch.attention_mask, batch.labels)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            lval = float(loss.detach())
            loss_sum, loss_n, seen = loss_sum + lval, loss_n + 1, seen + len(rows)
            if on_step is not None:
                on_step(step, lval)
            if cfg.time_budget:
                times.append(time.perf_counter())
                if (not total and len(times) == CALIBRATION_STEPS) or (total and len(times) > REFIT_STEPS):
                    per = (
                        float(np.median(np.diff(times[2:]))) if not total else (times[-1] - times[0]) / (len(times) - 1)
                    )
                    fitted = step + int(max(0.0, cfg.time_budget - elapsed()) / per)
                    total = max(step + 1, min(planned, fitted))
                    times = times[-1:]
                    bar.set_total(total)
            if step % cfg.log_interval == 0 or step == (total or planned):
                now = time.perf_counter()
                log.log(
                    step=step,
                    epoch=step / spe,
                    kind="train",
                    lr=opt.param_groups[0]["lr"],
                    loss=loss_sum / loss_n,
                    elapsed_s=elapsed(),
                    examples_per_s=seen / max(now - t_log, 1e-9),
                )
                loss_sum, loss_n, seen, t_log = 0.0, 0, 0, now
            bar.update(step, loss=lval, lr=opt.param_groups[0]["lr"])
            last = step == (total or planned)
            if step % eval_every == 0 or last:
                m = evaluate(model, enc["valid"], cfg.task, classes, cfg.eval_batch_size, autocast)
                model.train()
                value = m[cfg.metric]
                history.append({"step": step, cfg.metric: value})
                log.log(step=step, epoch=step / spe, kind="valid", elapsed_s=elapsed(), **_row(m))
                if best_metric is None or (not math.isnan(value) and value > best_metric):
                    best_metric, best_step, since_best, best_valid = value, step, 0, m
                    best = ckpt.trainable_state(model)
                else:
                    since_best += 1
                    early = since_best >= cfg.patience
                bar.write(f"step {step}: valid {cfg.metric} {value:.4f} (best {best_metric:.4f} at step {best_step})")
                if not last and not early:
                    ckpt.save(out, step, model, opt, best, trainer_state(), cfg.keep_last)
            if stop.signum:
                stopped = stop.signum
                break
            if cfg.max_time and elapsed() > cfg.max_time:
                logger.warning(
                    "max_time %.0f s reached at step %d: finishing with the best weights so far", cfg.max_time, step
                )
                break
    bar.close()
    if stopped:
        ckpt.save(out, step, model, opt, best, trainer_state(), cfg.keep_last)
        log.close()
        logger.warning("stopped by signal %d at step %d; continue with --resume %s", stopped, step, out)
        return {"interrupted_by_signal": stopped, "step": step}
    train_s = elapsed()

    # ---- the best weights, final metrics, the model folder ----
    ckpt.load_trainable(model, best, "the best weights")
    results: dict[str, Any] = {
        "task": cfg.task,
        "mode": cfg.mode,
        "init": cfg.init,
        "model": cfg.model,
        "kind": kind,
        "classes": classes,
        "metric": cfg.metric,
        "best_step": best_step,
        "steps": step,
        "planned_steps": total or planned,
        "early_stopped": early,
        "trainable_parameters": trainable,
        "parameters": total_params,
        "train_s": round(train_s, 2),
        "device": str(device),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "config": cfg.to_dict(),
        "history": history,
    }
    t_eval = time.perf_counter()
    # the best weights' validation figures are those measured when they were the weights (evaluation is exact)
    results["valid"] = best_valid or evaluate(model, enc["valid"], cfg.task, classes, cfg.eval_batch_size, autocast)
    if "test" in enc:
        results["test"] = evaluate(model, enc["test"], cfg.task, classes, cfg.eval_batch_size, autocast)
    results["eval_s"] = round(time.perf_counter() - t_eval, 2)
    results["total_s"] = round(time.perf_counter() - t0 + elapsed0, 2)
    log.close()
    _install(model, spec, tok, out, results)
    if "test" in results:
        t = results["test"]
        key = cfg.metric
        logger.info("test %s %.4f%s (best validation step %d of %d)", key, t[key], _acc(t), best_step, step)
    return results


def _acc(m: dict[str, Any]) -> str:
    return f", accuracy {m['accuracy']:.4f}" if "accuracy" in m else ""


def _row(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("accuracy", "mcc", "f1", "auroc", "pearson", "spearman") if k in m}


def _install(model: torch.nn.Module, spec: FinetuneSpec, tok: Any, out: Path, results: dict[str, Any]) -> None:
    """Write the model files and metrics.json into ``out`` (each written in a temporary sibling folder, then moved
    in; config.json and metrics.json last, so a folder holding them is complete). Nothing present is replaced."""
    tmp = Path(tempfile.mkdtemp(prefix=".model.tmp.", dir=out))
    try:
        write_model_files(model, spec, tok, tmp)
        (tmp / "metrics.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
        names = sorted(os.listdir(tmp), key=lambda n: (n in ("config.json", "metrics.json"), n))
        for name in names:
            if os.path.lexists(out / name):
                raise FileExistsError(f"{out / name} appeared during the run; it is left as it is")
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        shutil.rmtree(out / "checkpoints")
