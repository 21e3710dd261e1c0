"""lstmfast.dl4j: ND4J binary arrays and DL4J ModelSerializer zips.

Outside references: the files DL4J itself wrote (``tests/data``, see its README). Expected
values in these tests come from the documented formats, worked out by hand here, never from
the loader's own slicing.
"""

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lstmfast
from lstmfast import dl4j
from testdata import data_file as data


# ---------------------------------------------------------------------------------------
# an independent writer of the ND4J stream, for hand-made files (struct, not dl4j.py)

def _utf(s):
    b = s.encode("ascii")
    return struct.pack(">H", len(b)) + b


_BE = {"FLOAT": ">f4", "DOUBLE": ">f8", "HALF": ">f2", "INT": ">i4", "LONG": ">i8",
       "SHORT": ">i2", "BYTE": "i1", "UBYTE": "u1", "BOOL": "u1", "UINT16": ">u2",
       "UINT32": ">u4", "UINT64": ">u8"}


def nd4j(info, values, dtype="FLOAT", mode="MIXED_DATA_TYPES", shape_type=None, count=None,
         data_mode=None):
    """Bytes of an ND4J array: shape buffer ``info`` then data ``values``."""
    long_counts = mode in ("LONG_SHAPE", "MIXED_DATA_TYPES")
    shape_type = shape_type or ("LONG" if long_counts else "INT")
    cnt = ">q" if long_counts else ">i"
    out = _utf(mode) + struct.pack(cnt, len(info)) + _utf(shape_type)
    out += np.asarray(info, dtype=">i8" if shape_type == "LONG" else ">i4").tobytes()
    data_mode = data_mode or mode
    dcnt = ">q" if data_mode in ("LONG_SHAPE", "MIXED_DATA_TYPES") else ">i"
    payload = np.asarray(values).astype(_BE.get(dtype, ">f4")).tobytes() if len(values) else b""
    out += _utf(data_mode) + struct.pack(dcnt, len(values) if count is None else count)
    out += _utf(dtype) + payload
    return out


# the data-type bits of the shape buffer's "extras" slot, from libnd4j's array/ArrayOptions.h
# (ARRAY_FLOAT, ARRAY_DOUBLE); DL4J's own 1.0.0-beta6 files carry FLOAT_BIT (test_dl4j_export.py)
FLOAT_BIT = 8192
DOUBLE_BIT = 16384


# ---------------------------------------------------------------------------------------
# reading the files DL4J wrote

@pytest.mark.parametrize("name, shape", [
    ("LSTMCharModelingExample_Input_100b6.bin", (3, 77, 10)),
    ("LSTMCharModelingExample_Output_100b6.bin", (3, 77, 10)),
    ("SyntheticBidirectionalRNNGraph_Input_100b6.bin", (4, 10, 10)),
    ("SyntheticBidirectionalRNNGraph_Output_100b6.bin", (4, 3)),
])
def test_read_array_documented_shapes(name, shape):
    a = dl4j.read_array(data(name))
    assert a.shape == shape
    assert a.dtype == np.float32
    assert a.flags.c_contiguous and a.dtype.isnative
    assert np.all(np.isfinite(a))
    # the same from bytes and from an open file
    raw = data(name).read_bytes()
    np.testing.assert_array_equal(dl4j.read_array(raw), a)
    with open(data(name), "rb") as f:
        np.testing.assert_array_equal(dl4j.read_array(f), a)


def test_outputs_are_softmax_distributions():
    # the outputs come from softmax layers: non-negative and summing to 1 over the
    # feature axis, which only holds if the layout (and strides) were read right
    out = dl4j.read_array(data("LSTMCharModelingExample_Output_100b6.bin"))
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    out = dl4j.read_array(data("SyntheticBidirectionalRNNGraph_Output_100b6.bin"))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("zipname, n_params, n_updater", [
    ("080_ModelSerializer_Regression_LSTM_1.zip", 477, 477),
    ("080_ModelSerializer_Regression_CG_LSTM_1.zip", 477, 477),
    ("LSTMCharModelingExample_100b6.zip", 558677, 2 * 558677),  # Adam: m and v
    ("SyntheticBidirectionalRNNGraph_100b6.zip", 4515, 2 * 4515),
])
def test_read_array_inside_zips(zipname, n_params, n_updater):
    with zipfile.ZipFile(data(zipname)) as z:
        coeffs = dl4j.read_array(z.read("coefficients.bin"))
        with z.open("updaterState.bin") as f:  # a stream of unknown length
            upd = dl4j.read_array(f)
    assert coeffs.shape == (1, n_params) and coeffs.dtype == np.float32
    assert upd.shape == (1, n_updater) and upd.dtype == np.float32
    if zipname.startswith("080"):
        # the legacy (JAVACPP, int32 counts) files hold 1, 2, ..., 477
        np.testing.assert_array_equal(coeffs[0], np.arange(1, 478, dtype=np.float32))


@pytest.mark.parametrize("name", [
    "LSTMCharModelingExample_Input_100b6.bin",
    "LSTMCharModelingExample_Output_100b6.bin",
    "SyntheticBidirectionalRNNGraph_Input_100b6.bin",
    "SyntheticBidirectionalRNNGraph_Output_100b6.bin",
])
def test_write_array_is_byte_identical_to_dl4j(name):
    # DL4J 1.0.0-beta6 wrote these contiguous C-order arrays; our writer produces the same bytes
    raw = data(name).read_bytes()
    assert dl4j.write_array(dl4j.read_array(raw)) == raw


# ---------------------------------------------------------------------------------------
# hand-made arrays: legacy headers, orders, strides, data types

def test_legacy_javacpp_row_vector():
    raw = nd4j([2, 1, 5, 1, 1, 0, 1, 99], [1, 2, 3, 4, 5], mode="JAVACPP")
    a = dl4j.read_array(raw)
    assert a.shape == (1, 5) and a.dtype == np.float32
    np.testing.assert_array_equal(a, [[1, 2, 3, 4, 5]])


