"""Weight conversion between lstmfast and PyTorch ``nn.LSTM``, Keras ``LSTM`` and ONNX ``LSTM``.

lstmfast (Deeplearning4j) layout, for one direction with ``h`` units and ``nIn`` inputs:

* input weights ``W`` ``[nIn, 4h]``, recurrent weights ``RW`` ``[h, 4h]`` (``[h, 4h+3]`` with
  peepholes: columns ``wFF, wOO, wGG`` last), one bias ``b`` ``[4h]``;
* gate blocks within every ``4h``: **block input** (the cell candidate, PyTorch's ``g``,
  Keras's and ONNX's ``c``), **forget** gate, **output** gate, **input** gate;
* peepholes (GravesLSTM): ``wFF`` (forget gate) and ``wGG`` (input gate) multiply the previous
  cell state ``c[t-1]``, ``wOO`` (output gate) the current one ``c[t]``.

The peers:

=========  ========================  ==========================  ==============  ==========
peer       input weights             recurrent weights           bias            gate order
=========  ========================  ==========================  ==============  ==========
PyTorch    ``weight_ih`` [4h, nIn]   ``weight_hh`` [4h, h]        ``bias_ih`` +   i, f, g, o
                                                                  ``bias_hh``
Keras      ``kernel`` [nIn, 4h]      ``recurrent_kernel`` [h, 4h] ``bias`` [4h]   i, f, c, o
ONNX       ``W`` [dirs, 4h, nIn]     ``R`` [dirs, 4h, h]          ``B`` [dirs, 8h] i, o, f, c
                                                                  (Wb then Rb)
=========  ========================  ==========================  ==============  ==========

ONNX peepholes ``P`` ``[dirs, 3h]`` are ordered i, o, f and have exactly lstmfast's semantics
(input- and forget-gate peepholes on ``C[t-1]``, output-gate peephole on ``C[t]``), so
``P_i -> wGG``, ``P_o -> wOO``, ``P_f -> wFF``.

Bias conventions: PyTorch's two bias vectors (and ONNX's ``Wb`` and ``Rb``) are summed when
importing. Exporting puts the whole bias into the first vector (``bias_ih`` / ``Wb``) and zeros
into the second (``bias_hh`` / ``Rb``); the model computes the same function.

Array-level functions (NumPy in, NumPy out; PyTorch tensors are accepted as input anywhere):
:func:`torch_to_lstmfast`, :func:`lstmfast_to_torch`, :func:`keras_to_lstmfast`,
:func:`lstmfast_to_keras`, :func:`onnx_to_lstmfast`, :func:`lstmfast_to_onnx`.

Whole-layer helpers: :func:`from_torch` / :func:`to_torch` (``nn.LSTM`` <-> :class:`lstmfast.LSTM`,
or :class:`lstmfast.Bidirectional` in ``"concat"`` mode for ``bidirectional=True``),
:func:`from_keras` / :func:`to_keras`, :func:`from_onnx` / :func:`to_onnx` (also GravesLSTM via
the peepholes). PyTorch is imported only by the functions that build or read a torch module.
"""

from __future__ import annotations

import numbers

import numpy as np

from .layers import LSTM, Bidirectional, GravesLSTM, UnidirectionalLSTM

__all__ = [
    "torch_to_lstmfast", "lstmfast_to_torch", "keras_to_lstmfast", "lstmfast_to_keras",
    "onnx_to_lstmfast", "lstmfast_to_onnx",
    "from_torch", "to_torch", "from_keras", "to_keras", "from_onnx", "to_onnx",
    "GATE_ORDERS",
]

#: Gate block order of every layout: "c" is the cell candidate (block input), "i" the input gate.
GATE_ORDERS = {
    "lstmfast": ("c", "f", "o", "i"),
    "torch": ("i", "f", "c", "o"),
    "keras": ("i", "f", "c", "o"),
    "onnx": ("i", "o", "f", "c"),
}
#: ONNX peephole order (P) and lstmfast's peephole columns after the 4h recurrent columns.
_ONNX_PEEPHOLES = ("i", "o", "f")
_LSTMFAST_PEEPHOLES = ("f", "o", "i")   # wFF, wOO, wGG


# ----------------------------------------------------------------------------------------------
# helpers


def _array(value, name, ndim=None):
    """A floating NumPy array from a NumPy array, a list or a (CPU or not) torch tensor."""
    if value is None:
        return None
    if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if ndim is not None and arr.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {list(arr.shape)}")
    return arr


def _result_dtype(*arrays):
    dtype = np.result_type(*[a.dtype for a in arrays if a is not None])
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        dtype = np.dtype(np.float64)
    return dtype


def _permutation(source, target):
    """Block indices: target block k is source block perm[k]."""
    return [GATE_ORDERS[source].index(g) for g in GATE_ORDERS[target]]


def _reorder(array, axis, hidden, source, target):
    """Reorder the four gate blocks of length `hidden` along `axis`."""
    perm = _permutation(source, target)
    blocks = np.split(np.asarray(array), 4, axis=axis)
    if blocks[0].shape[axis] != hidden:  # pragma: no cover - guarded by the callers' checks
        raise ValueError("internal: gate block size mismatch")
    return np.concatenate([blocks[k] for k in perm], axis=axis)


