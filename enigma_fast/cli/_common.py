"""What every command-line tool shares: the parser, option checks, device and dtype options, the entry point that
turns a user error into one line, the OpenMP policy, progress bars, and the rules for input and output files.

A tool (``enigma_fast/cli/<tool>.py``) holds its parser, its option checks and a ``_run(args) -> int``, and its
``main(argv=None) -> int`` is ``run_main(_parser(), _run, argv)``; its library work lives outside ``cli/``. The
pieces:

* :class:`ArgumentParser` -- argparse whose errors are one line, ``PROG: error: MESSAGE (see --help)``, exit 2.
* :class:`UsageError`, :func:`require`, :func:`require_path` -- a bad option or input found after parsing,
  reported by :func:`run_main` as ``PROG: error: MESSAGE`` with exit code 2. Messages name the option, what was
  expected and what came: ``--batch-size must be >= 1, got 0``.
* :func:`int_at_least`, :func:`float_in` -- argparse ``type=`` converters with range checks (messages as above).
* :func:`add_device_argument` / :func:`parse_device`, :func:`add_dtype_argument` / :func:`autocast_dtype` /
  :data:`DTYPES` -- ``--device cpu|cuda[:N]`` and ``--dtype auto|float32|bfloat16|float16``.
* :func:`run_main` -- parse, log INFO lines to stderr, run; ``UsageError``/``OSError``/``ValueError`` become one
  line on stderr and exit code 2 (no traceback).
* :func:`passive_openmp` -- ``OMP_WAIT_POLICY=PASSIVE`` for the tools that run long on CPU.
* :func:`progress_bar` -- a tqdm bar on stderr, or a no-op object.
* :func:`check_outputs` / :func:`open_output` -- outputs are checked before any work (folder exists and is
  writable, not a folder, not an input, not another output, replaced only with ``--force``) and written atomically
  (a temporary sibling renamed over the target at the end, so a failed run never leaves a partial file).
* :func:`load_checkpoint` -- a checkpoint folder with its tokenizer, on a device.
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
from enigma_fast.progress import NullBar, progress_bar

__all__ = [
    "AUTOCAST_HELP",
    "DTYPES",
    "ArgumentParser",
    "NullBar",
    "UsageError",
    "add_device_argument",
    "add_dtype_argument",
    "autocast_dtype",
    "check_outputs",
    "float_in",
    "int_at_least",
    "load_checkpoint",
    "one_line",
    "open_output",
    "parse_device",
    "passive_openmp",
    "progress_bar",
    "require",
    "require_path",
    "run_main",
]

DTYPES = ("float32", "bfloat16", "float16")  # the --dtype names (torch dtypes of the same names)
AUTOCAST_HELP = "auto: bfloat16 autocast on CUDA, float32 on CPU"
SAME_OUTPUT = "{flag} {path} is also {other}; give each output its own file"


class UsageError(Exception):
    """A bad argument or input: reported as one line on stderr, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error, ``PROG: error: MESSAGE (see --help)``, and exit code 2 instead of the usage
    block; the description is printed as written (``RawDescriptionHelpFormatter``) unless ``formatter_class`` is
    given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (runs of white space, newlines included, folded to one space)."""
    return " ".join(str(err).split())


# ------------------------------------------------------------------------------------------------------------
# option values
# ------------------------------------------------------------------------------------------------------------
def require(ok: bool, flag: str, expected: str, got: Any) -> None:
    """Raise ``UsageError(f"{flag} must be {expected}, got {got}")`` unless ``ok``."""
    if not ok:
        raise UsageError(f"{flag} must be {expected}, got {got}")


def require_path(path: str, what: str, folder: bool = False) -> None:
    """Raise ``UsageError(f"{what} not found: {path}")`` unless ``path`` is a file (a folder with ``folder``);
    ``what`` names it, e.g. ``"sequence file"``, ``"--model folder"``."""
    if not (os.path.isdir(path) if folder else os.path.isfile(path)):
        raise UsageError(f"{what} not found: {path}")


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type=``: the text as an int ``>= lo``; otherwise argparse reports ``argument --x: must be an
    int >= lo, got 'text'`` (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    return parse


def float_in(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=``: the text as a finite float in the interval from ``lo`` to ``hi`` (None: unbounded on
    that side; ``lo_open``/``hi_open`` exclude the bound), e.g. ``float_in(0, 1, lo_open=True)`` for ``(0, 1]``;
    otherwise argparse reports ``argument --x: must be a number in (0, 1], got '2'`` (exit 2)."""
    if lo is not None and hi is not None:
        expected = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        expected = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        expected = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        expected = "finite"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value)
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
        ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number {expected}, got {text!r}")
        return value

    return parse


