"""``Sequential``: a stack of layers trained as one, with full or truncated BPTT (DL4J's
``MultiLayerNetwork``). The layers are ``lstmfast.layers``' (recurrent, dense and output layers),
the updaters ``lstmfast.updaters``'; both are importable from here too.

Conventions (DL4J's, where DL4J has one):

* Parameter layout: a ``Sequential`` owns one flat vector holding every layer's parameters in
  layer order (DL4J's ``MultiLayerNetwork.params()``), and the layers' arrays are views into
  it; likewise the gradients.
* Score: the output layer's (the sum of the per-example, per example and time step for
  sequences, losses, label mask applied, divided by the minibatch size: see
  ``lstmfast.layers.dense``), plus the L2 term ``0.5 * l2 * sum(w**2)`` over weights
  (``l2_bias`` for biases), as DL4J's ``calcL2``. The L2 term is added after the division (DL4J
  1.0's order; 0.9.x divided it by the minibatch size too, which makes the score inconsistent
  with the gradient it reports).
* Gradients: ``gradients`` is the exact gradient of that score, L2 included.
* Masks: the feature mask goes to the recurrent layers; when no label mask is given for
  sequence labels, the feature mask is used (DL4J propagates the feature mask to the output
  layer).
* Threads: as the layers (``lstmfast.layers``, "Threads"), every ``Sequential`` runs one call
  at a time; a call made while another thread is inside a call on the same network raises
  ``lstmfast.layers.ConcurrentUseError`` (a ``RuntimeError``) at once and changes nothing. A
  ``Sequential`` call holds the whole network (and so each of its layers) for its duration:
  ``fit_batch`` is one unit for other threads. While a network call (``output``, ``score``,
  ``compute_gradient_and_score``, ``fit_batch``) or a dense or output layer's product runs,
  every OpenBLAS copy in the process is held at one thread (``lstmfast._blas_threads``): the
  recurrent layers' passes split across ``lstmfast.set_num_threads`` threads, and an OpenBLAS
  helper thread woken by a dense layer's product would keep polling on a core they need. Each
  copy gets its own thread count back when the last such call ends.
"""

import numpy as np

from . import _blas_threads, _team
from ._checks import check_non_negative, check_size
from ._guard import Guarded, exclusive
from .layers import (DENSE_ACTIVATIONS, LOSS_FUNCTIONS, BidirectionalBase, DenseLayer,
                     FlatParameterLayer, GlobalPooling, OutputLayer, RnnOutputLayer, SimpleRnn,
                     UnidirectionalLSTM, UnsupportedOperationError)
from .functional import _side_by_side, _worth_a_thread
from .kernels import get_num_threads
from .layers.lstm import LSTM, GravesLSTM
from .updaters import Adam, Rollback, Sgd

__all__ = [
    "DenseLayer",
    "OutputLayer",
    "RnnOutputLayer",
    "SimpleRnn",
    "GlobalPooling",
    "Sequential",
    "Sgd",
    "Adam",
    "DENSE_ACTIVATIONS",
    "LOSS_FUNCTIONS",
]

# --------------------------------------------------------------------------------------
# the container


_RECURRENT_TYPES = (UnidirectionalLSTM, BidirectionalBase)
# the layers whose passes can run as a wavefront (their whole forward is one lstm_forward)
_WAVEFRONT_TYPES = (LSTM, GravesLSTM)


def _layer_call(layer, a, mask, training, using_stored_state, lengths, wavefront=None):
    """A layer's forward call in a network's pass, ``(method, args, kwargs)``: from the carried
    state (truncated BPTT), with lengths, or plain. wavefront: see _wavefront."""
    kwargs = {"mask": mask, "training": training}
    if wavefront is not None:
        kwargs["_wavefront"] = wavefront
    if using_stored_state and isinstance(layer, _RECURRENT_TYPES):
        return layer.rnn_activate_using_stored_state, (a,), dict(kwargs, store_last_for_tbptt=True)
    if lengths is not None and isinstance(layer, _RECURRENT_TYPES):
        return layer.forward, (a,), dict(kwargs, lengths=lengths)
    return layer.forward, (a,), kwargs


