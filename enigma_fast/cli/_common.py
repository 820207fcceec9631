"""What every command-line tool shares. A tool (``enigma_fast/cli/<tool>.py``) holds its parser, its option checks
and ``_run(args) -> int``; its ``main(argv=None)`` is ``run_main(_parser(), _run, argv)``; its library work lives
outside ``cli/``. Every public name of this module:

* :class:`ArgumentParser` (errors in one line, exit 2), :class:`UsageError`, :func:`require`, :func:`require_path`:
  a bad option or input is reported as ``PROG: error: MESSAGE`` with exit code 2, the message naming the option,
  what was expected and what came (``--batch-size must be >= 1, got 0``); :func:`int_at_least`, :func:`float_in`:
  argparse ``type=`` converters with range checks.
* :func:`add_device_argument`, :func:`parse_device`, :func:`add_dtype_argument`, :func:`autocast_dtype`,
  :data:`DTYPES`, :data:`AUTOCAST_HELP`: ``--device cpu|cuda[:N]`` and ``--dtype auto|float32|bfloat16|float16``.
* :func:`run_main`, :func:`one_line`, :func:`launch`, :func:`passive_openmp`: the entry point (user errors in one
  line, no traceback), ``python -m``'s ``__main__`` block, and ``OMP_WAIT_POLICY=PASSIVE`` for long CPU runs.
* :func:`progress_bar`, :func:`output_path`, :func:`check_outputs`, :func:`open_output`, :func:`load_checkpoint`:
  ``-`` is stdout, outputs checked before any work and written atomically, a checkpoint with its tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import torch

from enigma_fast.files import atomic_open
from enigma_fast.progress import progress_bar  # noqa: F401  (the tools take it from here)

DTYPES = ("float32", "bfloat16", "float16")  # the --dtype names (torch dtypes of the same names)
AUTOCAST_HELP = "auto: bfloat16 autocast on CUDA, float32 on CPU"


class UsageError(Exception):
    """A bad argument or input: reported as one line on stderr, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``PROG: error: MESSAGE (see --help)``, with exit code 2; the description is
    printed as written (``RawDescriptionHelpFormatter``) unless ``formatter_class`` is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (runs of white space, newlines included, folded to one space)."""
    return " ".join(str(err).split())


def require(ok: bool, flag: str, expected: str, got: Any) -> None:
    """Raise ``UsageError(f"{flag} must be {expected}, got {got}")`` unless ``ok``."""
    if not ok:
        raise UsageError(f"{flag} must be {expected}, got {got}")


def require_path(path: str, what: str, folder: bool = False) -> None:
    """``UsageError(f"{what} not found: {path}")`` unless ``path`` is a file (with ``folder``: a folder)."""
    if not (os.path.isdir(path) if folder else os.path.isfile(path)):
        raise UsageError(f"{what} not found: {path}")


def _bounded(kind: type, noun: str, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> Any:
    bounds = [f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []
    bounds += [f"{'<' if hi_open else '<='} {hi:g}"] if hi is not None else []
    expected = " ".join([noun, " and ".join(bounds)]).strip()

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        low_ok = lo is None or (value > lo if lo_open else value >= lo)
        high_ok = hi is None or (value < hi if hi_open else value <= hi)
        if not (math.isfinite(value) and low_ok and high_ok):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    return parse


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type=``: an int ``>= lo``, else ``argument --n: must be an int >= 1, got '0'`` (exit 2)."""
    return _bounded(int, "an int", lo, None, False, False)


def float_in(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=``: the text as a finite float from ``lo`` to ``hi`` (None: unbounded; ``lo_open`` /
    ``hi_open`` exclude the bound); otherwise argparse reports ``argument --p: must be a finite number > 0 and <= 1,
    got '2'`` (exit 2)."""
    return _bounded(float, "a finite number", lo, hi, lo_open, hi_open)


def add_device_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--device`` (default ``cuda`` when a GPU is available, else ``cpu``); check it with :func:`parse_device`."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=help)


def parse_device(text: str, flag: str = "--device") -> torch.device:
    """``text`` as a ``torch.device``; UsageError for a name torch does not know (``'cpu' or 'cuda[:N]'``) or for
    CUDA on a machine without it."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"{flag} must be 'cpu' or 'cuda[:N]', got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} {text}: no CUDA device is available")
    return device


def add_dtype_argument(parser: argparse.ArgumentParser, help: str = AUTOCAST_HELP, auto: bool = True) -> None:
    """``--dtype``: ``auto`` (default, see :func:`autocast_dtype`) or a :data:`DTYPES` name; without ``auto`` None."""
    if auto:
        parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help=help)
    else:
        parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help=help)


