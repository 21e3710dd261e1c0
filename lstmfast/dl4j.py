"""Deeplearning4j interchange: ND4J binary arrays and ``ModelSerializer`` zips.

ND4J binary arrays (``Nd4j.write`` / ``Nd4j.read``)
---------------------------------------------------
A big-endian stream (Java ``DataOutputStream``) holding two buffers, the shape information
first and then the data.  Each buffer is

1. the allocation mode, written with ``writeUTF`` (unsigned 16-bit byte length, then the
   bytes): ``HEAP``, ``JAVACPP`` or ``DIRECT`` in older files, ``LONG_SHAPE`` or
   ``MIXED_DATA_TYPES`` in newer ones;
2. the element count: a 32-bit int for the three older modes, a 64-bit int for the newer;
3. the data type, written with ``writeUTF`` (``FLOAT``, ``DOUBLE``, ``HALF``, ``INT``, ...);
4. the elements, big-endian.

The shape buffer (``INT`` or ``LONG`` elements) holds ``2*rank + 4`` values: ``rank``, the
shape, the strides (in elements), a slot that is the buffer offset in files written before
``MIXED_DATA_TYPES`` and the "extras" flags (data type bits, empty-array bit) after it, the
element-wise stride, and the order (99 ``'c'`` or 102 ``'f'``).

:func:`read_array` honours the strides as written (including non-contiguous ones), returns
a C-contiguous NumPy array in native byte order, and refuses malformed input with a
``ValueError`` *before* allocating anything from an unchecked count: every count is checked
against the bytes actually available (for file objects of unknown length the data is read
in bounded chunks, so memory never exceeds what the input really holds).

:func:`write_array` writes the modern format that DL4J 1.0.0-beta and later write and read
(and that :func:`read_array` reads): ``MIXED_DATA_TYPES`` headers with 64-bit counts, a
``LONG`` shape buffer with C-order contiguous strides, the data-type bit of the "extras"
slot set (plus the empty-array bit for arrays with no element), element-wise stride 1,
order ``'c'``, and the elements in C order.

ModelSerializer zips
--------------------
:func:`load` reads ``configuration.json`` and ``coefficients.bin`` of a
``MultiLayerNetwork`` or of a ``ComputationGraph`` that is a plain chain of supported layers,
and returns an :class:`lstmfast.Sequential` holding the same layers and parameters.  The
JSON styles of DL4J 0.8 (``{"gravesLSTM": {...}}``, ``"activationFn": {"TanH": {}}``)
through 1.0.0-beta7 (``"@class"`` names), and the older plain-string activations and losses,
are understood.  Supported layers: ``GravesLSTM``, ``LSTM``, ``GravesBidirectionalLSTM``,
``Bidirectional`` (around ``LSTM`` or ``GravesLSTM``), ``RnnOutputLayer``, ``DenseLayer``,
``OutputLayer`` (``FrozenLayer`` wrappers are unwrapped), with the ``RnnToFeedForward`` /
``FeedForwardToRnn`` preprocessors around dense layers on sequences (lstmfast's dense
layers apply per time step).  Anything else - another layer, vertex or preprocessor, an
activation or loss lstmfast does not have (or has with other constants), layers without
bias, ``NWC`` data format, a non-chain graph, a parameter count or key list that does not
match - is a ``ValueError`` naming it; a wrong model is never returned.

What is imported exactly is what determines the network's function (layers, sizes,
activations, loss, parameters).  Training settings are carried over only where they map
exactly - truncated-BPTT lengths, an ``Sgd`` / ``Nesterovs`` / ``Adam`` updater with a fixed
learning rate shared by every layer, L2 shared by every layer - and listed in
``read_model(path)[0].not_imported`` otherwise (e.g. RMSProp, dropout, gradient
normalisation, L1); ``updaterState.bin`` is not read.

:func:`load_graph` evaluates other ComputationGraphs for inference (merge and element-wise
vertices, SimpleRnn, global pooling over time) as a :class:`Graph`.

:func:`save` writes a ``MultiLayerNetwork`` zip in the 1.0.0-beta6 JSON style
(``configuration.json``) with ``coefficients.bin`` (``[1, nParams]`` in the model's dtype);
it writes no ``updaterState.bin`` (DL4J treats it as optional: the restored network starts
with a fresh updater state; lstmfast's updater state is not in DL4J's updater-block layout).
The zip is written to a temporary file in the target directory and moved over the target
with ``os.replace``, so an interrupted save never destroys an existing file.  A model
loaded from a ``ComputationGraph`` is saved as the equivalent ``MultiLayerNetwork``.  Not
saved: DropConnect settings of the layers; classical (non-Nesterov) momentum, which DL4J has
no updater for, is written as plain ``Sgd``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = [
    "read_array",
    "write_array",
    "load",
    "save",
    "read_model",
    "load_graph",
    "Graph",
    "parse_configuration",
    "parse_graph",
    "build",
    "configuration_json",
    "LayerSpec",
    "ModelSpec",
]

# ---------------------------------------------------------------------------------------
# ND4J binary arrays
# ---------------------------------------------------------------------------------------

_LEGACY_MODES = ("HEAP", "JAVACPP", "DIRECT")  # 32-bit element count
_LONG_MODES = ("LONG_SHAPE", "MIXED_DATA_TYPES")  # 64-bit element count

# ND4J data type name -> big-endian NumPy dtype of the stored elements
_STORED = {
    "DOUBLE": np.dtype(">f8"),
    "FLOAT": np.dtype(">f4"),
    "HALF": np.dtype(">f2"),
    "BFLOAT16": np.dtype(">u2"),  # upper half of an IEEE float32; decoded to float32
    "LONG": np.dtype(">i8"),
    "INT": np.dtype(">i4"),
    "SHORT": np.dtype(">i2"),
    "BYTE": np.dtype("i1"),
    "UBYTE": np.dtype("u1"),
    "BOOL": np.dtype("u1"),  # one byte per element, decoded to bool
    "UINT16": np.dtype(">u2"),
    "UINT32": np.dtype(">u4"),
    "UINT64": np.dtype(">u8"),
}

# NumPy dtype -> ND4J data type name (for writing)
_NAME_OF = {
    np.dtype(np.float64): "DOUBLE",
    np.dtype(np.float32): "FLOAT",
    np.dtype(np.float16): "HALF",
    np.dtype(np.int64): "LONG",
    np.dtype(np.int32): "INT",
    np.dtype(np.int16): "SHORT",
    np.dtype(np.int8): "BYTE",
    np.dtype(np.uint8): "UBYTE",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
}

# the data-type bits of the "extras" slot (ND4J's ArrayOptionsHelper)
_ATYPE_EMPTY = 8
_BIT_BFLOAT16 = 2048
_BIT_HALF = 4096
_BIT_FLOAT = 8192
_BIT_DOUBLE = 16384
_BIT_BYTE = 32768
_BIT_SHORT = 65536
_BIT_INT = 131072
_BIT_LONG = 262144
_BIT_BOOL = 524288
_BIT_UTF8 = 1048576
_BIT_UNSIGNED = 8388608
_DTYPE_BITS_MASK = (
    _BIT_BFLOAT16 | _BIT_HALF | _BIT_FLOAT | _BIT_DOUBLE | _BIT_BYTE | _BIT_SHORT | _BIT_INT
    | _BIT_LONG | _BIT_BOOL | _BIT_UTF8 | _BIT_UNSIGNED
)
_EXTRAS_BITS = {
    "BFLOAT16": _BIT_BFLOAT16,
    "HALF": _BIT_HALF,
    "FLOAT": _BIT_FLOAT,
    "DOUBLE": _BIT_DOUBLE,
    "BYTE": _BIT_BYTE,
    "UBYTE": _BIT_BYTE | _BIT_UNSIGNED,
    "SHORT": _BIT_SHORT,
    "UINT16": _BIT_SHORT | _BIT_UNSIGNED,
    "INT": _BIT_INT,
    "UINT32": _BIT_INT | _BIT_UNSIGNED,
    "LONG": _BIT_LONG,
    "UINT64": _BIT_LONG | _BIT_UNSIGNED,
    "BOOL": _BIT_BOOL,
    "UTF8": _BIT_UTF8,
}

_MAX_RANK = 32  # ND4J's own limit
_CHUNK = 1 << 24  # bytes read at a time from streams of unknown length


class _TooManyElements(ValueError):
    """More elements than the caller's ``max_elements``."""


class _Input:
    """Sequential big-endian reads from bytes or a binary file object, bounded and checked."""

    def __init__(self, data=None, fobj=None, size=None, name="input"):
        self._view = memoryview(data).cast("B") if data is not None else None
        self._f = fobj
        self._pos = 0
        self._size = len(self._view) if self._view is not None else size
        self.name = name

    def remaining(self):
        """Bytes known to remain, or None when the length of the stream is unknown."""
        if self._size is None:
            return None
        return self._size - self._pos

    def _fail_short(self, what, need, got):
        raise ValueError(
            f"{self.name}: truncated ND4J array: {what} needs {need} bytes, "
            f"only {got} left"
        )

    def read(self, n, what):
        if n < 0:
            raise ValueError(f"{self.name}: negative byte count for {what}")
        rem = self.remaining()
        if rem is not None and n > rem:
            self._fail_short(what, n, rem)
        if self._view is not None:
            out = self._view[self._pos:self._pos + n]
            self._pos += n
            return out
        # read in bounded chunks: memory grows only with what really arrives, and short
        # reads of streams (pipes, sockets) are continued
        buf = bytearray()
        while len(buf) < n:
            piece = self._f.read(min(_CHUNK, n - len(buf)))
            if not piece:
                self._fail_short(what, n, len(buf))
            buf += piece
        self._pos += n
        return memoryview(buf)

    def utf(self, what):
        (n,) = struct.unpack(">H", self.read(2, what))
        raw = bytes(self.read(n, what))
        try:
            s = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(
                f"{self.name}: corrupted ND4J array: {what} is not an ASCII name: {raw[:40]!r}"
            ) from None
        return s

    def int32(self, what):
        return struct.unpack(">i", self.read(4, what))[0]

    def int64(self, what):
        return struct.unpack(">q", self.read(8, what))[0]

    def at_end(self):
        if self._view is not None:
            return self._pos == len(self._view)
        rem = self.remaining()
        if rem is not None:
            return rem == 0
        return self._f.read(1) == b""


