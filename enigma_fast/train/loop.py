"""The training loop behind ``python -m enigma_fast.train``, read top to bottom.

    data   -> token store (memory-mapped), split, random windows per step (a function of seed and step)
    model  -> EnBERT or Enigma from a preset, AdamW (fused where available), warmup + cosine LR
    loop   -> grad accumulation, clipping, bf16 autocast on GPU, periodic eval, atomic checkpoints
    end    -> held-out bits/base next to the Markov baseline, final model folder, loss.png, a sampled continuation

Under ``torchrun`` every rank draws the same global batch and trains on its own rows (rank r, micro-step m:
rows ``(m * world + r) * batch_size`` onward); DistributedDataParallel or FSDP2 (``--strategy``, see
``distributed``) averages the gradients, so N processes follow the same trajectory as one process with the same
global batch. Rank 0 alone logs and writes; under FSDP2 every rank scores its share of each evaluation's batches
(``eval_share``: the figures are those of one process) and writes its own shards of each checkpoint
(``sharded_ckpt``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from enigma_fast.data.fim import fim_markers
from enigma_fast.data.windows import WindowSampler, eval_windows
from enigma_fast.train import codon_eval
from enigma_fast.train import data as tdata
from enigma_fast.train.baseline import markov_baseline
from enigma_fast.train.config import TrainConfig
from enigma_fast.train.distributed import Parallel, init_single_process_group
from enigma_fast.train.eval_share import EvalShare
from enigma_fast.train.evaluate import evaluate, forward_loss, sample_continuation
from enigma_fast.train.fim import FimObjective, fim_loss, fim_span_score
from enigma_fast.train.metrics import MetricsLog, Progress, plot_losses
from enigma_fast.train.sharded_ckpt import is_sharded, load_sharded_checkpoint, save_sharded_checkpoint
from enigma_fast.train.span import SpanEval, SpanObjective, check_span_fit, parse_span_mix, span_loss, span_summary
from enigma_fast.train.state import latest_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["lr_at", "train"]

logger = logging.getLogger(__name__)


CALIBRATION_STEPS = 50  # with a time_budget: the median time of steps 3..50 (within the warmup) fits the count
REFIT_STEPS = 100  # ... and the median of the last 100 steps re-fits it every 100 steps


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr`` at ``total_steps``
    (default ``max_steps``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, (total_steps or cfg.max_steps) - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t))


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _on_main(dd: _Dist, fn: Callable[[], Any]) -> Any:
    """``fn()`` run on rank 0 alone, its result shared with every rank (``broadcast_object_list``).

    A user error there (``OSError``, ``ValueError``: a run folder that exists, an unreadable input) is raised on every
    rank, the same type and message, so that no rank is left waiting for rank 0 at a collective; on the other ranks
    it carries ``peer_error = True`` (the command line then prints the one line on rank 0 only)."""
    box: list[Any] = [None, None]
    if dd.main:
        try:
            box[0] = fn()
        except (OSError, ValueError) as err:
            if not dd.enabled:
                raise
            box[1] = (type(err), str(err))
            failure = err
    if dd.enabled:
        dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        if dd.main:
            raise failure
        cls, message = box[1]
        try:
            err = cls(message)
        except Exception:  # an error type that cannot be rebuilt from its message
            err = ValueError(message)
        err.peer_error = True
        raise err
    return box[0]


def _init_distributed(device_type: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return _Dist(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def _device(cfg: TrainConfig) -> str:
    """The device of the run: ``cfg.device``, or cuda when available for "auto"; ValueError for a device that
    does not parse or is not there."""
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(cfg.device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {cfg.device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} asked for, but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    return cfg.device


# what a run writes into its folder (besides .tmp siblings); a fresh run never replaces any of them it did not write
RUN_NAMES = (
    "train_config.json",
    "metrics.csv",
    "summary.json",
    "loss.png",
    "tensorboard",
    "data",
    "checkpoints",
    "final",
)


def _is_own_config(path: Path) -> bool:
    """True when ``path`` is a train_config.json written by a run (a JSON object of TrainConfig fields)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "preset" in d and set(d) <= set(TrainConfig.__dataclass_fields__)