def _check_hidden_from_rows(array, name, rows_per_gate_axis=0):
    n = array.shape[rows_per_gate_axis]
    if n % 4 or n == 0:
        raise ValueError(f"{name}: dimension {rows_per_gate_axis} (= {n}) must be 4h (four gate "
                         f"blocks), got shape {list(array.shape)}")
    return n // 4


def _split_lstmfast(W, RW, b):
    """Validate lstmfast weights; returns (W, RW4 [h, 4h], b [4h], peepholes [h, 3] or None)."""
    W = _array(W, "W", 2)
    RW = _array(RW, "RW", 2)
    hidden = RW.shape[0]
    if hidden < 1:
        raise ValueError(f"RW: expected [h, 4h] or [h, 4h+3], got shape {list(RW.shape)}")
    if RW.shape[1] not in (4 * hidden, 4 * hidden + 3):
        raise ValueError(f"RW: expected [h, 4h] = [{hidden}, {4 * hidden}] or [h, 4h+3] = "
                         f"[{hidden}, {4 * hidden + 3}], got {list(RW.shape)}")
    if W.shape[1] != 4 * hidden:
        raise ValueError(f"W: expected [nIn, 4h] with 4h = {4 * hidden} (h = RW.shape[0]), "
                         f"got {list(W.shape)}")
    if b is None:
        b = np.zeros(4 * hidden, dtype=W.dtype)
    b = _array(b, "b").reshape(-1) if np.size(b) == 4 * hidden else _array(b, "b")
    if b.shape != (4 * hidden,):
        raise ValueError(f"b: expected [4h] = [{4 * hidden}] (or [1, {4 * hidden}]), got "
                         f"{list(b.shape)}")
    peep = RW[:, 4 * hidden:] if RW.shape[1] == 4 * hidden + 3 else None
    return W, RW[:, :4 * hidden], b, peep


