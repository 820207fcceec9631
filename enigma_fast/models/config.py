"""Model configurations: dataclasses with named presets and a parameter count.

    cfg = EnBERTConfig.from_preset("tiny", vocab_size=tok.vocab_size)
    cfg = EnigmaConfig.from_preset("seed", dropout=0.1)
    cfg = config_from_dict(json.load(open("ckpt/config.json")))   # EnBERTConfig or EnigmaConfig

config.json also carries the keys ``transformers`` reads and writes beside the fields (``model_type``,
``architectures``, ``transformers_version``, ``dtype``; see ``METADATA_KEYS``), so one folder serves both this library
and ``transformers`` (``enigma_fast.hf``): ``from_dict`` checks their types and sets them aside.

Every way of making a config (the constructor, ``from_preset``, ``from_dict``, ``dataclasses.replace``) runs
``validate``: each field must have its declared type (``"false"`` is not ``False``, ``"4"`` and ``4.0`` are not
``4``; a bool is not an int) and a sensible value (sizes >= 1, ``d_model`` divisible by ``n_head``, ...). A wrong
type raises TypeError, a wrong value ValueError, each one line naming the field, what was expected and what came.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

__all__ = ["METADATA_KEYS", "EnBERTConfig", "EnigmaConfig", "config_from_dict"]

C = TypeVar("C", bound="_Config")

# Sizes must fit the kernels' 32-bit size arguments (and keep a typo from asking for petabytes).
MAX_SIZE = 2**31 - 1


# Keys of config.json that are not model fields: what ``transformers`` writes beside them (the architecture names,
# its version, the dtype of the saved weights), each with the JSON types it may hold. ``from_dict`` type-checks and
# drops them; they never change the model.
METADATA_KEYS: dict[str, tuple[type, ...]] = {
    "architectures": (list,),
    "transformers_version": (str,),
    "dtype": (str, type(None)),
    "torch_dtype": (str, type(None)),
}


def _got(value: Any) -> str:
    """``type 'value'`` for error messages, kept to one short line."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _typed(owner: str, name: str, kind: str, value: Any) -> Any:
    """``value`` as field type ``kind`` ("int", "float" or "bool"): TypeError unless it already is one (an int
    is accepted for a float; a bool is never an int or a float)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{owner}.{name} must be a bool (true or false), got {_got(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}.{name} must be {'an int' if kind == 'int' else 'a number'}, got {_got(value)}")
    if kind == "int":
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{owner}.{name} must be an int, got {_got(value)}")
        return int(value)
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value}")
    return value


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

    # int fields that are ids, not sizes (checked by the subclass against vocab_size, may be 0)
    _ID_FIELDS: ClassVar[frozenset[str]] = frozenset()
    # fields added after checkpoints were first written: a config.json without one takes this value (the
    # behaviour of the models written before the field existed)
    _ADDED_FIELDS: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's type and value (see the module doc); normalises numpy ints and float fields
        given as ints to plain ``int``/``float``. Raises TypeError (wrong type) or ValueError (wrong value)."""
        owner = type(self).__name__
        for f in fields(self):
            value = _typed(owner, f.name, str(f.type), getattr(self, f.name))
            if f.type == "int" and f.name not in self._ID_FIELDS and not 1 <= value <= MAX_SIZE:
                raise ValueError(f"{owner}.{f.name} must be an int in [1, {MAX_SIZE}], got {value}")
            object.__setattr__(self, f.name, value)
        if self.d_model % self.n_head != 0:
            raise ValueError(f"{owner}.d_model must be divisible by n_head={self.n_head}, got {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}.dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps < 0:
            raise ValueError(f"{owner}.norm_eps must be >= 0, got {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The named preset with ``overrides`` applied (each type- and value-checked as by ``validate``, so a
        ``--model-override`` value must already be an int/float/bool); an unknown name lists the known ones."""
        if not isinstance(name, str):
            raise TypeError(f"{cls.__name__} preset name must be a str, got {_got(name)}")
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known: {', '.join(sorted(cls.PRESETS))}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with ``model_type`` and ``architectures`` keys (what ``transformers`` needs to pick the classes),
        the content of config.json."""
        return {"model_type": self.model_type, "architectures": [self.architecture], **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """The config of a parsed config.json (``to_dict`` output): every field present, none unknown, each of
        its declared type and a valid value; ``model_type``, when present, must be this class's. The validating
        constructor for files: TypeError/ValueError, one line naming the field, on anything else."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__} config must be a JSON object (dict), got {type(d).__name__}")
        d = dict(d)
        bad_keys = [k for k in d if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(f"{cls.__name__} config keys must be str, got {_got(bad_keys[0])}")
        kind = d.pop("model_type", cls.model_type)
        if kind != cls.model_type:
            raise ValueError(f"config is for model_type {kind!r}, not {cls.model_type!r}")
        for key, types in METADATA_KEYS.items():
            if key not in d:
                continue
            value = d.pop(key)
            ok = isinstance(value, types) and (key != "architectures" or all(isinstance(a, str) for a in value))
            if not ok:
                want = "a list of str" if key == "architectures" else " or ".join(t.__name__ for t in types)
                raise TypeError(f"{cls.__name__} config key {key!r} must be {want}, got {_got(value)}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields in config: {', '.join(sorted(unknown))}")
        for name, value in cls._ADDED_FIELDS.items():
            d.setdefault(name, value)
        missing = names - set(d)
        if missing:
            raise ValueError(f"{cls.__name__} config is missing fields: {', '.join(sorted(missing))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    model_type: ClassVar[str] = ""
    architecture: ClassVar[str] = ""  # the transformers class (enigma_fast.hf) written to config.json's architectures

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
    # trained fill-in-the-middle (enigma_fast.data.fim): infilling reads both flanks; configs without it: False
    fim: bool = False
    # the fill-in-the-middle row order it was trained on: True = suffix-prefix-middle, False = prefix-suffix-middle
    # (enigma_fast.data.fim); configs without it: False
    fim_spm: bool = False

    _ADDED_FIELDS: ClassVar[dict[str, Any]] = {"fim": False, "fim_spm": False}
    model_type: ClassVar[str] = "enbert"
    architecture: ClassVar[str] = "EnBERTForCausalLM"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # trains on a 2-core CPU in minutes (~1.1M parameters with a small vocabulary)
        "tiny": dict(d_model=128, n_head=4, n_layer=4, max_rel_pos=64, block_size=1024),
        # the seed's configuration: d_model 384, 12 heads, 12 layers, block 512
        "seed": dict(d_model=384, n_head=12, n_layer=12, max_rel_pos=128, block_size=512),
        "47m": dict(d_model=512, n_head=8, n_layer=12, max_rel_pos=128, block_size=1024),
        "430m": dict(d_model=1280, n_head=20, n_layer=18, max_rel_pos=256, block_size=2048),
        # a multi-GPU size (FSDP2: see docs/scale.md); head dim 128
        "2.5b": dict(d_model=2048, n_head=16, n_layer=42, max_rel_pos=256, block_size=2048),
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
    bos_id: int = 2  # decoder start token (a tokenizer's bos_id); must be in [0, vocab_size)
    # R: cross-attention adds a learned bias per head and relative position (encoder position - decoder token's
    # position, clamped to [-R, R]); 0 = none (cross-attention by content only, as written before the field existed)
    cross_rel_pos: int = 32

    _ID_FIELDS: ClassVar[frozenset[str]] = frozenset({"bos_id", "cross_rel_pos"})
    _ADDED_FIELDS: ClassVar[dict[str, Any]] = {"cross_rel_pos": 0}

    model_type: ClassVar[str] = "enigma"
    architecture: ClassVar[str] = "EnigmaForConditionalGeneration"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d_model=128, n_head=4, n_encoder_layer=2, n_decoder_layer=2, max_rel_pos=64, block_size=256),
        # the seed's Enigma: d_model 384, 12 heads, 12 layers, block 512
        "seed": dict(d_model=384, n_head=12, n_encoder_layer=12, n_decoder_layer=12, max_rel_pos=128, block_size=512),
        "750m": dict(d_model=1280, n_head=20, n_encoder_layer=14, n_decoder_layer=14, max_rel_pos=256, block_size=2048),
    }

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.bos_id < self.vocab_size:
            raise ValueError(f"EnigmaConfig.bos_id must be in [0, vocab_size={self.vocab_size}), got {self.bos_id}")
        if not 0 <= self.cross_rel_pos <= MAX_SIZE:
            raise ValueError(f"EnigmaConfig.cross_rel_pos must be an int in [0, {MAX_SIZE}], got {self.cross_rel_pos}")

    def num_parameters(self) -> int:
        """Parameter count of ``Enigma(self)`` (tied head counted once)."""
        emb = self.vocab_size * self.d_model + self.block_size * self.d_model
        head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        enc = self.n_encoder_layer * self._block_params() + self.d_model
        dec = (
            self.n_decoder_layer
            * (self._block_params(cross=True) + self.n_head * (2 * self.cross_rel_pos + 1) * (self.cross_rel_pos > 0))
            + self.d_model
        )
        return emb + head + enc + dec


def config_from_dict(d: Mapping[str, Any]) -> EnBERTConfig | EnigmaConfig:
    """The validated config of a parsed config.json, its class chosen by ``d["model_type"]`` ("enbert" or
    "enigma"); see ``from_dict`` for the checks. Raises TypeError/ValueError naming the field."""
    if not isinstance(d, Mapping):
        raise TypeError(f"a model config must be a JSON object (dict), got {type(d).__name__}")
    classes = {c.model_type: c for c in (EnBERTConfig, EnigmaConfig)}
    kind = d.get("model_type")
    if kind not in classes:
        raise ValueError(f"model_type must be one of {sorted(classes)}, got {_got(kind)}")
    return classes[kind].from_dict(d)
