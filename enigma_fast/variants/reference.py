"""Random access to the reference FASTA of a VCF: through pysam's faidx index (written next to the FASTA when it
is missing and the folder is writable), or read into memory when that is impossible (plain gzip, a read-only
folder, ``write_index=False``). pysam is imported when a function here runs (``pip install enigma_fast[reading]``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from enigma_fast.data.fasta import iter_records

__all__ = ["INSTALL_HINT", "Reference", "open_reference", "require_pysam"]

log = logging.getLogger("enigma_fast.vep")  # the name the VEP messages have always had
INSTALL_HINT = "pip install enigma_fast[reading]"


def require_pysam() -> Any:
    """The pysam module; ImportError (one line, the install command) without it."""
    try:
        import pysam
    except ImportError:
        raise ImportError(f"enigma_fast.vep needs pysam: {INSTALL_HINT}") from None
    return pysam


class Reference:
    """Random access to a FASTA: ``lengths`` (name -> bases) and ``fetch(name, start, end)`` (upper case)."""

    lengths: dict[str, int]
    how: str

    def fetch(self, name: str, start: int, end: int) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FaidxReference(Reference):
    def __init__(self, fasta: Any, how: str) -> None:
        self._fa = fasta
        self.lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        self.how = how

    def fetch(self, name: str, start: int, end: int) -> str:
        return self._fa.fetch(name, start, end).upper()

    def close(self) -> None:
        self._fa.close()


class _MemoryReference(Reference):
    def __init__(self, path: str, keep: set[str] | None, how: str) -> None:
        self.lengths, self._seqs = {}, {}
        for rec in iter_records(path):
            name = rec.id
            if name in self.lengths:
                raise ValueError(f"{path}: sequence name {name!r} appears twice")
            self.lengths[name] = len(rec.sequence)
            if keep is None or name in keep:
                self._seqs[name] = rec.sequence
        self.how = how

    def fetch(self, name: str, start: int, end: int) -> str:
        return self._seqs[name][start:end].upper()


def _compression(path: str) -> str:
    """'bgzf', 'gzip' or 'plain' from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] != b"\x1f\x8b":
        return "plain"
    return "bgzf" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


def open_reference(path: str, contigs: set[str], write_index: bool) -> Reference:
    """The FASTA through pysam's faidx when its index exists or may be written next to it, otherwise read into
    memory (only the sequences of ``contigs`` kept). Writing an index is logged."""
    pysam = require_pysam()
    kind = _compression(path)
    needed = [path + ".fai"] + ([path + ".gzi"] if kind == "bgzf" else [])
    have_index = all(os.path.isfile(p) for p in needed)
    folder = os.path.dirname(os.path.abspath(path))
    if kind != "gzip" and (have_index or (write_index and os.access(folder, os.W_OK))):
        if not have_index:
            log.info(
                "indexing %s: writing %s next to it (--no-write-index reads it into memory instead)",
                path,
                " and ".join(p for p in needed if not os.path.isfile(p)),
            )
        try:
            return _FaidxReference(pysam.FastaFile(path), "faidx index" + ("" if have_index else " (written)"))
        except (OSError, ValueError) as err:
            if have_index:
                raise ValueError(f"{path}: cannot open the FASTA with its index: {err}") from None
            log.warning("%s: cannot index (%s); reading it into memory", path, err)
    why = (
        "plain gzip, not bgzip: no random access"
        if kind == "gzip"
        else "no index and --no-write-index"
        if not write_index
        else f"no index and {folder} is not writable"
    )
    log.info("reading %s into memory (%s)", path, why)
    return _MemoryReference(path, contigs, f"in memory ({why})")
