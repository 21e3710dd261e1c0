"""Every validation rule of the functional API: bad input gets a clear error (type and message), never a
crash or a wrong answer."""

import re

import numpy as np
import pytest

import lstmfast
import reference as R

MB, NIN, H, T = 2, 5, 3, 4


def mentions_shape(msg, shape):
    """The sizes of ``shape`` appear in order, separated as in (2, 3), [2,3], 2x3, (12,) ..."""
    nums = [str(int(n)) for n in shape]
    pattern = r"(?<![\d.])" + r"[^\d\n]{1,3}".join(nums) + r"(?!\d|\.\d)"
    return re.search(pattern, msg) is not None


def mentions_number(msg, n):
    return re.search(r"(?<![\d.])" + str(int(n)) + r"(?!\d|\.\d)", msg) is not None


def _arrays(dtype=np.float64, peephole=True, mb=MB, n_in=NIN, h=H, t=T):
    rng = np.random.default_rng(0)
    return dict(
        x=rng.normal(size=(mb, n_in, t)).astype(dtype),
        input_weights=rng.normal(size=(n_in, 4 * h)).astype(dtype),
        recurrent_weights=rng.normal(size=(h, 4 * h + (3 if peephole else 0))).astype(dtype),
        bias=rng.normal(size=(4 * h,)).astype(dtype),
    )


def _forward(a, **kw):
    return lstmfast.lstm_forward(a["x"], a["input_weights"], a["recurrent_weights"], a["bias"],
                                 **kw)


def _good_forward(**kw):
    a = _arrays()
    return _forward(a, for_backprop=True, **kw)


# -------------------------------------------------------------------------------------------
# sanity: the valid call used as the base of every case below works
# -------------------------------------------------------------------------------------------

def test_valid_call_works():
    a = _arrays()
    fwd = _forward(a, h0=np.zeros((MB, H)), c0=np.zeros((MB, H)), mask=np.ones((MB, T)),
                   for_backprop=True)
    g = lstmfast.lstm_backward(fwd, np.ones((MB, H, T)), tbptt_length=1)
    assert fwd.output.shape == (MB, H, T)
    assert g.input.shape == (MB, NIN, T)


# -------------------------------------------------------------------------------------------
# empty input
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(0, NIN, T), (MB, NIN, 0), (0, NIN)])
def test_empty_input(shape):
    a = _arrays()
    a["x"] = np.zeros(shape)
    with pytest.raises(ValueError, match=r"(?i)0 length|empty|zero.length|length 0"):
        _forward(a)


def test_empty_input_with_zero_nin():
    a = _arrays(n_in=0)
    with pytest.raises(ValueError, match=r"(?i)0 length|empty|zero.length|length 0"):
        _forward(a)


def test_none_input():
    a = _arrays()
    a["x"] = None
    with pytest.raises((ValueError, TypeError)):
        _forward(a)


# -------------------------------------------------------------------------------------------
# nIn mismatch
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("two_d", (False, True))
def test_nin_mismatch_names_both_sizes(two_d):
    a = _arrays(n_in=13)
    a["x"] = np.ones((MB, 17) if two_d else (MB, 17, T))
    with pytest.raises(ValueError) as ei:
        _forward(a)
    msg = str(ei.value)
    assert mentions_number(msg, 17) and mentions_number(msg, 13), msg


# -------------------------------------------------------------------------------------------
# initial-state minibatch mismatch: the seed's hint about clearing the previous state
# -------------------------------------------------------------------------------------------

HINT = r"(?i)clear\w*[ _]?(the[ _])?previous[ _]?state|clearpreviousstate"


@pytest.mark.parametrize("which", ("h0", "c0", "both"))
def test_initial_state_minibatch_mismatch(which):
    a = _arrays(mb=7)
    state = np.zeros((11, H))
    kw = {"h0": state, "c0": state} if which == "both" else {which: state}
    with pytest.raises(ValueError) as ei:
        _forward(a, **kw)
    msg = str(ei.value)
    assert re.search(HINT, msg), msg
    assert mentions_number(msg, 11) and mentions_number(msg, 7), msg


