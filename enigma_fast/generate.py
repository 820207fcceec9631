"""``python -m enigma_fast.generate``: the sampling and infilling command line, ``enigma_fast.cli.generate``."""

from enigma_fast.cli._common import launch
from enigma_fast.cli.generate import main

__all__ = ["main"]

if __name__ == "__main__":
    launch("enigma_fast.generate", main)
