"""One-direction LSTM layers: GravesLSTM (peepholes) and LSTM, with streaming and truncated-BPTT
state."""

import numbers

import numpy as np

from ..functional import ACTIVATIONS as LAYER_ACTIVATIONS
from ..functional import (GATE_ACTIVATIONS, bind_stream_step, lstm_backward, lstm_forward,
                          problem_size_ok)
from .._checks import check_choice, check_dtype, check_size, seed_sequence
from .._guard import busy_error, exclusive, in_use_lock
from ._base import (WEIGHT_INITS, FlatParameterLayer, UnsupportedOperationError, _as_state,
                    _build_memory_report, _check_mask_or_lengths, _lstm_pass_allocations,
                    init_weights)


# --------------------------------------------------------------------------------------
# one-direction LSTM layers


class UnidirectionalLSTM(FlatParameterLayer):
    """Shared implementation of GravesLSTM (peepholes) and LSTM (no peepholes)."""

    peepholes = True

    def __init__(self, n_in, n_out, *, activation="tanh", gate_activation="sigmoid",
                 forget_gate_bias_init=1.0, weight_init="xavier", dtype=np.float32, seed=None,
                 drop_connect=None, reverse=False):
        if not isinstance(reverse, (bool, np.bool_)):
            raise TypeError(f"reverse: expected True or False, got "
                            f"{type(reverse).__name__} {reverse!r:.60}")
        reverse = bool(reverse)
        self.n_in = check_size("n_in", n_in)
        self.n_out = check_size("n_out", n_out)
        self.activation = check_choice("activation", activation, LAYER_ACTIVATIONS)
        self.gate_activation = check_choice("gate_activation", gate_activation, GATE_ACTIVATIONS)
        if not isinstance(forget_gate_bias_init, numbers.Real) or isinstance(forget_gate_bias_init, bool):
            raise TypeError(f"forget_gate_bias_init must be a real number, got {forget_gate_bias_init!r}")
        self.forget_gate_bias_init = float(forget_gate_bias_init)
        self.weight_init = check_choice("weight_init", weight_init, WEIGHT_INITS)
        self.dtype = check_dtype(dtype)
        if drop_connect is not None:
            if not isinstance(drop_connect, numbers.Real) or isinstance(drop_connect, bool) \
                    or not 0.0 < float(drop_connect) <= 1.0:
                raise ValueError(f"drop_connect must be None (off) or the probability of keeping a weight, "
                                 f"in (0, 1]; got {drop_connect!r}")
            drop_connect = float(drop_connect)
        self.drop_connect = drop_connect
        self.seed = seed
        self._seed_sequence = seed_sequence(seed)
        init_seq, drop_seq = self._seed_sequence.spawn(2)
        self._drop_connect_rng = np.random.default_rng(drop_seq)
        #: direction in which the kernels process time (False for reverse=True, and for the
        #: backward direction of a bidirectional layer)
        self._process_forwards = not reverse

        self._allocate_storage()
        self.reset_parameters(np.random.default_rng(init_seq))

        self._record = None                 # forward record of the last training pass
        self.drop_connect_mask = None       # keep-mask of the input weights in that pass
        self.state_gradients = None         # (dL/dh0, dL/dc0) of the last backward pass
        self._stream_state = None           # rnnTimeStep state (h, c)
        self._tbptt_state = None            # tBpttStateMap (h, c)

    # ---- layout ----------------------------------------------------------------------
    def _recurrent_columns(self):
        return 4 * self.n_out + (3 if self.peepholes else 0)

    def _sizes(self):
        h = self.n_out
        return self.n_in * 4 * h, h * self._recurrent_columns(), 4 * h

    def num_params(self):
        return sum(self._sizes())

    def _views_of(self, flat):
        n_w, n_rw, n_b = self._sizes()
        h = self.n_out
        w = flat[:n_w].reshape((self.n_in, 4 * h), order="F")
        rw = flat[n_w:n_w + n_rw].reshape((h, self._recurrent_columns()), order="F")
        b = flat[n_w + n_rw:n_w + n_rw + n_b]
        return w, rw, b

    # rnn_time_step's bound step (functional.bind_stream_step over W, RW, b and the stored state):
    # dropped whenever one of those is rebound, so that it never runs on stale arrays
    _transient_attributes = FlatParameterLayer._transient_attributes + ("_stream_plan",)

    def _drop_stream_plan(self):
        plan = self.__dict__.pop("_stream_plan", None)
        if plan is not None:
            plan.invalidate()

    @property
    def _stream_state(self):
        return self.__dict__.get("_stream_state_arrays")

    @_stream_state.setter
    def _stream_state(self, state):
        self._drop_stream_plan()
        self.__dict__["_stream_state_arrays"] = state

    def __setstate__(self, state):
        state = dict(state)
        # pickles made before the stored state became a property
        if "_stream_state" in state:
            state["_stream_state_arrays"] = state.pop("_stream_state")
        state.pop("_step_workspaces", None)
        super().__setstate__(state)

    def _build_views(self):
        self._drop_stream_plan()
        self.W, self.RW, self.b = self._views_of(self._param_array)
        self.W_gradient, self.RW_gradient, self.b_gradient = self._views_of(self._gradient_array)

    def param_table(self):
        return {"W": self.W, "RW": self.RW, "b": self.b}

    def gradient_table(self):
        return {"W": self.W_gradient, "RW": self.RW_gradient, "b": self.b_gradient}

    def weight_param_mask(self):
        n_w, n_rw, n_b = self._sizes()
        return np.concatenate([np.ones(n_w + n_rw, dtype=bool), np.zeros(n_b, dtype=bool)])

    @exclusive
    def reset_parameters(self, rng=None):
        """(Re)initialise as DL4J's LSTM parameter initialisers: weights by ``weight_init`` with
        fanIn = nOut and fanOut = nIn + nOut (DL4J's values for LSTM layers), biases zero except
        the forget-gate block = ``forget_gate_bias_init``."""
        if rng is None:
            rng = np.random.default_rng(self._seed_sequence.spawn(1)[0])
        h = self.n_out
        fan_in, fan_out = h, self.n_in + h
        n_w, n_rw, n_b = self._sizes()
        flat = self._param_array
        flat[:n_w] = init_weights(rng, (self.n_in, 4 * h), fan_in, fan_out, self.weight_init, self.dtype)
        flat[n_w:n_w + n_rw] = init_weights(rng, (h, self._recurrent_columns()), fan_in, fan_out,
                                            self.weight_init, self.dtype)
        self.b[...] = 0
        self.b[h:2 * h] = self.forget_gate_bias_init

    @property
    def reverse(self):
        """True when the layer processes time from the last step to the first (made with
        ``reverse=True``, the backward direction of a bidirectional layer, or a layer imported
        from an ONNX 'reverse' node); read-only."""
        return not self._process_forwards

    # ---- passes ----------------------------------------------------------------------
    def _check_input(self, x, what):
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:  # e.g. a ragged nested list
            raise type(err)(f"{type(self).__name__}.{what}: x cannot be made into an array ({err})") from None
        if arr.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}.{what}: x must be [minibatch, nIn={self.n_in}, T] "
                             f"or [minibatch, nIn={self.n_in}]; got shape {arr.shape}")
        if arr.shape[1] != self.n_in:
            raise ValueError(f"{type(self).__name__}.{what}: x.shape[1] = {arr.shape[1]} does not match the "
                             f"layer's nIn = {self.n_in} (x shape {arr.shape})")
        return arr

    def _input_weights_for_pass(self, training):
        """The input weights for one pass and the DropConnect keep-mask used (None when off):
        with DropConnect while training, DL4J's non-inverted variant (each weight kept with
        probability p, no rescaling)."""
        if not training or self.drop_connect is None or self.drop_connect >= 1.0:
            return self.W, None
        keep = self._drop_connect_rng.random(self.W.size) < self.drop_connect
        mask = keep.astype(self.dtype).reshape(self.W.shape, order="F")
        return self.W * mask, mask

    def _run(self, x, mask, training, h0, c0, lengths=None, wavefront=None):
        """One pass from (h0, c0). wavefront: None, or lstm_forward's arguments that put this
        pass beside the next layer's (out, _steps_done) or the previous layer's (_steps_ready):
        see lstmfast.network's wavefront."""
        input_weights, drop_connect_mask = self._input_weights_for_pass(training)
        record = lstm_forward(
            x, input_weights, self.RW, self.b, h0=h0, c0=c0, peepholes=self.peepholes,
            activation=self.activation, gate_activation=self.gate_activation, mask=mask,
            lengths=lengths, forwards=self._process_forwards, for_backprop=bool(training),
            **(wavefront or {}))
        # only a pass that completed replaces the record and its keep-mask together: a refused
        # or interrupted pass leaves the previous pair for backward
        self._record = record if training else None
        self.drop_connect_mask = drop_connect_mask
        return record

    def _pass_state(self):
        """What a forward pass replaces (for containers that must undo a half-done pass)."""
        return self._record, self.drop_connect_mask

    def _restore_pass_state(self, state):
        self._record, self.drop_connect_mask = state

    @exclusive
    def forward(self, x, mask=None, training=False, *, lengths=None, _wavefront=None):
        """Output ``[minibatch, nOut, T]`` for x ``[minibatch, nIn, T]`` (or ``[minibatch, nIn]``,
        T = 1), starting from a zero state. ``training=True`` keeps what ``backward`` needs and
        applies DropConnect when enabled. ``mask`` ``[minibatch, T]`` of 0/1, or instead
        ``lengths`` ``[minibatch]`` of integers 0..T: example m's steps are times
        0..lengths[m]-1 and its output is zero after them (a reverse layer starts each example at
        its own last valid step; see ``lstmfast.functional.lstm_forward``). Raises
        ConcurrentUseError if another thread is inside a call on this layer."""
        x = self._check_input(x, "forward")
        _check_mask_or_lengths(self, "forward", mask, lengths)
        return self._run(x, mask, training, None, None, lengths, _wavefront).output

    @exclusive
    def backward(self, epsilon, tbptt_length=None):
        """Back-propagate ``epsilon`` = dL/d(output) ``[minibatch, nOut, T]`` through the last
        training forward pass; fills ``gradients`` and returns dL/dx (shaped like x).
        ``tbptt_length=k`` back-propagates only the last k steps (truncated BPTT). Raises
        ConcurrentUseError if another thread is inside a call on this layer; an interrupted
        call (Ctrl-C) leaves ``gradients`` and the training record as they were."""
        if self._record is None:
            raise ValueError(f"{type(self).__name__}.backward: no training forward pass to back-propagate; "
                             f"call forward(x, training=True) (or rnn_activate_using_stored_state(x, "
                             f"training=True)) first")
        grads = lstm_backward(self._record, epsilon, tbptt_length=tbptt_length)
        if self.drop_connect_mask is not None:
            # exact gradient with respect to the stored weights: the dropped ones get none
            np.multiply(grads.input_weights, self.drop_connect_mask, out=self.W_gradient)
        else:
            self.W_gradient[...] = grads.input_weights
        self.RW_gradient[...] = grads.recurrent_weights
        self.b_gradient[...] = np.reshape(grads.bias, -1)
        self.state_gradients = (grads.h0, grads.c0)
        return grads.input

    # ---- streaming (rnnTimeStep) -------------------------------------------------------
    def _check_streamable(self, what):
        if not self._process_forwards:
            if getattr(self, "_in_bidirectional", False):
                where = ("this layer is the backward direction of a bidirectional layer; "
                         "bidirectional layers need")
            else:
                where = ("this layer processes time in reverse (reverse=True, last step first); "
                         "a reverse layer needs")
            raise UnsupportedOperationError(
                f"{type(self).__name__}.{what}: {where} the whole sequence at once and "
                f"cannot be stepped through time or carry state from one call to the next")

    @staticmethod
    def _check_state_minibatch(state, x, what):
        if state is not None and state[0].shape[0] != x.shape[0]:
            raise ValueError(
                f"{what}: the stored state has minibatch size {state[0].shape[0]} but the input has "
                f"{x.shape[0]} examples. Possible cause: using rnn_time_step() without calling "
                f"rnn_clear_previous_state() between different sequences")

    def rnn_time_step(self, x, mask=None, *, lengths=None):
        """Continue from the stored state with x ``[minibatch, nIn]`` (one step, returns
        ``[minibatch, nOut]``) or ``[minibatch, nIn, T]`` (returns ``[minibatch, nOut, T]``) and
        store the new state. With ``lengths`` ``[minibatch]`` (instead of a mask) each example
        advances by its own number of steps: its stored state is the one after its last valid
        step. Inference only (no DropConnect, nothing kept for backward). Raises
        ConcurrentUseError if another thread is inside a call on this layer; an interrupted
        call (Ctrl-C) leaves the stored state as it was."""
        # the steady streaming case: the step bound to this layer's arrays checks x, takes the
        # in-use lock and runs in C (Python overhead is most of a small step); None means "not
        # this case" (no stored state yet, another x, the layer busy), handled below
        plan = self.__dict__.get("_stream_plan")
        if plan is not None and mask is None and lengths is None:
            h = plan(x)
            if h is not None:
                return h
        lock = in_use_lock(self)
        if not lock.acquire(False):
            raise busy_error(self, "rnn_time_step")
        try:
            self._check_streamable("rnn_time_step")
            if lengths is not None:
                return self._stream_slow(x, mask, lengths)
            if (mask is None and type(x) is np.ndarray and x.ndim == 2 and x.dtype == self.dtype
                    and x.shape[1] == self.n_in and x.shape[0] > 0):
                return self._stream_one_step(x)
            return self._stream_slow(x, mask)
        finally:
            lock.release()

    def _stream_slow(self, x, mask, lengths=None):
        x = self._check_input(x, "rnn_time_step")
        _check_mask_or_lengths(self, "rnn_time_step", mask, lengths)
        state = self._stream_state
        self._check_state_minibatch(state, x, f"{type(self).__name__}.rnn_time_step")
        h0, c0 = state if state is not None else (None, None)
        record = lstm_forward(
            x, self.W, self.RW, self.b, h0=h0, c0=c0, peepholes=self.peepholes,
            activation=self.activation, gate_activation=self.gate_activation, mask=mask,
            lengths=lengths, forwards=True, for_backprop=False)
        self._stream_state = (np.array(record.last_h, order="F", copy=True),
                              np.array(record.last_c, order="F", copy=True))
        output = record.output
        return output[:, :, 0] if x.ndim == 2 else output

    def _stream_one_step(self, x):
        """rnn_time_step for one step [minibatch, nIn] of the layer's dtype: binds the step to
        the layer's arrays (functional.bind_stream_step, which validates every argument at C
        level) and runs it; later steps call the bound step directly."""
        minibatch = x.shape[0]
        if not problem_size_ok(minibatch, self.n_in, self.n_out, 1, peepholes=self.peepholes,
                               activation=self.activation,
                               gate_activation=self.gate_activation):
            # a size the kernels refuse: the validating path raises the clear error, before
            # anything is allocated
            return self._stream_slow(x, None)
        state = self._stream_state
        if state is None:
            state = (np.zeros((minibatch, self.n_out), self.dtype, order="F"),
                     np.zeros((minibatch, self.n_out), self.dtype, order="F"))
        else:
            self._check_state_minibatch(state, x, f"{type(self).__name__}.rnn_time_step")
        if not x.flags.aligned:
            x = np.array(x)
        plan = bind_stream_step(in_use_lock(self), x, self.W, self.RW, self.b, state[0],
                                state[1], activation=self.activation,
                                gate_activation=self.gate_activation)
        self._stream_state = state
        # the lock is held here (re-entrant): the plan's own acquire succeeds
        h_copy = plan(x)
        if h_copy is None:          # x not plain after all (cannot happen for the checks above)
            return self._stream_slow(x, None)
        self.__dict__["_stream_plan"] = plan
        return h_copy

    @exclusive
    def rnn_clear_previous_state(self):
        """Forget the streaming state and the truncated-BPTT state."""
        self._stream_state = None
        self._tbptt_state = None

    @exclusive
    def rnn_get_previous_state(self):
        """The stored streaming state as a pair of copies ``(h, c)`` ``[minibatch, nOut]``,
        or None when there is none. Raises ConcurrentUseError if another thread is inside a
        call on this layer (a streaming step writes the state in place: copied meanwhile, it
        would be half old, half new)."""
        self._check_streamable("rnn_get_previous_state")
        if self._stream_state is None:
            return None
        return tuple(np.array(s, copy=True) for s in self._stream_state)

    @exclusive
    def rnn_set_previous_state(self, h, c):
        """Set the streaming state (``h``, ``c`` ``[minibatch, nOut]``, copied)."""
        self._check_streamable("rnn_set_previous_state")
        h_arr = np.asarray(h)
        if h_arr.ndim != 2:
            raise ValueError(f"h must have shape [minibatch, nOut={self.n_out}]; got {h_arr.shape}")
        mb = h_arr.shape[0]
        self._stream_state = (_as_state("h", h_arr, mb, self.n_out, self.dtype),
                              _as_state("c", c, mb, self.n_out, self.dtype))

    # ---- truncated BPTT (rnnActivateUsingStoredState / tBpttStateMap) ------------------
    @property
    def tbptt_state(self):
        """The carried truncated-BPTT state ``(h, c)`` (copies), or None."""
        if self._tbptt_state is None:
            return None
        return tuple(np.array(s, copy=True) for s in self._tbptt_state)

    @exclusive
    def rnn_activate_using_stored_state(self, x, mask=None, training=True, store_last_for_tbptt=True,
                                        *, lengths=None, _wavefront=None):
        """Forward pass starting from the carried truncated-BPTT state (zeros when there is none)
        and, with ``store_last_for_tbptt``, carrying this pass's last state to the next one. The
        carried state is a constant for ``backward``: no gradient crosses window boundaries.
        ``lengths`` as in ``forward``: the carried state is each example's after its last valid
        step."""
        self._check_streamable("rnn_activate_using_stored_state")
        x = self._check_input(x, "rnn_activate_using_stored_state")
        _check_mask_or_lengths(self, "rnn_activate_using_stored_state", mask, lengths)
        state = self._tbptt_state
        self._check_state_minibatch(state, x, f"{type(self).__name__}.rnn_activate_using_stored_state")
        h0, c0 = state if state is not None else (None, None)
        record = self._run(x, mask, training, h0, c0, lengths, _wavefront)
        if store_last_for_tbptt:
            self._tbptt_state = (np.array(record.last_h, order="F", copy=True),
                                 np.array(record.last_c, order="F", copy=True))
        return record.output

    # ---- memory ------------------------------------------------------------------------
    def memory_report(self, ts_length, minibatch=1, updater=None):
        """DL4J's memory report for sequences of ``ts_length`` steps (see LayerMemoryReport),
        with ``allocated_bytes`` for ``minibatch`` examples. ``updater``: None or "sgd"
        (no state), "momentum"/"nesterovs", "adam", or an updater object."""
        ts_length = check_size("ts_length", ts_length)
        minibatch = check_size("minibatch", minibatch)
        return _build_memory_report(self, [self], ts_length, minibatch, updater, factor=1)

    def _allocation_parts(self, ts_length, minibatch):
        return _lstm_pass_allocations(self.n_in, self.n_out, ts_length, minibatch, self.peepholes,
                                      self.dtype,
                                      drop_connect=self.drop_connect is not None and self.drop_connect < 1.0)

    def _allocated_bytes(self, ts_length, minibatch):
        parts = self._allocation_parts(ts_length, minibatch)
        return {"inference": parts["inference"], "training": parts["training"]}

    def _describe(self):
        return (f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r}, "
                f"gate_activation={self.gate_activation!r}, dtype={self.dtype.name}"
                f"{', reverse=True' if self.reverse else ''})")

    def _clone_configuration(self, seed):
        """A new layer of the same configuration (fresh parameters drawn from ``seed``)."""
        return type(self)(self.n_in, self.n_out, activation=self.activation,
                          gate_activation=self.gate_activation,
                          forget_gate_bias_init=self.forget_gate_bias_init, weight_init=self.weight_init,
                          dtype=self.dtype, seed=seed, drop_connect=self.drop_connect,
                          reverse=self.reverse)


class GravesLSTM(UnidirectionalLSTM):
    """DL4J's GravesLSTM: LSTM with peephole connections.

    ``GravesLSTM(n_in, n_out, *, activation="tanh", gate_activation="sigmoid",
    forget_gate_bias_init=1.0, weight_init="xavier", dtype=np.float32, seed=None,
    drop_connect=None, reverse=False)``; ``drop_connect=p`` keeps each input weight with
    probability p while training (DL4J's non-inverted DropConnect); ``reverse=True`` processes
    time from the last step to the first (ONNX's 'reverse' direction, Keras's go_backwards
    without the flip of the output). Parameters: ``W`` ``[nIn, 4h]``, ``RW``
    ``[h, 4h+3]``, ``b`` ``[4h]``, views into the flat ``params``.

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    peepholes = True


class LSTM(UnidirectionalLSTM):
    """DL4J's LSTM: as GravesLSTM without peephole connections (``RW`` ``[h, 4h]``).

    Threads: one call at a time per layer object. A call made while another thread is inside a
    call on the same layer raises :class:`ConcurrentUseError` ("layer is in use by another
    thread") at once and changes nothing (see "Threads" in the module docstring).
    """

    peepholes = False
