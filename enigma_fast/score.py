"""``python -m enigma_fast.score``: log-likelihood and bits per base of every record of FASTA/FASTQ files, or of a
training run's held-out data, as TSV; optionally the per-base track (bedGraph or npz).

    python -m enigma_fast.score --model runs/tiny/final reads.fa.gz --out scores.tsv --per-base track.bedgraph
    python -m enigma_fast.score --model runs/tiny/final --heldout

One TSV row per record (``id length bits_per_base log_likelihood n_count scored_bases``; id = the header's first
word), to stdout or ``--out``. ``--heldout`` scores the held-out part of the data a run was trained on (the shipped
genome by default: the last ``val_fraction`` of its chromosome) with the windows of the trainer's final evaluation
(window, eval stride and split read from ``RUN/train_config.json`` when ``--model`` is a run's ``final/`` folder);
its bits/base is the trainer's held-out figure. A progress bar goes to stderr. Existing output files are replaced
only with ``--force``, an input file never.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np
import torch

from enigma_fast import scoring
from enigma_fast.data.fasta import iter_records, shipped_genome_path

__all__ = ["HeldOut", "Stretch", "heldout_stretches", "main", "score_heldout"]

log = logging.getLogger("enigma_fast.score")
PROG = "python -m enigma_fast.score"
CHUNK_BASES = 1 << 23  # bases scored per call when reading files (bounds memory, keeps the bar moving)
TSV_HEADER = "id\tlength\tbits_per_base\tlog_likelihood\tn_count\tscored_bases\n"


class UsageError(Exception):
    """A bad argument or input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ------------------------------------------------------------------------------------------------------------
# held-out data, as the trainer builds it
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Stretch:
    """A held-out stretch of one record: bases ``[start, end)`` of record ``name`` (its header's first word) and
    their token ids ``(T,)``."""

    name: str
    start: int
    end: int
    ids: np.ndarray


def heldout_stretches(
    tokenizer: Any,
    files: Sequence[str | os.PathLike] | None = None,
    val_fraction: float = 0.1,
    split: str = "position",
    case: str = "upper",
    n_policy: str = "split",
) -> list[Stretch]:
    """The held-out stretches of ``files`` (default: the shipped genome) exactly as the trainer makes them: the
    records tokenized as ``enigma_fast.data.prepare_tokens`` does (``case``, ``n_policy``, stretches of fewer than
    2 bases dropped), split by ``enigma_fast.data.windows.split_segments(val_fraction, split)``; with each
    stretch's base coordinates in its record."""
    from enigma_fast.data import tokens as store
    from enigma_fast.data.windows import split_segments

    bpt = scoring.bases_per_token(tokenizer)
    paths = [os.fspath(p) for p in files] if files else [str(shipped_genome_path())]
    flat: list[np.ndarray] = []
    segments: list[tuple[int, int, int]] = []
    where: list[tuple[str, int]] = []  # per segment: record name, base start in the record
    offset = 0
    rid = 0
    for path in paths:
        for rec in iter_records(path):
            raw = rec.sequence.encode("ascii", "replace")
            rest = raw.translate(None, b"ACGTacgt")  # what is not A/C/G/T: N runs, IUPAC codes
            store._check_bytes(raw, rest, path, rec.name, 0)  # the store's own rules: the same ids as the trainer's
            if case == "upper":
                raw = raw.translate(store._UPPER)
            if n_policy == "split" and rest:
                spans = list(zip(*store._acgt_runs(raw, rest), strict=True))
            else:
                spans = [(0, len(raw))] if raw else []
            for a, b in spans:
                if b - a < 2:
                    continue
                ids = store._encode(tokenizer, bytearray(raw[a:b]), np.dtype(np.int64))
                flat.append(ids)
                segments.append((rid, offset, len(ids)))
                where.append((rec.name.split()[0] if rec.name.split() else rec.name, a))
                offset += len(ids)
            rid += 1
    if not segments:
        raise ValueError(f"no usable bases in {', '.join(paths)}")
    tokens = np.concatenate(flat)
    segs = np.asarray(segments, dtype=np.int64)
    _, val = split_segments(segs, val_fraction, split)
    out = []
    for off, n in val.tolist():
        j = int(np.searchsorted(segs[:, 1], off, side="right")) - 1
        name, base0 = where[j]
        start = base0 + int(bpt[tokens[segs[j, 1] : off]].sum())
        ids = tokens[off : off + n]
        out.append(Stretch(name, start, start + int(bpt[ids].sum()), ids))
    return out


