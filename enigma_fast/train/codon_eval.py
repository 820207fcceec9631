"""``python -m enigma_fast.train.codon_eval``: the codon rhythm of a trained model, per-base bits by codon position
in the genes of held-out DNA, beside an order-k Markov chain and a frame-aware (3-periodic) Markov chain.

    python -m enigma_fast.train.codon_eval --model RUN/final              # the run's data and held-out split
    python -m enigma_fast.train.codon_eval --model DIR genome.fa --val-fraction 0.1 --json

1. The data (a run's ``train_config.json`` when ``--model`` is its ``final/`` folder, else the FASTA files given,
   else the genome shipped with the package) is tokenized and split as the trainer does; the training and held-out
   stretches are decoded back to bases.
2. Genes: pyrodigal (``pip install enigma_fast[reading]``), single-genome mode trained on the training part
   (metagenomic mode when it holds fewer than 100,000 bases), translation table 11, finds the genes of each held-out
   stretch; only complete genes count (not running off a stretch's end).
3. The model scores every held-out stretch on both strands (its per-base track, ``enigma_fast.scoring``, with the
   trainer's evaluation windows), and each gene is read on its own coding strand (``enigma_fast.train.codon``: why).
4. Bits per base at codon positions 1, 2, 3 and the contrast ``bits(3) - (bits(1) + bits(2)) / 2``, for the model,
   for the best order-k Markov chain fitted on both strands of the training part, and for the best 3-periodic chain
   fitted on the coding strands of the training part's genes (found the same way). Every row counts the same bases:
   the counted gene bases that every track scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from enigma_fast.train import codon

__all__ = [
    "available",
    "call_genes",
    "codon_table",
    "end_of_run",
    "evaluate_codons",
    "format_table",
    "main",
    "model_tracks",
    "split_texts",
    "track_buffers",
]

log = logging.getLogger("enigma_fast.train.codon_eval")
PROG = "python -m enigma_fast.train.codon_eval"
MARKOV_ORDERS = tuple(range(0, 11))
FRAME_ORDERS = tuple(range(0, 9))
MIN_SINGLE_MODE = 100_000  # bases pyrodigal's single-genome mode asks for to train; metagenomic mode below
MAX_TRAIN_BASES = 16_000_000  # gene model and Markov chains are fitted on at most this much of the training part
MAX_HELD_BASES = 4_000_000  # at most this much of the held-out part is scored


def _reading_extra() -> Any:
    try:
        import pyrodigal
    except ImportError:
        raise ImportError("the codon evaluation needs pyrodigal: pip install enigma_fast[reading]") from None
    return pyrodigal


def available() -> bool:
    """Whether pyrodigal (the ``reading`` extra) is installed."""
    try:
        _reading_extra()
    except ImportError:
        return False
    return True


def _take(texts: Sequence[str], limit: int) -> list[str]:
    """The first texts (in order) up to ``limit`` bases in all (the last one cut)."""
    out, n = [], 0
    for t in texts:
        if n >= limit:
            break
        out.append(t[: limit - n])
        n += len(out[-1])
    return out


def split_texts(
    tokenizer: Any,
    files: Sequence[str] = (),
    val_fraction: float = 0.1,
    split: str = "position",
    case: str = "upper",
    n_policy: str = "split",
) -> tuple[list[str], list[str]]:
    """The training and held-out stretches of ``files`` (default: the shipped genome) as base strings, exactly as
    the trainer makes them with ``tokenizer`` (``prepare_tokens`` then ``split_segments``)."""
    import torch

    from enigma_fast.data.fasta import shipped_genome_path
    from enigma_fast.data.tokens import prepare_tokens
    from enigma_fast.data.windows import split_segments

    inputs = list(files) or [str(shipped_genome_path())]
    with tempfile.TemporaryDirectory(prefix="codon-eval-") as tmp:
        store = prepare_tokens(inputs, Path(tmp) / "data", tokenizer, case=case, n_policy=n_policy)
        train, held = split_segments(store.segments, val_fraction, split)
        out = tuple(
            [
                tokenizer.decode(torch.from_numpy(np.asarray(store.tokens[o : o + n], dtype=np.int64)))
                for o, n in part.tolist()
            ]
            for part in (train, held)
        )
        del store  # the memory map, before the folder goes
    return out


def call_genes(
    train_texts: Sequence[str], texts: Sequence[str], max_train_bases: int = MAX_TRAIN_BASES
) -> list[list[tuple[int, int, int]]]:
    """Complete genes ``(start, end, strand)`` (0-based, half-open, strand +-1) of each of ``texts``, found by
    pyrodigal trained on ``train_texts`` (at most ``max_train_bases`` of them; metagenomic mode below 100,000
    bases)."""
    pyrodigal = _reading_extra()
    train = [t for t in _take(train_texts, max_train_bases) if t]
    if sum(map(len, train)) >= MIN_SINGLE_MODE:
        finder = pyrodigal.GeneFinder()
        finder.train(*train)
    else:
        finder = pyrodigal.GeneFinder(meta=True)
    out = []
    for t in texts:
        genes = finder.find_genes(t) if len(t) >= 3 else []
        out.append(
            [
                (g.begin - 1, g.end, g.strand)
                for g in genes
                if not g.partial_begin and not g.partial_end and g.end <= len(t)
            ]
        )
    return out


def model_tracks(
    model: Any,
    texts: Sequence[str],
    *,
    window: int | None = None,
    context: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | None = None,
    forward: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Per-base natural-log tracks ``(2, n_i)`` of ``texts`` read by ``model``: row 0 the text, row 1 its reverse
    complement (in its own coordinates), each with ``scoring.token_log_probs``' windows. ``forward``: per-token
    log-probabilities of the texts' own ids already computed (the trainer's final evaluation), used for row 0.

    A non-overlapping k-mer model (``scoring.base_chain``) gets a value per base by the chain rule over its whole
    output distribution (``token_log_probs(..., bases=True)``): base j of a token is charged
    ``-log P(b_j | context, b_1..b_{j-1})``, not a k-th of the token's cost, so its codon positions are told apart
    (``forward`` is not used then: it holds the token values only)."""
    from enigma_fast import scoring
    from enigma_fast.tokenizers import reverse_complement

    tok = model.tokenizer
    chain = scoring.base_chain(tok) is not None
    if chain:
        forward = None
    strands = [tok.encode_tensor(reverse_complement(t)).numpy() for t in texts]
    ids = [tok.encode_tensor(t).numpy() for t in texts] if forward is None else []
    kw = dict(window=window, context=context, batch_size=batch_size, device=device, dtype=dtype, bases=chain)
    lps = scoring.token_log_probs(model, ids + strands, **kw)
    fwd = lps[: len(ids)] if forward is None else list(forward)
    out = []
    for i, t in enumerate(texts):
        plus_ids = ids[i] if forward is None else tok.encode_tensor(t).numpy()
        plus = scoring.per_base_track(fwd[i], plus_ids, tok)
        minus = scoring.per_base_track(lps[len(ids) + i], strands[i], tok)
        if len(plus) != len(t) or len(minus) != len(t):
            raise ValueError(f"the per-base tracks of stretch {i} have {len(plus)}/{len(minus)} bases, not {len(t)}")
        out.append(np.stack([plus, minus]))
    return out


