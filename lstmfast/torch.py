"""PyTorch modules backed by lstmfast's kernels (the only part of lstmfast that imports torch).

``lstmfast.torch.LSTM``, ``GravesLSTM`` (peepholes: what ``nn.LSTM`` does not offer) and
``GravesBidirectionalLSTM`` are ``torch.nn.Module``\\ s with ``nn.LSTM``'s conventions::

    import lstmfast.torch
    lstm = lstmfast.torch.GravesLSTM(input_size, hidden_size, batch_first=False, bias=True,
                                     dtype=torch.float32)
    out, (h_n, c_n) = lstm(x, (h_0, c_0))      # or lstm(x): zero initial state

* ``x``: ``[T, minibatch, input_size]`` (``batch_first=False``), ``[minibatch, T, input_size]``
  (``batch_first=True``) or unbatched ``[T, input_size]``; float32 or float64 on the CPU, the
  module's dtype.
* ``out``: ``[T, minibatch, hidden_size]`` (``[minibatch, T, hidden_size]`` batch-first);
  ``h_n``, ``c_n`` (and ``h_0``, ``c_0``): ``[num_directions, minibatch, hidden_size]``
  (``num_directions`` = 1, or 2 for GravesBidirectionalLSTM, forward direction first).
* GravesBidirectionalLSTM: ``out`` = forward direction + backward direction (DL4J sums them;
  ``nn.LSTM(bidirectional=True)`` concatenates); each direction has its own parameters.

Zero copy: the input is handed to the kernels as a strided view (``[T, mb, nIn]`` permuted is
lstmfast's ``[mb, nIn, T]``), and ``out`` is a permuted view of the kernels' output array, so it
is generally **not contiguous** (use ``.reshape`` rather than ``.view``, or ``.contiguous()``).
The weights the kernels read are views of the flat parameter (below); lstmfast keeps private
copies of them for the backward pass, so an optimizer step in between cannot mix versions.

Parameters: one flat ``torch.nn.Parameter`` ``params`` in Deeplearning4j's order, identical to
the ``params`` of the corresponding lstmfast layer (``lstmfast.LSTM``, ``lstmfast.GravesLSTM``,
``lstmfast.GravesBidirectionalLSTM``), with these views (properties, not parameters):

* ``W`` ``[input_size, 4h]``: ``params[:nIn*4h]`` in Fortran order (``W[i, j] = params[i + j*nIn]``);
* ``RW`` ``[h, 4h]`` (LSTM) or ``[h, 4h+3]`` (GravesLSTM: peephole columns wFF, wOO, wGG last),
  Fortran order, next;
* ``b`` ``[4h]`` last (absent with ``bias=False``: then ``b`` is a constant zero and ``params``
  holds only ``W``, ``RW``);
* gate blocks within every ``4h``: block input (cell candidate), forget, output, input gate;
* GravesBidirectionalLSTM: ``WF, RWF, bF`` then ``WB, RWB, bB`` (DL4J's order).

:meth:`from_layer` / :meth:`to_layer` convert from / to the lstmfast (NumPy) layers, and
``LSTM.from_torch(nn_lstm)`` from a single-layer unidirectional ``torch.nn.LSTM``.
Initialisation (:meth:`reset_parameters`, drawn from torch's RNG) is DL4J's: weights normal with
standard deviation ``sqrt(2 / (fan_in + fan_out))``, ``fan_in = h``, ``fan_out = nIn + h``; biases
zero except the forget-gate block, ``forget_gate_bias_init`` (1.0).

Gradients flow to the input, the parameters and the initial state (``h_0``, ``c_0``) through
:class:`LSTMFunction`, a ``torch.autograd.Function`` calling :func:`lstmfast.lstm_forward` /
:func:`lstmfast.lstm_backward` (first-order only). A gradient arriving at ``h_n`` is folded into
the output gradient at the last processed step (``h_n`` is that output); a gradient arriving at
``c_n`` (an encoder's state handed to a decoder) goes to lstm_backward's ``grad_last_c``.

Threads: PyTorch's OpenMP pool and the OpenBLAS that lstmfast's kernels call fight when both
are active (a small GEMM right after the other pool's work costs milliseconds). By default
(``lstmfast.torch.set_blas_threads(1)``) the kernels' BLAS runs single-threaded during the
modules' calls, and PyTorch's pool does the rest; see :func:`set_blas_threads` and
``benchmarks/bench_torch_module.py`` for the measurements.

Not supported: ``PackedSequence`` inputs, masks, ``num_layers > 1``, ``dropout``, ``proj_size``,
devices other than the CPU, double backward.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import layers as _layers
from .functional import ACTIVATIONS, GATE_ACTIVATIONS, lstm_backward, lstm_forward

__all__ = ["LSTM", "GravesLSTM", "GravesBidirectionalLSTM", "LSTMFunction", "lstm",
           "set_blas_threads", "get_blas_threads"]

_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_TORCH_DTYPES = {v: k for k, v in _NUMPY_DTYPES.items()}


# ---------------------------------------------------------------------------------------------
# the BLAS thread pool of lstmfast's kernels while they run inside PyTorch

_blas_setting = 1
_blas_lock = threading.Lock()
_blas_controller = None      # threadpoolctl controller restricted to lstmfast's (SciPy's) BLAS
_blas_unavailable = False


def set_blas_threads(setting):
    """How many threads the BLAS behind lstmfast's kernels may use during the modules' calls.

    1 (the default): single-threaded during the calls (the pool's size is restored after each).
    PyTorch's OpenMP pool and OpenBLAS's pthreads pool fight when both are active (measured in
    ``benchmarks/bench_torch_module.py``: 1.8 ms vs 19 ms per training step of a small layer at
    2 threads), and with ``torch.set_num_threads(1)`` (one core per process, as torchrun sets up)
    a multi-threaded BLAS would oversubscribe the cores. An integer n > 1: n threads during the
    calls (worth trying with ``torch.set_num_threads(1)`` and large layers); None: leave the
    pool alone. Needs ``threadpoolctl`` (to find the library); without it nothing is changed.
    Returns the previous setting."""
    global _blas_setting
    if setting is not None:
        if isinstance(setting, bool) or not isinstance(setting, numbers.Integral) or setting < 1:
            raise ValueError(f"set_blas_threads: expected None or an integer >= 1, got "
                             f"{setting!r}")
        setting = int(setting)
    previous, _blas_setting = _blas_setting, setting
    return previous


def get_blas_threads():
    """The current :func:`set_blas_threads` setting."""
    return _blas_setting


def _scipy_blas_controller():
    """A threadpoolctl controller for the BLAS library SciPy's cython_blas (hence lstmfast's
    kernels) uses, and nothing else (PyTorch's MKL / OpenMP pools are left alone)."""
    global _blas_controller, _blas_unavailable
    if _blas_controller is not None or _blas_unavailable:
        return _blas_controller
    with _blas_lock:
        if _blas_controller is not None or _blas_unavailable:
            return _blas_controller
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (loaded already by the kernels)
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_unavailable = True
            return None
        controller = ThreadpoolController()
        blas = controller.select(user_api="blas")
        # SciPy's own BLAS (a wheel's scipy.libs/libscipy_openblas); other builds (conda, system
        # packages) share one BLAS between NumPy and SciPy: then limit all BLAS libraries
        scipy_paths = [lib.filepath for lib in blas.lib_controllers
                       if "scipy.libs" in lib.filepath or "/scipy/" in lib.filepath]
        ours = controller.select(filepath=scipy_paths) if scipy_paths else blas
        if not ours.lib_controllers:
            _blas_unavailable = True
            return None
        _blas_controller = ours
        return ours


class _Pool:
    """Get / set the thread count of one BLAS library. OpenBLAS is called directly through its
    ``openblas_set_num_threads`` (threadpoolctl >= 3.6 lets only one "controlling" Python thread
    change an OpenBLAS pthreads pool and silently ignores the others, which would leave the pool
    limited after calls from several threads); other libraries go through threadpoolctl."""

    def __init__(self, lib):
        self._lib = lib
        self._get = self._set = None
        if lib.internal_api == "openblas":
            dynlib = getattr(lib, "dynlib", None)
            for prefix in ("", "scipy_"):
                for suffix in ("", "64_", "_64"):
                    setter = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                    getter = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None and self._set is None:
                        self._get, self._set = getter, setter

    def get(self):
        return self._get() if self._get is not None else self._lib.get_num_threads()

    def set(self, n):
        if self._set is not None:
            self._set(int(n))
        else:
            self._lib.set_num_threads(n)


_pools = None
_limit_depth = 0            # kernel calls currently inside the limit (from any Python thread)
_limit_saved = None         # the pools' thread counts before the outermost one


def _blas_pools():
    global _pools
    if _pools is None:
        controller = _scipy_blas_controller()
        _pools = [] if controller is None else [_Pool(lib) for lib in controller.lib_controllers]
    return _pools


@contextlib.contextmanager
def _blas_limit():
    """Limit lstmfast's BLAS as set_blas_threads says for the duration of a kernel call. The pool
    size is process-wide: concurrent calls share one limit, set by the first and undone by the
    last (so that interleaved calls from several threads cannot leave it limited)."""
    global _limit_depth, _limit_saved
    limit = _blas_setting
    if limit is None:
        yield
        return
    pools = _blas_pools()
    if not pools:
        yield
        return
    with _blas_lock:
        if _limit_depth == 0:
            _limit_saved = [pool.get() for pool in pools]
            for pool in pools:
                pool.set(limit)
        _limit_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _limit_depth -= 1
            if _limit_depth == 0:
                for pool, n in zip(pools, _limit_saved):
                    if n is not None:
                        pool.set(n)
                _limit_saved = None


# ---------------------------------------------------------------------------------------------
# the autograd function

def _numpy(t):
    return None if t is None else t.detach().numpy()


def _to_dl4j(x, batch_first):
    """[T, mb, nIn] / [mb, T, nIn] -> the [mb, nIn, T] view lstmfast reads (no copy)."""
    return x.permute(0, 2, 1) if batch_first else x.permute(1, 2, 0)


def _from_dl4j(a, batch_first):
    """[mb, f, T] -> [T, mb, f] / [mb, T, f] view."""
    return a.permute(0, 2, 1) if batch_first else a.permute(2, 0, 1)


class LSTMFunction(torch.autograd.Function):
    """``LSTMFunction.apply(x, W, RW, b, h0, c0, batch_first, forwards, activation,
    gate_activation, for_backprop) -> (out, h_n, c_n)`` for one direction; ``h0``/``c0``
    ``[mb, h]`` or None (zeros), ``h_n``/``c_n`` ``[mb, h]``. Use :func:`lstm` rather than this."""

    @staticmethod
    def forward(ctx, x, W, RW, b, h0, c0, batch_first, forwards, activation, gate_activation,
                for_backprop):
        with _blas_limit():
            fwd = lstm_forward(_numpy(_to_dl4j(x, batch_first)), _numpy(W), _numpy(RW),
                               _numpy(b), h0=_numpy(h0), c0=_numpy(c0), activation=activation,
                               gate_activation=gate_activation, forwards=forwards,
                               for_backprop=for_backprop)
        ctx.set_materialize_grads(False)
        ctx.fwd = fwd if for_backprop else None
        ctx.options = (batch_first, forwards, activation, gate_activation)
        ctx.save_for_backward(x, W, RW, b, h0, c0)
        out = _from_dl4j(torch.from_numpy(fwd.output), batch_first)
        return out, torch.from_numpy(fwd.last_h), torch.from_numpy(fwd.last_c)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        needs = ctx.needs_input_grad[:6]
        if (grad_out is None and grad_h is None and grad_c is None) or not any(needs):
            return (None,) * 11
        if ctx.fwd is None:
            raise RuntimeError("lstmfast.torch: the forward pass ran without keeping what the "
                               "backward pass needs (grad mode was off)")
        extra = {}
        if grad_c is not None:
            extra["grad_last_c"] = _numpy(grad_c)
        batch_first, forwards = ctx.options[0], ctx.options[1]
        fwd = ctx.fwd
        mb, hidden, steps = fwd.output.shape
        dtype = fwd.output.dtype
        if grad_out is None:
            eps = np.broadcast_to(np.zeros((), dtype=dtype), (mb, hidden, steps))
        else:
            eps = _numpy(_to_dl4j(grad_out, batch_first))
        if grad_h is not None:
            # h_n is the output at the last processed step: fold its gradient in there
            eps = np.array(eps, dtype=dtype, order="F", copy=True)
            eps[:, :, steps - 1 if forwards else 0] += _numpy(grad_h)
        with _blas_limit():
            grads = lstm_backward(fwd, eps, **extra)
        results = [
            _from_dl4j(torch.from_numpy(grads.input), batch_first) if needs[0] else None,
            torch.from_numpy(grads.input_weights) if needs[1] else None,
            torch.from_numpy(grads.recurrent_weights) if needs[2] else None,
            torch.from_numpy(grads.bias) if needs[3] else None,
            torch.from_numpy(grads.h0) if needs[4] else None,
            torch.from_numpy(grads.c0) if needs[5] else None,
        ]
        return tuple(results) + (None,) * 5


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
    if W.dtype not in _NUMPY_DTYPES:
        raise TypeError(f"W: dtype {W.dtype} is not supported (float32 or float64)")
    if x.dim() != 3:
        raise ValueError(f"x: expected a 3-D tensor, got shape {list(x.shape)}")
    for_backprop = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, W, RW, b, h0, c0))
    out, h_n, c_n = LSTMFunction.apply(x, W, RW, b, h0, c0, bool(batch_first), bool(forwards),
                                       activation, gate_activation, for_backprop)
    return out, (h_n, c_n)


