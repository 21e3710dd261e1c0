"""lstmfast: Deeplearning4j's LSTMHelpers ported to typed Cython over BLAS, for the CPU.

Functional API: lstm_forward, lstm_backward. C-level API: `cimport lstmfast.kernels`
(build with include_dirs=[lstmfast.get_include()]).
"""
import os as _os

from ._version import __version__

try:
    from . import kernels as _kernels  # noqa: F401 (the compiled extension: fails first without a build)
except ImportError:
    from ._source_tree import uncompiled_tree_error
    _error = uncompiled_tree_error(__file__)
    if _error is None:
        raise
    raise _error from None  # the submodule's own error would only confuse

from .functional import (ACTIVATIONS, GATE_ACTIVATIONS, ForwardResult, Gradients, lstm_backward,
                         lstm_forward)
from .functional import release_buffers, set_num_threads
from .kernels import get_num_threads
from .layers import (Bidirectional, ConcurrentUseError, GravesBidirectionalLSTM, GravesLSTM, LSTM,
                     UnsupportedOperationError)
from .network import Adam, DenseLayer, OutputLayer, RnnOutputLayer, Sequential, Sgd

__all__ = ["__version__", "get_include", "lstm_forward", "lstm_backward", "ForwardResult",
           "Gradients", "ACTIVATIONS", "GATE_ACTIVATIONS"]
__all__ += ["GravesLSTM", "LSTM", "GravesBidirectionalLSTM", "Bidirectional", "DenseLayer",
            "OutputLayer", "RnnOutputLayer", "Sequential", "Sgd", "Adam", "ConcurrentUseError",
            "UnsupportedOperationError", "release_buffers", "set_num_threads", "get_num_threads"]


_LAZY_SUBMODULES = ("convert", "onnx", "keras", "dl4j")


def __getattr__(name):
    # lstmfast.convert / .onnx / .keras / .dl4j on first use: their optional dependencies (onnx, h5py,
    # keras) are imported by the functions that need them, never by `import lstmfast`
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_include():
    """The directory to add to a downstream extension's include path so that
    `cimport lstmfast.kernels` finds lstmfast/kernels.pxd (like numpy.get_include())."""
    return _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
