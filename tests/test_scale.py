"""Tests of training at scale, on the CPU with gloo: FSDP2 over two processes against one process, sharded (DCP)
checkpoints resumed across world sizes (2 -> 1, 1 -> 2), the final model folder against the sharded state, the
fused ops under FSDP2, activation checkpointing, the --dry-run estimate, and the options' one-line errors.

One ``torchrun`` launch and a tiny model keep the file well under two minutes on a loaded 2-core machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig, load_model
from enigma_fast.train.__main__ import main
from enigma_fast.train.config import TrainConfig
from enigma_fast.train.distributed import init_single_process_group
from enigma_fast.train.estimate import activation_bytes, model_shape
from enigma_fast.train.loop import _model_config
from enigma_fast.train.metrics import read_metrics
from enigma_fast.train.sharded_ckpt import is_sharded, load_sharded_model
from enigma_fast.train.state import latest_checkpoint, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
# a 2-block d_model 32 EnBERT on windows of 32 bases; 12 steps, a checkpoint and an evaluation every 4
COMMON = (  # one base per token (the runs' tolerances were set for it)
    "--tokenizer char --model-override d_model=32 --model-override n_head=2 --model-override n_layer=2 "
    "--window 32 --threads 1 "
    "--log-interval 1 --warmup-steps 5 --time-budget 0 --max-steps 12 --ckpt-interval 4 --keep-last 5 "
    "--eval-interval 4 --sample-tokens 16 --sample-prompt 16"
).split()


def _genome(n: int, seed: int = 0) -> str:
    """A random sequence with repeats (something to learn beyond base counts)."""
    rng = np.random.default_rng(seed)
    unit = "".join(rng.choice(list("ACGT"), 300))
    parts = []
    while sum(map(len, parts)) < n:
        parts.append(unit if rng.random() < 0.5 else "".join(rng.choice(list("ACGT"), 300)))
    return "".join(parts)[:n]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "small.fa"
    g = _genome(24_000)
    p.write_text(">chr1 test\n" + g[:16_000] + "\n>chr2\n" + g[16_000:] + "\n")
    return p


def _torchrun(args: list[str], n: int = 2) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(n),
            "-m",
            "enigma_fast.train",
            *args,
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(run: Path, kind: str = "train") -> dict[int, str]:
    return {int(r["step"]): r["loss"] for r in read_metrics(run / "metrics.csv") if r["kind"] == kind}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(str(path)).state_dict()


def _cut(src: Path, dst: Path, keep_until: int) -> Path:
    """A copy of run ``src`` as a crash after the checkpoint of step ``keep_until`` would leave it."""
    shutil.copytree(src, dst)
    for step, path in list_checkpoints(dst):
        if step > keep_until:
            shutil.rmtree(path)
    shutil.rmtree(dst / "final")
    return dst


@pytest.fixture(scope="module")
def runs(fasta, tmp_path_factory) -> dict[str, Path]:
    """12 steps of a global batch of 4 windows, four ways (one torchrun launch keeps the file short):

    one    FSDP2 in one process (batch 2, 2 accumulation steps), checkpoints at 4, 8, 12
    two    ``one`` cut at step 4, resumed by 2 ranks (batch 2 each) with activation checkpointing (1 -> 2)
    back   ``two`` cut at step 8, a checkpoint written by 2 ranks, resumed in one process (2 -> 1)
    plain  one process without FSDP (batch 4)
    """
    root = tmp_path_factory.mktemp("runs")
    out = {k: root / k for k in ("one", "two", "back", "plain")}
    assert (
        main(
            [
                str(fasta),
                *COMMON,
                "--strategy",
                "fsdp",
                "--batch-size",
                "2",
                "--grad-accum",
                "2",
                "--out",
                str(out["one"]),
            ]
        )
        == 0
    )
    _cut(out["one"], out["two"], 4)
    _torchrun(["--resume", str(out["two"]), "--grad-accum", "1", "--activation-checkpointing"])
    _cut(out["two"], out["back"], 8)
    half = out["back"] / "checkpoints" / ".tmp-step_0000010" / "sharded"  # a crash while writing step 10
    half.mkdir(parents=True)
    (half / "__0_0.distcp").write_bytes(b"partial")
    assert latest_checkpoint(out["back"]).name == "step_0000008"  # never taken as the latest
    assert main(["--resume", str(out["back"]), "--grad-accum", "2", "--no-activation-checkpointing"]) == 0
    assert main([str(fasta), *COMMON, "--batch-size", "4", "--out", str(out["plain"])]) == 0
    return out


def test_resume_across_world_sizes_is_exact(runs):
    """Sharded checkpoints resumed by another number of ranks (same global batch) continue bit for bit: losses at
    every step, held-out losses and final weights equal the uninterrupted one-process run's."""
    one = _losses(runs["one"])
    assert sorted(one) == list(range(1, 13))
    final = _weights(runs["one"] / "final")
    for name in ("two", "back"):  # 1 -> 2 ranks at step 4; then 2 -> 1 at step 8
        assert _losses(runs[name]) == one, name
        assert _losses(runs[name], "val") == _losses(runs["one"], "val"), name
        got = _weights(runs[name] / "final")
        assert all(torch.equal(final[k], got[k]) for k in final), name
    assert not list((runs["back"] / "checkpoints").glob(".tmp-*"))  # the half-written one was cleared


