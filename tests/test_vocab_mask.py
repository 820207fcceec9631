"""Generated DNA is made of the letters the model was trained on: the tokenizer's record of them (tokenizer.json,
the trainer), the sampling mask in the generator and in infilling (greedy, temperature, top-k, top-p; batched),
the ``vocab="full"`` option, special tokens and sentinels never emitted. The models here are biased towards the
tokens they must not write (lower case, N, IUPAC codes, specials), so an unapplied mask shows."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from enigma_fast.generation import fill_gaps, generate, infill, parse_masked
from enigma_fast.generation.vocab import emit_mask
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig, load_model
from enigma_fast.tokenizers import (
    FALLBACK_ALPHABET,
    UNRECORDED_LETTERS,
    CharTokenizer,
    DNATokenizer,
    KMerTokenizer,
    from_file,
)

SAMPLING = [
    dict(temperature=0.0),
    dict(temperature=1.0),
    dict(temperature=1.5, top_k=5),
    dict(temperature=0.8, top_p=0.9),
]


def _kmer() -> KMerTokenizer:
    tok = KMerTokenizer(k_mers=3)
    tok.build_vocab(["ACGTTGCAAGGCTTACCGATAGGCATTACG" * 4])
    return tok


TOKENIZERS = {"char": CharTokenizer, "kmer3": _kmer}


def _model(kind: str, tok: DNATokenizer, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    common = dict(vocab_size=tok.vocab_size, d_model=32, n_head=2, max_rel_pos=16, block_size=128)
    if kind == "enbert":
        model = EnBERT(EnBERTConfig(n_layer=1, **common))
    else:
        model = Enigma(EnigmaConfig(bos_id=tok.bos_id, n_encoder_layer=1, n_decoder_layer=1, **common))
    model.eval().tokenizer = tok
    return model


def _favour(model: torch.nn.Module, tok: DNATokenizer, letters: str = "ACGT", eos: bool = True) -> torch.Tensor:
    """Add a large bias to the logits of every token outside ``letters`` (fallback tokens of lower case, N and
    IUPAC codes; special tokens and sentinels most of all; ``<eos>`` too unless ``eos`` is False: then it is
    disfavoured). Returns the bias."""
    V = model.config.vocab_size
    bias = torch.zeros(V)
    for text, i in [*tok.pieces.items(), *tok.fallback_ids.items()]:
        if not set(text) <= set(letters):
            bias[i] = 40.0 + (text == "N") * 5.0
    for i in tok.special_ids.values():
        bias[i] = 60.0
    if not eos:
        bias[tok.eos_id] = -40.0
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias.to(out.dtype))
    return bias


def _letters(tok: DNATokenizer, ids: torch.Tensor) -> set[str]:
    return set(tok.decode(ids))


# ---- the tokenizer's record ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_trained_letters_default_record_and_round_trip(name, tmp_path):
    tok = TOKENIZERS[name]()
    assert tok.trained_letters == UNRECORDED_LETTERS == "ACGT" and not tok.records_trained_letters
    assert "trained_letters" not in tok.to_dict()  # files of tokenizers that record nothing stay as they were
    tok.trained_letters = "nTGCAN"
    assert tok.trained_letters == "ACGTNn" and tok.records_trained_letters  # alphabet order, deduplicated
    tok.save(tmp_path / "tokenizer.json")
    again = from_file(str(tmp_path / "tokenizer.json"))
    assert again == tok and again.trained_letters == "ACGTNn"
    for bad in ("", "ACGU", "A C", 5, None):
        with pytest.raises(ValueError, match=r"^trained_letters must be a non-empty string of letters"):
            tok.trained_letters = bad
    d = tok.to_dict()
    d["trained_letters"] = "ACGX"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"bad.json: tokenizer 'trained_letters' must be a non-empty string"):
        from_file(str(tmp_path / "bad.json"))
    d["trained_letters"] = "ACGT"
    d["other"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"unknown key 'other'"):
        from_file(str(tmp_path / "bad.json"))


def test_record_survives_save_pretrained_and_folder_copies(tmp_path):
    tok = CharTokenizer()
    tok.trained_letters = "ACGTN"
    model = _model("enbert", tok)
    model.save_pretrained(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "tokenizer.json").read_text())["trained_letters"] == "ACGTN"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    loaded = load_model(str(tmp_path / "b"))
    assert loaded.tokenizer.trained_letters == "ACGTN"
    loaded.save_pretrained(tmp_path / "c")  # re-saved from the loaded model
    assert load_model(str(tmp_path / "c")).tokenizer.trained_letters == "ACGTN"
    kmer = _kmer()
    kmer.trained_letters = "ACGTacgt"
    kmer.save_model(tmp_path / "k")
    back = KMerTokenizer()
    back.load_model(tmp_path / "k")
    assert back.trained_letters == "ACGTacgt"


def test_old_folders_default_to_the_four_bases(tmp_path):
    tok = CharTokenizer()
    _model("enbert", tok).save_pretrained(tmp_path / "old")
    d = json.loads((tmp_path / "old" / "tokenizer.json").read_text())
    assert "trained_letters" not in d  # as written before the record existed
    assert load_model(str(tmp_path / "old")).tokenizer.trained_letters == "ACGT"


def test_output_mask_ids():
    char = CharTokenizer()
    allowed = char.output_mask().nonzero().flatten().tolist()
    assert [char.decode([i]) for i in allowed] == list("ACGT")
    full = char.output_mask(full_vocab=True)
    assert sorted(char.decode([i]) for i in full.nonzero().flatten().tolist()) == sorted(FALLBACK_ALPHABET)
    assert not full[list(char.special_ids.values())].any()  # specials and sentinels never
    kmer = _kmer()
    m = kmer.output_mask(kmer.vocab_size + 7)  # a model vocabulary larger than the tokenizer's
    assert m.shape == (kmer.vocab_size + 7,) and not m[kmer.vocab_size :].any()
    texts = [kmer.id_to_token[i] for i in m.nonzero().flatten().tolist()]
    assert set(texts) == set(kmer.pieces) | set("ACGT")
    kmer.trained_letters = "ACGTN"
    assert "N" in [kmer.id_to_token[i] for i in kmer.output_mask().nonzero().flatten().tolist()]
    assert kmer.letters_of_ids([kmer.pieces["ACG"], kmer.fallback_ids["n"], kmer.eos_id]) == "ACGn"


# ---- generation -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
@pytest.mark.parametrize("opts", SAMPLING, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_generate_writes_only_trained_letters(kind, name, opts):
    tok = TOKENIZERS[name]()
    model = _model(kind, tok)
    _favour(model, tok)
    prompts = ["ACGTTGCAAGGC", "TTAC", "GATTACAGATTACA"]
    ids, lengths = tok.encode_batch(prompts, left_pad=True)
    T = ids.shape[1]
    out = generate(model, ids, 24, prompt_lengths=lengths, seed=3, **opts)
    new = out[:, T:]
    allowed = tok.output_mask(model.config.vocab_size)
    assert allowed[new].all()  # every new id is a token of A/C/G/T
    for row in new:
        assert _letters(tok, row) <= set("ACGT")
    # the full vocabulary: the biased model then writes lower case / N / IUPAC letters, never a special token
    full = generate(model, ids, 24, prompt_lengths=lengths, seed=3, vocab="full", **opts)[:, T:]
    specials = torch.tensor(list(tok.special_ids.values()))
    assert not torch.isin(full, specials).any()
    assert any(_letters(tok, row) - set("ACGT") for row in full)


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_recorded_letters_widen_what_generation_writes(kind):
    tok = CharTokenizer()
    tok.trained_letters = "ACGTN"  # say the training data kept its N runs
    model = _model(kind, tok)
    _favour(model, tok, letters="ACGT")  # N (and lower case, IUPAC) favoured
    out = generate(model, torch.tensor([tok.encode("ACGTACGT")]), 16, temperature=0)[0, 8:]
    assert set(tok.decode(out)) == {"N"}  # the most favoured letter the record allows


def test_eos_is_allowed_only_when_asked_for_and_masks_of_the_caller():
    tok = CharTokenizer()
    model = _model("enbert", tok)
    _favour(model, tok)  # specials (eos among them) favoured most
    idx = torch.tensor([tok.encode("ACGTAC")])
    out = generate(model, idx, 5, temperature=0, eos_id=tok.eos_id, pad_id=tok.pad_id)
    assert out[0, 6].item() == tok.eos_id  # stopping on eos stays possible
    assert tok.eos_id not in generate(model, idx, 5, temperature=0)[0, 6:].tolist()
    mask = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    mask[tok.fallback_ids["G"]] = True
    assert tok.decode(generate(model, idx, 5, temperature=1.0, seed=0, vocab=mask)[0, 6:]) == "GGGGG"
    with pytest.raises(ValueError, match=r"^vocab must be 'trained', 'full' or a \(99,\) bool tensor, got torch.int64"):
        generate(model, idx, 5, vocab=mask.long())
    with pytest.raises(TypeError, match=r"^vocab must be 'trained', 'full' or a \(99,\) bool tensor, got str 'all'"):
        generate(model, idx, 5, vocab="all")
    with pytest.raises(ValueError, match=r"^vocab allows no token id"):
        generate(model, idx, 5, vocab=torch.zeros_like(mask))


def test_a_model_without_a_tokenizer_samples_every_id_unless_given_a_mask():
    tok = CharTokenizer()
    model = _model("enbert", tok)
    model.tokenizer = None
    assert emit_mask(None, "trained", model.config.vocab_size, torch.device("cpu")) is None
    _favour(model, tok)
    idx = torch.tensor([tok.encode("ACGT")])
    assert torch.isin(generate(model, idx, 4, temperature=0)[0, 4:], torch.tensor(list(tok.special_ids.values()))).all()
    out = generate(model, idx, 4, temperature=0, vocab=tok.output_mask(model.config.vocab_size))[0, 4:]
    assert set(tok.decode(out)) <= set("ACGT")


# ---- infilling ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
@pytest.mark.parametrize("opts", SAMPLING, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
def test_infill_fills_with_trained_letters_only(name, opts):
    tok = TOKENIZERS[name]()
    model = _model("enigma", tok)
    _favour(model, tok)
    items = ["ACGTTGCAAC[N:7]GGTACCA[N]TTG", ("GATTACA", 11, "CCGTA"), ("", 4, "ACGGT")]
    fills = fill_gaps(model, tok, items, num_samples=2, seed=1, max_gap_length=6, **opts)
    for item, samples in zip(items, fills, strict=True):
        gaps = parse_masked(item).gaps
        for sample in samples:
            for fill, n in zip(sample, gaps, strict=True):
                assert set(fill) <= set("ACGT")
                assert len(fill) == n if n is not None else 1 <= len(fill) <= 6
    full = fill_gaps(model, tok, items, num_samples=2, seed=1, max_gap_length=6, vocab="full", **opts)
    letters = {ch for samples in full for sample in samples for fill in sample for ch in fill}
    assert letters - set("ACGT") and letters <= set(FALLBACK_ALPHABET)  # no special token text either
    seqs = infill(model, tok, items[0], seed=1, **opts)
    assert set(seqs[0][0]) <= set("ACGT")


def test_infill_with_recorded_letters_and_bad_masks():
    tok = _kmer()
    tok.trained_letters = "ACGTN"
    model = _model("enigma", tok)
    _favour(model, tok, letters="ACGT")
    fill = fill_gaps(model, tok, "ACGTTG[N:5]CCA", temperature=0)[0][0][0]
    assert len(fill) == 5 and set(fill) == {"N"}
    only_kmers = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    only_kmers[list(tok.pieces.values())] = True
    with pytest.raises(ValueError, match=r"^vocab allows no single-base token"):
        fill_gaps(model, tok, "ACGTTG[N:5]CCA", vocab=only_kmers)


# ---- the trainer records the letters ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case, n_policy, expect", [("upper", "split", "ACGT"), ("keep", "split", "ACGTacgt"), ("upper", "keep", "ACGTNR")]
)
def test_trained_letters_of_a_store_follow_its_policies(case, n_policy, expect, tmp_path):
    from enigma_fast.data.tokens import prepare_tokens
    from enigma_fast.train import data as tdata

    fa = tmp_path / "g.fa"
    fa.write_text(">a\nACGTACGTacgtacgtNNNNACGTACGTRACGTACGT\n>b\nGGCCAATTGGCCAATT\n")
    store = prepare_tokens([str(fa)], tmp_path / "store", CharTokenizer(case="keep"), case=case, n_policy=n_policy)
    assert tdata.trained_letters(store, store.segments[:, 1:]) == expect
    only_b = store.segments[store.segments[:, 0] == 1][:, 1:]
    assert tdata.trained_letters(store, only_b) == "ACGT"


def test_a_training_run_records_its_letters(tmp_path):
    from enigma_fast.train.__main__ import main

    fa = tmp_path / "g.fa"
    g = torch.Generator().manual_seed(0)
    seq = "".join("ACGT"[i] for i in torch.randint(0, 4, (6000,), generator=g).tolist())
    fa.write_text(">chr1\n" + seq[:3000] + "NNNNN" + seq[3000:] + "\n")
    small = ["--model-override", "d_model=32", "--model-override", "n_head=2", "--model-override", "n_layer=1"]
    small += ["--window", "32", "--batch-size", "4", "--threads", "1", "--warmup-steps", "2", "--time-budget", "0"]
    run = tmp_path / "run"
    args = [str(fa), *small, "--max-steps", "3", "--eval-interval", "0", "--sample-tokens", "16", "--out", str(run)]
    assert main(args) == 0
    assert json.loads((run / "final" / "tokenizer.json").read_text())["trained_letters"] == "ACGT"
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["sample"]["continuation"]) <= set("ACGT")
    assert load_model(str(run / "final")).tokenizer.trained_letters == "ACGT"


# ---- the generate CLI: --full-vocab -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_cli_writes_trained_letters_unless_full_vocab(kind, tmp_path, monkeypatch, capsys):
    from enigma_fast.cli import generate as cli

    tok = CharTokenizer()
    _model(kind, tok).save_pretrained(tmp_path / "model")
    load = cli.common.load_checkpoint

    def biased(*a, **k):
        model = load(*a, **k)
        _favour(model, model.tokenizer, eos=False)  # (the CLI stops a row at <eos>)
        return model

    monkeypatch.setattr(cli.common, "load_checkpoint", biased)
    task = ["--prompt", "ACGTTGCA", "--max-new-tokens", "20"] if kind == "enbert" else ["--infill", "ACGT[N:12]TTGA"]
    for flag, want_other in (([], False), (["--full-vocab"], True)):
        out = tmp_path / f"out{len(flag)}.fa"
        argv = ["--model", str(tmp_path / "model"), *task, "--seed", "0", "--device", "cpu", "--out", str(out), *flag]
        assert cli.main(argv) == 0, capsys.readouterr().err
        seq = "".join(out.read_text().split("\n")[1:])
        written = seq[8:] if kind == "enbert" else seq[4:16]
        assert len(written) >= 12 and set(written) <= set(FALLBACK_ALPHABET)
        assert bool(set(written) - set("ACGT")) == want_other, written