@pytest.mark.parametrize("which", ("h0", "c0"))
@pytest.mark.parametrize("shape", [(MB, H + 1), (MB,), (MB, H, 1)])
def test_initial_state_wrong_shape(which, shape):
    a = _arrays()
    with pytest.raises(ValueError) as ei:
        _forward(a, **{which: np.zeros(shape)})
    msg = str(ei.value)
    assert which in msg, msg
    assert mentions_shape(msg, shape), msg
    assert mentions_shape(msg, (MB, H)), msg


# -------------------------------------------------------------------------------------------
# other shape mismatches: expected and actual shapes in the message
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cols", (4 * H - 1, 4 * H + 1, 4 * H + 2, 4 * H + 4, 3))
def test_recurrent_weights_wrong_columns(cols):
    a = _arrays()
    a["recurrent_weights"] = np.zeros((H, cols))
    with pytest.raises(ValueError) as ei:
        _forward(a)
    msg = str(ei.value)
    assert "recurrent_weights" in msg, msg
    assert mentions_shape(msg, (H, cols)), msg
    assert mentions_shape(msg, (H, 4 * H)) or mentions_shape(msg, (H, 4 * H + 3)), msg


def test_recurrent_weights_wrong_rank():
    a = _arrays()
    a["recurrent_weights"] = np.zeros((4 * H,))
    with pytest.raises(ValueError, match="recurrent_weights"):
        _forward(a)


def test_recurrent_weights_rows_disagree_with_input_weights():
    a = _arrays()
    a["recurrent_weights"] = np.zeros((H + 1, 4 * H + 3))   # h = 4 but input_weights has 4h = 12
    with pytest.raises(ValueError) as ei:
        _forward(a)
    msg = str(ei.value)
    assert "weights" in msg, msg
    assert mentions_shape(msg, (H + 1, 4 * H + 3)) or mentions_shape(msg, (NIN, 4 * H)), msg


def test_peepholes_requested_without_peephole_columns():
    a = _arrays(peephole=False)
    with pytest.raises(ValueError) as ei:
        _forward(a, peepholes=True)
    msg = str(ei.value)
    assert mentions_shape(msg, (H, 4 * H + 3)) and mentions_shape(msg, (H, 4 * H)), msg


@pytest.mark.parametrize("shape", [(4 * H + 1,), (4 * H - 1,), (2, 4 * H), (4 * H, 1),
                                   (1, 4 * H + 3), (4, H)])
def test_bias_wrong_shape(shape):
    a = _arrays()
    a["bias"] = np.zeros(shape)
    with pytest.raises(ValueError) as ei:
        _forward(a)
    msg = str(ei.value)
    assert "bias" in msg, msg
    assert mentions_shape(msg, shape), msg
    assert mentions_shape(msg, (4 * H,)) or mentions_shape(msg, (1, 4 * H)), msg


@pytest.mark.parametrize("shape", [(MB, T + 1), (MB + 1, T), (MB * T,), (MB, 1, T), (T, MB)])
def test_mask_wrong_shape(shape):
    a = _arrays()
    with pytest.raises(ValueError) as ei:
        _forward(a, mask=np.ones(shape))
    msg = str(ei.value)
    assert "mask" in msg, msg
    assert mentions_shape(msg, shape), msg
    assert mentions_shape(msg, (MB, T)), msg


@pytest.mark.parametrize("shape", [(MB, H, T + 1), (MB, H + 1, T), (MB + 1, H, T), (MB, H),
                                   (MB, T, H), (MB * H * T,)])
def test_epsilon_wrong_shape(shape):
    fwd = _good_forward()
    with pytest.raises(ValueError) as ei:
        lstmfast.lstm_backward(fwd, np.ones(shape))
    msg = str(ei.value)
    assert "epsilon" in msg, msg
    assert mentions_shape(msg, shape), msg
    assert mentions_shape(msg, (MB, H, T)), msg


def test_input_rank():
    a = _arrays()
    a["x"] = np.ones((MB, NIN, T, 1))
    with pytest.raises(ValueError):
        _forward(a)
    a["x"] = np.ones((MB * NIN * T,))
    with pytest.raises(ValueError):
        _forward(a)


def test_input_weights_wrong_rank():
    a = _arrays()
    a["input_weights"] = np.ones((NIN * 4 * H,))
    with pytest.raises(ValueError, match="input_weights"):
        _forward(a)


# -------------------------------------------------------------------------------------------
# backward: needs for_backprop, tbptt_length >= 1
# -------------------------------------------------------------------------------------------

