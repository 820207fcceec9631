"""``python -m enigma_fast.train``: train a DNA language model; with no arguments, the tiny EnBERT on the shipped
C. diphtheriae genome (last 10% held out), reporting held-out bits per base next to a Markov baseline.

    python -m enigma_fast.train                                   # the zero-config run (CPU: ~10 minutes)
    python -m enigma_fast.train genome.fa.gz --tokenizer kmer --k 3 --max-steps 5000 --out runs/mine
    python -m enigma_fast.train --config run.toml --lr 1e-3       # file, then flags on top
    python -m enigma_fast.train --resume runs/mine                # continue exactly where it stopped
    python -m enigma_fast.train --resume runs/mine --max-steps 10000   # ... and train it on to step 10000
    python -m enigma_fast.train prepare hg38.fa.gz --out data/hg38 --tokenizer kmer --k 6

A run or prepare writes only into a new folder, an empty one, or its own earlier output; it never removes or
overwrites a file it did not write. A bad input or option is reported in one line, with exit code 2.
    torchrun --nproc_per_node 4 -m enigma_fast.train genome.fa    # DDP (NCCL on GPU, gloo on CPU)
    torchrun --nproc_per_node 8 -m enigma_fast.train data/hg38 --model-preset 2.5b --strategy fsdp
    python -m enigma_fast.train --model-preset 2.5b --strategy fsdp --world-size 8 --dry-run   # memory per GPU
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from enigma_fast.cli import _common as common
from enigma_fast.train.config import PRESETS, TrainConfig, add_flags, load_config_file, parse_overrides
from enigma_fast.train.resume import resume_values

log = logging.getLogger("enigma_fast.train")


def _train_parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog="python -m enigma_fast.train", description=__doc__)
    p.add_argument(
        "data",
        nargs="*",
        default=argparse.SUPPRESS,
        help="FASTA/FASTQ files (plain or gzip) or one prepared token folder; none = the shipped genome",
    )
    p.add_argument("--config", help="TOML or JSON file of options (field names as keys)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print parameters, memory per GPU and tokens per step (model on the meta device), then exit",
    )
    p.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        help="ranks the --dry-run estimate assumes (default: WORLD_SIZE under torchrun, else 1)",
    )
    add_flags(p)
    p.epilog = "presets: " + ", ".join(sorted(PRESETS))
    return p


def _user_error(err: BaseException) -> int:
    """Report a user error as one line on stderr; returns the exit code 2."""
    log.error("%s", common.one_line(err) or type(err).__name__)
    return 2


def _prepare_main(argv: Sequence[str]) -> int:
    from enigma_fast.data.tokens import prepare_tokens
    from enigma_fast.tokenizers import DEFAULT_SENTINELS
    from enigma_fast.train.data import make_tokenizer

    p = common.ArgumentParser(
        prog="python -m enigma_fast.train prepare",
        description="Tokenize FASTA/FASTQ files into a memory-mapped token folder.",
        formatter_class=argparse.HelpFormatter,
    )
    p.add_argument("inputs", nargs="+")
    p.add_argument(
        "--out",
        required=True,
        help="the store folder: new, empty, or a store prepared before (replaced); nothing else is touched",
    )
    p.add_argument("--tokenizer", default="char")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--case", default="upper", choices=["upper", "keep"])
    p.add_argument("--n-policy", default="split", choices=["split", "keep"])
    a = p.parse_args(argv)
    try:
        cfg = TrainConfig(tokenizer=a.tokenizer, k=a.k, case=a.case, n_policy=a.n_policy)
        tok = make_tokenizer(cfg, num_sentinels=DEFAULT_SENTINELS)  # with sentinels: the store serves either model
        store = prepare_tokens(a.inputs, a.out, tok, case=a.case, n_policy=a.n_policy)
    except (OSError, ValueError) as err:
        return _user_error(err)
    log.info("%s: %d tokens, %d bases, %d records", a.out, store.num_tokens, store.num_bases, len(store.records))
    return 0


def _dry_run(cfg: TrainConfig, world: int | None) -> int:
    """Print the ``--dry-run`` estimate of ``cfg`` over ``world`` ranks (see ``estimate``); nothing is allocated."""
    from enigma_fast.train.data import make_tokenizer
    from enigma_fast.train.estimate import model_shape, report

    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    if world < 1:
        raise ValueError(f"--world-size must be >= 1, got {world}")
    tok = make_tokenizer(cfg)
    text = report(cfg, model_shape(cfg, tok.vocab_size, tok.bos_id), world, "cpu" if cfg.device == "cpu" else "cuda")
    if os.environ.get("RANK", "0") == "0":
        print(text)
    return 0


def _report(s: dict) -> None:
    """The end-of-run summary on stdout."""
    print(f"run folder: {s['run_dir']}  (final model: {s.get('final_model', '-')})")
    span = s.get("objective", {}).get("name") == "span"  # the held-out figure is then the infill one
    if "infill" in s:  # fill-in-the-middle: the same masked spans, both flanks
        v = s["infill"]
        print(
            f"held-out infill bits/base (masked spans, both flanks, fill-in-the-middle): {v['bpb']:.4f}  (accuracy "
            f"{v['accuracy']:.3f}, {int(v['bases'])} bases in {int(v['spans'])} spans)"
        )
    if "val" in s and span:
        v = s["val"]
        print(
            f"held-out infill bits/base (masked spans, both flanks): {v['bpb']:.4f}  (accuracy {v['accuracy']:.3f}, "
            f"{int(v['bases'])} bases in {int(v['spans'])} spans; {v['bpb_with_ends']:.4f} counting span ends)"
        )
    if "infill_compare" in s:
        c = s["infill_compare"]
        print(f"same spans, EnBERT from the left only ({c['enbert']}): {c['bpb']:.4f} bits/base")
    if "val" in s:
        v, b = s["val"], s["baseline"]
        if not span:
            print(
                f"held-out bits/base: {v['bpb']:.4f}  (next-token accuracy {v['accuracy']:.3f}, "
                f"{int(v['bases'])} bases scored)"
            )
        print(
            f"order-{b['order']} Markov baseline: {b['bpb']:.4f} bits/base  "
            f"({'model better' if v['bpb'] < b['bpb'] else 'baseline better'} by {abs(b['bpb'] - v['bpb']):.4f})"
        )
    if "codon" in s:
        from enigma_fast.train.codon_eval import format_table

        print(format_table(s["codon"]))
    if s.get("sample", {}).get("kind") == "infill":
        sm = s["sample"]
        print(f"held-out gap of {len(sm['truth'])} bases between {len(sm['left'])}-base flanks:")
        print(f"filled: {sm['fill']}")
        print(f"true:   {sm['truth']}")
    elif "sample" in s:
        sm = s["sample"]
        print(f"held-out prompt ({len(sm['prompt'])} bases): {sm['prompt']}")
        print(f"sampled continuation:  {sm['continuation']}")
        print(f"true continuation:     {sm['truth']}")
    print(f"steps: {s['step']}/{s['max_steps']}, wall time {s.get('train_s', 0):.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and train (or ``prepare``); returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if argv[:1] == ["prepare"]:
        return _prepare_main(argv[1:])
    from enigma_fast.train.loop import train  # torch and the models load only when training

    args = vars(_train_parser().parse_args(argv))
    config_file, resume = args.pop("config"), args.pop("resume")
    dry_run, world = args.pop("dry_run"), args.pop("world_size")
    try:
        if "model_overrides" in args:
            args["model_overrides"] = parse_overrides(args["model_overrides"])
        if resume:
            cfg = TrainConfig.from_dict(resume_values(Path(resume), args))
        else:
            file_values = load_config_file(config_file) if config_file else {}
            cfg = TrainConfig.resolve(file_values=file_values, flags=args)
        if dry_run:
            return _dry_run(cfg, world)
        summary = train(cfg, run_dir=resume, resume=bool(resume))
    except (OSError, ValueError) as err:
        import torch.distributed as dist

        if dist.is_initialized():  # e.g. the one-rank group of --strategy fsdp, when a check failed after it started
            dist.destroy_process_group()
        if getattr(err, "peer_error", False):  # rank 0's error, raised here too so that this rank ends: rank 0 says it
            return 2
        return _user_error(err)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        _report(summary)
    if dist.is_initialized():
        dist.destroy_process_group()
    sig = summary.get("interrupted_by_signal", 0)
    return 128 + sig if sig else 0


def launch() -> None:
    """``python -m enigma_fast.train``: the OpenMP policy (not for ``prepare``, which runs no OpenMP loop), then
    :func:`main`."""
    common.launch("enigma_fast.train", main, passive=sys.argv[1:2] != ["prepare"])
