"""k-mer tokenization ops: DNA bytes -> token ids and back, on CPU (multi-threaded) and GPU (encode).

The kernels are ``torch.ops.enigma_fast.{kmer_encode, kmer_encode_batch, kmer_decode, kmer_count}`` (schemas in
csrc/kmer/kmer.cpp, semantics in csrc/kmer/core/kmer_core.h and ``enigma_fast.reference.kmer``). Where no kernel
serves a device, the functions run the pure-Python reference. ``build_tables`` and ``char_table`` turn a
vocabulary into the lookup tensors the ops take; ``enigma_fast.tokenizers`` wraps all of it.

Tokenization of n bytes with k-mer length k and stride t: windows ``bases[i:i+k]`` at ``i = 0, t, 2t, ...`` while
``i + k <= n``; each becomes the id of its k-mer, or (k-mer missing from the vocabulary, or holding a byte other
than A/C/G/T) ``missing_id`` if that is >= 0, else the fallback ids of its first ``min(k, t)`` bytes. The short
tail after the last window becomes one id when it is itself a piece of the vocabulary, else one fallback id per
byte. Decoding a k-mer id yields its first ``min(k, t)`` bytes, so ``decode(encode(s)) == s`` for t <= k.

Both paths check their arguments with the same function (``enigma_fast.reference.checks``) first, and raise
ValueError (``OpValueError``) for what only the work finds: a byte with no token, an id outside the vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from enigma_fast import _extension, reference
from enigma_fast.reference.checks import (
    OpTypeError,
    OpValueError,
    check_kmer_count,
    check_kmer_decode,
    check_kmer_encode,
    check_kmer_encode_batch,
)

__all__ = ["build_tables", "char_table", "kmer_count", "kmer_decode", "kmer_encode", "kmer_encode_batch"]

_BYTES = frozenset({torch.uint8})
_extension.register_op("kmer_encode", ("kmer_encode",), {"cpu": _BYTES, "cuda": _BYTES})
_extension.register_op("kmer_encode_batch", ("kmer_encode_batch",), {"cpu": _BYTES})
_extension.register_op("kmer_decode", ("kmer_decode",), {"cpu": frozenset({torch.int64})})
_extension.register_op("kmer_count", ("kmer_count",), {"cpu": _BYTES})

_BASE_CODE = {"A": 0, "C": 1, "G": 2, "T": 3}
MAX_K = 32
MAX_DENSE_K = 12


def _check_k(k: int, stride: int) -> None:
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an int in 1..{MAX_K}, got {k!r}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")


def kmer_code(kmer: str) -> int | None:
    """2-bit code ``sum(code(b_j) * 4**(len-1-j))`` (A=0, C=1, G=2, T=3) of an upper-case A/C/G/T string, else None."""
    code = 0
    for ch in kmer:
        c = _BASE_CODE.get(ch)
        if c is None:
            return None
        code = code * 4 + c
    return code


def build_tables(pieces: Mapping[str, int], k: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Lookup tensors for a vocabulary of pieces (k-mers and tail pieces shorter than k) -> ids.

    Returns ``(table, tail_table, rest)``: for k <= 12, ``table`` is int32 ``(4^k,)`` (code -> id, -1 absent) and
    ``tail_table`` int32 ``((4^k - 4) / 3,)`` holding the pieces of lengths 1..k-1 (length l at offset
    ``(4^l - 4) / 3``); for k > 12, ``table`` is an int64 ``(C, 2)`` hash table (``hash_table``) and
    ``tail_table`` is empty. ``rest`` holds the pieces the tables cannot (bytes other than upper-case A/C/G/T,
    tail pieces when k > 12, pieces longer than k): the op never emits their ids.

    Raises ValueError/TypeError for a piece that is not a str or an id that is not an int in ``[0, 2^31 - 1)``.
    """
    _check_k(k, 1)
    for piece, pid in pieces.items():
        if not isinstance(piece, str):
            raise OpTypeError(f"pieces: keys must be str, got {type(piece).__name__} {piece!r}")
        _check_id(pid, f"pieces[{piece!r}]")
    rest: dict[str, int] = {}
    if k <= MAX_DENSE_K:
        table = torch.full((4**k,), -1, dtype=torch.int32)
        tail = torch.full(((4**k - 4) // 3,), -1, dtype=torch.int32)
        codes, ids, tcodes, tids = [], [], [], []
        for piece, pid in pieces.items():
            code = kmer_code(piece)
            if code is None or not 0 < len(piece) <= k:
                rest[piece] = pid
            elif len(piece) == k:
                codes.append(code)
                ids.append(pid)
            else:
                tcodes.append((4 ** len(piece) - 4) // 3 + code)
                tids.append(pid)
        if codes:
            table[torch.tensor(codes)] = torch.tensor(ids, dtype=torch.int32)
        if tcodes:
            tail[torch.tensor(tcodes)] = torch.tensor(tids, dtype=torch.int32)
        return table, tail, rest
    pairs = []
    for piece, pid in pieces.items():
        code = kmer_code(piece)
        if code is None or len(piece) != k:
            rest[piece] = pid
        else:
            pairs.append((code, pid))
    return hash_table(pairs), torch.empty(0, dtype=torch.int32), rest


_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def hash_slot(code: int, bits: int) -> int:
    """Home slot of a k-mer code in a table of 2^bits slots (as csrc/kmer/core/kmer_core.h hash_slot)."""
    return 0 if bits == 0 else ((code * _GOLDEN) & _MASK64) >> (64 - bits)


def hash_table(pairs: list[tuple[int, int]]) -> torch.Tensor:
    """int64 ``(C, 2)`` open-addressing table of (code, id) pairs for k > 12: C a power of two >= max(16, 2 * len),
    one (code as int64, id) row per slot (id -1 = empty), linear probing from ``hash_slot``."""
    bits = 4
    while (1 << bits) < 2 * len(pairs):
        bits += 1
    cap = 1 << bits
    codes, ids = [0] * cap, [-1] * cap
    for code, pid in pairs:
        h = hash_slot(code, bits)
        while ids[h] >= 0:
            h = (h + 1) & (cap - 1)
        codes[h] = code - (1 << 64) if code >= (1 << 63) else code
        ids[h] = pid
    return torch.tensor([codes, ids], dtype=torch.int64).t().contiguous()


def _check_id(i: object, name: str, allow_error: bool = False) -> None:
    if isinstance(i, bool) or not isinstance(i, int):
        raise OpTypeError(f"{name} must be an int id, got {type(i).__name__} {i!r}")
    if not (0 <= i < 2**31 - 1 or (allow_error and i == -1)):
        raise OpValueError(f"{name} must be an id in [0, 2^31 - 1){' or -1' if allow_error else ''}, got {i}")


def char_table(char_ids: Mapping[str, int], default: int = -1) -> torch.Tensor:
    """int32 ``(256,)`` fallback id of each byte: ``char_ids[chr(b)]``, ``default`` (-1 = an error) for the rest.

    Raises ValueError/TypeError for a key that is not one character U+0000..U+00FF (a byte) or an id that is not an
    int in ``[0, 2^31 - 1)`` (``default`` may be -1).
    """
    _check_id(default, "default", allow_error=True)
    t = torch.full((256,), default, dtype=torch.int32)
    for ch, i in char_ids.items():
        if not isinstance(ch, str) or len(ch) != 1 or ord(ch) > 255:
            raise OpValueError(f"char_ids: keys must be single characters U+0000..U+00FF (bytes), got {ch!r}")
        _check_id(i, f"char_ids[{ch!r}]")
        t[ord(ch)] = i
    return t


def _as_bases(bases: torch.Tensor | bytes | str) -> torch.Tensor:
    if isinstance(bases, str):
        try:
            bases = bases.encode("latin-1")
        except UnicodeEncodeError as err:
            raise OpValueError(
                f"bases: a str must hold only characters U+0000..U+00FF (one byte each), got {bases[err.start]!r} "
                f"at position {err.start}"
            ) from None
    if isinstance(bases, bytes | bytearray | memoryview):
        data = bytes(bases)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    if not isinstance(bases, torch.Tensor) or bases.dtype != torch.uint8 or bases.dim() != 1:
        got = f"{bases.dtype} {tuple(bases.shape)}" if isinstance(bases, torch.Tensor) else type(bases).__name__
        raise OpTypeError(f"bases must be a 1-D uint8 tensor (or bytes / str), got {got}")
    return bases


def _cpu(t: object) -> object:
    return t.cpu() if isinstance(t, torch.Tensor) else t


def _kernel(op: str, fn, *args):
    """Runs a kernel; an error of the input it found while working (its message starts with the op's name: a byte
    with no token, an id outside the vocabulary) becomes the OpValueError the reference raises for it."""
    if torch.compiler.is_compiling():
        return fn(*args)
    try:
        return fn(*args)
    except RuntimeError as err:
        msg = str(err).split("\n")[0]
        if isinstance(err, ValueError | TypeError) or not msg.startswith(f"{op}: "):
            raise
        raise OpValueError(msg) from None


def kmer_encode(
    bases: torch.Tensor,
    table: torch.Tensor,
    k: int,
    stride: int | None = None,
    *,
    tail_table: torch.Tensor | None = None,
    char_ids: torch.Tensor | None = None,
    missing_id: int = -1,
    fold_case: bool = False,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Token ids of one DNA sequence.

    Args:
        bases: uint8 ``(n,)`` bytes of the sequence (CPU or CUDA; bytes/str are taken as CPU bytes).
        table: int32 ``(4^k,)`` for k <= 12 or int64 ``(C, 2)`` hash table for k > 12 (``build_tables``), on
            bases' device.
        k: k-mer length, 1..32. stride: window step >= 1; None means k (non-overlapping).
        tail_table: pieces shorter than k (``build_tables``), or None for none.
        char_ids: int32 ``(256,)`` fallback id per byte (``char_table``); None = no fallback (a window missing
            from the vocabulary is then an error unless ``missing_id`` >= 0).
        missing_id: >= 0 maps every window without an id to it (the lossy UNK policy).
        fold_case: read a/c/g/t as A/C/G/T in k-mers (lossy: decoding gives upper case).
        dtype: int64 (default) or int32 output.

    Returns:
        ids ``(T,)`` of ``dtype`` on bases' device, ``T = W + (missing windows) * (min(k, stride) - 1) + tail``.
    """
    stride = k if stride is None else stride
    bases = _as_bases(bases)
    dev = bases.device
    tail_table = torch.empty(0, dtype=torch.int32, device=dev) if tail_table is None else tail_table
    char_ids = torch.full((256,), -1, dtype=torch.int32, device=dev) if char_ids is None else char_ids
    args = (bases, table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype)
    check_kmer_encode(*args)
    if _extension.has_kernel("kmer_encode", dev.type, bases.dtype):
        return _kernel("kmer_encode", torch.ops.enigma_fast.kmer_encode, *args)
    return reference.kmer_encode(*args)


def kmer_encode_batch(
    bases: torch.Tensor,
    offsets: torch.Tensor,
    table: torch.Tensor,
    k: int,
    stride: int | None = None,
    *,
    tail_table: torch.Tensor | None = None,
    char_ids: torch.Tensor | None = None,
    missing_id: int = -1,
    fold_case: bool = False,
    dtype: torch.dtype = torch.int64,
    pad_id: int = 0,
    left_pad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of B sequences, padded: ``bases[offsets[b]:offsets[b+1]]`` -> ``(ids (B, T), lengths (B,))``.

    ``offsets`` is CPU int64 ``(B+1,)``, non-decreasing. Rows are filled with ``pad_id`` after (``left_pad``:
    before) their ``lengths[b]`` ids; ``T = max(lengths)``. Other arguments as ``kmer_encode``. Runs on the CPU;
    CUDA inputs are encoded on the CPU and the results moved back.
    """
    stride = k if stride is None else stride
    bases = _as_bases(bases)
    dev = bases.device
    tail_table = torch.empty(0, dtype=torch.int32) if tail_table is None else tail_table
    char_ids = torch.full((256,), -1, dtype=torch.int32) if char_ids is None else char_ids
    args = (
        bases.cpu(),
        _cpu(offsets),
        _cpu(table),
        _cpu(tail_table),
        _cpu(char_ids),
        k,
        stride,
        missing_id,
        fold_case,
        dtype,
        pad_id,
        left_pad,
    )
    kernel = _extension.has_kernel("kmer_encode_batch", "cpu", bases.dtype)
    check_kmer_encode_batch(*args, values=not kernel)  # the kernel reads the offsets itself
    if kernel:
        ids, lengths = _kernel("kmer_encode_batch", torch.ops.enigma_fast.kmer_encode_batch, *args)
    else:
        ids, lengths = reference.kmer_encode_batch(*args)
    return ids.to(dev), lengths.to(dev)


def kmer_decode(ids: torch.Tensor, pieces: torch.Tensor, piece_offsets: torch.Tensor) -> torch.Tensor:
    """Bytes of a token sequence: the concatenation of ``pieces[piece_offsets[i]:piece_offsets[i + 1]]`` over ids.

    Args: ids ``(T,)`` of an integer dtype (other shapes are flattened); pieces uint8 ``(P,)``; piece_offsets
    int64 ``(V+1,)`` from 0 to P.
    Returns: uint8 ``(n,)`` on the CPU. An id outside ``[0, V)`` raises ValueError naming its index.
    """
    if not isinstance(ids, torch.Tensor):
        raise OpTypeError(f"kmer_decode: ids must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise OpTypeError(f"kmer_decode: ids must have an integer dtype, got {str(ids.dtype).removeprefix('torch.')}")
    ids = ids.cpu().to(torch.int64).reshape(-1)
    kernel = _extension.has_kernel("kmer_decode", "cpu", torch.int64)
    check_kmer_decode(ids, pieces, piece_offsets, values=not kernel)  # the kernel reads piece_offsets itself
    if kernel:
        return _kernel("kmer_decode", torch.ops.enigma_fast.kmer_decode, ids, pieces, piece_offsets)
    return reference.kmer_decode(ids, pieces, piece_offsets)


def kmer_count(
    bases: torch.Tensor, offsets: torch.Tensor, k: int, stride: int | None = None, fold_case: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts of the all-base k-mer windows of B sequences, for vocabulary building (k <= 12, CPU).

    Returns ``counts (4^k,)``, ``first (4^k,)`` (smallest ordinal of each code, -1 unseen; window w of
    sequence b has ordinal ``sum_{j<b} (W_j + 1) + w``) and ``other ()``, the number of windows holding a
    byte other than a base (not counted), all int64.
    """
    stride = k if stride is None else stride
    args = (_as_bases(bases).cpu(), _cpu(offsets), k, stride, fold_case)
    kernel = _extension.has_kernel("kmer_count", "cpu", torch.uint8)
    check_kmer_count(*args, values=not kernel)  # the kernel reads the offsets itself
    if kernel:
        return _kernel("kmer_count", torch.ops.enigma_fast.kmer_count, *args)
    return reference.kmer_count(*args)


def _register() -> None:
    def check(k: int, stride: int) -> None:
        torch._check(1 <= k <= MAX_K, lambda: f"kmer_encode: k must be in 1..{MAX_K}, got {k}")
        torch._check(stride >= 1, lambda: f"kmer_encode: stride must be >= 1, got {stride}")

    @torch.library.register_fake("enigma_fast::kmer_encode")
    def _(bases, table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype):
        check(k, stride)
        torch._check(bases.dtype == torch.uint8, lambda: f"kmer_encode: bases must be uint8, got {bases.dtype}")
        n = torch.library.get_ctx().new_dynamic_size()
        return bases.new_empty((n,), dtype=dtype)

    @torch.library.register_fake("enigma_fast::kmer_encode_batch")
    def _(bases, offsets, table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype, pad_id, left_pad):
        check(k, stride)
        t = torch.library.get_ctx().new_dynamic_size()
        b = offsets.shape[0] - 1
        return bases.new_empty((b, t), dtype=dtype), bases.new_empty((b,), dtype=torch.int64)

    @torch.library.register_fake("enigma_fast::kmer_decode")
    def _(ids, pieces, piece_offsets):
        n = torch.library.get_ctx().new_dynamic_size()
        return pieces.new_empty((n,))

    @torch.library.register_fake("enigma_fast::kmer_count")
    def _(bases, offsets, k, stride, fold_case):
        check(k, stride)
        torch._check(k <= MAX_DENSE_K, lambda: f"kmer_count: k must be <= {MAX_DENSE_K}, got {k}")
        size = 4**k
        return (
            bases.new_empty((size,), dtype=torch.int64),
            bases.new_empty((size,), dtype=torch.int64),
            bases.new_empty((), dtype=torch.int64),
        )


if _extension.EXTENSION is not None:
    _register()
