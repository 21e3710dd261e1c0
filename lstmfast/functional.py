"""The functional API: lstm_forward / lstm_backward.

Validate every argument (naming it in the error), convert to one floating dtype, allocate the
outputs, and make one call into the compiled kernels (lstmfast.kernels), which runs without the
GIL. Inputs are never written to; they are copied only when the kernels cannot read them in place
(wrong dtype, misaligned, or weights without unit row stride).
"""
from __future__ import annotations

import collections
import functools
import threading
import time
import weakref

import numpy as np

from . import _blas_threads
from . import _interrupt
from . import _stream
from . import _team
from . import kernels as _kernels
from ._arguments import FLOAT_DTYPES as _FLOAT_DTYPES
from ._arguments import activation_code as _activation_code
from ._arguments import as_flag as _flag
from ._arguments import as_float_array as _as_float_array
from ._arguments import as_integer as _integer
from ._arguments import check_finite as _check_finite
from ._arguments import check_last_state_gradient as _check_last_state_gradient
from ._arguments import check_lengths as _check_lengths
from ._arguments import check_output_array as _check_output_array
from ._arguments import check_projection as _check_projection
from ._arguments import check_state as _check_state
from ._arguments import column_major as _column_major
from ._arguments import decide_dtype as _decide_dtype
from ._arguments import ready_for_kernels as _ready
from ._arguments import shape_text as _shape

__all__ = ["lstm_forward", "lstm_backward", "bind_stream_step", "problem_size_ok",
           "ForwardResult", "Gradients", "ACTIVATIONS", "GATE_ACTIVATIONS", "BLAS_INT_MAX"]

ACTIVATIONS = tuple(_kernels.ACTIVATION_CODES)
GATE_ACTIVATIONS = ("sigmoid", "hardsigmoid")
#: The largest size, stride or count the BLAS of this build takes (SciPy's BLAS integer): the
#: limit of every matrix dimension, here and in the dense layers' products.
BLAS_INT_MAX = _kernels.BLAS_INT_MAX

_KERNEL_ERRORS = {-1: "invalid argument", -2: "unknown activation", -3: "too large"}


class ForwardResult:
    """Result of lstm_forward.

    output  [minibatch, h, T] (the seed's fwdPassOutput), last_h and last_c [minibatch, h] (lastAct,
    lastMemCell: the state to carry into the next call). When made with for_backprop=True it also
    holds, privately, the cache that lstm_backward reads (the seed's FwdPassReturn arrays).
    """

    __slots__ = ("output", "last_h", "last_c", "for_backprop", "_cache", "_input_weights",
                 "_recurrent_weights", "_bias_shape", "_x_shape", "_options", "__weakref__")

    def __init__(self, output, last_h, last_c, cache, input_weights, recurrent_weights,
                 bias_shape, x_shape, options):
        self.output = output
        self.last_h = last_h
        self.last_c = last_c
        self.for_backprop = cache is not None
        self._cache = cache
        self._input_weights = input_weights
        self._recurrent_weights = recurrent_weights
        self._bias_shape = bias_shape
        self._x_shape = x_shape
        self._options = options

    def __copy__(self):
        # a shallow copy would share the cache without the finalizer that returns it to the
        # buffer pool: once this result died, the next call could take the cache over while the
        # copy still used it. The fields are arrays shared by a shallow copy anyway.
        return self

    @property
    def dtype(self):
        return self.output.dtype

    def __repr__(self):
        return (f"ForwardResult(output={self.output.shape}, dtype={self.output.dtype}, "
                f"for_backprop={self.for_backprop})")


class Gradients:
    """Result of lstm_backward: gradients in the shapes of the forward arguments.

    input_weights [nIn, 4h], recurrent_weights [h, 4h(+3)], bias (shaped as given), input (dL/dx,
    shaped like x: the seed's epsilonNext; None when not wanted), h0 and c0 [minibatch, h]
    (gradients with respect to the initial state; zeros when truncated BPTT stops before step
    0). With a projection (LSTMP):
    projection_weights [h, P], peephole_weights [h, 3] (with peepholes), recurrent_weights and
    h0 sized by P; otherwise both None.
    """

    __slots__ = ("input_weights", "recurrent_weights", "bias", "input", "h0", "c0",
                 "projection_weights", "peephole_weights")

    def __init__(self, input_weights, recurrent_weights, bias, input, h0, c0,
                 projection_weights=None, peephole_weights=None):
        self.input_weights = input_weights
        self.recurrent_weights = recurrent_weights
        self.bias = bias
        self.input = input
        self.h0 = h0
        self.c0 = c0
        self.projection_weights = projection_weights
        self.peephole_weights = peephole_weights

    def __repr__(self):
        return (f"Gradients(input_weights={self.input_weights.shape}, "
                f"recurrent_weights={self.recurrent_weights.shape}, bias={self.bias.shape}, "
                f"input={None if self.input is None else self.input.shape})")


# ---------------------------------------------------------------------------------------------
# reuse of large work buffers

