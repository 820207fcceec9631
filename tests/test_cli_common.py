"""The shared pieces of the command-line tools (enigma_fast.cli._common) and the file helpers under them
(enigma_fast.files, enigma_fast.progress): one-line errors with exit code 2, option checks and argument types,
--device/--dtype, the OpenMP policy, progress bars, output checks and atomic writes."""

from __future__ import annotations

import io
import os
import stat
import sys

import pytest
import torch

from enigma_fast import files, progress
from enigma_fast.cli import _common as common
from enigma_fast.cli._common import UsageError


def _parser(**kwargs):
    p = common.ArgumentParser(prog="python -m enigma_fast.tool", description="Tool.\n\n    indented example\n")
    p.add_argument("--n", type=common.int_at_least(1), default=1)
    p.add_argument("--p", type=common.float_in(0, 1, lo_open=True), default=0.5)
    common.add_device_argument(p)
    common.add_dtype_argument(p, **kwargs)
    return p


def _exit(parser, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    return e.value.code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# the parser and argument types
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "0"], "argument --n: must be >= 1, got 0"),
        (["--n", "x"], "argument --n: must be an int >= 1, got 'x'"),
        (["--p", "0"], "argument --p: must be a number in (0, 1], got '0'"),
        (["--p", "1.5"], "argument --p: must be a number in (0, 1], got '1.5'"),
        (["--p", "nan"], "argument --p: must be a number in (0, 1], got 'nan'"),
        (["--p", "x"], "argument --p: must be a number in (0, 1], got 'x'"),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_parser_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    code, err = _exit(_parser(), argv, capsys)
    assert code == 2
    assert err.startswith(f"python -m enigma_fast.tool: error: {message}") and err.endswith(" (see --help)\n"), err
    assert len(err.splitlines()) == 1


def test_parser_values_and_device_default(monkeypatch):
    args = _parser().parse_args(["--n", "3", "--p", "1", "--device", "cpu", "--dtype", "bfloat16"])
    assert (args.n, args.p, args.device, args.dtype) == (3, 1.0, "cpu", "bfloat16")
    assert _parser().parse_args([]).dtype == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _parser().parse_args([]).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _parser().parse_args([]).device == "cuda"


def test_help_keeps_the_description_as_written(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["--help"])
    assert e.value.code == 0 and "Tool.\n\n    indented example\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, expected, accepted, refused",
    [
        (dict(lo=0), ">= 0", ["0", "3e9"], ["-0.1"]),
        (dict(lo=0, lo_open=True), "> 0", ["1e-9"], ["0", "-1"]),
        (dict(hi=2.5), "<= 2.5", ["2.5", "-7"], ["2.6"]),
        (dict(hi=2, hi_open=True), "< 2", ["1.99"], ["2"]),
        (dict(lo=-1, hi=1, hi_open=True), "in [-1, 1)", ["-1", "0.999"], ["1", "-1.01"]),
        (dict(), "finite", ["-1e300", "0"], []),
    ],
)
def test_float_in_bounds(kwargs, expected, accepted, refused):
    import argparse

    parse = common.float_in(**kwargs)
    for text in accepted:
        assert parse(text) == float(text)
    for text in [*refused, "inf", "-inf", "nan", "one"]:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            parse(text)
        assert str(e.value) == f"must be a number {expected}, got {text!r}"


def test_dtype_without_auto():
    p = common.ArgumentParser(prog="t")
    common.add_dtype_argument(p, help="model dtype", auto=False)
    assert p.parse_args([]).dtype is None
    assert p.parse_args(["--dtype", "float16"]).dtype == "float16"
    assert [a for a in p._actions if a.dest == "dtype"][0].choices == ["bfloat16", "float16", "float32"]


def test_autocast_dtype():
    assert common.autocast_dtype("auto", torch.device("cpu")) is None
    assert common.autocast_dtype("auto", torch.device("cuda")) == "bfloat16"
    assert common.autocast_dtype("float16", torch.device("cpu")) == "float16"
    assert common.autocast_dtype(None, torch.device("cpu")) is None


def test_parse_device(monkeypatch):
    assert common.parse_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match=r"^--device must be 'cpu' or 'cuda\[:N\]', got 'gpu7'$"):
        common.parse_device("gpu7")
    with pytest.raises(UsageError, match=r"^--to must be"):
        common.parse_device("gpu7", flag="--to")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match=r"^--device cuda:1: no CUDA device is available$"):
        common.parse_device("cuda:1")


