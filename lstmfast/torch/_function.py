"""One direction through lstmfast's kernels from PyTorch: the layouts and the calls.

* :func:`kernel_weights` maps parameters in ``nn.LSTM``'s layout (``weight_ih [4h, nIn]``,
  ``weight_hh [4h, h]``, ``bias_ih``, ``bias_hh`` ``[4h]``, gates i, f, g, o, plus peepholes
  ``[3, h]``) to the kernels' layout; :func:`_forward` / :func:`_backward` run the kernels
  under the BLAS thread limit (the modules call them through the custom ops in ``_ops``).
* :class:`LSTMFunction` / :func:`lstm` take the kernels' layout (``W [nIn, 4h]``,
  ``RW [h, 4h(+3)]``, ``b [4h]``, gate blocks: block input, forget, output, input gate).

Both are first-order: a backward pass run with ``create_graph=True`` (double backward, a
gradient penalty) raises :class:`DoubleBackwardError` instead of returning a gradient that
autograd cannot differentiate further.
"""

from __future__ import annotations

import numpy as np
import torch

from ..functional import lstm_backward, lstm_forward
from ._threads import _ONE_THREAD, _kernel_call, _team_plan

__all__ = ["LSTMFunction", "lstm", "kernel_weights", "DoubleBackwardError",
           "NUMPY_DTYPES"]

NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


class DoubleBackwardError(RuntimeError):
    """A second-order derivative was asked of lstmfast's LSTM (the kernels are first-order)."""


def _refuse_double_backward():
    # the engine runs backward with grad mode on exactly when create_graph=True
    if torch.is_grad_enabled():
        raise DoubleBackwardError(
            "lstmfast.torch: the LSTM kernels are differentiable once; a backward pass with "
            "create_graph=True (double backward, e.g. a gradient penalty) is not supported. "
            "Use torch.nn.LSTM for higher-order derivatives.")


# ---------------------------------------------------------------------------------------------
# gate order: nn.LSTM's blocks are (i, f, g, o); the kernels' (DL4J's) are (g, f, o, i)

KERNEL_FROM_TORCH = (2, 1, 3, 0)     # kernel block k is nn.LSTM's block KERNEL_FROM_TORCH[k]
TORCH_FROM_KERNEL = (3, 1, 0, 2)
# peephole rows in the module (input, forget, output gate); kernel columns (wFF, wOO, wGG)
PEEPHOLE_KERNEL_FROM_ROWS = (1, 2, 0)
PEEPHOLE_ROWS_FROM_KERNEL = (2, 0, 1)


def _blocks(a, order):
    """Reorder the four gate blocks along axis 0 of `a` ([4h, ...])."""
    h = a.shape[0] // 4
    return np.concatenate([a[k * h:(k + 1) * h] for k in order])


def kernel_weights(w_ih, w_hh, b_ih, b_hh, w_peep):
    """nn.LSTM-layout tensors -> (W [nIn, 4h], RW [h, 4h(+3)], b [4h]) NumPy arrays in the
    kernels' layout, Fortran-ordered (fresh arrays, never views of the parameters)."""
    w = w_ih.detach().numpy()
    rw_rows = _blocks(w_hh.detach().numpy(), KERNEL_FROM_TORCH)
    if w_peep is not None:
        rw_rows = np.concatenate([rw_rows, w_peep.detach().numpy()[list(PEEPHOLE_KERNEL_FROM_ROWS)]])
    if b_ih is None:
        b = np.zeros(w.shape[0], dtype=w.dtype)
    else:
        b = _blocks(b_ih.detach().numpy() + b_hh.detach().numpy(), KERNEL_FROM_TORCH)
    # [4h, nIn] C-ordered rows are [nIn, 4h] Fortran-ordered columns
    return _blocks(w, KERNEL_FROM_TORCH).T, rw_rows.T, b


def _time_major_to_kernel(a):
    """[T, mb, f] -> the [mb, f, T] view the kernels read (no copy)."""
    return a.transpose(1, 2, 0)


def _epsilon(grad_out, shape, dtype):
    """dL/d(output) as the kernels want it, [mb, size, T] (zeros when none arrives)."""
    if grad_out is None:
        return np.zeros(shape, dtype=dtype, order="F")
    return _time_major_to_kernel(grad_out.detach().numpy())


def projection_weights(w_hr, w_peep):
    """weight_hr [P, h] and weight_peephole [3, h] (or None) in nn.LSTM's layout ->
    lstm_forward's ``projection_weights`` [h, P] and ``peephole_weights`` [h, 3] (columns wFF,
    wOO, wGG), fresh arrays."""
    proj = np.array(w_hr.detach().numpy().T, order="F")
    peep = (None if w_peep is None
            else np.array(w_peep.detach().numpy()[list(PEEPHOLE_KERNEL_FROM_ROWS)].T, order="F"))
    return proj, peep


def _forward(x_kernel, W, RW, b, h0, c0, forwards, activation, gate_activation, for_backprop,
             one_thread=False, **extra):
    """lstm_forward on the kernels' layout, under the BLAS thread limit (extra: lengths,
    projection_weights, peephole_weights); with one_thread, on the calling thread alone and
    as it is (the caller limits the BLAS: _ops.run_directions_side_by_side)."""
    if one_thread:
        return lstm_forward(x_kernel, W, RW, b, h0=h0, c0=c0, activation=activation,
                            gate_activation=gate_activation, forwards=forwards,
                            for_backprop=for_backprop, _tuning=_ONE_THREAD, **extra)
    tuning, openmp = _team_plan()
    return _kernel_call(openmp, lstm_forward, x_kernel, W, RW, b, h0=h0, c0=c0,
                        activation=activation, gate_activation=gate_activation,
                        forwards=forwards, for_backprop=for_backprop, _tuning=tuning, **extra)


