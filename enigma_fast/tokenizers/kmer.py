"""KMerTokenizer: the seed's k-mer tokenizer API (``build_vocab``, ``encode``, ``decode``, ``save_model``,
``load_model``) on the fast k-mer ops, lossless by default.

Ids: the vocabulary pieces first (0..V-1, in the seed's order: descending count, ties in first-seen order),
then the special tokens ``<pad> <unk> <bos> <eos> <mask>`` (V..V+4), then one fallback token per byte of
``FALLBACK_ALPHABET`` (V+5..V+34), then the sentinels ``<mask_0>`` .. ``<mask_{n-1}>`` (V+35..; n =
``num_sentinels``, 64 by default). A seed vocabulary JSON keeps its ids; specials, fallback and sentinels go after
its largest id.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from enigma_fast.ops import kmer as kops
from enigma_fast.tokenizers._base import (
    _ALPHABET_BYTES,
    _ALPHABET_SET,
    DEFAULT_SENTINELS,
    FALLBACK_ALPHABET,
    SPECIAL_TOKENS,
    DNATokenizer,
    _bytes_tensor,
    _check_num_sentinels,
    _to_bytes,
    first_invalid,
    read_json,
    sentinel_name,
)

__all__ = ["KMerTokenizer"]

logger = logging.getLogger(__name__)


def _strings_of(codes: np.ndarray, k: int) -> list[str]:
    """k-mer strings of 2-bit codes (vectorised)."""
    if len(codes) == 0:
        return []
    shifts = np.arange(2 * (k - 1), -1, -2, dtype=np.int64)
    digits = (codes.astype(np.int64)[:, None] >> shifts[None, :]) & 3
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[digits]
    flat = letters.tobytes().decode("ascii")
    return [flat[i * k : (i + 1) * k] for i in range(len(codes))]


class KMerTokenizer(DNATokenizer):
    """k-mer tokenizer with the seed's API.

    Args:
        k_mers: k, 1..32 (the seed's argument name).
        stride: window step, default k (non-overlapping, as the seed); 1 = overlapping (DNABERT-style).
        case: "keep" (default, lossless: a soft-masked k-mer is not the upper-case one and falls back to
            single-byte tokens) or "upper" (upper-case everything first; lossy).
        unknown: "fallback" (default: a k-mer missing from the vocabulary, N/IUPAC included, becomes its
            single-byte tokens) or "unk" (it becomes ``<unk>``; lossy).
        invalid: "error" (default: a byte outside ``FALLBACK_ALPHABET`` raises ValueError naming it and its
            position) or "unk" (it becomes ``<unk>``).
        num_sentinels: sentinel tokens ``<mask_0>`` .. (span corruption, infilling), 0..1024, default 64.
    """

    kind = "kmer"

    def __init__(
        self,
        k_mers: int = 4,
        stride: int | None = None,
        case: str = "keep",
        unknown: str = "fallback",
        invalid: str = "error",
        num_sentinels: int = DEFAULT_SENTINELS,
    ) -> None:
        super().__init__(k_mers, stride, case, unknown, invalid)
        self._layout([], _check_num_sentinels(num_sentinels))

    @property
    def k_mers(self) -> int:
        return self.k

    @property
    def vocab(self) -> dict[str, int]:
        """The vocabulary pieces (k-mers and tail pieces) -> ids, as the seed's ``vocab``."""
        return self.pieces

    @property
    def id_to_token(self) -> dict[int, str]:
        """id -> token text for every id (pieces, specials, fallback bytes)."""
        out = {i: ch for ch, i in self.fallback_ids.items()}
        out.update({i: s for s, i in self.special_ids.items()})
        out.update({i: p for p, i in self.pieces.items()})
        return out

    def _layout(self, pieces: list[str] | Mapping[str, int], num_sentinels: int | None = None) -> None:
        """Install ``pieces`` (ids by position, or given) then specials, fallback bytes and sentinels after them;
        ``num_sentinels`` None keeps the current count."""
        ids = dict(pieces) if isinstance(pieces, Mapping) else {p: i for i, p in enumerate(pieces)}
        base = max(ids.values(), default=-1) + 1
        specials = {s: base + j for j, s in enumerate(SPECIAL_TOKENS)}
        base += len(SPECIAL_TOKENS)
        fallback = {ch: base + j for j, ch in enumerate(FALLBACK_ALPHABET)}
        base += len(FALLBACK_ALPHABET)
        n = self.num_sentinels if num_sentinels is None else num_sentinels
        specials.update({sentinel_name(j): base + j for j in range(n)})
        self._set_vocab(ids, specials, fallback)

    def build_vocab(self, sequences: Iterable[str]) -> dict[str, int]:
        """Vocabulary of the windows (and short tails) of ``sequences``, ids as the seed's ``build_vocab``.

        Each window ``s[i:i+k]`` (i = 0, stride, ...) and each sequence's non-empty tail is counted; ids go by
        descending count, ties in first-seen order. With stride = k these are exactly the seed's slices
        ``s[i:i+k] for i in range(0, len(s), k)``. Returns ``vocab`` (pieces -> ids).

        Text outside ``FALLBACK_ALPHABET`` follows the ``invalid`` policy, as in ``encode``: "error" raises a
        ValueError naming the sequence, the character and its position; "unk" leaves every window (and tail)
        holding such a byte out of the vocabulary (``encode`` maps those bytes to ``<unk>``). ``sequences`` must
        be an iterable of str/bytes, not one str (that would count its letters as sequences).
        """
        if isinstance(sequences, str | bytes | bytearray):
            raise TypeError(
                f"sequences must be an iterable of DNA strings, got a single {type(sequences).__name__}; "
                "wrap it in a list"
            )
        seqs = list(sequences)
        datas = [self._prepare(_to_bytes(s)) for s in seqs]
        skip_invalid = False
        for j, d in enumerate(datas):
            if d.translate(None, _ALPHABET_BYTES):  # some byte outside the alphabet
                if self.invalid == "unk":
                    skip_invalid = True
                    break
                pos, text = first_invalid(seqs[j]) or first_invalid(d)  # type: ignore[misc]
                raise ValueError(
                    f"sequences[{j}] holds {text!r} at position {pos}, not a letter of FALLBACK_ALPHABET (DNA/IUPAC); "
                    "use invalid='unk' to leave windows holding it out of the vocabulary"
                )
        if skip_invalid:
            pieces = self._count_python(datas, skip_invalid=True)
            self._layout(pieces)
            logger.info("built a %d-mer vocabulary of %d pieces", self.k, len(pieces))
            return self.vocab
        windows = sum(len(d) for d in datas) // self.stride
        # Dense counting touches 4^k slots: worth it when the data has more windows than that.
        dense = self.k <= kops.MAX_DENSE_K and 4**self.k <= 8 * windows + 4096
        pieces = self._count_fast(datas) if dense else None
        if pieces is None:
            pieces = self._count_python(datas)
        self._layout(pieces)
        logger.info("built a %d-mer vocabulary of %d pieces", self.k, len(pieces))
        return self.vocab

    def _count_python(self, datas: list[bytes], skip_invalid: bool = False) -> list[str]:
        """Pieces by descending count, ties in first-seen order; ``skip_invalid``: windows and tails holding a
        byte outside ``FALLBACK_ALPHABET`` are not counted."""
        counts: dict[str, int] = {}
        k, stride = self.k, self.stride
        for data in datas:
            text = data.decode("latin-1")
            n = len(text)
            windows = (n - k) // stride + 1 if n >= k else 0
            for w in range(windows):
                p = text[w * stride : w * stride + k]
                if skip_invalid and not _ALPHABET_SET.issuperset(p):
                    continue
                counts[p] = counts.get(p, 0) + 1
            if windows * stride < n:
                p = text[windows * stride :]
                if skip_invalid and not _ALPHABET_SET.issuperset(p):
                    continue
                counts[p] = counts.get(p, 0) + 1
        return sorted(counts, key=lambda p: -counts[p])  # stable: ties keep first-seen order

    def _count_fast(self, datas: list[bytes]) -> list[str] | None:
        k, stride = self.k, self.stride
        offsets = torch.tensor([0, *(len(d) for d in datas)], dtype=torch.int64).cumsum(0)
        counts, first, other = kops.kmer_count(_bytes_tensor(b"".join(datas)), offsets, k, stride, False)
        if int(other) > 0:
            return None  # windows with other bytes: the exact dict count keeps them as pieces
        codes = torch.nonzero(counts).squeeze(1).numpy()
        cnt = counts.numpy()[codes]
        fst = first.numpy()[codes]
        tails: dict[str, list[int]] = {}
        base = 0
        for data in datas:
            n = len(data)
            windows = (n - k) // stride + 1 if n >= k else 0
            if windows * stride < n:
                entry = tails.setdefault(data[windows * stride :].decode("latin-1"), [0, base + windows])
                entry[0] += 1
            base += windows + 1
        all_cnt = np.concatenate([cnt, np.array([c for c, _ in tails.values()], dtype=np.int64)])
        all_fst = np.concatenate([fst, np.array([f for _, f in tails.values()], dtype=np.int64)])
        order = np.lexsort((all_fst, -all_cnt))
        names = _strings_of(codes, k) + list(tails)
        return [names[i] for i in order]

    # ---- files (the seed's names) ----
    def save_model(self, model_path: str | os.PathLike) -> str:
        """Save to a folder: ``tokenizer.json`` (everything) and ``vocab.json`` (the seed's ``{"kmer": id}``).

        Returns the tokenizer.json path.
        """
        os.makedirs(model_path, exist_ok=True)
        path = os.path.join(model_path, "tokenizer.json")
        self.save(path)
        with open(os.path.join(model_path, "vocab.json"), "w") as f:
            json.dump(self.pieces, f)
        return path

    def load_model(self, path: str | os.PathLike) -> None:
        """Load a tokenizer.json, a folder holding one, or the seed's vocabulary JSON ``{"TTTTT": 0, ...}``.

        A seed vocabulary keeps its ids and this tokenizer's k, stride and policies; specials and fallback
        tokens go after its largest id.
        """
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        path, d = read_json(path)
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a tokenizer file must hold a JSON object, got {type(d).__name__}")
        try:
            if "format" in d:
                other = DNATokenizer.from_dict(d)
                self.__dict__.update(other.__dict__)
                return
            bad = [(p, i) for p, i in d.items() if not isinstance(i, int) or isinstance(i, bool) or i < 0]
            if bad:
                raise ValueError(f"vocabulary ids must be ints >= 0, got {bad[0][0]!r}: {bad[0][1]!r}")
            if len(set(d.values())) != len(d):
                raise ValueError("vocabulary ids must be distinct")
            self._layout(d)  # checks pieces (1..k DNA letters) and that the ids are dense (see _set_vocab)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
