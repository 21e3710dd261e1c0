"""Two-direction layers: GravesBidirectionalLSTM (directions summed) and the Bidirectional
wrapper (concat, add, mul, average), one flat parameter vector for both directions."""

import numpy as np

from .. import _team
from .._checks import check_choice, check_size, seed_sequence
from .._guard import exclusive
from ..functional import _side_by_side, _worth_a_thread
from ..kernels import get_num_threads
from ._base import (FlatParameterLayer, UnsupportedOperationError, _build_memory_report,
                    _check_mask_or_lengths)
from .lstm import GravesLSTM, UnidirectionalLSTM


# --------------------------------------------------------------------------------------
# bidirectional layers


#: How a bidirectional layer combines its two directions' outputs (DL4J's modes).
BIDIRECTIONAL_MODES = ("concat", "add", "mul", "average")


def _side_by_side_for(layer, shape):
    """Whether `layer`'s directions run side by side on an input or dL/d(output) of this shape
    ([minibatch, *, T] or [minibatch, *]; another shape is left to the directions to refuse):
    at two threads of lstmfast, when each direction's pass is large enough
    (functional._worth_a_thread)."""
    if get_num_threads() != 2 or len(shape) not in (2, 3):
        return False
    steps = shape[2] if len(shape) == 3 else 1
    return _worth_a_thread(shape[0], layer.n_in, layer.forward_layer.n_out, steps)


def _directions(side_by_side, calls):
    """The two directions' calls, ``(method, args, kwargs)`` each, and their results in order:
    side by side (each direction's pass on one thread, one on a worker of the team, with no
    barrier per step between them: each call runs whatever the other does, and an error of
    either is raised once both have returned), else one after the other (an error stops
    there)."""
    if side_by_side:
        return _side_by_side(_team.call_pair, *calls)
    return [method(*args, **kwargs) for method, args, kwargs in calls]


def combine_directions(mode, forward, backward):
    """The two directions' outputs ``[mb, n, T]`` combined by ``mode``: concatenated along the
    feature axis, or added, multiplied or averaged ("add" and "average" write into ``forward``)."""
    if mode == "add":
        return np.add(forward, backward, out=forward)
    if mode == "average":
        out = np.add(forward, backward, out=forward)
        out *= 0.5
        return out
    if mode == "mul":
        return forward * backward
    return np.concatenate([forward, backward], axis=1)


