"""ND4J binary arrays (``Nd4j.write`` / ``Nd4j.read``): read any of the formats DL4J wrote, write
the modern one. See the package docstring for the format."""

import io
import math
import os
import struct
from typing import Optional

import numpy as np

from ._files import _atomic_write


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
            if isinstance(piece, str):
                raise TypeError(f"{self.name}: the file object is open in text mode; ND4J "
                                f"arrays are binary: open it with mode 'rb'")
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
        _atomic_write(destination, lambda f: f.write(payload))
        return None
    if hasattr(destination, "write"):
        destination.write(payload)
        return None
    raise TypeError(
        "write_array: destination must be a path, a binary file object or None, got "
        f"{type(destination).__name__}"
    )
