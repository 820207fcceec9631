"""``python -m enigma_fast.generate``: sample DNA continuations from a checkpoint folder, or fill gaps with an
Enigma trained by span corruption, written as FASTA.

    python -m enigma_fast.generate --model runs/tiny/final --prompt ACGTTGCA --max-new-tokens 200 --seed 0
    python -m enigma_fast.generate --model DIR --prompts prompts.fa --num-samples 4 --top-k 4 --out out.fa
    python -m enigma_fast.generate --model ENIGMA_DIR --infill "ACGTTGCA[N:12]TTGACCA" --num-samples 3 --seed 0
    python -m enigma_fast.generate --model ENIGMA_DIR --infill-fasta scaffold.fa --out filled.fa

Each record is the prompt followed by its continuation, or (infill) the sequence with every gap filled: gaps are
``[N:<bases>]`` (exact length) or ``[N]`` (free length, at most --max-gap-length) in --infill, and runs of N (each
filled with exactly as many bases) in the records of --infill-fasta. Tokens/s goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from enigma_fast.data import iter_records, read_sequences
from enigma_fast.generation import fill_gaps, generate, parse_masked
from enigma_fast.models import load_model
from enigma_fast.tokenizers import FALLBACK_ALPHABET

__all__ = ["main"]

log = logging.getLogger("enigma_fast.generate")
_DNA = set("ACGTNacgtn")
PROG = "python -m enigma_fast.generate"


class UsageError(Exception):
    """A bad argument or input: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one DNA prompt (A/C/G/T/N)")
    src.add_argument("--prompts", help="FASTA/FASTQ file of prompts (plain or gzip)")
    src.add_argument("--infill", help="a sequence with gaps to fill: [N:<bases>] (exact) or [N] (free length)")
    src.add_argument("--infill-fasta", help="FASTA/FASTQ file whose runs of N are gaps to fill (exact lengths)")
    p.add_argument("--max-gap-length", type=int, default=64, help="infill: most bases of a free-length [N] gap")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1, help="continuations per prompt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--out", default=None, help="FASTA output file (default: stdout)")
    p.add_argument(
        "--full-vocab",
        action="store_true",
        help="sample every letter the tokenizer writes (lower case, N, IUPAC codes), not only the letters of the "
        "training data recorded in tokenizer.json (A/C/G/T when it records none)",
    )
    return p


def _check_options(args: argparse.Namespace) -> None:
    """Every option checked before any file is read or any model loaded (UsageError naming the option)."""
    checks = [
        ("--max-new-tokens", args.max_new_tokens >= 1, ">= 1", args.max_new_tokens),
        ("--num-samples", args.num_samples >= 1, ">= 1", args.num_samples),
        (
            "--temperature",
            math.isfinite(args.temperature) and args.temperature >= 0,
            "a finite number >= 0 (0 = greedy)",
            args.temperature,
        ),
        ("--top-k", args.top_k is None or args.top_k >= 1, ">= 1", args.top_k),
        ("--top-p", args.top_p is None or 0.0 < args.top_p <= 1.0, "in (0, 1]", args.top_p),
        ("--max-gap-length", args.max_gap_length >= 1, ">= 1", args.max_gap_length),
    ]
    for flag, ok, expected, got in checks:
        if not ok:
            raise UsageError(f"{flag} must be {expected}, got {got}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device must be 'cpu' or 'cuda[:N]', got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    for flag, path in (("--prompts", args.prompts), ("--infill-fasta", args.infill_fasta)):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{flag} file not found: {path}")
    if args.out is not None:
        out = Path(args.out)
        parent = out.parent
        if not parent.is_dir():
            raise UsageError(f"--out {args.out}: the folder {parent} does not exist")
        if out.is_dir():
            raise UsageError(f"--out {args.out} is a folder; give a file name")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"--out {args.out}: the folder {parent} is not writable")
        for flag, path in (("--prompts", args.prompts), ("--infill-fasta", args.infill_fasta)):
            if path is not None and out.exists() and os.path.samefile(out, path):
                raise UsageError(f"--out {args.out} is the {flag} file; it would be overwritten")


def _check_prompts(prompts: Sequence[str]) -> None:
    if not prompts:
        raise UsageError("no prompts given")
    for i, s in enumerate(prompts):
        if not s:
            raise UsageError(f"prompt {i + 1} is empty")
        bad = sorted(set(s) - _DNA)
        if bad:
            raise UsageError(f"prompt {i + 1} holds characters that are not DNA bases: {''.join(bad)!r}")


def _write_fasta(
    path: str | None, batch: Sequence[str], texts: Sequence[str], num_samples: int, max_new_tokens: int
) -> None:
    """The records, to stdout or into ``path`` through a temporary sibling renamed over it at the end."""
    records = [
        (f"sample_{i + 1} prompt={i // num_samples + 1} new_tokens={max_new_tokens}", prompt + cont)
        for i, (prompt, cont) in enumerate(zip(batch, texts, strict=True))
    ]
    _write_records(path, records)