class _BufferPool:
    """Keeps freed large work buffers (forward caches, workspaces) for the next call of the same
    size. A fresh multi-megabyte NumPy array is mmapped and page-faulted (zero-filled by the
    kernel) on every call; measured at (T, mb, nIn, h) = (100, 64, 256, 256) that cost about a
    fifth of a training step. Only buffers of at least `min_bytes` are pooled, at most
    `max_bytes` in all: past that the buffers given back longest ago are dropped first (a
    training step gives back its forward work space, then the backward's, then the forward
    cache; refusing the newest one dropped the largest, the cache, at every step). Safe to use
    from several threads."""

    MIN_BYTES = 4 << 20
    MAX_BYTES = 512 << 20

    def __init__(self, min_bytes=MIN_BYTES, max_bytes=MAX_BYTES):
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pooled = []        # (dtype.str, size, array), least recently given first
        self._bytes = 0
        # buffers handed back by finalizers (give_later), pooled by the next take or give
        self._pending = collections.deque()

    def _pool_pending(self):
        """With the lock held: move the buffers handed back by finalizers into the pool."""
        while self._pending:
            self._add(self._pending.popleft())

    def _add(self, array):
        """With the lock held. A buffer of a pass whose team thread never stopped is not pooled:
        that thread may still write to it."""
        if not self.min_bytes <= array.nbytes <= self.max_bytes or _kernels._is_stranded(array):
            return
        self._pooled.append((array.dtype.str, array.size, array))
        self._bytes += array.nbytes
        while self._bytes > self.max_bytes:
            self._bytes -= self._pooled.pop(0)[2].nbytes

    def take(self, size, dtype):
        dtype = np.dtype(dtype)
        if size * dtype.itemsize >= self.min_bytes:
            key = dtype.str
            with self._lock:
                self._pool_pending()
                for i in range(len(self._pooled) - 1, -1, -1):
                    if self._pooled[i][0] == key and self._pooled[i][1] == size:
                        array = self._pooled.pop(i)[2]
                        self._bytes -= array.nbytes
                        return array
        return np.empty(size, dtype=dtype)

    def give(self, array):
        if array is None:
            return
        with self._lock:
            self._pool_pending()
            self._add(array)

    def give_later(self, array):
        """give() for finalizers: they may run in a garbage collection while this thread holds
        the (non-reentrant) lock inside take or give, so the buffer only joins a queue."""
        self._pending.append(array)

    @property
    def pooled_bytes(self):
        with self._lock:
            self._pool_pending()
            return self._bytes

    def clear(self):
        """Drop every pooled buffer (their memory returns to the system)."""
        with self._lock:
            self._pending.clear()
            self._pooled.clear()
            self._bytes = 0


_POOL = _BufferPool()


def release_buffers():
    """Free the large work buffers lstmfast keeps for reuse between calls (at most 512 MiB)."""
    _POOL.clear()


_C_INT_MAX = 2**31 - 1


def set_num_threads(threads):
    """Threads each pass's time loop may use; returns the previous value (see
    lstmfast.kernels.set_num_threads). `threads` must be an integer: 2.5 is refused, not
    truncated, and a value past the C int is refused like any other out-of-range one."""
    count = _integer(threads, "threads", "an integer")
    try:
        # the kernels check the range (1 to the team's size) and name it in their message
        return _kernels.set_num_threads(max(min(count, _C_INT_MAX), 0))
    except ValueError as error:
        range_text = str(error).rsplit(", got ", 1)[0]
        raise ValueError(f"{range_text}, got {count}") from None


# ---------------------------------------------------------------------------------------------
# running a pass (the argument checks are lstmfast._arguments)

# Passes estimated above this many floating-point operations from the main thread run with the
# signals watched, so that Ctrl-C stops them within a time step or so (_run_pass).
_INTERRUPTIBLE_FLOPS = 5e7
# after Ctrl-C, how long a pass may take to stop (a team thread's own grace is 2 s)
_STOP_GRACE_SECONDS = 5.0


# Passes estimated above this many floating-point operations hold every OpenBLAS copy in the
# process at one thread while they run (lstmfast._blas_threads: the team has the cores; a hold
# costs a few microseconds, under 3% of such a pass, which smaller passes skip)
_BLAS_HOLD_FLOPS = 1e7


def _run_kernel(kernel, args, flops, extra=()):
    """_run_pass, with OpenBLAS held at one thread (lstmfast._blas_threads) for large passes."""
    if flops < _BLAS_HOLD_FLOPS:
        _run_pass(kernel, args, flops, extra)
        return
    _blas_threads.hold()
    try:
        _run_pass(kernel, args, flops, extra)
    finally:
        _blas_threads.release()


# the cancel flag of the passes of a call run beside another (_side_by_side), per thread
_partner = threading.local()

# Two directions' passes estimated at fewer floating-point operations each run one after the
# other even where they could run side by side: starting the partner costs microseconds, and
# a partner that starts late meets a first call already done
SIDE_BY_SIDE_FLOPS = 1e7


def _pass_flops(minibatch, n_in, hidden, time_steps, projection=0):
    """A forward pass's floating-point operations (its GEMMs: the gates from x and from the h
    fed back, P-sized with a projection, and the projection)."""
    fed_back = projection or hidden
    return 2.0 * minibatch * time_steps * (4 * hidden * (n_in + fed_back) + hidden * projection)


