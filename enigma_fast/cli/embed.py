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
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from enigma_fast import scoring
from enigma_fast.cli import _common as common
from enigma_fast.data.fasta import iter_records

__all__ = ["main", "sidecar_path"]

log = logging.getLogger("enigma_fast.embed")
PROG = "python -m enigma_fast.embed"
FORMATS = (".safetensors", ".npz", ".npy")


def _parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=__doc__)
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
    common.add_device_argument(p)
    common.add_dtype_argument(p)
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def sidecar_path(out: str | os.PathLike) -> Path:
    """The ids file next to an ``.npy`` output: ``emb.npy`` -> ``emb.ids.txt``."""
    out = Path(out)
    return out.with_name(out.name[: -len(".npy")] + ".ids.txt")


def _check_options(args: argparse.Namespace) -> torch.device:
    """Every option checked before any file is read or any model loaded (UsageError naming the option)."""
    if not args.out.endswith(FORMATS):
        raise common.UsageError(f"--out must end in {', '.join(FORMATS)}, got {args.out}")
    if args.per_token and args.out.endswith(".npy"):
        raise common.UsageError("--per-token needs a .safetensors or .npz --out (an .npy file holds one array)")
    common.require(args.batch_size >= 1, "--batch-size", ">= 1", args.batch_size)
    device = common.parse_device(args.device)
    common.require_path(args.model, "--model folder", folder=True)
    for f in args.files:
        common.require_path(f, "sequence file")
    outputs = [("--out", args.out)]
    if args.out.endswith(".npy"):
        outputs.append(("--out (its ids file)", str(sidecar_path(args.out))))
    common.check_outputs(outputs, [(f"input file {f}", f) for f in args.files], force=args.force)
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
        with common.open_output(args.out, "wb") as f:
            f.write(data)
    elif args.out.endswith(".npz"):
        with common.open_output(args.out, "wb") as f:
            np.savez(f, ids=np.array(ids, dtype=str), layer=np.int64(emb.layer), **arrays)
    else:
        with common.open_output(str(sidecar_path(args.out))) as f:
            f.write("".join(f"{i}\n" for i in ids))
        with common.open_output(args.out, "wb") as f:
            np.save(f, arrays["embeddings"])


def _run(args: argparse.Namespace) -> int:
    device = _check_options(args)
    records = [r for path in args.files for r in iter_records(path)]
    if not records:
        raise common.UsageError(f"no records in {', '.join(args.files)}")
    model = common.load_checkpoint(args.model, device)
    t0 = time.perf_counter()
    emb = scoring.embed(
        model,
        [r.sequence for r in records],
        layer=args.layer,
        per_token=args.per_token,
        batch_size=args.batch_size,
        device=device,
        dtype=common.autocast_dtype(args.dtype, device),
    )
    dt = time.perf_counter() - t0
    _write(args, [r.id for r in records], emb)
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
    return common.run_main(_parser(), _run, argv)