def test_fsdp_matches_one_process(runs):
    """FSDP2 over 2 ranks (steps 5-12 of ``two``) against one plain process with the whole batch of 4 (other
    matrix shapes, so other float32 rounding): the same losses to rtol 2e-5, as DDP (tests/test_train.py)."""
    two, plain = _losses(runs["two"]), _losses(runs["plain"])
    assert sorted(plain) == list(range(1, 13))
    np.testing.assert_allclose(
        [float(two[s]) for s in range(5, 13)], [float(plain[s]) for s in range(5, 13)], rtol=2e-5
    )
    assert float(_losses(runs["two"], "val")[12]) == pytest.approx(float(_losses(runs["plain"], "val")[12]), rel=1e-4)
    a, b = _weights(runs["two"] / "final"), _weights(runs["plain"] / "final")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_sharded_checkpoints(runs):
    """Each rank writes its own shards; no full model is gathered at a checkpoint; the world size is recorded."""
    for name, ranks in (("one", {4: 1, 8: 1, 12: 1}), ("two", {4: 1, 8: 2, 12: 2}), ("back", {4: 1, 8: 2, 12: 1})):
        ckpts = list_checkpoints(runs[name])
        assert [s for s, _ in ckpts] == [4, 8, 12] and all(is_sharded(p) for _, p in ckpts), name
        for step, path in ckpts:
            files = sorted(f.name for f in (path / "sharded").iterdir())
            assert files == [".metadata", *(f"__{r}_0.distcp" for r in range(ranks[step]))], (name, step)
            assert not (path / "model").exists()
    assert not is_sharded(latest_checkpoint(runs["plain"]))


def test_final_folder_matches_sharded_state(runs):
    """final/ is one config.json + model.safetensors + tokenizer.json folder that from_pretrained loads, holding
    exactly the weights of the last sharded checkpoint (loaded with DCP into a plain model)."""
    for name in ("one", "two"):
        final = runs[name] / "final"
        assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
        model = EnBERT.from_pretrained(final)
        assert model.tokenizer is not None
        fresh = EnBERT(model.config)
        load_sharded_model(latest_checkpoint(runs[name]), fresh)
        got, want = model.state_dict(), fresh.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)


def _small(kind: str, **kw):
    if kind == "enbert":
        return EnBERT(EnBERTConfig.from_preset("tiny", vocab_size=35, d_model=32, n_head=2, n_layer=2, **kw))
    return Enigma(EnigmaConfig.from_preset("tiny", vocab_size=35, d_model=32, n_head=2, **kw))


def _loss(model, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, Enigma):
        return model(x[:, :20], x[:, 19:39], x[:, 20:40])[1]
    return model(x[:, :-1], x[:, 1:])[1]