def _worth_a_thread(minibatch, n_in, hidden, time_steps, projection=0):
    """Whether a pass of these sizes is large enough to run on a thread of its own beside
    another pass (SIDE_BY_SIDE_FLOPS): a bidirectional layer's directions, a wavefront's
    layers."""
    return _pass_flops(minibatch, n_in, hidden, time_steps, projection) >= SIDE_BY_SIDE_FLOPS


def _side_by_side(runner, first, second):
    """``runner(first, second)`` (lstmfast._team.call_pair or call_pair_on_openmp: two calls,
    ``(function, args, kwargs)`` each, side by side, the first on the calling thread), with the
    second call's passes polling a flag that the first call sets when it raises: Ctrl-C, which
    only the calling (main) thread sees, stops the first call's pass within a time step, and
    then the second's at its next step, instead of after the whole pass."""
    stop = np.zeros(1, dtype=np.intc)

    def partner(function, args, kwargs):
        # (put back, not cleared: a partner that itself runs a pair one after the other, on
        # this thread, keeps polling the flag of the pair it belongs to)
        outer = getattr(_partner, "cancel", None)
        _partner.cancel = stop
        try:
            return function(*args, **kwargs)
        finally:
            _partner.cancel = outer

    # (the first call flags its failure in compiled code: see _team.call_flagging_failure)
    return runner((_team.call_flagging_failure, (stop, *first), {}), (partner, second, {}))


def _run_pass(kernel, args, flops, extra=()):
    """Run `kernel(*args, cancel, *extra)` (a kernel entry that releases the GIL; cancel None or
    a one-element flag it polls each time step). Long passes started from the main thread stop
    on Ctrl-C within a time step or so: the kernel runs in the main thread with the signals
    watched (lstmfast._interrupt), or, where that is not available, in a worker thread
    (_run_pass_in_worker). The arguments come as a tuple, not as a closure over them: short
    passes call the kernel straight away, and a closure made per call cost Python time there."""
    if flops < _INTERRUPTIBLE_FLOPS or threading.current_thread() is not threading.main_thread():
        # (the flag of a call beside another: _side_by_side)
        kernel(*args, getattr(_partner, "cancel", None), *extra)
        return
    # False: a signal stopped the kernel and no handler raised; it runs again in the worker
    if _interrupt.WATCHES_SIGNALS and _interrupt.run_watched(kernel, args, extra):
        return
    _run_pass_in_worker(kernel, args, extra)


def _run_pass_in_worker(kernel, args, extra=()):
    """Run `kernel(*args, cancel, *extra)` in a worker thread while the calling (main) thread
    waits; KeyboardInterrupt (or a signal handler's other exception) in the main thread sets
    the cancel flag, waits for the kernel to stop at its next time step, and propagates."""
    cancel = np.zeros(1, dtype=np.intc)
    failure = []
    # the worker's own completion flag: after Ctrl-C has interrupted Thread.join, CPython 3.11
    # can mark a still running thread as stopped (is_alive() False), and the caller would then
    # give its buffers back to the pool while the kernel still writes to them
    done = threading.Event()
    # who owns the pass, set once (dict.setdefault is atomic) by whichever comes first: the
    # worker to run the kernel, or the caller to call the pass off. Ctrl-C can arrive anywhere
    # in Thread.start() (before the thread exists, or while start waits for it to begin), so
    # the caller cannot tell from start() alone whether the kernel is going to run
    owner = {}

    def work():
        if owner.setdefault("pass", "worker") != "worker":
            return                       # called off before it began: the kernel never runs
        try:
            kernel(*args, cancel, *extra)
        except BaseException as error:  # handed to the calling thread below
            failure.append(error)
        finally:
            done.set()

    worker = threading.Thread(target=work, name="lstmfast-pass", daemon=True)
    try:
        try:
            worker.start()
        except RuntimeError as error:    # "can't start new thread": nothing has run yet
            raise MemoryError(f"no memory to start the pass's thread ({error})") from error
        while not done.wait(0.05):
            pass
    except BaseException as error:
        # Ctrl-C, or any other signal handler's exception (a timeout's, SystemExit): the
        # caller's buffers go back to the pool once this returns, so the kernel must stop
        # first. A further exception while calling the pass off starts the calling off again
        # (it is idempotent), so the buffers are never handed back while the kernel may run
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while True:
            try:
                stopped = _call_off(owner, cancel, done, deadline)
                break
            except BaseException:
                pass
        if not stopped:
            # a kernel that did not stop within the grace (a thread stuck where it cannot see
            # the flag) keeps its arrays for good: they are never pooled again
            _kernels._strand(args + (cancel,) + tuple(extra))
        # the kernel's own account (e.g. a team thread that did not stop), unless it only says
        # that it stopped as asked while a handler's own exception ends the call
        if failure and (isinstance(error, KeyboardInterrupt)
                        or type(failure[0]) is not _interrupt.PassStopped):
            raise failure[0] from None
        raise
    if failure:
        raise failure[0]


