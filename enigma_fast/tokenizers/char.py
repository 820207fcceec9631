"""CharTokenizer: single-base tokens over a fixed vocabulary (the seed's per-character tokenizer made correct:
the vocabulary never grows while encoding).

Ids: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3, ``<mask>`` 4, then ``FALLBACK_ALPHABET`` from 5:
A 5, C 6, G 7, T 8, N 9, a 10, c 11, g 12, t 13, n 14, then the IUPAC codes R Y S W K M B D H V and their
lower case (15..34), then the sentinels ``<mask_0>`` .. ``<mask_{n-1}>`` from 35 (n = ``num_sentinels``, 64 by
default; 0 gives the vocabulary of tokenizer.json files written before sentinels existed).
"""

from __future__ import annotations

from collections.abc import Iterable

from enigma_fast.tokenizers._base import (
    DEFAULT_SENTINELS,
    FALLBACK_ALPHABET,
    SPECIAL_TOKENS,
    DNATokenizer,
    _check_num_sentinels,
    sentinel_name,
)

__all__ = ["CharTokenizer"]


class CharTokenizer(DNATokenizer):
    """One token per base. Policies as ``KMerTokenizer`` (``case``, ``unknown``, ``invalid``); ``num_sentinels``
    sentinel tokens (0..1024) after the fallback bytes."""

    kind = "char"

    def __init__(
        self,
        case: str = "keep",
        unknown: str = "fallback",
        invalid: str = "error",
        num_sentinels: int = DEFAULT_SENTINELS,
    ) -> None:
        super().__init__(1, 1, case, unknown, invalid)
        n = _check_num_sentinels(num_sentinels)
        specials = {s: j for j, s in enumerate(SPECIAL_TOKENS)}
        fallback = {ch: len(SPECIAL_TOKENS) + j for j, ch in enumerate(FALLBACK_ALPHABET)}
        base = len(SPECIAL_TOKENS) + len(FALLBACK_ALPHABET)
        specials.update({sentinel_name(j): base + j for j in range(n)})
        # The bases as 1-mers (same ids as their fallback tokens) so encoding takes the dense table path.
        pieces = {b: fallback[b] for b in "ACGT"}
        self._set_vocab(pieces, specials, fallback)

    def build_vocab(self, sequences: Iterable[str]) -> dict[str, int]:
        """The vocabulary is fixed; returns it (pieces -> ids) for API compatibility."""
        return dict(self.fallback_ids)

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self.fallback_ids)