@pytest.mark.parametrize("mode", ["HEAP", "DIRECT", "JAVACPP", "LONG_SHAPE", "MIXED_DATA_TYPES"])
def test_all_allocation_modes(mode):
    extras = FLOAT_BIT if mode == "MIXED_DATA_TYPES" else 0
    raw = nd4j([2, 2, 3, 3, 1, extras, 1, 99], [0, 1, 2, 3, 4, 5], mode=mode)
    np.testing.assert_array_equal(dl4j.read_array(raw), [[0, 1, 2], [3, 4, 5]])


def test_fortran_order():
    # order 'f', strides [1, 2]: element (i, j) at i + 2 j
    raw = nd4j([2, 2, 3, 1, 2, FLOAT_BIT, 1, 102], [0, 1, 2, 3, 4, 5])
    a = dl4j.read_array(raw)
    np.testing.assert_array_equal(a, [[0, 2, 4], [1, 3, 5]])
    assert a.flags.c_contiguous


def test_non_contiguous_strides_with_order_c():
    # order says 'c' but the strides are a permutation: strides win
    raw = nd4j([2, 2, 3, 1, 2, FLOAT_BIT, -1, 99], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(dl4j.read_array(raw), [[0, 2, 4], [1, 3, 5]])
    # strides with gaps: [2, 2] with strides [3, 1] over 6 elements
    raw = nd4j([2, 2, 2, 3, 1, FLOAT_BIT, -1, 99], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(dl4j.read_array(raw), [[0, 1], [3, 4]])
    # a 3-D permuted layout like an RNN output [mb, n, T] stored time-major
    mb, n, t = 2, 3, 4
    full = np.arange(mb * n * t, dtype=np.float32)
    # element (b, i, k) at k*mb*n + b*n + i
    raw = nd4j([3, mb, n, t, n, 1, mb * n, FLOAT_BIT, -1, 99], full)
    expect = np.empty((mb, n, t), np.float32)
    for b in range(mb):
        for i in range(n):
            for k in range(t):
                expect[b, i, k] = k * mb * n + b * n + i
    np.testing.assert_array_equal(dl4j.read_array(raw), expect)


def test_legacy_offset_slot():
    # before MIXED_DATA_TYPES the slot after the strides was the offset into the data buffer
    raw = nd4j([1, 3, 1, 2, 1, 99], [0, 1, 2, 3, 4, 5], mode="JAVACPP")
    np.testing.assert_array_equal(dl4j.read_array(raw), [2, 3, 4])


@pytest.mark.parametrize("dtype, values, npdtype", [
    ("DOUBLE", [1.5, -2.25, 1e300], np.float64),
    ("FLOAT", [1.5, -2.25, 3e38], np.float32),
    ("HALF", [1.5, -2.25, 65504.0], np.float16),
    ("INT", [1, -2, 2**31 - 1], np.int32),
    ("LONG", [1, -2, 2**62], np.int64),
    ("SHORT", [1, -2, 32767], np.int16),
    ("BYTE", [1, -2, 127], np.int8),
    ("UBYTE", [1, 2, 255], np.uint8),
    ("BOOL", [1, 0, 1], np.bool_),
    ("UINT16", [1, 2, 65535], np.uint16),
    ("UINT32", [1, 2, 2**32 - 1], np.uint32),
    ("UINT64", [1, 2, 2**63], np.uint64),
])
@pytest.mark.parametrize("mode", ["JAVACPP", "MIXED_DATA_TYPES"])
def test_data_types(dtype, values, npdtype, mode):
    raw = nd4j([1, 3, 1, 0, 1, 99], values, dtype=dtype, mode=mode)
    a = dl4j.read_array(raw)
    assert a.dtype == npdtype and a.dtype.isnative
    np.testing.assert_array_equal(a, np.asarray(values).astype(npdtype))


def test_bfloat16_is_widened_to_float32():
    f = np.array([1.0, -2.5, 3.140625], dtype=">f4")
    upper = (f.view(">u4") >> 16).astype(">u2")
    raw = nd4j([1, 3, 1, 2048, 1, 99], [], dtype="BFLOAT16", count=3) + upper.tobytes()
    a = dl4j.read_array(raw)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, [1.0, -2.5, 3.140625])


def test_scalar_and_empty():
    a = dl4j.read_array(nd4j([0, FLOAT_BIT, 1, 99], [3.5]))
    assert a.shape == () and a == 3.5
    a = dl4j.read_array(nd4j([1, 0, 1, FLOAT_BIT | 8, 1, 99], []))
    assert a.shape == (0,) and a.dtype == np.float32
    a = dl4j.read_array(nd4j([2, 3, 0, 0, 1, FLOAT_BIT | 8, 1, 99], []))
    assert a.shape == (3, 0)


# ---------------------------------------------------------------------------------------
# writing

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32,
                                   np.int16, np.int8, np.uint8, np.uint16, np.uint32,
                                   np.uint64, np.bool_])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (1, 7), (3, 4), (2, 3, 4), (2, 0, 3)])
def test_write_read_round_trip(dtype, shape):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 50).astype(dtype)
    b = dl4j.read_array(dl4j.write_array(a))
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(b, a)


def test_write_layouts_and_byte_orders():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 5, 6))
    for a in (np.asfortranarray(base), base[:, ::2, 1::2], base.transpose(2, 0, 1),
              base.astype(">f8"), base.astype(">f4")[::-1]):
        b = dl4j.read_array(dl4j.write_array(a))
        np.testing.assert_array_equal(b, a)
        assert b.dtype.isnative


def test_write_header_format():
    raw = dl4j.write_array(np.arange(6, dtype=np.float64).reshape(2, 3))
    expect = (_utf("MIXED_DATA_TYPES") + struct.pack(">q", 8) + _utf("LONG")
              + np.array([2, 2, 3, 3, 1, DOUBLE_BIT, 1, 99], ">i8").tobytes()
              + _utf("MIXED_DATA_TYPES") + struct.pack(">q", 6) + _utf("DOUBLE")
              + np.arange(6, dtype=">f8").tobytes())
    assert raw == expect