@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")
def test_fused_ops_see_plain_tensors_under_fsdp():
    """Under fully_shard the parameters are DTensors; every enigma_fast op call (forward and backward) gets plain
    tensors, and the gradients equal those of the unwrapped model exactly (one rank)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, bool]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "enigma_fast":
                flat = [*args, *(kwargs or {}).values()]
                self.calls.append((func.overloadpacket.__name__, any(isinstance(a, DTensor) for a in flat)))
            return func(*args, **(kwargs or {}))

    import torch.distributed as dist

    init_single_process_group("cpu")
    try:
        for kind in ("enbert", "enigma"):
            torch.manual_seed(0)
            plain, sharded = _small(kind), _small(kind)
            sharded.load_state_dict(plain.state_dict())
            mesh = init_device_mesh("cpu", (1,))
            for blk in [
                *getattr(sharded, "blocks", []),
                *getattr(sharded, "encoder", []),
                *getattr(sharded, "decoder", []),
            ]:
                fully_shard(blk, mesh=mesh)
            fully_shard(sharded, mesh=mesh)
            assert all(isinstance(p, DTensor) for p in sharded.parameters())
            x = torch.randint(5, 35, (2, 41))
            want = _loss(plain, x)
            want.backward()
            with Record() as rec:
                got = _loss(sharded, x)
                got.backward()
            names = {n for n, _ in rec.calls}
            assert {"rel_attention_fwd", "rel_attention_bwd"} <= names, names
            assert names & {"rms_norm_fwd", "add_rms_norm_fwd"} and any("rms_norm_bwd" in n for n in names), names
            assert not any(dt for _, dt in rec.calls), rec.calls
            assert torch.equal(got.detach(), want.detach())
            grads = dict(plain.named_parameters())
            for n, p in sharded.named_parameters():
                assert torch.equal(p.grad.full_tensor(), grads[n].grad), n
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_fsdp_bfloat16_mixed_precision_runs_the_fused_ops(kind):
    """The CUDA configuration's policy (parameters gathered in bfloat16, gradients reduced in float32), applied by
    ``Parallel.wrap`` on the CPU: the fused ops run in bfloat16, the loss stays within bfloat16 rounding of the
    float32 one, and the sharded gradients and master weights stay float32."""
    import torch.distributed as dist

    from enigma_fast.train.distributed import Parallel

    init_single_process_group("cpu")
    try:
        torch.manual_seed(0)
        plain, sharded = _small(kind), _small(kind)
        sharded.load_state_dict(plain.state_dict())
        Parallel("fsdp", 1, torch.device("cpu"), mp_dtype=torch.bfloat16).wrap(sharded, activation_checkpointing=True)
        x = torch.randint(5, 35, (2, 41))
        want, got = _loss(plain, x), _loss(sharded, x)
        got.backward()
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=2e-2)
        for p in sharded.parameters():
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_activation_checkpointing_changes_no_gradient(kind):
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = _small(kind, dropout=0.1)  # dropout too: the recomputation replays the same masks
        model.set_activation_checkpointing(on)
        torch.manual_seed(1)
        x = torch.randint(5, 35, (2, 41))
        _loss(model, x).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def test_dry_run_matches_hand_computation(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "--dry-run",
                "--tokenizer",
                "char",
                "--model-preset",
                "tiny",
                "--world-size",
                "2",
                "--strategy",
                "fsdp",
                "--batch-size",
                "4",
                "--window",
                "128",
                "--grad-accum",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # no run folder, nothing written
    # tiny EnBERT, single-base vocabulary V = 35: d = 128, 4 heads of 32, L = 4, P = 64, m = 5
    V, d, L = 35, 128, 4
    block = (128 * 384 + 384) + (128 * 128 + 128) + 4 * 127 * 32 + 2 * 128 + (128 * 640 + 640) + (640 * 128 + 128)
    root = V * d + d  # tied embedding + final norm
    N = root + L * block
    assert (block, N) == (247_168, 993_280)
    assert f"{N:,} parameters" in out and f"largest {block:,}; root {root:,}" in out
    assert f"= {4 * 3 * 2 * 128:,} tokens per step" in out  # batch x accumulation x ranks x window
    # FSDP2 over 2 ranks, bfloat16 on CUDA (a = p = 2 bytes), in MiB
    shard = N // 2
    a, c, B, T = 2, 19, 4, 128
    acts = B * T * (L * c * d * a + 2 * d * a + 4 * V)  # 10,295,296 bytes
    acts_ck = B * T * (L * 2 * d * a + d * a + 4 * V) + B * T * c * d * a
    comm = 2 * (root + 2 * block) + (2 + 4) * block
    fsdp = [
        4 * shard,
        4 * shard,
        8 * shard,
        comm,
        0,
        acts,
        acts_ck,
        16 * shard + comm + acts,
        16 * shard + comm + acts_ck,
    ]
    ddp = [4 * N, 4 * N, 8 * N, 4 * N, 2 * N, acts, acts_ck, 22 * N + acts, 22 * N + acts_ck]
    rows = [line.split("|")[2:4] for line in out.splitlines() if line.startswith("| ") and "term" not in line]
    assert [float(r[0]) for r in rows] == [round(v / 2**20, 2) for v in fsdp]
    assert [float(r[1]) for r in rows] == [round(v / 2**20, 2) for v in ddp]


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_activation_formula_against_saved_tensors(kind):
    """The activation terms of the estimate against the bytes autograd actually keeps (float32, CPU), within 3%."""
    V = 35
    cfg = TrainConfig(
        model=kind,
        model_preset="tiny",
        window=96,
        batch_size=3,
        dtype="float32",
        device="cpu",
        model_overrides=dict(d_model=64, n_head=2),
    )
    shape = model_shape(cfg, V)
    for on in (False, True):
        torch.manual_seed(0)
        model = (EnBERT if kind == "enbert" else Enigma)(_model_config(cfg, V, 2))
        model.set_activation_checkpointing(on)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor, params: set = params, kept: dict = kept) -> torch.Tensor:
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                kept[st.data_ptr()] = st.nbytes()
            return t

        x = torch.randint(5, V, (3, 97))
        S = cfg.enigma_src_len
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if kind == "enbert":
                model(x[:, :96], x[:, 1:97])
            else:
                model(x[:, :S], x[:, S - 1 : 95], x[:, S:96])
        want, _ = activation_bytes(shape, cfg, 4, on)
        assert sum(kept.values()) == pytest.approx(want, rel=0.03)


@pytest.mark.parametrize("case", ["offload_ddp", "offload_cpu", "strategy", "world", "fsdp_resume_full"])
def test_scale_option_errors_are_one_line(case, fasta, tmp_path, caplog, capsys):
    run = tmp_path / "run"
    argv, expect = {
        "offload_ddp": ([str(fasta), "--cpu-offload"], "cpu_offload must be false unless strategy is 'fsdp'"),
        "offload_cpu": (
            [str(fasta), "--cpu-offload", "--strategy", "fsdp", "--device", "cpu"],
            "it needs --strategy fsdp on a CUDA device",
        ),
        "strategy": ([str(fasta), "--strategy", "zero3"], "strategy must be 'ddp' or 'fsdp'"),
        "world": (["--dry-run", "--world-size", "0"], "--world-size must be >= 1"),
        "fsdp_resume_full": (["--resume", str(run), "--strategy", "fsdp"], "resume with --strategy ddp"),
    }[case]
    if case == "fsdp_resume_full":
        assert main([str(fasta), *COMMON, "--max-steps", "2", "--batch-size", "2", "--out", str(run)]) == 0
        capsys.readouterr()
        caplog.clear()
    elif "--dry-run" not in argv:
        argv = [*argv, "--out", str(run), "--threads", "1"]
    with caplog.at_level("ERROR"):
        assert main(argv) == 2
    err = capsys.readouterr().err + caplog.text
    assert expect in err and len(err.strip().splitlines()) == 1, err
    if case != "fsdp_resume_full":
        assert not run.exists()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_an_error_on_rank_0_ends_every_rank(fasta, tmp_path, strategy):
    """A run folder that already holds a run is found by rank 0 alone (it makes the folder); under torchrun every
    rank must end with exit code 2 and the one line, none left waiting for rank 0 at a collective (gloo's timeout
    would be 30 minutes: the subprocess limit of 120 s fails the test instead)."""
    out = tmp_path / "taken"
    (out / "final").mkdir(parents=True)
    (out / "final" / "mine.txt").write_text("not the library's")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
        + ["enigma_fast.train", str(fasta), *COMMON, "--strategy", strategy, "--out", str(out)],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "already holds a run" in ln]
    assert len(lines) == 1, proc.stderr[-3000:]  # said once, by rank 0
    assert (out / "final" / "mine.txt").read_text() == "not the library's"
    assert sorted(p.name for p in out.iterdir()) == ["final"]
    assert time.monotonic() - t0 < 120
