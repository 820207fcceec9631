"""transformers' generate on our models: greedy tokens equal to enigma_fast.generation.generate (EnBERT and
Enigma, left-padded batches, char and k-mer tokenizers, with and without <eos>), cached equal to recomputed,
sampling options, beams and return sequences through our cache, the text-generation pipeline, forward outputs."""

from __future__ import annotations

import pytest
import torch

from enigma_fast.generation import generate as ours_generate
from enigma_fast.models import EnBERTConfig, EnigmaConfig
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer
from tests.hf_support import left_padded, require, sharpen

transformers = require("transformers")
from transformers import DynamicCache, pipeline  # noqa: E402

from enigma_fast.hf import (  # noqa: E402
    DNAKVCache,
    EnBERTForCausalLM,
    EnBERTHFConfig,
    EnigmaDNATokenizer,
    EnigmaForConditionalGeneration,
    EnigmaHFConfig,
)


def _tok(kind: str):
    if kind == "char":
        return CharTokenizer()
    tok = KMerTokenizer(3)
    tok.build_vocab(["ACGTTGCAAGCTTACGGATCCA" * 20, "ACGTAGC"])
    return tok


def _pieces(tok) -> tuple[int, int]:
    """The id range of the vocabulary pieces (bases, k-mers): prompts drawn from it hold no special token."""
    return min(tok.pieces.values()), max(tok.pieces.values()) + 1


def enbert(tok, **kw) -> EnBERTForCausalLM:
    cfg = EnBERTConfig(vocab_size=tok.vocab_size, d_model=48, n_head=3, n_layer=2, max_rel_pos=16, block_size=128, **kw)
    return sharpen(EnBERTForCausalLM(EnBERTHFConfig.from_enigma_fast(cfg))).eval()


def enigma(tok) -> EnigmaForConditionalGeneration:
    cfg = EnigmaConfig(
        vocab_size=tok.vocab_size,
        d_model=48,
        n_head=3,
        n_encoder_layer=2,
        n_decoder_layer=2,
        max_rel_pos=16,
        block_size=128,
        bos_id=tok.bos_id,
    )
    return sharpen(EnigmaForConditionalGeneration(EnigmaHFConfig.from_enigma_fast(cfg)), 20.0).eval()


@pytest.mark.parametrize("kind", ["char", "kmer"])
@pytest.mark.parametrize("lengths", [[13], [13, 5, 1, 9]])
def test_greedy_generate_equals_ours_enbert(kind, lengths):
    tok = _tok(kind)
    model = enbert(tok)
    ids, mask, n = left_padded(lengths, *_pieces(tok), pad=tok.pad_id)
    T = ids.shape[1]
    want = ours_generate(model.core, ids, 20, temperature=0.0, prompt_lengths=n)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=None)
    assert torch.equal(got, want)
    assert len(set(want[:, T:].flatten().tolist())) > 3  # the tokens vary: the comparison means something
    again = model.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, use_cache=False)
    assert torch.equal(again[:, : want.shape[1]], want)  # recomputing the prefix every step: the same tokens
    for b, length in enumerate(lengths):  # each row alone
        alone = model.generate(ids[b : b + 1, T - length :], max_new_tokens=20, do_sample=False, eos_token_id=None)
        assert torch.equal(alone[0, length:], want[b, T:])


@pytest.mark.parametrize("kind", ["char", "kmer"])
def test_greedy_generate_equals_ours_enigma(kind):
    tok = _tok(kind)
    model = enigma(tok)
    ids, mask, n = left_padded([11, 4, 8], *_pieces(tok), pad=tok.pad_id)
    want = ours_generate(model.core, ids, 15, temperature=0.0, prompt_lengths=n)[:, ids.shape[1] :]
    got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=15, do_sample=False, eos_token_id=None)
    assert torch.equal(got[:, 0], torch.full((3,), tok.bos_id)) and torch.equal(got[:, 1:], want)
    assert len(set(want.flatten().tolist())) > 3
    again = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=15, do_sample=False, use_cache=False)
    assert torch.equal(again[:, 1 : 1 + want.shape[1]], want)


def test_eos_stops_rows_as_ours():
    tok = _tok("char")
    model = enbert(tok)
    ids, mask, n = left_padded([10, 6, 3, 8], *_pieces(tok), pad=tok.pad_id, seed=3)
    free = ours_generate(model.core, ids, 25, temperature=0.0, prompt_lengths=n)
    eos = int(free[0, ids.shape[1] + 4])  # a token row 0 emits: make it the end of sequence
    want = ours_generate(model.core, ids, 25, temperature=0.0, prompt_lengths=n, eos_id=eos, pad_id=tok.pad_id)
    got = model.generate(
        ids, attention_mask=mask, max_new_tokens=25, do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_id
    )
    assert torch.equal(got, want[:, : got.shape[1]]) and (want[:, got.shape[1] :] == tok.pad_id).all()


