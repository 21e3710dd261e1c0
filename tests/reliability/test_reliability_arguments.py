"""Arguments that got unclear errors (or none):

* a torch tensor (or any array-like whose ``dtype`` is not a NumPy dtype) as ``input_weights``
  raised NumPy's "Cannot interpret 'torch.float32' as a data type", naming no argument, while
  ``x`` and ``recurrent_weights`` accepted torch tensors: it is now read like them;
* ``set_num_threads(2.5)`` silently used 2 and ``set_num_threads(2**40)`` raised OverflowError:
  TypeError / ValueError naming ``threads`` (and the range);
* ``dl4j.save`` with a bytes path failed inside (str + bytes), with a bare layer with an
  AttributeError; ``read_array`` on a text-mode file with "can't concat str to bytearray".
"""
import io

import numpy as np
import pytest

import lstmfast
from lstmfast import dl4j


class _ForeignArray:
    """Like a torch tensor for NumPy: ``__array__`` gives the values, ``dtype`` is not a
    NumPy dtype."""

    class _Dtype:
        def __repr__(self):
            return "foreign.float64"

    dtype = _Dtype()

    def __init__(self, values):
        self.values = values
        self.shape = values.shape

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)


def _problem(dtype=np.float64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    W = rng.standard_normal((3, 20)).astype(dtype)
    RW = rng.standard_normal((5, 20)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    return x, W, RW, b


def test_an_array_like_with_a_foreign_dtype_is_read_as_input_weights():
    x, W, RW, b = _problem()
    want = lstmfast.lstm_forward(x, W, RW, b).output
    for args in ((x, _ForeignArray(W), RW, b), (_ForeignArray(x), W, _ForeignArray(RW), b),
                 (x, _ForeignArray(W), _ForeignArray(RW), _ForeignArray(b))):
        got = lstmfast.lstm_forward(*args).output
        np.testing.assert_array_equal(got, want)


def test_torch_tensors_are_accepted_for_every_array_argument():
    torch = pytest.importorskip("torch")
    for dtype in (np.float32, np.float64):
        x, W, RW, b = _problem(dtype)
        want = lstmfast.lstm_forward(x, W, RW, b).output
        got = lstmfast.lstm_forward(*(torch.from_numpy(a) for a in (x, W, RW, b))).output
        np.testing.assert_array_equal(got, want)
    # a tensor that requires grad cannot be read without detach(): the error names it
    with pytest.raises(ValueError, match="input_weights"):
        lstmfast.lstm_forward(x, torch.from_numpy(W).requires_grad_(), RW, b)


def test_an_unreadable_input_weights_names_the_argument():
    class Unreadable:
        dtype = object()

        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot be read")

    x, _, RW, b = _problem()
    with pytest.raises(ValueError, match="input_weights: cannot be read as an array"):
        lstmfast.lstm_forward(x, Unreadable(), RW, b)


@pytest.fixture
def threads_restored():
    previous = lstmfast.get_num_threads()
    yield
    lstmfast.set_num_threads(previous)


@pytest.mark.parametrize("value", [2.5, 2.0, "2", None, [2], True, np.float64(2.0)])
def test_set_num_threads_refuses_what_is_not_an_integer(threads_restored, value):
    before = lstmfast.get_num_threads()
    with pytest.raises(TypeError, match="threads: expected an integer"):
        lstmfast.set_num_threads(value)
    assert lstmfast.get_num_threads() == before


@pytest.mark.parametrize("value", [0, -1, 9, 2**31, 2**40, -(2**40), 10**30])
def test_set_num_threads_refuses_counts_out_of_range_naming_the_range(threads_restored, value):
    before = lstmfast.get_num_threads()
    with pytest.raises(ValueError, match=rf"threads: expected 1 to \d+, got {value}$"):
        lstmfast.set_num_threads(value)
    assert lstmfast.get_num_threads() == before


def test_set_num_threads_takes_integers_of_any_kind(threads_restored):
    lstmfast.set_num_threads(1)
    assert lstmfast.set_num_threads(np.int64(2)) == 1
    assert lstmfast.get_num_threads() == 2


def _network(seed=0):
    return lstmfast.Sequential([lstmfast.LSTM(3, 4, seed=seed),
                                lstmfast.RnnOutputLayer(4, 2, seed=seed + 1)])


def test_dl4j_save_takes_a_bytes_path(tmp_path):
    net = _network()
    path = tmp_path / "model.zip"
    dl4j.save(net, bytes(path))
    np.testing.assert_array_equal(dl4j.load(path).params, net.params)
    dl4j.write_array(np.arange(3.0), tmp_path / "a.bin")
    np.testing.assert_array_equal(dl4j.read_array(bytes(tmp_path / "a.bin").decode()),
                                  np.arange(3.0))


@pytest.mark.parametrize("model", ["layer", "output layer", "dict", "None"])
def test_dl4j_save_refuses_what_is_not_a_sequential(tmp_path, model):
    value = {"layer": lambda: lstmfast.LSTM(3, 4, seed=0),
             "output layer": lambda: lstmfast.RnnOutputLayer(4, 2, seed=0),
             "dict": dict, "None": lambda: None}[model]()
    path = tmp_path / "model.zip"
    with pytest.raises(TypeError, match="model must be an lstmfast.Sequential") as caught:
        dl4j.save(value, path)
    if "layer" in model:
        assert "Sequential([layer])" in str(caught.value)
    assert not path.exists()


def test_dl4j_save_refuses_what_is_not_a_path(tmp_path):
    with pytest.raises(TypeError):
        dl4j.save(_network(), 3.5)


def test_read_array_on_a_text_mode_file_says_so(tmp_path):
    path = tmp_path / "a.bin"
    dl4j.write_array(np.arange(4.0), path)
    with open(path, encoding="latin-1") as f, \
            pytest.raises(TypeError, match="text mode.*'rb'"):
        dl4j.read_array(f)
    with pytest.raises(TypeError, match="text mode"):
        dl4j.read_array(io.StringIO("MIXED_DATA_TYPES"))
    with open(path, "rb") as f:                        # binary mode reads
        np.testing.assert_array_equal(dl4j.read_array(f), np.arange(4.0))
