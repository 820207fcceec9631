"""``EnigmaDNATokenizer``: our char and k-mer tokenizers as a ``transformers`` ``PreTrainedTokenizer``.

It wraps a ``DNATokenizer`` (``self.dna``: ``CharTokenizer`` or ``KMerTokenizer``, read from and written to our
tokenizer.json, the same file) and gives exactly its ids: ``tok("ACGTN...")["input_ids"] == dna.encode(...)``,
lossless under the default policies (byte fallback, see ``enigma_fast.tokenizers``), and ``decode`` inverts it.
The special tokens are ours (``<pad> <unk> <bos> <eos> <mask>``, and the sentinels ``<mask_0>`` ... as extra
special tokens); none is added when encoding (``tok(seq)`` is the sequence's tokens alone). Padding is on the left
by default (what generation and our models' masks expect).

Token strings: a vocabulary piece is its text (``"ACGTA"``), a special token its name, a fallback byte its letter
(``"N"``) -- or ``"<0x4E>"`` when that letter is also a piece of the vocabulary (a k-mer tokenizer's tail piece),
so every token string names one id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizer

from enigma_fast.tokenizers import DNATokenizer

__all__ = ["EnigmaDNATokenizer"]

TOKENIZER_FILE = "tokenizer.json"
_SPECIAL_ATTRS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}


class EnigmaDNATokenizer(PreTrainedTokenizer):
    """``transformers`` tokenizer over an ``enigma_fast`` DNA tokenizer (see the module doc).

    ``EnigmaDNATokenizer(dna_tokenizer)`` wraps one; ``EnigmaDNATokenizer.from_pretrained(folder)`` (or
    ``AutoTokenizer.from_pretrained(folder)``) reads ``folder/tokenizer.json``; ``save_pretrained(folder)`` writes it.
    """

    vocab_files_names = {"tokenizer_file": TOKENIZER_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, dna: DNATokenizer | None = None, tokenizer_file: str | None = None, **kwargs: Any) -> None:
        if dna is None:
            if tokenizer_file is None:
                raise ValueError("EnigmaDNATokenizer needs a DNA tokenizer or tokenizer_file (our tokenizer.json)")
            dna = DNATokenizer.from_file(tokenizer_file)
        if not isinstance(dna, DNATokenizer):
            raise TypeError(f"dna must be an enigma_fast DNATokenizer, got {type(dna).__name__}")
        self.dna = dna
        self._build_tables()
        for attr, name in _SPECIAL_ATTRS.items():
            kwargs.setdefault(attr, name)
        kwargs.setdefault("mask_token", "<mask>")
        kwargs.setdefault("extra_special_tokens", [self._id_to_token[i] for i in dna.sentinel_ids])
        kwargs.setdefault("padding_side", "left")
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("special_tokens_pattern", "none")
        super().__init__(**kwargs)

    def _build_tables(self) -> None:
        dna = self.dna
        pieces = dict(dna.pieces)
        to_token: dict[int, str] = {}
        for ch, i in dna.fallback_ids.items():
            to_token[i] = ch if ch not in pieces or pieces[ch] == i else f"<0x{ord(ch):02X}>"
        for name, i in dna.special_ids.items():
            to_token[i] = name
        for text, i in pieces.items():
            to_token[i] = text
        self._id_to_token = to_token
        self._vocab = {t: i for i, t in to_token.items()}

    # ---- vocabulary ------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.dna.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Our encoding of ``text`` (lossless by default; a byte outside the DNA/IUPAC alphabet raises ValueError
        naming it, under the default ``invalid="error"`` policy), as token strings."""
        return [self._id_to_token[i] for i in self.dna.encode(text)]

    def _convert_token_to_id(self, token: str) -> int:
        tid = self._vocab.get(token)
        if tid is None:
            raise ValueError(f"{token!r} is not a token of this tokenizer")
        return tid

    def _convert_id_to_token(self, index: int) -> str:
        token = self._id_to_token.get(int(index))
        if token is None:
            raise ValueError(f"token id {index} is not in this tokenizer's vocabulary (size {self.vocab_size})")
        return token

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.dna.decode([self._convert_token_to_id(t) for t in tokens], skip_special_tokens=False)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: Any = None,
        **kw,
    ) -> str:
        """Our decoding: the bases of the ids; special tokens dropped (``skip_special_tokens``) or named."""
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return self.dna.decode(ids, skip_special_tokens=skip_special_tokens)

    # ---- files -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Read ``tokenizer.json`` (our format) from a folder (or a Hub repository, through ``transformers``' file
        cache); ``kwargs`` are ``transformers`` tokenizer options (``padding_side``, ``model_max_length``, ...)."""
        path = Path(pretrained_model_name_or_path)
        if path.is_file():
            file = str(path)
        elif path.is_dir():
            file = str(path / TOKENIZER_FILE)
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{path} holds no {TOKENIZER_FILE}")
        else:
            from transformers.utils import cached_file

            hub = {k: kwargs.pop(k) for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
            file = cached_file(str(pretrained_model_name_or_path), TOKENIZER_FILE, **hub)
        for key in ("_from_auto", "_commit_hash", "trust_remote_code", "config", "_from_pipeline", "use_fast"):
            kwargs.pop(key, None)
        tok = cls(DNATokenizer.from_file(file), **kwargs)
        tok.name_or_path = str(pretrained_model_name_or_path)
        return tok

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> tuple[str, ...]:
        """Write ``save_directory/tokenizer.json`` (our format, the only file: what both libraries read)."""
        if kwargs.get("push_to_hub"):
            raise NotImplementedError("push_to_hub: save the folder, then upload it with huggingface_hub")
        if os.path.isfile(save_directory):
            raise FileExistsError(f"save_pretrained needs a folder, got the file {save_directory}")
        os.makedirs(save_directory, exist_ok=True)
        file = os.path.join(save_directory, TOKENIZER_FILE)
        self.dna.save(file)
        return (file,)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        name = (filename_prefix + "-" if filename_prefix else "") + TOKENIZER_FILE
        file = os.path.join(save_directory, name)
        self.dna.save(file)
        return (file,)