def test_sampling_options_run_through_our_cache():
    tok = _tok("char")
    model = enbert(tok)
    ids, mask, _ = left_padded([9, 4], *_pieces(tok), pad=tok.pad_id)
    greedy = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None)
    top1 = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=True, top_k=1, eos_token_id=None)
    assert torch.equal(top1, greedy)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(
            model.generate(
                ids, attention_mask=mask, max_new_tokens=12, do_sample=True, top_k=5, top_p=0.9, temperature=0.8
            )
        )
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 9 + 12)
    with torch.no_grad():  # every sampled token is among the 5 most likely of its step
        logits = model(runs[0][:, :-1], attention_mask=torch.cat([mask, torch.ones(2, 11, dtype=mask.dtype)], 1)).logits
    top5 = logits[:, 8:].topk(5, dim=-1).indices
    assert (top5 == runs[0][:, 9:, None]).any(-1).all()
    many = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, num_return_sequences=3)
    assert many.shape == (6, 15) and torch.equal(many[::3, :9], ids)


def test_beam_search_reorders_our_cache():
    tok = _tok("char")
    model = enbert(tok)
    ids, mask, _ = left_padded([9, 5], *_pieces(tok), pad=tok.pad_id)
    kw = dict(attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False, eos_token_id=None)
    assert torch.equal(model.generate(ids, **kw), model.generate(ids, use_cache=False, **kw))
    s2s = enigma(tok)
    assert torch.equal(s2s.generate(input_ids=ids, **kw), s2s.generate(input_ids=ids, use_cache=False, **kw))


def test_text_generation_pipeline():
    dna = _tok("kmer")
    model, tok = enbert(dna), EnigmaDNATokenizer(dna)
    model.attach_tokenizer(dna)
    prompt = "ACGTTGCAAGCTTAC"
    out = pipeline("text-generation", model=model, tokenizer=tok)(prompt, max_new_tokens=10, do_sample=False)
    ids = torch.tensor([dna.encode(prompt)])
    want = ours_generate(model.core, ids, 10, temperature=0.0, eos_id=dna.eos_id, pad_id=dna.pad_id)
    assert out[0]["generated_text"] == prompt + dna.decode(want[0, ids.shape[1] :])
    assert len(out[0]["generated_text"]) > len(prompt)


