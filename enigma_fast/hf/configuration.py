"""``transformers`` configuration classes for EnBERT and Enigma: the same fields, names and checks as
``enigma_fast.models.config``, and the same config.json.

``EnBERTHFConfig`` / ``EnigmaHFConfig`` are ``PreTrainedConfig`` subclasses whose fields are generated from
``EnBERTConfig`` / ``EnigmaConfig`` (one source of truth), validated by them (a wrong type or value is the same
one-line TypeError/ValueError naming the field), and written back as exactly our config.json: every field, plus
``model_type``, ``architectures``, ``transformers_version`` and ``dtype`` (which our own loaders accept), plus, for
a model with a task head, the ``finetune`` section of ``enigma_fast.finetune`` (task, labels, pooling, ...; the
fine-tuned folder format, read by ``load_finetuned``). The standard ``transformers`` names map
onto ours (``hidden_size`` -> ``d_model``, ``num_attention_heads`` -> ``n_head``, ``num_hidden_layers`` -> ``n_layer``,
``max_position_embeddings`` -> ``block_size``, ``tie_word_embeddings`` -> ``tie_embeddings``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from enigma_fast.models.config import METADATA_KEYS, EnBERTConfig, EnigmaConfig, _Config

__all__ = ["EnBERTHFConfig", "EnigmaHFConfig", "config_class_for"]

# transformers' task keys: accepted in a config.json (read as transformers reads them), never written (a model
# with a head writes the `finetune` section instead, which holds the labels)
TASK_KEYS = ("id2label", "label2id", "problem_type", "num_labels")
_FIELD_TYPES = {"int": int, "float": float, "bool": bool}


class _DNAHFConfig(PreTrainedConfig):
    """Shared behaviour; the subclasses add the model's fields (see ``_config_class``)."""

    ours: ClassVar[type[_Config]]
    encoder_decoder: ClassVar[bool] = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.is_encoder_decoder = self.encoder_decoder  # read by generate and the pipelines
        valid = self.to_enigma_fast()  # our checks: TypeError/ValueError naming the field
        for f in dataclasses.fields(valid):  # normalised values (numpy ints -> int, ints for floats -> float)
            object.__setattr__(self, f.name, getattr(valid, f.name))

    def to_enigma_fast(self) -> _Config:
        """The ``enigma_fast.models`` config of these fields (validated)."""
        return self.ours(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self.ours)})

    @classmethod
    def from_enigma_fast(cls, config: _Config, **kwargs: Any) -> _DNAHFConfig:
        """The transformers config of an ``enigma_fast.models`` config (``kwargs``: transformers options)."""
        if not isinstance(config, cls.ours):
            raise TypeError(f"config must be an {cls.ours.__name__}, got {type(config).__name__}")
        return cls(**dataclasses.asdict(config), **kwargs)

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any], **kwargs: Any) -> Any:
        """The config of a parsed config.json: checked as ``enigma_fast.models`` checks it (every field present,
        none unknown, each of its type and value; the metadata keys of ``METADATA_KEYS`` and, for fine-tuned
        models, ``TASK_KEYS`` allowed), one line naming the field otherwise."""
        if not isinstance(config_dict, Mapping):
            raise TypeError(
                f"{cls.ours.__name__} config must be a JSON object (dict), got {type(config_dict).__name__}"
            )
        d = dict(config_dict)
        task = {k: d.pop(k) for k in TASK_KEYS if k in d}
        finetune = d.pop("finetune", None)
        meta = {k: d[k] for k in METADATA_KEYS if k in d}
        ours = cls.ours.from_dict(d)  # raises on a missing, unknown or ill-typed field, or another model_type
        fields = dataclasses.asdict(ours)
        if finetune is not None:
            from enigma_fast.finetune.folder import FinetuneSpec

            spec = FinetuneSpec.from_dict(finetune)  # ValueError naming the field
            task = {"id2label": dict(enumerate(spec.labels)), "finetune": spec.to_dict()}
        elif task.get("id2label") is not None:
            task["id2label"] = {int(k): v for k, v in task["id2label"].items()}
        return super().from_dict({**fields, **task, **meta}, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Our config.json content: the fields, ``model_type``, ``architectures``, ``transformers_version``,
        ``dtype`` and, for a model with a task head, the ``finetune`` section."""
        out = super().to_dict()
        keep = {f.name for f in dataclasses.fields(self.ours)} | {"transformers_version", "dtype"}
        d = {k: v for k, v in out.items() if k in keep and v is not None}
        d["model_type"] = self.model_type
        d["architectures"] = list(self.architectures or [self.ours.architecture])
        if getattr(self, "finetune", None) is not None:
            d["finetune"] = self.finetune
        return d

    def to_diff_dict(self) -> dict[str, Any]:
        """Same as ``to_dict``: our loaders need every field in config.json."""
        return self.to_dict()


def _config_class(ours: type[_Config], name: str, doc: str, attribute_map: dict[str, str]) -> type[_DNAHFConfig]:
    """A ``_DNAHFConfig`` subclass whose dataclass fields are those of ``ours`` (names, types, defaults)."""
    annotations = {}
    namespace: dict[str, Any] = {"__doc__": doc, "__module__": __name__, "__qualname__": name}
    for f in dataclasses.fields(ours):
        annotations[f.name] = _FIELD_TYPES[str(f.type)]
        namespace[f.name] = f.default
    namespace.update(__annotations__=annotations, ours=ours, model_type=ours.model_type, attribute_map=attribute_map)
    return type(name, (_DNAHFConfig,), namespace)


_COMMON_MAP = {
    "hidden_size": "d_model",
    "num_attention_heads": "n_head",
    "max_position_embeddings": "block_size",
    "tie_word_embeddings": "tie_embeddings",
}

EnBERTHFConfig = _config_class(
    EnBERTConfig,
    "EnBERTHFConfig",
    "transformers config of EnBERT (model_type 'enbert'): the fields of ``enigma_fast.models.EnBERTConfig``.",
    {**_COMMON_MAP, "num_hidden_layers": "n_layer"},
)
EnigmaHFConfig = _config_class(
    EnigmaConfig,
    "EnigmaHFConfig",
    "transformers config of Enigma (model_type 'enigma'): the fields of ``enigma_fast.models.EnigmaConfig``; "
    "``decoder_start_token_id`` is ``bos_id``.",
    {**_COMMON_MAP, "num_hidden_layers": "n_decoder_layer", "decoder_start_token_id": "bos_id"},
)
EnigmaHFConfig.encoder_decoder = True


def config_class_for(d: Mapping[str, Any]) -> type[_DNAHFConfig]:
    """The config class of a parsed config.json: by ``model_type`` ("enbert", "enigma"), or, for a file without one
    (written by hand), by its fields (``n_encoder_layer`` -> Enigma, ``n_layer`` -> EnBERT). ValueError otherwise."""
    classes = {c.model_type: c for c in (EnBERTHFConfig, EnigmaHFConfig)}
    kind = d.get("model_type")
    if kind is None:
        kind = "enigma" if "n_encoder_layer" in d else "enbert" if "n_layer" in d else None
    if kind not in classes:
        raise ValueError(
            f"config.json is not an enigma_fast model: model_type must be one of {sorted(classes)}, got {kind!r}"
        )
    return classes[kind]
