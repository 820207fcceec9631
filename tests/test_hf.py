"""The Hugging Face interface (enigma_fast.hf): Auto classes on run folders (the trainer's, and folders written by
the library before this interface existed), outputs equal to ours, one folder format both ways, the tokenizer,
registration without importing transformers, and one-line errors for folders of other models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig, load_model
from enigma_fast.tokenizers import FALLBACK_ALPHABET, CharTokenizer, KMerTokenizer
from tests.hf_support import DATA, ENV, ROOT, left_padded, require

transformers = require("transformers")
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
)

from enigma_fast.hf import (  # noqa: E402
    EnBERTForCausalLM,
    EnBERTHFConfig,
    EnigmaDNATokenizer,
    EnigmaForConditionalGeneration,
    EnigmaHFConfig,
)


# ---- registration and import cost ---------------------------------------------------------------------------
def test_import_enigma_fast_imports_no_transformers_and_registers_when_auto_loads():
    checks = (
        "from transformers import AutoConfig\n"
        "assert type(AutoConfig.for_model('enbert')).__name__ == 'EnBERTHFConfig'\n"
        "assert type(AutoConfig.for_model('enigma')).__name__ == 'EnigmaHFConfig'\n"
        "from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer\n"
        "from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING as C, "
        "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING as S\n"
        "from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING as T\n"
        "from enigma_fast.hf.configuration import EnBERTHFConfig as E, EnigmaHFConfig as G\n"
        "assert C[E].__name__ == 'EnBERTForCausalLM' and S[G].__name__ == 'EnigmaForConditionalGeneration'\n"
        "assert T[E].__name__ == 'EnigmaDNATokenizer' and T[G].__name__ == 'EnigmaDNATokenizer'\n"
        "print('ok')\n"
    )
    first = "import sys, enigma_fast\nassert 'transformers' not in sys.modules, 'enigma_fast imported transformers'\n"
    after = "import transformers.models.auto.modeling_auto\nimport enigma_fast\n"  # transformers loaded first
    for code in (first + checks, after + checks):
        p = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]
        assert "could not register" not in p.stderr


# ---- a trained run folder -----------------------------------------------------------------------------------
def test_auto_classes_open_a_trained_run_folder_with_our_outputs(hf_run_final):
    ours = load_model(str(hf_run_final))
    model = AutoModelForCausalLM.from_pretrained(hf_run_final)
    tok = AutoTokenizer.from_pretrained(hf_run_final)
    assert isinstance(model, EnBERTForCausalLM) and isinstance(tok, EnigmaDNATokenizer) and not model.training
    assert isinstance(AutoConfig.from_pretrained(hf_run_final), EnBERTHFConfig)
    assert model.config.to_enigma_fast() == ours.config and tok.dna == ours.tokenizer
    seqs = ["ACGTACGGTTAGCAT", "GGCA", "TTGACCANNAC"]
    batch = tok(seqs, padding=True, return_tensors="pt")
    ids, lengths = ours.tokenizer.encode_batch(seqs, left_pad=True)
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"].sum(1), lengths)
    key_start = (ids.shape[1] - lengths).to(torch.int32)
    with torch.no_grad():
        want, _ = ours(ids, key_start=key_start)
        got = model(**batch).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for s in seqs:  # each padded row equals the row alone (at its real positions)
        one = tok(s, return_tensors="pt")
        with torch.no_grad():
            alone = model(**one).logits[0]
        row = seqs.index(s)
        torch.testing.assert_close(got[row, ids.shape[1] - len(alone) :], alone, rtol=1e-5, atol=1e-5)


def test_folders_written_by_main_before_the_interface_load():
    """tests/data/hf: folders written by enigma_fast's main branch (d2032fa) before config.json had
    `architectures`; EnBERT with a char tokenizer, Enigma with a 3-mer tokenizer."""
    for name, auto, cls in (
        ("main_enbert", AutoModelForCausalLM, EnBERTForCausalLM),
        ("main_enigma", AutoModelForSeq2SeqLM, EnigmaForConditionalGeneration),
    ):
        folder = DATA / name
        assert "architectures" not in json.loads((folder / "config.json").read_text())
        ours = load_model(str(folder))
        model, tok = auto.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
        assert type(model) is cls and tok.dna == ours.tokenizer
        ids, mask, n = left_padded([9, 4, 7], 5, 9 if name == "main_enbert" else 60)
        with torch.no_grad():
            if name == "main_enbert":
                want = ours(ids, key_start=(9 - n).int())[0]
                got = model(input_ids=ids, attention_mask=mask).logits
            else:
                tgt = torch.randint(5, 60, (3, 5))
                want = ours(ids, tgt, src_start=(9 - n).int())[0]
                got = model(input_ids=ids, attention_mask=mask, decoder_input_ids=tgt).logits
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ---- one format both ways ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_save_round_trips_both_ways(kind, tmp_path):
    tok = CharTokenizer()
    if kind == "enbert":
        ours = EnBERT(EnBERTConfig(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=2, tie_embeddings=False))
        auto = AutoModelForCausalLM
    else:
        ours = Enigma(
            EnigmaConfig(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_encoder_layer=1, n_decoder_layer=1)
        )
        auto = AutoModelForSeq2SeqLM
    ours.save_pretrained(tmp_path / "ours", tokenizer=tok)
    hf = auto.from_pretrained(tmp_path / "ours")
    hf.save_pretrained(tmp_path / "theirs")
    AutoTokenizer.from_pretrained(tmp_path / "ours").save_pretrained(tmp_path / "theirs")
    files = sorted(p.name for p in (tmp_path / "theirs").iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    theirs_cfg = json.loads((tmp_path / "theirs" / "config.json").read_text())
    ours_cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert {k: v for k, v in theirs_cfg.items() if k not in ("transformers_version", "dtype")} == ours_cfg
    back = load_model(str(tmp_path / "theirs"))  # our loader reads transformers' save
    assert back.tokenizer == tok
    want = ours.state_dict()
    assert set(back.state_dict()) == set(want)
    for k, v in back.state_dict().items():
        assert torch.equal(v, want[k]), k
    again = auto.from_pretrained(tmp_path / "theirs")  # and transformers its own
    for k, v in again.state_dict().items():
        assert torch.equal(v, want[k]), k
    ours.save_pretrained(tmp_path / "theirs", tokenizer=tok)  # our save replaces a transformers save of ours
    assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_bfloat16_save_loads_in_both(tmp_path):
    cfg = EnBERTHFConfig(vocab_size=40, d_model=32, n_head=2, n_layer=1)
    model = EnBERTForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    ours = load_model(str(tmp_path / "bf16"))  # float32 model, values of the bfloat16 save
    torch.testing.assert_close(ours.tok_emb.weight, model.tok_emb.weight.float(), rtol=0, atol=0)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert again.dtype == torch.bfloat16 and torch.equal(again.tok_emb.weight, model.tok_emb.weight)


# ---- configs -------------------------------------------------------------------------------------------------
def test_config_json_metadata_keys_are_accepted_and_checked():
    full = EnBERTConfig(vocab_size=40).to_dict()
    assert full["architectures"] == ["EnBERTForCausalLM"]
    extra = {**full, "transformers_version": "5.23.0", "dtype": "float32", "torch_dtype": "float32"}
    assert EnBERTConfig.from_dict(extra) == EnBERTConfig(vocab_size=40)
    for key, bad in (("architectures", "EnBERTForCausalLM"), ("architectures", [3]), ("transformers_version", 5)):
        with pytest.raises(TypeError, match=rf"^EnBERTConfig config key '{key}' must be ") as err:
            EnBERTConfig.from_dict({**full, key: bad})
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown EnBERTConfig fields in config: n_layers"):
        EnBERTConfig.from_dict({**full, "n_layers": 3})


def test_hf_configs_are_ours():
    c = EnBERTHFConfig(vocab_size=40, d_model=64, n_head=4, n_layer=3)
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.tie_word_embeddings) == (64, 4, 3, True)
    assert c.to_enigma_fast() == EnBERTConfig(vocab_size=40, d_model=64, n_head=4, n_layer=3)
    assert EnBERTHFConfig.from_enigma_fast(c.to_enigma_fast()).to_dict() == c.to_dict()
    e = EnigmaHFConfig(vocab_size=40, bos_id=3)
    assert e.is_encoder_decoder and e.decoder_start_token_id == 3 and not c.is_encoder_decoder
    with pytest.raises(TypeError, match=r"^EnBERTConfig\.d_model must be an int, got str '64'$"):
        EnBERTHFConfig(d_model="64")
    with pytest.raises(ValueError, match=r"^EnigmaConfig\.bos_id must be in \[0, vocab_size=4\), got 7$"):
        EnigmaHFConfig(vocab_size=4, bos_id=7)
    with pytest.raises(ValueError, match="unknown EnBERTConfig fields in config: colour"):
        EnBERTHFConfig.from_dict({**c.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="config is for model_type 'enigma', not 'enbert'"):
        EnBERTHFConfig.from_dict(e.to_dict())


def test_a_config_without_model_type_loads_with_the_explicit_class(tmp_path):
    """Every config.json the library wrote holds model_type; a hand-written one without it loads through the
    explicit classes (our fields name the model), while AutoConfig needs model_type before any code of ours runs."""
    EnBERT(EnBERTConfig(vocab_size=40, d_model=32, n_head=2, n_layer=1)).save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("model_type", "architectures"):
        del cfg[key]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    model = EnBERTForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.n_layer == 1
    with pytest.raises(ValueError, match="model_type"):
        AutoConfig.from_pretrained(tmp_path / "m")


# ---- errors --------------------------------------------------------------------------------------------------
def test_folders_of_other_models_fail_clearly(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="config is for model_type 'gpt2', not 'enbert'"):
        EnBERTForCausalLM.from_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="config is for model_type 'enbert', not 'enigma'"):
        EnigmaForConditionalGeneration.from_pretrained(DATA / "main_enbert")
    with pytest.raises(ValueError, match="Unrecognized configuration class .*EnigmaHFConfig.* AutoModelForCausalLM"):
        AutoModelForCausalLM.from_pretrained(DATA / "main_enigma")
    shutil.copytree(DATA / "main_enbert", tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match=r"tokenizer.json: not an enigma_fast.tokenizer v1 file"):
        AutoTokenizer.from_pretrained(tmp_path / "m")


def test_a_folder_whose_tensors_disagree_with_its_config_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    shutil.copytree(DATA / "main_enbert", tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    state = load_file(f)
    state["lm_head.weight"] = state["tok_emb.weight"].clone()  # the config ties it
    state["blocks.1.ffn.fc.weight"] = state["blocks.1.ffn.fc.weight"][:, :7].contiguous()
    del state["blocks.0.norm1.weight"]
    save_file(state, f)
    with pytest.raises(ValueError) as err:
        AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    msg = str(err.value)
    assert "\n" not in msg and "missing tensors: blocks.0.norm1.weight" in msg
    assert "unexpected tensors: lm_head.weight" in msg and "blocks.1.ffn.fc.weight: checkpoint (160, 7)" in msg


# ---- tokenizer -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 4])
def test_tokenizer_is_ours_and_lossless(k, tmp_path):
    g = torch.Generator().manual_seed(k)
    if k == 1:
        dna = CharTokenizer()
    else:
        dna = KMerTokenizer(k)
        dna.build_vocab(["".join("ACGT"[i] for i in torch.randint(0, 4, (400,), generator=g)) + "AC", "G"])
    tok = EnigmaDNATokenizer(dna)
    assert len(set(tok.get_vocab().values())) == len(tok.get_vocab())  # one token string per id
    for n in (1, 2, 5, 37):
        s = "".join(FALLBACK_ALPHABET[i] for i in torch.randint(0, len(FALLBACK_ALPHABET), (n,), generator=g))
        ids = tok(s)["input_ids"]
        assert ids == dna.encode(s) and tok.decode(ids) == s
        assert tok.convert_tokens_to_ids(tok.tokenize(s)) == ids and tok.convert_tokens_to_string(tok.tokenize(s)) == s
    assert tok.decode(dna.encode("ACG") + [dna.eos_id], skip_special_tokens=True) == "ACG"
    assert tok.decode([dna.eos_id]) == "<eos>" and tok("A<mask_1>C")["input_ids"] == [
        *dna.encode("A"),
        dna.sentinel_id(1),
        *dna.encode("C"),
    ]
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        dna.pad_id,
        dna.eos_id,
        dna.bos_id,
        dna.unk_id,
        dna.mask_id,
    )
    batch = tok(["ACGTAC", "AC"], padding=True, return_tensors="pt")
    ids, lengths = dna.encode_batch(["ACGTAC", "AC"], left_pad=True)
    assert torch.equal(batch["input_ids"], ids) and batch["attention_mask"].sum(1).tolist() == lengths.tolist()
    assert tok.save_pretrained(tmp_path) == (str(tmp_path / "tokenizer.json"),)
    assert EnigmaDNATokenizer.from_pretrained(tmp_path).dna == dna and sorted(p.name for p in tmp_path.iterdir()) == [
        "tokenizer.json"
    ]
    with pytest.raises(ValueError, match="byte ' ' at position 2"):
        tok("AC GT")


def test_kmer_tail_piece_and_fallback_byte_get_distinct_token_strings():
    dna = KMerTokenizer(3)
    dna.build_vocab(["ACGTA"])  # pieces "ACG" and the tail "TA"; "A" alone is a tail of "ACGA"
    dna.build_vocab(["ACGA", "ACGTA"])
    tok = EnigmaDNATokenizer(dna)
    assert "A" in dna.pieces and tok.convert_ids_to_tokens(dna.fallback_ids["A"]) == "<0x41>"
    for s in ("ACGA", "AAAA", "ACGNA"):
        assert tok(s)["input_ids"] == dna.encode(s) and tok.decode(tok(s)["input_ids"]) == s