def _read_header(src: _Input, which: str):
    mode = src.utf(f"{which} allocation mode")
    if mode in _LEGACY_MODES:
        count = src.int32(f"{which} element count")
    elif mode in _LONG_MODES:
        count = src.int64(f"{which} element count")
    else:
        raise ValueError(
            f"{src.name}: not an ND4J array: unknown allocation mode {mode!r} in the {which} "
            f"(expected one of {', '.join(_LEGACY_MODES + _LONG_MODES)})"
        )
    if count < 0:
        raise ValueError(f"{src.name}: corrupted ND4J array: negative {which} length {count}")
    dtype = src.utf(f"{which} data type")
    return mode, count, dtype


def _read_elements(src: _Input, count: int, dtype: str, which: str):
    if dtype == "COMPRESSED":
        raise ValueError(f"{src.name}: compressed ND4J arrays are not supported ({which})")
    if dtype == "UTF8":
        raise ValueError(f"{src.name}: UTF8 (string) ND4J arrays are not supported ({which})")
    stored = _STORED.get(dtype)
    if stored is None:
        raise ValueError(
            f"{src.name}: corrupted ND4J array: unknown data type {dtype!r} in the {which}"
        )
    nbytes = count * stored.itemsize
    rem = src.remaining()
    if rem is not None and nbytes > rem:
        raise ValueError(
            f"{src.name}: truncated or corrupted ND4J array: the {which} claims {count} "
            f"{dtype} elements ({nbytes} bytes) but only {rem} bytes remain"
        )
    raw = src.read(nbytes, f"{which} elements")
    arr = np.frombuffer(raw, dtype=stored, count=count)
    if dtype == "BFLOAT16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if dtype == "BOOL":
        return arr != 0
    return arr.astype(stored.newbyteorder("="))


def _decode_shape_info(src: _Input, mode: str, info):
    name = src.name
    n = len(info)
    if n < 4:
        raise ValueError(f"{name}: corrupted ND4J array: shape buffer of {n} values (at least 4)")
    rank = int(info[0])
    if rank < 0 or rank > _MAX_RANK:
        raise ValueError(f"{name}: corrupted ND4J array: rank {rank} (allowed 0..{_MAX_RANK})")
    if n != 2 * rank + 4:
        raise ValueError(
            f"{name}: corrupted ND4J array: shape buffer has {n} values, rank {rank} needs "
            f"{2 * rank + 4}"
        )
    shape = [int(v) for v in info[1:1 + rank]]
    strides = [int(v) for v in info[1 + rank:1 + 2 * rank]]
    slot = int(info[1 + 2 * rank])
    order = int(info[3 + 2 * rank])
    if any(d < 0 for d in shape):
        raise ValueError(f"{name}: corrupted ND4J array: negative dimension in shape {shape}")
    if order not in (99, 102):
        raise ValueError(
            f"{name}: corrupted ND4J array: order code {order} (expected 99 'c' or 102 'f')"
        )
    return rank, shape, strides, slot, chr(order)


def _read_array_from(src: _Input, max_elements=None):
    mode, count, sdtype = _read_header(src, "shape buffer")
    if sdtype not in ("INT", "LONG"):
        raise ValueError(
            f"{src.name}: corrupted ND4J array: shape buffer of type {sdtype!r} (INT or LONG)"
        )
    if count > 2 * _MAX_RANK + 4:
        raise ValueError(
            f"{src.name}: corrupted ND4J array: shape buffer claims {count} values "
            f"(at most {2 * _MAX_RANK + 4})"
        )
    info = _read_elements(src, count, sdtype, "shape buffer")
    rank, shape, strides, slot, order = _decode_shape_info(src, mode, info)

    dmode, dcount, ddtype = _read_header(src, "data buffer")
    size = math.prod(shape)
    if mode == "MIXED_DATA_TYPES":
        offset = 0
        bits = slot & _DTYPE_BITS_MASK
        want = _EXTRAS_BITS.get(ddtype)
        if bits and want is not None and bits != want:
            raise ValueError(
                f"{src.name}: corrupted ND4J array: the shape information says data type bits "
                f"{bits:#x} but the data buffer holds {ddtype} ({want:#x})"
            )
    else:
        offset = slot  # older files: this slot is the offset into the data buffer
        if offset < 0:
            raise ValueError(f"{src.name}: corrupted ND4J array: negative offset {offset}")
    if max_elements is not None and dcount > max_elements:
        raise _TooManyElements(
            f"{src.name}: ND4J array has {dcount} elements, more than the {max_elements} expected"
        )
    if size > dcount:
        # every element of a written array has its own slot in the data buffer; a larger
        # shape (e.g. zero strides) would make the result bigger than the input
        raise ValueError(
            f"{src.name}: corrupted ND4J array: shape {shape} has {size} elements but the data "
            f"buffer only {dcount}"
        )
    if size == 0 and math.prod(d for d in shape if d) > 2**40:
        raise ValueError(f"{src.name}: corrupted ND4J array: implausible empty shape {shape}")
    if size > 0:
        hi = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s > 0)
        lo = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s < 0)
        if lo < 0 or hi >= dcount:
            raise ValueError(
                f"{src.name}: corrupted ND4J array: shape {shape} with strides {strides} "
                f"(offset {offset}) reaches elements {lo}..{hi} of a data buffer of {dcount}"
            )
    data = _read_elements(src, dcount, ddtype, "data buffer")
    if size == 0:
        return np.zeros(shape, dtype=data.dtype)
    # strides of size-1 dimensions never move; zero them so that no product can overflow
    strides = [s if d > 1 else 0 for d, s in zip(shape, strides)]
    contiguous = []
    acc = 1
    for d in reversed(shape):
        contiguous.append(acc if d > 1 else 0)
        acc *= d
    contiguous.reverse()
    if offset == 0 and dcount == size and strides == contiguous:
        return data.reshape(shape)  # already C order (data is a fresh native copy)
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=shape, strides=[s * itemsize for s in strides], writeable=False
    )
    return np.array(view, order="C", copy=True)