def _rows(tracks: list[np.ndarray], phases: list[np.ndarray], valid: list[np.ndarray]) -> dict[str, Any]:
    """``position_bits`` of a set of stretches (concatenated) in the sense and antisense readings, over the bases
    where ``valid`` ``(2, n_i)`` holds."""
    t = np.where(np.concatenate(valid, axis=1), np.concatenate(tracks, axis=1), np.nan)
    p = np.concatenate(phases, axis=1)
    return {"sense": codon.position_bits(t, p), "antisense": codon.position_bits(t, codon.antisense(p))}


def codon_table(
    held_texts: Sequence[str],
    held_genes: Sequence[Sequence[tuple[int, int, int]]],
    tracks: Sequence[np.ndarray] | None,
    train_texts: Sequence[str],
    train_genes: Sequence[Sequence[tuple[int, int, int]]] | None = None,
    markov_orders: Sequence[int] = MARKOV_ORDERS,
    frame_orders: Sequence[int] = FRAME_ORDERS,
) -> dict[str, Any]:
    """The figures of the module doc for held-out stretches ``held_texts`` with their genes and model ``tracks``
    (``(2, n_i)`` each, from ``model_tracks``; None = the Markov rows only). Markov chains are fitted on both strands
    of ``train_texts``; the frame-aware chain on the coding strands of ``train_genes`` (None = no such row). Each
    chain's order is the one with the fewest bits over the counted bases (as the trainer picks its baseline's)."""
    from enigma_fast.tokenizers import reverse_complement

    phases = [codon.gene_phases(len(t), g) for t, g in zip(held_texts, held_genes, strict=True)]
    held_codes = [np.stack([codon.codes(t), codon.codes(reverse_complement(t))]) for t in held_texts]
    train_codes = [c for t in train_texts for c in (codon.codes(t), codon.codes(reverse_complement(t)))]
    markov = codon.markov_tracks(train_codes, [c for hc in held_codes for c in hc], markov_orders)
    # valid: bases every track scores (the model's, and every chain's: the highest order's context within the run
    # of A/C/G/T), so every row counts the same bases
    kmax = max([*markov_orders, *(frame_orders if train_genes is not None else ())])
    valid = []
    for i, hc in enumerate(held_codes):
        ok = np.stack([codon.context_runs(c) >= kmax + 1 for c in hc])
        valid.append(ok if tracks is None else ok & ~np.isnan(tracks[i]))
    out: dict[str, Any] = {
        "stretches": len(held_texts),
        "held_out_bases": int(sum(map(len, held_texts))),
        "genes": int(sum(map(len, held_genes))),
        "genes_plus": int(sum(g[2] == 1 for gs in held_genes for g in gs)),
    }
    if tracks is not None:
        out["model"] = _rows(list(tracks), phases, valid)
    best = None
    for k in markov_orders:
        tr = [np.stack([markov[k][2 * i], markov[k][2 * i + 1]]) for i in range(len(held_texts))]
        rows = _rows(tr, phases, valid)
        if best is None or rows["sense"]["coding_bits"] < best[1]["sense"]["coding_bits"]:
            best = (k, rows)
    out["markov"] = {"order": best[0], **best[1]}
    if train_genes is not None:
        fit = []
        for t, g in zip(train_texts, train_genes, strict=True):
            ph = codon.gene_phases(len(t), g)
            fit += [(codon.codes(t), ph[0]), (codon.codes(reverse_complement(t)), ph[1])]
        targets = [(hc[s], p[s]) for hc, p in zip(held_codes, phases, strict=True) for s in (0, 1)]
        frame = codon.frame_markov_tracks(fit, targets, frame_orders)
        best = None
        for k in frame_orders:
            tr = [np.stack([frame[k][2 * i], frame[k][2 * i + 1]]) for i in range(len(held_texts))]
            sense = _rows(tr, phases, valid)["sense"]
            if best is None or sense["coding_bits"] < best[1]["coding_bits"]:
                best = (k, sense)
        out["frame_markov"] = {"order": best[0], "sense": best[1]}
    return out


