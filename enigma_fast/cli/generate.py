"""``python -m enigma_fast.generate``: sample DNA continuations from a checkpoint folder, or fill gaps with an
Enigma trained by span corruption, written as FASTA.

    python -m enigma_fast.generate --model runs/tiny/final --prompt ACGTTGCA --max-new-tokens 200 --seed 0
    python -m enigma_fast.generate --model DIR --prompts prompts.fa --num-samples 4 --top-k 4 --out out.fa
    python -m enigma_fast.generate --model ENIGMA_DIR --infill "ACGTTGCA[N:12]TTGACCA" --num-samples 3 --seed 0
    python -m enigma_fast.generate --model ENIGMA_DIR --infill-fasta scaffold.fa --out filled.fa

Each record is the prompt followed by its continuation, or (infill) the sequence with every gap filled: gaps are
``[N:<bases>]`` (exact length) or ``[N]`` (free length, at most --max-gap-length) in --infill, and runs of N (each
filled with exactly as many bases) in the records of --infill-fasta. Tokens/s goes to stderr.

The FASTA goes to stdout (no --out, or ``--out -``) or into --out, written atomically; an existing --out file is
replaced only with --force, and never when it is the --prompts or --infill-fasta input.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import torch

from enigma_fast.cli import _common as common
from enigma_fast.data import iter_records, read_sequences
from enigma_fast.generation import fill_gaps, generate, parse_masked, timed_generate
from enigma_fast.tokenizers import FALLBACK_ALPHABET

__all__ = ["main"]

log = logging.getLogger("enigma_fast.generate")
_DNA = set("ACGTNacgtn")
_N_RUN = re.compile(r"[Nn]+")
PROG = "python -m enigma_fast.generate"


def _parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=__doc__)
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
    common.add_device_argument(p)
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--benchmark", action="store_true", help="report tokens/s and the prefill and decode times apart")
    p.add_argument("--out", default=None, help="FASTA output file ('-' or none: stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (never an input)")
    p.add_argument(
        "--full-vocab",
        action="store_true",
        help="sample every letter the tokenizer writes (lower case, N, IUPAC codes), not only the letters of the "
        "training data recorded in tokenizer.json (A/C/G/T when it records none)",
    )
    return p


def _check_options(args: argparse.Namespace) -> None:
    """Every option checked before any file is read or any model loaded (UsageError naming the option)."""
    common.require(args.max_new_tokens >= 1, "--max-new-tokens", ">= 1", args.max_new_tokens)
    common.require(args.num_samples >= 1, "--num-samples", ">= 1", args.num_samples)
    t = args.temperature
    common.require(math.isfinite(t) and t >= 0, "--temperature", "a finite number >= 0 (0 = greedy)", t)
    common.require(args.top_k is None or args.top_k >= 1, "--top-k", ">= 1", args.top_k)
    common.require(args.top_p is None or 0.0 < args.top_p <= 1.0, "--top-p", "in (0, 1]", args.top_p)
    common.require(args.max_gap_length >= 1, "--max-gap-length", ">= 1", args.max_gap_length)
    common.parse_device(args.device)
    inputs = [
        (f"{flag} file", path) for flag, path in (("--prompts", args.prompts), ("--infill-fasta", args.infill_fasta))
    ]
    inputs = [(what, path) for what, path in inputs if path is not None]
    for what, path in inputs:
        common.require_path(path, what)
    args.out = common.output_path(args.out)
    common.check_outputs([("--out", args.out)], inputs, force=args.force)


def _check_prompts(prompts: Sequence[str]) -> None:
    if not prompts:
        raise common.UsageError("no prompts given")
    for i, s in enumerate(prompts):
        if not s:
            raise common.UsageError(f"prompt {i + 1} is empty")
        bad = sorted(set(s) - _DNA)
        if bad:
            raise common.UsageError(f"prompt {i + 1} holds characters that are not DNA bases: {''.join(bad)!r}")


def _write_records(path: str | None, records: Sequence[tuple[str, str]]) -> None:
    """FASTA ``>header`` + sequence (80 columns) records, to stdout (``path`` None) or into ``path`` atomically."""
    with common.open_output(path) as sink:
        for header, seq in records:
            sink.write(f">{header}\n")
            for j in range(0, len(seq), 80):
                sink.write(seq[j : j + 80] + "\n")


def _infill_items(args: argparse.Namespace) -> tuple[list[str], list[Any]]:
    """Names and gap specifications: the --infill text, or each --infill-fasta record with its N runs as exact
    gaps."""
    if args.infill is not None:
        return ["infill"], [args.infill]
    names, items = [], []
    for rec in iter_records(args.infill_fasta):
        seq = rec.sequence
        if not _N_RUN.search(seq):
            raise common.UsageError(f"--infill-fasta {args.infill_fasta}: record {rec.name!r} has no run of N to fill")
        bad = sorted(set(seq) - set(FALLBACK_ALPHABET))
        if bad:
            raise common.UsageError(
                f"--infill-fasta {args.infill_fasta}: record {rec.name!r} holds {''.join(bad)!r}, not DNA letters"
            )
        names.append(rec.id if rec.name.split() else f"record_{len(names) + 1}")
        items.append(_N_RUN.sub(lambda m: f"[N:{len(m.group())}]", seq))
    if not items:
        raise common.UsageError(f"--infill-fasta {args.infill_fasta}: no records")
    return names, items


def _run_infill(args: argparse.Namespace) -> int:
    names, items = _infill_items(args)
    where = ["--infill"] if args.infill is not None else [f"--infill-fasta record {n!r}" for n in names]
    for item, name in zip(items, where, strict=True):  # bad gaps fail before the model loads
        parse_masked(item, name)
    model = common.load_checkpoint(args.model, args.device)
    if model.config.model_type != "enigma" and not getattr(model.config, "fim", False):
        raise common.UsageError(
            f"{where[0].split()[0]} needs an Enigma trained with span corruption (python -m enigma_fast.train "
            f"--model enigma --objective span) or an EnBERT trained with --objective fim, got --model {args.model}, "
            f"an {type(model).__name__} (decoder-only, not trained fill-in-the-middle)"
        )
    t0 = time.perf_counter()
    sampling = dict(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        vocab="full" if args.full_vocab else "trained",
    )
    try:
        fills = fill_gaps(
            model, model.tokenizer, items, num_samples=args.num_samples, max_gap_length=args.max_gap_length, **sampling
        )
    except ValueError as err:  # name the record instead of the list position
        m = re.match(r"text\[(\d+)\]: (.*)", str(err))
        if m is None:
            raise
        raise common.UsageError(f"{where[int(m[1])]}: {m[2]}") from None
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
    model = common.load_checkpoint(args.model, args.device)
    tok = model.tokenizer
    batch = [p for p in prompts for _ in range(args.num_samples)]
    ids, lengths = tok.encode_batch(batch, left_pad=True)
    limit = model.config.block_size
    if ids.shape[1] + args.max_new_tokens > limit:
        raise common.UsageError(
            f"the longest prompt is {ids.shape[1]} tokens; with --max-new-tokens {args.max_new_tokens} that "
            f"exceeds the model's limit of {limit} tokens"
        )
    ids, lengths = ids.to(args.device), lengths.to(args.device)
    t0 = time.perf_counter()
    out = (timed_generate if args.benchmark else generate)(
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
    if args.benchmark:  # (tokens, timing): prefill and decode apart
        out, timing = out
        log.info("benchmark: %s", timing.summary())
    if out.is_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    new = out[:, ids.shape[1] :]
    n_tokens = new.numel()
    log.info("%d tokens in %.2f s: %.1f tokens/s (batch %d)", n_tokens, dt, n_tokens / dt, len(batch))
    texts = tok.decode_batch(new.cpu())
    records = [
        (f"sample_{i + 1} prompt={i // args.num_samples + 1} new_tokens={args.max_new_tokens}", prompt + cont)
        for i, (prompt, cont) in enumerate(zip(batch, texts, strict=True))
    ]
    _write_records(args.out, records)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, sample, write FASTA; returns the process exit code (2 with a one-line message on stderr
    for a bad argument or input file)."""
    return common.run_main(_parser(), _run, argv)
