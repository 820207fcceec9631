"""``python -m enigma_fast.predict``: the command lives in :mod:`enigma_fast.cli.predict`."""

from enigma_fast.cli.predict import entry, main

__all__ = ["main"]

if __name__ == "__main__":
    entry()
