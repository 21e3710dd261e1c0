"""PyTorch modules backed by lstmfast's kernels (the only part of lstmfast that imports torch).

``lstmfast.torch.LSTM`` is a ``torch.nn.LSTM`` (a subclass) whose forward pass runs lstmfast's
kernels: the same constructor (``input_size, hidden_size, num_layers=1, bias=True,
batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None``),
parameters (``weight_ih_l{k}[_reverse]``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, so ``load_state_dict`` works both ways), ``all_weights``, ``_flat_weights``,
``flatten_parameters()``, inputs, outputs and errors::

    import lstmfast.torch
    lstm = lstmfast.torch.LSTM(10, 20, 2, bidirectional=True)      # was torch.nn.LSTM(...)
    lstm.load_state_dict(nn_lstm.state_dict())
    out, (h_n, c_n) = lstm(x, (h_0, c_0))

lstmfast's own options are keyword-only: ``peepholes=True`` (a parameter
``weight_peephole_l{k}[_reverse]`` ``[3, hidden_size]``, rows input/forget/output gate),
``activation`` (cell), ``gate_activation``. ``GravesLSTM`` is the module with peepholes and
DL4J's initialisation; ``GravesBidirectionalLSTM`` adds its two directions as DL4J does
(nn.LSTM concatenates). ``to_layer`` / ``from_layer`` convert to / from lstmfast's NumPy layers
(DL4J's flat parameter layout). State dicts of earlier versions of these modules (one flat
parameter ``params`` in that layout) load into the named parameters; one of another size is
refused, naming the key and the sizes.

The kernels read the weights in DL4J's gate order and layout: each call derives that copy from
the parameters (a reordering copy, O(parameters), small beside the O(T * batch * parameters)
pass: at (T, batch, input, hidden) = (50, 32, 64, 128) float32, 0.2% of a training step's
instructions and 0.6% of an inference pass's). It is not cached per parameter version: writes
through ``.data`` (``p.data.mul_(...)``, target-network updates, older optimizers) bypass
torch's ``_version`` counter and keep the storage, writes through NumPy views of
``p.detach().numpy()`` bypass torch altogether, so no cheap key sees them, and checking the
values reads as much memory as the copy. In a training step the derived copy is also the
private one the backward pass needs, which a cache would have to make anyway. Every
way of changing the parameters (optimizer steps, in-place writes under ``no_grad``, ``.data``
writes or assignment, ``load_state_dict``) reaches the next call, compiled or not.

Autograd: gradients reach the input, every parameter and ``(h_0, c_0)``; the kernels are
differentiable once, so ``create_graph=True`` (double backward) raises
:class:`DoubleBackwardError`.

``PackedSequence`` inputs (sorted or not) are padded once and run one pass per layer and
direction with each sequence's length: the kernels skip the padding steps, each sequence ends
(in each direction) at its own last valid step, as nn.LSTM's. Dropout between layers draws
other masks than nn.LSTM's (which drops on the packed data).

``proj_size > 0`` (LSTMP) is computed by the kernels' projection: ``weight_hr_l{k}``
parameters, ``h_n`` ``[layers * directions, batch, proj_size]``, as nn.LSTM.

Not computed (raise :class:`UnsupportedError`): devices other than the CPU, dtypes other than
float32 and float64.

Compilers: each layer and direction is one call of the ``torch.library`` custom op
``lstmfast::lstm_layer`` (fake kernel and autograd registered), so ``torch.compile(model,
fullgraph=True)`` traces a model using these modules in one graph (Dynamo refuses plain
nn.LSTM modules; these are let through), and ``torch.jit.trace`` records the op calls: the
saved file loads with ``torch.jit.load`` in any process that has imported ``lstmfast.torch``.
A traced graph keeps what a backward pass needs on every call (the tracer cannot record
"only under grad").

Threads: see :func:`set_blas_threads` (the kernels' BLAS runs single-threaded during the
modules' calls by default, beside PyTorch's own pool) and :func:`set_team_threads` (the
kernels' time loops run on PyTorch's own OpenMP workers while its pool has more than one thread:
its workers spin on the cores after each of its operations, and a second pool would fight them;
with two threads there, a bidirectional layer's two directions run side by side, one on each).
"""

from ._function import DoubleBackwardError, LSTMFunction, lstm
from ._modules import (LSTM, GravesBidirectionalLSTM, GravesLSTM, InputTypeError,
                       UnsupportedError)
from ._threads import (_blas_pools, _scipy_blas_controller, get_blas_threads, get_team_threads,
                       set_blas_threads, set_team_threads)

__all__ = ["LSTM", "GravesLSTM", "GravesBidirectionalLSTM", "LSTMFunction",
           "lstm", "set_blas_threads", "get_blas_threads", "set_team_threads",
           "get_team_threads", "DoubleBackwardError",
           "UnsupportedError", "InputTypeError", "_blas_pools", "_scipy_blas_controller"]
