"""One layer and one direction as ``torch.library`` custom ops: ``lstmfast::lstm_layer`` and
its backward ``lstmfast::lstm_layer_backward``.

Registered ops (rather than an ``autograd.Function`` that calls NumPy) are what the compiler
and the TorchScript tracer can keep as one node each: fake kernels give their output shapes
without computing, so ``torch.compile(model, fullgraph=True)`` traces the modules without a
graph break, and ``torch.jit.trace`` records calls that ``torch.jit.load`` finds again in any
process that has imported ``lstmfast.torch``.

What the backward pass needs (the kernels' forward cache, the weights the forward pass used)
stays in the :class:`~lstmfast.functional.ForwardResult`. The forward op returns, as a fourth
output, a byte tensor that shares the memory of that result's cache and keeps the result
alive; the backward op finds the result again by that memory's address. So the backward pass
reads exactly what the forward pass left, without copying it, and the cache returns to
lstmfast's buffer pool only when autograd (or the compiled graph) drops the tensor.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
import weakref
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from .. import _team
from .. import kernels as _kernels
from .._arguments import column_major as _column_major
from .._arguments import ready_for_kernels as _ready
from ..functional import _worth_a_thread
from ..functional import _side_by_side as _with_partner_stopped
from . import _function, _threads
from ._function import (PEEPHOLE_ROWS_FROM_KERNEL, TORCH_FROM_KERNEL, _blocks,
                        _numpy, _refuse_double_backward,
                        _time_major_to_kernel, kernel_weights, projection_weights)

__all__ = ["lstm_layer", "lstm_layer_backward", "run_layer", "kernel_arrays"]

#: nn.LSTM's gate blocks (lstmfast.functional.lstm_forward's gate_order)
TORCH_GATE_ORDER = "ifgo"

_results = weakref.WeakValueDictionary()    # cache address -> the ForwardResult owning it
_results_lock = threading.Lock()


class _CacheOwner(np.ndarray):
    """A view of a forward result's cache holding a reference to the result: the tensor made
    from it keeps the result (hence the cache, and its place in the buffer pool) alive."""


def _cache_handle(fwd):
    cache = fwd._cache
    view = cache.view(_CacheOwner)
    view.result = fwd
    handle = torch.from_numpy(view).view(torch.uint8)
    with _results_lock:
        _results[handle.data_ptr()] = fwd
    return handle


def _result_of(handle):
    with _results_lock:
        fwd = _results.get(handle.data_ptr()) if handle.numel() else None
    if fwd is None:
        raise RuntimeError("lstmfast::lstm_layer_backward: the forward pass's saved state is "
                           "gone (its cache tensor was copied or freed)")
    return fwd


def _cache_bytes(mb, n_in, hidden, steps, projection, dtype):
    sizes = (mb, n_in, hidden, steps, projection)
    if not all(isinstance(s, int) for s in sizes):
        return torch.library.get_ctx().new_dynamic_size()
    return _kernels.cache_size(*sizes) * dtype.itemsize


def _sizes(w_ih, w_hh):
    """(h, size of the h fed back and output: P with a projection, else h)."""
    return w_ih.shape[0] // 4, w_hh.shape[1]


# ---------------------------------------------------------------------------------------------
# forward

@torch.library.custom_op("lstmfast::lstm_layer", mutates_args=(), device_types="cpu")
def lstm_layer(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
               b_hh: Optional[Tensor], w_peep: Optional[Tensor], w_hr: Optional[Tensor],
               h0: Optional[Tensor], c0: Optional[Tensor], lengths: Optional[Tensor],
               forwards: bool, activation: str, gate_activation: str,
               for_backprop: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One layer, one direction: x ``[T, mb, nIn]`` (time-major), parameters in nn.LSTM's
    layout (b_ih, b_hh, w_peep, w_hr ``[P, h]`` may be None), h0 ``[mb, P or h]`` / c0
    ``[mb, h]`` or None (zeros), lengths ``[mb]`` (int64, steps per example: a padded
    PackedSequence) or None. Returns ``(out [T, mb, P or h] contiguous, h_n [mb, P or h],
    c_n [mb, h], saved)``; h_n/c_n are each example's state at its last valid step; ``saved``
    (uint8) holds what the backward op needs when ``for_backprop`` (empty otherwise)."""
    out, h_n, c_n, fwd = _layer_forward(x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0,
                                        lengths, forwards, activation, gate_activation,
                                        for_backprop)
    handle = _cache_handle(fwd) if fwd is not None else x.new_empty((0,), dtype=torch.uint8)
    return out, h_n, c_n, handle