class BidirectionalBase(FlatParameterLayer):
    """Two directions with separate parameters, the forward direction's first in the flat array."""

    mode = "add"

    def _setup_directions(self, forward_layer, backward_layer):
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        backward_layer._process_forwards = False
        backward_layer._in_bidirectional = True
        self.n_in = forward_layer.n_in
        self.dtype = forward_layer.dtype
        self.n_out = 2 * forward_layer.n_out if self.mode == "concat" else forward_layer.n_out
        n = self.num_params()
        param_array = np.empty(n, dtype=self.dtype)
        gradient_array = np.zeros(n, dtype=self.dtype)
        self._param_array = param_array
        self._gradient_array = gradient_array
        self._split_storage()
        self._outputs = None

    def num_params(self):
        return self.forward_layer.num_params() + self.backward_layer.num_params()

    def _split_storage(self):
        n_forward = self.forward_layer.num_params()
        self.forward_layer.bind_storage(self._param_array[:n_forward], self._gradient_array[:n_forward])
        self.backward_layer.bind_storage(self._param_array[n_forward:], self._gradient_array[n_forward:])

    def _build_views(self):
        self._split_storage()

    def _move_storage(self, param_view, gradient_view):
        # the directions' current values are copied into the new storage by their own bind_storage
        self._param_array = param_view
        self._gradient_array = gradient_view
        self._split_storage()

    def weight_param_mask(self):
        return np.concatenate([self.forward_layer.weight_param_mask(), self.backward_layer.weight_param_mask()])

    @property
    def activation(self):
        return self.forward_layer.activation

    @property
    def gate_activation(self):
        return self.forward_layer.gate_activation

    @property
    def peepholes(self):
        return self.forward_layer.peepholes

    # ---- passes ----------------------------------------------------------------------
    @exclusive
    def forward(self, x, mask=None, training=False, *, lengths=None):
        """Both directions over the whole sequence (the backward one from the last step to
        the first, with the same mask), combined by ``mode``. With ``lengths`` ``[minibatch]``
        instead of a mask, the backward direction starts each example at its own last valid
        step, and the output past each length is zero."""
        _check_mask_or_lengths(self, "forward", mask, lengths)
        layers = (self.forward_layer, self.backward_layer)
        saved = [layer._pass_state() for layer in layers]
        try:
            output_forward, output_backward = _directions(
                _side_by_side_for(self, np.shape(x)),
                [(layer.forward, (x,), {"mask": mask, "training": training, "lengths": lengths})
                 for layer in layers])
        except BaseException:
            # e.g. Ctrl-C during one direction: keep the directions' records consistent
            for layer, state in zip(layers, saved):
                layer._restore_pass_state(state)
            raise
        self._outputs = (output_forward, output_backward) if (training and self.mode == "mul") else None
        # the backward pass reads the kernels' cache, never ForwardResult.output: the forward
        # direction's output array may take the combination
        return combine_directions(self.mode, output_forward, output_backward)

    @exclusive
    def backward(self, epsilon, tbptt_length=None):
        """Split ``epsilon`` between the directions as ``mode`` requires, back-propagate both,
        and return the sum of their dL/dx. Truncated BPTT is not possible (as in DL4J)."""
        if tbptt_length is not None:
            raise UnsupportedOperationError(
                f"{type(self).__name__}.backward: truncated BPTT (tbptt_length={tbptt_length}) is not possible "
                f"with bidirectional layers: the backward direction needs the whole sequence")
        eps = np.asarray(epsilon)
        h = self.forward_layer.n_out
        if self.mode == "concat":
            if eps.ndim < 2 or eps.shape[1] != 2 * h:
                raise ValueError(f"{type(self).__name__}.backward: epsilon must be [minibatch, {2 * h}, T] "
                                 f"(both directions concatenated); got shape {eps.shape}")
            eps_forward, eps_backward = eps[:, :h], eps[:, h:]
        elif self.mode == "add":
            eps_forward = eps_backward = eps
        elif self.mode == "average":
            eps_forward = eps_backward = eps * 0.5
        else:  # mul
            if self._outputs is None:
                raise ValueError(f"{type(self).__name__}.backward: no training forward pass to back-propagate; "
                                 f"call forward(x, training=True) first")
            output_forward, output_backward = self._outputs
            if eps.shape != output_forward.shape:
                raise ValueError(f"{type(self).__name__}.backward: epsilon must have shape "
                                 f"{output_forward.shape}; got {eps.shape}")
            eps_forward = eps * output_backward
            eps_backward = eps * output_forward
        layers = (self.forward_layer, self.backward_layer)
        side_by_side = _side_by_side_for(self, np.shape(eps_forward))
        # what an error in either direction must put back: one after the other, the backward
        # direction never ran when the forward one failed (an interrupted backward pass leaves
        # its own gradients as they were); side by side, either may have finished
        saved = [(layer, layer.gradients.copy(), layer.state_gradients)
                 for layer in (layers if side_by_side else layers[:1])]
        try:
            dx, dx_backward = _directions(
                side_by_side, [(layer.backward, (eps,), {})
                               for layer, eps in zip(layers, (eps_forward, eps_backward))])
        except BaseException:
            # e.g. Ctrl-C during one direction: leave the gradients as they were
            for layer, gradients, state_gradients in saved:
                layer.gradients[...] = gradients
                layer.state_gradients = state_gradients
            raise
        return np.add(dx, dx_backward, out=dx)

    # ---- streaming is impossible ---------------------------------------------------------
    def _refuse(self, what):
        raise UnsupportedOperationError(
            f"{type(self).__name__}.{what}: bidirectional layers cannot be stepped through time or "
            f"trained with truncated BPTT; they need the whole sequence at once (use forward)")

    def rnn_time_step(self, x, mask=None, *, lengths=None):
        self._refuse("rnn_time_step")

    def rnn_get_previous_state(self):
        self._refuse("rnn_get_previous_state")

    def rnn_set_previous_state(self, h, c):
        self._refuse("rnn_set_previous_state")

    def rnn_activate_using_stored_state(self, x, mask=None, training=True, store_last_for_tbptt=True,
                                        *, lengths=None):
        self._refuse("rnn_activate_using_stored_state")

    def rnn_clear_previous_state(self):
        """Nothing to clear (bidirectional layers keep no state), as in DL4J."""

    # ---- memory ------------------------------------------------------------------------
    def memory_report(self, ts_length, minibatch=1, updater=None):
        """The directions' report doubled, as the seed's bidirectional ``getMemoryReport``."""
        ts_length = check_size("ts_length", ts_length)
        minibatch = check_size("minibatch", minibatch)
        return _build_memory_report(self, [self.forward_layer, self.backward_layer], ts_length, minibatch,
                                    updater, factor=2)

    def _allocated_bytes(self, ts_length, minibatch):
        one = self.forward_layer._allocation_parts(ts_length, minibatch)
        output = one["output"]
        # "add"/"average" combine in place, "mul" makes one new array, "concat" a double one
        combine = {"add": 0, "average": 0, "mul": output, "concat": 2 * output}[self.mode]
        epsilon_split = {"add": 0, "concat": 0, "average": output, "mul": 2 * output}[self.mode]
        records = 2 * (one["dropped_weights"] + one["record"])
        # backward keeps a copy of the gradients it may have to put back (of both directions
        # when they run side by side)
        saved_gradients = one["parameter_gradients"]
        if _side_by_side_for(self, (minibatch, self.n_in, ts_length)):
            # the directions side by side (_directions): both passes' arrays at once
            inference = max(2 * one["inference"], 2 * output + combine)
            training = records + max(combine, 2 * one["training_workspace"],
                                     epsilon_split + 2 * (saved_gradients + one["backward_peak"]))
            return {"inference": inference, "training": training}
        # inference: the forward direction's output stays alive while the backward direction
        # runs
        inference = max(output + one["inference"], 2 * output + combine)
        # training: both records live through both backward passes; the combined output of
        # "concat"/"mul" is the caller's (freed after forward when the caller drops it); the
        # forward direction's dL/dx and state gradients live while the backward direction runs
        retained_after_backward = one["input_gradient"] + one["state_gradients"]
        training = records + max(combine, epsilon_split + saved_gradients
                                 + retained_after_backward + one["backward_peak"])
        return {"inference": inference, "training": training}