def _call_off(owner, cancel, done, deadline):
    """Stop the pass of _run_kernel: keep the kernel from starting or, when it has started, ask
    it to stop at its next time step and wait until it has, or until ``deadline``
    (time.monotonic()). True once the kernel cannot touch its arrays any more. Safe to repeat."""
    if owner.setdefault("pass", "caller") == "caller":
        done.set()                       # the worker, if it ever runs, finds the pass taken
        return True
    cancel[0] = 1
    while not done.is_set() and time.monotonic() < deadline:
        try:
            done.wait(0.05)
        except BaseException:        # a signal handler's (see _run_pass_in_worker)
            pass
    return done.is_set()


def _raise_for_kernel_verdict(code, minibatch, n_in, hidden, time_steps):
    if code == 0:
        return
    if code == -3:
        raise ValueError(
            f"problem too large: minibatch={minibatch}, nIn={n_in}, h={hidden}, T={time_steps}; a "
            f"BLAS dimension (4h+3 or minibatch*T) or a buffer size exceeds what the BLAS integer "
            f"of this SciPy build can address")
    raise ValueError(f"invalid problem: minibatch={minibatch}, nIn={n_in}, h={hidden}, "
                     f"T={time_steps} ({_KERNEL_ERRORS.get(code, code)})")


# ---------------------------------------------------------------------------------------------
# the API