def _join_recurrent(rw4, peep, dtype):
    if peep is None:
        return np.asfortranarray(rw4, dtype=dtype)
    return np.asfortranarray(np.concatenate([rw4, peep], axis=1), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# PyTorch arrays


def torch_to_lstmfast(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """``nn.LSTM`` weights of one layer and direction -> lstmfast ``(W, RW, b)``.

    weight_ih ``[4h, nIn]``, weight_hh ``[4h, h]`` (gates i, f, g, o), bias_ih / bias_hh
    ``[4h]`` or None (``bias=False``); the two biases are summed. Returns Fortran-ordered
    ``W [nIn, 4h]``, ``RW [h, 4h]``, ``b [4h]`` in the inputs' floating dtype.
    """
    w_ih = _array(weight_ih, "weight_ih", 2)
    w_hh = _array(weight_hh, "weight_hh", 2)
    hidden = _check_hidden_from_rows(w_ih, "weight_ih")
    if w_hh.shape != (4 * hidden, hidden):
        raise ValueError(f"weight_hh: expected [4h, h] = [{4 * hidden}, {hidden}] (h from "
                         f"weight_ih {list(w_ih.shape)}), got {list(w_hh.shape)}"
                         + ("; nn.LSTM with proj_size > 0 is not supported"
                            if w_hh.shape[0] == 4 * hidden else ""))
    biases = [_array(v, name, 1) for v, name in ((bias_ih, "bias_ih"), (bias_hh, "bias_hh"))]
    for v, name in zip(biases, ("bias_ih", "bias_hh")):
        if v is not None and v.shape != (4 * hidden,):
            raise ValueError(f"{name}: expected [4h] = [{4 * hidden}], got {list(v.shape)}")
    dtype = _result_dtype(w_ih, w_hh, *biases)
    bias = np.zeros(4 * hidden, dtype=np.float64)
    for v in biases:
        if v is not None:
            bias = bias + v.astype(np.float64)
    W = np.asfortranarray(_reorder(w_ih, 0, hidden, "torch", "lstmfast").T, dtype=dtype)
    RW = np.asfortranarray(_reorder(w_hh, 0, hidden, "torch", "lstmfast").T, dtype=dtype)
    b = _reorder(bias, 0, hidden, "torch", "lstmfast").astype(dtype)
    return W, RW, b


def lstmfast_to_torch(W, RW, b=None):
    """lstmfast ``(W, RW, b)`` (no peepholes) -> ``(weight_ih, weight_hh, bias_ih, bias_hh)``
    NumPy arrays for ``nn.LSTM``: ``[4h, nIn]``, ``[4h, h]``, ``[4h]``, ``[4h]``. The whole bias
    goes into ``bias_ih``; ``bias_hh`` is zeros."""
    W, rw4, b, peep = _split_lstmfast(W, RW, b)
    if peep is not None:
        raise ValueError("RW has peephole columns [h, 4h+3] (GravesLSTM): nn.LSTM has no "
                         "peepholes; use lstmfast.torch.GravesLSTM to run it in PyTorch")
    hidden = rw4.shape[0]
    dtype = _result_dtype(W, rw4, b)
    weight_ih = np.ascontiguousarray(_reorder(W, 1, hidden, "lstmfast", "torch").T, dtype=dtype)
    weight_hh = np.ascontiguousarray(_reorder(rw4, 1, hidden, "lstmfast", "torch").T, dtype=dtype)
    bias_ih = _reorder(b, 0, hidden, "lstmfast", "torch").astype(dtype)
    return weight_ih, weight_hh, bias_ih, np.zeros_like(bias_ih)


# ----------------------------------------------------------------------------------------------
# Keras arrays


def keras_to_lstmfast(kernel, recurrent_kernel, bias=None):
    """Keras ``LSTM`` weights (``layer.get_weights()``: kernel ``[nIn, 4h]``, recurrent_kernel
    ``[h, 4h]``, bias ``[4h]`` or None; gates i, f, c, o) -> lstmfast ``(W, RW, b)``."""
    kernel = _array(kernel, "kernel", 2)
    rk = _array(recurrent_kernel, "recurrent_kernel", 2)
    hidden = _check_hidden_from_rows(kernel, "kernel", 1)
    if rk.shape != (hidden, 4 * hidden):
        raise ValueError(f"recurrent_kernel: expected [h, 4h] = [{hidden}, {4 * hidden}], got "
                         f"{list(rk.shape)}")
    bias = _array(bias, "bias", 1)
    if bias is not None and bias.shape != (4 * hidden,):
        raise ValueError(f"bias: expected [4h] = [{4 * hidden}], got {list(bias.shape)}")
    dtype = _result_dtype(kernel, rk, bias)
    W = np.asfortranarray(_reorder(kernel, 1, hidden, "keras", "lstmfast"), dtype=dtype)
    RW = np.asfortranarray(_reorder(rk, 1, hidden, "keras", "lstmfast"), dtype=dtype)
    b = (np.zeros(4 * hidden, dtype=dtype) if bias is None
         else _reorder(bias, 0, hidden, "keras", "lstmfast").astype(dtype))
    return W, RW, b


def lstmfast_to_keras(W, RW, b=None):
    """lstmfast ``(W, RW, b)`` (no peepholes) -> ``[kernel, recurrent_kernel, bias]`` for Keras
    ``layer.set_weights`` (``[nIn, 4h]``, ``[h, 4h]``, ``[4h]``, gates i, f, c, o)."""
    W, rw4, b, peep = _split_lstmfast(W, RW, b)
    if peep is not None:
        raise ValueError("RW has peephole columns [h, 4h+3] (GravesLSTM): Keras LSTM has no "
                         "peepholes")
    hidden = rw4.shape[0]
    dtype = _result_dtype(W, rw4, b)
    return [np.ascontiguousarray(_reorder(W, 1, hidden, "lstmfast", "keras"), dtype=dtype),
            np.ascontiguousarray(_reorder(rw4, 1, hidden, "lstmfast", "keras"), dtype=dtype),
            _reorder(b, 0, hidden, "lstmfast", "keras").astype(dtype)]


# ----------------------------------------------------------------------------------------------
# ONNX arrays


def onnx_to_lstmfast(W, R, B=None, P=None, *, direction=0):
    """ONNX ``LSTM`` inputs -> lstmfast ``(W, RW, b)`` for one direction.

    W ``[num_directions, 4h, nIn]``, R ``[num_directions, 4h, h]`` (gates i, o, f, c),
    B ``[num_directions, 8h]`` (``Wb`` then ``Rb``, summed) or None, P ``[num_directions, 3h]``
    (peepholes i, o, f) or None. ``direction``: index into the leading axis (0 = forward, 1 =
    the reverse direction of a bidirectional node). With P the result has RW ``[h, 4h+3]``
    (GravesLSTM: ``wFF = P_f``, ``wOO = P_o``, ``wGG = P_i``).
    """
    Wa = _array(W, "W", 3)
    Ra = _array(R, "R", 3)
    dirs = Wa.shape[0]
    if not isinstance(direction, numbers.Integral) or not 0 <= direction < dirs:
        raise ValueError(f"direction: expected an index in [0, {dirs}) (W has {dirs} "
                         f"direction(s)), got {direction!r}")
    hidden = _check_hidden_from_rows(Wa, "W", 1)
    if Ra.shape != (dirs, 4 * hidden, hidden):
        raise ValueError(f"R: expected [num_directions, 4h, h] = [{dirs}, {4 * hidden}, {hidden}], "
                         f"got {list(Ra.shape)}")
    Ba = _array(B, "B", 2)
    if Ba is not None and Ba.shape != (dirs, 8 * hidden):
        raise ValueError(f"B: expected [num_directions, 8h] = [{dirs}, {8 * hidden}], got "
                         f"{list(Ba.shape)}")
    Pa = _array(P, "P", 2)
    if Pa is not None and Pa.shape != (dirs, 3 * hidden):
        raise ValueError(f"P: expected [num_directions, 3h] = [{dirs}, {3 * hidden}], got "
                         f"{list(Pa.shape)}")
    dtype = _result_dtype(Wa, Ra, Ba, Pa)
    w = np.asfortranarray(_reorder(Wa[direction], 0, hidden, "onnx", "lstmfast").T, dtype=dtype)
    r = _reorder(Ra[direction], 0, hidden, "onnx", "lstmfast").T
    if Ba is None:
        bias = np.zeros(4 * hidden, dtype=dtype)
    else:
        summed = Ba[direction, :4 * hidden].astype(np.float64) + Ba[direction, 4 * hidden:]
        bias = _reorder(summed, 0, hidden, "onnx", "lstmfast").astype(dtype)
    peep = None
    if Pa is not None:
        blocks = np.split(Pa[direction], 3)
        by_gate = dict(zip(_ONNX_PEEPHOLES, blocks))
        peep = np.stack([by_gate[g] for g in _LSTMFAST_PEEPHOLES], axis=1)
    return w, _join_recurrent(r, peep, dtype), bias


def lstmfast_to_onnx(W, RW, b=None):
    """lstmfast ``(W, RW, b)`` of one direction -> ONNX ``(W, R, B, P)`` with a leading
    direction axis of 1: ``[1, 4h, nIn]``, ``[1, 4h, h]``, ``[1, 8h]`` (``Wb`` = b, ``Rb`` = 0),
    ``[1, 3h]`` (peepholes i, o, f) or None without peepholes. Stack two with
    ``np.concatenate`` for a bidirectional node (forward first)."""
    W, rw4, b, peep = _split_lstmfast(W, RW, b)
    hidden = rw4.shape[0]
    dtype = _result_dtype(W, rw4, b, peep)
    w = np.ascontiguousarray(_reorder(W, 1, hidden, "lstmfast", "onnx").T, dtype=dtype)[None]
    r = np.ascontiguousarray(_reorder(rw4, 1, hidden, "lstmfast", "onnx").T, dtype=dtype)[None]
    wb = _reorder(b, 0, hidden, "lstmfast", "onnx").astype(dtype)
    B = np.concatenate([wb, np.zeros_like(wb)])[None]
    P = None
    if peep is not None:
        by_gate = {g: peep[:, k] for k, g in enumerate(_LSTMFAST_PEEPHOLES)}
        P = np.concatenate([by_gate[g] for g in _ONNX_PEEPHOLES]).astype(dtype)[None]
    return w, r, B, P


# ----------------------------------------------------------------------------------------------
# whole layers


def _new_layer(cls, n_in, hidden, dtype, activation="tanh", gate_activation="sigmoid",
               reverse=False):
    return cls(n_in, hidden, activation=activation, gate_activation=gate_activation,
               weight_init="zero", dtype=dtype, seed=0, reverse=reverse)


def _fill(layer, W, RW, b):
    layer.W[...] = W
    layer.RW[...] = RW
    layer.b[...] = b
    return layer


def _make_layer(directions, activation="tanh", gate_activation="sigmoid", reverse=False):
    """A GravesLSTM/LSTM (one direction, processing time in reverse if asked) or
    Bidirectional(concat) from [(W, RW, b), ...]."""
    W, RW, _ = directions[0]
    dtype = _result_dtype(*[a for d in directions for a in d])
    hidden = RW.shape[0]
    cls = GravesLSTM if RW.shape[1] == 4 * hidden + 3 else LSTM
    first = _fill(_new_layer(cls, W.shape[0], hidden, dtype, activation, gate_activation,
                             reverse=reverse), *directions[0])
    if len(directions) == 1:
        return first
    layer = Bidirectional(first, mode="concat", seed=0)
    _fill(layer.backward_layer, *directions[1])
    return layer


def _directions_of(layer, what, reverse_ok=False):
    """[(W, RW, b), ...] of an lstmfast layer: one for LSTM/GravesLSTM, two (forward first)
    for Bidirectional(mode="concat"). ``reverse_ok``: a one-direction layer may process time
    in reverse."""
    if isinstance(layer, UnidirectionalLSTM):
        if layer.reverse and not reverse_ok:
            raise ValueError(f"{what}: the layer processes time in reverse (made with "
                             f"reverse=True, the backward direction of a bidirectional layer, or "
                             f"an ONNX 'reverse' node); the peer has no such single layer")
        return [(layer.W, layer.RW, layer.b)], layer
    if isinstance(layer, Bidirectional):
        if layer.mode != "concat":
            raise ValueError(f"{what}: Bidirectional(mode={layer.mode!r}) has no equivalent; the "
                             f"peer concatenates the directions (mode='concat')")
        f, b = layer.forward_layer, layer.backward_layer
        return [(f.W, f.RW, f.b), (b.W, b.RW, b.b)], f
    raise TypeError(f"{what}: expected an lstmfast LSTM, GravesLSTM or Bidirectional(mode='concat') "
                    f"layer, got {type(layer).__name__} (GravesBidirectionalLSTM sums its "
                    f"directions, which none of the peers does; convert its forward_layer and "
                    f"backward_layer with the array functions)")


def from_torch(module, layer=0):
    """An ``nn.LSTM`` (with ``num_layers > 1``: its layer number ``layer``) ->
    :class:`lstmfast.LSTM` (unidirectional) or :class:`lstmfast.Bidirectional`
    around an LSTM in ``"concat"`` mode (``bidirectional=True``: nn.LSTM concatenates the
    directions, forward first, as that mode does). The lstmfast layer works in DL4J's layout
    ``[minibatch, nIn, T]``; its dtype is the module's (float32 or float64).

    ``proj_size > 0`` is refused (lstmfast has no projection); ``dropout`` between stacked
    layers is not part of a single layer. To keep working in PyTorch instead, see
    :meth:`lstmfast.torch.LSTM.from_layer`.
    """
    for attr in ("weight_ih_l0", "hidden_size", "num_layers"):
        if not hasattr(module, attr):
            raise TypeError(f"from_torch: expected a torch.nn.LSTM, got {type(module).__name__}")
    if getattr(module, "mode", "LSTM") != "LSTM":
        raise TypeError(f"from_torch: expected a torch.nn.LSTM, got mode {module.mode!r}")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"from_torch: nn.LSTM with proj_size={module.proj_size} is not supported "
                         f"(lstmfast layers have no output projection)")
    if not isinstance(layer, numbers.Integral) or not 0 <= layer < module.num_layers:
        raise ValueError(f"from_torch: layer must be in [0, {module.num_layers}), got {layer!r}")
    suffixes = [f"_l{layer}"] + ([f"_l{layer}_reverse"] if module.bidirectional else [])
    directions = []
    for s in suffixes:
        directions.append(torch_to_lstmfast(
            getattr(module, "weight_ih" + s), getattr(module, "weight_hh" + s),
            getattr(module, "bias_ih" + s, None) if module.bias else None,
            getattr(module, "bias_hh" + s, None) if module.bias else None))
    return _make_layer(directions)


def to_torch(layer, *, batch_first=False):
    """An lstmfast :class:`~lstmfast.LSTM` (tanh / sigmoid) or ``Bidirectional(LSTM,
    mode="concat")`` -> an equivalent ``torch.nn.LSTM`` (same dtype, CPU). The bias goes into
    ``bias_ih``; ``bias_hh`` is zeros. nn.LSTM has no peepholes and fixed activations, so a
    GravesLSTM or other activations are a ValueError (use :mod:`lstmfast.torch` for those)."""
    import torch

    directions, first = _directions_of(layer, "to_torch")
    if first.peepholes:
        raise ValueError("to_torch: nn.LSTM has no peephole connections (GravesLSTM); use "
                         "lstmfast.torch.GravesLSTM.from_layer(layer) to run it in PyTorch")
    if first.activation != "tanh" or first.gate_activation != "sigmoid":
        raise ValueError(f"to_torch: nn.LSTM computes with tanh and sigmoid; the layer has "
                         f"activation={first.activation!r}, gate_activation="
                         f"{first.gate_activation!r} (use lstmfast.torch.LSTM.from_layer)")
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[first.dtype]
    module = torch.nn.LSTM(first.n_in, first.n_out, batch_first=batch_first,
                           bidirectional=len(directions) == 2, dtype=dtype)
    with torch.no_grad():
        for d, suffix in zip(directions, ("_l0", "_l0_reverse")):
            for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                   lstmfast_to_torch(*d)):
                getattr(module, name + suffix).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


