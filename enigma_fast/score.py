"""``python -m enigma_fast.score``: the scoring command line, ``enigma_fast.cli.score``. The held-out functions once
defined here live in ``enigma_fast.heldout`` and stay importable from this module."""

from enigma_fast.cli._common import launch
from enigma_fast.cli.score import main
from enigma_fast.heldout import HeldOut, Stretch, heldout_stretches, run_windows, score_heldout

__all__ = ["HeldOut", "Stretch", "heldout_stretches", "main", "run_windows", "score_heldout"]

if __name__ == "__main__":
    launch("enigma_fast.score", main, passive=True)