def kernel_arrays(w_ih, w_hh, b_ih, b_hh, w_peep, w_hr):
    """One layer's and direction's parameters as lstm_forward takes them, each forward call:
    (W, RW, b, lstm_forward's keywords for them)."""
    extra = {}
    if w_hr is not None:
        # with a projection the peepholes travel apart from the recurrent weights
        extra["projection_weights"], extra["peephole_weights"] = projection_weights(w_hr, w_peep)
        w_peep = None
    if w_peep is not None:
        # the peephole columns go after RW's gate columns: a copy in any case
        return (*kernel_weights(w_ih, w_hh, b_ih, b_hh, w_peep), extra)
    # nn.LSTM's parameters where they are: [4h, nIn] and [4h, h or P] rows are [nIn, 4h] and
    # [h or P, 4h] Fortran-ordered columns, in nn.LSTM's gate order, which the kernels'
    # packings take as they read them (a copy in the kernels' order moved them once more: 0.03
    # to 0.07 ms of a 2 ms pass). The backward pass reads them again: autograd's saved-tensor
    # check (the Function's and the op's) refuses them changed in place in between.
    W, RW = w_ih.detach().numpy().T, w_hh.detach().numpy().T
    b = (np.zeros(W.shape[1], dtype=W.dtype) if b_ih is None
         else b_ih.detach().numpy() + b_hh.detach().numpy())
    extra["gate_order"] = TORCH_GATE_ORDER
    extra["_borrow_weights"] = True
    return W, RW, b, extra


def _layer_forward(x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0, lengths, forwards,
                   activation, gate_activation, for_backprop, out=None, one_thread=False):
    """The computation of :func:`lstm_layer`: (out, h_n, c_n, the ForwardResult when
    ``for_backprop``, else None). ``out``: None, or the time-major NumPy array [T, mb, h or P]
    (any strides) to write the output into, and then the first result is None; ``one_thread``:
    the pass runs on the calling thread, the BLAS as the caller left it."""
    steps, mb = x.shape[0], x.shape[1]
    hidden, size = _sizes(w_ih, w_hh)
    if mb == 0:    # an empty batch: nn.LSTM returns empty outputs (the kernels refuse)
        return (x.new_zeros((steps, 0, size)), x.new_zeros((0, size)),
                x.new_zeros((0, hidden)), None)
    W, RW, b, extra = kernel_arrays(w_ih, w_hh, b_ih, b_hh, w_peep, w_hr)
    if lengths is not None:
        extra["lengths"] = lengths.numpy().astype(np.intp, copy=False)
    # nn.LSTM's contiguous time-major output, written by the kernels through its [mb, h, T] view
    result = None
    if out is None:
        out = np.empty((steps, mb, size), dtype=W.dtype)
        result = torch.from_numpy(out)
    fwd = _function._forward(_time_major_to_kernel(_numpy(x)), W, RW, b, _numpy(h0),
                             _numpy(c0), forwards, activation, gate_activation, for_backprop,
                             one_thread, out=_time_major_to_kernel(out), **extra)
    return (result, torch.from_numpy(fwd.last_h), torch.from_numpy(fwd.last_c),
            fwd if for_backprop else None)