_KERAS_ACTIVATIONS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu",
                      "softsign": "softsign", "softplus": "softplus", "elu": "elu",
                      "selu": "selu", "linear": "identity", None: "identity"}
_KERAS_GATE_ACTIVATIONS = {"sigmoid": "sigmoid", "hardsigmoid": "hardsigmoid",
                           "hard_sigmoid": "hardsigmoid"}
#: Keras 3's hard_sigmoid is clip(x / 6 + 0.5, 0, 1) = Keras 2's clip(0.2 z + 0.5, 0, 1) at
#: z = (5 / 6) x: scaling the gates' pre-activations (their weights and biases) by 5/6 makes
#: lstmfast's hardsigmoid compute Keras 3's function.
KERAS3_HARD_SIGMOID_SCALE = 5.0 / 6.0


def _keras_activation(name, table, what):
    key = name.lower() if isinstance(name, str) else name
    if key not in table:
        raise ValueError(f"{what}={name!r} is not supported; supported: "
                         f"{', '.join(str(k) for k in table)}")
    return table[key]


def keras_major_version(obj):
    """2 or 3: the Keras generation an object (a layer) comes from, None when unknown. Keras
    inside TensorFlow (``tensorflow.keras`` before TF 2.16) and ``tf_keras`` are Keras 2."""
    import sys

    top = type(obj).__module__.split(".")[0]
    if top in ("tensorflow", "tf_keras"):
        return 2
    version = getattr(sys.modules.get(top), "__version__", None) if top == "keras" else None
    if isinstance(version, str) and version[:1] in ("2", "3"):
        return int(version[0])
    return None


