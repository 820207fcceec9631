"""KV-cached generation: equals full recomputation, padding invariance, sampling, EOS, streaming, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from enigma_fast.generation import generate, sample, stream
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer


def make_model(kind: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(11)
    if kind == "enbert":
        cfg = EnBERTConfig.from_preset("tiny", vocab_size=vocab, d_model=64, n_head=4, n_layer=2, max_rel_pos=16)
        return EnBERT(cfg).eval()
    cfg = EnigmaConfig.from_preset(
        "tiny",
        vocab_size=vocab,
        d_model=64,
        n_head=4,
        n_encoder_layer=2,
        n_decoder_layer=2,
        max_rel_pos=16,
        block_size=160,
    )
    return Enigma(cfg).eval()


def recompute_greedy(model, prompt: torch.Tensor, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The seed-style loop: run the whole sequence again for every new token. Returns tokens and logits."""
    seq, logits_seen = prompt.clone(), []
    if isinstance(model, Enigma):
        tgt = torch.full((prompt.shape[0], 1), model.config.bos_id, dtype=torch.long)
        for _ in range(n):
            logits, _ = model(prompt, tgt)
            logits_seen.append(logits[:, -1])
            tgt = torch.cat([tgt, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return torch.cat([prompt, tgt[:, 1:]], dim=1), logits_seen
    for _ in range(n):
        logits, _ = model(seq)
        logits_seen.append(logits[:, -1])
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq, logits_seen


def tokenizers_under_test():
    kmer = KMerTokenizer(k_mers=3)
    kmer.build_vocab(["".join("ACGT"[(i * 7 + j) % 4] for j in range(300)) for i in range(3)] + ["ACGTACGTTTGCA" * 20])
    return [CharTokenizer(), kmer]


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
@pytest.mark.parametrize("tok_index", [0, 1], ids=["char", "kmer3"])
@pytest.mark.parametrize("prompt_len, n_new", [(1, 5), (9, 17), (40, 33)])
def test_cached_greedy_equals_full_recompute(kind, tok_index, prompt_len, n_new):
    tok = tokenizers_under_test()[tok_index]
    model = make_model(kind, tok.vocab_size)
    g = torch.Generator().manual_seed(prompt_len)
    prompt = torch.randint(0, tok.vocab_size, (2, prompt_len), generator=g)
    cached = generate(model, prompt, n_new, temperature=0.0)
    expect, logits_seen = recompute_greedy(model, prompt, n_new)
    assert torch.equal(cached, expect)
    # and the logits of every step agree within float32 tolerance
    got = []
    for step_tok in stream(model, prompt, n_new, temperature=0.0):
        got.append(step_tok)
    assert torch.equal(torch.stack(got, 1), expect[:, prompt_len:])


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_cached_logits_match_recompute(kind):
    model = make_model(kind, 12)
    prompt = torch.randint(0, 12, (3, 11))
    _, ref_logits = recompute_greedy(model, prompt, 6)
    cache = model.allocate_cache(3, model.cache_length(11, 6), prompt.device, torch.float32)
    with torch.inference_mode():
        logits = model.prefill(prompt, None, cache)
        for step in range(6):
            torch.testing.assert_close(logits, ref_logits[step], atol=1e-4, rtol=1e-4)
            logits = model.decode_step(ref_logits[step].argmax(-1, keepdim=True), cache)


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_batch_of_mixed_prompt_lengths_equals_each_alone(kind):
    tok = CharTokenizer()
    model = make_model(kind, tok.vocab_size)
    prompts = ["ACGTTGCA", "GATTACAGATTACAGG", "TTT"]
    ids, lengths = tok.encode_batch(prompts, left_pad=True)
    batched = generate(model, ids, 12, temperature=0.0, prompt_lengths=lengths)
    for b, p in enumerate(prompts):
        alone = generate(model, torch.tensor([tok.encode(p)]), 12, temperature=0.0)
        assert torch.equal(batched[b, ids.shape[1] :], alone[0, len(p) :]), p


def test_sampling_is_seeded_and_truncations_behave():
    model = make_model("enbert", 12)
    prompt = torch.randint(0, 12, (4, 6))
    a = generate(model, prompt, 20, temperature=1.0, seed=123)
    b = generate(model, prompt, 20, temperature=1.0, seed=123)
    c = generate(model, prompt, 20, temperature=1.0, seed=124)
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = generate(model, prompt, 20, temperature=0.0)
    assert torch.equal(generate(model, prompt, 20, top_k=1, seed=5), greedy)
    assert torch.equal(generate(model, prompt, 20, top_p=1e-6, seed=5), greedy)


def test_sample_function():
    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0], [3.0, 0.0, 0.0, 0.0]])
    assert sample(logits, temperature=0).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample(logits, 1.0, top_k=2, generator=g) for _ in range(400)])
    assert set(draws[:, 0].tolist()) == {1, 3}  # only the two largest
    draws = torch.stack([sample(logits, 1.0, top_p=0.9, generator=g) for _ in range(400)])
    # row 0: p = softmax -> [.006, .94, .017, .047]: the nucleus at 0.9 is token 1 alone
    assert set(draws[:, 0].tolist()) == {1}
    freq = (torch.stack([sample(torch.zeros(1, 3), 1.0, generator=g) for _ in range(3000)]) == 0).float().mean()
    assert 0.28 < freq < 0.39  # uniform over 3
    with pytest.raises(ValueError, match="temperature"):
        sample(logits, -1.0)
    with pytest.raises(ValueError, match="top_p"):
        sample(logits, 1.0, top_p=0.0)