def test_require_and_require_path(tmp_path):
    common.require(True, "--x", ">= 1", 0)
    with pytest.raises(UsageError, match=r"^--batch-size must be >= 1, got 0$"):
        common.require(False, "--batch-size", ">= 1", 0)
    f = tmp_path / "a.fa"
    f.write_text(">a\nA\n")
    common.require_path(str(f), "sequence file")
    common.require_path(str(tmp_path), "--model folder", folder=True)
    with pytest.raises(UsageError, match=r"^sequence file not found: .*nope.fa$"):
        common.require_path(str(tmp_path / "nope.fa"), "sequence file")
    with pytest.raises(UsageError, match=r"^--model folder not found: "):
        common.require_path(str(f), "--model folder", folder=True)  # a file is not a folder
    with pytest.raises(UsageError, match=r"^--prompts file not found: "):
        common.require_path(str(tmp_path), "--prompts file")  # nor a folder a file


# ------------------------------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error, shown",
    [
        (UsageError("--x must be >= 1, got 0"), "--x must be >= 1, got 0"),
        (ValueError("a.fa: record 'r1'\n   holds 'U'"), "a.fa: record 'r1' holds 'U'"),
        (FileNotFoundError("sequence file not found: b.fa"), "sequence file not found: b.fa"),
    ],
)
def test_run_main_reports_user_errors_in_one_line(error, shown, capsys):
    def run(args):
        raise error

    assert common.run_main(_parser(), run, ["--n", "2"]) == 2
    assert capsys.readouterr().err == f"python -m enigma_fast.tool: error: {shown}\n"


def test_run_main_returns_the_tools_code_and_lets_bugs_through(capsys):
    seen = []
    assert common.run_main(_parser(), lambda a: seen.append(a.n) or 7, ["--n", "2"]) == 7
    assert seen == [2]

    def bug(args):
        raise KeyError("a bug, not a user error")

    with pytest.raises(KeyError):
        common.run_main(_parser(), bug, [])

    def no_pysam(args):
        raise ImportError("enigma_fast.vep needs pysam: pip install enigma_fast[reading]")

    with pytest.raises(ImportError):
        common.run_main(_parser(), no_pysam, [])
    assert common.run_main(_parser(), no_pysam, [], errors=(ImportError,)) == 2
    assert capsys.readouterr().err.endswith("error: enigma_fast.vep needs pysam: pip install enigma_fast[reading]\n")


def test_one_line():
    assert common.one_line(ValueError("a\n  b\tc ")) == "a b c"
    assert common.one_line(ValueError()) == ""


# ------------------------------------------------------------------------------------------------------------
# the OpenMP policy
# ------------------------------------------------------------------------------------------------------------
def test_passive_openmp(monkeypatch):
    calls = []
    monkeypatch.setattr(common.os, "execv", lambda exe, argv: calls.append((exe, argv)))
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stands
    common.passive_openmp("enigma_fast.score", ["x"])
    assert calls == [] and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"

    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(common, "_openmp_loaded", lambda: False)  # not loaded yet: set it, no new process
    common.passive_openmp("enigma_fast.score", ["x"])
    assert calls == [] and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"

    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(common, "_openmp_loaded", lambda: True)  # loaded: the command again, once
    monkeypatch.setattr(sys, "argv", ["/path/score.py", "--model", "m", "a.fa"])
    common.passive_openmp("enigma_fast.score")
    assert calls == [(sys.executable, [sys.executable, "-m", "enigma_fast.score", "--model", "m", "a.fa"])]
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    common.passive_openmp("enigma_fast.score")  # the new process finds the variable set
    assert len(calls) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_openmp_runtime_is_seen_once_torch_is_loaded():
    assert torch.get_num_threads() >= 1
    assert common._openmp_loaded() == torch.backends.openmp.is_available()


# ------------------------------------------------------------------------------------------------------------
# progress bars
# ------------------------------------------------------------------------------------------------------------
def test_progress_bar(monkeypatch):
    bar = common.progress_bar(10, desc="x", unit="rec", enabled=False)
    assert isinstance(bar, progress.NullBar)
    bar.update(3)
    bar.set_postfix_str("y")
    bar.close()
    pytest.importorskip("tqdm")
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stderr", sink)
    bar = common.progress_bar(4, desc="vep", unit="rec", enabled=True, mininterval=0)
    bar.update(4)
    bar.close()
    assert "vep" in sink.getvalue() and "4/4" in sink.getvalue()
    quiet = common.progress_bar(4, desc="vep", unit="rec", enabled=None)  # stderr is not a terminal here
    assert quiet.disable
    quiet.close()