def read_array(source, *, max_elements: Optional[int] = None) -> np.ndarray:
    """Read one ND4J binary array (``Nd4j.write`` format) into a NumPy array.

    ``source`` is a path (``str`` / ``os.PathLike``), ``bytes``-like data, or a binary file
    object positioned at the array (it is left just after it).  For paths and bytes the
    array must fill the input exactly (trailing bytes are an error).

    Returns a C-contiguous array in native byte order: ``float32`` (FLOAT, and BFLOAT16
    widened), ``float64`` (DOUBLE), ``float16`` (HALF), ``int32``/``int64`` (INT/LONG),
    and the other integer types and ``bool`` as stored.  The strides written in the file
    are honoured.  ``max_elements`` optionally bounds the element count accepted.

    Raises ``ValueError`` for truncated, corrupted or unsupported input (compressed or
    string arrays).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        src = _Input(data=source, name="ND4J array")
        arr = _read_array_from(src, max_elements)
        if not src.at_end():
            raise ValueError(
                f"ND4J array: {src.remaining()} unexpected bytes after the array (corrupted?)"
            )
        return arr
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            src = _Input(fobj=f, size=size, name=os.path.basename(path) or path)
            arr = _read_array_from(src, max_elements)
            if not src.at_end():
                raise ValueError(
                    f"{src.name}: {src.remaining()} unexpected bytes after the ND4J array "
                    "(corrupted?)"
                )
        return arr
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = os.path.basename(name) if isinstance(name, str) and name else "ND4J array"
        return _read_array_from(_Input(fobj=source, name=name), max_elements)
    raise TypeError(
        f"read_array: expected a path, bytes or a binary file object, got {type(source).__name__}"
    )


def _utf(s: str) -> bytes:
    b = s.encode("ascii")
    return struct.pack(">H", len(b)) + b


def _array_bytes(array) -> bytes:
    a = np.asarray(array)
    dt = a.dtype
    name = _NAME_OF.get(dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt)
    if name is None:
        raise TypeError(
            f"write_array: unsupported dtype {a.dtype}; ND4J arrays hold "
            + ", ".join(str(d) for d in _NAME_OF)
        )
    if a.ndim > _MAX_RANK:
        raise ValueError(f"write_array: rank {a.ndim} exceeds ND4J's maximum {_MAX_RANK}")
    shape = list(a.shape)
    rank = len(shape)
    strides = []
    acc = 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    strides.reverse()
    extras = _EXTRAS_BITS[name] | (_ATYPE_EMPTY if a.size == 0 else 0)
    info = [rank] + shape + strides + [extras, 1, ord("c")]
    out = io.BytesIO()
    out.write(_utf("MIXED_DATA_TYPES"))
    out.write(struct.pack(">q", len(info)))
    out.write(_utf("LONG"))
    out.write(np.asarray(info, dtype=">i8").tobytes())
    out.write(_utf("MIXED_DATA_TYPES"))
    out.write(struct.pack(">q", a.size))
    out.write(_utf(name))
    if name == "BOOL":
        out.write(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    else:
        out.write(np.ascontiguousarray(a).astype(_STORED[name], copy=False).tobytes(order="C"))
    return out.getvalue()


def write_array(array, destination=None):
    """Write ``array`` as an ND4J binary array (the format DL4J 1.0.0-beta+ writes).

    ``destination`` is a path (written atomically: temporary file + ``os.replace``), a
    binary file object (written at its position), or ``None`` to return the bytes.
    Format: ``MIXED_DATA_TYPES`` headers (64-bit counts), ``LONG`` shape buffer
    ``[rank, shape, C-order strides, extras (data-type bit), 1, 99]``, elements in C order.
    Supported dtypes: float64/32/16, int64/32/16/8, uint8/16/32/64, bool.
    """
    payload = _array_bytes(array)
    if destination is None:
        return payload
    if isinstance(destination, (str, os.PathLike)):
        _atomic_write(os.fspath(destination), lambda f: f.write(payload))
        return None
    if hasattr(destination, "write"):
        destination.write(payload)
        return None
    raise TypeError(
        "write_array: destination must be a path, a binary file object or None, got "
        f"{type(destination).__name__}"
    )


def _atomic_write(path: str, writer):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------------------------
# Configuration JSON -> a neutral description
# ---------------------------------------------------------------------------------------

@dataclass
class LayerSpec:
    """One DL4J layer, described independently of lstmfast's classes.

    ``kind`` is one of ``GravesLSTM``, ``LSTM``, ``GravesBidirectionalLSTM``,
    ``Bidirectional``, ``RnnOutputLayer``, ``DenseLayer``, ``OutputLayer``.
    ``params`` lists ``(key, shape)`` in DL4J's flat order; each parameter is its slice of
    the flat vector reshaped in Fortran order.  For ``Bidirectional``, ``inner`` describes
    the wrapped (forward) layer and ``mode`` is ``concat``/``add``/``mul``/``average``.
    """

    kind: str
    name: str
    n_in: int
    n_out: int
    activation: Optional[str] = None
    gate_activation: Optional[str] = None
    forget_gate_bias_init: Optional[float] = None
    loss: Optional[str] = None
    has_bias: bool = True
    mode: Optional[str] = None
    inner: Optional["LayerSpec"] = None
    params: list = field(default_factory=list)
    weight_init: str = "xavier"
    bias_init: float = 0.0
    preprocessor: Optional[str] = None  # "rnn_to_ff" / "ff_to_rnn" before this layer
    training: dict = field(default_factory=dict)  # updater / l2 settings found (see _training)

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.params)


@dataclass
class ModelSpec:
    """A DL4J network as a chain of :class:`LayerSpec` (in parameter order)."""

    source: str  # "MultiLayerNetwork" or "ComputationGraph"
    layers: list
    data_type: Optional[str] = None  # "FLOAT", "DOUBLE", "HALF" when the JSON says
    backprop_type: str = "Standard"
    tbptt_fwd_length: Optional[int] = None
    tbptt_back_length: Optional[int] = None
    #: training settings that could not be carried over exactly (for information)
    not_imported: list = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)


_RECURRENT = ("GravesLSTM", "LSTM")

# lower-cased DL4J layer names (0.8 wrapper names and @class simple names) -> kind
_LAYER_KINDS = {
    "graveslstm": "GravesLSTM",
    "lstm": "LSTM",
    "gravesbidirectionallstm": "GravesBidirectionalLSTM",
    "bidirectional": "Bidirectional",
    "rnnoutput": "RnnOutputLayer",
    "rnnoutputlayer": "RnnOutputLayer",
    "dense": "DenseLayer",
    "denselayer": "DenseLayer",
    "output": "OutputLayer",
    "outputlayer": "OutputLayer",
}
_FROZEN = ("frozenlayer", "frozenlayerwithbackprop")

# lower-cased DL4J activation names (0.8 wrapper names, @class simple names without the
# "Activation" prefix, pre-0.8 strings) -> lstmfast names
_ACTIVATIONS = {
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "hardsigmoid": "hardsigmoid",
    "softsign": "softsign",
    "relu": "relu",
    "lrelu": "leakyrelu",
    "leakyrelu": "leakyrelu",
    "elu": "elu",
    "selu": "selu",
    "softplus": "softplus",
    "identity": "identity",
    "linear": "identity",
    "hardtanh": "hardtanh",
    "cube": "cube",
    "rectifiedtanh": "rectifiedtanh",
    "rationaltanh": "rationaltanh",
    "softmax": "softmax",
}

# lower-cased DL4J loss names -> lstmfast names (NLL is MCXENT in DL4J: a subclass of it)
_LOSSES = {
    "mcxent": "mcxent",
    "negativeloglikelihood": "mcxent",
    "mse": "mse",
    "binaryxent": "xent",
    "xent": "xent",
    "l2": "l2",
}

_MODES = {"concat": "concat", "add": "add", "mul": "mul", "average": "average"}


def _simple(name: str) -> str:
    return name.rsplit(".", 1)[-1].rsplit("$", 1)[-1]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _polymorphic(value, what: str, ctx: str):
    """Split a DL4J polymorphic JSON value into (type name, body dict).

    Accepts the ``@class`` style and the single-key wrapper style of DL4J 0.8."""
    if not isinstance(value, dict):
        raise ValueError(f"{ctx}: {what} must be a JSON object, got {type(value).__name__}")
    if "@class" in value:
        cls = value["@class"]
        if not isinstance(cls, str):
            raise ValueError(f"{ctx}: {what} has a non-string @class")
        return _simple(cls), value
    if len(value) == 1:
        (key, body), = value.items()
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValueError(f"{ctx}: {what} {key!r} must hold a JSON object")
        return key, body
    raise ValueError(f"{ctx}: cannot tell the type of {what} (no @class, not a wrapper object)")


def _get(body, names, ctx, what=None, default=...):
    for n in names:
        if n in body:
            return body[n]
    if default is not ...:
        return default
    raise ValueError(f"{ctx}: missing field {what or names[0]!r}")


def _int_field(body, names, ctx, minimum=0):
    v = _get(body, names, ctx)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (
        isinstance(v, float) and (not math.isfinite(v) or v != int(v))
    ):
        raise ValueError(f"{ctx}: field {names[0]!r} must be an integer, got {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{ctx}: field {names[0]!r} must be >= {minimum}, got {v}")
    if v > 2**31 - 1:
        raise ValueError(f"{ctx}: field {names[0]!r} = {v} is implausibly large")
    return v


def _float_field(body, names, ctx, default):
    v = _get(body, names, ctx, default=default)
    if v is None:
        return default
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        v = float(v.replace("Infinity", "inf"))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{ctx}: field {names[0]!r} must be a number, got {v!r}")
    return float(v)


def _check_param(body, key, expected, ctx, what):
    """A numeric parameter of an activation/loss that lstmfast only has at one value."""
    if key not in body or body[key] is None:
        return
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{ctx}: {what} field {key!r} must be a number, got {v!r}")
    if not math.isclose(float(v), expected, rel_tol=1e-12, abs_tol=1e-15):
        raise ValueError(
            f"{ctx}: unsupported {what} with {key}={v} (lstmfast's {what} has {key}={expected})"
        )


def _activation(body, ctx, names=("activationFn", "activationFunction"), what="activation"):
    value = _get(body, names, ctx, what=names[0], default=None)
    if value is None:
        return None
    if isinstance(value, str):
        raw, params = value, {}
    else:
        raw, params = _polymorphic(value, what, ctx)
    key = _norm(raw)
    if key.startswith("activation"):
        key = key[len("activation"):]
    act = _ACTIVATIONS.get(key)
    if act is None:
        raise ValueError(f"{ctx}: unsupported {what} {raw!r} (lstmfast supports "
                         f"{', '.join(sorted(set(_ACTIVATIONS.values())))})")
    if act == "leakyrelu":
        _check_param(params, "alpha", 0.01, ctx, f"{what} LReLU")
    elif act == "elu":
        _check_param(params, "alpha", 1.0, ctx, f"{what} ELU")
    elif act == "relu":
        for k in ("max", "maxValue"):
            if params.get(k) is not None:
                raise ValueError(f"{ctx}: unsupported {what} ReLU with {k}={params[k]!r}")
        _check_param(params, "threshold", 0.0, ctx, f"{what} ReLU")
        _check_param(params, "negativeSlope", 0.0, ctx, f"{what} ReLU")
    return act


def _loss(body, ctx):
    value = body.get("lossFn")
    if value is None:
        value = body.get("lossFunction")
    if value is None:
        raise ValueError(f"{ctx}: output layer without a loss function (lossFn)")
    if isinstance(value, str):
        raw, params = value, {}
    else:
        raw, params = _polymorphic(value, "loss function", ctx)
    key = _norm(raw)
    if key.startswith("loss"):
        key = key[len("loss"):]
    loss = _LOSSES.get(key)
    if loss is None:
        raise ValueError(f"{ctx}: unsupported loss function {raw!r} (lstmfast supports MCXENT, "
                         "NegativeLogLikelihood, BinaryXENT, MSE and L2)")
    if params.get("weights") is not None:
        raise ValueError(f"{ctx}: unsupported loss function {raw!r} with per-output weights")
    return loss


def _recurrent_params(kind, n_in, h, prefix=""):
    rw = (h, 4 * h + 3) if kind == "GravesLSTM" else (h, 4 * h)
    return [(prefix + "W", (n_in, 4 * h)), (prefix + "RW", rw), (prefix + "b", (1, 4 * h))]


def _check_rnn_format(body, ctx):
    fmt = body.get("rnnDataFormat")
    if fmt is not None and fmt != "NCW":
        raise ValueError(f"{ctx}: unsupported rnnDataFormat {fmt!r} (lstmfast layers take NCW: "
                         "[minibatch, features, time])")


_GRAPH_ONLY_KINDS = {
    "simplernn": "SimpleRnn",
    "globalpooling": "GlobalPoolingLayer",
    "globalpoolinglayer": "GlobalPoolingLayer",
}
_POOLING = ("max", "avg", "sum", "pnorm")


def _layer_spec(value, ctx, extended=False) -> LayerSpec:
    """``extended``: also accept the layers that only :func:`load_graph` evaluates
    (SimpleRnn, GlobalPoolingLayer, and Bidirectional around SimpleRnn)."""
    raw, body = _polymorphic(value, "layer", ctx)
    key = _norm(raw)
    if key in _FROZEN:
        inner = body.get("layer")
        if inner is None:
            raise ValueError(f"{ctx}: {raw} without an inner layer")
        return _layer_spec(inner, ctx + f" ({raw})", extended)
    kind = _LAYER_KINDS.get(key)
    if kind is None and extended:
        kind = _GRAPH_ONLY_KINDS.get(key)
    if kind is None:
        hint = (" ; lstmfast.dl4j.load_graph evaluates SimpleRnn and GlobalPoolingLayer too"
                if key in _GRAPH_ONLY_KINDS else "")
        raise ValueError(
            f"{ctx}: unsupported layer type {raw!r} (lstmfast imports GravesLSTM, LSTM, "
            f"GravesBidirectionalLSTM, Bidirectional, RnnOutputLayer, DenseLayer, OutputLayer"
            f"{hint})"
        )
    if kind == "GlobalPoolingLayer":
        return _pooling_spec(body, ctx)
    name = body.get("layerName")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{ctx}: layerName must be a string, got {name!r}")
    name = name or ""
    lctx = f"{ctx} ({kind}{' ' + repr(name) if name else ''})"
    _check_rnn_format(body, lctx)

    if kind == "Bidirectional":
        fwd = body.get("fwd")
        bwd = body.get("bwd")
        if fwd is None:
            raise ValueError(f"{lctx}: missing the wrapped layer (fwd)")
        inner = _layer_spec(fwd, lctx + " forward layer", extended)
        if inner.kind not in _RECURRENT + (("SimpleRnn",) if extended else ()):
            raise ValueError(
                f"{lctx}: unsupported wrapped layer {inner.kind} (lstmfast's Bidirectional "
                "wraps LSTM or GravesLSTM)"
            )
        if bwd is not None:
            back = _layer_spec(bwd, lctx + " backward layer", extended)
            same = (back.kind, back.n_in, back.n_out, back.activation, back.gate_activation)
            if same != (inner.kind, inner.n_in, inner.n_out, inner.activation,
                        inner.gate_activation):
                raise ValueError(
                    f"{lctx}: forward and backward layers differ ({inner.kind} "
                    f"{inner.n_in}->{inner.n_out} {inner.activation} vs {back.kind} "
                    f"{back.n_in}->{back.n_out} {back.activation}); lstmfast's Bidirectional "
                    "uses one configuration for both"
                )
        mode_raw = body.get("mode", "CONCAT")
        if not isinstance(mode_raw, str) or _norm(mode_raw) not in _MODES:
            raise ValueError(f"{lctx}: unsupported Bidirectional mode {mode_raw!r}")
        mode = _MODES[_norm(mode_raw)]
        params = ([("f" + k, s) for k, s in inner.params]
                  + [("b" + k, s) for k, s in inner.params])
        n_out = inner.n_out * (2 if mode == "concat" else 1)
        return LayerSpec(kind=kind, name=name or inner.name, n_in=inner.n_in, n_out=n_out,
                         activation=inner.activation, gate_activation=inner.gate_activation,
                         forget_gate_bias_init=inner.forget_gate_bias_init, mode=mode,
                         inner=inner, params=params, weight_init=inner.weight_init,
                         training=inner.training)

    n_in = _int_field(body, ("nin", "nIn"), lctx, minimum=1)
    n_out = _int_field(body, ("nout", "nOut"), lctx, minimum=1)
    activation = _activation(body, lctx)
    if activation is None:
        raise ValueError(f"{lctx}: missing activation function (activationFn)")
    if body.get("hasLayerNorm"):
        raise ValueError(f"{lctx}: unsupported layer normalisation (hasLayerNorm)")
    spec = LayerSpec(kind=kind, name=name, n_in=n_in, n_out=n_out, activation=activation,
                     weight_init=_weight_init(body),
                     bias_init=_float_field(body, ("biasInit",), lctx, 0.0),
                     training=_training(body))
    if kind in ("GravesLSTM", "LSTM", "GravesBidirectionalLSTM"):
        spec.gate_activation = _activation(body, lctx, names=("gateActivationFn",),
                                           what="gate activation") or "sigmoid"
        spec.forget_gate_bias_init = _float_field(body, ("forgetGateBiasInit",), lctx, 1.0)
        if kind == "GravesBidirectionalLSTM":
            one = _recurrent_params("GravesLSTM", n_in, n_out)
            spec.params = [(k + "F", s) for k, s in one] + [(k + "B", s) for k, s in one]
        else:
            spec.params = _recurrent_params(kind, n_in, n_out)
        return spec
    if kind == "SimpleRnn":
        spec.params = [("W", (n_in, n_out)), ("RW", (n_out, n_out)), ("b", (1, n_out))]
        return spec
    has_bias = body.get("hasBias", True)
    if not isinstance(has_bias, bool):
        raise ValueError(f"{lctx}: hasBias must be true or false, got {has_bias!r}")
    if not has_bias:
        raise ValueError(f"{lctx}: unsupported layer without bias (hasBias=false)")
    spec.has_bias = has_bias
    if kind in ("RnnOutputLayer", "OutputLayer"):
        spec.loss = _loss(body, lctx)
    spec.params = [("W", (n_in, n_out))] + ([("b", (1, n_out))] if has_bias else [])
    return spec


def _pooling_spec(body, ctx):
    name = body.get("layerName") if isinstance(body.get("layerName"), str) else ""
    lctx = f"{ctx} (GlobalPoolingLayer{' ' + repr(name) if name else ''})"
    ptype = body.get("poolingType", "MAX")
    if not isinstance(ptype, str) or _norm(ptype) not in _POOLING:
        raise ValueError(f"{lctx}: unsupported pooling type {ptype!r}")
    dims = body.get("poolingDimensions")
    if dims not in (None, [2]):
        raise ValueError(f"{lctx}: unsupported pooling dimensions {dims!r} (only time, [2])")
    if body.get("collapseDimensions", True) is not True:
        raise ValueError(f"{lctx}: unsupported collapseDimensions=false")
    pnorm = 2
    if _norm(ptype) == "pnorm":
        pnorm = _int_field(body, ("pnorm",), lctx, minimum=1)
    return LayerSpec(kind="GlobalPoolingLayer", name=name, n_in=0, n_out=0,
                     mode=f"{_norm(ptype)}:{pnorm}", params=[])


def _check_variables(spec: LayerSpec, variables, ctx, prefix=""):
    """Compare the parameter keys DL4J recorded (when it did) with the expected layout."""
    if not variables:
        return
    if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
        raise ValueError(f"{ctx}: 'variables' must be a list of strings")
    expected = [prefix + k for k, _ in spec.params]
    if list(variables) != expected:
        raise ValueError(
            f"{ctx}: parameter keys {variables} differ from the expected {expected} "
            "(unsupported layer variant)"
        )


_PREPROCESSORS = {
    "rnntofeedforward": "rnn_to_ff",
    "rnntofeedforwardpreprocessor": "rnn_to_ff",
    "feedforwardtornn": "ff_to_rnn",
    "feedforwardtornnpreprocessor": "ff_to_rnn",
}


def _preprocessor(pp, ctx):
    """The tag of a supported input preprocessor (None when there is none)."""
    if pp is None or pp == {}:
        return None
    raw, body = _polymorphic(pp, "input preprocessor", ctx)
    tag = _PREPROCESSORS.get(_norm(raw))
    if tag is None:
        raise ValueError(f"{ctx}: unsupported input preprocessor {raw!r}")
    _check_rnn_format(body, ctx + f" ({raw})")
    return tag


def _check_data_flow(layers, ctx_of):
    """Check that preprocessors sit where lstmfast's layers do the same thing implicitly.

    lstmfast's dense layers apply per time step to ``[mb, n, T]`` input, which is what DL4J
    does with RnnToFeedForward before and FeedForwardToRnn after them; anything else that
    changes the shape of the data (an OutputLayer on time-series rows, a network ending on
    rows) has no lstmfast equivalent."""
    rows = False  # True between RnnToFeedForward and FeedForwardToRnn
    for i, spec in enumerate(layers):
        if spec.preprocessor == "rnn_to_ff":
            if spec.kind != "DenseLayer" or rows:
                raise ValueError(f"{ctx_of(i)}: unsupported RnnToFeedForwardPreProcessor before a "
                                 f"{spec.kind} (only before DenseLayers that a "
                                 "FeedForwardToRnnPreProcessor closes)")
            rows = True
        elif spec.preprocessor == "ff_to_rnn":
            if spec.kind == "DenseLayer" or spec.kind == "OutputLayer":
                raise ValueError(f"{ctx_of(i)}: unsupported FeedForwardToRnnPreProcessor before a "
                                 f"{spec.kind}")
            rows = False
        elif rows and spec.kind != "DenseLayer":
            raise ValueError(f"{ctx_of(i)}: a {spec.kind} on time-series rows "
                             "(RnnToFeedForwardPreProcessor without FeedForwardToRnn) is not "
                             "supported")
    if rows:
        raise ValueError("the network ends on time-series rows (RnnToFeedForwardPreProcessor "
                         "without FeedForwardToRnn): not supported")


_WEIGHT_INIT_CLASSES = {
    "xavier": "WeightInitXavier",
    "xavier_uniform": "WeightInitXavierUniform",
    "xavier_legacy": "WeightInitXavierLegacy",
    "xavier_fan_in": "WeightInitNormal",  # DL4J: XAVIER_FAN_IN, NORMAL, LECUN_NORMAL are one
    "lecun_normal": "WeightInitNormal",
    "normal": "WeightInitNormal",
    "relu": "WeightInitRelu",
    "relu_uniform": "WeightInitReluUniform",
    "sigmoid_uniform": "WeightInitSigmoidUniform",
    "uniform": "WeightInitUniform",
    "lecun_uniform": "WeightInitLecunUniform",
}
_WEIGHT_INIT_NAMES = {
    "xavier": "xavier", "xavieruniform": "xavier_uniform", "xavierlegacy": "xavier_legacy",
    "xavierfanin": "xavier_fan_in", "lecunnormal": "lecun_normal", "normal": "normal",
    "relu": "relu", "reluuniform": "relu_uniform", "sigmoiduniform": "sigmoid_uniform",
    "uniform": "uniform", "lecununiform": "lecun_uniform", "zero": "zero", "ones": "ones",
}


def _weight_init(body):
    """lstmfast's name of the layer's weight initialisation (only used for re-initialising:
    the loaded parameters are the file's).  Unknown schemes fall back to xavier."""
    value = body.get("weightInitFn")
    if isinstance(value, dict) and isinstance(value.get("@class"), str):
        key = _norm(_simple(value["@class"]))
        key = key[len("weightinit"):] if key.startswith("weightinit") else key
        if key == "constant":
            v = value.get("value")
            return {0: "zero", 1: "ones"}.get(v if isinstance(v, (int, float)) else None, "xavier")
        return _WEIGHT_INIT_NAMES.get(key, "xavier")
    value = body.get("weightInit")
    if isinstance(value, str):
        return _WEIGHT_INIT_NAMES.get(_norm(value), "xavier")
    return "xavier"


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _training(body):
    """The layer's updater and L2 settings as far as lstmfast has them exactly.

    Returns a dict with ``updater`` (a tuple, or None when not representable), ``l2``,
    ``l2_bias`` (floats, or None), and ``notes`` (what was not representable)."""
    notes = []
    updater = None
    iup = body.get("iupdater")
    if isinstance(iup, dict) and isinstance(iup.get("@class"), str):  # 1.0.0-beta style
        cls = _simple(iup["@class"])
        sched = [k for k, v in iup.items() if "chedule" in k and v is not None]
        lr = _number(iup.get("learningRate"))
        if sched or lr is None:
            notes.append(f"updater {cls} with a schedule")
        elif cls == "Sgd":
            updater = ("sgd", lr, 0.0, False)
        elif cls == "Nesterovs" and _number(iup.get("momentum")) is not None:
            updater = ("sgd", lr, _number(iup.get("momentum")), True)
        elif cls == "Adam" and None not in (_number(iup.get("beta1")), _number(iup.get("beta2")),
                                            _number(iup.get("epsilon"))):
            updater = ("adam", lr, _number(iup["beta1"]), _number(iup["beta2"]),
                       _number(iup["epsilon"]))
        else:
            notes.append(f"updater {cls}")
    elif isinstance(body.get("updater"), str):  # 0.8 style
        name = body["updater"].upper()
        lr = _number(body.get("learningRate"))
        blr = _number(body.get("biasLearningRate"))
        if lr is None or (blr is not None and blr != lr):
            notes.append(f"updater {name} with a separate bias learning rate")
        elif body.get("learningRateSchedule") is not None:
            notes.append(f"updater {name} with a learning-rate schedule")
        elif name == "SGD":
            updater = ("sgd", lr, 0.0, False)
        elif name == "NESTEROVS" and _number(body.get("momentum")) is not None:
            updater = ("sgd", lr, _number(body["momentum"]), True)
        elif name == "ADAM" and None not in (_number(body.get("adamMeanDecay")),
                                             _number(body.get("adamVarDecay")),
                                             _number(body.get("epsilon"))):
            updater = ("adam", lr, _number(body["adamMeanDecay"]), _number(body["adamVarDecay"]),
                       _number(body["epsilon"]))
        else:
            notes.append(f"updater {name}")
    l2 = l2_bias = None
    if "regularization" in body:  # 1.0.0-beta style
        l2 = _l2_of(body.get("regularization"), notes, "weights")
        l2_bias = _l2_of(body.get("regularizationBias"), notes, "biases")
    elif "l2" in body:  # 0.8 style (applied when the configuration's useRegularization is set)
        l2, l2_bias = _number(body.get("l2")) or 0.0, _number(body.get("l2Bias")) or 0.0
        if (_number(body.get("l1")) or 0.0) != 0.0 or (_number(body.get("l1Bias")) or 0.0) != 0.0:
            notes.append("L1 regularisation")
    for k in ("dropOut",):
        v = _number(body.get(k))
        if v is not None and v not in (0.0, 1.0):
            notes.append(f"dropout {v}")
    if body.get("idropout") is not None:
        notes.append("dropout")
    if body.get("weightNoise") is not None:
        notes.append("weight noise")
    gn = body.get("gradientNormalization")
    if isinstance(gn, str) and gn != "None":
        notes.append(f"gradient normalisation {gn}")
    return {"updater": updater, "l2": l2, "l2_bias": l2_bias, "notes": notes}


def _l2_of(regs, notes, what):
    if regs is None or regs == []:
        return 0.0
    if not isinstance(regs, list):
        notes.append(f"regularisation of {what}")
        return None
    l2 = 0.0
    for r in regs:
        if not isinstance(r, dict) or not isinstance(r.get("@class"), str):
            notes.append(f"regularisation of {what}")
            return None
        cls = _simple(r["@class"])
        sched = r.get("l2")
        value = None
        if cls == "L2Regularization" and isinstance(sched, dict) \
                and _simple(str(sched.get("@class", ""))) == "FixedSchedule":
            value = _number(sched.get("value"))
        if value is None:
            notes.append(f"{cls} on {what}")
            return None
        l2 += value
    return l2


def _tbptt(conf):
    out = []
    for k in ("tbpttFwdLength", "tbpttBackLength"):
        v = conf.get(k)
        out.append(int(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) and v >= 1 else None)
    return out


def _data_type(conf):
    dt = conf.get("dataType")
    return dt if isinstance(dt, str) else None


def parse_configuration(config) -> ModelSpec:
    """Parse a DL4J ``configuration.json`` (text, bytes or already-decoded dict).

    Returns a :class:`ModelSpec`; raises ``ValueError`` naming whatever lstmfast cannot
    represent exactly."""
    if isinstance(config, (bytes, bytearray)):
        try:
            config = config.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"configuration.json is not UTF-8 text: {e}") from None
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"configuration.json is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError("configuration.json must hold a JSON object")
    try:
        if "confs" in config:
            return _parse_multilayer(config)
        if "vertices" in config:
            return _parse_graph(config)
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError) as e:
        # a field of an unexpected JSON type somewhere the checks above did not look
        raise ValueError(f"malformed configuration.json: {type(e).__name__}: {e}") from None
    raise ValueError("configuration.json is neither a MultiLayerNetwork (confs) nor a "
                     "ComputationGraph (vertices) configuration")