def _wavefront_possible(first, second, x, lengths):
    """Whether two consecutive layers run as a wavefront on input x: at two threads of
    lstmfast, two one-direction LSTM layers processing time forwards, of one dtype, the first's
    input a sequence [minibatch, nIn, T] (T >= 2) without lengths, each pass large enough to
    be worth a thread of its own (functional._worth_a_thread)."""
    if (lengths is not None or get_num_threads() != 2
            or type(first) not in _WAVEFRONT_TYPES or type(second) not in _WAVEFRONT_TYPES
            or not (first._process_forwards and second._process_forwards)
            or first.dtype != second.dtype or second.n_in != first.n_out):
        return False
    shape = np.shape(x)
    if len(shape) != 3 or shape[1] != first.n_in or shape[2] < 2:
        return False
    minibatch, steps = shape[0], shape[2]
    return (_worth_a_thread(minibatch, first.n_in, first.n_out, steps)
            and _worth_a_thread(minibatch, second.n_in, second.n_out, steps))


def _wavefront(first, second, x, mask, training, using_stored_state):
    """Two consecutive LSTM layers' passes side by side, each on one thread (the second on a
    worker of lstmfast's team): the first writes its output into an array made here and counts
    the steps it has written, the second reads each step of it as soon as that is counted.
    Where a time step of one layer, split across two threads, left the second core idle at
    every step's barrier, each core now runs one layer's steps with no barrier; the second
    layer runs a step behind the first. The same bits as one layer after the other. If the
    first call fails, the second stops at its next step (functional._side_by_side) and the
    first error is raised."""
    minibatch, steps = np.shape(x)[0], np.shape(x)[2]
    between = np.empty((minibatch, first.n_out, steps), dtype=first.dtype, order="F")
    counter = np.zeros(1, dtype=np.intp)
    calls = (_layer_call(first, x, mask, training, using_stored_state, None,
                         {"out": between, "_steps_done": counter}),
             _layer_call(second, between, mask, training, using_stored_state, None,
                         {"_steps_ready": counter}))
    return _side_by_side(_team.call_pair, *calls)[1]


