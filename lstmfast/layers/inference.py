"""Layers of DL4J ComputationGraphs that lstmfast runs for inference only (see
``lstmfast.dl4j.load_graph``): ``SimpleRnn`` (alone or in DL4J's ``Bidirectional``) and
``GlobalPooling`` over time. They hold plain arrays: no gradients, no container, no guard."""

import numpy as np

from .._checks import check_choice, check_size
from .bidirectional import BIDIRECTIONAL_MODES, combine_directions
from .dense import DENSE_ACTIVATIONS, _activation_forward

__all__ = ["SimpleRnn", "GlobalPooling"]


class SimpleRnn:
    """DL4J's SimpleRnn for inference: ``out_t = act(x_t W + out_{t-1} RW + b)`` over
    ``x`` ``[minibatch, n_in, T]``, no state before the first step.

    ``params`` is DL4J's flat layout: ``W`` ``[n_in, n_out]`` then ``RW`` ``[n_out, n_out]`` (both
    Fortran order) then ``b`` ``[n_out]``; with ``mode`` (one of ``BIDIRECTIONAL_MODES``) the layer
    is DL4J's ``Bidirectional`` around a SimpleRnn: the forward direction's parameters, then the
    backward one's, combined by ``mode``. The layer's arrays are views into ``params``.
    """

    def __init__(self, n_in, n_out, activation="tanh", *, params, mode=None):
        n_in, n_out = check_size("n_in", n_in), check_size("n_out", n_out)
        self.n_in, self.n_out = n_in, n_out
        self.activation = check_choice("activation", activation, DENSE_ACTIVATIONS)
        self.mode = None if mode is None else check_choice("mode", mode, BIDIRECTIONAL_MODES)
        flat = np.asarray(params).reshape(-1)
        per_direction = n_in * n_out + n_out * n_out + n_out
        directions = 1 if self.mode is None else 2
        if flat.size != directions * per_direction:
            raise ValueError(f"params: expected {directions * per_direction} values for "
                             f"{directions} direction(s) of SimpleRnn({n_in}, {n_out}); "
                             f"got {flat.size}")
        self.params = flat
        self.directions = []
        for d in range(directions):
            piece = flat[d * per_direction:(d + 1) * per_direction]
            w = piece[:n_in * n_out].reshape((n_in, n_out), order="F")
            rw = piece[n_in * n_out:n_in * n_out + n_out * n_out].reshape((n_out, n_out), order="F")
            b = piece[n_in * n_out + n_out * n_out:]
            self.directions.append((w, rw, b))

    def num_params(self):
        return self.params.size

    def _direction(self, x, w, rw, b, forwards):
        minibatch, _, steps = x.shape
        out = np.empty((minibatch, self.n_out, steps), dtype=np.result_type(x, w))
        previous = None
        for t in (range(steps) if forwards else range(steps - 1, -1, -1)):
            z = x[:, :, t] @ w + b
            if previous is not None:
                z += previous @ rw
            previous = _activation_forward(self.activation, z)
            out[:, :, t] = previous
        return out

    def forward(self, x, mask=None, training=False):
        """The layer's output ``[minibatch, n_out, T]`` (``2 n_out`` for a concat)."""
        if mask is not None:
            raise ValueError("SimpleRnn does not take masks")
        if np.ndim(x) != 3 or np.shape(x)[1] != self.n_in:
            raise ValueError(f"x: expected [minibatch, {self.n_in}, T]; got shape {np.shape(x)}")
        outs = [self._direction(x, *arrays, forwards=(d == 0))
                for d, arrays in enumerate(self.directions)]
        return outs[0] if self.mode is None else combine_directions(self.mode, *outs)

    def __repr__(self):
        inner = f"SimpleRnn(n_in={self.n_in}, n_out={self.n_out}, activation={self.activation!r})"
        return inner if self.mode is None else f"Bidirectional({inner}, mode={self.mode!r})"


class GlobalPooling:
    """DL4J's GlobalPoolingLayer over time for inference: ``[minibatch, n, T]`` to ``[minibatch, n]``
    by ``kind`` "max", "avg", "sum" or "pnorm" (``(sum |x|^p)^(1/p)``)."""

    KINDS = ("max", "avg", "sum", "pnorm")

    def __init__(self, kind="max", p=2):
        self.kind = check_choice("kind", kind, self.KINDS)
        self.p = check_size("p", p)

    def num_params(self):
        return 0

    def forward(self, x, mask=None, training=False):
        if mask is not None:
            raise ValueError("GlobalPooling does not take masks")
        if np.ndim(x) != 3:
            raise ValueError(f"x: global pooling over time takes [minibatch, n, T]; got shape "
                             f"{np.shape(x)}")
        if self.kind == "max":
            return x.max(axis=2)
        if self.kind == "avg":
            return x.mean(axis=2)
        if self.kind == "sum":
            return x.sum(axis=2)
        return (np.abs(x) ** self.p).sum(axis=2) ** (1.0 / self.p)

    def __repr__(self):
        return f"GlobalPooling({self.kind}{', p=%d' % self.p if self.kind == 'pnorm' else ''})"

