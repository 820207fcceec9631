"""Model configurations: dataclasses with named presets and a parameter count.

    cfg = EnBERTConfig.from_preset("tiny", vocab_size=tok.vocab_size)
    cfg = EnigmaConfig.from_preset("seed", dropout=0.1)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

__all__ = ["EnBERTConfig", "EnigmaConfig"]

C = TypeVar("C", bound="_Config")


@dataclass
class _Config:
    """Fields shared by both models. Shapes: d_model = n_head * head_dim."""

    vocab_size: int = 16
    d_model: int = 384
    n_head: int = 12
    ffn_mult: int = 5  # feed-forward width = ffn_mult * d_model (the seed's expansion 5)
    max_rel_pos: int = 128  # P: relative distances are clamped to [-(P-1), P-1]
    block_size: int = 512  # longest sequence (tokens) the model is trained/sampled on
    dropout: float = 0.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True  # LM head shares the token embedding matrix
    bias: bool = True  # biases in the Q/K/V, output and feed-forward projections

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type in ("int",) and getattr(self, f.name) <= 0:
                raise ValueError(f"{type(self).__name__}.{f.name} must be > 0, got {getattr(self, f.name)}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps < 0:
            raise ValueError(f"norm_eps must be >= 0, got {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The named preset with ``overrides`` applied; an unknown name lists the known ones."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known: {', '.join(sorted(cls.PRESETS))}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with a ``model_type`` key, the content of config.json."""
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        d = dict(d)
        kind = d.pop("model_type", cls.model_type)
        if kind != cls.model_type:
            raise ValueError(f"config is for model_type {kind!r}, not {cls.model_type!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields in config: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    model_type: ClassVar[str] = ""

    def _block_params(self, cross: bool = False) -> int:
        d = self.d_model
        b = 1 if self.bias else 0
        proj = 4 * d * d + 4 * d * b  # Q, K, V and output projections (+ biases)
        rel = (2 * self.max_rel_pos - 1) * d  # rel_emb: H * (2P-1) * D
        ffn = 2 * self.ffn_mult * d * d + (self.ffn_mult * d + d) * b
        n = proj + rel + ffn + 2 * d  # two RMSNorm weights
        if cross:
            n += proj + d  # cross-attention (no relative term) and its norm
        return n


@dataclass
class EnBERTConfig(_Config):
    """Decoder-only EnBERT: token embedding (no absolute positions), ``n_layer`` causal pre-norm blocks."""

    n_layer: int = 12

    model_type: ClassVar[str] = "enbert"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # trains on a 2-core CPU in minutes (~1.1M parameters with a small vocabulary)
        "tiny": dict(d_model=128, n_head=4, n_layer=4, max_rel_pos=64, block_size=1024),
        # the seed's configuration: d_model 384, 12 heads, 12 layers, block 512
        "seed": dict(d_model=384, n_head=12, n_layer=12, max_rel_pos=128, block_size=512),
        "47m": dict(d_model=512, n_head=8, n_layer=12, max_rel_pos=128, block_size=1024),
        "430m": dict(d_model=1280, n_head=20, n_layer=18, max_rel_pos=256, block_size=2048),
    }

    def num_parameters(self) -> int:
        """Parameter count of ``EnBERT(self)`` (tied head counted once)."""
        emb = self.vocab_size * self.d_model
        head = 0 if self.tie_embeddings else emb
        return emb + head + self.n_layer * self._block_params() + self.d_model


@dataclass
class EnigmaConfig(_Config):
    """Encoder-decoder Enigma: token + learned absolute position embeddings, bidirectional encoder blocks,
    decoder blocks with causal self-attention and cross-attention. ``block_size`` bounds source and target each."""

    n_encoder_layer: int = 12
    n_decoder_layer: int = 12
    bos_id: int = 2  # decoder start token (a tokenizer's bos_id); must be < vocab_size

    model_type: ClassVar[str] = "enigma"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d_model=128, n_head=4, n_encoder_layer=2, n_decoder_layer=2, max_rel_pos=64, block_size=256),
        # the seed's Enigma: d_model 384, 12 heads, 12 layers, block 512
        "seed": dict(d_model=384, n_head=12, n_encoder_layer=12, n_decoder_layer=12, max_rel_pos=128,
                     block_size=512),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.bos_id < self.vocab_size:
            raise ValueError(f"bos_id must be in [0, vocab_size={self.vocab_size}), got {self.bos_id}")

    def num_parameters(self) -> int:
        """Parameter count of ``Enigma(self)`` (tied head counted once)."""
        emb = self.vocab_size * self.d_model + self.block_size * self.d_model
        head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        enc = self.n_encoder_layer * self._block_params() + self.d_model
        dec = self.n_decoder_layer * self._block_params(cross=True) + self.d_model
        return emb + head + enc + dec