def autocast_dtype(choice: str | None, device: torch.device) -> str | None:
    """``auto``: bfloat16 (autocast) on CUDA, None (float32) on CPU, as the trainer; another choice as it is."""
    if choice != "auto":
        return choice
    return "bfloat16" if device.type == "cuda" else None


def run_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
    *,
    errors: tuple[type[BaseException], ...] = (),
    level: int = logging.INFO,
) -> int:
    """Parse ``argv`` (None: ``sys.argv[1:]``), log ``level`` and above to stderr as bare messages, and return
    ``run(args)``. A :class:`UsageError`, ``OSError`` or ``ValueError`` (and ``errors``) raised by ``run`` -- a bad
    option, a missing or unreadable file, an option the library rejects -- becomes the line ``PROG: error:
    MESSAGE`` on stderr and the return value 2; parse errors exit 2 from the parser."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return run(args)
    except (UsageError, OSError, ValueError, *errors) as err:
        print(f"{parser.prog}: error: {one_line(err)}", file=sys.stderr)
        return 2


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime is mapped into this process (it has read its environment then)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "torch" in sys.modules
    return any(name in maps for name in ("libgomp", "libiomp", "libomp"))


def passive_openmp(module: str, argv: Sequence[str] | None = None) -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy: spinning OpenMP threads take the cores from
    each other whenever anything else runs (2 cores shared with a compiler: ~1-4k bases/s of training against ~10k,
    docs/training.md). The runtime reads the policy when it loads and torch cannot change it later, so once one is
    loaded (importing enigma_fast loads torch's) the command runs again as ``python -m module argv`` (None:
    ``sys.argv[1:]``) with the variable set -- once, as the new process finds it set; before, it is just set."""
    if os.environ.get("OMP_WAIT_POLICY") is not None:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if _openmp_loaded():
        args = sys.argv[1:] if argv is None else list(argv)
        os.execv(sys.executable, [sys.executable, "-m", module, *args])


def launch(module: str, main: Callable[[], int], *, passive: bool = False) -> NoReturn:
    """The ``if __name__ == "__main__"`` block of ``python -m module``: the OpenMP policy first when ``passive``
    (:func:`passive_openmp`), then exit with ``main()``'s code."""
    if passive:
        passive_openmp(module)
    raise SystemExit(main())


def output_path(text: str | None) -> str | None:
    """An output option's value for :func:`check_outputs` / :func:`open_output`: None (stdout) for ``-`` or none."""
    return None if text is None or text == "-" else text


def check_outputs(
    outputs: Sequence[tuple[str, str | None]],
    inputs: Sequence[tuple[str, str]] = (),
    *,
    force: bool | None,
    same: str = "{flag} {path} is also {other}; give each output its own file",
) -> None:
    """Check outputs ``(flag, path)`` (None: stdout, skipped) before any work: each goes into an existing writable
    folder, is no folder, is none of the ``inputs`` ``(what, path)`` (``--out x is the input file y; it would be
    overwritten``), and exists only with ``force`` (None: outputs are always replaced); no two are one file
    (message ``same`` with ``flag``, ``path``, ``other``). UsageError naming the flag otherwise."""
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if path is None:
            continue
        out = Path(path)
        parent = out.parent
        if not parent.is_dir():
            raise UsageError(f"{flag} {path}: the folder {parent} does not exist")
        if out.is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"{flag} {path}: the folder {parent} is not writable")
        for what, inp in inputs:
            if out.exists() and os.path.exists(inp) and os.path.samefile(out, inp):
                raise UsageError(f"{flag} {path} is the {what}; it would be overwritten")
        if out.exists() and force is False:
            raise UsageError(f"{flag} {path} exists; pass --force to replace it")
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(same.format(flag=flag, path=path, other=seen[real]))
        seen[real] = flag


@contextlib.contextmanager
def open_output(path: str | None, mode: str = "w") -> Iterator[IO[Any]]:
    """A stream to write the output ``path`` through: stdout when ``path`` is None, else a temporary sibling
    renamed over ``path`` when the block completes (removed on error: a failed run leaves no partial file);
    see :func:`enigma_fast.files.atomic_open`."""
    if path is None:
        yield sys.stdout.buffer if "b" in mode else sys.stdout
        return
    with atomic_open(path, mode) as f:
        yield f


def load_checkpoint(path: str, device: torch.device | str) -> Any:
    """The model of checkpoint folder ``path`` on ``device`` with its tokenizer; UsageError without tokenizer.json,
    the errors of :func:`enigma_fast.models.load_model` for a bad folder."""
    from enigma_fast.models import load_model

    model = load_model(path, device=str(device))
    if model.tokenizer is None:
        raise UsageError(f"{path} has no tokenizer.json")
    return model
