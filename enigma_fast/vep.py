"""``python -m enigma_fast.vep``: the variant effect command line, ``enigma_fast.cli.vep``. The library it runs is
``enigma_fast.variants``; its public names stay importable from this module."""

from enigma_fast import variants
from enigma_fast.cli._common import launch
from enigma_fast.cli.vep import main
from enigma_fast.variants import *  # noqa: F403  (the names this module has always offered)

__all__ = ["main", *variants.__all__]

if __name__ == "__main__":
    launch("enigma_fast.vep", main)
