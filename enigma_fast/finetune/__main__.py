"""``python -m enigma_fast.finetune``: the command lives in :mod:`enigma_fast.cli.finetune`."""

from enigma_fast.cli.finetune import entry

if __name__ == "__main__":
    entry()
