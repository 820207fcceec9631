"""The trainer's data side: tokenizer by flag, the token store of a run, the split, reverse-complement ids, the
base codes the Markov baseline counts, and the checks that fail before any training starts."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np
import torch

from enigma_fast.data.fasta import shipped_genome_path
from enigma_fast.data.tokens import TokenStore, is_token_store, prepare_tokens
from enigma_fast.data.windows import split_segments
from enigma_fast.tokenizers import (
    DEFAULT_SENTINELS,
    CharTokenizer,
    DNATokenizer,
    KMerTokenizer,
    from_file,
    reverse_complement,
)
from enigma_fast.train.baseline import base_codes
from enigma_fast.train.config import TrainConfig

__all__ = ["make_tokenizer", "open_data", "rc_table", "split", "store_base_codes", "trained_letters"]

logger = logging.getLogger(__name__)


def make_tokenizer(cfg: TrainConfig, num_sentinels: int | None = None) -> DNATokenizer:
    """ "char": single base; "kmer": every one of the 4^k k-mers (stride k; a complete vocabulary, so the
    reverse complement of every k-mer has an id); otherwise a tokenizer.json path. Enigma runs get the 64 sentinel
    tokens (span corruption, infilling) and so do fill-in-the-middle EnBERT runs (three are its markers); other
    EnBERT runs none (a next-token model never sees them, and its vocabulary stays what it was before sentinels
    existed), unless ``num_sentinels`` says otherwise; a tokenizer.json is used as it is."""
    case = "upper" if cfg.case == "upper" else "keep"
    wants = cfg.model == "enigma" or cfg.objective == "fim"  # span corruption, infilling, FIM markers
    sentinels = num_sentinels if num_sentinels is not None else DEFAULT_SENTINELS if wants else 0
    if cfg.tokenizer == "char":
        return CharTokenizer(case=case, num_sentinels=sentinels)
    if cfg.tokenizer == "kmer":
        tok = KMerTokenizer(k_mers=cfg.k, case=case, num_sentinels=sentinels)
        tok.build_vocab(["".join(p) for p in itertools.product("ACGT", repeat=cfg.k)])
        return tok
    if not os.path.exists(cfg.tokenizer):
        raise FileNotFoundError(f"tokenizer file not found: {cfg.tokenizer}")
    return from_file(cfg.tokenizer)


def open_data(cfg: TrainConfig, run_dir: Path, prepare: bool = True) -> TokenStore:
    """The run's token store: ``cfg.data`` when it is one prepared folder, else ``run_dir/data`` (prepared from
    the FASTA/FASTQ files, or the shipped genome, when ``prepare``; opened as it is otherwise)."""
    if len(cfg.data) == 1 and is_token_store(cfg.data[0]):
        return TokenStore.open(cfg.data[0])
    for p in cfg.data:
        if not os.path.exists(p):
            raise FileNotFoundError(f"sequence file not found: {p}")
        if os.path.isdir(p):
            raise ValueError(f"{p} is a folder but not a prepared token folder (meta.json and tokens.bin expected)")
    target = run_dir / "data"
    if prepare:
        inputs = cfg.data or [str(shipped_genome_path())]
        return prepare_tokens(inputs, target, make_tokenizer(cfg), case=cfg.case, n_policy=cfg.n_policy)
    return TokenStore.open(target)


def split(cfg: TrainConfig, store: TokenStore) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation segments ``(N, 2)`` per ``cfg.split`` / ``cfg.val_fraction``; ValueError when the
    window does not fit."""
    train, val = split_segments(store.segments, cfg.val_fraction, cfg.split)
    need = cfg.window + 1 if cfg.model == "enbert" else cfg.window
    for name, segs in (("training", train), ("validation", val)):
        longest = int(segs[:, 1].max()) if len(segs) else 0
        if longest < need:
            raise ValueError(
                f"window of {cfg.window} tokens (+1 for the shifted targets) is longer than the {name} data: its "
                f"longest stretch holds {longest} tokens ({store.num_tokens} tokens in all, {cfg.val_fraction:.0%} "
                "held out); use a smaller --window or more data"
            )
    return train, val


def rc_table(tok: DNATokenizer) -> np.ndarray | None:
    """``(vocab,)`` int64: the id of each id's reverse complement (specials map to themselves), or None when
    some piece's reverse complement has no id or the stride is not k (token-level reverse complement is then
    not a reversal of ids)."""
    if tok.stride != tok.k:
        return None
    table = np.arange(tok.vocab_size, dtype=np.int64)
    for piece, i in tok.pieces.items():
        j = tok.pieces.get(reverse_complement(piece))
        if j is None:
            return None
        table[i] = j
    for ch, i in tok.fallback_ids.items():
        table[i] = tok.fallback_ids.get(reverse_complement(ch), i)
    return table


def trained_letters(store: TokenStore, segments: np.ndarray, chunk: int = 1 << 24) -> str:
    """The letters of the tokens in ``segments`` ``(N, 2)`` (offset, count) of the store: which ids occur (counted
    ``chunk`` tokens at a time, so memory stays bounded for a genome-sized store), then the letters of those ids
    (``DNATokenizer.letters_of_ids``). What the model trained on these tokens was taught to write: generation
    samples from it by default (recorded as the tokenizer's ``trained_letters``)."""
    tok = store.tokenizer
    seen = np.zeros(max(tok.vocab_size, 1), dtype=bool)
    for off, n in segments.tolist():
        for i in range(off, off + n, chunk):
            counts = np.bincount(np.asarray(store.tokens[i : min(i + chunk, off + n)]), minlength=len(seen))
            seen |= counts[: len(seen)] > 0
    letters = tok.letters_of_ids(np.flatnonzero(seen).tolist())
    if not letters:
        raise ValueError("the training tokens hold no letter (only special tokens)")
    return letters


def store_base_codes(store: TokenStore, segments: np.ndarray, max_bases: int = 1 << 26) -> np.ndarray:
    """Base codes (see ``baseline.base_codes``) of the given segments, decoded from the ids 4M tokens at a
    time, at most about ``max_bases`` of them (the baseline of a large genome is fitted on its first part)."""
    tok = store.tokenizer

    def pieces():
        done = 0
        for off, n in segments.tolist():
            for i in range(off, off + n, 1 << 22):
                ids = np.asarray(store.tokens[i : min(i + (1 << 22), off + n)], dtype=np.int64)
                text = tok.decode(torch.from_numpy(ids))
                yield text
                done += len(text)
                if done >= max_bases:
                    return

    return base_codes(pieces())