def evaluate_codons(
    model: Any,
    train_texts: Sequence[str],
    held_texts: Sequence[str],
    *,
    window: int | None = None,
    context: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | None = None,
    forward: Sequence[np.ndarray] | None = None,
    frame_markov: bool = True,
    max_train_bases: int = MAX_TRAIN_BASES,
    max_held_bases: int = MAX_HELD_BASES,
    markov_orders: Sequence[int] = MARKOV_ORDERS,
) -> dict[str, Any]:
    """Genes (``call_genes``), the model's tracks (``model_tracks``; ``forward`` as there, one array per held-out
    text) and ``codon_table``, with the seconds each took under ``"seconds"``. At most ``max_held_bases`` of the
    held-out texts (whole texts in order, or the first one cut) and ``max_train_bases`` of the training texts are
    used. ``model`` None: the Markov rows only."""
    t0 = time.perf_counter()
    held = _take(held_texts, max_held_bases)
    if forward is not None and any(len(a) != len(b) for a, b in zip(held, held_texts, strict=False)):
        forward = None  # a cut text: its ids are not those the forward log-probabilities are of
    if forward is not None:
        forward = list(forward)[: len(held)]
    train = _take(train_texts, max_train_bases)
    genes = call_genes(train, held, max_train_bases)
    train_genes = call_genes(train, train, max_train_bases) if frame_markov else None
    t1 = time.perf_counter()
    tracks = None
    if model is not None:
        tracks = model_tracks(
            model,
            held,
            window=window,
            context=context,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            forward=forward,
        )
    t2 = time.perf_counter()
    out = codon_table(held, genes, tracks, train, train_genes, markov_orders)
    out["seconds"] = {
        "genes": round(t1 - t0, 2),
        "model": round(t2 - t1, 2),
        "markov": round(time.perf_counter() - t2, 2),
    }
    return out