def _common(spec: ModelSpec, config):
    bp = config.get("backpropType", "Standard")
    spec.backprop_type = bp if isinstance(bp, str) else "Standard"
    spec.tbptt_fwd_length, spec.tbptt_back_length = _tbptt(config)
    spec.data_type = _data_type(config)
    for i in range(1, len(spec.layers)):
        prev, cur = spec.layers[i - 1], spec.layers[i]
        if cur.n_in != prev.n_out:
            raise ValueError(f"layer {i} ({cur.kind}) has nIn {cur.n_in} but layer {i - 1} "
                             f"({prev.kind}) gives {prev.n_out} outputs")
    notes = []
    for layer in spec.layers:
        notes += [n for n in layer.training.get("notes", []) if n not in notes]
    spec.not_imported = notes


def _parse_multilayer(config) -> ModelSpec:
    confs = config["confs"]
    if not isinstance(confs, list) or not confs:
        raise ValueError("configuration.json: 'confs' must be a non-empty list of layers")
    pps = config.get("inputPreProcessors") or {}
    if not isinstance(pps, dict):
        raise ValueError("configuration.json: inputPreProcessors must be an object")
    tags = {}
    for idx, pp in pps.items():
        if not (isinstance(idx, str) and idx.isdigit() and int(idx) < len(confs)):
            raise ValueError(f"configuration.json: input preprocessor for unknown layer {idx!r}")
        tags[int(idx)] = _preprocessor(pp, f"layer {idx}")
    layers = []
    for i, conf in enumerate(confs):
        ctx = f"layer {i}"
        if not isinstance(conf, dict) or conf.get("layer") is None:
            raise ValueError(f"{ctx}: missing layer configuration")
        spec = _layer_spec(conf["layer"], ctx)
        _check_variables(spec, conf.get("variables"), ctx)
        spec.preprocessor = tags.get(i)
        if conf.get("useRegularization") is False:  # 0.8: l2 fields present but switched off
            spec.training = dict(spec.training, l2=0.0, l2_bias=0.0)
        layers.append(spec)
    _check_data_flow(layers, lambda i: f"layer {i}")
    spec = ModelSpec(source="MultiLayerNetwork", layers=layers)
    _common(spec, config)
    if spec.data_type is None:
        spec.data_type = _data_type(confs[0])
    return spec


