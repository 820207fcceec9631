"""``python -m enigma_fast.embed``: the embedding command line, ``enigma_fast.cli.embed``."""

from enigma_fast.cli._common import launch
from enigma_fast.cli.embed import main, sidecar_path

__all__ = ["main", "sidecar_path"]

if __name__ == "__main__":
    launch("enigma_fast.embed", main, passive=True)