def lstm_forward(x, input_weights, recurrent_weights, bias, *, h0=None, c0=None, peepholes=None,
                 activation="tanh", gate_activation="sigmoid", mask=None, lengths=None,
                 projection_weights=None, peephole_weights=None, forwards=True,
                 for_backprop=False, check_finite=False, out=None, gate_order=None,
                 _tuning=None, _report=None, _borrow_weights=False, _steps_ready=None,
                 _steps_done=None):
    """Forward pass of an LSTM layer (the seed's LSTMHelpers.activateHelper).

    x: [minibatch, nIn, T] (DL4J layout) or [minibatch, nIn] (T = 1).
    input_weights [nIn, 4h]; recurrent_weights [h, 4h] or [h, 4h+3] (peephole columns wFF, wOO,
    wGG last); bias [4h] or [1, 4h]. Gate blocks: block input, forget, output, input gate.
    h0, c0 [minibatch, h]: previous state (None: zeros). mask [minibatch, T] of 0/1.
    lengths [minibatch] of integers 0..T (instead of a mask): example m's steps are its times
    0..lengths[m]-1, the rest is padding (PackedSequence / ONNX sequence_lens): the output is
    zero there, last_h / last_c are each example's state after its last valid step (h0 / c0 for
    length 0; a mask zeroes them instead), and forwards=False starts each example at its own
    last valid time. projection_weights [h, P] (LSTMP, nn.LSTM's proj_size; torch's weight_hr
    transposed): each step's h is (o * act(c)) . projection_weights, the recurrence, output,
    h0 and last_h are P-sized (recurrent_weights [P, 4h]; c stays h-sized); peepholes are then
    peephole_weights [h, 3] (columns wFF, wOO, wGG). forwards=False processes time in reverse.
    for_backprop=True keeps what lstm_backward needs.
    check_finite=True raises ValueError for NaN/Inf in any input (by default they propagate as
    IEEE arithmetic says).
    out: None, or an array [minibatch, h (P), T] of the pass's dtype to write the output into,
    with any positive non-overlapping strides (e.g. the [mb, h, T] view of a time-major
    [T, mb, h] array: the kernels write each step's block where it belongs, with no copy
    after the pass); it must not share memory with an input.
    gate_order: None (the seed's: "gfoi") or the order of the four gate blocks in the 4h
    columns of input_weights, recurrent_weights and bias, four letters: "i" input gate, "f"
    forget gate, "g" (or "c") block input / cell candidate, "o" output gate. PyTorch's and
    Keras's order is "ifgo", ONNX's "iofc": their weights (transposed to [nIn, 4h] / [h, 4h])
    are then read where they are, with no reordered copy. lstm_backward's gradients come in
    the same order.
    Returns a ForwardResult with .output [minibatch, h, T] (out, when given), .last_h, .last_c.
    (_tuning, _report: for tests, see lstmfast.kernels.forward. _borrow_weights: the caller
    keeps input_weights and recurrent_weights unchanged until lstm_backward, which then reads
    them instead of private copies: lstmfast.torch, whose autograd checks it. _steps_ready,
    _steps_done: a wavefront of stacked layers, see _wavefront.)
    """
    dtype = _decide_dtype(input_weights)
    W = _as_float_array(input_weights, "input_weights", dtype)
    if W.ndim != 2:
        raise ValueError(f"input_weights: expected a 2-D array [nIn, 4h], got {_shape(W)}")
    RW = _as_float_array(recurrent_weights, "recurrent_weights", dtype)
    if RW.ndim != 2:
        raise ValueError(f"recurrent_weights: expected a 2-D array [h, 4h] or [h, 4h+3], "
                         f"got {_shape(RW)}")
    proj, peep, peepholes = _check_projection(projection_weights, peephole_weights, peepholes,
                                              dtype)
    hidden = RW.shape[0] if proj is None else proj.shape[0]
    if hidden < 1:
        raise ValueError(f"recurrent_weights: layer size h must be >= 1, got shape {_shape(RW)}")
    gates = 4 * hidden
    size = hidden if proj is None else proj.shape[1]      # of h fed back: P with a projection
    if proj is not None:
        if RW.shape != (size, gates):
            raise ValueError(f"recurrent_weights: expected shape [P, 4h] = [{size}, {gates}] "
                             f"with projection_weights [h, P] = {_shape(proj)}, got {_shape(RW)}")
    else:
        if peepholes is None:
            peepholes = RW.shape[1] == gates + 3
        peepholes = _flag(peepholes, "peepholes")
        expected_rw = gates + 3 if peepholes else gates
        if RW.shape[1] != expected_rw:
            raise ValueError(
                f"recurrent_weights: expected shape [h, {'4h+3' if peepholes else '4h'}] = "
                f"[{hidden}, {expected_rw}] (peepholes={peepholes}), got {_shape(RW)}")
    if W.shape[1] != gates:
        source = ("recurrent_weights.shape[0]" if proj is None
                  else "projection_weights.shape[0]")
        raise ValueError(f"input_weights: expected shape [nIn, 4h] with 4h = {gates} "
                         f"(h = {source} = {hidden}), got {_shape(W)}")

    xa = _as_float_array(x, "x", dtype)
    if xa.ndim not in (2, 3):
        raise ValueError(f"x: expected [minibatch, nIn, T] or [minibatch, nIn], got {_shape(xa)}")
    if xa.size == 0:
        raise ValueError(f"x: Invalid input: not set or 0 length (shape {_shape(xa)})")
    x_shape = xa.shape
    x3 = xa[:, :, None] if xa.ndim == 2 else xa
    minibatch, n_in, time_steps = x3.shape
    if n_in != W.shape[0]:
        raise ValueError(
            f"x: Received input with size(1) = {n_in} (input array shape = {list(x_shape)}); "
            f"input.size(1) must match layer nIn size (nIn = input_weights.shape[0] = {W.shape[0]})")

    b = _as_float_array(bias, "bias", dtype)
    bias_shape = b.shape
    if b.shape == (1, gates):
        b = b[0]
    if b.shape != (gates,):
        raise ValueError(f"bias: expected shape [4h] = [{gates}] or [1, {gates}], got {_shape(b)}")

    h0a = _check_state(h0, "h0", dtype, minibatch, size)
    c0a = _check_state(c0, "c0", dtype, minibatch, hidden)

    mask_a = None
    if mask is not None:
        mask_a = _as_float_array(mask, "mask", dtype, allow_exact_ints=True)
        if mask_a.ndim == 1 and time_steps == 1 and mask_a.shape[0] == minibatch:
            mask_a = mask_a[:, None]
        if mask_a.shape != (minibatch, time_steps):
            raise ValueError(f"mask: expected shape [minibatch, T] = [{minibatch}, {time_steps}], "
                             f"got {_shape(mask_a)}")

    lengths_a = _check_lengths(lengths, minibatch, time_steps, mask_a)
    gate_blocks = gate_blocks_of(gate_order)

    act = _activation_code(activation, "activation", ACTIVATIONS)
    gate_act = _activation_code(gate_activation, "gate_activation", GATE_ACTIVATIONS)
    forwards = _flag(forwards, "forwards")
    for_backprop = _flag(for_backprop, "for_backprop")
    check_finite = _flag(check_finite, "check_finite")

    _raise_for_kernel_verdict(
        _kernels.check_dims(minibatch, n_in, hidden, time_steps, peepholes, act, gate_act),
        minibatch, n_in, hidden, time_steps)

    x3 = _ready(x3, dtype)
    b = _ready(b, dtype)
    if h0a is not None:
        h0a = _ready(h0a, dtype)
    if c0a is not None:
        c0a = _ready(c0a, dtype)
    if mask_a is not None:
        mask_a = _ready(mask_a, dtype)
    W = _column_major(_ready(W, dtype))
    RW = _column_major(_ready(RW, dtype))
    projection = None
    if proj is not None:
        projection = tuple(None if a is None else _column_major(_ready(a, dtype))
                           for a in (proj, peep))
    if for_backprop and not _borrow_weights:
        # lstm_backward reads the weights again: keep private copies, so that changing the
        # caller's arrays in between (an optimizer step) cannot mix old activations with new weights
        if np.may_share_memory(W, input_weights):
            W = W.copy(order="F")
        if np.may_share_memory(RW, recurrent_weights):
            RW = RW.copy(order="F")
        if projection is not None:     # (small: [h, P] and [h, 3])
            projection = tuple(None if a is None else a.copy(order="F") for a in projection)
    P = 0 if proj is None else size
    if out is None:
        output = np.empty((minibatch, size, time_steps), dtype=dtype, order="F")
    else:
        output = _check_output_array(
            out, "out", (minibatch, size, time_steps), dtype,
            [("x", x3), ("input_weights", W), ("recurrent_weights", RW), ("bias", b),
             ("h0", h0a), ("c0", c0a), ("mask", mask_a)]
            + list(zip(("projection_weights", "peephole_weights"), projection or ())))
    last_h = np.empty((minibatch, size), dtype=dtype)
    last_c = np.empty((minibatch, hidden), dtype=dtype)
    cache = None
    if for_backprop:
        cache_size = _kernels.cache_size(minibatch, n_in, hidden, time_steps, P)
        if cache_size < 0:
            _raise_for_kernel_verdict(-3, minibatch, n_in, hidden, time_steps)
        cache = _POOL.take(cache_size, dtype)
    workspace_size = _kernels.forward_workspace_size(minibatch, n_in, hidden, time_steps,
                                                     for_backprop, _tuning, P)
    if workspace_size < 0:
        _raise_for_kernel_verdict(-3, minibatch, n_in, hidden, time_steps)
    workspace = _POOL.take(workspace_size, dtype)

    if check_finite:
        _check_finite([("x", x3), ("input_weights", W), ("recurrent_weights", RW), ("bias", b),
                       ("h0", h0a), ("c0", c0a), ("mask", mask_a)]
                      + list(zip(("projection_weights", "peephole_weights"), projection or ())))
    flops = _pass_flops(minibatch, n_in, hidden, time_steps, P)
    try:
        _run_kernel(_kernels.forward, (x3, W, RW, b, h0a, c0a, mask_a, output, last_h, last_c,
                                       cache, workspace, peepholes, forwards, act, gate_act),
                    flops, (_tuning, _report, lengths_a, projection, gate_blocks, _steps_ready,
                            _steps_done))
    except BaseException:
        _POOL.give(cache)
        raise
    finally:
        _POOL.give(workspace)

    options = {"peepholes": peepholes, "forwards": forwards, "activation": act,
               "gate_activation": gate_act, "minibatch": minibatch, "time_steps": time_steps,
               "lengths": lengths_a, "projection": projection, "gate_blocks": gate_blocks,
               # the mask of the last processed step: last_h is masked by it
               "last_mask": None if mask_a is None else np.array(
                   mask_a[:, time_steps - 1 if forwards else 0], dtype=dtype)}
    result = ForwardResult(output, last_h, last_c, cache, W, RW, bias_shape, x_shape,
                           options)
    if cache is not None and cache.nbytes >= _POOL.min_bytes:
        # the cache goes back to the pool when the result is no longer referenced
        weakref.finalize(result, _POOL.give_later, cache)
    return result