def _vertex_type(value, name):
    raw, body = _polymorphic(value, "vertex", f"vertex {name!r}")
    return raw, body


def _parse_graph(config) -> ModelSpec:
    vertices = config.get("vertices")
    inputs = config.get("vertexInputs")
    net_in = config.get("networkInputs")
    net_out = config.get("networkOutputs")
    if not isinstance(vertices, dict) or not isinstance(inputs, dict):
        raise ValueError("configuration.json: ComputationGraph without vertices/vertexInputs")
    if not isinstance(net_in, list) or not isinstance(net_out, list):
        raise ValueError("configuration.json: ComputationGraph without networkInputs/Outputs")
    layer_bodies = {}
    for name, value in vertices.items():
        raw, body = _vertex_type(value, name)
        if _norm(raw) != "layervertex":
            raise ValueError(f"vertex {name!r}: unsupported graph vertex {raw!r} (lstmfast "
                             "imports ComputationGraphs that are chains of layers as a "
                             "Sequential; lstmfast.dl4j.load_graph evaluates other graphs for "
                             "inference)")
        layer_bodies[name] = body
    if len(net_in) != 1 or len(net_out) != 1:
        raise ValueError(f"ComputationGraph with inputs {net_in} and outputs {net_out}: only "
                         "a single-input, single-output chain can be imported")
    # walk the chain from the input to the output
    order = []
    current = net_in[0]
    seen = {current}
    while current != net_out[0]:
        consumers = [v for v, ins in inputs.items() if isinstance(ins, list) and current in ins]
        if len(consumers) != 1:
            raise ValueError(f"ComputationGraph is not a chain: {current!r} feeds "
                             f"{consumers or 'nothing'}")
        nxt = consumers[0]
        if inputs[nxt] != [current]:
            raise ValueError(f"ComputationGraph is not a chain: vertex {nxt!r} has inputs "
                             f"{inputs[nxt]}")
        if nxt in seen or nxt not in layer_bodies:
            raise ValueError(f"ComputationGraph is not a chain at vertex {nxt!r}")
        seen.add(nxt)
        order.append(nxt)
        current = nxt
    if set(order) != set(layer_bodies):
        raise ValueError("ComputationGraph is not a chain: vertices "
                         f"{sorted(set(layer_bodies) - set(order))} are off the path")
    topo = config.get("topologicalOrderStr")
    if isinstance(topo, list) and [v for v in topo if v in layer_bodies] != order:
        raise ValueError(f"ComputationGraph: topological order {topo} differs from the chain")
    default = config.get("defaultConfiguration") or {}
    all_vars = default.get("variables") if isinstance(default, dict) else None
    layers = []
    for name in order:
        body = layer_bodies[name]
        ctx = f"vertex {name!r}"
        tag = _preprocessor(body.get("preProcessor"), ctx)
        lconf = body.get("layerConf")
        if not isinstance(lconf, dict) or lconf.get("layer") is None:
            raise ValueError(f"{ctx}: missing layerConf")
        spec = _layer_spec(lconf["layer"], ctx)
        _check_variables(spec, lconf.get("variables"), ctx)
        spec.preprocessor = tag
        if lconf.get("useRegularization") is False:
            spec.training = dict(spec.training, l2=0.0, l2_bias=0.0)
        layers.append(spec)
    _check_data_flow(layers, lambda i: f"vertex {order[i]!r}")
    if all_vars:
        expected = [f"{n}_{k}" for n, s in zip(order, layers) for k, _ in s.params]
        if all_vars != expected:
            raise ValueError(f"ComputationGraph parameter keys {all_vars} differ from the "
                             f"expected {expected}")
    spec = ModelSpec(source="ComputationGraph", layers=layers)
    _common(spec, config)
    if spec.data_type is None and isinstance(default, dict):
        spec.data_type = _data_type(default)
    return spec


# ---------------------------------------------------------------------------------------
# building an lstmfast Sequential, load and save
# ---------------------------------------------------------------------------------------

_MAX_JSON_BYTES = 64 << 20  # configuration.json larger than this is refused (zip bombs)


def _modules():
    from . import layers as L
    from . import network as N
    return L, N


