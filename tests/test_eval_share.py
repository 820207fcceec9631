"""Held-out evaluation under FSDP2 split across ranks (train/eval_share.py): two gloo processes each score their
share of the batches and get, bit for bit, the figures of every batch scored by one process; every rank runs the
same number of forward passes (each one a collective under FSDP2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enigma_fast.train.eval_share import EvalShare

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}

# Run by each rank under torchrun: a tiny EnBERT and a tiny span-trained Enigma, FSDP2 over the ranks, scored on
# held-out windows with this rank's share and with every batch (the behaviour before sharing), with the forward
# passes each took.
SCRIPT = r"""
import json, sys
import numpy as np
import torch
import torch.distributed as dist
from enigma_fast.data.windows import eval_windows
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig
from enigma_fast.tokenizers import CharTokenizer
from enigma_fast.train.distributed import Parallel
from enigma_fast.train.eval_share import EvalShare
from enigma_fast.train.evaluate import evaluate
from enigma_fast.train.span import SpanEval

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
out, n_windows = sys.argv[1], int(sys.argv[2])
tok = CharTokenizer()
rng = np.random.default_rng(0)
tokens = rng.integers(5, 9, size=4000).astype(np.uint8)  # ids of A/C/G/T
bpt = torch.ones(tok.vocab_size, dtype=torch.float64)
segs = np.array([[0, 33 * n_windows + 7]])
windows = eval_windows(segs, 33, 24)[:n_windows]
res = {"windows": len(windows)}
torch.manual_seed(0)
enbert = EnBERT(EnBERTConfig(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=2, max_rel_pos=16))
torch.manual_seed(1)
enigma = Enigma(EnigmaConfig(vocab_size=tok.vocab_size, bos_id=tok.bos_id, d_model=32, n_head=2,
                             n_encoder_layer=1, n_decoder_layer=1, max_rel_pos=16))
span_ev = SpanEval(tokens, np.array([[0, 2000]]), 32, 0.15, 3.0, seed=0, max_windows=n_windows)
for name, model in (("enbert", enbert), ("enigma", enigma)):
    Parallel("fsdp", world, torch.device("cpu")).wrap(model)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(int(args[0].shape[0])))
    share = EvalShare(rank, world)
    if name == "enbert":
        run = lambda s: evaluate(model, tokens, windows, bpt, "enbert", 0, tok.bos_id, 3, torch.device("cpu"), share=s)
    else:
        run = lambda s: span_ev.score_enigma(model, tok, bpt, 3, "cpu", share=s)
    res[name] = {"shared": run(share), "passes": len(seen)}
    seen.clear()
    res[name]["every"] = run(EvalShare())
    res[name]["batches"] = len(seen)
json.dump(res, open(f"{out}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


def test_batches_of_each_rank():
    assert EvalShare(0, 1).batches(5) == [(b, True) for b in range(5)]
    assert EvalShare(0, 2).batches(5) == [(0, True), (2, True), (4, True)]
    assert EvalShare(1, 2).batches(5) == [(1, True), (3, True), (1, False)]  # one pass more, not counted
    assert EvalShare(2, 3).batches(2) == [(0, False)]  # fewer batches than ranks: a pass all the same
    assert EvalShare(1, 2).batches(0) == []
    for rank, world in ((0, 0), (2, 2), (-1, 2)):
        with pytest.raises(ValueError, match="0 <= rank < world"):
            EvalShare(rank, world)


@pytest.mark.parametrize("n_windows", [7, 1])
def test_two_ranks_score_their_shares_and_get_one_process_figures(n_windows, tmp_path):
    script = tmp_path / "share.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
            str(n_windows),
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["windows"] == n_windows
    for name in ("enbert", "enigma"):
        a, b = r0[name], r1[name]
        assert a["shared"] == b["shared"] == a["every"] == b["every"], name  # bit for bit, on both ranks
        n = a["batches"]
        assert n == b["batches"] >= (3 if n_windows == 7 else 1), name
        assert a["passes"] == b["passes"] == -(-n // 2), name  # half the batches each, the same number of passes
        assert a["shared"]["tokens"] > 0
