"""A labelled benchmark from real annotation: genes of the shipped genome called by pyrodigal, three tasks, split by
genome position so that the test part is exactly what ``python -m enigma_fast.train`` holds out.

    from enigma_fast.finetune.benchmark import build_benchmark
    build_benchmark("bench/data")      # bench/data/{coding,frame,coding-per-base}/{train,valid,test}.csv

Genes: ``pyrodigal.GeneFinder`` (Prodigal's algorithm, single-genome mode trained on all records). A base is
*coding* when a called gene covers it; its *frame* is that gene's strand and the base's codon position, ``(x -
begin) % 3`` on the + strand and ``(end - x) % 3`` on the - strand (1-based inclusive gene coordinates), so phase 0
is a codon's first base as the gene is read.

Splits, by position (``split_regions``): the records are cut into stretches of A/C/G/T as the trainer's token store
cuts them (``n_policy="split"``, stretches under 2 bases dropped) and split by the trainer's own
``split_segments(val_fraction=0.1, "position")``: the held-out part is **test**; of the rest, the last
``valid_fraction`` of the genome (again by ``split_segments``) is **valid**, the remainder **train**. A window lies
wholly inside one stretch of one split, so no test window holds a base the pretraining run trained on.

Tasks (windows on the genome's forward strand, ``sequence,label`` CSV files with an ``id`` column
``record:start-end``, 1-based inclusive):

* ``coding`` (classification, 2 classes): 300-base windows wholly inside one called gene (``1``) or holding no
  coding base (``0``, intergenic: every ``intergenic_stride`` bases along each long enough intergenic stretch);
  as many coding windows as intergenic ones in each split, drawn at random among all gene-internal starts.
* ``frame`` (classification, 6 classes ``+0 +1 +2 -0 -1 -2``): 300-base windows inside one gene and no other,
  labelled by the strand and codon position of their first base; ``frame_counts`` windows per split, at random.
* ``coding-per-base`` (token classification): 1,000-base windows tiling each stretch (the tail dropped), one
  label per base, ``1`` coding, ``0`` not.

Everything is a function of the genome and ``seed``: the same call writes the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enigma_fast.data.fasta import iter_records, shipped_genome_path
from enigma_fast.data.tokens import check_target, install_folder
from enigma_fast.data.windows import split_segments

__all__ = ["TASK_TYPES", "Genes", "build_benchmark", "call_genes", "make_tasks", "read_genome", "split_regions"]

TASK_TYPES = {"coding": "classification", "frame": "classification", "coding-per-base": "token-classification"}
SPLITS = ("train", "valid", "test")
FORMAT = "enigma_fast.finetune.benchmark"
FRAME_CLASSES = ("+0", "+1", "+2", "-0", "-1", "-2")
_NAMES = {"benchmark.json", *TASK_TYPES}


@dataclass
class Genes:
    """Per record: ``cover`` ``(L,)`` int8 how many genes cover each base; ``gene`` ``(L,)`` int32 the index of the
    one gene covering the base (-1: none or several); ``frame`` ``(L,)`` int8 the base's class in that gene (an
    index into ``FRAME_CLASSES``; -1 where ``gene`` is); ``count`` genes in all."""

    cover: list[np.ndarray]
    gene: list[np.ndarray]
    frame: list[np.ndarray]
    count: int


def read_genome(fasta: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """``(names, sequences)`` of the records of ``fasta`` (default: the shipped genome), upper-cased; names are the
    headers' first words."""
    path = fasta or shipped_genome_path()
    names, seqs = [], []
    for rec in iter_records(path):
        names.append(rec.name.split()[0] if rec.name.split() else rec.name)
        seqs.append(rec.sequence.upper())
    return names, seqs