def _make_layer(spec: LayerSpec, dtype, L, N):
    common = dict(dtype=dtype, seed=0)  # parameters are overwritten from the file
    if spec.kind in ("GravesLSTM", "LSTM", "GravesBidirectionalLSTM"):
        cls = {"GravesLSTM": L.GravesLSTM, "LSTM": L.LSTM,
               "GravesBidirectionalLSTM": L.GravesBidirectionalLSTM}[spec.kind]
        return cls(spec.n_in, spec.n_out, activation=spec.activation,
                   gate_activation=spec.gate_activation,
                   forget_gate_bias_init=spec.forget_gate_bias_init,
                   weight_init=spec.weight_init, **common)
    if spec.kind == "Bidirectional":
        return L.Bidirectional(_make_layer(spec.inner, dtype, L, N), mode=spec.mode, seed=0)
    if spec.kind == "DenseLayer":
        return N.DenseLayer(spec.n_in, spec.n_out, activation=spec.activation,
                            weight_init=spec.weight_init, bias_init=spec.bias_init, **common)
    cls = N.RnnOutputLayer if spec.kind == "RnnOutputLayer" else N.OutputLayer
    return cls(spec.n_in, spec.n_out, activation=spec.activation, loss=spec.loss,
               weight_init=spec.weight_init, bias_init=spec.bias_init, **common)


def _training_options(spec: ModelSpec, dtype, N):
    """Sequential keyword arguments for the training settings that map exactly."""
    opts = {}
    if spec.backprop_type == "TruncatedBPTT" and spec.tbptt_fwd_length:
        opts["tbptt_forward_length"] = spec.tbptt_fwd_length
        opts["tbptt_backward_length"] = spec.tbptt_back_length or spec.tbptt_fwd_length
    trained = [layer.training for layer in spec.layers if layer.n_params]
    updaters = {t.get("updater") for t in trained}
    if len(updaters) == 1 and None not in updaters:
        u = updaters.pop()
        if u[0] == "sgd":
            opts["updater"] = N.Sgd(u[1], momentum=u[2], nesterov=u[3])
        else:
            opts["updater"] = N.Adam(u[1], beta1=u[2], beta2=u[3], epsilon=u[4])
    elif len(updaters) > 1 and "updaters differing between layers" not in spec.not_imported:
        spec.not_imported.append("updaters differing between layers")
    for key in ("l2", "l2_bias"):
        values = {t.get(key) for t in trained}
        if len(values) == 1 and None not in values:
            opts[key] = values.pop()
        elif len(values) > 1 and f"{key} differing between layers" not in spec.not_imported:
            spec.not_imported.append(f"{key} differing between layers")
    return opts


def build(spec: ModelSpec, params=None, *, dtype=np.float32):
    """An lstmfast ``Sequential`` from a :class:`ModelSpec`, with ``params`` (DL4J's flat
    parameter vector) when given."""
    L, N = _modules()
    dtype = np.dtype(dtype)
    built = []
    for i, layer_spec in enumerate(spec.layers):
        label = f" {layer_spec.name!r}" if layer_spec.name else ""
        what = f"layer {i} ({layer_spec.kind}{label})"
        try:
            layer = _make_layer(layer_spec, dtype, L, N)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what}: lstmfast cannot represent it: {e}") from None
        if layer.num_params() != layer_spec.n_params:  # a layout disagreement: never load it
            raise ValueError(f"{what}: lstmfast's layer has {layer.num_params()} parameters, "
                             f"DL4J's {layer_spec.n_params}")
        built.append(layer)
    try:
        model = N.Sequential(built, **_training_options(spec, dtype, N))
    except (ValueError, TypeError) as e:
        raise ValueError(f"lstmfast cannot represent this network: {e}") from None
    if params is not None:
        flat = np.asarray(params).reshape(-1)
        if flat.size != spec.n_params:
            raise ValueError(f"the network has {spec.n_params} parameters but the coefficients "
                             f"hold {flat.size}")
        offset = 0
        for layer, layer_spec in zip(built, spec.layers):
            n = layer_spec.n_params
            layer.params = flat[offset:offset + n]
            offset += n
    return model


def _read_entry(zf, name, limit, where):
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{where}: not a DL4J model: no {name} in the zip") from None
    if info.file_size > limit:
        raise ValueError(f"{where}: {name} is {info.file_size} bytes (more than {limit})")
    with zf.open(info) as f:
        # never more than the entry declares (+1 to notice one that lies): bounded memory
        raw = f.read(min(limit, info.file_size) + 1)
    if len(raw) > limit:
        raise ValueError(f"{where}: {name} is larger than {limit} bytes")
    return raw


def _open_zip(path, where):
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"{where}: not a DL4J model zip ({e})") from None


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
               RuntimeError)


def read_model(path):
    """``(ModelSpec, flat parameter vector)`` of a DL4J ModelSerializer zip, without building
    anything (the parameters in the file's dtype)."""
    where = os.path.basename(os.fspath(path))
    zf = _open_zip(path, where)
    try:
        with zf:
            raw = _read_entry(zf, "configuration.json", _MAX_JSON_BYTES, where)
            try:
                spec = parse_configuration(raw)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            n = spec.n_params
            if n == 0 and "coefficients.bin" not in zf.namelist():
                return spec, np.zeros(0, np.float32)
            # the entry may hold n elements of at most 8 bytes plus two small headers
            limit = 8 * n + 4096
            if "coefficients.bin" not in zf.namelist():
                raise ValueError(f"{where}: not a DL4J model: no coefficients.bin in the zip")
            info = zf.getinfo("coefficients.bin")
            if info.file_size > limit:
                raise ValueError(f"{where}: coefficients.bin is {info.file_size} bytes, too large "
                                 f"for the {n} parameters of the configuration")
            with zf.open(info) as f:
                try:
                    coeffs = read_array(f, max_elements=n)
                except _TooManyElements as e:
                    raise ValueError(f"{where}: the configuration has {n} parameters but "
                                     f"coefficients.bin holds more ({e})") from None
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
                if f.read(1):
                    raise ValueError(f"{where}: coefficients.bin: unexpected bytes after the array")
    except _ZIP_ERRORS + (zlib.error,) as e:
        raise ValueError(f"{where}: corrupted zip ({type(e).__name__}: {e})") from None
    if coeffs.size != n or sum(d > 1 for d in coeffs.shape) > 1:
        raise ValueError(f"{where}: the configuration has {n} parameters but coefficients.bin "
                         f"holds an array of shape {coeffs.shape}")
    if coeffs.dtype.kind != "f":
        raise ValueError(f"{where}: coefficients.bin holds {coeffs.dtype} values, not floats")
    return spec, coeffs.reshape(-1)


def load(path, *, dtype=None):
    """Load a DL4J ``ModelSerializer`` zip as an :class:`lstmfast.Sequential`.

    ``dtype``: float32 or float64; default: float64 for a DOUBLE model, else float32 (DL4J's
    FLOAT, and HALF/BFLOAT16 parameters widened).  The training settings that map exactly
    (truncated BPTT lengths; an Sgd, Nesterovs or Adam updater with a fixed learning rate
    shared by all layers; L2 shared by all layers) are carried over; the updater state is not.
    Raises ``ValueError`` naming whatever lstmfast cannot represent exactly.
    """
    spec, flat = read_model(path)
    if dtype is None:
        dtype = np.float64 if flat.dtype == np.float64 else np.float32
    model = build(spec, flat, dtype=dtype)
    return model


# ---- saving ---------------------------------------------------------------------------

_ACTIVATION_CLASSES = {
    "tanh": "ActivationTanH", "sigmoid": "ActivationSigmoid",
    "hardsigmoid": "ActivationHardSigmoid", "softsign": "ActivationSoftSign",
    "relu": "ActivationReLU", "leakyrelu": "ActivationLReLU", "elu": "ActivationELU",
    "selu": "ActivationSELU", "softplus": "ActivationSoftPlus",
    "identity": "ActivationIdentity", "hardtanh": "ActivationHardTanH", "cube": "ActivationCube",
    "rectifiedtanh": "ActivationRectifiedTanh", "rationaltanh": "ActivationRationalTanh",
    "softmax": "ActivationSoftmax",
}
_LOSS_JSON = {
    "mcxent": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMCXENT",
               "softmaxClipEps": 1e-10},
    "negativeloglikelihood": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMCXENT",
                              "softmaxClipEps": 1e-10},
    "xent": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossBinaryXENT", "clipEps": 1e-5},
    "mse": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMSE"},
    "l2": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossL2"},
}


def _activation_json(name):
    cls = _ACTIVATION_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"activation {name!r} has no DL4J equivalent")
    out = {"@class": "org.nd4j.linalg.activations.impl." + cls}
    if name == "leakyrelu":
        out["alpha"] = 0.01
    elif name == "elu":
        out["alpha"] = 1.0
    return out


def _weight_init_json(name):
    if name in ("zero", "ones"):
        return {"@class": "org.deeplearning4j.nn.weights.WeightInitConstant",
                "value": 0.0 if name == "zero" else 1.0}
    return {"@class": "org.deeplearning4j.nn.weights." + _WEIGHT_INIT_CLASSES.get(
        name, "WeightInitXavier")}


def _updater_json(updater):
    cls = type(updater).__name__
    if cls == "Adam":
        return {"@class": "org.nd4j.linalg.learning.config.Adam", "beta1": updater.beta1,
                "beta2": updater.beta2, "epsilon": updater.epsilon,
                "learningRate": updater.learning_rate}
    if cls == "Sgd" and getattr(updater, "momentum", 0.0) > 0 and getattr(updater, "nesterov",
                                                                          False):
        return {"@class": "org.nd4j.linalg.learning.config.Nesterovs",
                "learningRate": updater.learning_rate, "momentum": updater.momentum}
    # plain SGD (classical momentum has no DL4J updater: written as Sgd)
    lr = getattr(updater, "learning_rate", 0.1)
    return {"@class": "org.nd4j.linalg.learning.config.Sgd", "learningRate": lr}


def _regularization_json(value):
    if not value:
        return []
    return [{"@class": "org.nd4j.linalg.learning.regularization.L2Regularization",
             "l2": {"@class": "org.nd4j.linalg.schedule.FixedSchedule", "value": value}}]


def _base_layer_json(cls, layer, name, model):
    return {
        "@class": cls,
        "activationFn": _activation_json(layer.activation),
        "biasInit": float(getattr(layer, "bias_init", 0.0)),
        "biasUpdater": None,
        "constraints": None,
        "gainInit": 1.0,
        "gradientNormalization": "None",
        "gradientNormalizationThreshold": 1.0,
        "idropout": None,
        "iupdater": _updater_json(model.updater),
        "layerName": name,
        "nin": int(layer.n_in),
        "nout": int(layer.n_out),
        "regularization": _regularization_json(getattr(model, "l2", 0.0)),
        "regularizationBias": _regularization_json(getattr(model, "l2_bias", 0.0)),
        "weightInitFn": _weight_init_json(getattr(layer, "weight_init", "xavier")),
        "weightNoise": None,
    }


