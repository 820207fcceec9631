"""EnBERT and Enigma: configs, causality, padding invariance, checkpoints, training signal, compile."""

from __future__ import annotations

import json
import os

import pytest
import torch

from enigma_fast import _extension
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig, load_model
from enigma_fast.tokenizers import CharTokenizer

V = 12


def small_enbert(**kw) -> EnBERT:
    cfg = EnBERTConfig.from_preset("tiny", vocab_size=V, d_model=64, n_head=4, n_layer=2, max_rel_pos=16, **kw)
    return EnBERT(cfg).eval()


def small_enigma(**kw) -> Enigma:
    cfg = EnigmaConfig.from_preset("tiny", vocab_size=V, d_model=64, n_head=4, n_encoder_layer=2, n_decoder_layer=2,
                                   max_rel_pos=16, block_size=128, **kw)
    return Enigma(cfg).eval()


# ---- configs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, model_cls", [(EnBERTConfig, EnBERT), (EnigmaConfig, Enigma)])
@pytest.mark.parametrize("tie", [True, False])
def test_presets_and_parameter_count(cls, model_cls, tie):
    for name in cls.PRESETS:
        cfg = cls.from_preset(name, vocab_size=40, tie_embeddings=tie)
        assert cfg.to_dict()["model_type"] == cls.model_type
        assert cls.from_dict(json.loads(cfg.to_json())) == cfg
        if cfg.d_model <= 512:  # build the small ones and count
            assert model_cls(cfg).num_parameters() == cfg.num_parameters(), name
    assert EnBERTConfig.from_preset("seed").d_model == 384 and EnBERTConfig.from_preset("seed").n_layer == 12
    assert 44e6 < EnBERTConfig.from_preset("47m", vocab_size=1034).num_parameters() < 50e6
    assert 400e6 < EnBERTConfig.from_preset("430m", vocab_size=1034).num_parameters() < 460e6


def test_config_errors():
    with pytest.raises(ValueError, match="unknown EnBERTConfig preset 'huge'; known: "):
        EnBERTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown EnBERTConfig fields: d_modle"):
        EnBERTConfig.from_preset("tiny", d_modle=3)
    with pytest.raises(ValueError, match="divisible by n_head"):
        EnBERTConfig(d_model=100, n_head=3)
    with pytest.raises(ValueError, match="bos_id"):
        EnigmaConfig(vocab_size=4, bos_id=7)


# ---- causality -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 5, 17, 31])
def test_enbert_changing_token_t_never_changes_earlier_logits(t):
    torch.manual_seed(1)
    model = small_enbert()
    idx = torch.randint(0, V, (2, 32))
    alt = idx.clone()
    alt[:, t] = (alt[:, t] + 1 + torch.randint(0, V - 1, (2,))) % V
    a, _ = model(idx)
    b, _ = model(alt)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_causality_test_catches_an_unmasked_attention():
    """The seed's bug: a second, unmasked attention lets position t see t+1. The same check must fail on it."""
    torch.manual_seed(1)
    model = small_enbert()
    for blk in model.blocks:
        blk.attn.causal = False
    idx = torch.randint(0, V, (1, 16))
    alt = idx.clone()
    alt[0, 8] = (alt[0, 8] + 1) % V
    assert not torch.allclose(model(idx)[0][:, :8], model(alt)[0][:, :8])


@pytest.mark.parametrize("t", [0, 9, 23])
def test_enigma_decoder_changing_token_t_never_changes_earlier_logits(t):
    torch.manual_seed(2)
    model = small_enigma()
    src, tgt = torch.randint(0, V, (2, 20)), torch.randint(0, V, (2, 24))
    alt = tgt.clone()
    alt[:, t] = (alt[:, t] + 1) % V
    a, _ = model(src, tgt)
    b, _ = model(src, alt)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)