def scale_gate_preactivations(W, RW, b, factor):
    """Multiply the forget, output and input gates' weights and biases of lstmfast
    ``(W, RW, b)`` by ``factor`` (the block input's are kept): what maps Keras 3's
    hard_sigmoid onto lstmfast's (see :data:`KERAS3_HARD_SIGMOID_SCALE`)."""
    hidden = RW.shape[0]
    W, RW, b = W.copy(order="F"), RW.copy(order="F"), b.copy()
    for a in (W, RW):
        a[:, hidden:] *= factor           # f, o, i blocks, and the peephole columns if any
    b[hidden:] *= factor
    return W, RW, b


def from_keras(kernel, recurrent_kernel=None, bias=None, *, activation=None,
               recurrent_activation=None, keras_version=None):
    """Keras ``LSTM`` -> :class:`lstmfast.LSTM`.

    Either the three arrays of ``layer.get_weights()`` (kernel ``[nIn, 4h]``, recurrent_kernel
    ``[h, 4h]``, bias ``[4h]`` or None for ``use_bias=False``) with the layer's ``activation``
    (default ``"tanh"``) and ``recurrent_activation`` (default ``"sigmoid"``) names as Keras
    writes them, or the Keras layer object itself: its ``get_config()`` supplies what the
    keyword arguments do not (keywords given win over the configuration).

    ``recurrent_activation="hard_sigmoid"`` means what the model's Keras defines:
    ``clip(0.2 x + 0.5, 0, 1)`` in Keras 2, ``clip(x / 6 + 0.5, 0, 1)`` in Keras 3 (run exactly
    by scaling the gates' weights by 5/6). ``keras_version`` (2 or 3) says which; a layer
    object tells it itself. ``"hardsigmoid"`` is lstmfast's (Keras 2's) function. ``go_backwards=True``
    layers are refused (:func:`lstmfast.keras.load` runs them). Dropout and recurrent dropout
    only act in training and are not carried over.
    """
    if recurrent_kernel is None and hasattr(kernel, "get_weights"):
        keras_layer = kernel
        config = keras_layer.get_config() if hasattr(keras_layer, "get_config") else {}
        if config.get("go_backwards"):
            raise ValueError("from_keras: go_backwards=True layers are not supported here; "
                             "lstmfast.keras.load runs whole models with them")
        weights = keras_layer.get_weights()
        if len(weights) not in (2, 3):
            raise ValueError(f"from_keras: expected 2 or 3 weight arrays from get_weights(), got "
                             f"{len(weights)}")
        kernel, recurrent_kernel = weights[0], weights[1]
        bias = weights[2] if len(weights) == 3 else None
        activation = config.get("activation", "tanh") if activation is None else activation
        if recurrent_activation is None:
            recurrent_activation = config.get("recurrent_activation", "sigmoid")
        if keras_version is None:
            keras_version = keras_major_version(keras_layer)
    if recurrent_kernel is None:
        raise TypeError("from_keras: pass kernel, recurrent_kernel (and bias), or a Keras layer")
    activation = "tanh" if activation is None else activation
    recurrent_activation = "sigmoid" if recurrent_activation is None else recurrent_activation
    if keras_version not in (None, 2, 3):
        raise ValueError(f"from_keras: keras_version must be 2, 3 or None, got {keras_version!r}")
    act = _keras_activation(activation, _KERAS_ACTIVATIONS, "activation")
    gate = _keras_activation(recurrent_activation, _KERAS_GATE_ACTIVATIONS, "recurrent_activation")
    weights = keras_to_lstmfast(kernel, recurrent_kernel, bias)
    if str(recurrent_activation).lower() == "hard_sigmoid":
        if keras_version is None:
            raise ValueError(
                "from_keras: recurrent_activation='hard_sigmoid' is clip(0.2 x + 0.5, 0, 1) in "
                "Keras 2 and clip(x / 6 + 0.5, 0, 1) in Keras 3: pass keras_version=2 or "
                "keras_version=3 (the Keras that saved the model)")
        if keras_version == 3:
            weights = scale_gate_preactivations(*weights, KERAS3_HARD_SIGMOID_SCALE)
    return _make_layer([weights], act, gate)