def format_table(res: dict[str, Any], name: str = "model") -> str:
    """The figures of ``codon_table`` / ``evaluate_codons`` as a small text table (bits per base)."""
    head = f"{'codon position (bits/base)':<34}{'1':>8}{'2':>8}{'3':>8}{'contrast':>10}{'coding':>8}"
    sense = res["markov"]["sense"]
    lines = [
        f"codon rhythm: {res['genes']} genes in {res['held_out_bases']} held-out bases ({res['genes_plus']} on the "
        f"plus strand), each read on its coding strand; {sum(sense['bases'])} gene bases counted",
        head,
    ]

    def row(label: str, r: dict[str, Any]) -> str:
        b = r["bits"]
        return f"{label:<34}{b[0]:>8.4f}{b[1]:>8.4f}{b[2]:>8.4f}{r['contrast']:>+10.4f}{r['coding_bits']:>8.4f}"

    if "model" in res:
        lines.append(row(name, res["model"]["sense"]))
    lines.append(row(f"order-{res['markov']['order']} Markov", sense))
    if "frame_markov" in res:
        lines.append(row(f"frame-aware Markov, order {res['frame_markov']['order']}", res["frame_markov"]["sense"]))
    anti = [(name, res["model"]["antisense"])] if "model" in res else []
    anti.append((f"order-{res['markov']['order']} Markov", res["markov"]["antisense"]))
    lines.append(
        "antisense reading (each gene from the other strand's track): "
        + ", ".join(f"{n} {r['bits'][0]:.4f}/{r['bits'][1]:.4f}/{r['bits'][2]:.4f}" for n, r in anti)
    )
    return "\n".join(lines)


def track_buffers(val_segs: np.ndarray, max_held_bases: int = MAX_HELD_BASES) -> dict[int, np.ndarray]:
    """NaN buffers ``{offset: (n,) float64}`` for the trainer's final evaluation to keep the per-token log-probabilities
    of the held-out segments ``(S, 2)`` the codon evaluation reads: whole segments in order while they hold at most
    ``max_held_bases`` tokens in all (at least the first)."""
    out: dict[int, np.ndarray] = {}
    total = 0
    for off, n in np.asarray(val_segs, dtype=np.int64).reshape(-1, 2).tolist():
        if out and total + n > max_held_bases:
            break
        out[off] = np.full(n, np.nan)
        total += n
    return out