def test_write_destinations(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = tmp_path / "a.bin"
    assert dl4j.write_array(a, p) is None
    np.testing.assert_array_equal(dl4j.read_array(p), a)
    np.testing.assert_array_equal(dl4j.read_array(str(p)), a)
    buf = io.BytesIO()
    dl4j.write_array(a, buf)
    dl4j.write_array(a * 2, buf)
    buf.seek(0)
    np.testing.assert_array_equal(dl4j.read_array(buf), a)  # a stream: one array at a time
    np.testing.assert_array_equal(dl4j.read_array(buf), a * 2)
    assert [f.name for f in tmp_path.iterdir()] == ["a.bin"]  # no temporary file left


def test_write_rejects_unsupported():
    with pytest.raises(TypeError, match="complex128"):
        dl4j.write_array(np.zeros(3, complex))
    with pytest.raises(TypeError):
        dl4j.write_array(np.array(["a"]))
    with pytest.raises(TypeError):
        dl4j.read_array(12345)


# ---------------------------------------------------------------------------------------
# truncated, corrupted and hostile arrays

def test_every_truncation_is_refused():
    for name in ("SyntheticBidirectionalRNNGraph_Output_100b6.bin",):
        raw = data(name).read_bytes()
        for n in range(len(raw)):
            with pytest.raises(ValueError):
                dl4j.read_array(raw[:n])
            with pytest.raises(ValueError):
                dl4j.read_array(io.BytesIO(raw[:n]))
    with zipfile.ZipFile(data("080_ModelSerializer_Regression_LSTM_1.zip")) as z:
        raw = z.read("coefficients.bin")
    for n in list(range(0, 120)) + [len(raw) - 4, len(raw) - 1]:
        with pytest.raises(ValueError):
            dl4j.read_array(raw[:n])


def test_trailing_bytes_are_refused():
    raw = nd4j([1, 2, 1, FLOAT_BIT, 1, 99], [1, 2])
    with pytest.raises(ValueError, match="unexpected bytes"):
        dl4j.read_array(raw + b"\0")


class _Stream:
    """A non-seekable stream of unknown length (like a socket or a pipe)."""

    def __init__(self, raw):
        self._b = io.BytesIO(raw)

    def read(self, n=-1):
        return self._b.read(n)


@pytest.mark.parametrize("count", [2**40, 2**62, 2**63 - 1])
def test_huge_claimed_count_is_refused_without_allocating(count):
    head = nd4j([1, 4, 1, FLOAT_BIT, 1, 99], [], count=count)
    raw = head + b"\0" * 64
    tracemalloc.start()
    try:
        for src in (raw, io.BytesIO(raw), _Stream(raw)):
            with pytest.raises(ValueError):
                dl4j.read_array(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_huge_legacy_count_is_refused():
    raw = nd4j([1, 4, 1, 0, 1, 99], [], mode="JAVACPP", count=2**31 - 1) + b"\0" * 16
    with pytest.raises(ValueError, match="truncated|claims"):
        dl4j.read_array(raw)


@pytest.mark.parametrize("make, match", [
    (lambda: nd4j([-1, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "rank"),
    (lambda: nd4j([1000, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "rank"),
    (lambda: nd4j([2, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "rank 2 needs"),
    (lambda: nd4j([1, -4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "negative dimension"),
    (lambda: nd4j([1, 4, 1, FLOAT_BIT, 1, 120], [1, 2, 3, 4]), "order"),
    (lambda: nd4j([1, 5, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "elements"),
    (lambda: nd4j([1, 4, 2, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "reaches"),
    (lambda: nd4j([1, 4, -1, FLOAT_BIT, 1, 99], [1, 2, 3, 4]), "reaches"),
    (lambda: nd4j([1, 2**40, 0, FLOAT_BIT, 1, 99], [1.0]), "elements"),
    (lambda: nd4j([2, 0, 2**62, 1, 1, FLOAT_BIT, 1, 99], []), "implausible"),
    (lambda: nd4j([1, 4, 1, 0, 1, 99], [1, 2, 3, 4], mode="JAVACPP")[:0]
     + _utf("BANANA") + b"\0" * 40, "allocation mode"),
    (lambda: nd4j([1, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4], dtype="QUATERNION"), "data type"),
    (lambda: nd4j([1, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4], shape_type="FLOAT"), "shape buffer"),
    (lambda: nd4j([1, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4], dtype="COMPRESSED"), "compressed"),
    (lambda: nd4j([1, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4], dtype="UTF8"), "UTF8"),
    (lambda: nd4j([1, 4, 1, 16384, 1, 99], [1, 2, 3, 4]), "data type bits"),
    (lambda: nd4j([1, 4, 1, 0, 1, 99], [1, 2, 3, 4], mode="JAVACPP", count=-5), "negative"),
    (lambda: nd4j([1, 4, 1, 2, 1, 99], [1, 2, 3, 4], mode="JAVACPP"), "reaches"),
    (lambda: struct.pack(">H", 3) + b"\xff\xfe\xfd" + b"\0" * 20, "ASCII"),
    (lambda: b"", "truncated"),
    (lambda: b"PK\x03\x04" + b"\0" * 40, "allocation mode"),
])
def test_corrupted_headers_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        dl4j.read_array(make())


def test_max_elements():
    raw = nd4j([1, 4, 1, FLOAT_BIT, 1, 99], [1, 2, 3, 4])
    assert dl4j.read_array(raw, max_elements=4).shape == (4,)
    with pytest.raises(ValueError, match="more than"):
        dl4j.read_array(raw, max_elements=3)


def test_fuzzed_real_files_give_arrays_or_value_errors():
    rng = np.random.default_rng(20240601)
    sources = [data("SyntheticBidirectionalRNNGraph_Output_100b6.bin").read_bytes()]
    with zipfile.ZipFile(data("080_ModelSerializer_Regression_LSTM_1.zip")) as z:
        sources.append(z.read("coefficients.bin"))
    outcomes = {"array": 0, "error": 0}
    for case in range(600):
        raw = bytearray(sources[case % 2])
        header = min(len(raw), 140)
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(0, header)) if rng.random() < 0.8 else int(
                rng.integers(0, len(raw)))
            raw[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.2:
            raw = raw[: int(rng.integers(0, len(raw)))]
        try:
            a = dl4j.read_array(bytes(raw))
        except ValueError:
            outcomes["error"] += 1
        else:
            assert isinstance(a, np.ndarray) and a.size <= len(raw)
            outcomes["array"] += 1
    assert outcomes["error"] > 100 and outcomes["array"] > 10, outcomes


# ---------------------------------------------------------------------------------------
# loading models

def _layers():
    import lstmfast
    return lstmfast


@pytest.mark.parametrize("dtype", [None, np.float64])
def test_char_model_reproduces_dl4j_output(dtype):
    model = dl4j.load(data("LSTMCharModelingExample_100b6.zip"), dtype=dtype)
    lf = _layers()
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [lf.LSTM, lf.LSTM, lf.RnnOutputLayer]
    assert model.dtype == (np.float32 if dtype is None else np.float64)
    assert model.num_params() == 558677
    x = dl4j.read_array(data("LSTMCharModelingExample_Input_100b6.bin"))
    expected = dl4j.read_array(data("LSTMCharModelingExample_Output_100b6.bin"))
    out = model.output(x)
    assert out.shape == expected.shape == (3, 77, 10)
    err = float(np.max(np.abs(out.astype(np.float64) - expected)))
    assert err < 1e-5, err  # DL4J's own tolerance (observed: below 1e-8)


def test_char_model_configuration():
    model = dl4j.load(data("LSTMCharModelingExample_100b6.zip"))
    l0, l1, out = model.layers
    assert (l0.n_in, l0.n_out, l1.n_in, l1.n_out, out.n_in, out.n_out) == (77, 200, 200, 200,
                                                                             200, 77)
    assert l0.activation == "tanh" and l0.gate_activation == "sigmoid"
    assert out.activation == "softmax" and out.loss == "mcxent"
    # the DL4J parameters: forget-gate biases are 1.0 (saved right after init), others 0
    h = 200
    np.testing.assert_array_equal(l0.b[h:2 * h], 1.0)
    np.testing.assert_array_equal(np.r_[l0.b[:h], l0.b[2 * h:]], 0.0)
    # flat order: layer0 W [77, 800] first, Fortran order
    with zipfile.ZipFile(data("LSTMCharModelingExample_100b6.zip")) as z:
        flat = dl4j.read_array(z.read("coefficients.bin"))[0]
    assert l0.W[0, 0] == flat[0] and l0.W[1, 0] == flat[1] and l0.W[0, 1] == flat[77]
    assert l0.RW[0, 0] == flat[77 * 800]
    assert l1.W[0, 0] == flat[77 * 800 + 200 * 800 + 800]
    # training settings that map exactly: Adam(0.005), L2 1e-4, TBPTT 50
    assert type(model.updater).__name__ == "Adam" and model.updater.learning_rate == 0.005
    assert model.l2 == pytest.approx(1e-4) and model.l2_bias == 0.0
    assert model.tbptt_forward_length == 50 and model.tbptt_backward_length == 50


def _expect_fortran(start, rows, cols):
    """The matrix a slice 'start, start+1, ...' of 1..477 reshapes to in Fortran order."""
    m = np.empty((rows, cols), np.float32)
    for i in range(rows):
        for j in range(cols):
            m[i, j] = start + i + rows * j
    return m


@pytest.mark.parametrize("name", ["080_ModelSerializer_Regression_LSTM_1.zip",
                                  "080_ModelSerializer_Regression_CG_LSTM_1.zip"])
def test_080_parameters_in_the_right_slots(name):
    lf = _layers()
    model = dl4j.load(data(name))
    g, bi, out = model.layers
    assert type(g) is lf.GravesLSTM and type(bi) is lf.GravesBidirectionalLSTM
    assert type(out) is lf.RnnOutputLayer
    assert (g.n_in, g.n_out, g.activation) == (3, 4, "tanh")
    assert (bi.n_in, bi.n_out, bi.activation, bi.gate_activation) == (4, 4, "softsign", "sigmoid")
    assert (out.n_in, out.n_out, out.activation, out.loss) == (4, 5, "softmax", "mcxent")
    np.testing.assert_array_equal(model.params, np.arange(1, 478, dtype=np.float32))

    # GravesLSTM(3 -> 4): W [3, 16] holds 1..48, RW [4, 19] 49..124, b [16] 125..140
    assert g.W[0, 0] == 1 and g.W[1, 0] == 2 and g.W[2, 0] == 3 and g.W[0, 1] == 4
    np.testing.assert_array_equal(g.W, _expect_fortran(1, 3, 16))
    assert g.RW[0, 0] == 3 * 16 + 1
    np.testing.assert_array_equal(g.RW, _expect_fortran(49, 4, 19))
    # peephole columns last: wFF, wOO, wGG of unit u at 49 + 4*16 + u, +4, +8
    np.testing.assert_array_equal(g.RW[:, 16], [113, 114, 115, 116])
    np.testing.assert_array_equal(g.RW[:, 17], [117, 118, 119, 120])
    np.testing.assert_array_equal(g.RW[:, 18], [121, 122, 123, 124])
    np.testing.assert_array_equal(g.b, np.arange(125, 141))
    # gate blocks [block input, forget, output, input gate]: the forget block of b is 129..132
    np.testing.assert_array_equal(g.b[4:8], [129, 130, 131, 132])

    # GravesBidirectionalLSTM(4 -> 4): WF, RWF, bF, WB, RWB, bB from 141 on
    np.testing.assert_array_equal(bi.WF, _expect_fortran(141, 4, 16))
    np.testing.assert_array_equal(bi.RWF, _expect_fortran(205, 4, 19))
    np.testing.assert_array_equal(bi.bF, np.arange(281, 297))
    np.testing.assert_array_equal(bi.WB, _expect_fortran(297, 4, 16))
    np.testing.assert_array_equal(bi.RWB, _expect_fortran(361, 4, 19))
    np.testing.assert_array_equal(bi.bB, np.arange(437, 453))
    # RnnOutputLayer(4 -> 5): W [4, 5] 453..472, b 473..477
    np.testing.assert_array_equal(out.W, _expect_fortran(453, 4, 5))
    np.testing.assert_array_equal(out.b, [473, 474, 475, 476, 477])
    # views: writing the layer's W changes the model's flat vector at DL4J's index
    g.W[2, 1] = -1.0
    assert model.params[2 + 3 * 1] == -1.0


def test_080_mln_and_graph_are_the_same_network():
    a = dl4j.load(data("080_ModelSerializer_Regression_LSTM_1.zip"), dtype=np.float64)
    b = dl4j.load(data("080_ModelSerializer_Regression_CG_LSTM_1.zip"), dtype=np.float64)
    # scale the identifiable parameters down so that the output is informative
    for m in (a, b):
        m.params = np.sin(np.arange(1, 478))
    x = np.random.default_rng(3).standard_normal((2, 3, 6))
    out = a.output(x)
    np.testing.assert_array_equal(out, b.output(x))
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_parse_configuration_styles():
    with zipfile.ZipFile(data("080_ModelSerializer_Regression_LSTM_1.zip")) as z:
        spec = dl4j.parse_configuration(z.read("configuration.json"))
    assert spec.source == "MultiLayerNetwork"
    assert [s.kind for s in spec.layers] == ["GravesLSTM", "GravesBidirectionalLSTM",
                                             "RnnOutputLayer"]
    assert spec.n_params == 477
    assert "updater RMSPROP" in spec.not_imported  # said, not silently dropped
    with zipfile.ZipFile(data("080_ModelSerializer_Regression_CG_LSTM_1.zip")) as z:
        spec = dl4j.parse_configuration(z.read("configuration.json").decode())
    assert spec.source == "ComputationGraph" and spec.n_params == 477
    with zipfile.ZipFile(data("LSTMCharModelingExample_100b6.zip")) as z:
        spec = dl4j.parse_configuration(json.loads(z.read("configuration.json")))
    assert [s.kind for s in spec.layers] == ["LSTM", "LSTM", "RnnOutputLayer"]
    assert spec.data_type == "FLOAT" and spec.backprop_type == "TruncatedBPTT"


def _mln(layers, **top):
    conf = {"confs": [{"layer": layer} for layer in layers], "inputPreProcessors": {}}
    conf.update(top)
    return conf


def test_pre_08_string_style_and_legacy_names():
    # the oldest style: activation and loss as plain strings
    conf = _mln([
        {"gravesLSTM": {"nIn": 2, "nOut": 3, "activationFunction": "tanh"}},
        {"rnnoutput": {"nIn": 3, "nOut": 2, "activationFunction": "softmax",
                       "lossFunction": "MCXENT"}},
    ])
    spec = dl4j.parse_configuration(conf)
    assert [(s.kind, s.activation) for s in spec.layers] == [("GravesLSTM", "tanh"),
                                                            ("RnnOutputLayer", "softmax")]
    assert spec.layers[0].gate_activation == "sigmoid"
    assert spec.n_params == 2 * 12 + 3 * 15 + 12 + 3 * 2 + 2


def test_bidirectional_wrapper_and_dense_preprocessors(tmp_path):
    lf = _layers()
    lstm = {"@class": "org.deeplearning4j.nn.conf.layers.LSTM", "nin": 3, "nout": 4,
            "activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationSoftSign"},
            "gateActivationFn": {
                "@class": "org.nd4j.linalg.activations.impl.ActivationHardSigmoid"},
            "forgetGateBiasInit": 1.0}
    conf = _mln([
        {"@class": "org.deeplearning4j.nn.conf.layers.recurrent.Bidirectional", "mode": "ADD",
         "fwd": lstm, "bwd": lstm, "nin": 3, "nout": 4},
        {"@class": "org.deeplearning4j.nn.conf.layers.DenseLayer", "nin": 4, "nout": 6,
         "activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationTanH"}},
        {"@class": "org.deeplearning4j.nn.conf.layers.RnnOutputLayer", "nin": 6, "nout": 2,
         "activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationIdentity"},
         "lossFn": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMSE"}},
    ], inputPreProcessors={
        "1": {"@class": "org.deeplearning4j.nn.conf.preprocessor.RnnToFeedForwardPreProcessor"},
        "2": {"@class": "org.deeplearning4j.nn.conf.preprocessor.FeedForwardToRnnPreProcessor"},
    })
    spec = dl4j.parse_configuration(conf)
    assert [s.params[0][0] for s in spec.layers] == ["fW", "W", "W"]
    n = spec.n_params
    assert n == 2 * (3 * 16 + 4 * 16 + 16) + 4 * 6 + 6 + 6 * 2 + 2
    path = tmp_path / "bidi.zip"
    flat = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("configuration.json", json.dumps(conf))
        z.writestr("coefficients.bin", nd4j([2, 1, n, n, 1, FLOAT_BIT, 1, 99], flat))
    model = dl4j.load(path)
    bi, dense, out = model.layers
    assert type(bi) is lf.Bidirectional and bi.mode == "add"
    assert type(bi.forward_layer) is lf.LSTM and bi.forward_layer.activation == "softsign"
    assert bi.forward_layer.gate_activation == "hardsigmoid"
    # forward direction's W first (3*16 values, Fortran order), then the backward one's
    n_dir = 3 * 16 + 4 * 16 + 16
    np.testing.assert_array_equal(bi.forward_layer.W, flat[:48].reshape(3, 16, order="F"))
    np.testing.assert_array_equal(bi.backward_layer.W,
                                  flat[n_dir:n_dir + 48].reshape(3, 16, order="F"))
    np.testing.assert_array_equal(dense.W, flat[2 * n_dir:2 * n_dir + 24].reshape(4, 6, order="F"))
    assert type(dense) is lf.DenseLayer and dense.activation == "tanh"
    assert out.loss == "mse" and out.activation == "identity"
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32)
    assert model.output(x).shape == (2, 2, 5)
    # and it saves with the preprocessors DL4J needs
    dl4j.save(model, tmp_path / "again.zip")
    with zipfile.ZipFile(tmp_path / "again.zip") as z:
        saved = json.loads(z.read("configuration.json"))
    assert set(saved["inputPreProcessors"]) == {"1", "2"}
    again = dl4j.load(tmp_path / "again.zip")
    np.testing.assert_array_equal(again.output(x), model.output(x))


# ---------------------------------------------------------------------------------------
# saving

@pytest.mark.parametrize("name", ["LSTMCharModelingExample_100b6.zip",
                                  "080_ModelSerializer_Regression_LSTM_1.zip",
                                  "080_ModelSerializer_Regression_CG_LSTM_1.zip"])
def test_save_load_round_trip_of_dl4j_files(tmp_path, name):
    model = dl4j.load(data(name))
    path = tmp_path / "model.zip"
    dl4j.save(model, path)
    again = dl4j.load(path)
    assert again.params.dtype == model.params.dtype
    assert again.params.tobytes() == model.params.tobytes()  # bit for bit
    assert [repr(a) for a in again.layers] == [repr(b) for b in model.layers]
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["configuration.json", "coefficients.bin"]
        conf = json.loads(z.read("configuration.json"))
        coeffs = dl4j.read_array(z.read("coefficients.bin"))
    assert coeffs.shape == (1, model.num_params())
    assert all("@class" in c["layer"] for c in conf["confs"])  # 1.0.0-beta style
    # the original's parameter keys are the saved one's
    orig = dl4j.parse_configuration(zipfile.ZipFile(data(name)).read("configuration.json"))
    assert [s.params for s in dl4j.parse_configuration(conf).layers] == [s.params
                                                                          for s in orig.layers]
    # saving the reloaded model gives the same bytes of parameters and configuration
    dl4j.save(again, tmp_path / "twice.zip")
    with zipfile.ZipFile(tmp_path / "twice.zip") as z2, zipfile.ZipFile(path) as z1:
        for entry in ("configuration.json", "coefficients.bin"):
            assert z1.read(entry) == z2.read(entry)


def _all_kinds_model(dtype):
    lf = _layers()
    rng = np.random.default_rng(7)
    layers = [
        lf.GravesLSTM(3, 4, activation="softsign", forget_gate_bias_init=0.5, dtype=dtype, seed=1),
        lf.Bidirectional(lf.LSTM(4, 5, gate_activation="hardsigmoid", dtype=dtype, seed=2),
                         mode="concat"),
        lf.GravesBidirectionalLSTM(10, 3, activation="relu", dtype=dtype, seed=3),
        lf.Bidirectional(lf.GravesLSTM(3, 2, activation="elu", dtype=dtype, seed=4), mode="mul"),
        lf.DenseLayer(2, 6, activation="leakyrelu", dtype=dtype, seed=5),
        lf.RnnOutputLayer(6, 3, activation="sigmoid", loss="xent", dtype=dtype, seed=6),
    ]
    model = lf.Sequential(layers, updater=lf.Adam(0.01, beta1=0.8), l2=1e-3,
                          tbptt_forward_length=7, tbptt_backward_length=5)
    model.params = rng.standard_normal(model.num_params()).astype(dtype)
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_every_layer_kind(tmp_path, dtype):
    model = _all_kinds_model(dtype)
    path = tmp_path / "m.zip"
    dl4j.save(model, path)
    again = dl4j.load(path)
    assert again.dtype == dtype
    assert again.params.tobytes() == model.params.tobytes()
    assert [repr(a) for a in again.layers] == [repr(b) for b in model.layers]
    assert [getattr(a, "mode", None) for a in again.layers] == [getattr(b, "mode", None)
                                                                 for b in model.layers]
    assert again.layers[0].forget_gate_bias_init == 0.5
    assert type(again.updater).__name__ == "Adam" and again.updater.beta1 == 0.8
    assert again.l2 == 1e-3 and again.tbptt_forward_length == 7
    assert again.tbptt_backward_length == 5
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(dtype)
    np.testing.assert_array_equal(again.output(x), model.output(x))


def test_save_feed_forward_model(tmp_path):
    lf = _layers()
    model = lf.Sequential([lf.DenseLayer(4, 3, activation="relu", seed=0),
                           lf.OutputLayer(3, 2, activation="softmax", seed=1)],
                          updater=lf.Sgd(0.05, momentum=0.9, nesterov=True))
    dl4j.save(model, tmp_path / "ff.zip")
    again = dl4j.load(tmp_path / "ff.zip")
    assert [type(a) for a in again.layers] == [lf.DenseLayer, lf.OutputLayer]
    assert again.params.tobytes() == model.params.tobytes()
    assert again.updater.nesterov and again.updater.momentum == 0.9
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.output(x), model.output(x))


def test_save_replaces_atomically(tmp_path):
    lf = _layers()
    path = tmp_path / "m.zip"
    first = lf.Sequential([lf.LSTM(2, 3, seed=0), lf.RnnOutputLayer(3, 2, seed=1)])
    dl4j.save(first, path)
    second = lf.Sequential([lf.GravesLSTM(2, 3, seed=5), lf.RnnOutputLayer(3, 2, seed=6)])
    dl4j.save(second, str(path))
    assert type(dl4j.load(path).layers[0]) is lf.GravesLSTM
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]


def test_killed_save_leaves_the_previous_file(tmp_path):
    lf = _layers()
    path = tmp_path / "m.zip"
    model = lf.Sequential([lf.LSTM(2, 3, seed=0), lf.RnnOutputLayer(3, 2, seed=1)])
    dl4j.save(model, path)
    before = path.read_bytes()
    # a child process saves a bigger model and dies half-way through writing the zip
    script = textwrap.dedent(f"""
        import os, zipfile
        import lstmfast
        from lstmfast import dl4j
        real = zipfile.ZipFile.writestr
        def dying(self, name, data, *a, **k):
            real(self, name, data, *a, **k)
            if name == "configuration.json":
                self.fp.flush()
                os._exit(17)   # like a kill: no cleanup, no exception handling
        zipfile.ZipFile.writestr = dying
        m = lstmfast.Sequential([lstmfast.GravesLSTM(20, 30, seed=0),
                                 lstmfast.RnnOutputLayer(30, 2, seed=1)])
        dl4j.save(m, {str(path)!r})
    """)
    env = dict(os.environ)
    root = str(Path(lstmfast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == 17, proc.stderr.decode()
    assert path.read_bytes() == before
    loaded = dl4j.load(path)
    assert loaded.params.tobytes() == model.params.tobytes()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "m.zip"]
    assert leftovers and all(p.name.startswith(".m.zip.") for p in leftovers)


# ---------------------------------------------------------------------------------------
# unsupported content: a clear error naming it, never a wrong model

def _rewrite(tmp_path, source, edit, coefficients=None, name="edited.zip"):
    with zipfile.ZipFile(source) as z:
        conf = json.loads(z.read("configuration.json"))
        coeffs = z.read("coefficients.bin")
    edit(conf)
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("configuration.json", json.dumps(conf))
        z.writestr("coefficients.bin", coeffs if coefficients is None else coefficients)
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["confs"][1]["layer"].update(
        {"@class": "org.deeplearning4j.nn.conf.layers.ConvolutionLayer"}), "ConvolutionLayer"),
    (lambda c: c["confs"][1]["layer"].update(
        {"@class": "org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn"}), "SimpleRnn"),
    (lambda c: c["confs"][0]["layer"].update(
        {"activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationSwish"}}),
     "Swish"),
    (lambda c: c["confs"][0]["layer"].update(
        {"activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationLReLU",
                          "alpha": 0.3}}), "alpha"),
    (lambda c: c["confs"][0]["layer"].update(
        {"activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationSoftmax"}}),
     "softmax"),
    (lambda c: c["confs"][0]["layer"].update(
        {"gateActivationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationTanH"}}),
     "gate_activation"),
    (lambda c: c["confs"][2]["layer"].update(
        {"lossFn": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossHinge"}}), "LossHinge"),
    (lambda c: c["confs"][2]["layer"].update(
        {"lossFn": {"@class": "org.nd4j.linalg.lossfunctions.impl.LossMCXENT",
                    "weights": [1.0] * 77}}), "weights"),
    (lambda c: c["confs"][2]["layer"].update({"hasBias": False}), "hasBias"),
    (lambda c: c["confs"][0]["layer"].update({"rnnDataFormat": "NWC"}), "NWC"),
    (lambda c: c["inputPreProcessors"].update(
        {"1": {"@class": "org.deeplearning4j.nn.conf.preprocessor.CnnToRnnPreProcessor"}}),
     "CnnToRnnPreProcessor"),
    (lambda c: c["confs"][1]["layer"].update({"nin": 199}), "nIn 199"),
    (lambda c: c["confs"][1].update({"variables": ["W", "b", "RW"]}), "parameter keys"),
    (lambda c: c["confs"].pop(), "parameters"),
])
def test_unsupported_configurations_are_named(tmp_path, edit, match):
    path = _rewrite(tmp_path, data("LSTMCharModelingExample_100b6.zip"), edit)
    with pytest.raises(ValueError, match=match):
        dl4j.load(path)


def test_graph_that_is_not_a_chain_is_refused():
    # merge vertex, two branches: not representable as a Sequential
    with pytest.raises(ValueError, match="MergeVertex"):
        dl4j.load(data("SyntheticBidirectionalRNNGraph_100b6.zip"))


def test_graph_branching_is_refused(tmp_path):
    def branch(conf):
        conf["vertexInputs"]["2"] = ["0"]  # layer 1 now dangles
    path = _rewrite(tmp_path, data("080_ModelSerializer_Regression_CG_LSTM_1.zip"), branch)
    with pytest.raises(ValueError, match="chain"):
        dl4j.load(path)


# ---------------------------------------------------------------------------------------
# corrupted, truncated and hostile model files

@pytest.mark.parametrize("edit, match", [
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"nin": "three"}), "integer"),
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"nin": -3}), ">= 1"),
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"nout": 1e12}), "implausibly"),
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"nin": True}), "integer"),
    (lambda c: c["confs"][0].update({"layer": [1, 2]}), "JSON object"),
    (lambda c: c["confs"][0].update({"layer": {"a": {}, "b": {}}}), "type of layer"),
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"activationFn": 5}), "activation"),
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"forgetGateBiasInit": "x"}),
     "number"),
    (lambda c: c["confs"][0]["layer"]["gravesLSTM"].update({"layerName": 4}), "layerName"),
    (lambda c: c.update({"confs": {"0": 1}}), "confs"),
    (lambda c: c.update({"confs": []}), "confs"),
    (lambda c: c.update({"inputPreProcessors": [1]}), "inputPreProcessors"),
    (lambda c: c.update({"inputPreProcessors": {"x": {}}}), "unknown layer"),
    (lambda c: c.pop("confs"), "neither"),
])
def test_malformed_json_is_refused(tmp_path, edit, match):
    path = _rewrite(tmp_path, data("080_ModelSerializer_Regression_LSTM_1.zip"), edit)
    with pytest.raises(ValueError, match=match):
        dl4j.load(path)


