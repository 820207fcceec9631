"""DNA tokenizers: ``KMerTokenizer`` (the seed's API, fast and lossless) and ``CharTokenizer`` (single base).

Both encode with the compiled k-mer ops (``enigma_fast.ops.kmer``) and share one behaviour:

* **Lossless by default.** A window whose k-mer is not in the vocabulary (or holds N, an IUPAC code or a
  lowercase base) becomes one token per byte (byte fallback), and the short tail of a sequence whose length is
  not a multiple of the stride becomes one token (when it is itself a vocabulary piece) or one per byte, so
  ``decode(encode(s)) == s`` for every string over ``FALLBACK_ALPHABET`` (ACGTN, IUPAC, both cases) and every
  stride <= k. (The seed's ``encode`` stopped at the first k-mer missing from its vocabulary.)
* **Policies** (constructor arguments): ``case="upper"`` upper-cases soft-masked bases first;
  ``unknown="unk"`` maps missing k-mers to ``<unk>``; ``invalid="unk"`` maps bytes outside the alphabet to
  ``<unk>`` (by default they raise ValueError naming the byte and its position). All three are lossy, opt-in.
* Special tokens ``<pad> <unk> <bos> <eos> <mask>`` with fixed ids (see each class), and the sentinels
  ``<mask_0>`` .. ``<mask_{n-1}>`` (n = ``num_sentinels``, 64 by default) that stand for the masked spans of span
  corruption and infilling; their ids come after every other id, so an older tokenizer.json without them loads
  with all its ids (and ``num_sentinels == 0``). ``encode_batch`` gives padded ``(B, T)`` ids and ``lengths``;
  ``decode`` drops specials (``skip_special_tokens=False`` writes their names); ``reverse_complement`` helper.

tokenizer.json (written by ``save`` / ``save_model``, read back exactly by ``from_file``)::

    {
      "format": "enigma_fast.tokenizer",   # fixed
      "version": 1,
      "type": "kmer" | "char",
      "k": 5, "stride": 5,
      "case": "keep" | "upper", "unknown": "fallback" | "unk", "invalid": "error" | "unk",
      "pieces": {"GCCGG": 0, ..., "A": 1023},       # vocabulary pieces (k-mers, tails shorter than k) -> id
      "special_tokens": {"<pad>": 1024, "<unk>": 1025, "<bos>": 1026, "<eos>": 1027, "<mask>": 1028,
                         "<mask_0>": 1059, ..., "<mask_63>": 1122},
      "fallback": {"A": 1029, "C": 1030, ...},     # single-byte fallback tokens -> id
      "trained_letters": "ACGT"                     # optional: the letters of the tokens a model was trained on
    }

Decoding a k-mer id gives its first ``min(k, stride)`` bases, a tail piece or fallback token its own text.

``trained_letters`` is written by the trainer: the letters of the tokens of its training data, which generation and
infilling sample from by default (``DNATokenizer.output_mask``); a file without it (written before the record
existed) gives ``UNRECORDED_LETTERS``, the four bases A/C/G/T.

Loading checks every key (``DNATokenizer.from_dict``/``from_file``, ``KMerTokenizer.load_model``): all keys above
present (``trained_letters`` may be absent: distinct letters of ``FALLBACK_ALPHABET``) and no others; ``k``
(1..32) and ``stride`` (1..2^30) ints, not ``"4"``/``4.0``/``true``; pieces 1..k letters of ``FALLBACK_ALPHABET``;
exactly the five special tokens plus sentinels ``<mask_0>`` .. ``<mask_{n-1}>`` (n in 0..1024); fallback keys
single letters of ``FALLBACK_ALPHABET``; ids ints in [0, 2^31 - 1), one string per id, and dense: the largest id below
``2 * n + 1024`` for n distinct ids (gaps are fine, an id of 10,000,000 is not). Anything else is a one-line
ValueError starting with the file's path and naming the key; a failed ``load_model`` changes nothing.
``build_vocab`` follows the ``invalid`` policy like ``encode``: text outside ``FALLBACK_ALPHABET`` raises
(default) or, with ``invalid="unk"``, never becomes part of a piece.
"""

from enigma_fast.tokenizers._base import (
    DEFAULT_SENTINELS,
    FALLBACK_ALPHABET,
    MAX_SENTINELS,
    SPECIAL_TOKENS,
    UNRECORDED_LETTERS,
    DNATokenizer,
    reverse_complement,
    sentinel_name,
)
from enigma_fast.tokenizers.char import CharTokenizer
from enigma_fast.tokenizers.kmer import KMerTokenizer

__all__ = [
    "DEFAULT_SENTINELS",
    "FALLBACK_ALPHABET",
    "MAX_SENTINELS",
    "SPECIAL_TOKENS",
    "UNRECORDED_LETTERS",
    "CharTokenizer",
    "DNATokenizer",
    "KMerTokenizer",
    "reverse_complement",
    "sentinel_name",
]


def from_file(path: str) -> DNATokenizer:
    """Load a tokenizer.json (or a folder holding one) as the tokenizer class it names."""
    return DNATokenizer.from_file(path)
