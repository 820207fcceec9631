"""``python -m enigma_fast.predict``: the command lives in :mod:`enigma_fast.cli.predict`."""

from enigma_fast.cli._common import launch
from enigma_fast.cli.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    launch("enigma_fast.predict", main, passive=True)
