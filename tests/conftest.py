"""Shared test setup: make the tests' own helper module (reference.py) importable in every
pytest import mode, without putting the source tree's lstmfast on the path."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