@lstm_layer.register_fake
def _lstm_layer_fake(x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0, lengths, forwards,
                     activation, gate_activation, for_backprop):
    steps, mb, n_in = x.shape
    hidden, size = _sizes(w_ih, w_hh)
    saved = 0
    if for_backprop and not (isinstance(mb, int) and mb == 0):
        saved = _cache_bytes(mb, n_in, hidden, steps, 0 if w_hr is None else size,
                             np.dtype(_function.NUMPY_DTYPES[x.dtype]))
    return (x.new_empty((steps, mb, size)), x.new_empty((mb, size)),
            x.new_empty((mb, hidden)), x.new_empty((saved,), dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# backward

@torch.library.custom_op("lstmfast::lstm_layer_backward", mutates_args=(), device_types="cpu")
def lstm_layer_backward(grad_out: Optional[Tensor], grad_h: Optional[Tensor],
                        grad_c: Optional[Tensor], saved: Tensor, w_ih: Tensor, w_hh: Tensor,
                        steps: int, mb: int, n_in: int, hidden: int, projection: int,
                        dtype: torch.dtype, forwards: bool,
                        peepholes: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor,
                                                  Tensor, Tensor, Tensor]:
    """Gradients of :func:`lstm_layer` with respect to ``(x, w_ih, w_hh, bias, w_peep, w_hr,
    h0, c0)`` in nn.LSTM's layout (bias: of bias_ih, equal to bias_hh's; w_peep ``[3, h]``,
    w_hr ``[P, h]``, empty without peepholes / projection), given the sizes of x
    ``[T, mb, nIn]`` and of the layer (projection: P, or 0). ``w_ih``, ``w_hh``: the forward
    call's weights, read from these tensors: a compiled graph may recompute them for the
    backward graph, and reuse the forward graph's buffers that held them once the forward op
    has run (a backward reading them where the forward pass read them got other numbers).
    As inputs of the op they are also saved tensors, which autograd refuses changed in place
    in between."""
    fwd = None if mb == 0 else _result_of(saved)
    if fwd is not None:
        _read_weights_from(fwd, w_ih, w_hh)
    return _layer_backward(fwd, grad_out, grad_h, grad_c, steps, mb, n_in, hidden, projection,
                           dtype, forwards, peepholes)


def _read_weights_from(fwd, w_ih, w_hh):
    """Point a forward result that borrowed nn.LSTM's weights (kernel_arrays: no peepholes in
    RW) at the weights in `w_ih`, `w_hh`, prepared as lstm_forward prepared them."""
    if fwd._options["gate_blocks"] is None:
        return       # the pass ran on its own copies in the kernels' order
    dtype = fwd.dtype
    fwd._input_weights = _column_major(_ready(w_ih.detach().numpy().T, dtype))
    fwd._recurrent_weights = _column_major(_ready(w_hh.detach().numpy().T, dtype))


def _layer_backward(fwd, grad_out, grad_h, grad_c, steps, mb, n_in, hidden, projection, dtype,
                    forwards, peepholes, input_needed=True, one_thread=False):
    """The computation of :func:`lstm_layer_backward` from the forward pass's result
    (``input_needed=False``: no gradient of x wanted: the kernels skip it, None in its
    place; ``one_thread``: as _layer_forward's)."""
    sizes = (steps, mb, n_in, hidden, projection, dtype, peepholes)
    if mb == 0:
        return _zero_gradients(*sizes)
    # dL/dx time-major and contiguous as x, written by the kernels through its [mb, nIn, T] view
    g_x = np.empty((steps, mb, n_in), dtype=_function.NUMPY_DTYPES[dtype]) if input_needed else None
    grads = _function._backward(fwd, forwards, grad_out, grad_h, grad_c,
                                None if g_x is None else _time_major_to_kernel(g_x),
                                input_gradient=input_needed, one_thread=one_thread)
    if grads is None:
        return _zero_gradients(*sizes)
    gates = 4 * hidden
    g_rw = grads.recurrent_weights
    if projection:
        g_peep_columns = grads.peephole_weights          # [h, 3] or None
        g_hr = torch.from_numpy(np.ascontiguousarray(grads.projection_weights.T))
    else:
        g_peep_columns = g_rw[:, gates:] if peepholes else None
        g_hr = torch.empty((0,), dtype=dtype)
    g_peep = (torch.from_numpy(g_peep_columns.T[list(PEEPHOLE_ROWS_FROM_KERNEL)])
              if peepholes else torch.empty((0,), dtype=dtype))   # (outputs may not alias)
    g_w_ih, g_w_hh, g_b = grads.input_weights.T, g_rw[:, :gates].T, grads.bias
    if fwd._options["gate_blocks"] is None:
        # the pass ran on weights copied in the kernels' gate order (peepholes in RW)
        g_w_ih, g_w_hh, g_b = (_blocks(g, TORCH_FROM_KERNEL) for g in (g_w_ih, g_w_hh, g_b))
    return (None if g_x is None else torch.from_numpy(g_x), torch.from_numpy(g_w_ih),
            torch.from_numpy(g_w_hh), torch.from_numpy(g_b), g_peep, g_hr,
            torch.from_numpy(grads.h0), torch.from_numpy(grads.c0))


def _gradient_shapes(steps, mb, n_in, hidden, projection, peepholes):
    size = projection or hidden
    return ((steps, mb, n_in), (4 * hidden, n_in), (4 * hidden, size), (4 * hidden,),
            (3, hidden) if peepholes else (0,), (projection, hidden) if projection else (0,),
            (mb, size), (mb, hidden))


def _zero_gradients(steps, mb, n_in, hidden, projection, dtype, peepholes):
    return tuple(torch.zeros(shape, dtype=dtype)
                 for shape in _gradient_shapes(steps, mb, n_in, hidden, projection, peepholes))


@lstm_layer_backward.register_fake
def _lstm_layer_backward_fake(grad_out, grad_h, grad_c, saved, w_ih, w_hh, steps, mb, n_in,
                              hidden, projection, dtype, forwards, peepholes):
    return tuple(saved.new_empty(shape, dtype=dtype)
                 for shape in _gradient_shapes(steps, mb, n_in, hidden, projection, peepholes))


# ---------------------------------------------------------------------------------------------
# autograd of the forward op

_INPUTS = 14         # of lstm_layer; the first 9 may have gradients (all but lengths, flags)


def _backward_sizes(x, w_ih, w_hh, w_peep, w_hr, forwards):
    """lstm_layer_backward's size arguments for a forward call with these inputs."""
    return (*x.shape, w_ih.shape[0] // 4, 0 if w_hr is None else w_hh.shape[1], x.dtype,
            forwards, w_peep is not None)


def _setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0, lengths, forwards = inputs[:11]
    # the weights too: the backward pass reads them where they are (_layer_forward), so
    # autograd must refuse them modified in place in between, as it does for nn.LSTM's
    ctx.save_for_backward(output[3], w_ih, w_hh)
    ctx.sizes = _backward_sizes(x, w_ih, w_hh, w_peep, w_hr, forwards)
    ctx.set_materialize_grads(False)


def _lstm_layer_grad(ctx, grad_out, grad_h, grad_c, grad_saved):
    # autograd runs this with grad mode on exactly when create_graph=True: the kernels are
    # differentiable once, and a gradient without a graph would drop a penalty silently
    _refuse_double_backward()
    needs = ctx.needs_input_grad
    if not any(needs[:9]):
        return (None,) * _INPUTS
    saved, w_ih, w_hh = ctx.saved_tensors      # (unpacking checks the weights' versions)
    return _input_gradients(needs, lstm_layer_backward(grad_out, grad_h, grad_c, saved, w_ih,
                                                       w_hh, *ctx.sizes))


def _input_gradients(needs, grads):
    """The 8 gradients of the backward computation -> those of lstm_layer's inputs (bias
    gradient to both biases; None where no gradient is needed)."""
    g_x, g_w_ih, g_w_hh, g_b, g_peep, g_hr, g_h0, g_c0 = grads
    g_b_hh = (g_b.clone() if needs[3] else g_b) if needs[4] else None
    grads = (g_x, g_w_ih, g_w_hh, g_b, g_b_hh, g_peep, g_hr, g_h0, g_c0)
    return (tuple(g if need else None for g, need in zip(grads, needs[:9]))
            + (None,) * (_INPUTS - 9))


lstm_layer.register_autograd(_lstm_layer_grad, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# eager calls: the same computations through an autograd.Function, without the dispatcher's
# generic layers (schema defaults, alias checks, the op's own autograd wrapper), which cost more
# than the kernels on small layers. Compilers and tracers see the op.

class _LayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0, lengths, forwards,
                activation, gate_activation, for_backprop):
        out, h_n, c_n, fwd = _layer_forward(x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0,
                                            lengths, forwards, activation, gate_activation,
                                            for_backprop)
        ctx.fwd = fwd
        # the backward pass reads the weights where they are: autograd's version check
        ctx.save_for_backward(w_ih, w_hh)
        ctx.sizes = _backward_sizes(x, w_ih, w_hh, w_peep, w_hr, forwards)
        ctx.set_materialize_grads(False)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        _refuse_double_backward()
        needs = ctx.needs_input_grad
        if not any(needs[:9]):
            return (None,) * _INPUTS
        ctx.saved_tensors                    # raises if a weight was modified in place
        return _input_gradients(needs, _layer_backward(ctx.fwd, grad_out, grad_h, grad_c,
                                                       *ctx.sizes, input_needed=needs[0]))


def run_layer(x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0, lengths, forwards, activation,
              gate_activation, for_backprop):
    """(out, h_n, c_n) of one layer and direction: the custom op :func:`lstm_layer` under
    torch.compile / export and torch.jit.trace, the same computation directly otherwise."""
    args = (x, w_ih, w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0, lengths, forwards, activation,
            gate_activation, for_backprop)
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return lstm_layer(*args)[:3]
    if not for_backprop and _forward_ad._current_level < 0:
        # nothing to differentiate (no_grad, or no input needing a gradient, and no dual
        # tensors): autograd's Function machinery would only add its cost (15 us of a 2 ms
        # pass). Dual tensors (forward-mode AD) go to the Function, which refuses them for want
        # of a jvp, where this path would drop their tangents silently.
        return _layer_forward(*args)[:3]
    return _LayerFunction.apply(*args)


def _side_by_side_possible(steps, minibatch, n_in, hidden, projection):
    """Whether a bidirectional layer's two directions may run side by side, each pass on one
    thread, one of them on a worker of PyTorch's OpenMP runtime: no compiler or tracer is
    watching (they see the op per direction), no forward-mode AD, and the team setting gives
    the layer two threads on that runtime's workers (with more, each direction keeps its
    team), for passes worth a thread each (functional._worth_a_thread) (sizes of x [T, mb, nIn] and of the
    layer; projection: P, or 0). Two single-thread passes meet at no barrier per step."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or _forward_ad._current_level >= 0:
        return False
    tuning, openmp = _threads._team_plan()
    if not openmp or tuning["threads"] != 2 or minibatch == 0:
        return False
    return _worth_a_thread(minibatch, n_in, hidden, steps, projection)


def _directions_forward(x, parameters, states, lengths, activation, gate_activation,
                        sum_directions, for_backprop):
    """Both directions' passes side by side into one output: (out [T, mb, 2 size] (the
    directions concatenated) or [T, mb, size] (summed), the two _layer_forward results)."""
    steps, mb = x.shape[0], x.shape[1]
    size = _sizes(parameters[0][0], parameters[0][1])[1]
    dtype = _function.NUMPY_DTYPES[x.dtype]
    if sum_directions:
        outs = [np.empty((steps, mb, size), dtype=dtype) for _ in range(2)]
    else:
        both = np.empty((steps, mb, 2 * size), dtype=dtype)
        outs = [both[:, :, :size], both[:, :, size:]]
    calls = tuple((_layer_forward, (x, *parameters[d], *states[d], lengths, d == 0, activation,
                                    gate_activation, for_backprop, outs[d], True), {})
                  for d in range(2))
    with _threads._blas_limit():
        results = _with_partner_stopped(_team.call_pair_on_openmp, *calls)
    if sum_directions:
        both = np.add(outs[0], outs[1], out=outs[0])
    return torch.from_numpy(both), results


def run_directions_side_by_side(x, parameters, states, lengths, activation, gate_activation,
                                sum_directions, for_backprop):
    """A bidirectional layer with its two directions side by side (see
    _side_by_side_possible): (out, (h_n, c_n) of each direction), or None where that does not
    apply. `parameters`: each direction's (w_ih, w_hh, b_ih, b_hh, w_peep, w_hr); `states`:
    each direction's (h0, c0)."""
    w_ih, w_hr = parameters[0][0], parameters[0][5]
    if not _side_by_side_possible(*x.shape, w_ih.shape[0] // 4,
                                  0 if w_hr is None else w_hr.shape[0]):
        return None
    if not for_backprop:
        out, results = _directions_forward(x, parameters, states, lengths, activation,
                                           gate_activation, sum_directions, False)
        return out, results[0][1:3], results[1][1:3]
    out, h_f, c_f, h_b, c_b = _DirectionsFunction.apply(
        x, *parameters[0], *states[0], *parameters[1], *states[1], lengths, activation,
        gate_activation, sum_directions)
    return out, (h_f, c_f), (h_b, c_b)


