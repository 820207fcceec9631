"""Pure-Python reference of the k-mer tokenization ops: the test oracle and the fallback without the extension.

Written from the definition (csrc/kmer/core/kmer_core.h), one window at a time, for clarity, not speed:

* windows at ``i = w * stride`` for ``w < W = (n - k) // stride + 1`` (none when ``n < k``), each ``bases[i:i+k]``;
* a window all of A/C/G/T (a/c/g/t too with ``fold_case``) has the 2-bit code ``sum(code(b_j) * 4**(k-1-j))``
  (A=0, C=1, G=2, T=3); its id is ``table[code]`` (k <= 12) or the id paired with code in the hash table
  ``table`` (k > 12: ``(C, 2)`` rows of (code, id), id -1 = empty slot);
* a window without an id becomes ``missing_id`` when that is >= 0, else the fallback ids of its first
  ``c = min(k, stride)`` bytes (``char_ids[byte]``);
* the tail ``bases[min(n, W * stride):]`` becomes one id when it is all bases and ``tail_table`` has it, else the
  fallback ids of its bytes; a byte whose fallback id is -1 is an error.

Arguments are checked by the functions of ``enigma_fast.reference.checks`` that the kernels' routing runs too.
"""

from __future__ import annotations

import torch

from enigma_fast.reference.checks import (
    OpValueError,
    check_kmer_count,
    check_kmer_decode,
    check_kmer_encode,
    check_kmer_encode_batch,
)

__all__ = ["kmer_count", "kmer_decode", "kmer_encode", "kmer_encode_batch"]

_CODE = {ord("A"): 0, ord("C"): 1, ord("G"): 2, ord("T"): 3}
_CODE_FOLD = {**_CODE, ord("a"): 0, ord("c"): 1, ord("g"): 2, ord("t"): 3}


def _code(window: bytes, fold_case: bool) -> int | None:
    codes = _CODE_FOLD if fold_case else _CODE
    code = 0
    for b in window:
        if b not in codes:
            return None
        code = code * 4 + codes[b]
    return code


def _signed64(code: int) -> int:
    return code - (1 << 64) if code >= (1 << 63) else code


class _NoToken(Exception):
    """A byte with no token at ``position`` of its sequence."""

    def __init__(self, byte: int, position: int) -> None:
        super().__init__(byte, position)
        self.byte, self.position = byte, position

    def describe(self) -> str:
        b = self.byte
        shown = f"'{chr(b)}'" if 32 <= b < 127 else f"0x{b:02x}"  # as the kernels write it
        return f"byte {shown} at position {self.position}"


_NO_TOKEN_HINT = "no token (not a vocabulary piece and no fallback id); use the 'unk' policy to map it to UNK"


def _byte_ids(data: bytes, start: int, char_ids: list[int]) -> list[int]:
    out = []
    for j, b in enumerate(data):
        if char_ids[b] < 0:
            raise _NoToken(b, start + j)
        out.append(char_ids[b])
    return out


