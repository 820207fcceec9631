"""EnBERT and Enigma: configs, causality, padding invariance, checkpoints, training signal, compile."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from enigma_fast import _extension
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig, load_model
from enigma_fast.tokenizers import CharTokenizer

V = 12


def small_enbert(**kw) -> EnBERT:
    cfg = EnBERTConfig.from_preset("tiny", vocab_size=V, d_model=64, n_head=4, n_layer=2, max_rel_pos=16, **kw)
    return EnBERT(cfg).eval()


def small_enigma(**kw) -> Enigma:
    cfg = EnigmaConfig.from_preset(
        "tiny",
        vocab_size=V,
        d_model=64,
        n_head=4,
        n_encoder_layer=2,
        n_decoder_layer=2,
        max_rel_pos=16,
        block_size=128,
        **kw,
    )
    return Enigma(cfg).eval()


# ---- configs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, model_cls", [(EnBERTConfig, EnBERT), (EnigmaConfig, Enigma)])
@pytest.mark.parametrize("tie", [True, False])
def test_presets_and_parameter_count(cls, model_cls, tie):
    for name in cls.PRESETS:
        cfg = cls.from_preset(name, vocab_size=40, tie_embeddings=tie)
        assert cfg.to_dict()["model_type"] == cls.model_type
        assert cls.from_dict(json.loads(cfg.to_json())) == cfg
        with torch.device("meta"):  # every size, built without allocating, and counted
            assert model_cls(cfg).num_parameters() == cfg.num_parameters(), name
    assert EnBERTConfig.from_preset("seed").d_model == 384 and EnBERTConfig.from_preset("seed").n_layer == 12
    assert 44e6 < EnBERTConfig.from_preset("47m", vocab_size=1034).num_parameters() < 50e6
    assert 400e6 < EnBERTConfig.from_preset("430m", vocab_size=1034).num_parameters() < 460e6
    assert 730e6 < EnigmaConfig.from_preset("750m", vocab_size=1034).num_parameters() < 770e6
    assert 2.45e9 < EnBERTConfig.from_preset("2.5b", vocab_size=1034).num_parameters() < 2.55e9


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
    for g, p in zip(fused_grads, model.parameters(), strict=True):
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
    for (n, a), (m, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
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
    with pytest.raises(
        ValueError, match="mismatched shapes: .*tok_emb.weight: checkpoint \\(12, 64\\), model \\(12, 32\\)"
    ):
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


# ---- issue 11: configs are type-checked (every construction path) ------------------------------------------
_FIELD_KINDS = {f.name: str(f.type) for cls in (EnBERTConfig, EnigmaConfig) for f in dataclasses.fields(cls)}


def _wrong_values(kind: str, good):
    """Values of the wrong type for a field of type ``kind`` whose valid value is ``good``."""
    out = [str(good).lower(), None, [good]]  # "false" / "4" / "0.1": the string of a good value
    if kind == "int":
        out += [float(good), True]
    elif kind == "float":
        out += [True]
    else:
        out += [0, 1, "true"]
    return out


@pytest.mark.parametrize("cls", [EnBERTConfig, EnigmaConfig])
def test_config_fields_reject_wrong_types_by_name(cls):
    base = cls.from_preset("tiny", vocab_size=V).to_dict()
    for f in dataclasses.fields(cls):
        for bad in _wrong_values(str(f.type), base[f.name]):
            for make in (
                lambda kw: cls.from_dict({**base, **kw}),
                lambda kw: cls.from_preset("tiny", **{"vocab_size": V, **kw}),
                lambda kw: cls(**kw),
            ):
                with pytest.raises(TypeError, match=rf"^{cls.__name__}\.{f.name} must be a") as err:
                    make({f.name: bad})
                assert "\n" not in str(err.value) and "got " + type(bad).__name__ in str(err.value)


@pytest.mark.parametrize("cls", [EnBERTConfig, EnigmaConfig])
@pytest.mark.parametrize(
    "field, value, match",
    [
        ("vocab_size", 0, r"vocab_size must be an int in \[1, 2147483647\], got 0"),
        ("d_model", -64, r"d_model must be an int in \[1, .*got -64"),
        ("n_head", 0, r"n_head must be an int in \[1, .*got 0"),
        ("block_size", 2**40, r"block_size must be an int in \[1, 2147483647\], got 1099511627776"),
        ("n_head", 3, r"d_model must be divisible by n_head=3, got 128"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\), got 1.0"),
        ("dropout", float("nan"), r"dropout must be a finite number, got nan"),
        ("norm_eps", -1e-6, r"norm_eps must be >= 0, got -1e-06"),
        ("norm_eps", float("inf"), r"norm_eps must be a finite number, got inf"),
    ],
)
def test_config_fields_reject_bad_values_by_name(cls, field, value, match):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{match}$"):
        cls.from_preset("tiny", **{"vocab_size": V, field: value})
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{match}$"):
        cls.from_dict({**cls.from_preset("tiny", vocab_size=V).to_dict(), field: value})


def test_config_from_dict_needs_a_complete_object_of_its_type():
    from enigma_fast.models.config import config_from_dict

    full = EnBERTConfig.from_preset("tiny", vocab_size=V).to_dict()
    assert config_from_dict(full) == EnBERTConfig.from_preset("tiny", vocab_size=V)
    assert type(config_from_dict(EnigmaConfig().to_dict())) is EnigmaConfig
    with pytest.raises(TypeError, match=r"must be a JSON object \(dict\), got list"):
        EnBERTConfig.from_dict([full])
    with pytest.raises(TypeError, match=r"must be a JSON object \(dict\), got str"):
        config_from_dict("enbert")
    with pytest.raises(ValueError, match=r"^EnBERTConfig config is missing fields: norm_eps, tie_embeddings$"):
        EnBERTConfig.from_dict({k: v for k, v in full.items() if k not in ("tie_embeddings", "norm_eps")})
    with pytest.raises(ValueError, match=r"model_type must be one of \['enbert', 'enigma'\], got NoneType None"):
        config_from_dict({k: v for k, v in full.items() if k != "model_type"})
    with pytest.raises(ValueError, match=r"model_type 'enbert', not 'enigma'"):
        EnigmaConfig.from_dict(full)
    with pytest.raises(TypeError, match="preset name must be a str, got int 3"):
        EnBERTConfig.from_preset(3)
    # numpy ints are ints, ints are accepted for floats; both stored as plain Python values
    import numpy as np

    cfg = EnBERTConfig.from_preset("tiny", vocab_size=np.int64(V), dropout=0)
    assert type(cfg.vocab_size) is int and type(cfg.dropout) is float and cfg.to_json()
    # bos_id is an id: 0 is fine (it used to be rejected as "must be > 0")
    assert EnigmaConfig(vocab_size=4, bos_id=0).bos_id == 0
    with pytest.raises(ValueError, match=r"^EnigmaConfig\.bos_id must be in \[0, vocab_size=4\), got -1$"):
        EnigmaConfig(vocab_size=4, bos_id=-1)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(_FIELD_KINDS)),
        st.one_of(st.integers(-5, 600), st.floats(allow_nan=True), st.booleans(), st.text(max_size=4), st.none()),
        max_size=4,
    )
)
def test_config_fuzz_valid_or_one_line_error(overrides):
    """Any mix of overrides: a config whose every field has its declared type, or a one-line TypeError/ValueError
    naming one of the fields."""
    for cls in (EnBERTConfig, EnigmaConfig):
        kw = {k: v for k, v in overrides.items() if k in {f.name for f in dataclasses.fields(cls)}}
        try:
            cfg = cls.from_preset("tiny", **kw)
        except (TypeError, ValueError) as err:
            msg = str(err)
            assert "\n" not in msg and msg.startswith(cls.__name__ + "."), msg
            continue
        for f in dataclasses.fields(cls):
            assert type(getattr(cfg, f.name)).__name__ == str(f.type), (f.name, getattr(cfg, f.name))
        assert cls.from_dict(json.loads(cfg.to_json())) == cfg


# ---- issue 11: token ids, targets and paddings are checked before the embedding ---------------------------
def _forward(model, ids, targets=None, start=None):
    if isinstance(model, Enigma):
        return model(ids[:, :5], ids[:, 5:], targets, src_start=start)
    return model(ids, targets, key_start=start)


@pytest.mark.parametrize("make", [small_enbert, small_enigma])
@pytest.mark.parametrize("bad", [V, V + 1000, -1, -100, 2**40])
def test_out_of_range_ids_raise_one_line_value_error(make, bad):
    model = make()
    ids = torch.randint(0, V, (2, 9))
    ids[1, 6] = bad
    name, where = ("tgt_in", "[1, 1]") if isinstance(model, Enigma) else ("idx", "[1, 6]")
    with pytest.raises(
        ValueError,
        match=rf"^{name} must hold token ids in \[0, vocab_size={V}\), got {bad} at "
        rf"{name}\{where[:-1]}\]$",
    ):
        _forward(model, ids)
    ids[1, 6] = 0
    ids[0, 2] = bad  # in the source of Enigma
    name = "src" if isinstance(model, Enigma) else "idx"
    with pytest.raises(
        ValueError,
        match=rf"^{name} must hold token ids in \[0, vocab_size={V}\), got {bad} at "
        rf"{name}\[0, 2\]$",
    ):
        _forward(model, ids)


@pytest.mark.parametrize("make", [small_enbert, small_enigma])
def test_targets_and_left_padding_are_range_checked(make):
    model = make()
    ids = torch.randint(0, V, (2, 9))
    T = 4 if isinstance(model, Enigma) else 9
    targets = torch.randint(0, V, (2, T))
    targets[0, 0] = -100  # ignored positions stay allowed ...
    ref = _forward(model, ids, targets)[1]
    assert torch.isfinite(ref)
    targets[1, 2] = -5  # ... but any other negative id is an error, even next to -100
    snapshot = targets.clone()
    with pytest.raises(
        ValueError,
        match=rf"^targets must hold token ids in \[0, vocab_size={V}\) or -100, got -5 "
        r"at targets\[1, 2\]$",
    ):
        _forward(model, ids, targets)
    assert torch.equal(targets, snapshot)  # the caller's tensor is untouched
    targets[1, 2] = V
    with pytest.raises(ValueError, match=rf"got {V} at targets\[1, 2\]$"):
        _forward(model, ids, targets)
    with pytest.raises(ValueError, match=rf"^targets must be \(B, T\) = \(2, {T}\), got \(2, {T + 1}\)$"):
        _forward(model, ids, torch.zeros(2, T + 1, dtype=torch.long))
    # int32 targets work like int64 (cross_entropy alone wants int64)
    torch.testing.assert_close(
        _forward(model, ids, targets.clamp(0, V - 1).int())[1], _forward(model, ids, targets.clamp(0, V - 1))[1]
    )
    name, S = ("src_start", 5) if isinstance(model, Enigma) else ("key_start", 9)
    for bad in (S, -1):
        with pytest.raises(
            ValueError,
            match=rf"^{name} must hold left-padding starts in \[0, {S}\) .* got {bad} at "
            rf"{name}\[1\]$",
        ):
            _forward(model, ids, start=torch.tensor([0, bad], dtype=torch.int32))
    with pytest.raises(ValueError, match=rf"^{name} must be \(B,\) = \(2,\), got \(3,\)$"):
        _forward(model, ids, start=torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match=rf"^{name} must be a \(B,\) int32/int64 tensor, got torch.float32 \(2,\)$"):
        _forward(model, ids, start=torch.zeros(2))


@pytest.mark.parametrize("make", [small_enbert, small_enigma])
def test_wrong_id_dtypes_shapes_and_devices(make):
    model = make()
    name = "src" if isinstance(model, Enigma) else "idx"
    for bad in (
        torch.zeros(2, 9),
        torch.zeros(2, 9, dtype=torch.int16),
        torch.zeros(2, 9, dtype=torch.bool),
        torch.zeros(9, dtype=torch.long),
        torch.zeros(1, 2, 9, dtype=torch.long),
    ):
        with pytest.raises(ValueError, match=rf"^{name} must be a \(B, T\) int32/int64 tensor, got {bad.dtype} "):
            model(bad, bad) if isinstance(model, Enigma) else model(bad)
    with pytest.raises(TypeError, match=rf"^{name} must be a \(B, T\) int32/int64 tensor, got list$"):
        model([[1, 2, 3]], [[1]]) if isinstance(model, Enigma) else model([[1, 2, 3]])
    with pytest.raises(ValueError, match=rf"^{name} is on meta but the model is on cpu$"):
        _forward(model, torch.zeros(2, 9, dtype=torch.long, device="meta"))
    if isinstance(model, Enigma):
        with pytest.raises(ValueError, match=r"^tgt_in must be \(B, T\) = \(2, \*\), got \(3, 4\)$"):
            model(torch.zeros(2, 5, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
        with pytest.raises(ValueError, match=rf"^src must hold token ids in \[0, vocab_size={V}\), got {V} at "):
            model.encode(torch.full((1, 3), V))
        with pytest.raises(ValueError, match="^window must be a"):
            Enigma.split_window(torch.zeros(10), 4, 2)
        with pytest.raises(ValueError, match=r"^src_len must be an int in \(0, 10\), got 4.0$"):
            Enigma.split_window(torch.zeros(1, 10, dtype=torch.long), 4.0, 2)


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["enbert", "enigma"]),
    st.integers(1, 3),
    st.integers(6, 12),
    st.lists(st.integers(-3, V + 3), min_size=1, max_size=3),
)
def test_fuzz_ids_give_logits_or_a_value_error(kind, B, T, values):
    """Random ids, some out of range: the model's logits equal those of the same valid ids, or a ValueError that
    names the tensor; never an IndexError, and the caller's tensor is never changed."""
    model = _FUZZ_MODELS[kind]
    g = torch.Generator().manual_seed(B * 100 + T)
    ids = torch.randint(0, V, (B, T), generator=g)
    ids.view(-1)[: len(values)] = torch.tensor(values)
    snapshot = ids.clone()
    valid = bool(((ids >= 0) & (ids < V)).all())
    try:
        logits, _ = _forward(model, ids)
    except ValueError as err:
        assert not valid and "\n" not in str(err) and "must hold token ids in [0, vocab_size=12)" in str(err)
    else:
        assert valid and torch.isfinite(logits).all()
    assert torch.equal(ids, snapshot)