@dataclass
class HeldOut:
    """Result of ``score_heldout``: ``bits_per_base`` and ``log_likelihood`` (nats) over ``scored_bases`` as the
    trainer's final evaluation counts them; per stretch its ``SequenceScore`` (with ``per_base`` when asked)."""

    stretches: list[Stretch]
    scores: list[scoring.SequenceScore]
    bits_per_base: float
    log_likelihood: float
    scored_bases: int
    window: int
    context: int


def run_windows(run_config: dict[str, Any], kind: str) -> tuple[int, int]:
    """``(window, context)`` of a run's final evaluation from its ``train_config.json`` content: EnBERT
    ``context = window + 1 - eval_stride`` (eval stride default 3/4 of the window), Enigma ``context = src_len``
    (default half the window)."""
    window = int(run_config.get("window", 256))
    if kind == "enigma":
        return window, int(run_config.get("src_len") or window // 2)
    stride = int(run_config.get("eval_stride") or max(1, 3 * window // 4))
    return window, window + 1 - min(stride, window)


def score_heldout(
    model: Any,
    stretches: Sequence[Stretch],
    *,
    window: int | None = None,
    context: int | None = None,
    per_base: bool = False,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    progress: Any = False,
) -> HeldOut:
    """Score held-out stretches with the windows of ``scoring.token_log_probs``; the totals count every scored
    token (as the trainer does: ``bits_per_base = -sum log p / sum bases / ln 2``)."""
    tok = model.tokenizer
    window, context = scoring.resolve_window(model, window, context)
    bpt = scoring.bases_per_token(tok)
    lps = scoring.token_log_probs(
        model,
        [s.ids for s in stretches],
        window=window,
        context=context,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    scores = []
    ll_all, bases_all = 0.0, 0
    for s, lp in zip(stretches, lps, strict=True):
        keep = ~np.isnan(lp)
        ll, nb = float(lp[keep].sum()), int(bpt[s.ids[keep]].sum())
        ll_all += ll
        bases_all += nb
        track = scoring.per_base_track(lp, s.ids, tok) if per_base else None
        bpb = -ll / nb / math.log(2) if nb else math.nan
        scores.append(scoring.SequenceScore(s.end - s.start, ll, nb, bpb, 0, track))
    bpb_all = -ll_all / bases_all / math.log(2) if bases_all else math.nan
    return HeldOut(list(stretches), scores, bpb_all, ll_all, bases_all, window, context)


# ------------------------------------------------------------------------------------------------------------
# output files
# ------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_output(path: str | None, mode: str = "w") -> Iterator[IO[Any]]:
    """A stream to write ``path`` through: a fresh temporary sibling renamed over it when the block completes
    (removed on error, so a failed run never leaves a partial file); stdout when ``path`` is None or '-'."""
    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the output gets the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_outputs(outputs: Sequence[tuple[str, str | None]], inputs: Sequence[str], force: bool) -> None:
    """Before any work: each output ``(flag, path)`` goes into an existing, writable folder, is not a folder, is
    not an input file, not another output, and exists only with ``force``. UsageError naming the flag otherwise."""
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if path is None or path == "-":
            continue
        out = Path(path)
        real = os.path.realpath(out)
        if real in seen:
            raise UsageError(f"{flag} {path} is also {seen[real]}; give each output its own file")
        seen[real] = flag
        parent = out.parent
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: the folder {parent} does not exist")
        if out.is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"{flag} {path}: the folder {parent} is not writable")
        for inp in inputs:
            if out.exists() and os.path.exists(inp) and os.path.samefile(out, inp):
                raise UsageError(f"{flag} {path} is the input file {inp}; it would be overwritten")
        if out.exists() and not force:
            raise UsageError(f"{flag} {path} exists; pass --force to replace it")


def _tsv_row(name: str, s: scoring.SequenceScore) -> str:
    return f"{name}\t{s.length}\t{s.bits_per_base:.6f}\t{s.log_likelihood:.6f}\t{s.n_count}\t{s.scored_bases}\n"


def _bedgraph(sink: IO[str], chrom: str, start: int, track: np.ndarray) -> None:
    """Runs of equal values of ``track`` (NaN runs left out) as bedGraph lines ``chrom start end value``."""
    if not len(track):
        return
    change = np.flatnonzero(np.r_[True, (track[1:] != track[:-1]) & ~(np.isnan(track[1:]) & np.isnan(track[:-1]))])
    ends = np.r_[change[1:], len(track)]
    lines = [
        f"{chrom}\t{start + a}\t{start + b}\t{track[a]:.6g}\n"
        for a, b in zip(change.tolist(), ends.tolist(), strict=True)
        if not np.isnan(track[a])
    ]
    sink.write("".join(lines))


class _Tracks:
    """The ``--per-base`` output: bedGraph lines written as records finish, or npz arrays gathered for the end
    (``values`` concatenated float64, ``offsets`` ``(N+1,)``, ``ids``, ``starts``: each row's first base)."""

    def __init__(self, path: str | None, stack: contextlib.ExitStack) -> None:
        self.path, self.npz = path, path is not None and path.endswith(".npz")
        self.sink = None
        self.rows: list[tuple[str, int, np.ndarray]] = []
        if path is not None and not self.npz:
            self.sink = stack.enter_context(atomic_output(path))
            self.sink.write('track type=bedGraph name="enigma_fast" description="per-base natural-log probability"\n')

    def add(self, name: str, start: int, track: np.ndarray | None) -> None:
        if track is None:
            return
        if self.sink is not None:
            _bedgraph(self.sink, name, start, track)
        elif self.npz:
            self.rows.append((name, start, track))

    def close(self) -> None:
        if not self.npz:
            return
        lengths = [len(t) for _, _, t in self.rows]
        with atomic_output(self.path, "wb") as f:
            np.savez(
                f,
                values=np.concatenate([t for _, _, t in self.rows]) if self.rows else np.zeros(0),
                offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
                ids=np.array([n for n, _, _ in self.rows], dtype=str),
                starts=np.array([s for _, s, _ in self.rows], dtype=np.int64),
            )


# ------------------------------------------------------------------------------------------------------------
# the CLI
# ------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="SEQS", help="FASTA/FASTQ files (plain or gzip)")
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    p.add_argument(
        "--heldout",
        action="store_true",
        help="score the held-out part of the run's data (default: the shipped genome) as the trainer does",
    )
    p.add_argument("--out", default=None, help="TSV output file (default: stdout)")
    p.add_argument(
        "--per-base",
        default=None,
        metavar="FILE",
        help="per-base natural-log probabilities: FILE.bedgraph (or .bedGraph/.bg) or FILE.npz",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="tokens per model call (default: the model's block_size; --heldout: the run's window)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=None,
        help="least left context of a scored token (default: window // 2; --heldout: the run's)",
    )
    p.add_argument("--val-fraction", type=float, default=None, help="--heldout without a run: default 0.1")
    p.add_argument("--both-strands", action="store_true", help="mean of the sequence and its reverse complement")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 autocast on CUDA, float32 on CPU (as the trainer)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def _check_options(args: argparse.Namespace) -> torch.device:
    """Every option checked before any file is read or any model loaded (UsageError naming the option)."""
    if not args.heldout and not args.files:
        raise UsageError("give FASTA/FASTQ files to score, or --heldout")
    if args.heldout and args.both_strands:
        raise UsageError("--both-strands scores files; --heldout reproduces the trainer's (forward) evaluation")
    for flag, value, lo in (
        ("--window", args.window, 2),
        ("--context", args.context, 1),
        ("--batch-size", args.batch_size, 1),
    ):
        if value is not None and value < lo:
            raise UsageError(f"{flag} must be >= {lo}, got {value}")
    if args.val_fraction is not None and not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.per_base is not None and not args.per_base.lower().endswith((".bedgraph", ".bg", ".npz")):
        raise UsageError(f"--per-base must end in .bedgraph, .bg or .npz, got {args.per_base}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device must be 'cpu' or 'cuda[:N]', got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    if not os.path.isdir(args.model):
        raise UsageError(f"--model folder not found: {args.model}")
    for f in args.files:
        if not os.path.isfile(f):
            raise UsageError(f"sequence file not found: {f}")
    check_outputs([("--out", args.out), ("--per-base", args.per_base)], args.files, args.force)
    return device


def _load(args: argparse.Namespace, device: torch.device) -> tuple[Any, str | None]:
    """The model (on ``device``) and the autocast dtype (``--dtype auto``: bfloat16 on CUDA, as the trainer)."""
    from enigma_fast.models import load_model

    model = load_model(args.model, device=str(device))
    if model.tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer.json")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else None)
    return model, dtype


def _run_config(model_dir: str) -> tuple[dict[str, Any] | None, Path | None]:
    """The ``train_config.json`` of the run whose ``final/`` folder ``model_dir`` is, and the run folder."""
    run = Path(model_dir).resolve().parent
    cfg = run / "train_config.json"
    if Path(model_dir).resolve().name != "final" or not cfg.is_file():
        return None, None
    try:
        d = json.loads(cfg.read_text())
    except ValueError as err:
        raise UsageError(f"{cfg}: not a JSON file ({err})") from None
    if not isinstance(d, dict):
        raise UsageError(f"{cfg} must hold a JSON object")
    return d, run


def _heldout(args: argparse.Namespace, model: Any, dtype: Any, out: IO[str], tracks: _Tracks) -> None:
    kind = model.config.model_type
    cfg, run = _run_config(args.model)
    cfg = cfg or {}
    if cfg:
        data = cfg.get("data") or []
        from enigma_fast.data.tokens import is_token_store

        if len(data) == 1 and is_token_store(data[0]):
            raise UsageError(
                f"the run was trained on the prepared token folder {data[0]}; give the FASTA files it "
                "was made from (--heldout FILES ...)"
            )
    files = args.files or cfg.get("data") or None
    window, context = run_windows(cfg, kind) if cfg and args.window is None else (args.window, args.context)
    if args.context is not None:
        context = args.context
    if cfg and (args.window is not None or args.context is not None):
        log.info("--window/--context given: these are not the windows of the trainer's evaluation of this run")
    val_fraction = args.val_fraction if args.val_fraction is not None else float(cfg.get("val_fraction", 0.1))
    stretches = heldout_stretches(
        model.tokenizer,
        files,
        val_fraction,
        cfg.get("split", "position"),
        cfg.get("case", "upper"),
        cfg.get("n_policy", "split"),
    )
    n_tok = sum(len(s.ids) for s in stretches)
    t0 = time.perf_counter()
    res = score_heldout(
        args.fwd,
        stretches,
        window=window,
        context=context,
        per_base=args.per_base is not None,
        batch_size=args.batch_size,
        device=args.device,
        dtype=dtype,
        progress=True,
    )
    dt = time.perf_counter() - t0
    out.write(TSV_HEADER)
    for s, sc in zip(res.stretches, res.scores, strict=True):
        out.write(_tsv_row(f"{s.name}:{s.start + 1}-{s.end}", sc))
        tracks.add(s.name, s.start, sc.per_base)
    log.info(
        "held-out: %d bases (%d tokens, %d stretches, last %.0f%% of %s) scored in %.2f s (%.0f bases/s), "
        "window %d, context %d: %.4f bits/base",
        res.scored_bases,
        n_tok,
        len(stretches),
        100 * val_fraction,
        ", ".join(map(str, files)) if files else "the shipped genome",
        dt,
        res.scored_bases / max(dt, 1e-9),
        res.window,
        res.context,
        res.bits_per_base,
    )
    summary = run / "summary.json" if run is not None else None
    if summary is not None and summary.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            trainer = float(json.loads(summary.read_text())["val"]["bpb"])
            log.info(
                "the trainer's final evaluation of this run: %.4f bits/base (difference %.2e)",
                trainer,
                res.bits_per_base - trainer,
            )


def _files(args: argparse.Namespace, dtype: Any, out: IO[str], tracks: _Tracks) -> None:
    bar = None
    with contextlib.suppress(ImportError):
        from tqdm.auto import tqdm

        bar = tqdm(desc="score", unit="tok", unit_scale=True, file=sys.stderr)
    out.write(TSV_HEADER)
    t0, bases, chunk, size = time.perf_counter(), 0, [], 0

    def flush() -> None:
        names = [n for n, _ in chunk]
        res = scoring.score(
            args.fwd,
            [s for _, s in chunk],
            tokenizer=args.tok,
            window=args.window,
            context=args.context,
            both_strands=args.both_strands,
            per_base=args.per_base is not None,
            batch_size=args.batch_size,
            device=args.device,
            dtype=dtype,
            progress=bar if bar is not None else False,
        )
        for name, sc in zip(names, res, strict=True):
            out.write(_tsv_row(name, sc))
            tracks.add(name, 0, sc.per_base)
        chunk.clear()

    try:
        for path in args.files:
            for rec in iter_records(path):
                name = rec.name.split()[0] if rec.name.split() else rec.name
                chunk.append((name, rec.sequence))
                size += len(rec.sequence)
                bases += len(rec.sequence)
                if size >= CHUNK_BASES:
                    flush()
                    size = 0
        if chunk:
            flush()
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    log.info("%d bases scored in %.2f s (%.0f bases/s)", bases, dt, bases / max(dt, 1e-9))


def _run(args: argparse.Namespace) -> int:
    device = _check_options(args)
    model, dtype = _load(args, device)
    args.tok = model.tokenizer
    args.fwd = model
    if not args.heldout:  # window and context against the model, before any output is started
        args.window, args.context = scoring.resolve_window(model, args.window, args.context)
    if args.compile:
        args.fwd = torch.compile(model, dynamic=True)
    with contextlib.ExitStack() as stack:
        tracks = _Tracks(args.per_base, stack)
        out = stack.enter_context(atomic_output(args.out))
        if args.heldout:
            _heldout(args, model, dtype, out, tracks)
        else:
            _files(args, dtype, out, tracks)
        tracks.close()
        out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score, write TSV (and the per-base track); returns the process exit code (2 with a one-line
    message on stderr for a bad argument or input file)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except (UsageError, OSError, ValueError) as err:  # ValueError: bad files, or options the library rejects
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _passive_openmp() -> None:
    """Re-run this command with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy, as the trainer's
    CLI does: spinning OpenMP threads of torch's ops lose their time slices whenever anything else runs on the
    machine (docs/training.md). The policy is read when the OpenMP runtime loads, hence a fresh process."""
    if os.environ.get("OMP_WAIT_POLICY") is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "enigma_fast.score", *sys.argv[1:]])


if __name__ == "__main__":
    _passive_openmp()
    raise SystemExit(main())