def _write_records(path: str | None, records: Sequence[tuple[str, str]]) -> None:
    """FASTA ``>header`` + sequence (80 columns) records, to stdout or into ``path`` through a temporary sibling
    renamed over it at the end."""

    def write(sink) -> None:
        for header, seq in records:
            sink.write(f">{header}\n")
            for j in range(0, len(seq), 80):
                sink.write(seq[j : j + 80] + "\n")

    if path is None:
        write(sys.stdout)
        return
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; the output gets the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_N_RUN = re.compile(r"[Nn]+")


def _infill_items(args: argparse.Namespace) -> tuple[list[str], list[Any]]:
    """Names and gap specifications: the --infill text, or each --infill-fasta record with its N runs as exact
    gaps."""
    if args.infill is not None:
        return ["infill"], [args.infill]
    names, items = [], []
    for rec in iter_records(args.infill_fasta):
        seq = rec.sequence
        if not _N_RUN.search(seq):
            raise UsageError(f"--infill-fasta {args.infill_fasta}: record {rec.name!r} has no run of N to fill")
        bad = sorted(set(seq) - set(FALLBACK_ALPHABET))
        if bad:
            raise UsageError(
                f"--infill-fasta {args.infill_fasta}: record {rec.name!r} holds {''.join(bad)!r}, not DNA letters"
            )
        names.append(rec.name.split()[0] if rec.name.split() else f"record_{len(names) + 1}")
        items.append(_N_RUN.sub(lambda m: f"[N:{len(m.group())}]", seq))
    if not items:
        raise UsageError(f"--infill-fasta {args.infill_fasta}: no records")
    return names, items


def _run_infill(args: argparse.Namespace) -> int:
    names, items = _infill_items(args)
    for i, item in enumerate(items):  # bad gaps fail before the model loads
        parse_masked(item, "--infill" if args.infill is not None else f"--infill-fasta record {names[i]!r}")
    model = load_model(args.model, device=args.device)
    if model.tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer.json")
    t0 = time.perf_counter()
    try:
        fills = fill_gaps(
            model,
            model.tokenizer,
            items,
            num_samples=args.num_samples,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            max_gap_length=args.max_gap_length,
            vocab="full" if args.full_vocab else "trained",
        )
    except ValueError as err:  # name the record instead of the list position
        m = re.match(r"text\[(\d+)\]: (.*)", str(err))
        if m is None:
            raise
        where = "--infill" if args.infill is not None else f"--infill-fasta record {names[int(m[1])]!r}"
        raise UsageError(f"{where}: {m[2]}") from None
    dt = time.perf_counter() - t0
    records = []
    n_bases = 0
    for name, item, samples in zip(names, items, fills, strict=True):
        masked = parse_masked(item)
        for s, gaps in enumerate(samples):
            n_bases += sum(map(len, gaps))
            lengths = ",".join(str(len(f)) for f in gaps)
            records.append((f"{name}_sample_{s + 1} gaps={len(gaps)} filled={lengths}", masked.join(gaps)))
    log.info("%d bases filled in %.2f s: %.1f bases/s (%d rows)", n_bases, dt, n_bases / dt, len(records))
    _write_records(args.out, records)
    return 0


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    if args.infill is not None or args.infill_fasta is not None:
        return _run_infill(args)
    prompts = [args.prompt] if args.prompt is not None else read_sequences(args.prompts)
    _check_prompts(prompts)
    model = load_model(args.model, device=args.device)
    tok = model.tokenizer
    if tok is None:
        raise UsageError(f"{args.model} has no tokenizer.json")
    batch = [p for p in prompts for _ in range(args.num_samples)]
    ids, lengths = tok.encode_batch(batch, left_pad=True)
    limit = model.config.block_size
    if ids.shape[1] + args.max_new_tokens > limit:
        raise UsageError(
            f"the longest prompt is {ids.shape[1]} tokens; with --max-new-tokens {args.max_new_tokens} that "
            f"exceeds the model's limit of {limit} tokens"
        )
    ids, lengths = ids.to(args.device), lengths.to(args.device)
    t0 = time.perf_counter()
    out = generate(
        model,
        ids,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        prompt_lengths=lengths,
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        seed=args.seed,
        compile=args.compile,
        vocab="full" if args.full_vocab else "trained",
    )
    if out.is_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    new = out[:, ids.shape[1] :]
    n_tokens = new.numel()
    log.info("%d tokens in %.2f s: %.1f tokens/s (batch %d)", n_tokens, dt, n_tokens / dt, len(batch))
    _write_fasta(args.out, batch, tok.decode_batch(new.cpu()), args.num_samples, args.max_new_tokens)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, sample, write FASTA; returns the process exit code (2 with a one-line message on stderr
    for a bad argument or input file)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except (UsageError, OSError, ValueError) as err:  # ValueError: bad files, or options the library rejects
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