def _new_run_dir(cfg: TrainConfig, run_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a fresh run: ``run_dir``, ``cfg.out``, or a new ``runs/<preset>-<time>``.

    An existing folder is used only when it holds no run (no checkpoints, no final model) and none of the names a
    run writes (``RUN_NAMES``) -- unless it holds the train_config.json of a run that stopped before its first
    checkpoint, whose files are then replaced (its token store only when it is one, see ``prepare_tokens``).
    FileExistsError otherwise; other files in the folder are never touched.
    """
    if run_dir is not None or cfg.out:
        path = Path(run_dir if run_dir is not None else cfg.out)
        if os.path.lexists(path) and not path.is_dir():
            raise FileExistsError(f"run folder {path} exists and is not a folder; use another --out")
        if (path / "checkpoints").exists() or (path / "final").exists():
            raise FileExistsError(f"run folder {path} already holds a run; use --resume {path} or another --out")
        present = [n for n in RUN_NAMES if os.path.lexists(path / n)]
        if present and not _is_own_config(path / "train_config.json"):
            raise FileExistsError(
                f"run folder {path} already holds {', '.join(present)}, not written by a run of "
                "enigma_fast; a run never replaces files it did not write: use another --out"
            )
        return path
    base = Path("runs") / f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _check_overrides(cls: type, overrides: dict[str, Any]) -> None:
    """ValueError for a model override whose value is not of its field's type (``"false"`` is not ``false``)."""
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    for key, value in overrides.items():
        kind = kinds.get(key)
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            "bool": isinstance(value, bool),
        }.get(kind, True)  # unknown fields: from_preset names them
        if not ok:
            raise ValueError(f"model override {key} must be {_KINDS[kind]}, got {value!r}")


def _model_config(cfg: TrainConfig, vocab_size: int, bos_id: int) -> Any:
    """The model config of the run (also called before any data work, to fail early on a bad preset)."""
    from enigma_fast.models import EnBERTConfig, EnigmaConfig

    cls = EnBERTConfig if cfg.model == "enbert" else EnigmaConfig
    _check_overrides(cls, cfg.model_overrides)
    if cfg.model == "enbert":
        # infilling reads both flanks (generation/fim.py) in the row order the model was trained on
        fim = {"fim": True, "fim_spm": cfg.fim_mode == "spm"} if cfg.objective == "fim" else {}
        mcfg = EnBERTConfig.from_preset(cfg.model_preset, vocab_size=vocab_size, **{**cfg.model_overrides, **fim})
    else:
        mcfg = EnigmaConfig.from_preset(cfg.model_preset, vocab_size=vocab_size, bos_id=bos_id, **cfg.model_overrides)
    if cfg.window > mcfg.block_size:
        raise ValueError(f"window {cfg.window} exceeds the model's block_size {mcfg.block_size}")
    return mcfg


def _build_model(cfg: TrainConfig, tok: Any) -> torch.nn.Module:
    from enigma_fast.models import EnBERT, Enigma

    mcfg = _model_config(cfg, tok.vocab_size, tok.bos_id)
    torch.manual_seed(cfg.seed)
    model = (EnBERT if cfg.model == "enbert" else Enigma)(mcfg)
    model.tokenizer = tok
    return model


def _check_init_config(path: str, ours: dict[str, Any], skip: tuple[str, ...]) -> None:
    """ValueError naming the first field (``skip`` aside) where the config of model folder ``path`` differs from
    ``ours``."""
    from enigma_fast.models.checkpoint import read_config

    theirs = read_config(path)
    differ = [k for k in sorted(set(theirs) | set(ours)) if k not in skip and theirs.get(k) != ours.get(k)]
    if differ:
        k = differ[0]
        raise ValueError(
            f"init_from {path}: its model config differs from the run's ({k}: {theirs.get(k)!r} there, "
            f"{ours.get(k)!r} here); it cannot start this run"
        )


def _init_from(model: torch.nn.Module, path: str, tok: Any) -> None:
    """Load the weights of model folder ``path`` into ``model`` (``--init-from``): its config must equal the run's
    model config, field by field (an EnBERT's ``fim`` flag aside: a next-token run may start a fill-in-the-middle
    one), and its tokenizer must give DNA the run's ids; ValueError naming the first difference otherwise."""
    from enigma_fast.models.checkpoint import load_state
    from enigma_fast.train.span import check_same_tokens

    _check_init_config(path, model.config.to_dict(), skip=("fim", "fim_spm"))
    tok_file = Path(path) / "tokenizer.json"
    if tok_file.is_file():
        from enigma_fast.tokenizers import from_file

        check_same_tokens(from_file(str(tok_file)), tok, f"init_from {path}")
    load_state(model, path)
    logger.info("model weights initialised from %s", path)


