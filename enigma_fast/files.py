"""Writing files without losing any: atomic replacement of one file or of a folder, and the rule that says which
existing folders the library may replace.

Every writer of the library goes through here (token stores, checkpoint folders, the trainer's run files, the
command-line tools' outputs):

* :func:`atomic_path` / :func:`atomic_open`: a file is written into a fresh temporary sibling and renamed over its
  target only when the writing completes, so a crash or an error never leaves a partial file where a good one was
  (the temporary file is removed on error).
* :func:`check_target` / :func:`install_folder`: a folder is written beside its target and moved into place; an
  existing target is replaced only when it is empty or the library's own earlier output, never when it holds a
  file the library did not write.

This module imports nothing else of enigma_fast (nor torch): every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "check_target", "install_folder", "usual_permissions"]


def usual_permissions(path: str | os.PathLike, folder: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open``/``mkdir`` would have (``0o666``/``0o777`` less the umask):
    ``mkstemp``/``mkdtemp`` make private ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary sibling of ``path`` to write (by name, e.g. for a library that opens files itself), renamed over
    ``path`` when the block completes and removed when it raises. ``path`` is resolved first (a symlink is replaced
    at its target's place); its folder must exist."""
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        usual_permissions(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """``open(path, mode)`` through :func:`atomic_path`: the file appears, complete, when the block completes, and
    an existing one is replaced only then; on error it is left as it was. ``mode`` is a write mode (``"w"``,
    ``"wb"``, ``"wt"``)."""
    if not mode.startswith("w"):
        raise ValueError(f"mode must be a write mode ('w', 'wb', 'wt'), got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def check_target(path: str | os.PathLike, own_names: set[str], is_own: Callable[[Path], bool], what: str) -> None:
    """Refuse (``FileExistsError``) to write the folder ``path`` unless it is absent, an empty folder, or a folder
    ``is_own`` recognises as written by the library that holds no name outside ``own_names``. ``what`` names the
    writer in the message. Nothing is touched."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise FileExistsError(
            f"{path} exists and is not a folder; {what} writes its folder only where nothing "
            "is, into an empty folder or over its own earlier output"
        )
    names = sorted(os.listdir(path))
    if not names:
        return
    foreign = [n for n in names if n not in own_names]
    if foreign or not is_own(path):
        shown = foreign or names
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise FileExistsError(
            f"{path} holds files that {what} did not write ({', '.join(shown[:5])}{more}) and "
            "it never removes or replaces those: choose a new or empty folder"
        )


def install_folder(tmp: str | os.PathLike, target: str | os.PathLike, last: str | None = None) -> None:
    """Move the complete folder ``tmp`` (a sibling of ``target``) to ``target``, which the caller has checked with
    :func:`check_target`: absent (one rename), an empty folder (its files are moved in, ``last`` after the others,
    so the folder itself -- a mount point, a working directory -- stays), or the library's earlier output (renamed
    aside, ``tmp`` renamed in, the old one removed: a crash between the two renames leaves it whole under the
    hidden name ``.<name>.old.*``)."""
    tmp, target = Path(tmp), Path(target)
    usual_permissions(tmp, folder=True)
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if target.is_dir() and not os.listdir(target):
        for name in sorted(os.listdir(tmp), key=lambda n: (n == last, n)):
            shutil.move(tmp / name, target / name)
        tmp.rmdir()
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rename(target, aside)  # onto the empty folder just made
    os.rename(tmp, target)
    shutil.rmtree(aside)
