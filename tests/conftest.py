"""Shared test setup: the tests' support modules (reference.py, gradcheck.py, ...) importable by
name, without putting the source tree's lstmfast or this directory on sys.path.

This directory is not put on sys.path (pyproject.toml selects pytest's importlib import mode):
its subject folders would shadow real modules there; without PyTorch installed, tests/torch/
would be imported as a namespace package named ``torch``.
"""
import importlib.util
import os
import sys
import tempfile

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT_MODULES = ("reference", "gradcheck", "reliability_support", "testdata", "pngread",
                   "memory_support")


def _load_support_module(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


for _name in SUPPORT_MODULES:
    if _name not in sys.modules:
        _load_support_module(_name)


def pytest_configure(config):
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


@pytest.fixture
def two_threads():
    """lstmfast's team at two threads for the test, its setting back afterwards."""
    import lstmfast
    previous = lstmfast.set_num_threads(2)
    yield
    lstmfast.set_num_threads(previous)