def test_forward_outputs_and_cache_contract():
    tok = _tok("char")
    model = enbert(tok)
    ids, mask, n = left_padded([12, 7], *_pieces(tok), pad=tok.pad_id)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, output_hidden_states=True)
        want, _ = model.core(ids, key_start=(12 - n).int())
        cache = model.make_cache(2, 20)
        pre = model(ids, attention_mask=mask, cache=cache, use_cache=True)
        step = model(torch.tensor([[5], [6]]), cache=cache)
        two = model(torch.tensor([[7, 8], [5, 6]]), cache=cache)
    torch.testing.assert_close(full.logits, want, rtol=0, atol=0)
    assert len(full.hidden_states) == 3 and torch.equal(model.lm_head(full.hidden_states[-1]), full.logits)
    torch.testing.assert_close(pre.logits, want, rtol=1e-5, atol=1e-5)
    assert isinstance(pre.cache, DNAKVCache) and cache.get_seq_length() == 15 and cache.max_len == 20
    seq = torch.cat([ids, torch.tensor([[5, 7, 8], [6, 5, 6]])], 1)
    with torch.no_grad():
        ref = model(seq, attention_mask=torch.cat([mask, torch.ones(2, 3, dtype=mask.dtype)], 1)).logits
    torch.testing.assert_close(step.logits[:, 0], ref[:, 12], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(two.logits, ref[:, 13:], rtol=1e-4, atol=1e-4)
    labels = ids.masked_fill(mask == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    ref_loss = torch.nn.functional.cross_entropy(want[:, :-1].reshape(-1, want.shape[-1]), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, ref_loss)
    with pytest.raises(ValueError, match="cache holds 20 positions, 15 used, 6 more asked"):
        model(torch.zeros(2, 6, dtype=torch.long), cache=cache)
    with pytest.raises(TypeError, match="cache must be a DNAKVCache"):
        model.generate(ids, attention_mask=mask, max_new_tokens=3, cache=DynamicCache())
    with pytest.raises(ValueError, match="attention_mask row 1 has not zeros then ones"):
        model(ids, attention_mask=torch.tensor([[1] * 12, [1, 0] * 6]))
    with pytest.raises(ValueError, match="exceeds the model's block_size 128"):
        model.generate(ids, attention_mask=mask, max_new_tokens=120)
    with pytest.raises(TypeError, match="unsupported arguments: inputs_embeds"):
        model(ids, inputs_embeds=torch.zeros(2, 12, 48))


def test_generate_runs_one_native_call_per_step_where_it_can(monkeypatch):
    """An EnBERT's cache is a whole-step decoder's (the layers are views of its stacked buffers): every step after
    the prefill is one ops.decode_step call, with the tokens of the module path; beam search, which gives the
    layers new buffers, drops it and runs the modules."""
    from enigma_fast import ops

    tok = _tok("char")
    model = enbert(tok)
    ids, mask, _ = left_padded([9, 5], *_pieces(tok), pad=tok.pad_id)
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None)
    calls = []
    native = ops.decode_step
    monkeypatch.setattr(ops, "decode_step", lambda *a, **k: calls.append(1) or native(*a, **k))
    cache = model.make_cache(2, 24)
    assert cache.fast is not None
    fast = model.generate(ids, cache=cache, **kw)
    assert len(calls) == 9  # 10 new tokens: the first from the prefill's logits
    slow = model.generate(ids, cache=DNAKVCache(model.core, 2, 24, ids.device, torch.float32, whole_step=False), **kw)
    assert len(calls) == 9 and torch.equal(fast, slow)
    want = ours_generate(model.core, ids[:1], 10, temperature=0.0, decode_path="module")  # row 0: no padding
    assert torch.equal(fast[0, 9:], want[0, 9:])
    beams = model.generate(ids, num_beams=2, **kw)
    assert len(calls) == 9 and beams.shape == fast.shape


def test_decode_step_output_is_the_dataclass_output():
    """The decode step's output, built without the dataclass machinery (``step_output``), behaves as
    ``CausalLMOutputWithPast(logits=..., cache=...)``: the same keys, attributes, tuple and item access; and the
    fast path gives the module path's logits (the op's buffer is copied, not handed out)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from enigma_fast.hf.modeling_enbert import step_output

    tok = _tok("char")
    model = enbert(tok)
    ids, mask, _ = left_padded([9, 5], *_pieces(tok), pad=tok.pad_id)
    fast_cache, slow_cache = model.make_cache(2, 16), DNAKVCache(model.core, 2, 16, ids.device, torch.float32, False)
    assert fast_cache.fast is not None and slow_cache.fast is None
    with torch.no_grad():
        model(ids, attention_mask=mask, cache=fast_cache)
        model(ids, attention_mask=mask, cache=slow_cache)
        a = model(torch.tensor([[5], [6]]), cache=fast_cache)
        a_logits = a.logits.clone()
        model(torch.tensor([[7], [8]]), cache=fast_cache)  # the op's buffer is rewritten: a.logits must not change
        b = model(torch.tensor([[5], [6]]), cache=slow_cache)
    assert torch.equal(a.logits, a_logits) and fast_cache.length == 11 and slow_cache.length == 10
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    ref = CausalLMOutputWithPast(logits=a.logits, cache=fast_cache)
    out = step_output(a.logits, fast_cache)
    assert type(out) is type(a) is CausalLMOutputWithPast
    assert list(out.keys()) == list(ref.keys()) == ["logits", "cache"]
    assert out.to_tuple() == ref.to_tuple() and out[0] is ref[0] and out["cache"] is ref["cache"]
    assert out.loss is None and out.hidden_states is None and "loss" not in out and "cache" in out
    assert out == ref


def test_generate_reads_the_mask_once():
    """With our cache the attention mask is read at the prefill only, so generate leaves it at the prompt's length;
    the tokens are those of a run that grows it (the module cache with the mask grown, below)."""
    tok = _tok("char")
    model = enbert(tok)
    ids, mask, _ = left_padded([9, 5, 7], *_pieces(tok), pad=tok.pad_id)
    seen = []
    update = EnBERTForCausalLM._update_model_kwargs_for_generation

    def spy(self, outputs, model_kwargs, *a, **k):
        out = update(self, outputs, model_kwargs, *a, **k)
        seen.append(tuple(out["attention_mask"].shape))
        return out

    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None)
    try:
        EnBERTForCausalLM._update_model_kwargs_for_generation = spy
        got = model.generate(ids, **kw)
    finally:
        EnBERTForCausalLM._update_model_kwargs_for_generation = update
    assert seen and set(seen) == {(3, 9)}
    from transformers import GenerationMixin

    grown = []

    def plain(self, outputs, model_kwargs, *a, **k):
        out = GenerationMixin._update_model_kwargs_for_generation(self, outputs, model_kwargs, *a, **k)
        grown.append(out["attention_mask"].shape[1])
        return out

    try:
        EnBERTForCausalLM._update_model_kwargs_for_generation = plain
        want = model.generate(ids, **kw)
    finally:
        EnBERTForCausalLM._update_model_kwargs_for_generation = update
    assert grown == list(range(10, 10 + len(grown))) and torch.equal(got, want)