def bind_stream_step(lock, x, input_weights, recurrent_weights, bias, h, c, *,
                     activation="tanh", gate_activation="sigmoid"):
    """A streaming step bound to a layer's arrays (the layers' rnn_time_step): ``step(x)``
    advances the state (h, c) in place by one step of x [minibatch, nIn] and returns a copy of
    the new h, checking only x per call; it returns None, changing nothing, when x is not a
    plain aligned array of the bound dtype and shape or `lock` is held elsewhere (the caller
    then takes lstm_forward's validating path). The step takes `lock` without waiting.

    input_weights [nIn, 4h] and recurrent_weights [h, 4h(+3)] with unit row stride, bias [4h],
    h and c [minibatch, h] writable, all of x's dtype; activation and gate_activation by name.
    ValueError when the arrays do not fit together or the kernels refuse the problem's size
    (ask problem_size_ok first, before allocating the state).
    """
    act = _activation_code(activation, "activation", ACTIVATIONS)
    gate_act = _activation_code(gate_activation, "gate_activation", GATE_ACTIVATIONS)
    return _stream.StreamStep(lock, x, input_weights, recurrent_weights, bias, h, c, act,
                              gate_act)


def problem_size_ok(minibatch, n_in, hidden, time_steps, *, peepholes=False, activation="tanh",
                    gate_activation="sigmoid"):
    """Whether the kernels take a problem of this size (every BLAS dimension and buffer size
    representable); False where lstm_forward would raise its "problem too large" ValueError."""
    act = _activation_code(activation, "activation", ACTIVATIONS)
    gate_act = _activation_code(gate_activation, "gate_activation", GATE_ACTIVATIONS)
    return _kernels.check_dims(minibatch, n_in, hidden, time_steps, bool(peepholes), act,
                               gate_act) == 0


#: the kernels' gate blocks (the seed's order): block input, forget, output, input gate
SEED_GATE_ORDER = "gfoi"


def gate_blocks_of(gate_order):
    """lstm_forward's gate_order -> the kernels' gate_blocks (None for the seed's order): for
    each of the kernels' gates, the caller's block holding it."""
    if gate_order is None:
        return None
    if not isinstance(gate_order, str):
        raise TypeError(f"gate_order: expected a string of the letters i, f, g (or c), o, got "
                        f"{type(gate_order).__name__}")
    return _gate_blocks_of_letters(gate_order)


@functools.lru_cache(maxsize=64)
def _gate_blocks_of_letters(gate_order):
    """gate_blocks_of for a string (remembered: lstmfast.torch names its order on every
    call)."""
    letters = gate_order.lower().replace("c", "g")
    if len(letters) != 4 or sorted(letters) != sorted(SEED_GATE_ORDER):
        raise ValueError(f"gate_order: expected the four gates i, f, g (or c), o, each once "
                         f"(e.g. 'ifgo', PyTorch's order), got {gate_order!r:.40}")
    if letters == SEED_GATE_ORDER:
        return None
    return tuple(letters.index(gate) for gate in SEED_GATE_ORDER)


