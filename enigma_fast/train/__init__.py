"""Training: ``python -m enigma_fast.train`` (see ``__main__``), the loop, its config, checkpoints and metrics."""

from enigma_fast.train.config import PRESETS, TrainConfig

__all__ = ["PRESETS", "TrainConfig", "train"]


def train(*args, **kwargs):
    """See :func:`enigma_fast.train.loop.train` (imported lazily: the config needs no torch)."""
    from enigma_fast.train.loop import train as _train

    return _train(*args, **kwargs)