def _recurrent_json(cls, layer, name, model):
    out = _base_layer_json("org.deeplearning4j.nn.conf.layers." + cls, layer, name, model)
    out.update({
        "forgetGateBiasInit": float(layer.forget_gate_bias_init),
        "gateActivationFn": _activation_json(layer.gate_activation),
        "helperAllowFallback": True,
        "weightInitFnRecurrent": None,
    })
    return dict(sorted(out.items()))


def _layer_json(layer, name, model):
    """(DL4J layer JSON, parameter keys, kind) of an lstmfast layer."""
    L, N = _modules()
    if isinstance(layer, L.Bidirectional):
        inner_layer = layer.forward_layer
        cls = "GravesLSTM" if isinstance(inner_layer, L.GravesLSTM) else "LSTM"
        inner = _recurrent_json(cls, inner_layer, name, model)
        out = {
            "@class": "org.deeplearning4j.nn.conf.layers.recurrent.Bidirectional",
            "bwd": inner, "constraints": None, "fwd": inner, "gradientNormalization": "None",
            "gradientNormalizationThreshold": 1.0, "idropout": None, "layerName": name,
            "mode": layer.mode.upper(), "nin": int(inner_layer.n_in),
            "nout": int(inner_layer.n_out),
        }
        keys = ["fW", "fRW", "fb", "bW", "bRW", "bb"]
        return out, keys, "Bidirectional"
    if isinstance(layer, L.GravesBidirectionalLSTM):
        f = layer.forward_layer
        out = _recurrent_json("GravesBidirectionalLSTM", f, name, model)
        return out, ["WF", "RWF", "bF", "WB", "RWB", "bB"], "GravesBidirectionalLSTM"
    if isinstance(layer, (L.GravesLSTM, L.LSTM)):
        cls = "GravesLSTM" if isinstance(layer, L.GravesLSTM) else "LSTM"
        return _recurrent_json(cls, layer, name, model), ["W", "RW", "b"], cls
    if isinstance(layer, N.DenseLayer):
        if isinstance(layer, N.RnnOutputLayer):
            cls = "RnnOutputLayer"
        elif isinstance(layer, N.OutputLayer):
            cls = "OutputLayer"
        else:
            cls = "DenseLayer"
        out = _base_layer_json("org.deeplearning4j.nn.conf.layers." + cls, layer, name, model)
        out["hasBias"] = True
        if cls == "DenseLayer":
            out["hasLayerNorm"] = False
        else:
            out["lossFn"] = dict(_LOSS_JSON[layer.loss])
        return dict(sorted(out.items())), ["W", "b"], cls
    raise ValueError(f"cannot save a {type(layer).__name__} layer in DL4J's format")


_PREPROCESSOR_JSON = {
    "rnn_to_ff": {"@class": "org.deeplearning4j.nn.conf.preprocessor."
                            "RnnToFeedForwardPreProcessor", "rnnDataFormat": "NCW"},
    "ff_to_rnn": {"@class": "org.deeplearning4j.nn.conf.preprocessor."
                            "FeedForwardToRnnPreProcessor", "rnnDataFormat": "NCW"},
}


def configuration_json(model) -> str:
    """The DL4J (1.0.0-beta6 style) ``MultiLayerConfiguration`` JSON of a Sequential."""
    layers = list(model.layers)
    dtype = np.dtype(model.dtype)
    data_type = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE"}.get(dtype)
    if data_type is None:
        raise ValueError(f"cannot save a {dtype} model in DL4J's format")
    confs = []
    preprocessors = {}
    kinds = []
    for i, layer in enumerate(layers):
        out, keys, kind = _layer_json(layer, f"layer{i}", model)
        kinds.append(kind)
        confs.append({
            "cacheMode": "NONE", "dataType": data_type, "epochCount": 0, "iterationCount": 0,
            "layer": out, "maxNumLineSearchIterations": 5, "miniBatch": True, "minimize": True,
            "optimizationAlgo": "STOCHASTIC_GRADIENT_DESCENT", "seed": 12345,
            "stepFunction": None, "variables": keys,
        })
    # DL4J needs explicit preprocessors where lstmfast's dense layers run on sequences: in
    # a network with any sequence layer, the data are sequences throughout
    sequences = any(kind not in ("DenseLayer", "OutputLayer") for kind in kinds)
    rows = False
    for i, kind in enumerate(kinds):
        if not sequences:
            break
        if kind == "OutputLayer":
            raise ValueError(f"cannot save layer {i}: an OutputLayer in a network of sequences "
                             "(use RnnOutputLayer)")
        if kind == "DenseLayer" and not rows:
            preprocessors[str(i)] = _PREPROCESSOR_JSON["rnn_to_ff"]
            rows = True
        elif kind != "DenseLayer" and rows:
            preprocessors[str(i)] = _PREPROCESSOR_JSON["ff_to_rnn"]
            rows = False
    if rows:  # a network ending on dense layers over sequences: close the time axis again
        raise ValueError("cannot save a network whose last layers are DenseLayers on sequences: "
                         "DL4J would return time-series rows, lstmfast returns [mb, n, T]")
    fwd = getattr(model, "tbptt_forward_length", None)
    back = getattr(model, "tbptt_backward_length", None)
    config = {
        "backpropType": "TruncatedBPTT" if fwd else "Standard",
        "cacheMode": "NONE",
        "confs": confs,
        "dataType": data_type,
        "epochCount": 0,
        "inferenceWorkspaceMode": "ENABLED",
        "inputPreProcessors": preprocessors,
        "iterationCount": 0,
        "tbpttBackLength": int(back or fwd or 20),
        "tbpttFwdLength": int(fwd or 20),
        "trainingWorkspaceMode": "ENABLED",
        "validateOutputLayerConfig": True,
    }
    return json.dumps(config, indent=2, allow_nan=False)


def save(model, path):
    """Write ``model`` (an lstmfast ``Sequential``) as a DL4J ``ModelSerializer`` zip.

    Entries: ``configuration.json`` (a ``MultiLayerNetwork`` in the 1.0.0-beta6 JSON style)
    and ``coefficients.bin`` (all parameters, ``[1, nParams]``, in the model's dtype).  No
    ``updaterState.bin`` is written: DL4J restores such a model with a fresh updater state.
    The file is written to a temporary file in the same directory and renamed over ``path``
    (``os.replace``), so an interrupted save leaves any previous file intact.
    """
    conf = configuration_json(model)
    flat = np.concatenate([np.asarray(layer.params, dtype=model.dtype).reshape(-1)
                           for layer in model.layers])
    coefficients = write_array(flat.reshape(1, -1))

    def writer(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("configuration.json", conf)
            z.writestr("coefficients.bin", coefficients)

    _atomic_write(os.fspath(path), writer)


# ---------------------------------------------------------------------------------------
# ComputationGraphs beyond chains: an inference-only evaluator
# ---------------------------------------------------------------------------------------

@dataclass
class VertexSpec:
    """One vertex of a ComputationGraph: a layer (``layer`` set) or a merge/element-wise op."""

    name: str
    kind: str  # "layer", "merge", "elementwise"
    inputs: list
    layer: Optional[LayerSpec] = None
    op: Optional[str] = None  # element-wise: add, subtract, product, average, max


@dataclass
class GraphSpec:
    inputs: list
    outputs: list
    vertices: list  # in DL4J's topological order (= parameter order)

    @property
    def n_params(self) -> int:
        return sum(v.layer.n_params for v in self.vertices if v.layer is not None)


_ELEMENTWISE_OPS = ("add", "subtract", "product", "average", "max")


def _topological_order(config, names, inputs, net_in):
    stored = config.get("topologicalOrderStr")
    if isinstance(stored, list) and all(isinstance(v, str) for v in stored):
        order = [v for v in stored if v not in net_in]
        if sorted(order) != sorted(names):
            raise ValueError("ComputationGraph: topologicalOrderStr does not list the vertices")
    else:
        # no stored order (DL4J before 1.0): accept only when the order is unique
        order, done = [], set(net_in)
        while len(order) < len(names):
            ready = [v for v in names if v not in done and all(i in done for i in inputs[v])]
            if len(ready) != 1:
                raise ValueError("ComputationGraph without a stored topological order whose "
                                 "parameter order is ambiguous (or cyclic): not supported")
            order.append(ready[0])
            done.add(ready[0])
    seen = set(net_in)
    for v in order:
        missing = [i for i in inputs[v] if i not in seen]
        if missing:
            raise ValueError(f"ComputationGraph: vertex {v!r} comes before its inputs {missing}")
        seen.add(v)
    return order


def parse_graph(config) -> GraphSpec:
    """Parse a ComputationGraph ``configuration.json`` into a :class:`GraphSpec` (any DAG of
    supported layers, MergeVertex and ElementWiseVertex; SimpleRnn and GlobalPoolingLayer
    included)."""
    if isinstance(config, (bytes, bytearray, str)):
        try:
            config = json.loads(config)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"configuration.json is not valid JSON: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("vertices"), dict):
        raise ValueError("configuration.json is not a ComputationGraph configuration")
    try:
        return _parse_dag(config)
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError) as e:
        raise ValueError(f"malformed configuration.json: {type(e).__name__}: {e}") from None


