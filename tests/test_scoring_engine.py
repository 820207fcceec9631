"""The batched reading engine (``enigma_fast/_reading.py``) against plain one-window-per-call reads: long records,
both models and both tokenizers, odd lengths, N runs; the vectorised window plan against the loop it replaced;
streamed embedding means against ``numpy.mean`` over the per-token states."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from enigma_fast import _reading, scoring
from enigma_fast.data.windows import EvalWindow, eval_window_arrays, eval_windows
from enigma_fast.models import EnBERT
from tests.test_scoring import BLOCK, _dna, _model, _tokenizer


@pytest.fixture(scope="module")
def models() -> dict:
    return {(m, t): _model(m, _tokenizer(t), seed=3) for m in ("enbert", "enigma") for t in ("char", "kmer")}


def _record(n: int, seed: int) -> str:
    """n bases of random DNA with a run of N, a lone IUPAC code and soft-masked (lower-case) bases."""
    s = list(_dna(n, seed))
    s[n // 3 : n // 3 + 37] = "N" * 37
    s[n // 2] = "R"
    s[-20:] = [c.lower() for c in s[-20:]]
    return "".join(s)


def _one_window_reads(model, kind: str, ids: np.ndarray, window: int, context: int) -> np.ndarray:
    """The log-probabilities the windows of ``plan_windows`` give, each window run alone through the whole model
    (``model(...)``: every position, no batching, no padding)."""
    out = np.full(len(ids), np.nan)
    for w in scoring.plan_windows(kind, np.array([[0, len(ids)]]), window, context):
        win = torch.from_numpy(ids[w.start : w.start + w.length].astype(np.int64))[None]
        with torch.no_grad():
            if kind == "enbert":
                logits, _ = model(win[:, :-1])  # position j predicts window id j + 1
                first, targets = max(w.score_from, 1), win[:, 1:]
                lp = torch.log_softmax(logits.double(), -1).gather(-1, targets[..., None])[0, :, 0]
                out[w.start + first : w.start + w.length] = lp[first - 1 :].numpy()
            else:
                sl = min(context, w.length - 1)
                tgt = win[:, sl:]
                tgt_in = torch.cat([torch.full_like(tgt[:, :1], model.config.bos_id), tgt[:, :-1]], 1)
                logits, _ = model(win[:, :sl], tgt_in)
                first = max(w.score_from, sl)
                lp = torch.log_softmax(logits.double(), -1).gather(-1, tgt[..., None])[0, :, 0]
                out[w.start + first : w.start + w.length] = lp[first - sl :].numpy()
    return out


@pytest.mark.parametrize("tok_kind", ["char", "kmer"])
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_batched_windows_equal_one_window_per_call(models, kind, tok_kind):
    model = models[(kind, tok_kind)]
    seqs = [_record(2501, 1), _record(401, 2), _dna(BLOCK + 1, 3), _dna(7, 4)]  # odd lengths, short ones
    ids = [model.tokenizer.encode_tensor(s).numpy() for s in seqs]
    for window, context, batch, n in ((BLOCK, 20, 32, 4), (37, 11, 5, 3)):  # the second on the shorter records
        got = scoring.token_log_probs(model, ids[-n:], window=window, context=context, batch_size=batch)
        for x, g in zip(ids[-n:], got, strict=True):
            want = _one_window_reads(model, kind, x, window, context)
            assert np.array_equal(np.isnan(g), np.isnan(want))  # every token scored once, by the same window
            np.testing.assert_allclose(g, want, atol=2e-5, equal_nan=True)
    # score() on top of it: the per-base track holds the same values, N and IUPAC bases unscored
    s = scoring.score(model, seqs[:1], per_base=True, window=BLOCK, context=20)[0]
    assert s.n_count == 38 and np.isnan(s.per_base[2501 // 3 : 2501 // 3 + 37]).all()
    assert np.nansum(s.per_base) == pytest.approx(s.log_likelihood, rel=1e-12)


def test_enbert_reads_only_what_its_scored_targets_need(models, monkeypatch):
    model = models[("enbert", "char")]
    ids = model.tokenizer.encode_tensor(_dna(1500, 5)).numpy()
    calls = []
    tail = _reading.enbert_tail_logits
    monkeypatch.setattr(
        _reading, "enbert_tail_logits", lambda m, x, keep: calls.append((x.shape[1], keep)) or tail(m, x, keep)
    )
    got = scoring.token_log_probs(model, [ids], window=BLOCK, context=20, batch_size=4)[0]
    # the first batch holds the first window (all targets scored); the others keep their last stride = 45 targets
    # (a batch holding only the last window, which scores what the others left, fewer)
    assert calls[0] == (BLOCK, BLOCK) and calls[1] == (BLOCK, BLOCK + 1 - 20)
    assert all(t == BLOCK and keep <= BLOCK + 1 - 20 for t, keep in calls[1:])
    # a model the engine cannot drive block by block (here a subclass) runs whole, with the same values
    sub = type("Wrapped", (EnBERT,), {})(model.config)
    sub.load_state_dict(model.state_dict())
    sub.tokenizer = model.tokenizer
    calls.clear()
    whole = scoring.token_log_probs(sub.eval(), [ids], window=BLOCK, context=20, batch_size=4)[0]
    assert not calls
    np.testing.assert_allclose(got, whole, atol=1e-6, equal_nan=True)


def _windows_loop(segments: np.ndarray, window: int, stride: int) -> list[EvalWindow]:
    """The plan as a loop over windows (the definition ``eval_window_arrays`` vectorises)."""
    out = []
    for off, n in segments.tolist():
        if n < 2:
            continue
        if n <= window:
            out.append(EvalWindow(off, n, 1))
            continue
        out.append(EvalWindow(off, window, 1))
        scored = window
        while scored < n:
            end = min(scored + stride, n)
            out.append(EvalWindow(off + end - window, window, scored - end + window))
            scored = end
    return out


def test_window_plan_arrays_equal_the_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        S = int(rng.integers(0, 7))
        segments = np.stack([rng.integers(0, 10**7, S), rng.integers(0, 500, S)], 1).reshape(-1, 2)
        window = int(rng.integers(2, 130))
        stride = int(rng.integers(1, window))
        want = _windows_loop(segments, window, stride)
        a = eval_window_arrays(segments, window, stride)
        got = [EvalWindow(*t) for t in zip(a.starts.tolist(), a.lengths.tolist(), a.score_from.tolist(), strict=True)]
        assert got == want and eval_windows(segments, window, stride) == want
        assert all(x.dtype == np.int64 for x in a)
    with pytest.raises(ValueError, match=r"eval stride must be in \[1, window - 1 = 9\], got 10"):
        eval_window_arrays(np.array([[0, 100]]), 10, 10)


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_streamed_embedding_means_are_numpys_means(models, kind):
    model = models[(kind, "char")]
    # several sequences of several chunks (block 64), sharing batches with single-chunk ones, and an empty one
    seqs = [_dna(n, 40 + i) for i, n in enumerate((150, 64, 5, 200, 0, 129, 63, 300))]
    for batch, layer in ((3, -1), (32, 0)):
        full = scoring.embed(model, seqs, per_token=True, batch_size=batch, layer=layer)
        lean = scoring.embed(model, seqs, batch_size=batch, layer=layer)
        assert lean.per_token is None and np.array_equal(lean.num_tokens, [150, 64, 5, 200, 0, 129, 63, 300])
        want = np.stack([t.mean(axis=0) if len(t) else np.full(32, np.nan, np.float32) for t in full.per_token])
        assert np.array_equal(lean.mean, want, equal_nan=True) and np.array_equal(full.mean, want, equal_nan=True)
        # chunk by chunk: each chunk of block_size tokens read on its own
        for s, t in zip(seqs, full.per_token, strict=True):
            for a in range(0, len(s), BLOCK):
                alone = scoring.embed(model, [s[a : a + BLOCK]], per_token=True, layer=layer).per_token[0]
                np.testing.assert_allclose(t[a : a + BLOCK], alone, atol=1e-5)


def test_out_of_vocabulary_ids_raise_one_line(models):
    model = models[("enbert", "char")]
    tokens = np.full(300, 5, dtype=np.int64)
    tokens[250] = model.config.vocab_size
    with pytest.raises(
        ValueError, match=r"tokens must hold token ids in \[0, vocab_size=\d+\), got \d+ at tokens\[250\]"
    ):
        scoring.score_segments(model, tokens, np.array([[200, 100]]), window=BLOCK, context=20)
    # outside the segments nothing is read
    lp = scoring.score_segments(model, tokens, np.array([[0, 200]]), window=BLOCK, context=20)
    assert np.isnan(lp[200:]).all() and not np.isnan(lp[1:200]).any()


def test_progress_counts_every_scored_token(models):
    model = models[("enigma", "kmer")]
    seqs = [_record(1201, 6), _dna(30, 7)]

    class Count:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    c = Count()
    lps = scoring.token_log_probs(
        model, [model.tokenizer.encode_tensor(s).numpy() for s in seqs], window=40, context=9, progress=c
    )
    assert c.n == sum(int(np.count_nonzero(~np.isnan(x))) for x in lps)


def test_groups_cover_every_window_in_whole_batches():
    for n, batch, budget in itertools.product((0, 1, 7, 64, 65), (1, 4, 32), (1, 50, 10**6)):
        sizes = np.arange(n, dtype=np.int64) % 13 + 1
        groups = _reading._groups(sizes, batch, budget)
        edges = [a for a, _ in groups] + [n]
        assert edges[0] == 0 and [b for _, b in groups] == edges[1:] and (n == 0) == (not groups)
        assert all(a % batch == 0 and (sizes[a:b].sum() <= budget or b - a <= batch) for a, b in groups)