# ---------------------------------------------------------------------------------------------
# modules

def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _LSTMBase(nn.Module):
    peepholes = False
    num_directions = 1
    _layer_class = None  # the lstmfast (NumPy) layer with the same parameter layout

    def __init__(self, input_size, hidden_size, *, batch_first=False, bias=True,
                 activation="tanh", gate_activation="sigmoid", forget_gate_bias_init=1.0,
                 device=None, dtype=None):
        super().__init__()
        self.input_size = _check_positive("input_size", input_size)
        self.hidden_size = _check_positive("hidden_size", hidden_size)
        self.batch_first = bool(batch_first)
        self.bias = bool(bias)
        if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        if not isinstance(gate_activation, str) or gate_activation.lower() not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation must be one of {', '.join(GATE_ACTIVATIONS)}; got "
                             f"{gate_activation!r}")
        self.activation = activation.lower()
        self.gate_activation = gate_activation.lower()
        self.forget_gate_bias_init = float(forget_gate_bias_init)
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"lstmfast computes on the CPU; device={device!r} is not supported")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _NUMPY_DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.params = nn.Parameter(torch.empty(self.num_directions * self._direction_size(),
                                               dtype=dtype))
        if not self.bias:
            self.register_buffer("_zero_bias", torch.zeros(4 * self.hidden_size, dtype=dtype),
                                 persistent=False)
        self.reset_parameters()

    # ---- layout ----------------------------------------------------------------------------
    def _sizes(self):
        h = self.hidden_size
        cols = 4 * h + (3 if self.peepholes else 0)
        return self.input_size * 4 * h, h * cols, (4 * h if self.bias else 0)

    def _direction_size(self):
        return sum(self._sizes())

    def _views(self, direction, flat=None):
        """(W [nIn, 4h], RW [h, 4h(+3)], b [4h]) of one direction: views of the flat parameter
        in DL4J's Fortran order (W has strides (1, nIn): what the kernels read in place)."""
        flat = self.params if flat is None else flat
        n_w, n_rw, n_b = self._sizes()
        h = self.hidden_size
        start = direction * self._direction_size()
        W = flat[start:start + n_w].view(4 * h, self.input_size).t()
        RW = flat[start + n_w:start + n_w + n_rw].view(n_rw // h, h).t()
        if self.bias:
            b = flat[start + n_w + n_rw:start + n_w + n_rw + n_b]
        else:
            b = self._zero_bias
        return W, RW, b

    @torch.no_grad()
    def reset_parameters(self):
        """DL4J's initialisation (see the module docstring), drawn from torch's RNG."""
        h = self.hidden_size
        std = math.sqrt(2.0 / (h + self.input_size + h))
        self.params.normal_(0.0, std)
        for d in range(self.num_directions):
            _, _, b = self._views(d)
            if self.bias:
                b.zero_()
                b[h:2 * h] = self.forget_gate_bias_init

    # ---- forward -------------------------------------------------------------------------
    def _check_input(self, input, hx):
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: expected a torch.Tensor input, got "
                            f"{type(input).__name__} (PackedSequence is not supported)")
        if input.device.type != "cpu":
            raise ValueError(f"{type(self).__name__}: lstmfast computes on the CPU; input is on "
                             f"{input.device}")
        if input.dtype != self.params.dtype:
            raise TypeError(f"{type(self).__name__}: input must have the type {self.params.dtype} "
                            f"(the module's dtype), got {input.dtype}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected a 2-D (unbatched) or 3-D (batched) "
                             f"input, got shape {list(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {input.shape[-1]}")
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        if 0 in input.shape:
            raise ValueError(f"{type(self).__name__}: empty input of shape {list(input.shape)}")
        mb = input.shape[0 if self.batch_first else 1]
        states = (None, None)
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{type(self).__name__}: hx must be a tuple (h_0, c_0)")
            states = []
            expected = [self.num_directions, mb, self.hidden_size] if batched else \
                [self.num_directions, self.hidden_size]
            for name, s in zip(("h_0", "c_0"), hx):
                if not isinstance(s, torch.Tensor):
                    raise TypeError(f"{type(self).__name__}: {name} must be a torch.Tensor")
                if list(s.shape) != expected:
                    raise ValueError(f"{type(self).__name__}: expected {name} of shape {expected}, "
                                     f"got {list(s.shape)}")
                if s.dtype != self.params.dtype:
                    raise TypeError(f"{type(self).__name__}: {name} must have the type "
                                    f"{self.params.dtype}, got {s.dtype}")
                if s.device.type != "cpu":
                    raise ValueError(f"{type(self).__name__}: {name} must be on the CPU")
                states.append(s if batched else s.unsqueeze(1))
        return input, batched, states

    def forward(self, input, hx=None):
        """``out, (h_n, c_n) = module(input, (h_0, c_0))``; see the module docstring."""
        x, batched, (h0, c0) = self._check_input(input, hx)
        outs, hs, cs = [], [], []
        for d in range(self.num_directions):
            W, RW, b = self._views(d)
            out, (h_n, c_n) = lstm(x, W, RW, b, None if h0 is None else h0[d],
                                   None if c0 is None else c0[d], batch_first=self.batch_first,
                                   forwards=d == 0, activation=self.activation,
                                   gate_activation=self.gate_activation)
            outs.append(out)
            hs.append(h_n)
            cs.append(c_n)
        out = outs[0] if len(outs) == 1 else outs[0] + outs[1]
        h_n, c_n = torch.stack(hs), torch.stack(cs)
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)

    # ---- conversion ----------------------------------------------------------------------
    def _dl4j_flat(self):
        """The parameters as a NumPy vector in the lstmfast layer's layout (with zero biases
        inserted when bias=False)."""
        p = self.params.detach().numpy()
        if self.bias:
            return p.copy()
        n = self._direction_size()
        h4 = 4 * self.hidden_size
        parts = []
        for d in range(self.num_directions):
            parts += [p[d * n:(d + 1) * n], np.zeros(h4, dtype=p.dtype)]
        return np.concatenate(parts)

    def to_layer(self):
        """The equivalent lstmfast (NumPy, DL4J layout) layer, parameters copied."""
        layer = self._layer_class(self.input_size, self.hidden_size, activation=self.activation,
                                  gate_activation=self.gate_activation,
                                  forget_gate_bias_init=self.forget_gate_bias_init,
                                  weight_init="zero", dtype=_NUMPY_DTYPES[self.params.dtype],
                                  seed=0)
        layer.params = self._dl4j_flat()
        return layer

    @classmethod
    def from_layer(cls, layer, *, batch_first=False):
        """A module with the configuration and (copied) parameters of an lstmfast layer of the
        matching class (lstmfast.LSTM, GravesLSTM or GravesBidirectionalLSTM)."""
        if type(layer) is not cls._layer_class:
            raise TypeError(f"{cls.__name__}.from_layer: expected an lstmfast."
                            f"{cls._layer_class.__name__}, got {type(layer).__name__}")
        if getattr(layer, "_process_forwards", True) is False:
            raise ValueError(f"{cls.__name__}.from_layer: the layer is the backward direction of "
                             f"a bidirectional layer")
        module = cls(layer.n_in, layer.n_out, batch_first=batch_first,
                     activation=layer.activation, gate_activation=layer.gate_activation,
                     forget_gate_bias_init=getattr(layer, "forget_gate_bias_init", 1.0),
                     dtype=_TORCH_DTYPES[np.dtype(layer.dtype)])
        with torch.no_grad():
            module.params.copy_(torch.from_numpy(np.ascontiguousarray(layer.params)))
        return module

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.batch_first:
            s += ", batch_first=True"
        if not self.bias:
            s += ", bias=False"
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        if self.gate_activation != "sigmoid":
            s += f", gate_activation={self.gate_activation!r}"
        return s + f", dtype={self.params.dtype}"