class _DirectionsFunction(torch.autograd.Function):
    """Both directions of a bidirectional layer as one autograd node, their forward passes side
    by side and then their backward passes side by side. Inputs: x, each direction's (w_ih,
    w_hh, b_ih, b_hh, w_peep, w_hr, h0, c0), lengths, activation, gate_activation,
    sum_directions; outputs: out, then h_n and c_n of each direction."""

    @staticmethod
    def forward(ctx, x, *inputs):
        per_direction = (inputs[:8], inputs[8:16])
        lengths, activation, gate_activation, sum_directions = inputs[16:]
        out, results = _directions_forward(x, [d[:6] for d in per_direction],
                                           [d[6:] for d in per_direction], lengths, activation,
                                           gate_activation, sum_directions, True)
        ctx.fwds = [r[3] for r in results]
        # the backward passes read the weights where they are: autograd's version check
        ctx.save_for_backward(*(w for d in per_direction for w in d[:2]))
        ctx.sizes = [_backward_sizes(x, d[0], d[1], d[4], d[5], forwards)
                     for d, forwards in zip(per_direction, (True, False))]
        ctx.sum_directions = sum_directions
        ctx.set_materialize_grads(False)
        return out, results[0][1], results[0][2], results[1][1], results[1][2]

    @staticmethod
    def backward(ctx, grad_out, grad_h_f, grad_c_f, grad_h_b, grad_c_b):
        _refuse_double_backward()
        needs = ctx.needs_input_grad
        if not any(needs[:17]):
            return (None,) * 21
        ctx.saved_tensors                    # raises if a weight was modified in place
        size = ctx.fwds[0].output.shape[1]
        grads_out = [grad_out, grad_out]
        if grad_out is not None and not ctx.sum_directions:
            grads_out = [grad_out[:, :, :size], grad_out[:, :, size:]]
        calls = tuple((_layer_backward, (ctx.fwds[d], grads_out[d], grad_h, grad_c,
                                         *ctx.sizes[d]), {"input_needed": needs[0],
                                                          "one_thread": True})
                      for d, (grad_h, grad_c) in enumerate(((grad_h_f, grad_c_f),
                                                            (grad_h_b, grad_c_b))))
        with _threads._blas_limit():
            results = _with_partner_stopped(_team.call_pair_on_openmp, *calls)
        per_direction = [_input_gradients((needs[0],) + needs[1 + 8 * d:9 + 8 * d], grads)
                         for d, grads in enumerate(results)]
        grad_x = per_direction[0][0]
        if grad_x is not None:
            grad_x.add_(per_direction[1][0])           # (fresh tensors of the passes)
        return (grad_x, *per_direction[0][1:9], *per_direction[1][1:9]) + (None,) * 4