def end_of_run(
    model: Any,
    tokens: np.ndarray,
    train_segs: np.ndarray,
    tracks: dict[int, np.ndarray],
    *,
    window: int,
    context: int,
    device: Any = "cpu",
    batch_size: int = 32,
    frame_markov: bool = False,
    markov_orders: Sequence[int] = MARKOV_ORDERS,
) -> dict[str, Any]:
    """The codon evaluation at the end of a training run: the held-out segments of ``tracks`` (``track_buffers``,
    filled by the final evaluation: the forward strand's per-token log-probabilities) decoded from ``tokens``, the
    training segments (at most ``MAX_TRAIN_BASES``) for the gene model and the Markov chain, the reverse strand
    scored with the run's evaluation windows. Without the frame-aware chain unless ``frame_markov``; the Markov
    chain's order chosen among ``markov_orders`` (the trainer passes its baseline's order)."""
    import torch

    tok = model.tokenizer

    def text(off: int, n: int) -> str:
        return tok.decode(torch.from_numpy(np.asarray(tokens[off : off + n], dtype=np.int64)))

    train, total = [], 0
    for off, n in np.asarray(train_segs, dtype=np.int64).reshape(-1, 2).tolist():
        if total >= MAX_TRAIN_BASES:
            break
        train.append(text(off, min(n, MAX_TRAIN_BASES - total)))
        total += len(train[-1])
    offsets = sorted(tracks)
    held = [text(off, len(tracks[off])) for off in offsets]
    return evaluate_codons(
        model,
        train,
        held,
        window=window,
        context=context,
        batch_size=batch_size,
        device=device,
        forward=[tracks[off] for off in offsets],
        frame_markov=frame_markov,
        markov_orders=markov_orders,
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="*", help="FASTA/FASTQ files (default: the run's data, else the shipped genome)")
    p.add_argument("--model", required=True, help="model folder (a run's final/ folder: the run's data and split)")
    p.add_argument("--val-fraction", type=float, default=None, help="held-out tail of every record (default 0.1)")
    p.add_argument("--window", type=int, default=None, help="tokens per model call (default: the run's window)")
    p.add_argument(
        "--context", type=int, default=None, help="least left context of a scored token (default: the run's)"
    )
    p.add_argument("--no-frame-markov", action="store_true", help="leave out the frame-aware Markov row")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: the model's (float32)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return p


def _run_config(model_dir: str) -> dict[str, Any]:
    """The ``train_config.json`` of the run whose ``final/`` folder ``model_dir`` is ({} for another folder)."""
    path = Path(model_dir).resolve()
    cfg = path.parent / "train_config.json"
    if path.name != "final" or not cfg.is_file():
        return {}
    try:
        d = json.loads(cfg.read_text())
    except ValueError as err:
        raise ValueError(f"{cfg}: not a JSON file ({err})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{cfg} must hold a JSON object")
    return d


def _windows(cfg: dict[str, Any], kind: str) -> tuple[int | None, int | None]:
    """The run's evaluation windows: EnBERT ``(window, window + 1 - eval_stride)``, Enigma ``(window, src_len)``."""
    if not cfg:
        return None, None
    window = int(cfg.get("window", 256))
    if kind == "enigma":
        return window, int(cfg.get("src_len") or window // 2)
    stride = int(cfg.get("eval_stride") or max(1, 3 * window // 4))
    return window, window + 1 - min(stride, window)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, evaluate, print; returns the exit code (2 with a one-line message for a bad argument)."""
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        _reading_extra()
        for p in a.data:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"sequence file not found: {p}")
        if a.val_fraction is not None and not 0.0 < a.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1), got {a.val_fraction}")
        if a.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {a.batch_size}")
        from enigma_fast.models import load_model

        cfg = _run_config(a.model)
        model = load_model(a.model, device=a.device)
        if model.tokenizer is None:
            raise ValueError(f"--model {a.model}: the model folder has no tokenizer.json")
        data = a.data or cfg.get("data") or []
        window, context = _windows(cfg, model.config.model_type)
        window = a.window if a.window is not None else window
        context = a.context if a.context is not None else context
        train, held = split_texts(
            model.tokenizer,
            data,
            a.val_fraction if a.val_fraction is not None else float(cfg.get("val_fraction", 0.1)),
            cfg.get("split", "position"),
            cfg.get("case", "upper"),
            cfg.get("n_policy", "split"),
        )
        res = evaluate_codons(
            model,
            train,
            held,
            window=window,
            context=context,
            batch_size=a.batch_size,
            device=a.device,
            dtype=a.dtype,
            frame_markov=not a.no_frame_markov,
        )
    except (ImportError, OSError, ValueError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    res["model_dir"] = a.model
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(format_table(res, name=f"model ({a.model})" if len(a.model) < 20 else "model"))
    return 0 if all(math.isfinite(x) for x in res["markov"]["sense"]["bits"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