def _autocast_works(
    model: torch.nn.Module, cfg: TrainConfig, tok: Any, device: torch.device, dtype: torch.dtype
) -> bool:
    """Probe one small forward under autocast (every op of the model must accept the mixed dtypes)."""
    x = torch.full((1, 8), tok.pieces.get("A", 0), dtype=torch.long, device=device)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            forward_loss(model, x, cfg.model, 4, tok.bos_id)
    except RuntimeError as err:
        logger.warning(
            "%s autocast unavailable for this model on %s (%s): training in float32",
            dtype,
            device,
            str(err).splitlines()[0],
        )
        return False
    return True


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.AdamW(groups, **kw)


def _fit_steps(
    cfg: TrainConfig, step: int, step_s: float, elapsed: float, dd: _Dist, device: torch.device, first: bool = True
) -> int:
    """The step count that fills ``cfg.time_budget`` at ``step_s`` seconds a step (rank 0's figure for all)."""
    fitted = torch.tensor([min(cfg.max_steps, step + int(max(0.0, cfg.time_budget - elapsed) / step_s))], device=device)
    if dd.enabled:
        dist.broadcast(fitted, src=0)
    total = max(int(fitted), cfg.warmup_steps + 1, step + 1)
    if dd.main and first:
        logger.info("time budget %.0f s at %.3f s/step: %d steps", cfg.time_budget, step_s, total)
    return total


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the step and exits."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("signal %d: saving a checkpoint at the end of this step", signum)

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, run_dir: str | os.PathLike | None = None, resume: bool = False) -> dict[str, Any]:
    """Run (or with ``resume``, continue) training; returns the summary (also written to RUN/summary.json).

    Every check on the input (files, preset, window against data and model) runs before the first step.
    """
    device_type = _device(cfg).split(":")[0]
    dd = _init_distributed(device_type)
    device = torch.device(f"cuda:{dd.local_rank}" if device_type == "cuda" and dd.enabled else _device(cfg))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    par = Parallel(cfg.strategy, dd.world, device, cpu_offload=cfg.cpu_offload)  # see train/distributed.py
    if par.sharded:
        init_single_process_group(device.type)  # FSDP2 and DCP need a process group, even of one rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and dd.local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dd.local_world))
    amp_dtype = torch.bfloat16 if cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda") else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    early = _model_config(cfg, vocab_size=64, bos_id=2)  # a bad preset or field fails here, before any data work
    if cfg.init_from and not resume:  # and a folder that cannot start this run (vocabulary checked when loaded)
        _check_init_config(cfg.init_from, early.to_dict(), skip=("vocab_size", "bos_id", "fim", "fim_spm"))

    # ---- run folder and data (rank 0 prepares, the others wait) ----
    if resume and run_dir is None:
        raise ValueError("resume needs the run_dir of the run to continue")
    local: dict[str, Any] = {}

    def prepare_run() -> str:  # rank 0: the folder, the data (kept in ``local``), the config record
        run = Path(run_dir) if resume else _new_run_dir(cfg, run_dir)
        fresh = not run.exists()
        run.mkdir(parents=True, exist_ok=True)
        try:
            store = tdata.open_data(cfg, run, prepare=not (resume and (run / "data").is_dir()))
        except BaseException:
            if fresh and not any(run.iterdir()):
                run.rmdir()  # leave no empty run folder behind a bad input
            raise
        if not resume:  # a resume records its changes in the checkpoints and the summary, never over the original
            (run / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
        local["store"] = store
        return str(run)

    # an error on rank 0 ends every rank (_on_main): none is left waiting at a collective
    run = Path(_on_main(dd, prepare_run))
    store = local["store"] if dd.main else tdata.open_data(cfg, run, prepare=False)
    tok = store.tokenizer
    train_segs, val_segs = tdata.split(cfg, store)
    # what the model will be taught to write: recorded in its tokenizer.json, sampled from by generation
    tok.trained_letters = tdata.trained_letters(store, train_segs)
    if dd.main:
        logger.info("training tokens hold the letters %s: generation writes these by default", tok.trained_letters)
    kind, src_len = cfg.model, cfg.enigma_src_len
    rc = tdata.rc_table(tok) if cfg.rc_augment > 0 else None
    if cfg.rc_augment > 0 and rc is None:
        raise ValueError(
            "rc_augment needs a tokenizer whose stride is k and whose vocabulary holds the reverse "
            "complement of every piece (the 'char' and 'kmer' tokenizers do)"
        )
    span = cfg.window + 1 if kind == "enbert" else cfg.window
    sampler = WindowSampler(store.tokens, train_segs, span, cfg.seed, cfg.rc_augment)
    stride = cfg.eval_stride or max(1, 3 * cfg.window // 4)
    if kind == "enigma":
        stride = cfg.window - src_len
    val_windows = eval_windows(val_segs, span, min(stride, span - 1))
    pick = np.unique(np.linspace(0, len(val_windows) - 1, min(cfg.eval_windows, len(val_windows))).round())
    periodic_windows = [val_windows[int(i)] for i in pick]
    bpt = torch.from_numpy(store.bases_per_token()).to(device)
    bpt_np = store.bases_per_token()

    model = _build_model(cfg, tok).to(device)
    if cfg.init_from and not resume:
        _init_from(model, cfg.init_from, tok)
    objective = None  # span corruption (train/span.py): its masks, and held-out windows with fixed masks
    fim = (  # train/fim.py
        FimObjective(cfg.seed, cfg.fim_rate, fim_markers(tok), cfg.fim_mode) if cfg.objective == "fim" else None
    )
    if cfg.objective == "span":
        mix = parse_span_mix(cfg.span_mix, cfg.noise_density, cfg.mean_span)
        for d in {(cfg.noise_density, cfg.mean_span), *(x for x in mix if x is not None)}:
            check_span_fit(cfg.window, d[0], d[1], tok.num_sentinels, model.config.block_size)
        objective = SpanObjective(cfg.seed, cfg.window, cfg.noise_density, cfg.mean_span, mix)
        val_windows = SpanEval(store.tokens, val_segs, cfg.window, cfg.noise_density, cfg.mean_span, cfg.seed)
        periodic_windows = val_windows.subset(cfg.eval_windows)
    if amp_dtype is not None and not _autocast_works(model, cfg, tok, device, amp_dtype):
        if cfg.dtype != "auto":
            raise ValueError(f"the model does not run under {amp_dtype} autocast on {device}; use --dtype float32")
        amp_dtype, autocast = None, contextlib.nullcontext
    if par.sharded and device.type == "cuda":
        par.mp_dtype = amp_dtype  # FSDP2 gathers the parameters in bfloat16, reduces gradients in float32
    fwd = par.wrap(model, cfg.activation_checkpointing)  # DDP, or FSDP2 in place (before the optimizer is built)
    opt = _optimizer(model, cfg)
    start, state = 0, {}
    resumes: list[dict[str, Any]] = []  # one entry per resume: the step and the options changed then
    planned = 0
    if resume:
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise FileNotFoundError(f"{run} holds no complete checkpoint to resume from")
        if is_sharded(ckpt):
            state = load_sharded_checkpoint(ckpt, model, opt)
        elif par.sharded:
            raise ValueError(f"{ckpt} is a full checkpoint (written with --strategy ddp): resume with --strategy ddp")
        else:
            state = load_checkpoint(ckpt, model, opt)
        start = int(state["step"])
        before = state.get("config") or {}
        changed = {k: [before[k], v] for k, v in cfg.to_dict().items() if k in before and before[k] != v}
        resumes = [*state.get("resumes", []), {"step": start, "changed": changed}]
        planned = int(state.get("planned_steps") or 0)
        if "max_steps" in changed or "time_budget" in changed:
            planned = 0  # a new schedule: max_steps, or fitted again to the time budget
            if not cfg.time_budget and cfg.max_steps < start:
                raise ValueError(
                    f"max_steps must be >= {start}, the step the run in {run} has reached; got {cfg.max_steps}"
                )
            if dd.main:
                logger.info(
                    "resuming at step %d with a new schedule: %s",
                    start,
                    f"{cfg.max_steps} steps" if not cfg.time_budget else "fitted to the time budget",
                )

    baseline = None
    if dd.main:
        b = markov_baseline(tdata.store_base_codes(store, train_segs), tdata.store_base_codes(store, val_segs))
        baseline = {"order": b.best_order, "bpb": b.best_bits, "by_order": b.bits}
        logger.info(
            "order-%d Markov baseline (add-one, fitted on the training part): %.4f held-out bits/base",
            b.best_order,
            b.best_bits,
        )
        logger.info(
            "model: %s %s, %.2fM parameters; data: %d train / %d held-out tokens; run folder %s",
            kind,
            cfg.model_preset,
            model.num_parameters() / 1e6,
            int(train_segs[:, 1].sum()),
            int(val_segs[:, 1].sum()),
            run,
        )

    if cfg.compile:
        fwd = torch.compile(fwd)

    B, A, W = cfg.batch_size, cfg.grad_accum, dd.world
    global_batch = B * A * W
    ckpt_batch = int((state.get("data") or {}).get("global_batch") or global_batch)
    if dd.main and ckpt_batch != global_batch:  # e.g. another number of ranks: keep it with --batch-size/--grad-accum
        logger.warning(
            "global batch of %d windows, the checkpoint's was %d (batch_size x grad_accum x ranks): the "
            "run is no longer an exact continuation",
            global_batch,
            ckpt_batch,
        )
    metrics = MetricsLog(run, resume_step=start if resume else None) if dd.main else None
    # the step count: max_steps, or fitted to time_budget from the step time measured during warmup
    total = planned or (cfg.max_steps if not cfg.time_budget else 0)
    progress = Progress(start, total or None, cfg.log_interval, enabled=dd.main)  # None: not yet fitted
    step_times: list[float] = []
    elapsed0 = float(state.get("elapsed_s", 0.0))
    t_start = t_log = time.perf_counter()
    bases_since_log = 0.0
    last_val: dict[str, float] | None = None
    last_ckpt = start if resume else -1
    step = start
    flags = torch.zeros(2, dtype=torch.int64, device=device)  # (signal, out of time), max-reduced (NCCL: on GPU)

    def trainer_state() -> dict[str, Any]:
        return {
            "elapsed_s": elapsed0 + time.perf_counter() - t_start,
            "planned_steps": total,
            "data": {"sampler": "stateless", "seed": cfg.seed, "next_step": step, "global_batch": global_batch},
            "last_val": last_val,
            "config": cfg.to_dict(),
            "resumes": resumes,
        }

    def checkpoint() -> None:
        nonlocal last_ckpt
        if par.sharded:  # every rank writes its shards
            save_sharded_checkpoint(run, step, model, opt, trainer_state(), cfg.keep_last)
        elif dd.main:
            save_checkpoint(run, step, model, opt, trainer_state(), cfg.keep_last)
        last_ckpt = step
        dd.barrier()

    # fsdp: every rank scores its share of the evaluation's batches (the sums gathered: train/eval_share.py)
    share = EvalShare(dd.rank, dd.world) if par.sharded else EvalShare()

    def run_eval(windows: Any, final: bool = False, tracks: dict | None = None) -> dict[str, float]:
        # the final figure on CPU in float32 whatever the training precision (the figure `score --heldout` gives)
        ac = contextlib.nullcontext if final and device.type == "cpu" else autocast
        if objective is not None:
            return windows.score_enigma(model, tok, bpt, 2 * B, device, ac, share)
        return evaluate(model, store.tokens, windows, bpt, kind, src_len, tok.bos_id, 2 * B, device, ac, share, tracks)

    want_codons = objective is None and cfg.codon_eval and dd.main and codon_eval.available() and not par.sharded
    if objective is None and cfg.codon_eval and dd.main and not want_codons:
        why = (
            "fsdp shares the final evaluation"
            if par.sharded
            else "it needs pyrodigal (pip install enigma_fast[reading])"
        )
        logger.info("no codon evaluation at the end: %s", why)
    stopped = 0
    with _Stop() as stop:
        model.train()
        while step < (total or cfg.max_steps):
            lr = lr_at(step, cfg, total or None)
            for g in opt.param_groups:
                g["lr"] = lr
            # every rank draws the global batch's starts and reads only its own rows
            starts, flips = sampler.draw(step, global_batch)
            mine = np.concatenate([np.arange((m * W + dd.rank) * B, (m * W + dd.rank + 1) * B) for m in range(A)])
            rows, flips = sampler.gather(starts[mine]), flips[mine]  # (A * B, span)
            if flips.any():
                rows[flips] = rc[rows[flips]][:, ::-1]
            masks = objective.masks(step, global_batch) if objective is not None else None
            masks = masks[mine] if masks is not None else None  # None: no span step (a mixture's continuation)
            keep = None  # fim: the targets in the loss
            if fim is not None:
                rows, keep = fim.rows(step, rows, global_batch, mine)
            loss_sum = torch.zeros((), device=device)
            for m in range(A):
                x = torch.from_numpy(np.ascontiguousarray(rows[m * B : (m + 1) * B])).to(device)
                with par.grad_sync(fwd, m == A - 1):
                    with autocast():
                        if masks is not None:
                            xm = torch.from_numpy(masks[m * B : (m + 1) * B]).to(device)
                            _, loss, _ = span_loss(fwd, x, xm, tok)
                        elif keep is not None:
                            _, loss = fim_loss(fwd, x, torch.from_numpy(keep[m * B : (m + 1) * B]).to(device))
                        else:
                            _, loss, _ = forward_loss(fwd, x, kind, src_len, tok.bos_id)
                    (loss / A).backward()
                loss_sum += loss.detach()
            if cfg.grad_clip > 0:
                par.clip_grad_norm_(model, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if cfg.time_budget:
                step_times.append(time.perf_counter())
                del step_times[: -REFIT_STEPS - 1]
                fit = (not total and step == start + CALIBRATION_STEPS) or (
                    total and step < total and (step - start) % REFIT_STEPS == 0
                )
                if fit:  # median step time: robust to evaluations, checkpoints and passing load spikes
                    step_s = float(np.median(np.diff(step_times[1:] if not total else step_times)))
                    total = _fit_steps(
                        cfg, step, step_s, elapsed0 + time.perf_counter() - t_start, dd, device, first=not total
                    )
                    progress.set_total(total)
            if masks is not None:
                n_targets, n_bases = objective.counts(rows, masks, bpt_np)
            elif keep is not None:
                n_targets, n_bases = fim.counts(rows, keep, bpt_np)
            else:
                targets = rows[:, 1:] if kind == "enbert" else rows[:, src_len:]
                n_targets, n_bases = targets.size, float(bpt_np[targets].sum())
            bases_since_log += n_bases * W  # all ranks (theirs are alike in size)

            sig = stop.signum
            late = int(cfg.max_time > 0 and elapsed0 + time.perf_counter() - t_start > cfg.max_time)
            if dd.enabled:  # every rank stops at the same step
                flags[0], flags[1] = sig, late
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                sig, late = (int(v) for v in flags.tolist())
            if step % cfg.log_interval == 0 or step == (total or cfg.max_steps) or sig or late:
                mean_loss = loss_sum / A
                if dd.enabled:
                    dist.all_reduce(mean_loss, op=dist.ReduceOp.SUM)
                    mean_loss /= W
                lval = float(mean_loss)
                tpb = n_targets / n_bases  # tokens per base of this batch
                now = time.perf_counter()
                rate = bases_since_log / max(now - t_log, 1e-9)
                t_log, bases_since_log = now, 0.0
                bpb = lval * tpb / math.log(2)
                progress.update(step, loss=lval, bpb=bpb, lr=lr, bases_s=rate)
                if metrics is not None:
                    metrics.log(
                        step,
                        "train",
                        tokens=step * global_batch * n_targets // len(rows),
                        lr=lr,
                        loss=lval,
                        bpb=bpb,
                        elapsed_s=elapsed0 + now - t_start,
                        bases_per_s=rate,
                    )
            else:
                progress.update(step)
            if cfg.eval_interval and step % cfg.eval_interval == 0 and step < (total or cfg.max_steps):
                if dd.main or par.sharded:  # fsdp: every rank takes part in the forward passes
                    last_val = run_eval(periodic_windows)
                if dd.main:
                    metrics.log(step, "val", loss=last_val["loss"], bpb=last_val["bpb"], accuracy=last_val["accuracy"])
                    progress.write(
                        f"step {step}: held-out {last_val['bpb']:.4f} bits/base, "
                        f"accuracy {last_val['accuracy']:.3f} ({len(periodic_windows)} windows)"
                    )
                dd.barrier()
            if sig:
                stopped = sig
                break
            if late:
                logger.warning("max_time %.0f s reached at step %d: finishing early", cfg.max_time, step)
                break
            if cfg.ckpt_interval and step % cfg.ckpt_interval == 0 and step < (total or cfg.max_steps):
                checkpoint()
    progress.close()
    if last_ckpt != step:
        checkpoint()
    summary: dict[str, Any] = {
        "run_dir": str(run),
        "step": step,
        "max_steps": total or cfg.max_steps,
        "interrupted_by_signal": stopped,
        "parameters": model.num_parameters(),
    }
    if resumes:
        summary["resumes"] = resumes
    if stopped:
        logger.warning("stopped by signal %d at step %d; continue with --resume %s", stopped, step, run)
    elif dd.main or par.sharded:  # fsdp: every rank takes part in the forward passes and in gathering the shards
        t_eval = time.perf_counter()
        codons = codon_eval.track_buffers(val_segs) if want_codons else None  # the forward track, kept for them
        final = run_eval(val_windows, final=True, tracks=codons)
        eval_s = time.perf_counter() - t_eval
        whole = par.full_model(model)  # rank 0: the whole, unwrapped model
    if not stopped and dd.main:
        metrics.log(step, "val", loss=final["loss"], bpb=final["bpb"], accuracy=final["accuracy"])
        summary.update(val=final, eval_s=eval_s, baseline=baseline)
        whole.save_pretrained(run / "final")
        summary["final_model"] = str(run / "final")
        if want_codons:  # per-base bits by codon position in the held-out genes (train/codon_eval.py)
            t_codon = time.perf_counter()
            eval_ctx = src_len if kind == "enigma" else cfg.window + 1 - min(stride, cfg.window)
            summary["codon"] = codon_eval.end_of_run(
                whole,
                store.tokens,
                train_segs,
                codons,
                window=cfg.window,
                context=eval_ctx,
                device=device,
                markov_orders=(baseline["order"],),
            )
            summary["codon"]["seconds_total"] = round(time.perf_counter() - t_codon, 2)
        if objective is not None or fim is not None:  # infill figures, the EnBERT's on the same spans, a filled gap
            ev = (
                val_windows
                if objective is not None
                else SpanEval(store.tokens, val_segs, cfg.window, cfg.noise_density, cfg.mean_span, cfg.seed)
            )
            if fim is not None:  # the FIM model's own infill figure on the held-out spans
                summary["infill"] = fim_span_score(whole, tok, ev, bpt, context=cfg.window, device=device)
                logger.info(
                    "held-out spans, both flanks (fill-in-the-middle): %.4f bits/base over %d bases",
                    summary["infill"]["bpb"],
                    int(summary["infill"]["bases"]),
                )
            summary.update(span_summary(cfg, whole, tok, store.tokens, val_segs, ev, bpt, device))
        elif cfg.sample_tokens:
            seg = val_segs[int(np.argmax(val_segs[:, 1]))]
            n = min(cfg.sample_prompt, int(seg[1]) - 1)
            prompt = np.asarray(store.tokens[seg[0] : seg[0] + n], dtype=np.int64)
            truth = tok.decode(
                torch.from_numpy(
                    np.asarray(
                        store.tokens[seg[0] + n : seg[0] + min(int(seg[1]), n + cfg.sample_tokens)], dtype=np.int64
                    )
                )
            )
            p_text, c_text = sample_continuation(whole.to(device), tok, prompt, cfg.sample_tokens, cfg.seed, device)
            summary["sample"] = {"prompt": p_text, "continuation": c_text, "truth": truth}
    if dd.main:
        summary["train_s"] = elapsed0 + time.perf_counter() - t_start
        metrics.close()
        plot_losses(
            run / "metrics.csv",
            run / "loss.png",
            baseline["bpb"] if baseline else None,
            title=f"{cfg.preset}: {kind} {cfg.model_preset}, {cfg.tokenizer} tokens",
        )
        (run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    dd.barrier()
    return summary