class LSTM(_LSTMBase):
    """DL4J's LSTM (no peepholes) as a ``torch.nn.Module`` with ``nn.LSTM``'s conventions.

    ``LSTM(input_size, hidden_size, *, batch_first=False, bias=True, activation="tanh",
    gate_activation="sigmoid", forget_gate_bias_init=1.0, device=None, dtype=None)``; with the
    default activations it computes what ``nn.LSTM`` computes. Parameters: the flat ``params``
    (DL4J order ``W, RW, b``), views ``W`` ``[nIn, 4h]``, ``RW`` ``[h, 4h]``, ``b`` ``[4h]``.
    """

    peepholes = False
    _layer_class = _layers.LSTM

    @property
    def W(self):
        return self._views(0)[0]

    @property
    def RW(self):
        return self._views(0)[1]

    @property
    def b(self):
        return self._views(0)[2]

    @classmethod
    def from_torch(cls, module):
        """A single-layer unidirectional ``torch.nn.LSTM`` (no projection) -> this module, same
        function, same dtype and ``batch_first``."""
        from .convert import torch_to_lstmfast
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"LSTM.from_torch: expected a torch.nn.LSTM, got {type(module).__name__}")
        if module.num_layers != 1 or module.bidirectional or module.proj_size:
            raise ValueError("LSTM.from_torch: only single-layer, unidirectional nn.LSTMs without "
                             "projection have an equivalent here")
        W, RW, b = torch_to_lstmfast(module.weight_ih_l0, module.weight_hh_l0,
                                     module.bias_ih_l0 if module.bias else None,
                                     module.bias_hh_l0 if module.bias else None)
        new = cls(module.input_size, module.hidden_size, batch_first=module.batch_first,
                  dtype=module.weight_ih_l0.dtype)
        with torch.no_grad():
            new.W.copy_(torch.from_numpy(W))
            new.RW.copy_(torch.from_numpy(RW))
            new.b.copy_(torch.from_numpy(b))
        return new


