"""Progress bars on stderr: a tqdm bar when tqdm is installed and a bar is wanted, otherwise an object with the same
``update``/``close`` methods that does nothing, so callers never test which one they got.

This module imports nothing else of enigma_fast (nor torch): every layer may use it.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["NullBar", "progress_bar"]


class NullBar:
    """A progress bar that shows nothing (``update``/``close``/``set_postfix_str`` accept their arguments)."""

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units (ignored)."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Text after the bar (ignored)."""

    def close(self) -> None:
        """End the bar (nothing to do)."""


def progress_bar(total: int | None = None, *, desc: str, unit: str, enabled: bool | None = True, **options: Any) -> Any:
    """A progress bar of ``total`` units (None: a counter) on stderr.

    ``enabled``: True shows it, None only when stderr is a terminal (tqdm's ``disable=None``), False never. Without
    tqdm, or when disabled, a :class:`NullBar`. ``options`` go to ``tqdm`` (``unit_scale``, ``dynamic_ncols``,
    ``leave``, ...). The caller closes the bar.
    """
    if enabled is False:
        return NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return NullBar()
    disable = None if enabled is None else False
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, **options)
