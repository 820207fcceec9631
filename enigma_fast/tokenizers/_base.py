"""Shared machinery of the DNA tokenizers: vocabulary layout, policies, encode/decode over the k-mer ops, and
the tokenizer.json file (format in ``enigma_fast.tokenizers``)."""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from enigma_fast.ops import kmer as kops

__all__ = [
    "DEFAULT_SENTINELS",
    "FALLBACK_ALPHABET",
    "MAX_SENTINELS",
    "SPECIAL_TOKENS",
    "DNATokenizer",
    "reverse_complement",
    "sentinel_name",
]

# The five special tokens, in the fixed order of their ids.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>")
# Sentinel tokens <mask_0>, <mask_1>, ... (span corruption and infilling): special tokens too, with ids after every
# other id of the vocabulary, so a vocabulary without them (an older tokenizer.json) keeps all its ids.
DEFAULT_SENTINELS = 64
MAX_SENTINELS = 1024
_SENTINEL_RE = re.compile(r"<mask_(0|[1-9][0-9]*)>")
# Bytes that always have a single-character token: bases, N and the IUPAC ambiguity codes, in both cases.
FALLBACK_ALPHABET = "ACGTN" + "acgtn" + "RYSWKMBDHV" + "ryswkmbdhv"
CASE_POLICIES = ("keep", "upper")
UNKNOWN_POLICIES = ("fallback", "unk")
INVALID_POLICIES = ("error", "unk")
FORMAT = "enigma_fast.tokenizer"
FORMAT_VERSION = 1
# tokenizer.json keys, all required
FILE_KEYS = (
    "format",
    "version",
    "type",
    "k",
    "stride",
    "case",
    "unknown",
    "invalid",
    "pieces",
    "special_tokens",
    "fallback",
)
# Ids need not be 0..n-1, but the tables are sized by the largest id: it must stay below 2 * n + MAX_ID_SLACK for
# n distinct ids (a seed vocabulary with a gap is fine; one id of 10,000,000 would allocate gigabytes).
MAX_ID_SLACK = 1024
MAX_STRIDE = 2**30  # the k-mer kernels' limit (csrc/kmer)
_ALPHABET_BYTES = FALLBACK_ALPHABET.encode("ascii")
_ALPHABET_SET = frozenset(FALLBACK_ALPHABET)

_COMPLEMENT = bytes.maketrans(b"ACGTRYKMBDHVNacgtrykmbdhvn", b"TGCAYRMKVHDBNtgcayrmkvhdbn")


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA string: A<->T, C<->G, IUPAC codes mapped to their complements, case kept."""
    return seq.encode("latin-1").translate(_COMPLEMENT)[::-1].decode("latin-1")


def sentinel_name(i: int) -> str:
    """The text of sentinel ``i``: ``<mask_i>``."""
    return f"<mask_{i}>"


def _check_num_sentinels(n: Any) -> int:
    if not _is_int(n) or not 0 <= n <= MAX_SENTINELS:
        raise ValueError(f"num_sentinels must be an int in [0, {MAX_SENTINELS}], got {_got(n)}")
    return n


def _to_bytes(seq: str | bytes) -> bytes:
    if isinstance(seq, str):
        return seq.encode("utf-8")
    if isinstance(seq, bytes | bytearray):
        return bytes(seq)
    raise TypeError(f"a sequence must be str or bytes, got {type(seq).__name__}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _got(value: Any) -> str:
    """``type value`` for error messages, kept to one short line."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def first_invalid(seq: str | bytes) -> tuple[int, str] | None:
    """Position and text of the first character (str) or byte (bytes) of ``seq`` outside ``FALLBACK_ALPHABET``,
    or None when every one is a DNA/IUPAC letter."""
    if isinstance(seq, str):
        if seq.isascii() and not seq.encode("ascii").translate(None, _ALPHABET_BYTES):
            return None
        return next((j, ch) for j, ch in enumerate(seq) if ch not in _ALPHABET_SET)
    if not bytes(seq).translate(None, _ALPHABET_BYTES):
        return None
    return next((j, chr(b) if b < 128 else f"0x{b:02x}") for j, b in enumerate(seq) if b not in _ALPHABET_BYTES)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _join_ascii(seqs: Sequence[str | bytes]) -> tuple[bytes, torch.Tensor] | None:
    """A batch of ASCII str as one bytes object and its offsets ``(B+1,)`` int64, with one join and one encode
    instead of a bytes object per sequence (the per-sequence way costs more than the encoding kernel for short
    reads); None when some item is not a str, or not ASCII (utf-8 lengths then differ from str lengths)."""
    try:
        text = "".join(seqs)  # type: ignore[arg-type]
    except TypeError:
        return None
    if not text.isascii():
        return None
    lengths = array("q", [0])
    lengths.extend(map(len, seqs))  # type: ignore[arg-type]
    return text.encode("ascii"), torch.frombuffer(lengths, dtype=torch.int64).cumsum(0)


