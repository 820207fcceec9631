"""``python -m enigma_fast.embed``: one embedding vector per FASTA/FASTQ record (the mean over its tokens of one
layer's hidden states), and with ``--per-token`` every token's, written to safetensors, npz or npy.

    python -m enigma_fast.embed --model runs/tiny/final reads.fa --out emb.safetensors
    python -m enigma_fast.embed --model DIR reads.fa --out emb.npz --per-token --layer -2

Files (ids = each header's first word, in file order):

* ``.safetensors``: ``embeddings`` ``(N, d_model)`` float32; with ``--per-token`` also ``tokens`` ``(sum T_i,
  d_model)`` and ``offsets`` ``(N+1,)`` int64 (record i's tokens are rows ``offsets[i]:offsets[i+1]``); the ids
  (a JSON list), the layer and the model folder in the file's metadata.
* ``.npz``: the same arrays, plus ``ids``.
* ``.npy``: ``embeddings`` only, the ids in the sidecar ``NAME.ids.txt`` (one a line); no ``--per-token``.

Existing output files are replaced only with ``--force``, an input file never.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from enigma_fast import scoring
from enigma_fast.data.fasta import iter_records
from enigma_fast.score import UsageError, atomic_output, check_outputs

__all__ = ["main", "sidecar_path"]

log = logging.getLogger("enigma_fast.embed")
PROG = "python -m enigma_fast.embed"
FORMATS = (".safetensors", ".npz", ".npy")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="SEQS", help="FASTA/FASTQ files (plain or gzip)")
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--out", required=True, help="output file: .safetensors, .npz or .npy")
    p.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="hidden state: 0..L-1 = after that block, -1 = after the final norm (default), -2 = last block",
    )
    p.add_argument("--per-token", action="store_true", help="also store every token's vector")
    p.add_argument("--batch-size", type=int, default=32, help="sequences (chunks of block_size tokens) per model call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 autocast on CUDA, float32 on CPU",
    )
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def sidecar_path(out: str | os.PathLike) -> Path:
    """The ids file next to an ``.npy`` output: ``emb.npy`` -> ``emb.ids.txt``."""
    out = Path(out)
    return out.with_name(out.name[: -len(".npy")] + ".ids.txt")


def _check_options(args: argparse.Namespace) -> torch.device:
    if not args.out.endswith(FORMATS):
        raise UsageError(f"--out must end in {', '.join(FORMATS)}, got {args.out}")
    if args.per_token and args.out.endswith(".npy"):
        raise UsageError("--per-token needs a .safetensors or .npz --out (an .npy file holds one array)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
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
    outputs = [("--out", args.out)]
    if args.out.endswith(".npy"):
        outputs.append(("--out (its ids file)", str(sidecar_path(args.out))))
    check_outputs(outputs, args.files, args.force)
    return device


def _write(args: argparse.Namespace, ids: list[str], emb: scoring.Embeddings) -> None:
    arrays = {"embeddings": np.ascontiguousarray(emb.mean)}
    if emb.per_token is not None:
        d = emb.mean.shape[1]
        arrays["tokens"] = np.concatenate(emb.per_token) if emb.per_token else np.zeros((0, d), np.float32)
        arrays["offsets"] = np.concatenate([[0], np.cumsum(emb.num_tokens)]).astype(np.int64)
    if args.out.endswith(".safetensors"):
        from safetensors.numpy import save

        meta = {
            "format": "enigma_fast.embeddings",
            "ids": json.dumps(ids),
            "layer": str(emb.layer),
            "model": str(args.model),
        }
        data = save(arrays, metadata=meta)
        with atomic_output(args.out, "wb") as f:
            f.write(data)
    elif args.out.endswith(".npz"):
        with atomic_output(args.out, "wb") as f:
            np.savez(f, ids=np.array(ids, dtype=str), layer=np.int64(emb.layer), **arrays)
    else:
        with atomic_output(str(sidecar_path(args.out))) as f:
            f.write("".join(f"{i}\n" for i in ids))
        with atomic_output(args.out, "wb") as f:
            np.save(f, arrays["embeddings"])


def _run(args: argparse.Namespace) -> int:
    from enigma_fast.models import load_model

    device = _check_options(args)
    records = [r for path in args.files for r in iter_records(path)]
    if not records:
        raise UsageError(f"no records in {', '.join(args.files)}")
    model = load_model(args.model, device=str(device))
    if model.tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer.json")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else None)
    t0 = time.perf_counter()
    emb = scoring.embed(
        model,
        [r.sequence for r in records],
        layer=args.layer,
        per_token=args.per_token,
        batch_size=args.batch_size,
        device=device,
        dtype=dtype,
    )
    dt = time.perf_counter() - t0
    ids = [r.name.split()[0] if r.name.split() else r.name for r in records]
    _write(args, ids, emb)
    log.info(
        "%d records (%d tokens) embedded in %.2f s: layer %d, d_model %d -> %s",
        len(records),
        int(emb.num_tokens.sum()),
        dt,
        emb.layer,
        emb.mean.shape[1],
        args.out,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, embed, write the file; returns the process exit code (2 with a one-line message on stderr
    for a bad argument or input file)."""
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
        os.execv(sys.executable, [sys.executable, "-m", "enigma_fast.embed", *sys.argv[1:]])


if __name__ == "__main__":
    _passive_openmp()
    raise SystemExit(main())