# ---------------------------------------------------------------------------------------------
# torch.compile: Dynamo refuses every nn.LSTM instance (an nn.LSTM subclass included) unless
# torch._dynamo.config.allow_rnn is set, because it cannot trace nn.LSTM's own kernels. The
# modules here compute through the custom ops above, which it can: for them (and only them)
# the check is passed. Setting allow_rnn for the whole process would change how Dynamo treats
# every plain nn.LSTM in the program.

_BUILDER = "torch._dynamo.variables.builder"


def _let_dynamo_trace(builder, module_class):
    """Make Dynamo's VariableBuilder wrap instances of `module_class` as if allow_rnn were set
    for them; other modules are left to Dynamo's own rules."""
    cls = getattr(builder, "VariableBuilder", None)
    wrap_module = getattr(cls, "wrap_module", None)
    if wrap_module is None or getattr(wrap_module, "_lstmfast_original", None) is not None:
        return
    from torch._dynamo import config

    def wrap_lstmfast_module(self, value):
        if isinstance(value, module_class) and not config.allow_rnn:
            with config.patch(allow_rnn=True):
                return wrap_module(self, value)
        return wrap_module(self, value)

    wrap_lstmfast_module._lstmfast_original = wrap_module
    cls.wrap_module = wrap_lstmfast_module


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs `callback(module)` once the module `name` has been imported (Dynamo is imported
    lazily, by the first torch.compile: importing it here would cost a second)."""

    def __init__(self, name, callback):
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module
        callback = self.callback

        def exec_module(module):
            loader_exec(module)
            callback(module)

        spec.loader.exec_module = exec_module
        return spec


def enable_compile(module_class):
    """Let torch.compile trace `module_class` (an nn.LSTM subclass computing through the custom
    ops) without a graph break, now or when Dynamo is imported."""
    def patch(builder):
        _let_dynamo_trace(builder, module_class)

    if _BUILDER in sys.modules:
        patch(sys.modules[_BUILDER])
    else:
        sys.meta_path.insert(0, _PatchAfterImport(_BUILDER, patch))