def test_eos_stops_rows_and_pads_after():
    model = make_model("enbert", 12)
    prompt = torch.randint(0, 12, (3, 5))
    free = generate(model, prompt, 15, temperature=0.0)
    eos = int(free[0, 7])  # a token row 0 emits at its 3rd step
    out = generate(model, prompt, 15, temperature=0.0, eos_id=eos, pad_id=11)
    row = out[0, 5:].tolist()
    first = row.index(eos)
    assert all(t == 11 for t in row[first + 1 :])
    assert out[0, : 5 + first + 1].tolist() == free[0, : 5 + first + 1].tolist()


def test_compiled_decode_step_matches_eager():
    model = make_model("enbert", 12)
    prompt = torch.randint(0, 12, (2, 7))
    assert torch.equal(
        generate(model, prompt, 10, temperature=0.0, compile=True), generate(model, prompt, 10, temperature=0.0)
    )


def test_generate_errors():
    model = make_model("enbert", 12)
    with pytest.raises(ValueError, match="leaves room for"):
        generate(model, torch.zeros(1, 1020, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 0)


# ---- CLI -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "model"
    model = make_model("enbert", CharTokenizer().vocab_size)
    model.save_pretrained(path, tokenizer=CharTokenizer())
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "enigma_fast.generate", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_writes_fasta(saved_model, tmp_path):
    out = tmp_path / "out.fa"
    r = _cli(
        "--model",
        str(saved_model),
        "--prompt",
        "ACGTACGTNN",
        "--max-new-tokens",
        "30",
        "--seed",
        "1",
        "--num-samples",
        "2",
        "--top-k",
        "3",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    assert "tokens/s" in r.stderr
    records = out.read_text().split(">")[1:]
    assert len(records) == 2
    for rec in records:
        header, *lines = rec.strip().split("\n")
        seq = "".join(lines)
        assert header.startswith("sample_") and seq.startswith("ACGTACGTNN") and len(seq) >= 10


def test_cli_rejects_bad_prompts(saved_model, tmp_path):
    r = _cli("--model", str(saved_model), "--prompt", "ACGXT", "--device", "cpu")
    assert r.returncode == 2 and "not DNA bases: 'X'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--model", str(saved_model), "--prompt", "", "--device", "cpu")
    assert r.returncode == 2 and "empty" in r.stderr
    r = _cli("--model", str(saved_model), "--prompt", "A" * 1100, "--device", "cpu")
    assert r.returncode == 2 and "exceeds the model's limit" in r.stderr


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
        (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
        (["--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (["--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
        (["--out", "{tmp}/missing/out.fa"], "does not exist"),
        (["--out", "{tmp}"], "is a folder"),
        (["--device", "gpu7"], "--device must be"),
        (["--prompts", "{tmp}/nope.fa"], "--prompts file not found"),
        (["--model", "{tmp}/nope"], "is not a checkpoint folder"),
        (["--max-new-tokens", "ten"], "invalid int value: 'ten'"),
    ],
    ids=lambda v: v if isinstance(v, str) else "_".join(v)[:30],
)
def test_cli_bad_options_fail_in_one_line_before_sampling(args, expect, saved_model, tmp_path, monkeypatch, capsys):
    from enigma_fast.cli import generate as cli

    def not_called(*a, **k):
        raise AssertionError("sampling started")

    monkeypatch.setattr(cli, "generate", not_called)
    argv = ["--model", str(saved_model), "--prompt", "ACGT", "--device", "cpu", "--max-new-tokens", "4"]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--prompts" in args:
        argv = [a for a in argv if a not in ("--prompt", "ACGT")]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(tmp_path)) == []  # nothing written


def test_cli_writes_out_through_a_temporary_file(saved_model, tmp_path):
    out = tmp_path / "out.fa"
    out.write_text("old\n")
    from enigma_fast.generate import main

    assert (
        main(
            [
                "--model",
                str(saved_model),
                "--prompt",
                "ACGT",
                "--max-new-tokens",
                "5",
                "--seed",
                "0",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--force",
            ]
        )
        == 0
    )
    assert out.read_text().startswith(">sample_1") and sorted(os.listdir(tmp_path)) == ["out.fa"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private mode
    # the prompts file is never the output
    prompts = tmp_path / "p.fa"
    prompts.write_text(">p\nACGT\n")
    assert main(["--model", str(saved_model), "--prompts", str(prompts), "--out", str(prompts)]) == 2
    assert prompts.read_text() == ">p\nACGT\n"


def test_cli_out_is_never_replaced_without_force_nor_an_input_even_with_it(saved_model, tmp_path, monkeypatch, capsys):
    """generate --out follows the writers' rule: an existing file is replaced only with --force (checked before the
    model loads), an input never; each refusal is one line, exit code 2, and the file is left as it was."""
    from enigma_fast.cli import generate as cli

    out = tmp_path / "mine.fa"
    out.write_text(">my own sequences\nACGT\n")
    prompts = tmp_path / "p.fa"
    prompts.write_text(">p\nACGT\n")
    gaps = tmp_path / "gaps.fa"
    gaps.write_text(">g\nACGTNNNNACGT\n")

    def not_loaded(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli.common, "load_checkpoint", not_loaded)
    base = ["--model", str(saved_model), "--device", "cpu", "--max-new-tokens", "4"]
    cases = [
        (["--prompt", "ACGT", "--out", str(out)], f"--out {out} exists; pass --force to replace it"),
        (["--prompts", str(prompts), "--out", str(prompts), "--force"], "is the --prompts file; it would be"),
        (["--infill-fasta", str(gaps), "--out", str(gaps), "--force"], "is the --infill-fasta file; it would be"),
    ]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for args, expect in cases:
        capsys.readouterr()
        assert cli.main(base + args) == 2
        err = capsys.readouterr().err
        assert expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing replaced, nothing added
    monkeypatch.undo()
    assert cli.main(base + ["--prompt", "ACGT", "--seed", "0", "--out", str(out), "--force"]) == 0
    assert out.read_text().startswith(">sample_1 prompt=1") and sorted(os.listdir(tmp_path)) == sorted(before)


def test_cli_out_dash_is_stdout(saved_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from enigma_fast.generate import main

    argv = ["--model", str(saved_model), "--prompt", "ACGT", "--max-new-tokens", "5", "--seed", "0", "--device", "cpu"]
    assert main([*argv, "--out", "-"]) == 0
    dash = capsys.readouterr().out
    assert main(argv) == 0
    assert dash.startswith(">sample_1 prompt=1") and dash == capsys.readouterr().out  # the same FASTA as no --out
    assert os.listdir(tmp_path) == []  # no file named '-'


def test_cli_infill_with_an_enbert_is_one_line(saved_model, capsys):
    from enigma_fast.generate import main

    assert main(["--model", str(saved_model), "--infill", "ACGT[N:4]ACGT", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--infill needs an Enigma trained with span corruption" in err and "EnBERT" in err, err


# =============================================================================================================
# issue 11 (library): generation arguments and prompts are checked once, up front, with one-line errors.
# (CLI checks live in the CLI block above; keep this block last.)
# =============================================================================================================
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import enigma_fast.generation as _gen  # noqa: E402

_BAD_SAMPLING = [
    (dict(temperature=float("nan")), ValueError, r"^temperature must be a finite number >= 0, got nan$"),
    (dict(temperature=float("inf")), ValueError, r"^temperature must be a finite number >= 0, got inf$"),
    (dict(temperature=-0.5), ValueError, r"^temperature must be a finite number >= 0, got -0.5$"),
    (dict(temperature="1.0"), TypeError, r"^temperature must be a finite number >= 0, got str '1.0'$"),
    (dict(temperature=True), TypeError, r"^temperature must be a finite number >= 0, got bool True$"),
    (dict(top_k=0), ValueError, r"^top_k must be None or an int >= 1, got 0$"),
    (dict(top_k=-3), ValueError, r"^top_k must be None or an int >= 1, got -3$"),
    (dict(top_k=2.5), TypeError, r"^top_k must be None or an int >= 1, got float 2.5$"),
    (dict(top_k="5"), TypeError, r"^top_k must be None or an int >= 1, got str '5'$"),
    (dict(top_p=0.0), ValueError, r"^top_p must be None or a number in \(0, 1\], got 0.0$"),
    (dict(top_p=1.5), ValueError, r"^top_p must be None or a number in \(0, 1\], got 1.5$"),
    (dict(top_p=float("nan")), ValueError, r"^top_p must be None or a number in \(0, 1\], got nan$"),
    (dict(top_p="0.9"), TypeError, r"^top_p must be None or a number in \(0, 1\], got str '0.9'$"),
]


@pytest.mark.parametrize("kw, exc, match", _BAD_SAMPLING)
def test_bad_sampling_options_raise_before_any_work(kw, exc, match):
    model = make_model("enbert", 12)
    prompt = torch.randint(0, 12, (2, 4))
    with pytest.raises(exc, match=match):
        generate(model, prompt, 5, **kw)
    with pytest.raises(exc, match=match):
        stream(model, prompt, 5, **kw)  # at the call, not at the first next()
    with pytest.raises(exc, match=match):
        sample(torch.randn(2, 12), **kw)
    with pytest.raises(exc, match=match):
        _gen.check_sampling_args(**kw)


def test_nan_temperature_no_longer_gives_all_pad_and_tiny_temperatures_are_greedy():
    model = make_model("enbert", 12)
    prompt = torch.randint(0, 12, (3, 6))
    greedy = generate(model, prompt, 12, temperature=0.0)
    for t in (1e-30, 1e-39, 1e-46, 5e-324):  # 1 / t overflows float32: used to sample token 0 on every row
        assert torch.equal(generate(model, prompt, 12, temperature=t, seed=1), greedy), t
    logits = torch.randn(4, 9)
    assert torch.equal(sample(logits, 1e-40), logits.argmax(-1))
    assert _gen.check_sampling_args(1, 3, 1) == (1.0, 3, 1.0)
    assert torch.equal(generate(model, prompt, 5, top_k=10**6, seed=2), generate(model, prompt, 5, seed=2))


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_prompt_ids_are_checked_once_up_front(kind):
    model = make_model(kind, 12)
    prompt = torch.randint(0, 12, (2, 6))
    prompt[1, 4] = 12
    with pytest.raises(ValueError, match=r"^idx must hold token ids in \[0, vocab_size=12\), got 12 at idx\[1, 4\]$"):
        generate(model, prompt, 5)
    prompt[1, 4] = -1
    with pytest.raises(ValueError, match=r"^idx must hold token ids in \[0, vocab_size=12\), got -1 at idx\[1, 4\]$"):
        stream(model, prompt, 5)
    # padding is part of the prompt tensor: a pad id outside the vocabulary is an error too
    padded = torch.tensor([[-1, -1, 3, 4], [1, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"got -1 at idx\[0, 0\]$"):
        generate(model, padded, 3, prompt_lengths=torch.tensor([2, 4]))


def test_generate_argument_types_and_ranges():
    model = make_model("enbert", 12)
    prompt = torch.randint(0, 12, (2, 4))
    cases = [
        (dict(max_new_tokens=-1), ValueError, r"^max_new_tokens must be an int >= 1, got -1$"),
        (dict(max_new_tokens=3.0), TypeError, r"^max_new_tokens must be an int >= 1, got float 3.0$"),
        (dict(max_new_tokens=True), TypeError, r"^max_new_tokens must be an int >= 1, got bool True$"),
        (dict(eos_id=12), ValueError, r"^eos_id must be None or an int in \[0, 12\), got 12$"),
        (dict(pad_id=-1), ValueError, r"^pad_id must be an int in \[0, 12\), got -1$"),
        (dict(pad_id=40, eos_id=3), ValueError, r"^pad_id must be an int in \[0, 12\), got 40$"),
        (dict(seed="7"), TypeError, r"^seed must be None or an int in .*, got str '7'$"),
        (dict(compile="no"), TypeError, r"^compile must be a bool, got str 'no'$"),
        (
            dict(prompt_lengths=torch.tensor([1.0, 2.0])),
            ValueError,
            r"^prompt_lengths must be a \(2,\) int32/int64 tensor, got torch.float32 \(2,\)$",
        ),
        (dict(prompt_lengths=torch.tensor([1, 2, 3])), ValueError, r"^prompt_lengths must be a \(2,\) int32/int64"),
        (dict(prompt_lengths=[4, 4]), TypeError, r"^prompt_lengths must be None or a \(2,\) int tensor, got list$"),
        (
            dict(prompt_lengths=torch.tensor([4, 0])),
            ValueError,
            r"^prompt_lengths must hold prompt lengths in \[1, 4\], got 0 at prompt_lengths\[1\]$",
        ),
        (dict(prompt_lengths=torch.tensor([5, 4])), ValueError, r"got 5 at prompt_lengths\[0\]$"),
    ]
    for kw, exc, match in cases:
        kw = {"max_new_tokens": 5, **kw}
        with pytest.raises(exc, match=match):
            generate(model, prompt, **kw)
    with pytest.raises(ValueError, match=r"^idx must be a \(B, T\) int32/int64 tensor, got torch.float32 \(2, 4\)$"):
        generate(model, prompt.float(), 5)
    with pytest.raises(TypeError, match=r"^idx must be a \(B, T\) int32/int64 tensor, got list$"):
        generate(model, [[1, 2]], 5)
    with pytest.raises(ValueError, match=r"^idx is on meta but the model is on cpu$"):
        generate(model, prompt.to("meta"), 5)


@settings(max_examples=40, deadline=None)
@given(
    temperature=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 3), st.none(), st.text(max_size=3)
    ),
    top_k=st.one_of(st.none(), st.integers(-3, 40), st.floats(0, 5)),
    top_p=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_fuzz_sampling_options_give_valid_ids_or_a_one_line_error(temperature, top_k, top_p):
    logits = torch.randn(3, 12)
    try:
        out = sample(logits, temperature, top_k, top_p, torch.Generator().manual_seed(0))
    except (TypeError, ValueError) as err:
        msg = str(err)
        assert "\n" not in msg and msg.split(" ")[0] in ("temperature", "top_k", "top_p"), msg
    else:
        assert out.shape == (3,) and bool(((out >= 0) & (out < 12)).all())