def lstm_backward(fwd, epsilon, *, tbptt_length=None, grad_last_h=None, grad_last_c=None,
                  check_finite=False, grad_input_out=None, input_gradient=True, _tuning=None,
                  _report=None):
    """Backward pass (the seed's LSTMHelpers.backpropGradientHelper).

    fwd: the result of lstm_forward(..., for_backprop=True); it is not modified.
    epsilon: dL/d(output), [minibatch, h, T] (or [minibatch, h] when T = 1).
    tbptt_length: None for full BPTT, or k >= 1: only the last k steps (in processing order)
    are back-propagated (not with lengths: their steps differ per example). grad_last_h,
    grad_last_c: dL/d(fwd.last_h), dL/d(fwd.last_c) [minibatch, h] when the final state is
    used further (e.g. handed to a decoder; beyond the seed); with lengths they reach each
    example's last valid step. check_finite=True raises ValueError for NaN/Inf in epsilon,
    grad_last_h or grad_last_c. grad_input_out: None, or an array shaped like the forward
    pass's x to write dL/dx into (as lstm_forward's out: any positive non-overlapping strides,
    no memory shared with an input; a pass stopped by Ctrl-C may have written some of its
    steps). input_gradient=False: dL/dx is not wanted (the first
    layer of a network, an input that needs no gradient): the kernels skip its GEMM (about
    nIn / (nIn + h) of the backward's gradient flops) and .input is None; the other gradients
    are the same bits.
    The weights' gradients have their gate blocks in the forward pass's gate_order.
    Returns Gradients (.input_weights, .recurrent_weights, .bias, .input, .h0, .c0).
    """
    if not isinstance(fwd, ForwardResult):
        raise TypeError(f"fwd: expected the result of lstm_forward(..., for_backprop=True), "
                        f"got {type(fwd).__name__}")
    if not fwd.for_backprop:
        raise ValueError("fwd: this forward result was made without for_backprop=True; run "
                         "lstm_forward(..., for_backprop=True) to keep what the backward pass needs")
    opts = fwd._options
    W, RW = fwd._input_weights, fwd._recurrent_weights
    dtype = W.dtype
    minibatch, time_steps = opts["minibatch"], opts["time_steps"]
    projection = opts["projection"]
    hidden, n_in = W.shape[1] // 4, W.shape[0]
    size = RW.shape[0]                 # of h fed back and output: P with a projection

    eps = _as_float_array(epsilon, "epsilon", dtype)
    if eps.ndim == 2 and time_steps == 1:
        eps = eps[:, :, None]
    if eps.shape != (minibatch, size, time_steps):
        raise ValueError(f"epsilon: expected shape [minibatch, h, T] = "
                         f"[{minibatch}, {size}, {time_steps}] (the forward output's shape), "
                         f"got {_shape(np.asarray(epsilon))}")
    eps = _ready(eps, dtype)
    check_finite = _flag(check_finite, "check_finite")
    grad_last_h_a = _check_last_state_gradient(grad_last_h, "grad_last_h", "last_h", dtype,
                                               minibatch, size)
    grad_last_c_a = _check_last_state_gradient(grad_last_c, "grad_last_c", "last_c", dtype,
                                               minibatch, hidden)
    lengths = opts["lengths"]

    if tbptt_length is None:
        tbptt = 0
    else:
        tbptt = _integer(tbptt_length, "tbptt_length", "an integer >= 1 or None")
        if tbptt < 1:
            raise ValueError(f"tbptt_length: must be >= 1 (or None for full BPTT), got {tbptt}")
        tbptt = min(tbptt, time_steps)     # k >= T is full BPTT
        if lengths is not None and tbptt < time_steps:
            raise ValueError(f"tbptt_length: truncated BPTT ({tbptt} of {time_steps} steps) is "
                             f"not available with lengths (their steps differ per example)")
    if check_finite:
        _check_finite([("epsilon", eps), ("grad_last_h", grad_last_h_a),
                       ("grad_last_c", grad_last_c_a)])
    if grad_last_h_a is not None:
        # last_h is the output of each example's last processed step: its gradient joins
        # epsilon there (an example of length 0 hands h0 on, added to grads.h0 below)
        eps = np.array(eps, order="F", copy=True)
        if lengths is None:
            last = np.full(minibatch, time_steps if opts["forwards"] else 1)
        else:
            last = lengths if opts["forwards"] else np.minimum(lengths, 1)
        rows = np.flatnonzero(last > 0)
        if opts["last_mask"] is not None:
            grad_last_h_a = grad_last_h_a * opts["last_mask"][:, None]
        eps[rows, :, last[rows] - 1] += grad_last_h_a[rows]

    grad_w = np.empty(W.shape, dtype=dtype, order="F")
    grad_rw = np.empty(RW.shape, dtype=dtype, order="F")
    grad_b = np.empty(4 * hidden, dtype=dtype)
    input_gradient = _flag(input_gradient, "input_gradient")
    if not input_gradient and grad_input_out is not None:
        raise ValueError("grad_input_out: given with input_gradient=False (dL/dx not wanted)")
    if not input_gradient:
        grad_x = None
    elif grad_input_out is None:
        grad_x = np.empty((minibatch, n_in, time_steps), dtype=dtype, order="F")
    else:
        grad_x = _check_output_array(
            grad_input_out, "grad_input_out", fwd._x_shape, dtype,
            [("epsilon", eps), ("the forward pass's cache", fwd._cache),
             ("input_weights", W), ("recurrent_weights", RW), ("grad_last_c", grad_last_c_a)])
        if grad_x.ndim == 2:
            grad_x = grad_x[:, :, None]
    grad_h0 = np.empty((minibatch, size), dtype=dtype)
    grad_c0 = np.empty((minibatch, hidden), dtype=dtype)
    grad_projection = None
    if projection is not None:
        grad_projection = projection + tuple(None if a is None else np.empty(a.shape, dtype, "F")
                                             for a in projection)
    workspace = _POOL.take(_kernels.backward_workspace_size(
        minibatch, n_in, hidden, time_steps, _tuning, lengths,
        0 if projection is None else size), dtype)
    flops = 4.0 * minibatch * time_steps * 4 * hidden * (n_in + size)
    try:
        _run_kernel(_kernels.backward, (W, RW, fwd._cache, eps, tbptt, grad_w, grad_rw, grad_b,
                                        grad_x, grad_h0, grad_c0, workspace, minibatch,
                                        time_steps, opts["peepholes"], opts["forwards"],
                                        opts["activation"], opts["gate_activation"]),
                    flops, (grad_last_c_a, _tuning, _report, lengths, grad_projection,
                            opts["gate_blocks"]))
    finally:
        _POOL.give(workspace)
    if grad_last_h_a is not None and lengths is not None:
        empty = lengths == 0
        grad_h0[empty] += grad_last_h_a[empty]

    if grad_input_out is not None:
        grad_x = grad_input_out
    elif grad_x is not None and len(fwd._x_shape) == 2:
        grad_x = grad_x[:, :, 0]
    return Gradients(grad_w, grad_rw, grad_b.reshape(fwd._bias_shape), grad_x, grad_h0, grad_c0,
                     *(grad_projection[2:] if grad_projection is not None else ()))