def test_progress_bar_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails
    assert isinstance(common.progress_bar(desc="x", unit="tok"), progress.NullBar)


# ------------------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------------------
def test_check_outputs(tmp_path):
    inp = tmp_path / "in.fa"
    inp.write_text(">a\nA\n")
    old = tmp_path / "old.tsv"
    old.write_text("x")
    ok = [("--out", str(tmp_path / "new.tsv")), ("--per-base", None), ("--log", "-")]
    common.check_outputs(ok, [("input file in.fa", str(inp))], force=False)
    cases = [
        ([("--out", str(tmp_path / "no" / "x.tsv"))], False, "--out .*: the folder .*no does not exist"),
        ([("--out", str(tmp_path))], False, "--out .* is a folder; give a file name"),
        ([("--out", str(inp))], True, "--out .*in.fa is the input file in.fa; it would be overwritten"),
        ([("--out", str(old))], False, "--out .*old.tsv exists; pass --force to replace it"),
        (
            [("--out", str(tmp_path / "a.bg")), ("--per-base", str(tmp_path / "." / "a.bg"))],
            False,
            "--per-base .*a.bg is also --out; give each output its own file",
        ),
    ]
    for outputs, force, message in cases:
        with pytest.raises(UsageError, match="^" + message + "$"):
            common.check_outputs(outputs, [("input file in.fa", str(inp))], force=force)
    common.check_outputs([("--out", str(old))], force=True)
    common.check_outputs([("--out", str(old))], force=None)  # this tool replaces its outputs
    with pytest.raises(UsageError, match="^--out and --tsv name the same file$"):
        common.check_outputs(
            [("--out", str(old)), ("--tsv", str(old))], force=None, same="{other} and {flag} name the same file"
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_outputs_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="the folder .*ro is not writable$"):
            common.check_outputs([("--out", str(ro / "x"))], force=False)
    finally:
        ro.chmod(0o700)


def test_open_output_is_atomic(tmp_path, capsys):
    target = tmp_path / "out.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), common.open_output(str(target)) as f:
        f.write("half")
        assert target.read_text() == "old\n"  # nothing replaced while writing
        raise RuntimeError("crash")
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["out.tsv"]
    with common.open_output(str(target)) as f:
        f.write("new\n")
    assert target.read_text() == "new\n" and sorted(os.listdir(tmp_path)) == ["out.tsv"]
    with common.open_output(None) as f:
        f.write("to stdout\n")
    with common.open_output("-") as f:
        f.write("and again\n")
    assert capsys.readouterr().out == "to stdout\nand again\n"


def test_atomic_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with files.atomic_open(tmp_path / "a.bin", "wb") as f:
            f.write(b"\x00")
        with files.atomic_path(tmp_path / "b.vcf") as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".b.vcf.")
            with open(tmp, "w") as f:
                f.write("x")
    finally:
        os.umask(umask)
    for name in ("a.bin", "b.vcf"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.vcf"]
    with pytest.raises(ValueError, match="write mode"):
        with files.atomic_open(tmp_path / "c", "r"):
            pass
    link = tmp_path / "link.vcf"
    link.symlink_to(tmp_path / "b.vcf")
    with files.atomic_open(link) as f:
        f.write("through the link")
    assert link.is_symlink() and (tmp_path / "b.vcf").read_text() == "through the link"


def test_load_checkpoint(tmp_path):
    from enigma_fast.models import EnBERT, EnBERTConfig
    from enigma_fast.tokenizers import CharTokenizer

    tok = CharTokenizer(num_sentinels=0)
    model = EnBERT(EnBERTConfig(vocab_size=tok.vocab_size, n_layer=1, d_model=16, n_head=2, block_size=16))
    model.save_pretrained(tmp_path / "with", tok)
    model.save_pretrained(tmp_path / "without")
    loaded = common.load_checkpoint(str(tmp_path / "with"), "cpu")
    assert loaded.tokenizer == tok and not loaded.training
    with pytest.raises(UsageError, match=r"without has no tokenizer.json$"):
        common.load_checkpoint(str(tmp_path / "without"), torch.device("cpu"))
    with pytest.raises(FileNotFoundError):
        common.load_checkpoint(str(tmp_path / "nope"), "cpu")