# ------------------------------------------------------------------------------------------------------------
# device and dtype
# ------------------------------------------------------------------------------------------------------------
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
    """``--dtype`` among :data:`DTYPES`; with ``auto`` also ``auto`` (the default; see :func:`autocast_dtype`),
    without it sorted names and default None."""
    if auto:
        parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help=help)
    else:
        parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help=help)


def autocast_dtype(choice: str | None, device: torch.device) -> str | None:
    """The dtype name to run the model under: ``auto`` means bfloat16 autocast on CUDA and float32 (None: no
    autocast) on CPU, as the trainer; any other choice is returned as it is."""
    if choice != "auto":
        return choice
    return "bfloat16" if device.type == "cuda" else None


# ------------------------------------------------------------------------------------------------------------
# the entry point and the process
# ------------------------------------------------------------------------------------------------------------
def run_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
    *,
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv`` (None: ``sys.argv[1:]``), send INFO log lines to stderr as bare messages, and return
    ``run(args)``. A :class:`UsageError`, ``OSError`` or ``ValueError`` (and the types in ``errors``) raised by
    ``run`` -- a bad option, a missing or unreadable file, an option the library rejects -- becomes the line
    ``PROG: error: MESSAGE`` on stderr and the return value 2; parse errors exit 2 from the parser."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
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
    """Make OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``) unless the environment sets a policy.

    Threads that spin while waiting take the cores from each other whenever anything else runs on the machine: on
    a 2-core CPU sharing with one compiler job the tiny model trained at ~1-4k bases/s with spinning threads, ~10k
    with passive ones (docs/training.md). The runtime reads the policy once, when it loads, and torch has no call
    that changes it afterwards: when no runtime is loaded yet the variable is set here; when one is (importing
    enigma_fast loads torch's), the command is started again as ``python -m module argv`` (``argv`` None:
    ``sys.argv[1:]``) with the variable set, which happens once since the new process finds it set.
    """
    if os.environ.get("OMP_WAIT_POLICY") is not None:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if _openmp_loaded():
        args = sys.argv[1:] if argv is None else list(argv)
        os.execv(sys.executable, [sys.executable, "-m", module, *args])


# ------------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------------
def check_outputs(
    outputs: Sequence[tuple[str, str | None]],
    inputs: Sequence[tuple[str, str]] = (),
    *,
    force: bool | None,
    same: str = SAME_OUTPUT,
) -> None:
    """Check the output files ``(flag, path)`` before any work (a None or '-' path is stdout: skipped).

    Each must go into an existing, writable folder, not be a folder, not be one of the ``inputs`` ``(what, path)``
    (``"--out x is the input file y; it would be overwritten"``, ``what`` e.g. ``"input file y"`` or ``"--vcf
    file"``), and exist only with ``force`` (``force=None``: existing outputs are always replaced); then no two may
    be one file (message ``same``, formatted with ``flag``, ``path`` and the ``other`` flag). UsageError naming the
    flag otherwise.
    """
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if path is None or path == "-":
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
    for flag, path in outputs:
        if path is None or path == "-":
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(same.format(flag=flag, path=path, other=seen[real]))
        seen[real] = flag


@contextlib.contextmanager
def open_output(path: str | None, mode: str = "w") -> Iterator[IO[Any]]:
    """A stream to write the output ``path`` through: stdout when ``path`` is None or '-', else a temporary sibling
    renamed over ``path`` when the block completes (removed on error: a failed run leaves no partial file);
    see :func:`enigma_fast.files.atomic_open`."""
    if path is None or path == "-":
        yield sys.stdout.buffer if "b" in mode else sys.stdout
        return
    with atomic_open(path, mode) as f:
        yield f


def load_checkpoint(path: str, device: torch.device | str) -> Any:
    """The model of checkpoint folder ``path`` on ``device``, with its tokenizer (``model.tokenizer``); UsageError
    when the folder has no tokenizer.json. Errors of the folder itself are those of
    :func:`enigma_fast.models.load_model` (FileNotFoundError, ValueError)."""
    from enigma_fast.models import load_model

    model = load_model(path, device=str(device))
    if model.tokenizer is None:
        raise UsageError(f"{path} has no tokenizer.json")
    return model
