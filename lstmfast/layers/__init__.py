"""DL4J's layers: the recurrent layers on top of ``lstm_forward`` / ``lstm_backward``, and the
dense, output and inference-only layers around them.

GravesLSTM (peepholes), LSTM (no peepholes), GravesBidirectionalLSTM and the
``Bidirectional`` wrapper, with Deeplearning4j's parameter layout, initialisation,
streaming state (``rnnTimeStep``), truncated-BPTT state (``rnnActivateUsingStoredState`` /
``tBpttStateMap``), DropConnect on the input weights and ``getMemoryReport``. Beside them
(``dense``): DenseLayer, OutputLayer and RnnOutputLayer; (``inference``): SimpleRnn and
GlobalPooling, which DL4J ComputationGraphs use and lstmfast runs for inference only.

No gate arithmetic lives here: every recurrent forward and backward pass is one call of the
compiled kernels through :func:`lstmfast.lstm_forward` / :func:`lstmfast.lstm_backward`.

Parameter layout (DL4J's, so that flat parameter vectors are interchangeable):

* one flat 1-D array ``layer.params``; ``W`` ``[nIn, 4h]``, ``RW`` ``[h, 4h]`` (LSTM) or
  ``[h, 4h+3]`` (GravesLSTM, peephole columns wFF, wOO, wGG last) and ``b`` ``[4h]`` are its
  consecutive slices, the matrices reshaped in Fortran order (``W[i, j] = params[i + j*nIn]``);
* gate blocks within every ``4h``: block input (layer activation), forget, output, input gate;
* ``layer.gradients`` has the same layout;
* GravesBidirectionalLSTM: ``WF, RWF, bF, WB, RWB, bB``; the Bidirectional wrapper: the
  forward layer's parameters, then the backward layer's (DL4J keys ``fW, fRW, fb, bW, bRW, bb``).

Threads. A layer keeps per-call state (the record of the last training pass, the streaming
and truncated-BPTT states, the gradients), so one layer object must not run two calls at once.
Every call that reads or changes that state (``forward``, ``backward``, ``rnn_time_step``,
``rnn_activate_using_stored_state``, ``rnn_set_previous_state``, ``rnn_clear_previous_state``,
``reset_parameters`` and assigning ``params``) holds the layer for its duration, without
waiting: a second thread calling into a layer that is in use gets
:class:`ConcurrentUseError` (a ``RuntimeError``: "layer is in use by another thread") at once,
and the layer is left exactly as the running call leaves it. Nothing is corrupted and nothing
blocks; the caller decides whether to retry, wait on its own lock, or use one layer per thread
(layers are cheap; share the weights by copying ``params``). The guard is per call: a training
step is two calls (``forward(x, training=True)`` then ``backward``), and another thread's
training ``forward`` in between replaces the record the ``backward`` uses, so give each thread
its own layer (or train through a ``Sequential``, whose ``fit_batch`` holds every layer for the
whole step). Writing into ``params`` / ``W`` / ``RW`` / ``b`` in place while a pass runs in
another thread is not detected (the pass may see old or new values). Passes on *different*
layers, or ``lstm_forward``/``lstm_backward`` calls sharing read-only weights, run in parallel
(the kernels release the GIL) and give bit for bit the results of running them one by one.
"""

from .._guard import ConcurrentUseError
from ..functional import ACTIVATIONS as LAYER_ACTIVATIONS
from ..functional import GATE_ACTIVATIONS
from ._base import (CACHE_MODES, WEIGHT_INITS, FlatParameterLayer, LayerMemoryReport,
                    UnsupportedOperationError, init_weights)
from .bidirectional import Bidirectional, BidirectionalBase, GravesBidirectionalLSTM
from .dense import DENSE_ACTIVATIONS, LOSS_FUNCTIONS, DenseLayer, OutputLayer, RnnOutputLayer
from .inference import GlobalPooling, SimpleRnn
from .lstm import LSTM, GravesLSTM, UnidirectionalLSTM

__all__ = [
    "GravesLSTM",
    "LSTM",
    "UnidirectionalLSTM",
    "GravesBidirectionalLSTM",
    "Bidirectional",
    "BidirectionalBase",
    "DenseLayer",
    "OutputLayer",
    "RnnOutputLayer",
    "SimpleRnn",
    "GlobalPooling",
    "FlatParameterLayer",
    "LayerMemoryReport",
    "UnsupportedOperationError",
    "ConcurrentUseError",
    "CACHE_MODES",
    "LAYER_ACTIVATIONS",
    "GATE_ACTIVATIONS",
    "DENSE_ACTIVATIONS",
    "LOSS_FUNCTIONS",
    "WEIGHT_INITS",
    "init_weights",
]