# ---------------------------------------------------------------------------------------------
# buffer sizes of a pass

#: Bytes of the buffers one pass takes (see pass_buffer_sizes).
PassBufferSizes = collections.namedtuple(
    "PassBufferSizes",
    ["cache", "forward_workspace_inference", "forward_workspace_training", "backward_workspace"])


def pass_buffer_sizes(minibatch, n_in, hidden, time_steps, *, peepholes=False, dtype=np.float32,
                      lengths=False, projection=0, _tuning=None):
    """Bytes of the buffers lstm_forward / lstm_backward take for a problem of this size, sized
    by the kernels with the tuning those passes use: ``cache`` (what lstm_forward(...,
    for_backprop=True) keeps for lstm_backward), ``forward_workspace_inference`` /
    ``forward_workspace_training`` (lstm_forward's work space with for_backprop False / True,
    freed or pooled on return) and ``backward_workspace`` (lstm_backward's). ``lengths=True``:
    sizes for a pass with per-example lengths (the backward work space holds one more
    [minibatch, hidden] block). ``projection``: P of a pass with ``projection_weights`` [hidden, P]
    (0: none). ``dtype``: float32 or float64. The outputs, gradients and copies
    of the weights the passes return are not included. Raises ValueError for a size below 1 or a
    problem the kernels refuse as too large (as lstm_forward would)."""
    sizes = []
    for name, value in (("minibatch", minibatch), ("n_in", n_in), ("hidden", hidden),
                        ("time_steps", time_steps)):
        size = _integer(value, name, "an integer >= 1")
        if size < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {size}")
        sizes.append(size)
    minibatch, n_in, hidden, time_steps = sizes
    projection = _integer(projection, "projection", "an integer >= 0")
    if projection < 0:
        raise ValueError(f"projection: expected an integer >= 0, got {projection}")
    peepholes = _flag(peepholes, "peepholes")
    lengths = _flag(lengths, "lengths")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r:.60}") from None
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    _raise_for_kernel_verdict(
        _kernels.check_dims(minibatch, n_in, hidden, time_steps, peepholes,
                            _kernels.ACTIVATION_CODES["tanh"],
                            _kernels.ACTIVATION_CODES["sigmoid"]),
        minibatch, n_in, hidden, time_steps)
    # the size functions only ask whether there are lengths, not what they are
    any_lengths = np.zeros(minibatch, dtype=np.intp) if lengths else None
    elements = (
        _kernels.cache_size(minibatch, n_in, hidden, time_steps, projection),
        _kernels.forward_workspace_size(minibatch, n_in, hidden, time_steps, False, _tuning,
                                        projection),
        _kernels.forward_workspace_size(minibatch, n_in, hidden, time_steps, True, _tuning,
                                        projection),
        _kernels.backward_workspace_size(minibatch, n_in, hidden, time_steps, _tuning,
                                         any_lengths, projection))
    if min(elements) < 0:
        _raise_for_kernel_verdict(-3, minibatch, n_in, hidden, time_steps)
    return PassBufferSizes(*(n * dtype.itemsize for n in elements))


__all__ += ["pass_buffer_sizes", "PassBufferSizes"]
