"""Per-example lengths (lstm_forward(..., lengths=...)): PackedSequence's and ONNX sequence_lens'
semantics, against the reference's per-example runs (tests/reference.py: each example alone on
its own valid steps), central differences, and the clear refusals.

Tolerances as tests/core/test_reference.py: float64 1e-10, float32 1e-4 (max|a - b| / max|b|).
"""
import numpy as np
import pytest

import lstmfast
import reference as R
from gradcheck import assert_lstm_gradients

TOL = {np.float32: 1e-4, np.float64: 1e-10}
# every pass of the team: two threads even at these small sizes, both product kernels
TEAM = {"threads": 2, "team_min_units": 1, "team_min_step_work": 0, "unit_group_min_work": 0}
TUNINGS = {"plain": None, "blas": {"packed_gemm": 0}, "team": TEAM,
           "chunked": {"projection_chunk_elements": 1}}


def _rel(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30)


def _case(seed, mb, n_in, H, T, peepholes, dtype, longest):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mb, n_in, T))
    W = rng.standard_normal((n_in, 4 * H)) * 0.5
    RW = rng.standard_normal((H, 4 * H + (3 if peepholes else 0))) * 0.5
    b = rng.standard_normal(4 * H) * 0.3
    h0 = rng.standard_normal((mb, H)) * 0.5
    c0 = rng.standard_normal((mb, H)) * 0.5
    lengths = rng.integers(0, longest + 1, mb)
    lengths[0], lengths[-1] = longest, 0    # the longest and the empty sequence
    # padding filled with NaN: none of it may reach a valid step or a gradient
    for m, n in enumerate(lengths):
        x[m, :, n:] = np.nan
    cast = [a.astype(dtype) for a in (x, W, RW, b, h0, c0)]
    return cast, lengths, rng


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("tuning", sorted(TUNINGS))
@pytest.mark.parametrize("mb", [3, 6])
@pytest.mark.parametrize("longest", [7, 4])
def test_lengths_match_per_example_reference(dtype, forwards, peepholes, tuning, mb, longest):
    # longest < T: the steps after it are padding for every example (and are not run)
    H, n_in, T = 30, 5, 7
    (x, W, RW, b, h0, c0), lengths, rng = _case(mb * 7 + peepholes, mb, n_in, H, T, peepholes,
                                                dtype, longest)
    opts = dict(h0=h0, c0=c0, forwards=forwards, gate_activation="sigmoid")
    ref = R.ref_forward_lengths(np.nan_to_num(x, nan=0.0), W, RW, b, lengths, **opts)
    eps = rng.standard_normal((mb, H, T))
    glh = rng.standard_normal((mb, H))
    glc = rng.standard_normal((mb, H))
    ref_grads = R.ref_backward_lengths(ref, eps, glh, glc)
    for for_backprop in (False, True):
        fwd = lstmfast.lstm_forward(x, W, RW, b, lengths=lengths, for_backprop=for_backprop,
                                    _tuning=TUNINGS[tuning], **opts)
        for name in ("output", "last_h", "last_c"):
            assert _rel(getattr(fwd, name), getattr(ref, name)) < TOL[dtype], name
        for m, n in enumerate(lengths):
            assert not fwd.output[m, :, n:].any(), "output past the length must be zero"
    # epsilon in the padding (NaN here) is ignored: those outputs are constants
    eps_padded = eps.copy()
    for m, n in enumerate(lengths):
        eps_padded[m, :, n:] = np.nan
    grads = lstmfast.lstm_backward(fwd, eps_padded.astype(dtype), grad_last_h=glh.astype(dtype),
                                   grad_last_c=glc.astype(dtype), _tuning=TUNINGS[tuning])
    for name in R.GRAD_NAMES:
        assert _rel(getattr(grads, name), getattr(ref_grads, name)) < TOL[dtype], name
    for m, n in enumerate(lengths):
        assert not grads.input[m, :, n:].any(), "dL/dx in the padding must be zero"