def to_keras(layer):
    """An lstmfast :class:`~lstmfast.LSTM` -> ``[kernel, recurrent_kernel, bias]`` for
    ``keras_layer.set_weights`` (build the Keras layer with ``units = layer.n_out``,
    ``use_bias=True`` and the matching ``activation`` / ``recurrent_activation``; a
    ``"hardsigmoid"`` gate is Keras 2's ``hard_sigmoid``)."""
    if not isinstance(layer, UnidirectionalLSTM):
        raise TypeError(f"to_keras: expected an lstmfast LSTM layer, got {layer!r}")
    if layer.reverse:
        raise ValueError("to_keras: the layer processes time in reverse; Keras's go_backwards "
                         "also reverses the output sequence, so Keras has no such layer")
    if layer.peepholes:
        raise ValueError("to_keras: Keras LSTM has no peephole connections (GravesLSTM)")
    return lstmfast_to_keras(layer.W, layer.RW, layer.b)


# ONNX activation names <-> lstmfast (with ONNX's default alpha / beta where one exists)
_ONNX_FROM = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "softsign": "softsign",
              "softplus": "softplus"}
_ONNX_WITH_PARAMS = {  # onnx name (lower): (lstmfast name, required alpha, required beta)
    "hardsigmoid": ("hardsigmoid", 0.2, 0.5),
    "leakyrelu": ("leakyrelu", 0.01, None),
    "elu": ("elu", 1.0, None),
    "affine": ("identity", 1.0, 0.0),
}
ONNX_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "softsign": "Softsign",
                    "softplus": "Softplus", "hardsigmoid": "HardSigmoid", "leakyrelu": "LeakyRelu",
                    "elu": "Elu", "identity": "Affine"}
