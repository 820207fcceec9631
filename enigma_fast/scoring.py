"""Reading sequences with a trained model: log-likelihoods, bits per base, per-base tracks and embeddings.

    from enigma_fast import scoring
    from enigma_fast.models import load_model

    model = load_model("runs/tiny/final")
    s = scoring.score(model, ["ACGTTGCA...", "GGATCC..."], per_base=True)[0]
    s.bits_per_base, s.log_likelihood, s.per_base       # float, float, (length,) float64
    e = scoring.embed(model, seqs)                       # e.mean: (N, d_model) float32

Windows. A sequence of ``n`` tokens longer than one model call is read in windows that tile it like the trainer's
held-out evaluation (``enigma_fast.data.windows.eval_windows``); every token is scored once, and every scored
token after the start of the sequence sees at least ``context`` tokens of left context:

* **EnBERT** (decoder-only): a window is ``window + 1`` token ids; the model reads the first ``window`` and
  predicts ids 1..window, ``log p(x_t | x_<t)``. Windows advance by ``stride = window + 1 - context``; each
  scores its last ``stride`` ids. The first token of a sequence has no context and is not scored.
* **Enigma** (encoder-decoder): a window is ``window`` ids split as the trainer splits it
  (``Enigma.split_window``): the source is its first ``context`` ids (the encoder reads them bidirectionally),
  the target the ``window - context`` ids after them (the decoder predicts each from the source and the target
  ids before it). Windows advance by ``stride = window - context``. The first ``context`` ids of a sequence are
  source only and never scored (a sequence of ``n <= context`` ids: its first ``n - 1``); as in the trainer.

Tokens to bases. A token's log-probability is spread evenly over the bases it stands for (a k-mer: k bases, a
tail piece or a fallback letter: its length), so ``per_base`` exists for any tokenizer and sums to
``log_likelihood``. Tokens standing for anything but A/C/G/T (N and the other IUPAC codes) are read as context
but not scored: their bases are NaN in ``per_base`` and left out of ``log_likelihood`` and ``scored_bases``.

    log_likelihood = sum_{scored tokens t} log p(x_t | context)             (nats)
    bits_per_base  = -log_likelihood / scored_bases / ln 2

Batching and padding change nothing: windows are batched by length; EnBERT rows are right-padded (a causal model
never attends to later positions), Enigma sources left-padded with ``src_start`` (relative attention is
shift-invariant and the absolute positions are shifted with them), targets right-padded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from enigma_fast._reading import BaseChain, embed_chunks, per_call, run_windows
from enigma_fast.data.windows import EvalWindow, EvalWindowArrays, eval_window_arrays, eval_windows
from enigma_fast.tokenizers import DNATokenizer, reverse_complement

__all__ = [
    "Embeddings",
    "SequenceScore",
    "base_chain",
    "bases_per_token",
    "embed",
    "per_base_track",
    "plan_windows",
    "resolve_window",
    "score",
    "score_segments",
    "token_log_probs",
]

logger = logging.getLogger(__name__)

_ACGT = frozenset("ACGTacgt")
_AMBIGUOUS = np.ones(256, dtype=bool)
_AMBIGUOUS[np.frombuffer(b"ACGTacgt", dtype=np.uint8)] = False
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class SequenceScore:
    """The score of one sequence.

    Attributes:
        length: bases in the sequence.
        log_likelihood: sum of the natural-log probabilities of the scored bases (nats).
        scored_bases: bases whose probability is in ``log_likelihood``.
        bits_per_base: ``-log_likelihood / scored_bases / ln 2`` (NaN when nothing is scored).
        n_count: bases that are not A/C/G/T (N and the other IUPAC codes, either case).
        per_base: ``(length,)`` float64 natural-log probability per base, NaN where unscored; None unless asked.
    """

    length: int
    log_likelihood: float
    scored_bases: int
    bits_per_base: float
    n_count: int
    per_base: np.ndarray | None = None


@dataclass
class Embeddings:
    """Hidden states of one layer for N sequences.

    Attributes:
        mean: ``(N, d_model)`` float32, the mean over each sequence's tokens (NaN for an empty sequence).
        per_token: N arrays ``(T_i, d_model)`` float32 when asked, else None.
        num_tokens: ``(N,)`` int64 tokens per sequence.
        layer: the layer read, as a non-negative index into ``[block 0, ..., block L-1, final norm]``.
    """

    mean: np.ndarray
    per_token: list[np.ndarray] | None
    num_tokens: np.ndarray
    layer: int


# ------------------------------------------------------------------------------------------------------------
# argument checks
# ------------------------------------------------------------------------------------------------------------
def _model_kind(model: Any) -> str:
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in ("enbert", "enigma"):
        raise TypeError(f"model must be an EnBERT or Enigma model, got {type(model).__name__}")
    return kind


def _int_arg(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return int(value)


def resolve_window(model: Any, window: int | None, context: int | None) -> tuple[int, int]:
    """``(window, context)`` with their defaults (block_size, window // 2) filled in and checked against the model:
    EnBERT ``2 <= window <= block_size``, ``1 <= context <= window``; Enigma the same with ``context < window``."""
    kind = _model_kind(model)
    block = int(model.config.block_size)
    window = block if window is None else _int_arg("window", window, 2, block)
    context = max(1, window // 2) if context is None else context
    context = _int_arg("context", context, 1, window if kind == "enbert" else window - 1)
    return window, context


def _resolve_device(model: Any, device: torch.device | str | None) -> torch.device:
    here = next(model.parameters()).device
    if device is None:
        return here
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch.device or a string such as 'cpu' or 'cuda:0', got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: no CUDA device is available")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev != here:
        model.to(dev)
    return dev


def _autocast(device: torch.device, dtype: torch.dtype | str | None, model: Any) -> Callable[[], Any]:
    """A context factory: autocast to ``dtype`` on ``device`` when it is a lower precision than the model's own
    parameters; nothing otherwise."""
    if dtype is None:
        return contextlib.nullcontext
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)} (or a torch.dtype), got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    if dtype == next(model.parameters()).dtype or dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def _check_seqs(seqs: Any) -> list[str]:
    if isinstance(seqs, str | bytes):
        raise TypeError(f"seqs must be a list of DNA strings, got one {type(seqs).__name__} (wrap it in a list)")
    try:
        seqs = list(seqs)
    except TypeError:
        raise TypeError(f"seqs must be a list of DNA strings, got {type(seqs).__name__}") from None
    for i, s in enumerate(seqs):
        if not isinstance(s, str):
            raise TypeError(f"seqs[{i}] must be a DNA string, got {type(s).__name__}")
    return seqs


def _tokenizer(model: Any, tokenizer: DNATokenizer | None) -> DNATokenizer:
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(
            "tokenizer must be given: the model has no tokenizer attached (load it with "
            "from_pretrained from a folder holding tokenizer.json, or pass tokenizer=)"
        )
    if not isinstance(tok, DNATokenizer):
        raise TypeError(f"tokenizer must be an enigma_fast tokenizer, got {type(tok).__name__}")
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model's vocab_size is {model.config.vocab_size}")
    return tok


def bases_per_token(tok: DNATokenizer) -> np.ndarray:
    """``(vocab,)`` int64: how many bases each id stands for (a k-mer ``min(k, stride)``, a tail piece or a
    fallback letter its length, a special 0); the same rule as the trainer's bits-per-base accounting
    (``DNATokenizer.bases_per_token``)."""
    return tok.bases_per_token()


def base_chain(tok: DNATokenizer) -> BaseChain | None:
    """The k-mer table ``token_log_probs(..., bases=True)`` factorises a token's probability with, or None when
    ``tok`` is not a non-overlapping k-mer tokenizer (k > 1, stride k) holding all 4^k upper-case k-mers of A/C/G/T.

    ``codes[id]`` = sum over j of ``base(b_j) * 4^(k-j)`` (A=0, C=1, G=2, T=3) for the k-mer ``b_1..b_k``, -1 for
    every other id (tail pieces, lower-case k-mers, specials, fallback letters)."""
    k = int(tok.k)
    if k < 2 or tok.stride != k:
        return None
    digit = {"A": 0, "C": 1, "G": 2, "T": 3}
    codes = np.full(tok.vocab_size, -1, dtype=np.int64)
    ids = np.full(4**k, -1, dtype=np.int64)
    for text, i in tok.pieces.items():
        if len(text) == k and all(ch in digit for ch in text):
            c = 0
            for ch in text:
                c = 4 * c + digit[ch]
            codes[i], ids[c] = c, i
    if (ids < 0).any():
        return None
    return BaseChain(torch.from_numpy(codes), torch.from_numpy(ids), k)


def _acgt_tokens(tok: DNATokenizer) -> np.ndarray:
    """``(vocab,)`` bool: ids standing for A/C/G/T bases only (either case)."""
    out = np.zeros(tok.vocab_size, dtype=bool)
    for table in (tok.pieces, tok.fallback_ids):
        for text, i in table.items():
            out[i] = bool(text) and _ACGT.issuperset(text)
    return out


# ------------------------------------------------------------------------------------------------------------
# windows and the batched engine
# ------------------------------------------------------------------------------------------------------------
def plan_windows(kind: str, segments: np.ndarray, window: int, context: int) -> list[EvalWindow]:
    """Windows over ``segments`` ``(S, 2)`` rows ``(offset, num_tokens)`` of a flat id array; see the module doc.

    EnBERT: ``eval_windows(segments, window + 1, window + 1 - context)``. Enigma: ``eval_windows(segments,
    window, window - context)`` (its first ``context`` ids are the source of the first window). These are the
    windows of the trainer's final evaluation for ``(window, stride)`` = the run's ``(window, eval stride)``
    (EnBERT) or ``(window, window - src_len)`` (Enigma)."""
    if kind == "enbert":
        return eval_windows(segments, window + 1, window + 1 - context)
    return eval_windows(segments, window, window - context)


def _plan(kind: str, segments: np.ndarray, window: int, context: int) -> EvalWindowArrays:
    """``plan_windows`` as arrays (``eval_window_arrays``)."""
    if kind == "enbert":
        return eval_window_arrays(segments, window + 1, window + 1 - context)
    return eval_window_arrays(segments, window, window - context)


def token_log_probs(
    model: Any,
    ids: Sequence[np.ndarray | torch.Tensor | Sequence[int]],
    *,
    window: int | None = None,
    context: int | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    progress: Any = False,
    bases: bool = False,
    tokenizer: DNATokenizer | None = None,
) -> list[np.ndarray]:
    """Per-token natural-log probabilities of token id sequences.

    ``ids``: N sequences of token ids ``(T_i,)``. Returns N float64 arrays ``(T_i,)`` with
    ``log p(x_t | context)`` at every scored token and NaN elsewhere (EnBERT: the first token of a sequence;
    Enigma: its first ``context`` tokens), the windows as in the module doc: ``window`` tokens per model call
    (default the model's ``block_size``), at least ``context`` tokens of left context (default ``window // 2``).

    ``batch_size`` windows per model call; ``device`` (default: the model's; the model is moved there);
    ``dtype``: compute precision (``"bfloat16"``/``"float16"`` run under autocast; default the model's own);
    ``progress``: True for a bar on stderr, or an object with ``update(n)`` told the tokens scored.

    ``bases``: with a non-overlapping k-mer tokenizer (``tokenizer``, default ``model.tokenizer``; see
    ``base_chain``), each array is ``(T_i, 1 + k)``: column 0 the token's log-probability, column j the
    log-probability of its base j given the context and its bases before j, by the chain rule over the whole
    distribution (``P_j(b_1..b_j)`` = the summed probability of the k-mers starting with ``b_1..b_j``; column j =
    ``log P_j - log P_{j-1}``, ``P_0 = 1``; columns 1..k sum to column 0), NaN for a token that is not a k-mer of
    A/C/G/T. A ValueError for any other tokenizer (a single-base model's token is its base already).
    """
    kind = _model_kind(model)
    chain = None
    if bases:
        tok = _tokenizer(model, tokenizer)
        chain = base_chain(tok)
        if chain is None:
            raise ValueError(
                f"bases=True needs a non-overlapping k-mer tokenizer with k > 1, got k={tok.k}, stride={tok.stride}"
            )
    window, context = resolve_window(model, window, context)
    batch_size = _int_arg("batch_size", batch_size, 1)
    dev = _resolve_device(model, device)
    autocast = _autocast(dev, dtype, model)
    if isinstance(ids, np.ndarray | torch.Tensor) and ids.ndim == 1:
        raise TypeError("ids must be a list of token id sequences, got one 1-D array (wrap it in a list)")
    arrays = []
    for i, x in enumerate(ids):
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"ids[{i}] must be a 1-D sequence of integer token ids, got {a.dtype} {a.shape}")
        V = model.config.vocab_size
        if a.size and (a.min() < 0 or a.max() >= V):
            raise ValueError(f"ids[{i}] must hold token ids in [0, vocab_size={V}), got {int(a.min())}..{int(a.max())}")
        arrays.append(a.astype(np.int64, copy=False))
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    segments = np.stack([offsets[:-1], lengths], axis=1) if arrays else np.zeros((0, 2), dtype=np.int64)
    wins = _plan(kind, segments, window, context)
    lp = run_windows(model, flat, wins, kind, context, batch_size, dev, autocast, progress, "ids", chain)
    return [lp[offsets[i] : offsets[i + 1]] for i in range(len(arrays))]


def score_segments(
    model: Any,
    tokens: np.ndarray,
    segments: np.ndarray,
    *,
    window: int | None = None,
    context: int | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    progress: Any = False,
) -> np.ndarray:
    """Per-token log-probabilities ``(len(tokens),)`` float64 (NaN unscored) of the stretches ``segments``
    ``(S, 2)`` rows ``(offset, num_tokens)`` of a flat id array ``tokens`` (e.g. a token store's memory map and
    its held-out segments), without copying the stretches out first. Arguments as in ``token_log_probs``."""
    kind = _model_kind(model)
    window, context = resolve_window(model, window, context)
    batch_size = _int_arg("batch_size", batch_size, 1)
    dev = _resolve_device(model, device)
    autocast = _autocast(dev, dtype, model)
    wins = _plan(kind, np.asarray(segments, dtype=np.int64).reshape(-1, 2), window, context)
    return run_windows(model, np.asarray(tokens), wins, kind, context, batch_size, dev, autocast, progress)


# ------------------------------------------------------------------------------------------------------------
# sequences
# ------------------------------------------------------------------------------------------------------------
def _encode(tok: DNATokenizer, seqs: Sequence[str], what: str) -> list[np.ndarray]:
    out = []
    for i, s in enumerate(seqs):
        try:
            out.append(tok.encode_tensor(s).numpy())
        except ValueError as err:
            raise ValueError(f"{what}[{i}]: {err}") from None
    return out


def _per_base(lp: np.ndarray, ids: np.ndarray, bpt: np.ndarray, acgt: np.ndarray) -> np.ndarray:
    """Token log-probs ``(T,)`` spread over the bases of each token: ``(sum bpt[ids],)`` float64, NaN where the
    token is unscored or not A/C/G/T."""
    b = bpt[ids]
    val = np.where(acgt[ids], lp, np.nan) / np.maximum(b, 1)
    return np.repeat(val, b)


def per_base_track(lp: np.ndarray, ids: np.ndarray, tokenizer: DNATokenizer) -> np.ndarray:
    """Per-base natural-log probabilities ``(bases,)`` float64 of per-token log-probabilities ``lp`` of ``ids``
    ``(T,)`` (NaN for an unscored token or one that is not A/C/G/T).

    ``lp`` ``(T,)``: token t's value divided evenly over the ``bases_per_token[ids[t]]`` bases it stands for.
    ``lp`` ``(T, 1 + k)`` (``token_log_probs(..., bases=True)``): a k-mer token's k bases get its chain-rule
    columns 1..k, base by base; any other token its column 0 divided evenly."""
    lp = np.asarray(lp, dtype=np.float64)
    ids = np.asarray(ids)
    bpt, acgt = bases_per_token(tokenizer), _acgt_tokens(tokenizer)
    if lp.ndim == 1:
        return _per_base(lp, ids, bpt, acgt)
    k = lp.shape[1] - 1
    if lp.ndim != 2 or lp.shape[0] != len(ids) or k != tokenizer.k or tokenizer.stride != k:
        raise ValueError(f"lp must be (T,) or (T, 1 + k) = ({len(ids)}, {1 + tokenizer.k}), got {lp.shape}")
    out = _per_base(lp[:, 0], ids, bpt, acgt)
    full = (bpt[ids] == k) & ~np.isnan(lp[:, 1:]).any(axis=1)  # k-mer tokens: every base has its own value
    starts = np.concatenate([[0], np.cumsum(bpt[ids])[:-1]])[full]
    out[starts[:, None] + np.arange(k)[None, :]] = lp[full, 1:]
    return out


def _finish(length: int, n_count: int, track: np.ndarray, keep: bool, ll: float | None = None) -> SequenceScore:
    scored = int(np.count_nonzero(~np.isnan(track)))
    if ll is None:
        ll = float(np.nansum(track)) if scored else 0.0
    bpb = -ll / scored / math.log(2) if scored else math.nan
    return SequenceScore(length, ll, scored, bpb, n_count, track if keep else None)


def score(
    model: Any,
    seqs: Sequence[str],
    *,
    tokenizer: DNATokenizer | None = None,
    window: int | None = None,
    context: int | None = None,
    both_strands: bool = False,
    per_base: bool = False,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    progress: Any = False,
) -> list[SequenceScore]:
    """Score DNA sequences of any length with an EnBERT or Enigma model; one ``SequenceScore`` per sequence.

    ``seqs``: N DNA strings (A/C/G/T, N and IUPAC codes, either case). ``tokenizer``: default ``model.tokenizer``.
    ``window``/``context``: tokens per model call (default ``block_size``) and the least left context of a scored
    token (default ``window // 2``); see the module doc for the windows of each model, for how token
    log-probabilities become per-base values and for what is not scored.

        log_likelihood = sum over scored bases b of per_base[b]        (nats)
        bits_per_base  = -log_likelihood / scored_bases / ln 2

    ``both_strands``: score the sequence and its reverse complement, reverse the complement's per-base track back
    onto the sequence and take, base by base, the mean of the strands that score it (a base scored on one strand
    only, e.g. the first base of an EnBERT read, keeps that strand's value); ``log_likelihood`` and
    ``scored_bases`` are then the sum and count of that track, so ``score([s])`` equals
    ``score([reverse_complement(s)])``.

    ``per_base``: fill ``SequenceScore.per_base`` ``(length,)``. ``batch_size``, ``device``, ``dtype``,
    ``progress``: as in ``token_log_probs``. Bad input (a non-DNA character, wrong types, window or context out of
    range) raises a one-line ValueError or TypeError naming the argument.
    """
    _model_kind(model)
    seqs = _check_seqs(seqs)
    tok = _tokenizer(model, tokenizer)
    if not isinstance(both_strands, bool):
        raise TypeError(f"both_strands must be a bool, got {type(both_strands).__name__}")
    ids = _encode(tok, seqs, "seqs")
    if both_strands:
        ids += _encode(tok, [reverse_complement(s) for s in seqs], "seqs (reverse complement)")
    bpt, acgt = bases_per_token(tok), _acgt_tokens(tok)
    for i, (s, x) in enumerate(zip(seqs, ids, strict=False)):
        if int(bpt[x].sum()) != len(s):
            raise ValueError(
                f"tokenizer must stand for every base: seqs[{i}] has {len(s)} bases but its "
                f"{len(x)} tokens stand for {int(bpt[x].sum())} (k={tok.k}, stride={tok.stride})"
            )
    lps = token_log_probs(
        model, ids, window=window, context=context, batch_size=batch_size, device=device, dtype=dtype, progress=progress
    )
    out = []
    n = len(seqs)
    for i, s in enumerate(seqs):
        n_count = int(np.count_nonzero(_AMBIGUOUS[np.frombuffer(s.encode("latin-1", "replace"), dtype=np.uint8)]))
        fwd = _per_base(lps[i], ids[i], bpt, acgt)
        if not both_strands:
            keep = acgt[ids[i]] & ~np.isnan(lps[i])
            out.append(_finish(len(s), n_count, fwd, per_base, float(lps[i][keep].sum())))
            continue
        rev = _per_base(lps[n + i], ids[n + i], bpt, acgt)[::-1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mean of two NaNs
            track = np.nanmean(np.stack([fwd, rev]), axis=0) if len(s) else fwd
        out.append(_finish(len(s), n_count, track, per_base))
    return out


# ------------------------------------------------------------------------------------------------------------
# embeddings
# ------------------------------------------------------------------------------------------------------------
class _Captured(Exception):
    """Raised by a forward hook to stop the model once the wanted hidden state is in hand."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


def _layer_hook(model: Any, kind: str, layer: int) -> tuple[torch.nn.Module, int, int]:
    """The module whose forward output holds hidden state ``layer`` (non-negative, in ``[0, L]``), which element
    of its ``(y, residual)`` output, and L. Block i's output (the residual stream after it) is the residual the
    next norm receives: block i+1's ``norm1``, or the final norm after the last block; the final norm's ``y`` is
    state L."""
    blocks = model.blocks if kind == "enbert" else model.encoder
    final = model.norm_f if kind == "enbert" else model.enc_norm
    n = len(blocks)
    if layer == n:
        return final, 0, n
    return (blocks[layer + 1].norm1 if layer + 1 < n else final), 1, n


def embed(
    model: Any,
    seqs: Sequence[str],
    *,
    tokenizer: DNATokenizer | None = None,
    layer: int = -1,
    per_token: bool = False,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Embeddings:
    """Hidden states of one layer for N DNA sequences, mean-pooled per sequence and (``per_token``) per token.

    States are indexed ``[block 0, ..., block L-1, final norm]`` (Python-style, so ``layer=-1`` is the output of
    the final norm and ``-2`` the residual stream after the last block). EnBERT: its L decoder blocks (causal: the
    state of token t depends on tokens 0..t); Enigma: its L encoder blocks and encoder norm (bidirectional).

        mean[i] = (1 / T_i) * sum_t h_layer[i, t]       h: (T_i, d_model)

    A sequence longer than ``block_size`` tokens is cut into consecutive non-overlapping chunks of ``block_size``
    tokens (the last shorter), each read on its own; its per-token states are the chunks' states in order and its
    mean the mean over all its tokens. Batches are padded (EnBERT on the right, Enigma on the left with
    ``src_start``): padding changes no state. Returns ``Embeddings`` (float32 numpy arrays).
    """
    kind = _model_kind(model)
    seqs = _check_seqs(seqs)
    tok = _tokenizer(model, tokenizer)
    n_layers = len(model.blocks if kind == "enbert" else model.encoder)
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise TypeError(f"layer must be an int, got {type(layer).__name__} {layer!r}")
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ValueError(
            f"layer must be in [{-(n_layers + 1)}, {n_layers}] ({n_layers} blocks + the final norm), got {layer}"
        )
    layer = int(layer) % (n_layers + 1)
    batch_size = _int_arg("batch_size", batch_size, 1)
    dev = _resolve_device(model, device)
    autocast = _autocast(dev, dtype, model)
    ids = _encode(tok, seqs, "seqs")
    module, which, _ = _layer_hook(model, kind, layer)

    def hook(mod: torch.nn.Module, args: Any, output: Any) -> None:
        raise _Captured(output[which] if isinstance(output, tuple) else output)

    def states(x: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
        try:
            with autocast():
                if kind == "enbert":
                    model(x)
                else:
                    model.encode(x, start)
        except _Captured as got:
            return got.value
        raise RuntimeError("the hidden-state hook did not run")  # pragma: no cover

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        block = int(model.config.block_size)
        longest = min(block, max((len(x) for x in ids), default=1))
        calls = per_call(model, dev, batch_size, longest)
        mean, per, counts = embed_chunks(
            ids, block, states, kind == "enigma", int(model.config.d_model), calls, dev, per_token
        )
    finally:
        handle.remove()
        model.train(was_training)
    return Embeddings(mean, per, counts, layer)