class Sequential(Guarded):
    """A stack of layers with one flat parameter vector, like DL4J's MultiLayerNetwork.

    ``Sequential(layers, *, updater=None, l2=0.0, l2_bias=0.0, tbptt_forward_length=None,
    tbptt_backward_length=None)``. ``updater``: an ``Sgd`` or ``Adam`` (default ``Sgd(0.1)``).
    With ``tbptt_forward_length`` set, ``fit_batch`` trains with truncated BPTT as DL4J's
    ``doTruncatedBPTT``: windows of that many steps, each a forward pass from the state carried
    from the previous window, a backward pass of ``tbptt_backward_length`` steps (default: the
    forward length) and an update; the state is cleared before and after each minibatch.

    The layers' parameters and gradients move into the container's flat vectors (values kept);
    ``layer.params``, ``layer.W`` etc. are views into ``net.params`` from then on.

    Threads: one call at a time. A call made while another thread is inside a call on the
    network raises ``lstmfast.layers.ConcurrentUseError`` ("network is in use by another
    thread") at once and changes nothing; ``fit_batch`` holds the network for the whole step
    (forward, backward and update). Calling one of its layers directly from another thread
    while the network runs makes whichever of the two reaches that layer second fail with the
    same error (a network call may then stop part-way: don't do this).
    """

    guard_noun = "network"

    def __init__(self, layers, *, updater=None, l2=0.0, l2_bias=0.0, tbptt_forward_length=None,
                 tbptt_backward_length=None):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        first_place = {}
        for i, layer in enumerate(layers):
            if not isinstance(layer, FlatParameterLayer):
                raise TypeError(f"layer {i} is not an lstmfast layer: {type(layer).__name__}")
            if layer.owner is not None:
                raise ValueError(f"layer {i} ({layer!r}) already belongs to another Sequential; create a new layer")
            if id(layer) in first_place:
                # its parameters would be bound to two slices of the flat vector, and its second
                # pass would replace the first's record: a wrong gradient without an error
                raise ValueError(f"layer {i} is layer {first_place[id(layer)]} again ({layer!r}): a "
                                 f"layer keeps its own parameters and one pass's record, so it can "
                                 f"have one place in a Sequential; create a new layer (or a "
                                 f"copy.deepcopy of it) for each place")
            first_place[id(layer)] = i
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ValueError(f"layer {i} ({layers[i]!r}) has n_in = {layers[i].n_in} but layer {i - 1} "
                                 f"({layers[i - 1]!r}) has n_out = {layers[i - 1].n_out}")
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) != 1:
            raise TypeError(f"all layers must have the same dtype; got {', '.join(sorted(d.name for d in dtypes))}")
        for i, layer in enumerate(layers[:-1]):
            if isinstance(layer, OutputLayer):
                raise ValueError(f"layer {i} is an output layer; output layers must come last")
        self.layers = layers
        self.dtype = layers[0].dtype
        self.updater = updater if updater is not None else Sgd(0.1)
        if not hasattr(self.updater, "apply"):
            raise TypeError(f"updater must be an Sgd or Adam instance; got {type(updater).__name__}")
        self.l2 = check_non_negative("l2", l2)
        self.l2_bias = check_non_negative("l2_bias", l2_bias)
        if tbptt_forward_length is None and tbptt_backward_length is not None:
            raise ValueError("tbptt_backward_length needs tbptt_forward_length (truncated BPTT is off)")
        self.tbptt_forward_length = (None if tbptt_forward_length is None
                                     else check_size("tbptt_forward_length", tbptt_forward_length))
        self.tbptt_backward_length = (self.tbptt_forward_length if tbptt_backward_length is None
                                      else check_size("tbptt_backward_length", tbptt_backward_length))

        total = sum(layer.num_params() for layer in layers)
        self._param_array = np.zeros(total, dtype=self.dtype)
        self._gradient_array = np.zeros(total, dtype=self.dtype)
        self._bind_layers()
        weight_mask = np.concatenate([layer.weight_param_mask() for layer in layers])
        self._l2_coefficients = np.where(weight_mask, self.l2, self.l2_bias).astype(self.dtype)
        self.last_window_scores = []
        #: dL/dx of the network input from the last backward pass (the score's gradient)
        self.input_gradient = None

    def _bind_layers(self):
        """Move each layer's parameters and gradients into its slice of this network's flat
        vectors and make the network their owner."""
        offset = 0
        for layer in self.layers:
            n = layer.num_params()
            layer.bind_storage(self._param_array[offset:offset + n],
                                self._gradient_array[offset:offset + n], owner=self)
            offset += n

    def __setstate__(self, state):
        super().__setstate__(state)
        # pickling and deep copies give each layer flat arrays of its own: bind them to this
        # network's vectors again, as the constructor did
        self._bind_layers()

    # ---- parameters --------------------------------------------------------------------
    def num_params(self):
        return self._param_array.shape[0]

    @property
    def params(self):
        """Every layer's parameters, one flat vector in DL4J order (layers' arrays are views)."""
        return self._param_array

    @params.setter
    @exclusive
    def params(self, values):
        arr = np.asarray(values)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"params must be a real array, got dtype {arr.dtype}")
        if arr.size != self.num_params() or arr.ndim > 2 or (arr.ndim == 2 and 1 not in arr.shape):
            raise ValueError(f"params: expected a flat array of {self.num_params()} values, got shape {arr.shape}")
        self._param_array[...] = arr.reshape(-1)

    @property
    def gradients(self):
        """Gradient of the score with respect to ``params`` (same layout), from the last
        ``compute_gradient_and_score`` / ``fit_batch`` (last window, with truncated BPTT)."""
        return self._gradient_array

    def param_table(self):
        """DL4J keys (``"0_W"``, ``"0_RW"``, ...) → views into ``params``."""
        return {f"{i}_{key}": view for i, layer in enumerate(self.layers) for key, view in layer.param_table().items()}

    # ---- passes ------------------------------------------------------------------------
    @property
    def output_layer(self):
        last = self.layers[-1]
        if not isinstance(last, OutputLayer):
            raise ValueError(f"the last layer ({last!r}) is not an OutputLayer/RnnOutputLayer: "
                             f"the network has no loss to score or fit")
        return last

    def _check_features(self, x):
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"x must be a real array, got dtype {arr.dtype}")
        return arr

    def _feed_forward(self, x, mask, training, using_stored_state=False, lengths=None):
        a = self._check_features(x)
        layers = self.layers
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _wavefront_possible(layers[i], layers[i + 1], a, lengths):
                a = _wavefront(layers[i], layers[i + 1], a, mask, training, using_stored_state)
                i += 2
                continue
            method, args, kwargs = _layer_call(layers[i], a, mask, training, using_stored_state,
                                               lengths)
            a = method(*args, **kwargs)
            i += 1
        return a

    @exclusive
    @_blas_threads.holding
    def output(self, x, mask=None, *, lengths=None):
        """Inference pass: the last layer's activations. ``lengths`` ``[minibatch]`` (instead
        of a mask) goes to every recurrent layer: each example's steps are its first
        ``lengths[m]``, and a recurrent layer's output is zero after them (the layers after it
        see those zeros, as ONNX's ``sequence_lens`` gives them)."""
        return self._feed_forward(x, mask, training=False, lengths=lengths)

    def _regularisation_score(self):
        if self.l2 == 0.0 and self.l2_bias == 0.0:
            return 0.0
        p = self._param_array.astype(np.float64)
        return 0.5 * float(np.dot(self._l2_coefficients.astype(np.float64) * p, p))

    def _effective_label_mask(self, labels, mask, label_mask, lengths=None):
        if label_mask is None and mask is not None and np.ndim(labels) == 3:
            return mask
        if label_mask is None and lengths is not None and np.ndim(labels) == 3:
            # the steps past each length carry no label (as a prefix mask would say)
            steps = np.shape(labels)[2]
            return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(np.float64)
        return label_mask

    @exclusive
    @_blas_threads.holding
    def score(self, x, y, mask=None, label_mask=None, *, lengths=None):
        """Loss of the (inference) output, DL4J's convention: sum over examples (and time
        steps) / minibatch + L2 term. ``lengths`` as in ``output``; without a label mask, the
        steps past each length carry no label."""
        out_layer = self.output_layer
        self._feed_forward(x, mask, training=False, lengths=lengths)
        return out_layer.compute_score(y, self._effective_label_mask(y, mask, label_mask, lengths)) \
            + self._regularisation_score()

    def _backpropagate(self, y, mask, label_mask, tbptt_length, lengths=None):
        out_layer = self.output_layer
        label_mask = self._effective_label_mask(y, mask, label_mask, lengths)
        score, epsilon = out_layer.score_and_backward(y, label_mask)
        score += self._regularisation_score()
        for layer in reversed(self.layers[:-1]):
            epsilon = layer.backward(epsilon, tbptt_length=tbptt_length)
        self.input_gradient = epsilon
        if self.l2 != 0.0 or self.l2_bias != 0.0:
            self._gradient_array += self._l2_coefficients * self._param_array
        return score

    @exclusive
    @_blas_threads.holding
    def compute_gradient_and_score(self, x, y, mask=None, label_mask=None, *, lengths=None):
        """Full BPTT: fills ``gradients`` with the gradient of ``score`` and returns the score."""
        self._feed_forward(x, mask, training=True, lengths=lengths)
        return self._backpropagate(y, mask, label_mask, None, lengths)

    @exclusive
    @_blas_threads.holding
    def fit_batch(self, x, y, mask=None, label_mask=None, *, lengths=None):
        """One training step on a minibatch (or, with truncated BPTT, one step per window).
        Returns the score (DL4J's: with truncated BPTT, the last window's score; all window
        scores are in ``last_window_scores``). ``lengths`` as in ``output`` (full BPTT only)."""
        if lengths is not None and self.tbptt_forward_length is not None:
            raise ValueError("fit_batch: lengths with truncated BPTT is not available (the "
                             "windows' steps would differ per example); pass a mask instead")
        if self.tbptt_forward_length is None:
            score = self.compute_gradient_and_score(x, y, mask, label_mask, lengths=lengths)
            self.updater.apply(self._param_array, self._gradient_array)
            self.last_window_scores = [score]
            return score
        return self._fit_truncated_bptt(x, y, mask, label_mask)

    def _fit_truncated_bptt(self, x, y, mask, label_mask):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, BidirectionalBase):
                raise UnsupportedOperationError(
                    f"truncated BPTT is not possible with bidirectional layers (layer {i}: {layer!r})")
        x = self._check_features(x)
        y_arr = np.asarray(y)
        if x.ndim != 3 or y_arr.ndim != 3:
            raise ValueError(f"truncated BPTT needs sequences: x [minibatch, nIn, T] and labels "
                             f"[minibatch, nOut, T]; got shapes {x.shape} and {y_arr.shape}")
        if y_arr.shape[2] != x.shape[2]:
            raise ValueError(f"labels have {y_arr.shape[2]} time steps but x has {x.shape[2]}")
        length = x.shape[2]
        window = self.tbptt_forward_length
        n_windows = -(-length // window)
        label_mask = self._effective_label_mask(y_arr, mask, label_mask)
        self.rnn_clear_previous_state()
        scores = []
        # a minibatch is one step for the caller: interrupted (or failing) in a later window,
        # it leaves the parameters and the updater as they were before the first
        rollback = Rollback(self._param_array, self.updater)
        try:
            for k in range(n_windows):
                start, stop = k * window, min((k + 1) * window, length)
                window_mask = None if mask is None else np.asarray(mask)[:, start:stop]
                window_label_mask = None if label_mask is None else np.asarray(label_mask)[:, start:stop]
                self._feed_forward(x[:, :, start:stop], window_mask, training=True, using_stored_state=True)
                score = self._backpropagate(y_arr[:, :, start:stop], window_mask, window_label_mask,
                                            self.tbptt_backward_length)
                self.updater.apply(self._param_array, self._gradient_array)
                scores.append(score)
        except BaseException:
            rollback.restore()
            raise
        finally:
            self.rnn_clear_previous_state()
        self.last_window_scores = scores
        return scores[-1]

    # ---- streaming ---------------------------------------------------------------------
    @exclusive
    def rnn_time_step(self, x, mask=None):
        """Stream through the network from the stored states (DL4J's ``rnnTimeStep``): x
        ``[minibatch, nIn]`` → ``[minibatch, nOut]``, ``[minibatch, nIn, T]`` → ``[..., T]``."""
        a = self._check_features(x)
        if not any(isinstance(layer, _RECURRENT_TYPES) for layer in self.layers):
            raise ValueError("rnn_time_step: the network has no recurrent layer (use output)")
        one_step = a.ndim == 2
        if one_step:  # as DL4J: a single step [minibatch, nIn] is the sequence [minibatch, nIn, 1]
            a = a[:, :, np.newaxis]
        for layer in self.layers:
            if isinstance(layer, _RECURRENT_TYPES):
                a = layer.rnn_time_step(a, mask=mask)
            else:
                a = layer.forward(a, mask=mask, training=False)
        return a[:, :, 0] if one_step else a

    @exclusive
    def rnn_clear_previous_state(self):
        """Clear every layer's streaming and truncated-BPTT state."""
        for layer in self.layers:
            layer.rnn_clear_previous_state()

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], {self.num_params()} parameters)"