def call_genes(seqs: Sequence[str]) -> Genes:
    """Genes of the records ``seqs`` by pyrodigal (trained on all of them: one genome), as per-base arrays."""
    try:
        import pyrodigal
    except ImportError:
        raise ImportError("the benchmark needs pyrodigal: pip install 'enigma_fast[reading]'") from None
    finder = pyrodigal.GeneFinder()
    finder.train(*seqs)
    cover, gene, frame, n = [], [], [], 0
    for s in seqs:
        c = np.zeros(len(s), dtype=np.int8)
        g_id = np.full(len(s), -1, dtype=np.int32)
        f = np.full(len(s), -1, dtype=np.int8)
        for g in finder.find_genes(s):
            x = np.arange(g.begin, g.end + 1)  # 1-based
            phase = (x - g.begin) % 3 if g.strand == 1 else (g.end - x) % 3
            c[g.begin - 1 : g.end] += 1
            g_id[g.begin - 1 : g.end] = n
            f[g.begin - 1 : g.end] = phase + (0 if g.strand == 1 else 3)
            n += 1
        g_id[c != 1] = -1
        f[c != 1] = -1
        cover.append(c)
        gene.append(g_id)
        frame.append(f)
    return Genes(cover, gene, frame, n)


def _acgt_runs(seq: str) -> list[tuple[int, int]]:
    """``[start, end)`` of the stretches of A/C/G/T of ``seq`` (upper case), at least 2 bases long."""
    ok = np.isin(np.frombuffer(seq.encode("latin-1"), dtype=np.uint8), np.frombuffer(b"ACGT", dtype=np.uint8))
    d = np.diff(np.r_[0, ok.astype(np.int8), 0])
    return [
        (int(a), int(b)) for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True) if b - a >= 2
    ]


def split_regions(
    seqs: Sequence[str], val_fraction: float = 0.1, valid_fraction: float = 0.05
) -> dict[str, list[tuple[int, int, int]]]:
    """Per split, the stretches ``(record, start, end)`` (0-based half-open base coordinates) of the module doc:
    test = the trainer's held-out part (``split_segments(..., val_fraction, "position")`` on the stretches of the
    char token store); valid = the last ``valid_fraction`` of each record's bases before it; train = the rest."""
    rows, where = [], []
    off = 0
    for r, s in enumerate(seqs):
        for a, b in _acgt_runs(s):
            rows.append((r, off, b - a))
            where.append((r, a, off))
            off += b - a
    segs = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    train, test = split_segments(segs, val_fraction, "position")
    keep = np.asarray([(int(segs[_segment_of(segs, o), 0]), o, n) for o, n in train.tolist()], dtype=np.int64).reshape(
        -1, 3
    )
    train, valid = split_segments(keep, valid_fraction / (1.0 - val_fraction), "position")

    def back(parts: np.ndarray) -> list[tuple[int, int, int]]:
        out = []
        for o, n in parts.tolist():
            j = _segment_of(segs, o)
            r, a, base_off = where[j]
            out.append((r, a + o - base_off, a + o - base_off + n))
        return out

    return {"train": back(train), "valid": back(valid), "test": back(test)}


def _segment_of(segs: np.ndarray, offset: int) -> int:
    return int(np.searchsorted(segs[:, 1], offset, side="right")) - 1


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _starts_inside(gene: np.ndarray, a: int, b: int, w: int) -> list[int]:
    """Starts ``s`` in ``[a, b - w]`` whose window ``[s, s + w)`` lies in one gene and no other (``gene`` constant
    and >= 0 over it)."""
    out: list[int] = []
    g = gene[a:b]
    change = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[change[1:], len(g)]
    for x, y in zip(change.tolist(), ends.tolist(), strict=True):
        if g[x] >= 0 and y - x >= w:
            out.extend(range(a + x, a + y - w + 1))
    return out


