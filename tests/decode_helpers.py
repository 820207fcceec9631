"""Models and drivers shared by the whole-step decode tests (CPU and CUDA): random EnBERT / Enigma models whose
outputs depend on the context, and the module path and the whole-step path run side by side on the same prompts."""

from __future__ import annotations

import torch

from enigma_fast import ops
from enigma_fast.generation.whole_step import WholeStepDecoder
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig

VOCAB = 37  # not a multiple of the 64-column panels

# Shape classes (d_model, n_head, n_layer, max_rel_pos, ffn_mult) of the presets, at a test's depth: tiny (D = 32),
# 47m (D = 64), seed (12 heads of 32), the 2.5b head dim (D = 128), and an odd head dim (D = 30) with a narrow FFN.
SHAPES = {
    "tiny": (128, 4, 2, 64, 5),
    "47m": (512, 8, 2, 128, 5),
    "seed": (384, 12, 1, 128, 5),
    "d128": (256, 2, 1, 16, 5),
    "odd": (120, 4, 2, 7, 3),
}


def make_model(
    kind: str,
    shape: str = "tiny",
    *,
    bias: bool = True,
    cross_rel_pos: int = 8,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
) -> torch.nn.Module:
    """A random model at a realistic scale: weights 8x the init's 0.02, norms around 1, biases and the
    cross-attention bias random, so that the logits depend on the context."""
    d, H, L, P, mult = SHAPES[shape]
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, d_model=d, n_head=H, max_rel_pos=P, ffn_mult=mult, bias=bias, block_size=256)
    if kind == "enbert":
        model = EnBERT(EnBERTConfig(n_layer=L, **common))
    else:
        model = Enigma(EnigmaConfig(n_encoder_layer=1, n_decoder_layer=L, cross_rel_pos=cross_rel_pos, **common))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("rel_bias"):
                p.add_(torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.mul_(8.0)
    return model.eval().to(device=device, dtype=dtype)


def prompts(batch: int, length: int, padded: bool, device: str = "cpu", seed: int = 1):
    """``(ids (B, T), prompt_lengths (B,) or None)``: random ids, left-padded to T with shorter rows when padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=g)
    lengths = None
    if padded:
        lengths = torch.randint(max(1, length // 3), length + 1, (batch,), generator=g)
        lengths[0] = length
        for b in range(batch):
            ids[b, : length - lengths[b]] = 0
        lengths = lengths.to(device)
    return ids.to(device), lengths


@torch.inference_mode()
def run_both(model, ids, lengths, n_steps: int, tokens_from=None):
    """Prefill with the module path into the model's own cache and into a whole-step decoder's cache, then feed the
    same tokens (greedy from the module path unless ``tokens_from`` gives them) ``n_steps`` times to both. Returns
    ``(module logits, whole-step logits, module cache, decoder)``, logits as (n_steps + 1, B, V) with the prefill's
    first."""
    B, T = ids.shape
    dev, dtype = ids.device, next(model.parameters()).dtype
    key_start = None if lengths is None else (T - lengths).to(torch.int32).contiguous()
    max_len = model.cache_length(T, n_steps + 1)
    cache = model.allocate_cache(B, max_len, dev, dtype)
    dec = WholeStepDecoder(model, B, max_len, T, dev, dtype)
    dcache = dec.allocate_cache()
    mod_logits = [model.prefill(ids, key_start, cache)]
    fast_logits = [model.prefill(ids, key_start, dcache).clone()]
    dec.start(dcache)
    for step in range(n_steps):
        tok = (mod_logits[-1].argmax(-1) if tokens_from is None else tokens_from[:, step])[:, None]
        mod_logits.append(model.decode_step(tok, cache))
        fast_logits.append(dec.step(tok, dcache).clone())
    return torch.stack(mod_logits), torch.stack(fast_logits), cache, dec


def pack_of(model) -> ops.DecodePack:
    from enigma_fast.generation.whole_step import packed_weights

    return packed_weights(model)
