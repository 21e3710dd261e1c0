"""The installed ``lstmfast`` console script, the demo's error exits (a clear one-line message on
stderr and a nonzero status, before any training), and the error a source tree without
compiled kernels gives."""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import lstmfast
from lstmfast.__main__ import main


def _console_script():
    """The ``lstmfast`` script installed with the package (next to this interpreter)."""
    (entry,) = [ep for ep in importlib.metadata.distribution("lstmfast").entry_points
                if ep.group == "console_scripts" and ep.name == "lstmfast"]
    assert entry.value == "lstmfast.__main__:main"
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / "lstmfast"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("lstmfast")
    assert found, "the lstmfast console script is not installed next to this Python"
    return found


def _script(*args, timeout=120, cwd=None):
    return subprocess.run([_console_script(), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_console_script_version_info_and_help(tmp_path):
    result = _script("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"lstmfast {lstmfast.__version__}"
    result = _script("info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert lstmfast.__version__ in result.stdout and "fast path:" in result.stdout
    result = _script("demo", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--text FILE" in result.stdout and "--plot PNG" in result.stdout


def test_console_script_runs_a_short_demo(tmp_path):
    result = _script("demo", "--task", "reber", "--epochs", "1", "--hidden", "8", cwd=tmp_path)
    # one epoch does not reach the 99% target: the status says so (1), the output is complete
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("accuracy: ")


@pytest.mark.parametrize("argv, message", [
    (["demo", "--text", "{tmp}/no-such-file.txt"], "--text {tmp}/no-such-file.txt: no such file"),
    (["demo", "--text", "{tmp}"], "--text {tmp}: not a file"),
    (["demo", "--save", "{tmp}/missing/model.zip"], "--save {tmp}/missing/model.zip: the directory"),
    (["demo", "--plot", "{tmp}/missing/loss.png"], "--plot {tmp}/missing/loss.png: the directory"),
    (["demo", "--plot", "{tmp}"], "--plot {tmp}: is a directory"),
])
def test_demo_refuses_bad_paths_before_training(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("lstmfast demo: error: " + message.format(tmp=tmp_path))
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""  # refused before anything ran


def test_demo_empty_text_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    status = main(["demo", "--text", str(empty), "--no-plot"])
    err = capsys.readouterr().err
    assert status == 2 and f"no text to train on ({empty} is empty)" in err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    (["demo", "--epochs", "three"], "argument --epochs: must be an integer, got 'three'"),
    (["demo", "--threads", "9"], "argument --threads: must be 0 to 8, got 9"),
    (["demo", "--threads", "-1"], "argument --threads: must be a non-negative integer, got -1"),
    (["demo", "--lr", "nan"], "argument --lr: must be a positive number, got nan"),
    (["demo", "--lr", "fast"], "argument --lr: must be a number, got 'fast'"),
    (["demo", "--task", "poetry"], "argument --task: invalid choice: 'poetry'"),
    (["demo", "--hidden"], "argument --hidden: expected one argument"),
    (["demo", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["train"], "argument COMMAND: invalid choice: 'train'"),
])
def test_bad_arguments_exit_2_with_the_argument_named(tmp_path, argv, message):
    result = _script(*argv, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_missing_text_file_through_the_console_script(tmp_path):
    result = _script("demo", "--text", "missing.txt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "lstmfast demo: error: --text missing.txt: no such file"


def test_a_source_tree_without_kernels_says_what_to_do(tmp_path):
    """``python -m lstmfast`` from the root of a clone imports the uncompiled sources. Rebuild
    that situation from the installed package's own Python files (no extension module) and a
    pyx/kernels.pyx beside them."""
    installed = Path(lstmfast.__file__).resolve().parent
    (tmp_path / "lstmfast").mkdir()
    for source in installed.glob("*.py"):
        shutil.copy(source, tmp_path / "lstmfast" / source.name)
    (tmp_path / "pyx").mkdir()
    (tmp_path / "pyx" / "kernels.pyx").write_text("# the sources of the compiled kernels\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for argv in (["-c", "import lstmfast"], ["-m", "lstmfast", "demo"]):
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                                cwd=tmp_path, env=env, timeout=60)
        assert result.returncode != 0, argv
        assert "lstmfast is being imported from its source tree" in result.stderr, result.stderr
        assert "pip install ." in result.stderr and "lstmfast demo" in result.stderr
        assert "circular import" not in result.stderr
    # without pyx/ beside it, the plain ImportError is left alone
    shutil.rmtree(tmp_path / "pyx")
    result = subprocess.run([sys.executable, "-c", "import lstmfast"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode != 0 and "source tree" not in result.stderr
