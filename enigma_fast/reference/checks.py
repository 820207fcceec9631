"""Argument checks of every op, one function per op, run by both implementations before any work; the tensor
arguments are checked by one function (``_check_tensor``) from one table of their shapes, dtypes and layouts
(``TENSORS``).

``enigma_fast.ops`` calls the op's check before it routes a call to a compiled kernel or to the reference, and the
reference calls the same check itself, so both paths accept exactly the same inputs and reject the rest with the
same one-line message (naming the argument, what was expected and what came). The C++ kernels keep their own
TORCH_CHECKs as a second line for direct ``torch.ops.enigma_fast`` callers.

What is checked: types, dtypes, devices, shapes and layouts the kernels need, scalar arguments, and the values of
small index tensors (``cache_seqlens``, ``offsets``, ``piece_offsets``) when they are on the CPU and the call is not
being traced by torch.compile (no host-device sync, no graph break). The k-mer kernels check the values of their
offsets themselves, in the same words, so ``enigma_fast.ops`` skips that part (``values=False``) when it routes to
one and turns the kernel's error into the same OpValueError. Errors only the work itself can find (a byte with no
token, a token id outside the vocabulary) are raised by each implementation with the same message.

Errors are :class:`OpValueError` / :class:`OpTypeError`: a ValueError / TypeError that is also a RuntimeError, the
type the kernels raised before these checks ran first, so callers catching RuntimeError keep working.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import NoReturn

import torch

__all__ = [
    "OpTypeError",
    "OpValueError",
    "check_add_rms_norm",
    "check_kmer_count",
    "check_kmer_decode",
    "check_kmer_encode",
    "check_kmer_encode_batch",
    "check_rel_attention",
    "check_rel_attention_with_kvcache",
    "check_rms_norm",
]


class OpValueError(ValueError, RuntimeError):
    """A bad argument value, shape, device or layout given to an op."""


class OpTypeError(TypeError, RuntimeError):
    """An argument of the wrong type or dtype given to an op."""


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_NAMES = "float16, bfloat16, float32 or float64"
_INDEX = (torch.int32, torch.int64)
MAX_K = 32
MAX_DENSE_K = 12
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _values_checkable(t: torch.Tensor, any_device: bool = False) -> bool:
    """Whether the values of a small index tensor are read here: outside torch.compile tracing, on the CPU (or on
    any device, a host-device sync, when ``any_device``)."""
    return (any_device or t.device.type == "cpu") and not torch.compiler.is_compiling()


def _tensor(t: object, name: str, op: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise OpTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


_REALS = (Real, torch.SymFloat, torch.SymInt)
_INTS = (Integral, torch.SymInt)
_BOOLS = (bool, torch.SymBool)


def _real(x: object, name: str, op: str) -> None:
    if type(x) is float or type(x) is int:  # the common case, without the ABC check
        return
    if isinstance(x, bool) or not isinstance(x, _REALS):
        raise OpTypeError(f"{op}: {name} must be a real number, got {type(x).__name__}")


def _int(x: object, name: str, op: str, lo: int = _INT64[0], hi: int = _INT64[1]) -> None:
    if type(x) is not int and (isinstance(x, bool) or not isinstance(x, _INTS)):
        raise OpTypeError(f"{op}: {name} must be an int, got {type(x).__name__}")
    if not lo <= x <= hi:
        raise OpValueError(f"{op}: {name} must be in {lo}..{hi}, got {x}")


def _bool(x: object, name: str, op: str) -> None:
    if type(x) is not bool and not isinstance(x, _BOOLS):
        raise OpTypeError(f"{op}: {name} must be a bool, got {type(x).__name__}")


def _same_device(ref: torch.Tensor, ref_name: str, t: torch.Tensor, name: str, op: str) -> None:
    if t.device != ref.device:
        raise OpValueError(f"{op}: {name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")


def _same_dtype(ref: torch.Tensor, ref_name: str, t: torch.Tensor, name: str, op: str) -> None:
    if t.dtype != ref.dtype:
        raise OpTypeError(f"{op}: {name} must have the same dtype as {ref_name} ({_dt(ref.dtype)}), got {_dt(t.dtype)}")


def _rows(t: torch.Tensor, name: str, op: str) -> None:
    """``t`` read as evenly spaced rows of its contiguous last dimension (csrc/common/checks.h ``row_view``)."""
    if t.dim() < 1:
        raise OpValueError(f"{op}: {name} must have at least 1 dimension, got a 0-d tensor")
    if t.is_contiguous():  # the common case: rows of a contiguous tensor are evenly spaced
        return
    n = t.shape[-1]
    rows = math.prod(t.shape[:-1])
    if rows == 0 or n == 0:
        return
    if n > 1 and t.stride(-1) != 1:
        raise OpValueError(
            f"{op}: {name} must have a contiguous last dimension (stride 1), got stride {t.stride(-1)} for shape "
            f"{_shape(t)}; call .contiguous() first"
        )
    if t.dim() < 2 or rows <= 1:
        return
    inner = max(i for i in range(t.dim() - 1) if t.shape[i] > 1)
    row_stride = t.stride(inner)
    expected = row_stride * t.shape[inner]
    for i in range(inner - 1, -1, -1):
        if t.shape[i] == 1:
            continue
        if t.stride(i) != expected:
            raise OpValueError(
                f"{op}: {name} has leading dimensions that cannot be read as evenly spaced rows (shape {_shape(t)}, "
                f"strides {t.stride()}); call .contiguous() first"
            )
        expected *= t.shape[i]
    if row_stride < n:
        raise OpValueError(
            f"{op}: {name} has overlapping rows (row stride {row_stride} < row length {n}); call .contiguous() first"
        )


BOUND = frozenset("BHDN")  # dimension names whose size an earlier argument fixes (q: B, H, D; x: N)


@dataclass(frozen=True)
class Spec:
    """How a tensor argument must look. ``dims`` names its dimensions: a name of ``BOUND`` is a size fixed by an
    argument checked before it (``B``, ``H``, ``D`` by q; ``N``, the last dimension of x), ``2P-1`` any odd size,
    any other name any size. ``dtypes`` (``words`` in messages), or None for the dtype of the argument it goes
    with. ``layout``: ``"last"`` (a contiguous last dimension), ``"all"`` (contiguous) or None. ``note`` follows
    the shape in messages."""

    dims: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] | None = None
    words: str = ""
    layout: str | None = None
    note: str = ""

    def __post_init__(self) -> None:  # worked out once: the check runs on every op call
        object.__setattr__(self, "bound", tuple((i, d) for i, d in enumerate(self.dims) if d in BOUND))
        object.__setattr__(self, "odd_at", self.dims.index("2P-1") if "2P-1" in self.dims else None)


_LIKE_Q = Spec(("B", "H", "T", "D"), layout="last")
# Every tensor argument the ops check, by argument name: the one table _check_tensor reads.
TENSORS: dict[str, Spec] = {
    "q": Spec(("B", "H", "Tq", "D"), FLOATS, f"a floating tensor ({_FLOAT_NAMES})", "last"),
    "k": _LIKE_Q,
    "v": _LIKE_Q,
    "k_cache": _LIKE_Q,
    "v_cache": _LIKE_Q,
    "k_new": _LIKE_Q,
    "v_new": _LIKE_Q,
    "rel_emb": Spec(("H", "2P-1", "D"), note=" with an odd middle size"),
    "key_start": Spec(("B",), _INDEX, "int32 or int64"),
    "cache_seqlens": Spec(("B",), _INDEX, "int32 or int64"),
    "weight": Spec(("N",), layout="all", note=" to match the last dimension of x"),
    "bases": Spec(("n",), (torch.uint8,), "uint8", "all"),
    "ids": Spec(("T",), (torch.int64,), "int64"),
    "pieces": Spec(("P",), (torch.uint8,), "uint8"),
    "piece_offsets": Spec(("V+1",), (torch.int64,), "int64"),
}


def _check_tensor(
    op: str, name: str, t: object, sizes: dict[str, int] | None, like: torch.Tensor | None = None, like_name: str = ""
) -> torch.Tensor:
    """Check the tensor argument ``name`` of ``op`` against ``TENSORS[name]``: a tensor, on the device of ``like``
    (the argument ``like_name`` it goes with), of its dtypes (or ``like``'s dtype), of the sizes ``sizes`` binds
    (None: ``name`` binds them), of its layout. One-line OpTypeError / OpValueError naming it otherwise."""
    spec = TENSORS[name]
    if not isinstance(t, torch.Tensor):
        raise OpTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if like is not None:
        if t.device != like.device:
            _same_device(like, like_name, t, name, op)
        if spec.dtypes is None and t.dtype != like.dtype:
            _same_dtype(like, like_name, t, name, op)
    if spec.dtypes is not None and t.dtype not in spec.dtypes:
        raise OpTypeError(f"{op}: {name} must be {spec.words}, got {_dt(t.dtype)}")
    s = t.shape
    bad = len(s) != len(spec.dims) or (spec.odd_at is not None and s[spec.odd_at] % 2 != 1)
    if sizes is not None and not bad:
        for i, d in spec.bound:
            if s[i] != sizes[d]:
                bad = True
    if bad:
        _shape_error(op, name, spec, s, sizes or {})
    if spec.layout == "last" and s[-1] > 1 and not t.is_contiguous() and t.stride(-1) != 1:
        raise OpValueError(
            f"{op}: {name} must have a contiguous last dimension (stride 1), got strides {t.stride()}; "
            "call .contiguous()"
        )
    if spec.layout == "all" and t.numel() > 1 and not t.is_contiguous():
        raise OpValueError(f"{op}: {name} must be contiguous, got stride {t.stride()}")
    return t


def _shape_error(op: str, name: str, spec: Spec, shape: torch.Size, sizes: dict[str, int]) -> NoReturn:
    """``name must be (B, H, T, D) = (2, 4, *, 32), got (2, 4, 9, 16)`` (without ``= ...`` when nothing is bound)."""
    want = [sizes.get(d) for d in spec.dims]
    comma = "," if len(want) == 1 else ""
    note = spec.note
    dims = f"({', '.join(spec.dims)}{comma})"
    if all(w is None for w in want):
        raise OpValueError(f"{op}: {name} must be {dims}{note}, got shape {tuple(shape)}")
    shown = ", ".join("*" if w is None else str(w) for w in want)
    raise OpValueError(f"{op}: {name} must be {dims} = ({shown}{comma}){note}, got {tuple(shape)}")


# ---------------------------------------------------------------------------------------------------------------
# RMSNorm
# ---------------------------------------------------------------------------------------------------------------
def check_rms_norm(x: object, weight: object, eps: object, op: str = "rms_norm") -> None:
    """Arguments of ``rms_norm``: x floating ``(..., N)``, N > 0, rows readable in place; weight ``(N,)`` like x
    (contiguous) or None; eps a real number >= 0."""
    x = _tensor(x, "x", op)
    if x.dtype not in FLOATS:
        raise OpTypeError(f"{op}: x must be {_FLOAT_NAMES}, got {_dt(x.dtype)}")
    _real(eps, "eps", op)
    if not eps >= 0:  # also NaN
        raise OpValueError(f"{op}: eps must be >= 0, got {eps}")
    _rows(x, "x", op)
    n = x.shape[-1]
    if n == 0:
        raise OpValueError(f"{op}: the last dimension of x must be non-empty, got shape {_shape(x)}")
    if weight is not None:
        _check_tensor(op, "weight", weight, {"N": n}, x, "x")


def check_add_rms_norm(x: object, residual: object, weight: object, eps: object, op: str = "add_rms_norm") -> None:
    """Arguments of ``add_rms_norm``: those of ``rms_norm`` and a residual of x's shape, dtype and device."""
    check_rms_norm(x, weight, eps, op)
    residual = _tensor(residual, "residual", op)
    _same_device(x, "x", residual, "residual", op)
    _same_dtype(x, "x", residual, "residual", op)
    if residual.shape != x.shape:
        raise OpValueError(f"{op}: residual must have the shape of x {_shape(x)}, got {_shape(residual)}")
    _rows(residual, "residual", op)


# ---------------------------------------------------------------------------------------------------------------
# Relative-position attention
# ---------------------------------------------------------------------------------------------------------------
def _check_q(q: object, op: str) -> tuple[torch.Tensor, dict[str, int]]:
    """q, and the sizes it binds for the other arguments: ``B``, ``H``, ``D``."""
    q = _check_tensor(op, "q", q, None)
    B, H, _, D = q.shape
    if D == 0:
        raise OpValueError(f"{op}: q must have a non-empty head dimension D, got shape {tuple(q.shape)}")
    return q, {"B": B, "H": H, "D": D}


def _check_optional(op: str, name: str, t: object, sizes: dict[str, int], q: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else _check_tensor(op, name, t, sizes, q, "q")


def _check_scale(scale: object, op: str) -> None:
    if scale is not None:
        _real(scale, "scale", op)


def check_rel_attention(
    q: object,
    k: object,
    v: object,
    rel_emb: object = None,
    key_start: object = None,
    causal: object = False,
    scale: object = None,
    op: str = "rel_attention",
) -> None:
    """Arguments of ``rel_attention``: q ``(B, H, Tq, D)`` floating, D > 0; k, v ``(B, H, Tk, D)`` like q with
    ``Tq <= Tk``; last dimensions contiguous; rel_emb ``(H, 2P-1, D)`` like q or None; key_start int32/int64
    ``(B,)`` on q's device or None; causal a bool; scale a real number or None."""
    q, sizes = _check_q(q, op)
    k = _check_tensor(op, "k", k, sizes, q, "q")
    v = _check_tensor(op, "v", v, sizes, q, "q")
    if v.shape[2] != k.shape[2]:
        raise OpValueError(f"{op}: v must have k's length Tk = {k.shape[2]}, got {v.shape[2]}")
    if q.shape[2] > k.shape[2]:
        raise OpValueError(
            f"{op}: needs Tq <= Tk (queries are the last Tq positions), got Tq = {q.shape[2]} > Tk = {k.shape[2]}"
        )
    _check_optional(op, "key_start", key_start, sizes, q)
    _check_optional(op, "rel_emb", rel_emb, sizes, q)
    _bool(causal, "causal", op)
    _check_scale(scale, op)


def check_rel_attention_with_kvcache(
    q: object,
    k_cache: object,
    v_cache: object,
    rel_emb: object = None,
    cache_seqlens: object = None,
    k_new: object = None,
    v_new: object = None,
    key_start: object = None,
    scale: object = None,
    op: str = "rel_attention_with_kvcache",
    *,
    device_values: bool = False,
) -> None:
    """Arguments of ``rel_attention_with_kvcache``: q, caches ``(B, H, Tmax, D)`` with ``Tq <= Tmax``, rel_emb and
    key_start as ``rel_attention``; cache_seqlens int32/int64 ``(B,)``; k_new, v_new ``(B, H, Tq, D)`` like q, both
    or neither. The cache_seqlens values (when readable): ``0 <= cache_seqlens[b]``, ``cache_seqlens[b] + n_new <=
    Tmax`` (the new tokens fit) and ``cache_seqlens[b] + n_new >= Tq`` (the queries' own keys are there); read on
    the CPU, and on other devices too with ``device_values`` (the reference: a sync)."""
    q, sizes = _check_q(q, op)
    k_cache = _check_tensor(op, "k_cache", k_cache, sizes, q, "q")
    v_cache = _check_tensor(op, "v_cache", v_cache, sizes, q, "q")
    Tq, Tmax = q.shape[2], k_cache.shape[2]
    if v_cache.shape[2] != Tmax:
        raise OpValueError(f"{op}: v_cache must have k_cache's length Tmax = {Tmax}, got {v_cache.shape[2]}")
    if Tq > Tmax:
        raise OpValueError(f"{op}: needs Tq <= Tmax, got Tq = {Tq} > Tmax = {Tmax}")
    if cache_seqlens is None:
        raise OpTypeError(f"{op}: cache_seqlens must be an int32/int64 tensor of shape ({q.shape[0]},), got None")
    seqlens = _check_tensor(op, "cache_seqlens", cache_seqlens, sizes, q, "q")
    _check_optional(op, "key_start", key_start, sizes, q)
    if (k_new is None) != (v_new is None):
        raise OpValueError(f"{op}: k_new and v_new must be given together")
    n_new = 0
    if k_new is not None:
        for name, t in (("k_new", k_new), ("v_new", v_new)):
            t = _check_tensor(op, name, t, sizes, q, "q")
            if t.shape[2] != Tq:
                raise OpValueError(f"{op}: {name} must have q's length Tq = {Tq}, got {t.shape[2]}")
        n_new = Tq
    _check_optional(op, "rel_emb", rel_emb, sizes, q)
    _check_scale(scale, op)
    if _values_checkable(seqlens, device_values):
        for b, s in enumerate(seqlens.tolist()):
            if not (s >= 0 and s + n_new <= Tmax):
                raise OpValueError(
                    f"{op}: cache_seqlens[{b}] + {n_new} new tokens must be within the cache length Tmax = {Tmax}, "
                    f"got cache_seqlens[{b}] = {s}"
                )
            if s + n_new < Tq:
                raise OpValueError(
                    f"{op}: row {b} holds {s + n_new} keys, fewer than the Tq = {Tq} queries (without k_new the cache "
                    "must already hold them)"
                )


# ---------------------------------------------------------------------------------------------------------------
# k-mer tokenization
# ---------------------------------------------------------------------------------------------------------------
def _check_k_stride(k: object, stride: object, op: str) -> None:
    if isinstance(k, bool) or not isinstance(k, Integral | torch.SymInt) or not 1 <= k <= MAX_K:
        raise OpValueError(f"{op}: k must be an int in 1..{MAX_K}, got {k!r}")
    if isinstance(stride, bool) or not isinstance(stride, Integral | torch.SymInt) or not 1 <= stride <= 2**30:
        raise OpValueError(f"{op}: stride must be an int in 1..2^30, got {stride!r}")


def _check_vocab(
    bases: torch.Tensor, table: object, tail_table: object, char_ids: object, k: int, dtype: object, op: str
) -> None:
    table = _tensor(table, "table", op)
    tail_table = _tensor(tail_table, "tail_table", op)
    char_ids = _tensor(char_ids, "char_ids", op)
    for name, t in (("table", table), ("tail_table", tail_table), ("char_ids", char_ids)):
        _same_device(bases, "bases", t, name, op)
    if k <= MAX_DENSE_K:
        want, tail = 4**k, (4**k - 4) // 3
        if table.dtype != torch.int32 or table.dim() != 1 or table.shape[0] != want:
            raise OpValueError(
                f"{op}: table must be int32 (4^k,) = ({want},) for k = {k}, got {_dt(table.dtype)} {_shape(table)}"
            )
        if tail_table.dtype != torch.int32 or tail_table.dim() != 1 or tail_table.shape[0] not in (tail, 0):
            raise OpValueError(
                f"{op}: tail_table must be int32 ((4^k - 4) / 3,) = ({tail},) or (0,) for k = {k}, got "
                f"{_dt(tail_table.dtype)} {_shape(tail_table)}"
            )
    else:
        if table.dtype != torch.int64 or table.dim() != 2 or table.shape[1] != 2:
            raise OpValueError(
                f"{op}: table must be an int64 (C, 2) hash table of (code, id) slots for k = {k} > {MAX_DENSE_K}, "
                f"got {_dt(table.dtype)} {_shape(table)}"
            )
        cap = table.shape[0]
        if not (1 <= cap <= 2**40 and cap & (cap - 1) == 0):
            raise OpValueError(f"{op}: the hash table size C must be a power of two in 1..2^40, got {cap}")
        if tail_table.numel() != 0:
            raise OpValueError(f"{op}: tail_table must be empty for k > {MAX_DENSE_K}, got {_shape(tail_table)}")
    if not (table.is_contiguous() and tail_table.is_contiguous()):
        raise OpValueError(f"{op}: table and tail_table must be contiguous")
    if char_ids.dtype != torch.int32 or char_ids.dim() != 1 or char_ids.shape[0] != 256 or not char_ids.is_contiguous():
        raise OpValueError(
            f"{op}: char_ids must be contiguous int32 (256,), got {_dt(char_ids.dtype)} {_shape(char_ids)}"
        )
    if dtype not in (torch.int64, torch.int32):
        raise OpTypeError(f"{op}: dtype must be int64 or int32, got {dtype}")
    if dtype == torch.int32 and k > MAX_DENSE_K and table.numel() and _values_checkable(table):
        top = int(table[:, 1].max())
        if top > _INT32[1]:
            raise OpValueError(f"{op}: the hash table holds id {top}, which does not fit dtype int32")


def _check_offsets(bases: torch.Tensor, offsets: object, op: str, values: bool) -> torch.Tensor:
    name = "offsets"
    offsets = _tensor(offsets, name, op)
    if not (
        offsets.device.type == "cpu"
        and offsets.dtype == torch.int64
        and offsets.dim() == 1
        and offsets.shape[0] >= 1
        and offsets.is_contiguous()
    ):
        raise OpValueError(
            f"{op}: {name} must be a contiguous CPU int64 (B+1,) tensor, got {_dt(offsets.dtype)} "
            f"{_shape(offsets)} on {offsets.device}"
        )
    if values and _values_checkable(offsets):
        first, last = int(offsets[0]), int(offsets[-1])
        if not (first >= 0 and last <= bases.numel()):
            raise OpValueError(f"{op}: {name} must lie in [0, {bases.numel()}], got first {first} and last {last}")
        _non_decreasing(offsets, name, op)
    return offsets


def _non_decreasing(t: torch.Tensor, name: str, op: str) -> None:
    if t.numel() > 1:
        down = (t[1:] < t[:-1]).nonzero()
        if down.numel():
            i = int(down[0, 0])
            raise OpValueError(
                f"{op}: {name} must be non-decreasing, got {name}[{i}] = {int(t[i])} > {name}[{i + 1}] = "
                f"{int(t[i + 1])}"
            )


def check_kmer_encode(
    bases: object,
    table: object,
    tail_table: object,
    char_ids: object,
    k: object,
    stride: object,
    missing_id: object = -1,
    fold_case: object = False,
    dtype: object = torch.int64,
    op: str = "kmer_encode",
) -> None:
    """Arguments of ``kmer_encode``: k in 1..32, stride in 1..2^30; bases uint8 ``(n,)`` contiguous; for k <= 12
    table int32 ``(4^k,)`` and tail_table int32 ``((4^k - 4) / 3,)`` or empty, else table an int64 ``(C, 2)`` hash
    table (C a power of two) and tail_table empty; char_ids contiguous int32 ``(256,)``, all on bases' device;
    dtype int64/int32; missing_id an int that fits dtype; fold_case a bool."""
    _check_k_stride(k, stride, op)
    bases = _check_tensor(op, "bases", bases, None)
    _check_vocab(bases, table, tail_table, char_ids, k, dtype, op)
    lo, hi = _INT32 if dtype == torch.int32 else _INT64
    _int(missing_id, "missing_id", op, lo, hi)
    _bool(fold_case, "fold_case", op)


def check_kmer_encode_batch(
    bases: object,
    offsets: object,
    table: object,
    tail_table: object,
    char_ids: object,
    k: object,
    stride: object,
    missing_id: object = -1,
    fold_case: object = False,
    dtype: object = torch.int64,
    pad_id: object = 0,
    left_pad: object = False,
    op: str = "kmer_encode_batch",
    *,
    values: bool = True,
) -> None:
    """Arguments of ``kmer_encode_batch``: those of ``kmer_encode`` with CPU bases, offsets a contiguous CPU int64
    ``(B+1,)`` tensor non-decreasing within ``[0, n]`` (its values read when ``values``), pad_id an int that fits
    dtype, left_pad a bool."""
    check_kmer_encode(bases, table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype, op)
    if bases.device.type != "cpu":
        raise OpValueError(f"{op}: bases must be on the CPU, got {bases.device}")
    _check_offsets(bases, offsets, op, values)
    lo, hi = _INT32 if dtype == torch.int32 else _INT64
    _int(pad_id, "pad_id", op, lo, hi)
    _bool(left_pad, "left_pad", op)


def check_kmer_decode(
    ids: object, pieces: object, piece_offsets: object, op: str = "kmer_decode", *, values: bool = True
) -> None:
    """Arguments of ``kmer_decode``: ids int64 ``(T,)``, pieces uint8 ``(P,)``, piece_offsets int64 ``(V+1,)``
    non-decreasing from 0 to at most P (read when ``values``), all on one device. (Each id is checked against
    ``[0, V)`` while decoding.)"""
    ids = _check_tensor(op, "ids", ids, None)
    pieces = _check_tensor(op, "pieces", pieces, None, ids, "ids")
    piece_offsets = _check_tensor(op, "piece_offsets", piece_offsets, None, ids, "ids")
    if piece_offsets.shape[0] < 1:
        raise OpValueError(f"{op}: piece_offsets must be (V+1,) with V >= 0, got shape {_shape(piece_offsets)}")
    if values and _values_checkable(piece_offsets):
        first, last = int(piece_offsets[0]), int(piece_offsets[-1])
        if first != 0 or last > pieces.numel():
            raise OpValueError(
                f"{op}: piece_offsets must run from 0 to at most len(pieces) = {pieces.numel()}, got {first} .. {last}"
            )
        _non_decreasing(piece_offsets, "piece_offsets", op)


def check_kmer_count(
    bases: object,
    offsets: object,
    k: object,
    stride: object,
    fold_case: object = False,
    op: str = "kmer_count",
    *,
    values: bool = True,
) -> None:
    """Arguments of ``kmer_count``: k in 1..12, stride in 1..2^30, CPU bases and offsets as
    ``kmer_encode_batch``, fold_case a bool."""
    _check_k_stride(k, stride, op)
    if k > MAX_DENSE_K:
        raise OpValueError(f"{op}: k must be <= {MAX_DENSE_K} for dense counting, got {k}")
    bases = _check_tensor(op, "bases", bases, None)
    if bases.device.type != "cpu":
        raise OpValueError(f"{op}: bases must be on the CPU, got {bases.device}")
    _check_offsets(bases, offsets, op, values)
    _bool(fold_case, "fold_case", op)