def _backward(fwd, forwards, grad_out_time_major, grad_h, grad_c, grad_input_out=None,
              input_gradient=True, one_thread=False):
    """lstm_backward of `fwd` with the incoming gradients (tensors or None; grad_out
    time-major [T, mb, h]), dL/dx written into grad_input_out when given, not computed at all
    with input_gradient=False; None when nothing arrives. one_thread: as _forward's."""
    if grad_out_time_major is None and grad_h is None and grad_c is None:
        return None
    if fwd is None or not fwd.for_backprop:
        raise RuntimeError("lstmfast.torch: the forward pass ran without keeping what the "
                           "backward pass needs (grad mode was off)")
    eps = _epsilon(grad_out_time_major, fwd.output.shape, fwd.output.dtype)
    # dL/d(h_n) joins the output's gradient at each example's last processed step there
    extra = {name: t.detach().numpy() for name, t in (("grad_last_h", grad_h),
                                                     ("grad_last_c", grad_c)) if t is not None}
    if one_thread:
        return lstm_backward(fwd, eps, grad_input_out=grad_input_out,
                             input_gradient=input_gradient, _tuning=_ONE_THREAD, **extra)
    tuning, openmp = _team_plan()
    return _kernel_call(openmp, lstm_backward, fwd, eps, grad_input_out=grad_input_out,
                        input_gradient=input_gradient, _tuning=tuning, **extra)


def _numpy(t):
    return None if t is None else t.detach().numpy()


class LSTMFunction(torch.autograd.Function):
    """``LSTMFunction.apply(x, W, RW, b, h0, c0, batch_first, forwards, activation,
    gate_activation, for_backprop) -> (out, h_n, c_n)`` for one direction in the kernels'
    layout; ``h0``/``c0`` ``[mb, h]`` or None (zeros). Use :func:`lstm` rather than this."""

    @staticmethod
    def forward(ctx, x, W, RW, b, h0, c0, batch_first, forwards, activation, gate_activation,
                for_backprop):
        x_kernel = _numpy(x.permute(0, 2, 1) if batch_first else x.permute(1, 2, 0))
        fwd = _forward(x_kernel, _numpy(W), _numpy(RW), _numpy(b), _numpy(h0), _numpy(c0),
                       forwards, activation, gate_activation, for_backprop)
        ctx.set_materialize_grads(False)
        ctx.fwd = fwd if for_backprop else None
        ctx.forwards = forwards
        ctx.batch_first = batch_first
        out = fwd.output.transpose(0, 2, 1) if batch_first else fwd.output.transpose(2, 0, 1)
        return (torch.from_numpy(np.ascontiguousarray(out)), torch.from_numpy(fwd.last_h),
                torch.from_numpy(fwd.last_c))

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        _refuse_double_backward()
        needs = ctx.needs_input_grad[:6]
        if grad_out is not None and ctx.batch_first:
            grad_out = grad_out.transpose(0, 1)       # to time-major, as _run_backward reads it
        grads = (_backward(ctx.fwd, ctx.forwards, grad_out, grad_h, grad_c) if any(needs)
                 else None)
        if grads is None:
            return (None,) * 11
        gx = grads.input.transpose(0, 2, 1) if ctx.batch_first else grads.input.transpose(2, 0, 1)
        results = [torch.from_numpy(gx), torch.from_numpy(grads.input_weights),
                   torch.from_numpy(grads.recurrent_weights), torch.from_numpy(grads.bias),
                   torch.from_numpy(grads.h0), torch.from_numpy(grads.c0)]
        return tuple(r if need else None for r, need in zip(results, needs)) + (None,) * 5


def lstm(x, W, RW, b, h0=None, c0=None, *, batch_first=False, forwards=True, activation="tanh",
         gate_activation="sigmoid"):
    """Functional form of one direction: ``out, (h_n, c_n) = lstm(x, W, RW, b, h0, c0)``.

    x ``[T, mb, nIn]`` (``[mb, T, nIn]`` with batch_first); W ``[nIn, 4h]``, RW ``[h, 4h]`` or
    ``[h, 4h+3]`` (peepholes), b ``[4h]`` in lstmfast's layout and gate order; h0, c0 ``[mb, h]``
    or None; h_n, c_n ``[mb, h]``. ``forwards=False`` processes time in reverse (the output is
    still indexed by time). All tensors on the CPU in W's dtype (float32 or float64)."""
    for name, t in (("x", x), ("W", W), ("RW", RW), ("b", b), ("h0", h0), ("c0", c0)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(f"{name}: lstmfast computes on the CPU; got a tensor on {t.device}")
        if t.dtype != W.dtype:
            raise TypeError(f"{name}: expected dtype {W.dtype} (the weights' dtype), got {t.dtype}")
    if W.dtype not in NUMPY_DTYPES:
        raise TypeError(f"W: dtype {W.dtype} is not supported (float32 or float64)")
    if x.dim() != 3:
        raise ValueError(f"x: expected a 3-D tensor, got shape {list(x.shape)}")
    for_backprop = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, W, RW, b, h0, c0))
    out, h_n, c_n = LSTMFunction.apply(x, W, RW, b, h0, c0, bool(batch_first), bool(forwards),
                                       activation, gate_activation, for_backprop)
    return out, (h_n, c_n)