def make_tasks(
    seqs: Sequence[str],
    genes: Genes,
    regions: dict[str, list[tuple[int, int, int]]],
    *,
    seed: int = 0,
    window: int = 300,
    per_base_window: int = 1000,
    intergenic_stride: int = 20,
    frame_counts: dict[str, int] | None = None,
) -> dict[str, dict[str, list[tuple[int, int, str]]]]:
    """The windows of every task and split: ``{task: {split: [(record, start, label), ...]}}`` (see the module
    doc; windows ``[start, start + length)``)."""
    counts = frame_counts or {"train": 6000, "valid": 1000, "test": 2000}
    tasks: dict[str, dict[str, list[tuple[int, int, str]]]] = {t: {} for t in TASK_TYPES}
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, i])
        neg, pos, frame = [], [], []
        per_base = []
        for r, a, b in regions[split]:
            cov = genes.cover[r]
            for x, y in _runs(cov[a:b] == 0):  # intergenic stretches inside this region
                neg.extend((r, s) for s in range(a + x, a + y - window + 1, intergenic_stride))
            pos.extend((r, s) for s in _starts_inside(genes.gene[r], a, b, window))
            for s in range(a, b - per_base_window + 1, per_base_window):
                bits = np.where(cov[s : s + per_base_window] > 0, ord("1"), ord("0")).astype(np.uint8)
                per_base.append((r, s, bits.tobytes().decode("ascii")))
        frame_pool = pos
        n = min(len(neg), len(pos))
        pick_neg = sorted(rng.choice(len(neg), size=n, replace=False).tolist()) if n < len(neg) else range(len(neg))
        pick_pos = sorted(rng.choice(len(pos), size=n, replace=False).tolist())
        coding = [(*neg[j], "0") for j in pick_neg] + [(*pos[j], "1") for j in pick_pos]
        order = rng.permutation(len(coding))
        tasks["coding"][split] = [coding[j] for j in order]
        k = min(counts[split], len(frame_pool))
        for j in rng.choice(len(frame_pool), size=k, replace=False).tolist():
            r, s = frame_pool[j]
            frame.append((r, s, FRAME_CLASSES[int(genes.frame[r][s])]))
        tasks["frame"][split] = frame
        tasks["coding-per-base"][split] = per_base
    return tasks


def _is_own(path: Path) -> bool:
    try:
        meta = json.loads((path / "benchmark.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def build_benchmark(
    out: str | os.PathLike,
    fasta: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    valid_fraction: float = 0.05,
    frame_counts: dict[str, int] | None = None,
    genes: Genes | None = None,
) -> dict[str, Any]:
    """Write the benchmark of ``fasta`` (default: the shipped genome) into the folder ``out``: ``TASK/SPLIT.csv``
    for every task of ``TASK_TYPES`` and ``benchmark.json`` (genome, genes, split coordinates, counts per split and
    class, seed). ``out`` may be absent, empty or a benchmark written here before (replaced); anything else is
    refused (FileExistsError) and left as it is. ``genes`` skips the gene calling (``call_genes``). Returns the
    content of benchmark.json."""
    target = Path(os.path.realpath(out))
    check_target(target, _NAMES, _is_own, "build_benchmark")
    names, seqs = read_genome(fasta)
    genes = genes if genes is not None else call_genes(seqs)
    regions = split_regions(seqs, val_fraction, valid_fraction)
    tasks = make_tasks(seqs, genes, regions, seed=seed, frame_counts=frame_counts)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "genome": str(fasta or shipped_genome_path().name),
        "records": names,
        "genes": genes.count,
        "seed": seed,
        "val_fraction": val_fraction,
        "valid_fraction": valid_fraction,
        "regions": {k: [[names[r], a, b] for r, a, b in v] for k, v in regions.items()},
        "tasks": {},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        for task, splits in tasks.items():
            (tmp / task).mkdir()
            length = 1000 if task == "coding-per-base" else 300
            info: dict[str, Any] = {"type": TASK_TYPES[task], "length": length}
            for split, rows in splits.items():
                with open(tmp / task / f"{split}.csv", "w") as f:
                    f.write("id,sequence,label\n")
                    for r, s, label in rows:
                        f.write(f"{names[r]}:{s + 1}-{s + length},{seqs[r][s : s + length]},{label}\n")
                if TASK_TYPES[task] == "classification":
                    classes = sorted({lab for _, _, lab in rows})
                    info[split] = {"records": len(rows), "classes": {c: sum(x[2] == c for x in rows) for c in classes}}
                else:
                    coding = sum(lab.count("1") for _, _, lab in rows)
                    info[split] = {"records": len(rows), "bases": len(rows) * length, "coding_bases": coding}
            meta["tasks"][task] = info
        (tmp / "benchmark.json").write_text(json.dumps(meta, indent=1) + "\n")
        check_target(target, _NAMES, _is_own, "build_benchmark")
        install_folder(tmp, target, last="benchmark.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