def test_broken_zips_are_refused(tmp_path):
    src = data("080_ModelSerializer_Regression_LSTM_1.zip")
    raw = src.read_bytes()
    p = tmp_path / "x.zip"
    for cut in list(range(0, len(raw), 97)) + [len(raw) - 1]:
        p.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            dl4j.load(p)
    p.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a DL4J model zip"):
        dl4j.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("coefficients.bin", b"")
    with pytest.raises(ValueError, match="no configuration.json"):
        dl4j.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("configuration.json", zipfile.ZipFile(src).read("configuration.json"))
    with pytest.raises(ValueError, match="no coefficients.bin"):
        dl4j.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("configuration.json", b"{not json")
        z.writestr("coefficients.bin", b"")
    with pytest.raises(ValueError, match="JSON"):
        dl4j.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("configuration.json", b"\xff\xfe" * 10)
        z.writestr("coefficients.bin", b"")
    with pytest.raises(ValueError, match="UTF-8"):
        dl4j.load(p)
    deep = b"[" * 100000 + b"]" * 100000
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("configuration.json", deep)
        z.writestr("coefficients.bin", b"")
    with pytest.raises(ValueError):
        dl4j.load(p)


@pytest.mark.parametrize("coefficients, match", [
    (lambda: nd4j([2, 1, 476, 476, 1, FLOAT_BIT, 1, 99], np.arange(476)), "476"),
    (lambda: nd4j([2, 1, 478, 478, 1, FLOAT_BIT, 1, 99], np.arange(478)), "478"),
    (lambda: nd4j([2, 2, 477, 477, 1, FLOAT_BIT, 1, 99], np.arange(954)), "954"),
    (lambda: nd4j([2, 1, 477, 477, 1, 131072, 1, 99], np.arange(477), dtype="INT"), "int32"),
    (lambda: nd4j([2, 1, 477, 477, 1, FLOAT_BIT, 1, 99], np.arange(477))[:-10], "truncated"),
    (lambda: nd4j([2, 1, 477, 477, 1, FLOAT_BIT, 1, 99], [], count=2**40), "expected"),
    (lambda: b"", "truncated"),
])
def test_wrong_coefficients_are_refused(tmp_path, coefficients, match):
    path = _rewrite(tmp_path, data("080_ModelSerializer_Regression_LSTM_1.zip"),
                    lambda c: None, coefficients=coefficients())
    with pytest.raises(ValueError, match=match):
        dl4j.load(path)