class GravesBidirectionalLSTM(BidirectionalBase):
    """DL4J's GravesBidirectionalLSTM: two Graves (peephole) LSTM directions with separate
    parameters; output = forward direction + backward direction.

    Flat order ``WF, RWF, bF, WB, RWB, bB``; ``layer.WF`` etc. are views.

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    mode = "add"

    def __init__(self, n_in, n_out, *, activation="tanh", gate_activation="sigmoid",
                 forget_gate_bias_init=1.0, weight_init="xavier", dtype=np.float32, seed=None,
                 drop_connect=None):
        sequence = seed_sequence(seed)
        forward_seed, backward_seed = sequence.spawn(2)
        options = dict(activation=activation, gate_activation=gate_activation,
                       forget_gate_bias_init=forget_gate_bias_init, weight_init=weight_init, dtype=dtype,
                       drop_connect=drop_connect)
        self.seed = seed
        self._setup_directions(GravesLSTM(n_in, n_out, seed=forward_seed, **options),
                               GravesLSTM(n_in, n_out, seed=backward_seed, **options))

    @property
    def WF(self):
        return self.forward_layer.W

    @property
    def RWF(self):
        return self.forward_layer.RW

    @property
    def bF(self):
        return self.forward_layer.b

    @property
    def WB(self):
        return self.backward_layer.W

    @property
    def RWB(self):
        return self.backward_layer.RW

    @property
    def bB(self):
        return self.backward_layer.b

    def param_table(self):
        f, b = self.forward_layer, self.backward_layer
        return {"WF": f.W, "RWF": f.RW, "bF": f.b, "WB": b.W, "RWB": b.RW, "bB": b.b}

    def gradient_table(self):
        f, b = self.forward_layer, self.backward_layer
        return {"WF": f.W_gradient, "RWF": f.RW_gradient, "bF": f.b_gradient,
                "WB": b.W_gradient, "RWB": b.RW_gradient, "bB": b.b_gradient}

    def _describe(self):
        f = self.forward_layer
        return (f"GravesBidirectionalLSTM(n_in={self.n_in}, n_out={self.n_out}, activation={f.activation!r}, "
                f"gate_activation={f.gate_activation!r}, dtype={self.dtype.name})")


class Bidirectional(BidirectionalBase):
    """DL4J's ``Bidirectional`` wrapper around an LSTM or GravesLSTM.

    ``Bidirectional(layer, mode="concat", *, seed=None)``: ``layer`` becomes the forward
    direction (it keeps its parameters, which move into the wrapper's flat array); the backward
    direction is a new layer of the same configuration, initialised from ``seed`` (default: a
    seed derived from the wrapped layer's). Modes: "concat" (forward direction first, output
    ``[minibatch, 2h, T]``), "add", "mul", "average".

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    def __setstate__(self, state):
        super().__setstate__(state)
        self.forward_layer._owner = self

    def __init__(self, layer, mode="concat", *, seed=None):
        if not isinstance(layer, UnidirectionalLSTM):
            raise TypeError(f"Bidirectional wraps a GravesLSTM or LSTM layer; got {type(layer).__name__}")
        if layer.owner is not None:
            raise ValueError(f"Bidirectional: the layer {layer!r} already belongs to another container "
                             f"(a Sequential or a bidirectional layer); wrap a new layer")
        if layer.reverse:
            raise ValueError("Bidirectional: the layer processes time in reverse; wrap a forward layer "
                             "(the backward direction is made from it)")
        layer._owner = self
        self.mode = check_choice("mode", mode, BIDIRECTIONAL_MODES)
        if seed is None:
            seed = layer._seed_sequence.spawn(1)[0]
        self.seed = seed
        self._setup_directions(layer, layer._clone_configuration(seed_sequence(seed)))

    def param_table(self):
        table = {"f" + k: v for k, v in self.forward_layer.param_table().items()}
        table.update({"b" + k: v for k, v in self.backward_layer.param_table().items()})
        return table

    def gradient_table(self):
        table = {"f" + k: v for k, v in self.forward_layer.gradient_table().items()}
        table.update({"b" + k: v for k, v in self.backward_layer.gradient_table().items()})
        return table

    def _describe(self):
        return f"Bidirectional({self.forward_layer._describe()}, mode={self.mode!r})"