def _hash_lookup(table: list[list[int]]):
    """Lookup in the open-addressing hash table: linear probing from ``hash_slot`` up to the first empty slot."""
    cap = len(table)
    bits = cap.bit_length() - 1

    def lookup(code: int) -> int:
        h = 0 if bits == 0 else ((code * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) >> (64 - bits)
        for _ in range(cap):
            c, i = table[h]
            if i < 0:
                return -1
            if c == _signed64(code):
                return i
            h = (h + 1) % cap
        return -1

    return lookup


def _encode_one(
    data: bytes,
    table: torch.Tensor,
    tail_table: torch.Tensor,
    char_ids: list[int],
    k: int,
    stride: int,
    missing_id: int,
    fold_case: bool,
) -> list[int]:
    n = len(data)
    if k <= 12:
        lookup = lambda code: int(table[code])  # noqa: E731
    else:
        lookup = _hash_lookup(table.tolist())
    tails = tail_table.tolist()
    windows = (n - k) // stride + 1 if n >= k else 0
    cover = min(k, stride)
    out: list[int] = []
    for w in range(windows):
        i = w * stride
        code = _code(data[i : i + k], fold_case)
        wid = lookup(code) if code is not None else -1
        if wid < 0:
            wid = missing_id
        if wid >= 0:
            out.append(wid)
        else:
            out += _byte_ids(data[i : i + cover], i, char_ids)
    start = min(n, windows * stride)
    tail = data[start:]
    if tail:
        code = _code(tail, fold_case)
        tid = -1
        if code is not None and tails:
            tid = tails[((4 ** len(tail)) - 4) // 3 + code]
        out += [tid] if tid >= 0 else _byte_ids(tail, start, char_ids)
    return out


def kmer_encode(
    bases: torch.Tensor,
    table: torch.Tensor,
    tail_table: torch.Tensor,
    char_ids: torch.Tensor,
    k: int,
    stride: int,
    missing_id: int = -1,
    fold_case: bool = False,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Token ids of one sequence of bytes ``bases`` (uint8, (n,)) -> ``(T,)`` of ``dtype``; see the module doc."""
    check_kmer_encode(bases, table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype)
    try:
        ids = _encode(bases, table, tail_table, char_ids, k, stride, missing_id, fold_case)
    except _NoToken as err:
        raise OpValueError(f"kmer_encode: {err.describe()} has {_NO_TOKEN_HINT}") from None
    return torch.tensor(ids, dtype=dtype, device=bases.device)


def _encode(
    bases: torch.Tensor,
    table: torch.Tensor,
    tail_table: torch.Tensor,
    char_ids: torch.Tensor,
    k: int,
    stride: int,
    missing_id: int,
    fold_case: bool,
) -> list[int]:
    data = bytes(bases.cpu().tolist())
    return _encode_one(data, table.cpu(), tail_table.cpu(), char_ids.cpu().tolist(), k, stride, missing_id, fold_case)


def kmer_encode_batch(
    bases: torch.Tensor,
    offsets: torch.Tensor,
    table: torch.Tensor,
    tail_table: torch.Tensor,
    char_ids: torch.Tensor,
    k: int,
    stride: int,
    missing_id: int = -1,
    fold_case: bool = False,
    dtype: torch.dtype = torch.int64,
    pad_id: int = 0,
    left_pad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences ``bases[offsets[b]:offsets[b+1]]`` -> padded ids ``(B, T)`` and lengths ``(B,)`` int64."""
    check_kmer_encode_batch(
        bases, offsets, table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype, pad_id, left_pad
    )
    off = offsets.tolist()
    rows = []
    for b in range(len(off) - 1):
        try:
            ids = _encode(bases[off[b] : off[b + 1]], table, tail_table, char_ids, k, stride, missing_id, fold_case)
        except _NoToken as err:
            raise OpValueError(
                f"kmer_encode_batch: sequence {b} has {err.describe()} that has {_NO_TOKEN_HINT}"
            ) from None
        rows.append(ids)
    t = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), t), pad_id, dtype=dtype, device=bases.device)
    for b, r in enumerate(rows):
        if len(r):
            if left_pad:
                ids[b, t - len(r) :] = torch.tensor(r, dtype=dtype)
            else:
                ids[b, : len(r)] = torch.tensor(r, dtype=dtype)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64, device=bases.device)
    return ids, lengths


def kmer_decode(ids: torch.Tensor, pieces: torch.Tensor, piece_offsets: torch.Tensor) -> torch.Tensor:
    """Concatenated pieces ``pieces[piece_offsets[id]:piece_offsets[id + 1]]`` of ``ids`` (T,) -> uint8 (n,)."""
    check_kmer_decode(ids, pieces, piece_offsets)
    off = piece_offsets.tolist()
    data = bytes(pieces.cpu().tolist())
    vocab = len(off) - 1
    out = bytearray()
    for i, t in enumerate(ids.tolist()):
        if not 0 <= t < vocab:
            raise OpValueError(f"kmer_decode: ids[{i}] = {t} is out of range for a vocabulary of {vocab} ids")
        out += data[off[t] : off[t + 1]]
    return torch.tensor(list(out), dtype=torch.uint8, device=ids.device)


def kmer_count(
    bases: torch.Tensor, offsets: torch.Tensor, k: int, stride: int, fold_case: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts ``(4^k,)``, first ordinals ``(4^k,)`` (-1 unseen) and the count of non-base windows ``()``.

    Window w of sequence b has ordinal ``sum_{j<b} (W_j + 1) + w``.
    """
    check_kmer_count(bases, offsets, k, stride, fold_case)
    counts = [0] * 4**k
    first = [-1] * 4**k
    other = 0
    data = bytes(bases.cpu().tolist())
    off = offsets.tolist()
    base = 0
    for b in range(len(off) - 1):
        seq = data[off[b] : off[b + 1]]
        windows = (len(seq) - k) // stride + 1 if len(seq) >= k else 0
        for w in range(windows):
            code = _code(seq[w * stride : w * stride + k], fold_case)
            if code is None:
                other += 1
                continue
            if counts[code] == 0:
                first[code] = base + w
            counts[code] += 1
        base += windows + 1
    return torch.tensor(counts), torch.tensor(first), torch.tensor(other)