def test_backward_without_for_backprop():
    a = _arrays()
    fwd = _forward(a)                               # for_backprop defaults to False
    with pytest.raises(ValueError, match="for_backprop"):
        lstmfast.lstm_backward(fwd, np.ones((MB, H, T)))
    fwd = _forward(a, for_backprop=False)
    with pytest.raises(ValueError, match="for_backprop"):
        lstmfast.lstm_backward(fwd, np.ones((MB, H, T)))


@pytest.mark.parametrize("k", (0, -1, -100))
def test_tbptt_length_below_one(k):
    fwd = _good_forward()
    with pytest.raises(ValueError, match="tbptt_length"):
        lstmfast.lstm_backward(fwd, np.ones((MB, H, T)), tbptt_length=k)


def test_tbptt_length_one_is_valid():
    fwd = _good_forward()
    g = lstmfast.lstm_backward(fwd, np.ones((MB, H, T)), tbptt_length=1)
    assert np.all(np.isfinite(g.input_weights))


# -------------------------------------------------------------------------------------------
# dtypes
# -------------------------------------------------------------------------------------------

BAD_DTYPES = [np.int32, np.int64, np.float16, np.complex64, np.complex128]
FORWARD_ARGS = ("x", "input_weights", "recurrent_weights", "bias", "h0", "c0")


def _name_re(name):
    return r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])"


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("arg", FORWARD_ARGS)
def test_bad_dtype_forward(arg, dtype):
    a = _arrays()
    kw = {}
    if arg in ("h0", "c0"):
        kw[arg] = np.zeros((MB, H), dtype=dtype)
    else:
        a[arg] = (np.round(a[arg] * 3)).astype(dtype)
    with pytest.raises(TypeError) as ei:
        _forward(a, **kw)
    assert re.search(_name_re(arg), str(ei.value)), str(ei.value)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtype_epsilon(dtype):
    fwd = _good_forward()
    with pytest.raises(TypeError) as ei:
        lstmfast.lstm_backward(fwd, np.ones((MB, H, T), dtype=dtype))
    assert re.search(_name_re("epsilon"), str(ei.value)), str(ei.value)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtype_weights_decide_float32_otherwise(dtype):
    """float32 weights with bad-dtype data: still a TypeError naming the data argument."""
    a = _arrays(dtype=np.float32)
    a["x"] = np.ones((MB, NIN, T), dtype=dtype)
    with pytest.raises(TypeError) as ei:
        _forward(a)
    assert re.search(_name_re("x"), str(ei.value)), str(ei.value)


def test_object_array_is_rejected():
    a = _arrays()
    a["bias"] = np.array([object()] * (4 * H))
    with pytest.raises((TypeError, ValueError)):
        _forward(a)


# -------------------------------------------------------------------------------------------
# activations
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ("bogus", "", "softmax", "swish"))
def test_unknown_activation_lists_valid_names(name):
    a = _arrays()
    with pytest.raises(ValueError) as ei:
        _forward(a, activation=name)
    msg = str(ei.value)
    for valid in R.ACTIVATION_NAMES:
        assert re.search(_name_re(valid), msg), (valid, msg)


@pytest.mark.parametrize("name", ("bogus", "tanh", "relu", "softsign"))
def test_unknown_gate_activation_lists_valid_names(name):
    a = _arrays()
    with pytest.raises(ValueError) as ei:
        _forward(a, gate_activation=name)
    msg = str(ei.value)
    assert re.search(_name_re("sigmoid"), msg) and re.search(_name_re("hardsigmoid"), msg), msg


@pytest.mark.parametrize("name", R.ACTIVATION_NAMES)
def test_every_documented_activation_is_accepted(name):
    a = {k: 0.3 * v for k, v in _arrays().items()}     # small: cube must not overflow
    fwd = _forward(a, activation=name, gate_activation="hardsigmoid")
    assert np.all(np.isfinite(fwd.output))


# -------------------------------------------------------------------------------------------
# errors leave the inputs alone
# -------------------------------------------------------------------------------------------

def test_failed_call_does_not_modify_inputs():
    a = _arrays()
    saved = {k: v.copy() for k, v in a.items()}
    with pytest.raises(ValueError):
        _forward(a, mask=np.ones((MB, T + 1)))
    for k, v in a.items():
        assert np.array_equal(v, saved[k]), k
