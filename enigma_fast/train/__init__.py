"""Training: the loop, its config, checkpoints and metrics (the command line is ``enigma_fast.cli.train``)."""

from enigma_fast.train.config import PRESETS, TrainConfig

__all__ = ["PRESETS", "TrainConfig", "train"]


def train(*args, **kwargs):
    """See :func:`enigma_fast.train.loop.train` (imported lazily: the config needs no torch)."""
    from enigma_fast.train.loop import train as _train

    return _train(*args, **kwargs)