def read_json(path: str | os.PathLike) -> tuple[str, Any]:
    """``(path, content)`` of a tokenizer file: ``path``, or ``path/tokenizer.json`` when it is a folder, and its
    parsed JSON. FileNotFoundError when missing; ValueError (one line, starting with the path) when it is not
    JSON."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return path, json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, absurd nesting
        raise ValueError(f"{path}: not a JSON file ({type(err).__name__}: {str(err)[:200]})") from None


class DNATokenizer:
    """A k-mer (k = 1: single-base) tokenizer over a fixed vocabulary of pieces, specials and fallback bytes.

    Subclasses decide the id layout; this class holds ``pieces`` (vocabulary string -> id: k-mers, and tail
    pieces shorter than k), ``special_ids`` (special token -> id) and ``fallback_ids`` (byte -> id), the
    policies, and the lookup tensors built from them.
    """

    kind = "base"
    # tokenizer.json "type" -> class: every subclass with its own ``kind`` is entered when it is defined, so loading
    # by type needs no import of the subclasses here
    _kinds: dict[str, type[DNATokenizer]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            DNATokenizer._kinds[cls.kind] = cls

    def __init__(self, k: int, stride: int | None, case: str, unknown: str, invalid: str) -> None:
        stride = k if stride is None else stride
        if isinstance(k, bool) or isinstance(stride, bool):  # True is an int to Python, not a k
            raise ValueError(f"k and stride must be ints, got k={k!r}, stride={stride!r}")
        kops._check_k(k, stride)
        if stride > MAX_STRIDE:
            raise ValueError(f"stride must be an int in 1..2^30 (the k-mer ops' limit), got {stride}")
        for name, value, allowed in (
            ("case", case, CASE_POLICIES),
            ("unknown", unknown, UNKNOWN_POLICIES),
            ("invalid", invalid, INVALID_POLICIES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.k, self.stride = k, stride
        self.case, self.unknown, self.invalid = case, unknown, invalid
        self.pieces: dict[str, int] = {}
        self.special_ids: dict[str, int] = {}
        self.fallback_ids: dict[str, int] = {}

    # ---- vocabulary ----
    def _set_vocab(
        self, pieces: Mapping[str, int], special_ids: Mapping[str, int], fallback: Mapping[str, int]
    ) -> None:
        """Install and check a vocabulary (the key names below are those of tokenizer.json).

        ``pieces``: non-empty strings of at most k letters of ``FALLBACK_ALPHABET``; ``special_tokens``: exactly
        ``SPECIAL_TOKENS``; ``fallback``: single letters of ``FALLBACK_ALPHABET``. Ids are ints in [0, 2^31 - 1),
        one string per id (a piece and a fallback letter may share an id when they are the same text), and dense
        enough: largest id < 2 * (number of distinct ids) + ``MAX_ID_SLACK``. ValueError naming the key otherwise.
        """
        tables = {"pieces": pieces, "special_tokens": special_ids, "fallback": fallback}
        for key, table in tables.items():
            if not isinstance(table, Mapping):
                raise ValueError(f"tokenizer {key!r} must be an object of token -> id, got {type(table).__name__}")
        for text in pieces:
            if not isinstance(text, str) or not 0 < len(text) <= self.k or not _ALPHABET_SET.issuperset(text):
                raise ValueError(
                    f"tokenizer 'pieces' must be 1..k={self.k} letters of FALLBACK_ALPHABET, got {_got(text)}"
                    + (
                        f"; a {len(text)}-mer vocabulary needs k={len(text)}"
                        if isinstance(text, str) and len(text) > self.k and _ALPHABET_SET.issuperset(text)
                        else ""
                    )
                )
        extra = [s for s in special_ids if s not in SPECIAL_TOKENS]
        n_sent = len(extra)
        if (
            not set(SPECIAL_TOKENS) <= set(special_ids)
            or n_sent > MAX_SENTINELS
            or set(extra) != {sentinel_name(j) for j in range(n_sent)}
        ):
            shown = list(special_ids)
            shown = shown if len(shown) <= 8 else [*shown[:8], f"... ({len(shown)} keys)"]
            raise ValueError(
                f"tokenizer 'special_tokens' must have exactly the keys {list(SPECIAL_TOKENS)} plus the sentinels "
                f"'<mask_0>' .. '<mask_n-1>' (n in [0, {MAX_SENTINELS}]), got {shown}"
            )
        for text in fallback:
            if not isinstance(text, str) or len(text) != 1 or text not in _ALPHABET_SET:
                raise ValueError(
                    f"tokenizer 'fallback' keys must be single letters of FALLBACK_ALPHABET, got {_got(text)}"
                )
        # One id, one string: a piece and a fallback byte may share an id only when they are the same text.
        owner: dict[int, str] = {}
        for key, table in tables.items():
            for text, i in table.items():
                if not _is_int(i) or not 0 <= i < 2**31 - 1:
                    raise ValueError(f"tokenizer {key!r} ids must be ints in [0, 2^31 - 1), got {text!r}: {_got(i)}")
                if owner.setdefault(i, text) != text:
                    raise ValueError(f"tokenizer id {i} is given to both {owner[i]!r} and {text!r}")
        n, top = len(owner), max(owner, default=-1)
        if top >= 2 * n + MAX_ID_SLACK:
            raise ValueError(
                f"tokenizer ids must be dense: the largest id is {top} for {n} distinct ids (at most "
                f"2 * {n} + {MAX_ID_SLACK} - 1 = {2 * n + MAX_ID_SLACK - 1} allowed); renumber them 0..n-1"
            )
        self.pieces = dict(pieces)
        self.special_ids = dict(special_ids)
        self.fallback_ids = dict(fallback)
        self._build_tables()

    def _build_tables(self) -> None:
        self.table, self.tail_table, rest = kops.build_tables(self.pieces, self.k)
        # Tail pieces of all bases the tables cannot hold (k > 12) are matched after the op; any other piece
        # outside the tables (N, lower case) sends encoding down the general dict path.
        self._tail_rest = {p: i for p, i in rest.items() if len(p) < self.k and kops.kmer_code(p) is not None}
        self._rest = {p: i for p, i in rest.items() if p not in self._tail_rest}
        fallback = dict(self.fallback_ids)
        if self.case == "upper":
            for ch, i in self.fallback_ids.items():
                if ch.isupper() and ch.lower() in FALLBACK_ALPHABET:
                    fallback[ch.lower()] = i
        default = self.unk_id if self.invalid == "unk" else -1
        self.char_ids = kops.char_table(fallback, default)
        self._char_list = self.char_ids.tolist()
        self._missing_id = self.unk_id if self.unknown == "unk" else -1
        # Decode table: a k-mer stands for its first min(k, stride) bases; other pieces and bytes for themselves.
        cover = min(self.k, self.stride)
        by_id = [b""] * self.vocab_size
        for p, i in self.pieces.items():
            by_id[i] = p.encode("utf-8")[:cover] if len(p) == self.k else p.encode("utf-8")
        for ch, i in self.fallback_ids.items():
            by_id[i] = ch.encode("utf-8")
        self._by_id = by_id
        self._special_set = set(self.special_ids.values())
        self._names = {i: s for s, i in self.special_ids.items()}
        flat = b"".join(by_id) + bytes(8)  # slack so the decoder copies short pieces as whole 8-byte words
        self._pieces_flat = _bytes_tensor(flat)
        lengths = torch.tensor([0] + [len(b) for b in by_id], dtype=torch.int64)
        self._piece_offsets = torch.cumsum(lengths, 0)
        self._device_tables: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def vocab_size(self) -> int:
        """Number of ids: 1 + the largest id of a piece, special token or fallback byte."""
        ids = [*self.pieces.values(), *self.special_ids.values(), *self.fallback_ids.values()]
        return max(ids, default=-1) + 1

    @property
    def pad_id(self) -> int:
        return self.special_ids["<pad>"]

    @property
    def unk_id(self) -> int:
        return self.special_ids["<unk>"]

    @property
    def bos_id(self) -> int:
        return self.special_ids["<bos>"]

    @property
    def eos_id(self) -> int:
        return self.special_ids["<eos>"]

    @property
    def mask_id(self) -> int:
        return self.special_ids["<mask>"]

    @property
    def num_sentinels(self) -> int:
        """How many sentinel tokens ``<mask_0>`` .. ``<mask_{n-1}>`` the vocabulary holds (0 for a tokenizer.json
        written before sentinels existed)."""
        return max(0, len(self.special_ids) - len(SPECIAL_TOKENS))

    @property
    def sentinel_ids(self) -> list[int]:
        """Ids of ``<mask_0>``, ``<mask_1>``, ... in order (empty without sentinels)."""
        return [self.special_ids[sentinel_name(j)] for j in range(self.num_sentinels)]

    def sentinel_id(self, i: int) -> int:
        """Id of sentinel ``<mask_i>``; ValueError naming ``i`` and how many sentinels there are otherwise."""
        n = self.num_sentinels
        if not _is_int(i) or not 0 <= i < n:
            raise ValueError(
                f"sentinel index must be an int in [0, {n}) (this tokenizer has {n} sentinels), got {_got(i)}"
            )
        return self.special_ids[sentinel_name(i)]

    def is_sentinel(self, token_id: int) -> bool:
        """True when ``token_id`` is one of the sentinel ids."""
        return self._names.get(token_id, "").startswith("<mask_")

    # ---- encoding ----
    def bases_per_token(self) -> np.ndarray:
        """``(vocab_size,)`` int64: how many bases each id stands for -- a k-mer ``min(k, stride)`` (the bases it
        adds to the sequence), a tail piece or a fallback letter its length, a special token 0. The rule of every
        bits-per-base figure (trainer, scoring) and of infilling's base counts."""
        cover = min(self.k, self.stride)
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for piece, i in self.pieces.items():
            out[i] = cover if len(piece) == self.k else len(piece)
        for ch, i in self.fallback_ids.items():
            out[i] = len(ch)
        return out

    def _prepare(self, data: bytes) -> bytes:
        return data.upper() if self.case == "upper" else data

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self.table, self.tail_table, self.char_ids
        if device not in self._device_tables:
            self._device_tables[device] = tuple(t.to(device) for t in (self.table, self.tail_table, self.char_ids))
        return self._device_tables[device]  # type: ignore[return-value]

    def _encode_general(self, data: bytes) -> list[int]:
        """Dict lookups for vocabularies holding pieces the tables cannot (N, lowercase, long tails)."""
        k, stride, n = self.k, self.stride, len(data)
        text = data.decode("latin-1")
        windows = (n - k) // stride + 1 if n >= k else 0
        cover = min(k, stride)
        out: list[int] = []

        def chars(start: int, stop: int) -> None:
            for j in range(start, stop):
                cid = self._char_list[data[j]]
                if cid < 0:
                    raise ValueError(
                        f"byte {chr(data[j])!r} at position {j} has no token (not a vocabulary piece and no "
                        "fallback id); use invalid='unk' to map it to <unk>"
                    )
                out.append(cid)

        for w in range(windows):
            i = w * stride
            pid = self.pieces.get(text[i : i + k], self._missing_id)
            if pid >= 0:
                out.append(pid)
            else:
                chars(i, i + cover)
        start = min(n, windows * stride)
        if start < n:
            pid = self.pieces.get(text[start:], -1)
            if pid >= 0:
                out.append(pid)
            else:
                chars(start, n)
        return out

    def encode_tensor(
        self, seq: str | bytes | torch.Tensor, dtype: torch.dtype = torch.int64, add_special_tokens: bool = False
    ) -> torch.Tensor:
        """Ids ``(T,)`` of one sequence (str, bytes, or a uint8 tensor on any device, encoded there).

        With ``add_special_tokens`` the ids are wrapped in ``<bos> ... <eos>``.
        """
        if isinstance(seq, torch.Tensor):
            # (case="upper" needs no copy: fold_case in the op plus upper-case fallback ids for lowercase
            # bytes give the tokens of the upper-cased sequence.)
            if self._rest:
                data = seq.cpu().numpy().tobytes() if seq.dtype == torch.uint8 else bytes(seq.cpu().tolist())
                return self.encode_tensor(data, dtype, add_special_tokens).to(seq.device)
            data_t = seq
        else:
            data = _to_bytes(seq)
            if self._rest:
                ids = torch.tensor(self._encode_general(self._prepare(data)), dtype=dtype)
                return self._wrap(ids, add_special_tokens)
            data_t = _bytes_tensor(data)
        table, tail, chars = self._tables(data_t.device)
        try:
            ids = kops.kmer_encode(
                data_t,
                table,
                self.k,
                self.stride,
                tail_table=tail,
                char_ids=chars,
                missing_id=self._missing_id,
                fold_case=self.case == "upper",
                dtype=dtype,
            )
        except RuntimeError as err:  # the op's message names the byte and position
            raise ValueError(str(err).split("\n")[0]) from None
        if self._tail_rest:
            ids = self._fix_tail(data_t, ids)
        return self._wrap(ids, add_special_tokens)

    def _fix_tail(self, data_t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # The op wrote the tail as len(tail) fallback tokens; a tail that is a vocabulary piece becomes one.
        n = data_t.numel()
        windows = (n - self.k) // self.stride + 1 if n >= self.k else 0
        start = min(n, windows * self.stride)
        if start == n:
            return ids
        tail = bytes(data_t[start:].cpu().tolist()).decode("latin-1")
        pid = self._tail_rest.get(tail.upper() if self.case == "upper" else tail)
        if pid is None:
            return ids
        return torch.cat([ids[: ids.numel() - (n - start)], ids.new_tensor([pid])])

    def _wrap(self, ids: torch.Tensor, add_special_tokens: bool) -> torch.Tensor:
        if not add_special_tokens:
            return ids
        bos = torch.tensor([self.bos_id], dtype=ids.dtype, device=ids.device)
        eos = torch.tensor([self.eos_id], dtype=ids.dtype, device=ids.device)
        return torch.cat([bos, ids, eos])

    def encode(self, seq: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of a DNA string (lossless under the default policies; see the module doc)."""
        return self.encode_tensor(seq, add_special_tokens=add_special_tokens).tolist()

    def encode_batch(
        self,
        seqs: Sequence[str | bytes],
        left_pad: bool = False,
        add_special_tokens: bool = False,
        dtype: torch.dtype = torch.int64,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode B sequences into ``ids (B, T)`` padded with ``<pad>`` (right, or left) and ``lengths (B,)`` int64."""
        if not isinstance(seqs, list | tuple):
            seqs = list(seqs)
        joined = None if self._rest or self._tail_rest else _join_ascii(seqs)
        if joined is not None:
            data, offsets = joined
            data = self._prepare(data)  # bytewise, so the same as preparing every sequence
        else:
            datas = [self._prepare(_to_bytes(s)) for s in seqs]
            if self._rest or self._tail_rest:
                rows = [self.encode_tensor(d, dtype, add_special_tokens) for d in datas]
                return self._pad(rows, left_pad, dtype)
            offsets = torch.tensor([0, *(len(d) for d in datas)], dtype=torch.int64).cumsum(0)
            data = b"".join(datas)
        try:
            ids, lengths = kops.kmer_encode_batch(
                _bytes_tensor(data),
                offsets,
                self.table,
                self.k,
                self.stride,
                tail_table=self.tail_table,
                char_ids=self.char_ids,
                missing_id=self._missing_id,
                fold_case=self.case == "upper",
                dtype=dtype,
                pad_id=self.pad_id,
                left_pad=left_pad,
            )
        except RuntimeError as err:
            raise ValueError(str(err).split("\n")[0]) from None
        if not add_special_tokens:
            return ids, lengths
        rows = [
            self._wrap(ids[b, :n] if not left_pad else ids[b, ids.shape[1] - n :], True)
            for b, n in enumerate(lengths.tolist())
        ]
        return self._pad(rows, left_pad, dtype)

    def _pad(self, rows: list[torch.Tensor], left_pad: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        t = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), t), self.pad_id, dtype=dtype)
        for b, r in enumerate(rows):
            if len(r) and left_pad:
                ids[b, t - len(r) :] = r
            elif len(r):
                ids[b, : len(r)] = r
        return ids, torch.tensor([len(r) for r in rows], dtype=torch.int64)

    # ---- decoding ----
    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """The string of a token sequence. Special tokens are dropped (or written as their names).

        Raises ValueError naming the position of an id outside ``[0, vocab_size)``.
        """
        t = (
            ids.reshape(-1).cpu().to(torch.int64)
            if isinstance(ids, torch.Tensor)
            else torch.tensor(list(ids), dtype=torch.int64)
        )
        if not skip_special_tokens and self._special_set:
            return "".join(self._names.get(i) or self.decode([i]) for i in t.tolist())
        try:
            out = kops.kmer_decode(t, self._pieces_flat, self._piece_offsets)
        except (RuntimeError, ValueError) as err:
            raise ValueError(str(err).split("\n")[0]) from None
        return out.numpy().tobytes().decode("utf-8", errors="replace")

    def decode_batch(self, ids: torch.Tensor, lengths: torch.Tensor | None = None, left_pad: bool = False) -> list[str]:
        """Strings of the rows of ``ids (B, T)``: the first ``lengths[b]`` ids (the last, with left padding)."""
        out = []
        for b in range(ids.shape[0]):
            row = ids[b]
            if lengths is not None:
                n = int(lengths[b])
                row = row[ids.shape[1] - n :] if left_pad else row[:n]
            out.append(self.decode(row))
        return out

    reverse_complement = staticmethod(reverse_complement)

    # ---- files ----
    def to_dict(self) -> dict[str, Any]:
        """The tokenizer.json content."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "type": self.kind,
            "k": self.k,
            "stride": self.stride,
            "case": self.case,
            "unknown": self.unknown,
            "invalid": self.invalid,
            "pieces": self.pieces,
            "special_tokens": self.special_ids,
            "fallback": self.fallback_ids,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write tokenizer.json to ``path`` (a file path)."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DNATokenizer:
        """A tokenizer from tokenizer.json content. Every key of ``FILE_KEYS`` is required and no other is
        allowed; ``k``/``stride`` are ints (not ``"4"``, ``4.0`` or ``true``); the vocabulary tables are checked
        as in ``_set_vocab``. ValueError, one line naming the key, on anything else."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a tokenizer file must hold a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT or not _is_int(d.get("version")) or d.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"not an {FORMAT} v{FORMAT_VERSION} file (format={d.get('format')!r}, version={d.get('version')!r})"
            )
        missing = [key for key in FILE_KEYS if key not in d]
        if missing:
            raise ValueError(f"tokenizer file is missing key {missing[0]!r} (needs {', '.join(FILE_KEYS)})")
        unknown = sorted(str(key) for key in d if key not in FILE_KEYS)
        if unknown:
            raise ValueError(f"tokenizer file has unknown key {unknown[0]!r}")
        kinds = DNATokenizer._kinds
        if not isinstance(d["type"], str) or d["type"] not in kinds:
            raise ValueError(f"tokenizer 'type' must be one of {sorted(kinds)}, got {_got(d['type'])}")
        if not _is_int(d["k"]) or not 1 <= d["k"] <= kops.MAX_K:
            raise ValueError(f"tokenizer 'k' must be an int in 1..{kops.MAX_K}, got {_got(d['k'])}")
        if not _is_int(d["stride"]) or not 1 <= d["stride"] <= MAX_STRIDE:
            raise ValueError(f"tokenizer 'stride' must be an int in 1..2^30, got {_got(d['stride'])}")
        if d["type"] == "char" and (d["k"], d["stride"]) != (1, 1):
            raise ValueError(f"a 'char' tokenizer needs k = stride = 1, got k={d['k']}, stride={d['stride']}")
        for key in ("case", "unknown", "invalid"):
            if not isinstance(d[key], str):
                raise ValueError(f"tokenizer {key!r} must be a string, got {_got(d[key])}")
        tok = kinds[d["type"]].__new__(kinds[d["type"]])
        DNATokenizer.__init__(tok, d["k"], d["stride"], d["case"], d["unknown"], d["invalid"])
        tok._set_vocab(d["pieces"], d["special_tokens"], d["fallback"])
        return tok

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> DNATokenizer:
        """Reload a tokenizer saved with ``save`` (or a folder holding tokenizer.json), exactly. A malformed
        file raises a one-line ValueError that starts with its path and names the key."""
        path, d = read_json(path)
        try:
            return cls.from_dict(d)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DNATokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(k={self.k}, stride={self.stride}, vocab_size={self.vocab_size}, "
            f"case={self.case!r}, unknown={self.unknown!r}, invalid={self.invalid!r})"
        )