class GravesLSTM(LSTM):
    """DL4J's GravesLSTM (peephole connections) as a ``torch.nn.Module``; as :class:`LSTM` with
    ``RW`` ``[h, 4h+3]`` (peephole columns wFF, wOO, wGG: forget and input gates see ``c[t-1]``,
    the output gate ``c[t]``)."""

    peepholes = True
    _layer_class = _layers.GravesLSTM

    @classmethod
    def from_torch(cls, module):
        raise TypeError("GravesLSTM.from_torch: nn.LSTM has no peepholes; use "
                        "lstmfast.torch.LSTM.from_torch (or load the weights into a GravesLSTM "
                        "with zero peephole columns)")


class GravesBidirectionalLSTM(_LSTMBase):
    """DL4J's GravesBidirectionalLSTM as a ``torch.nn.Module``: two GravesLSTM directions with
    their own parameters, ``out`` = forward + backward direction, ``h_n``/``c_n``
    ``[2, mb, h]`` (forward direction first; ``h_0``/``c_0`` likewise: index 1 is the backward
    direction's initial state, which it starts from at the last time step). Flat ``params`` in
    DL4J's order ``WF, RWF, bF, WB, RWB, bB`` with those views."""

    peepholes = True
    num_directions = 2
    _layer_class = _layers.GravesBidirectionalLSTM

    WF = property(lambda self: self._views(0)[0])
    RWF = property(lambda self: self._views(0)[1])
    bF = property(lambda self: self._views(0)[2])
    WB = property(lambda self: self._views(1)[0])
    RWB = property(lambda self: self._views(1)[1])
    bB = property(lambda self: self._views(1)[2])
