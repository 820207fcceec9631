"""``python -m enigma_fast.finetune``: the command lives in :mod:`enigma_fast.cli.finetune`."""

from enigma_fast.cli._common import launch
from enigma_fast.cli.finetune import main

if __name__ == "__main__":
    launch("enigma_fast.finetune", main, passive=True)
