"""The files in tests/data (see tests/data/README.md): models and arrays Deeplearning4j itself
wrote, the outside reference for lstmfast.dl4j and the layers' parameter layout.

They are part of the repository and of the sdist, so a missing file is a test failure (a broken
checkout or MANIFEST.in), never a skip.
"""
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"

DL4J_FILES = (
    "080_ModelSerializer_Regression_LSTM_1.zip",
    "080_ModelSerializer_Regression_CG_LSTM_1.zip",
    "LSTMCharModelingExample_100b6.zip",
    "LSTMCharModelingExample_Input_100b6.bin",
    "LSTMCharModelingExample_Output_100b6.bin",
    "SyntheticBidirectionalRNNGraph_100b6.zip",
    "SyntheticBidirectionalRNNGraph_Input_100b6.bin",
    "SyntheticBidirectionalRNNGraph_Output_100b6.bin",
)
DL4J_MODELS = tuple(name for name in DL4J_FILES if name.endswith(".zip"))


def data_file(name):
    """The path of tests/data/<name>; fails the calling test when the file is not there."""
    path = DATA_DIR / name
    if not path.is_file():
        pytest.fail(f"test data file missing: {path} (tests/data is part of the repository and of "
                    f"the sdist; see tests/data/README.md)", pytrace=False)
    return path