_FUZZ_MODELS = {"enbert": small_enbert(), "enigma": small_enigma()}


@pytest.mark.parametrize(
    "field, value, exc, match",
    [
        (
            "tie_embeddings",
            "false",
            ValueError,
            r"EnBERTConfig\.tie_embeddings must be a bool \(true or false\), got str "
            r"'false'",
        ),
        ("d_model", "64", ValueError, r"EnBERTConfig\.d_model must be an int, got str '64'"),
        ("n_layer", 2.0, ValueError, r"EnBERTConfig\.n_layer must be an int, got float 2\.0"),
        ("n_head", 3, ValueError, r"EnBERTConfig\.d_model must be divisible by n_head=3, got 64"),
        ("norm_eps", None, ValueError, r"EnBERTConfig\.norm_eps must be a number, got NoneType None"),
    ],
)
def test_checkpoint_config_with_wrong_field_names_file_and_field(tmp_path, field, value, exc, match):
    small_enbert().save_pretrained(tmp_path / "a")
    f = tmp_path / "a" / "config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), field: value}))
    with pytest.raises(exc, match=rf"^{re.escape(str(f))}: {match}$"):
        EnBERT.from_pretrained(tmp_path / "a")
    with pytest.raises(exc, match=rf"^{re.escape(str(f))}: {match}$"):
        load_model(str(tmp_path / "a"))