_ONNX_DEFAULT_ALPHA = {"hardsigmoid": 0.2, "leakyrelu": 0.01, "elu": 1.0, "affine": 1.0}
_ONNX_DEFAULT_BETA = {"hardsigmoid": 0.5, "affine": 0.0}


_ONNX_TAKES_ALPHA = ("hardsigmoid", "leakyrelu", "elu", "affine", "thresholdedrelu", "scaledtanh")
_ONNX_TAKES_BETA = ("hardsigmoid", "affine", "scaledtanh")


def _onnx_parameters(names, values, takers, what):
    """Per-activation alpha (or beta) values, None where the default applies. ONNX says the
    values are "consumed in the order of activation functions"; ONNX Runtime gives them only to
    the functions that take one. Both readings are accepted when the length tells them apart."""
    if values is None or len(values) == 0:
        return [None] * len(names)
    values = [float(v) for v in values]
    takes = [str(n).lower() in takers for n in names]
    if len(values) == sum(takes):
        it = iter(values)
        return [next(it) if t else None for t in takes]
    if len(values) == len(names):
        return values
    raise ValueError(f"from_onnx: {what} has {len(values)} values; expected one per activation "
                     f"({len(names)}) or one per activation that takes it ({sum(takes)}) for "
                     f"activations {list(names)}")


def _onnx_activation(name, alpha, beta):
    key = str(name).lower()
    if key in _ONNX_FROM:
        return _ONNX_FROM[key]
    if key in _ONNX_WITH_PARAMS:
        target, want_alpha, want_beta = _ONNX_WITH_PARAMS[key]
        alpha = _ONNX_DEFAULT_ALPHA.get(key) if alpha is None else alpha
        beta = _ONNX_DEFAULT_BETA.get(key) if beta is None else beta
        if (want_alpha is not None and not np.isclose(alpha, want_alpha, rtol=0, atol=1e-7)) or \
                (want_beta is not None and not np.isclose(beta, want_beta, rtol=0, atol=1e-7)):
            raise ValueError(f"from_onnx: activation {name}(alpha={alpha}, beta={beta}) is not "
                             f"supported; lstmfast's {target} is {name}(alpha={want_alpha}"
                             + (f", beta={want_beta})" if want_beta is not None else ")"))
        return target
    raise ValueError(f"from_onnx: activation {name!r} is not supported; supported: "
                     f"Tanh, Sigmoid, Relu, Softsign, Softplus, HardSigmoid(0.2, 0.5), "
                     f"LeakyRelu(0.01), Elu(1.0), Affine(1, 0)")


def onnx_activation_names(gate_activation, activation, what):
    """The ONNX LSTM node's ``activations`` (f, g, h) for lstmfast's gate and layer activations;
    ValueError, prefixed by `what`, for one ONNX lacks."""
    names = []
    for lstmfast_name in (gate_activation, activation, activation):
        if lstmfast_name not in ONNX_ACTIVATIONS:
            raise ValueError(f"{what}: activation {lstmfast_name!r} has no ONNX LSTM equivalent")
        names.append(ONNX_ACTIVATIONS[lstmfast_name])
    return names