def _parse_dag(config) -> GraphSpec:
    vertices = config["vertices"]
    inputs = config.get("vertexInputs")
    net_in = config.get("networkInputs")
    net_out = config.get("networkOutputs")
    if not isinstance(inputs, dict) or not isinstance(net_in, list) \
            or not isinstance(net_out, list) or not net_in or not net_out:
        raise ValueError("ComputationGraph without vertexInputs/networkInputs/networkOutputs")
    names = list(vertices)
    for v in names:
        ins = inputs.get(v)
        if not isinstance(ins, list) or not ins or not all(isinstance(i, str) for i in ins):
            raise ValueError(f"vertex {v!r}: missing or malformed inputs")
        for i in ins:
            if i not in vertices and i not in net_in:
                raise ValueError(f"vertex {v!r}: unknown input {i!r}")
    for o in net_out:
        if o not in vertices:
            raise ValueError(f"ComputationGraph: unknown output {o!r}")
    order = _topological_order(config, names, inputs, net_in)
    specs = []
    for v in order:
        raw, body = _polymorphic(vertices[v], "vertex", f"vertex {v!r}")
        key = _norm(raw)
        ctx = f"vertex {v!r}"
        if key == "layervertex":
            lconf = body.get("layerConf")
            if not isinstance(lconf, dict) or lconf.get("layer") is None:
                raise ValueError(f"{ctx}: missing layerConf")
            layer = _layer_spec(lconf["layer"], ctx, extended=True)
            _check_variables(layer, lconf.get("variables"), ctx)
            layer.preprocessor = _preprocessor(body.get("preProcessor"), ctx)
            if layer.preprocessor == "rnn_to_ff" and layer.kind != "DenseLayer" or \
                    layer.preprocessor == "ff_to_rnn" and layer.kind in ("DenseLayer",
                                                                         "OutputLayer"):
                raise ValueError(f"{ctx}: unsupported preprocessor before a {layer.kind}")
            if len(inputs[v]) != 1:
                raise ValueError(f"{ctx}: a layer with {len(inputs[v])} inputs")
            specs.append(VertexSpec(v, "layer", list(inputs[v]), layer=layer))
        elif key == "mergevertex":
            specs.append(VertexSpec(v, "merge", list(inputs[v])))
        elif key == "elementwisevertex":
            op = body.get("op")
            if not isinstance(op, str) or _norm(op) not in _ELEMENTWISE_OPS:
                raise ValueError(f"{ctx}: unsupported element-wise operation {op!r}")
            specs.append(VertexSpec(v, "elementwise", list(inputs[v]), op=_norm(op)))
        else:
            raise ValueError(f"{ctx}: unsupported graph vertex {raw!r}")
    spec = GraphSpec(inputs=list(net_in), outputs=list(net_out), vertices=specs)
    default = config.get("defaultConfiguration")
    all_vars = default.get("variables") if isinstance(default, dict) else None
    if all_vars:
        expected = [f"{vs.name}_{k}" for vs in specs if vs.layer is not None
                    for k, _ in vs.layer.params]
        if all_vars != expected:
            raise ValueError(f"ComputationGraph parameter keys {all_vars} differ from the "
                             f"expected {expected}")
    return spec


def _views(flat, shapes):
    out, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[offset:offset + n].reshape(shape, order="F"))
        offset += n
    return out


class _SimpleRnnDirection:
    """DL4J's SimpleRnn, inference only: ``out_t = act(x_t W + out_{t-1} RW + b)``."""

    def __init__(self, spec: LayerSpec, flat, forwards=True):
        from .network import activation_forward
        self._act = activation_forward
        self.activation = spec.activation
        self.W, self.RW, b = _views(flat, [(spec.n_in, spec.n_out), (spec.n_out, spec.n_out),
                                           (spec.n_out,)])
        self.b = b
        self.forwards = forwards
        self.n_out = spec.n_out

    def forward(self, x):
        mb, _, steps = x.shape
        out = np.empty((mb, self.n_out, steps), dtype=self.W.dtype)
        prev = None
        order = range(steps) if self.forwards else range(steps - 1, -1, -1)
        for t in order:
            z = x[:, :, t] @ self.W + self.b
            if prev is not None:
                z += prev @ self.RW
            prev = self._act(self.activation, z)
            out[:, :, t] = prev
        return out


def _combine(mode, a, b):
    if mode == "concat":
        return np.concatenate([a, b], axis=1)
    if mode == "add":
        return a + b
    if mode == "mul":
        return a * b
    return 0.5 * (a + b)


class _SimpleRnnLayer:
    def __init__(self, spec: LayerSpec, flat):
        if spec.kind == "Bidirectional":
            n = spec.inner.n_params
            self.parts = [_SimpleRnnDirection(spec.inner, flat[:n]),
                          _SimpleRnnDirection(spec.inner, flat[n:], forwards=False)]
            self.mode = spec.mode
        else:
            self.parts = [_SimpleRnnDirection(spec, flat)]

    def __repr__(self):
        d = self.parts[0]
        inner = f"SimpleRnn(n_in={d.W.shape[0]}, n_out={d.n_out}, activation={d.activation!r})"
        return f"Bidirectional({inner}, mode={self.mode!r})" if len(self.parts) == 2 else inner

    def forward(self, x, mask=None, training=False):
        if mask is not None:
            raise ValueError("SimpleRnn in load_graph models does not take masks")
        if np.ndim(x) != 3:
            raise ValueError(f"SimpleRnn takes [minibatch, nIn, T]; got shape {np.shape(x)}")
        outs = [p.forward(x) for p in self.parts]
        return outs[0] if len(outs) == 1 else _combine(self.mode, *outs)


class _GlobalPooling:
    def __init__(self, spec: LayerSpec):
        kind, p = spec.mode.split(":")
        self.kind, self.p = kind, int(p)

    def __repr__(self):
        return f"GlobalPooling({self.kind}{', p=%d' % self.p if self.kind == 'pnorm' else ''})"

    def forward(self, x, mask=None, training=False):
        if mask is not None:
            raise ValueError("GlobalPoolingLayer in load_graph models does not take masks")
        if np.ndim(x) != 3:
            raise ValueError(f"global pooling over time takes [minibatch, n, T]; got "
                             f"{np.shape(x)}")
        if self.kind == "max":
            return x.max(axis=2)
        if self.kind == "avg":
            return x.mean(axis=2)
        if self.kind == "sum":
            return x.sum(axis=2)
        return (np.abs(x) ** self.p).sum(axis=2) ** (1.0 / self.p)


class Graph:
    """An inference-only DL4J ComputationGraph (see :func:`load_graph`).

    ``graph.output(x)`` (or ``graph.output(x1, x2, ...)`` for several network inputs) returns
    the network output (a tuple for several outputs); ``graph.layers`` maps vertex names to
    their layer objects (lstmfast layers where lstmfast has them); ``graph.params`` is the flat
    parameter vector in DL4J's order.
    """

    def __init__(self, spec: GraphSpec, params, dtype=np.float32):
        L, N = _modules()
        self.spec = spec
        self.dtype = np.dtype(dtype)
        flat = np.asarray(params, dtype=self.dtype).reshape(-1)
        if flat.size != spec.n_params:
            raise ValueError(f"the graph has {spec.n_params} parameters but the coefficients "
                             f"hold {flat.size}")
        self.params = flat.copy()
        self.layers = {}
        offset = 0
        for vs in spec.vertices:
            if vs.layer is None:
                continue
            ls = vs.layer
            piece = self.params[offset:offset + ls.n_params]
            offset += ls.n_params
            what = f"vertex {vs.name!r} ({ls.kind})"
            if ls.kind == "GlobalPoolingLayer":
                layer = _GlobalPooling(ls)
            elif ls.kind == "SimpleRnn" or (ls.kind == "Bidirectional"
                                            and ls.inner.kind == "SimpleRnn"):
                layer = _SimpleRnnLayer(ls, piece)
            else:
                try:
                    layer = _make_layer(ls, self.dtype, L, N)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{what}: lstmfast cannot represent it: {e}") from None
                if layer.num_params() != ls.n_params:
                    raise ValueError(f"{what}: lstmfast's layer has {layer.num_params()} "
                                     f"parameters, DL4J's {ls.n_params}")
                layer.params = piece
                # keep one storage: the layer's parameters are views into graph.params
                if hasattr(layer, "_bind_storage"):
                    layer._bind_storage(piece, np.zeros_like(piece))
            self.layers[vs.name] = layer

    def num_params(self):
        return self.params.size

    def output(self, *inputs):
        if len(inputs) != len(self.spec.inputs):
            raise ValueError(f"the graph takes {len(self.spec.inputs)} input(s) "
                             f"{self.spec.inputs}; got {len(inputs)}")
        values = {name: np.asarray(x, dtype=self.dtype)
                  for name, x in zip(self.spec.inputs, inputs)}
        for vs in self.spec.vertices:
            args = [values[i] for i in vs.inputs]
            if vs.kind == "layer":
                values[vs.name] = self.layers[vs.name].forward(args[0])
            elif vs.kind == "merge":
                values[vs.name] = args[0] if len(args) == 1 else np.concatenate(args, axis=1)
            else:
                values[vs.name] = _elementwise(vs.op, args)
        outs = tuple(values[o] for o in self.spec.outputs)
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self):
        inner = ",\n  ".join(f"{vs.name} <- {vs.inputs}: "
                             f"{self.layers.get(vs.name, vs.op or vs.kind)!r}"
                             for vs in self.spec.vertices)
        return f"Graph([\n  {inner}\n], {self.num_params()} parameters)"


def _elementwise(op, args):
    out = np.array(args[0], copy=True)
    if op == "subtract":
        if len(args) != 2:
            raise ValueError("element-wise subtract takes exactly 2 inputs")
        return out - args[1]
    for a in args[1:]:
        if op in ("add", "average"):
            out += a
        elif op == "product":
            out *= a
        else:
            np.maximum(out, a, out=out)
    if op == "average":
        out /= len(args)
    return out


def load_graph(path, *, dtype=None) -> Graph:
    """Load a DL4J ``ComputationGraph`` zip that is not a plain chain, for inference.

    Supports LayerVertex (the layers :func:`load` supports, plus SimpleRnn, Bidirectional
    around SimpleRnn and GlobalPoolingLayer over time), MergeVertex (concatenation along the
    feature axis) and ElementWiseVertex (add, subtract, product, average, max).  No masks, no
    training: use :func:`load` (a trainable :class:`lstmfast.Sequential`) for chains.
    """
    where = os.path.basename(os.fspath(path))
    zf = _open_zip(path, where)
    try:
        with zf:
            raw = _read_entry(zf, "configuration.json", _MAX_JSON_BYTES, where)
            try:
                spec = parse_graph(raw)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            n = spec.n_params
            raw_coeffs = _read_entry(zf, "coefficients.bin", 8 * n + 4096, where)
    except _ZIP_ERRORS + (zlib.error,) as e:
        raise ValueError(f"{where}: corrupted zip ({type(e).__name__}: {e})") from None
    try:
        coeffs = read_array(raw_coeffs, max_elements=n)
    except ValueError as e:
        raise ValueError(f"{where}: coefficients.bin: {e}") from None
    if coeffs.size != n or coeffs.dtype.kind != "f":
        raise ValueError(f"{where}: the configuration has {n} parameters but coefficients.bin "
                         f"holds {coeffs.size} {coeffs.dtype} values")
    if dtype is None:
        dtype = np.float64 if coeffs.dtype == np.float64 else np.float32
    return Graph(spec, coeffs.reshape(-1), dtype=dtype)