# ---- padding ---------------------------------------------------------------------------------------------
def test_left_padding_changes_no_result():
    torch.manual_seed(3)
    model, enc = small_enbert(), small_enigma()
    row = torch.randint(0, V, (1, 13))
    pad = 7
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), row], dim=1)
    ks = torch.tensor([pad], dtype=torch.int32)
    torch.testing.assert_close(model(padded, key_start=ks)[0][:, pad:], model(row)[0], atol=1e-5, rtol=1e-5)
    tgt = torch.randint(0, V, (1, 9))
    torch.testing.assert_close(enc(padded, tgt, src_start=ks)[0], enc(row, tgt)[0], atol=1e-5, rtol=1e-5)


# ---- fused ops vs reference ops ---------------------------------------------------------------------------
@pytest.mark.skipif(_extension.EXTENSION is None, reason="compiled extension not built")
def test_model_on_fused_ops_matches_reference_ops():
    torch.manual_seed(4)
    model = small_enbert().double()
    idx = torch.randint(0, V, (2, 40))
    fused_logits, fused_loss = model(idx, idx)
    fused_loss.backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with _extension.force_reference():
        ref_logits, ref_loss = model(idx, idx)
        ref_loss.backward()
    torch.testing.assert_close(fused_logits, ref_logits, atol=1e-10, rtol=1e-10)
    for g, p in zip(fused_grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-10, rtol=1e-8)


# ---- training signal ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_tiny_model_overfits_a_short_sequence(kind):
    torch.manual_seed(5)
    model = (small_enbert() if kind == "enbert" else small_enigma()).train()
    seq = torch.randint(0, V, (1, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        if kind == "enbert":
            _, loss = model(seq[:, :-1], seq[:, 1:])
        else:
            src, tgt_in, tgt = Enigma.split_window(seq, 16, model.config.bos_id)
            _, loss = model(src, tgt_in, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()


# ---- checkpoints -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [small_enbert, small_enigma])
def test_save_load_round_trip_is_bit_exact(tmp_path, make):
    model = make()
    tok = CharTokenizer()
    model.save_pretrained(tmp_path / "ckpt", tokenizer=tok)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = load_model(str(tmp_path / "ckpt"))
    assert type(loaded) is type(model) and loaded.config == model.config
    for (n, a), (m, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == m and torch.equal(a, b), n
    assert loaded.tokenizer.to_dict() == tok.to_dict()
    if model.config.tie_embeddings:
        assert loaded.lm_head.weight is loaded.tok_emb.weight
    # Saving again over an existing folder replaces it whole.
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]


def test_loading_mismatched_checkpoint_lists_the_problems(tmp_path):
    small_enbert().save_pretrained(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["n_layer"] = 3
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing tensors: blocks\.2\.attn\.out\.bias, .*blocks\.2\.attn\.qkv\.bias"):
        EnBERT.from_pretrained(tmp_path / "a")
    cfg["n_layer"], cfg["d_model"] = 2, 32
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mismatched shapes: .*tok_emb.weight: checkpoint \\(12, 64\\), model \\(12, 32\\)"):
        EnBERT.from_pretrained(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        EnBERT.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="model_type 'enbert', not 'enigma'"):
        Enigma.from_pretrained(tmp_path / "a")


# ---- compile ---------------------------------------------------------------------------------------------
def test_compiled_model_matches_eager():
    torch.manual_seed(6)
    model = small_enbert()
    idx = torch.randint(0, V, (2, 24))
    compiled = torch.compile(model, fullgraph=True)
    eager_logits, eager_loss = model(idx, idx)
    comp_logits, comp_loss = compiled(idx, idx)
    torch.testing.assert_close(comp_logits, eager_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(comp_loss, eager_loss, atol=1e-5, rtol=1e-5)


def test_bad_input_errors():
    model, enc = small_enbert(), small_enigma()
    with pytest.raises(ValueError, match="idx must be"):
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="exceeds block_size"):
        enc(torch.zeros(1, 100, dtype=torch.long), torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="src_len must be"):
        Enigma.split_window(torch.zeros(1, 10, dtype=torch.long), 10, 2)


def test_bfloat16_autocast_forward_backward():
    """Mixed precision: float32 parameters and residual stream, projections and attention in bfloat16."""
    torch.manual_seed(7)
    model = small_enbert().train()
    idx = torch.randint(0, V, (2, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    loss.backward()
    ref_logits, _ = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(logits.float(), ref_logits, atol=0.1, rtol=0.1)