def test_zip_bombs_are_refused_with_bounded_memory(tmp_path):
    p = tmp_path / "bomb.zip"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("configuration.json", b" " * (80 << 20))  # 80 MiB of spaces, ~80 KiB
        z.writestr("coefficients.bin", b"")
    assert p.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="configuration.json"):
            dl4j.load(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    # coefficients far larger than the configuration's parameter count
    conf = _mln([{"@class": "org.deeplearning4j.nn.conf.layers.DenseLayer", "nin": 2, "nout": 2,
                  "activationFn": {"@class": "org.nd4j.linalg.activations.impl.ActivationTanH"}}])
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("configuration.json", json.dumps(conf))
        z.writestr("coefficients.bin", b"\0" * (100 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="too large"):
            dl4j.load(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_fuzzed_model_zips_load_or_raise_value_error(tmp_path):
    rng = np.random.default_rng(99)
    raw = data("080_ModelSerializer_Regression_LSTM_1.zip").read_bytes()
    p = tmp_path / "f.zip"
    outcomes = {"model": 0, "error": 0}
    for _ in range(300):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        p.write_bytes(bytes(b))
        try:
            model = dl4j.load(p)
        except ValueError:
            outcomes["error"] += 1
        else:
            assert model.num_params() == 477
            outcomes["model"] += 1
    assert outcomes["error"] > 100, outcomes


# ---------------------------------------------------------------------------------------
# stretch: a ComputationGraph that is not a chain, evaluated by load_graph

@pytest.mark.parametrize("edit, match", [
    (lambda c: c["vertices"]["concat"].update(
        {"@class": "org.deeplearning4j.nn.conf.graph.SubsetVertex"}), "SubsetVertex"),
    (lambda c: c["vertices"]["rnn2"]["layerConf"]["layer"]["fwd"].update(
        {"hasLayerNorm": True}), "hasLayerNorm"),
    (lambda c: c["vertices"]["pooling"]["layerConf"]["layer"].update(
        {"poolingType": "FANCY"}), "FANCY"),
    (lambda c: c["vertices"]["pooling"]["layerConf"]["layer"].update(
        {"poolingDimensions": [1]}), "dimensions"),
    (lambda c: c["vertexInputs"].update({"pooling": ["nowhere"]}), "nowhere"),
    (lambda c: c["topologicalOrderStr"].reverse(), "before its inputs"),
    (lambda c: c["vertices"]["rnn2"]["layerConf"]["layer"]["bwd"].update({"nout": 8}),
     "differ"),
])
def test_load_graph_refuses_what_it_cannot_evaluate(tmp_path, edit, match):
    path = _rewrite(tmp_path, data("SyntheticBidirectionalRNNGraph_100b6.zip"), edit)
    with pytest.raises(ValueError, match=match):
        dl4j.load_graph(path)


def test_save_dense_first_sequence_model_and_refusals(tmp_path):
    lf = _layers()
    model = lf.Sequential([lf.DenseLayer(3, 4, activation="tanh", seed=0),
                           lf.LSTM(4, 5, seed=1), lf.RnnOutputLayer(5, 2, seed=2)])
    dl4j.save(model, tmp_path / "d.zip")
    with zipfile.ZipFile(tmp_path / "d.zip") as z:
        pps = json.loads(z.read("configuration.json"))["inputPreProcessors"]
    assert sorted(pps) == ["0", "1"]
    assert pps["0"]["@class"].endswith("RnnToFeedForwardPreProcessor")
    assert pps["1"]["@class"].endswith("FeedForwardToRnnPreProcessor")
    again = dl4j.load(tmp_path / "d.zip")
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(again.output(x), model.output(x))
    # shapes DL4J and lstmfast would not agree on are refused rather than mis-saved
    ends_on_rows = lf.Sequential([lf.LSTM(3, 4, seed=0), lf.DenseLayer(4, 2, seed=1)])
    with pytest.raises(ValueError, match="rows"):
        dl4j.save(ends_on_rows, tmp_path / "e.zip")
    assert not (tmp_path / "e.zip").exists()
    with pytest.raises(ValueError, match="RnnOutputLayer"):
        dl4j.save(lf.Sequential([lf.LSTM(3, 4, seed=0), lf.OutputLayer(4, 2, seed=1)]),
                  tmp_path / "f.zip")