def onnx_text(value, what):
    """An ONNX string attribute as text: ONNX hands them over as bytes."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"from_onnx: {what} {bytes(value)[:40]!r} is not UTF-8 text") from None
    if not isinstance(value, str):
        raise ValueError(f"from_onnx: {what} must be a string, got {type(value).__name__}")
    return value


def from_onnx(W, R, B=None, P=None, *, direction="forward", activations=None,
              activation_alpha=None, activation_beta=None, clip=None, input_forget=0,
              hidden_size=None, layout=0):
    """An ONNX ``LSTM`` node's initializers and attributes -> an lstmfast layer.

    ``W``, ``R``, ``B``, ``P`` as in :func:`onnx_to_lstmfast`; ``direction`` the node's attribute.
    Result: GravesLSTM when ``P`` is given (peepholes), LSTM otherwise; for ``"reverse"`` that
    layer processing time from the last step to the first, like the backward direction of a
    bidirectional layer (its ``forward`` output is ONNX's ``Y`` in the original time order; it
    cannot be stepped with ``rnn_time_step``); for ``"bidirectional"`` a
    :class:`lstmfast.Bidirectional` in ``"concat"`` mode (ONNX's ``Y`` ``[T, 2, mb, h]`` holds the
    same two outputs). ``activations``: the node's list
    (3 per direction: f for the gates, g for the cell input, h for the cell output; lstmfast
    needs g == h and the same for both directions), ``activation_alpha`` / ``activation_beta``
    one value per activation, or one per activation that takes it (ONNX Runtime's reading).
    ``clip`` and ``input_forget=1`` are refused. ``from_onnx(node, initializers)`` takes an
    ``onnx`` ``NodeProto`` instead, with its weights (see :func:`lstmfast.onnx.layer_from_node`).
    String attributes may be ``str`` or the
    ``bytes`` ONNX stores; ``hidden_size`` is checked against ``R``; ``layout`` (0: X
    ``[T, mb, nIn]``, 1: ``[mb, T, nIn]``) only moves axes of the node's tensors, not weights.
    """
    if hasattr(W, "op_type"):        # an onnx NodeProto, R its initializers
        from .onnx import layer_from_node
        return layer_from_node(W, R)
    direction = onnx_text(direction, "direction")
    if activations is not None:
        activations = [onnx_text(a, "activation") for a in activations]
    if layout not in (0, 1):
        raise ValueError(f"from_onnx: layout must be 0 or 1, got {layout!r}")
    if hidden_size is not None and (not isinstance(hidden_size, numbers.Integral)
                                    or np.ndim(R) != 3 or hidden_size != np.shape(R)[-1]):
        raise ValueError(f"from_onnx: hidden_size={hidden_size!r} does not match R of shape "
                         f"{list(np.shape(R))} ([num_directions, 4h, h])")
    if clip is not None:
        raise ValueError(f"from_onnx: clip={clip} is not supported (lstmfast does not clip)")
    if input_forget:
        raise ValueError("from_onnx: input_forget=1 (coupled input and forget gates) is not supported")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"from_onnx: unknown direction {direction!r} (forward, reverse or "
                         f"bidirectional)")
    n_dirs = 2 if direction == "bidirectional" else 1
    if np.shape(W)[0] != n_dirs:
        raise ValueError(f"from_onnx: direction={direction!r} needs num_directions = {n_dirs}, "
                         f"W has shape {list(np.shape(W))}")
    act, gate = "tanh", "sigmoid"
    if activations is not None:
        names = list(activations)
        if len(names) != 3 * n_dirs:
            raise ValueError(f"from_onnx: expected {3 * n_dirs} activations (f, g, h per "
                             f"direction), got {names}")
        alphas = _onnx_parameters(names, activation_alpha, _ONNX_TAKES_ALPHA, "activation_alpha")
        betas = _onnx_parameters(names, activation_beta, _ONNX_TAKES_BETA, "activation_beta")
        mapped = [_onnx_activation(n, a, b) for n, a, b in zip(names, alphas, betas)]
        per_direction = [tuple(mapped[3 * d:3 * d + 3]) for d in range(n_dirs)]
        if len(set(per_direction)) != 1:
            raise ValueError(f"from_onnx: the directions use different activations {names}; "
                             f"lstmfast layers share them")
        gate, act, cell_out = per_direction[0]
        if act != cell_out:
            raise ValueError(f"from_onnx: the cell input (g = {names[1]}) and cell output "
                             f"(h = {names[2]}) activations differ; lstmfast uses one activation "
                             f"for both")
        if gate not in ("sigmoid", "hardsigmoid"):
            raise ValueError(f"from_onnx: gate activation f = {names[0]} is not supported "
                             f"(Sigmoid or HardSigmoid(0.2, 0.5))")
    directions = [onnx_to_lstmfast(W, R, B, P, direction=d) for d in range(n_dirs)]
    # 'reverse': the layers' own reverse processing (what a bidirectional layer's backward
    # direction runs), so Y, Y_h and Y_c come out as ONNX gives them
    return _make_layer(directions, act, gate, reverse=direction == "reverse")


def to_onnx(layer):
    """An lstmfast LSTM / GravesLSTM (either direction) / ``Bidirectional(mode="concat")`` -> a dict with the ONNX
    ``LSTM`` node's initializers ``"W"``, ``"R"``, ``"B"``, ``"P"`` (None without peepholes) and
    ``"attributes"`` (``hidden_size``, ``direction``, ``activations``; alpha / beta are the
    ONNX defaults, so none are written). The node's ``Y`` is then ``[T, dirs, mb, h]``
    with X ``[T, mb, nIn]`` (``layout=0``)."""
    directions, first = _directions_of(layer, "to_onnx", reverse_ok=True)
    parts = [lstmfast_to_onnx(*d) for d in directions]
    W = np.concatenate([p[0] for p in parts])
    R = np.concatenate([p[1] for p in parts])
    B = np.concatenate([p[2] for p in parts])
    P = None if parts[0][3] is None else np.concatenate([p[3] for p in parts])
    names = onnx_activation_names(first.gate_activation, first.activation, "to_onnx")
    # HardSigmoid(0.2, 0.5), LeakyRelu(0.01), Elu(1.0) and Affine(1, 0) are the ONNX operators'
    # defaults, so no activation_alpha / activation_beta is written (their reading differs
    # between ONNX's text and ONNX Runtime)
    attributes = {"hidden_size": first.n_out,
                  "direction": ("bidirectional" if len(directions) == 2 else
                                "reverse" if first.reverse else "forward"),
                  "activations": names * len(directions)}
    return {"W": W, "R": R, "B": B, "P": P, "attributes": attributes}
