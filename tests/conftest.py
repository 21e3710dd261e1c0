"""Shared test setup: make the tests' own helper module (reference.py) importable in every
pytest import mode, without putting the source tree's lstmfast on the path."""
import os
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_sessionstart(session):
    """Run from a scratch directory: the Python subprocesses some tests start (`python -c`,
    `python -m lstmfast`) put their working directory first on sys.path, and from the repository
    root that would be the uncompiled source tree instead of the installed package."""
    os.chdir(tempfile.mkdtemp(prefix="lstmfast-tests-"))


def pytest_terminal_summary(terminalreporter):
    """Print what the reliability tests measured (cases run, memory growth, latencies)."""
    support = sys.modules.get("reliability_support")
    if support is None or not support.FIGURES:
        return
    terminalreporter.write_sep("-", "lstmfast reliability figures")
    for key in sorted(support.FIGURES):
        terminalreporter.write_line(f"{key}: {support.FIGURES[key]}")
    support.write_figures()
