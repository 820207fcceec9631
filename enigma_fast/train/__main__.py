"""``python -m enigma_fast.train``: the trainer's command line, ``enigma_fast.cli.train``."""

from enigma_fast.cli.train import launch, main

__all__ = ["main"]

if __name__ == "__main__":
    launch()
