"""``python -m enigma_fast.generate``: sample DNA continuations from a checkpoint folder, written as FASTA.

    python -m enigma_fast.generate --model runs/tiny/final --prompt ACGTTGCA --max-new-tokens 200 --seed 0
    python -m enigma_fast.generate --model DIR --prompts prompts.fa --num-samples 4 --top-k 4 --out out.fa

Each record is the prompt followed by its continuation; tokens/s goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import torch

from enigma_fast.data import read_sequences
from enigma_fast.generation import generate
from enigma_fast.models import load_model

__all__ = ["main"]

log = logging.getLogger("enigma_fast.generate")
_DNA = set("ACGTNacgtn")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m enigma_fast.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one DNA prompt (A/C/G/T/N)")
    src.add_argument("--prompts", help="FASTA/FASTQ file of prompts (plain or gzip)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1, help="continuations per prompt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--out", default=None, help="FASTA output file (default: stdout)")
    return p


def _validate(prompts: Sequence[str]) -> None:
    if not prompts:
        raise SystemExit("error: no prompts given")
    for i, s in enumerate(prompts):
        if not s:
            raise SystemExit(f"error: prompt {i + 1} is empty")
        bad = sorted(set(s) - _DNA)
        if bad:
            raise SystemExit(f"error: prompt {i + 1} holds characters that are not DNA bases: {''.join(bad)!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, sample, write FASTA; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    prompts = [args.prompt] if args.prompt is not None else read_sequences(args.prompts)
    _validate(prompts)
    model = load_model(args.model, device=args.device)
    tok = model.tokenizer
    if tok is None:
        raise SystemExit(f"error: {args.model} has no tokenizer.json")
    batch = [p for p in prompts for _ in range(args.num_samples)]
    ids, lengths = tok.encode_batch(batch, left_pad=True)
    limit = model.config.block_size
    if ids.shape[1] + args.max_new_tokens > limit:
        raise SystemExit(
            f"error: the longest prompt is {ids.shape[1]} tokens; with --max-new-tokens {args.max_new_tokens} that "
            f"exceeds the model's limit of {limit} tokens"
        )
    ids, lengths = ids.to(args.device), lengths.to(args.device)
    t0 = time.perf_counter()
    out = generate(model, ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, prompt_lengths=lengths, eos_id=tok.eos_id, pad_id=tok.pad_id,
                   seed=args.seed, compile=args.compile)
    if out.is_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    new = out[:, ids.shape[1]:]
    n_tokens = new.numel()
    log.info("%d tokens in %.2f s: %.1f tokens/s (batch %d)", n_tokens, dt, n_tokens / dt, len(batch))
    texts = tok.decode_batch(new.cpu())
    sink = open(args.out, "w") if args.out else sys.stdout
    try:
        for i, (prompt, cont) in enumerate(zip(batch, texts)):
            sink.write(f">sample_{i + 1} prompt={i // args.num_samples + 1} new_tokens={args.max_new_tokens}\n")
            seq = prompt + cont
            for j in range(0, len(seq), 80):
                sink.write(seq[j : j + 80] + "\n")
    finally:
        if sink is not sys.stdout:
            sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