@pytest.mark.parametrize("forwards", [True, False])
def test_full_lengths_give_the_plain_pass(forwards):
    rng = np.random.default_rng(3)
    mb, n_in, H, T = 4, 3, 5, 6
    x = rng.standard_normal((mb, n_in, T))
    W, RW = rng.standard_normal((n_in, 4 * H)), rng.standard_normal((H, 4 * H + 3))
    b = rng.standard_normal(4 * H)
    eps = rng.standard_normal((mb, H, T))
    plain = lstmfast.lstm_forward(x, W, RW, b, forwards=forwards, for_backprop=True)
    full = lstmfast.lstm_forward(x, W, RW, b, forwards=forwards, for_backprop=True,
                                 lengths=np.full(mb, T))
    for name in ("output", "last_h", "last_c"):
        np.testing.assert_array_equal(getattr(full, name), getattr(plain, name))
    g_plain = lstmfast.lstm_backward(plain, eps)
    g_full = lstmfast.lstm_backward(full, eps)
    for name in R.GRAD_NAMES:
        np.testing.assert_allclose(getattr(g_full, name), getattr(g_plain, name), rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("peepholes", [False, True])
def test_lengths_gradients_match_finite_differences(forwards, peepholes):
    mb, n_in, H, T = 4, 3, 4, 5
    rng = np.random.default_rng(11 + 2 * forwards + peepholes)
    x = rng.standard_normal((mb, n_in, T))
    W = rng.standard_normal((n_in, 4 * H)) * 0.5
    RW = rng.standard_normal((H, 4 * H + (3 if peepholes else 0))) * 0.5
    b = rng.standard_normal(4 * H) * 0.3
    h0, c0 = rng.standard_normal((mb, H)), rng.standard_normal((mb, H))
    lengths = np.array([5, 2, 0, 3])
    Ro = rng.standard_normal((mb, H, T))
    Qh, Qc = rng.standard_normal((mb, H)), rng.standard_normal((mb, H))
    assert_lstm_gradients((x, W, RW, b, h0, c0), Ro, Qh, Qc, forwards=forwards, lengths=lengths)


@pytest.mark.parametrize("forwards", [True, False])
def test_all_lengths_zero(forwards):
    rng = np.random.default_rng(4)
    mb, n_in, H, T = 3, 2, 4, 5
    x = np.full((mb, n_in, T), np.nan)
    W, RW = rng.standard_normal((n_in, 4 * H)), rng.standard_normal((H, 4 * H))
    b = rng.standard_normal(4 * H)
    h0, c0 = rng.standard_normal((mb, H)), rng.standard_normal((mb, H))
    fwd = lstmfast.lstm_forward(x, W, RW, b, h0=h0, c0=c0, lengths=np.zeros(mb, int),
                                forwards=forwards, for_backprop=True)
    assert not fwd.output.any()
    np.testing.assert_array_equal(fwd.last_h, h0)
    np.testing.assert_array_equal(fwd.last_c, c0)
    glh, glc = rng.standard_normal((mb, H)), rng.standard_normal((mb, H))
    grads = lstmfast.lstm_backward(fwd, np.full((mb, H, T), np.nan), grad_last_h=glh,
                                   grad_last_c=glc)
    np.testing.assert_array_equal(grads.h0, glh)
    np.testing.assert_array_equal(grads.c0, glc)
    for name in ("input_weights", "recurrent_weights", "bias", "input"):
        assert not getattr(grads, name).any(), name


def test_lengths_refusals():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    W, RW, b = rng.standard_normal((3, 8)), rng.standard_normal((2, 8)), np.zeros(8)
    with pytest.raises(ValueError, match="mask and lengths"):
        lstmfast.lstm_forward(x, W, RW, b, lengths=[1, 2], mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"lengths: expected shape \[minibatch\] = \[2\], got \[3\]"):
        lstmfast.lstm_forward(x, W, RW, b, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"0\.\.T = 0\.\.4; lengths\[1\] = 5"):
        lstmfast.lstm_forward(x, W, RW, b, lengths=[1, 5])
    with pytest.raises(ValueError, match=r"lengths\[0\] = -1"):
        lstmfast.lstm_forward(x, W, RW, b, lengths=[-1, 2])
    with pytest.raises(TypeError, match="lengths: expected integers"):
        lstmfast.lstm_forward(x, W, RW, b, lengths=[1.0, 2.0])
    fwd = lstmfast.lstm_forward(x, W, RW, b, lengths=[1, 4], for_backprop=True)
    with pytest.raises(ValueError, match="tbptt_length: truncated BPTT"):
        lstmfast.lstm_backward(fwd, np.zeros((2, 2, 4)), tbptt_length=2)
    with pytest.raises(ValueError, match=r"grad_last_h: expected shape \[minibatch, h\] = \[2, 2\]"):
        lstmfast.lstm_backward(fwd, np.zeros((2, 2, 4)), grad_last_h=np.zeros((2, 3)))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_lengths_match_onnx_runtime_sequence_lens(direction):
    """ONNX's LSTM with sequence_lens, run by ONNX Runtime (gates i, o, f, c: lstmfast's block
    input is ONNX's c, its input gate ONNX's i)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(8)
    T, mb, n_in, H = 6, 4, 3, 5
    x = rng.standard_normal((T, mb, n_in)).astype(np.float32)
    Wo = (rng.standard_normal((1, 4 * H, n_in)) * 0.5).astype(np.float32)
    Ro = (rng.standard_normal((1, 4 * H, H)) * 0.5).astype(np.float32)
    Bo = (rng.standard_normal((1, 8 * H)) * 0.3).astype(np.float32)
    h0 = rng.standard_normal((1, mb, H)).astype(np.float32)
    c0 = rng.standard_normal((1, mb, H)).astype(np.float32)
    lengths = np.array([6, 2, 0, 4], dtype=np.int32)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "L", "h0", "c0"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction=direction)
    shapes = {"X": x.shape, "W": Wo.shape, "R": Ro.shape, "B": Bo.shape, "h0": h0.shape,
              "c0": c0.shape}
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()]
    inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, (mb,)))
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, shape) for k, shape in
               (("Y", (T, 1, mb, H)), ("Y_h", (1, mb, H)), ("Y_c", (1, mb, H)))]
    model = helper.make_model(helper.make_graph([node], "lstm", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model, full_check=True)
    runtime = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    Y, Y_h, Y_c = runtime.run(None, {"X": x, "W": Wo, "R": Ro, "B": Bo, "L": lengths,
                                     "h0": h0, "c0": c0})

    def dl4j(w):                       # ONNX rows i, o, f, c -> lstmfast columns c, f, o, i
        i, o, f, c = np.split(w, 4, axis=0)
        return np.concatenate([c, f, o, i], axis=0).T

    b = (Bo[0, :4 * H] + Bo[0, 4 * H:])[:, None]
    fwd = lstmfast.lstm_forward(x.transpose(1, 2, 0), dl4j(Wo[0]), dl4j(Ro[0]), dl4j(b)[0],
                                h0=h0[0], c0=c0[0], lengths=lengths,
                                forwards=direction == "forward")
    np.testing.assert_allclose(fwd.output, Y[:, 0].transpose(1, 2, 0), rtol=0, atol=1e-5)
    # a length of 0: lstmfast hands the initial state on as last_h / last_c, ONNX Runtime
    # gives zeros (the ONNX specification leaves it open); every other example agrees
    some = lengths > 0
    np.testing.assert_allclose(fwd.last_h[some], Y_h[0][some], rtol=0, atol=1e-5)
    np.testing.assert_allclose(fwd.last_c[some], Y_c[0][some], rtol=0, atol=1e-5)
    assert not Y_h[0][~some].any() and not Y_c[0][~some].any()
    np.testing.assert_array_equal(fwd.last_h[~some], h0[0][~some])
    np.testing.assert_array_equal(fwd.last_c[~some], c0[0][~some])
