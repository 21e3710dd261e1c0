"""Weight conversion: lstmfast <-> PyTorch nn.LSTM, Keras LSTM, ONNX LSTM.

Converting and running must give the peer's own outputs:

* PyTorch: against torch.nn.LSTM itself (skipped without torch);
* Keras and ONNX: against small NumPy implementations of their documented equations written
  here, independently of lstmfast (keras_lstm, onnx_lstm), and against values worked out by
  hand for a one-unit layer.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import lstmfast
from lstmfast import convert

F64 = np.float64


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def hard_sigmoid(z):  # ONNX HardSigmoid(alpha=0.2, beta=0.5), Keras 2's hard_sigmoid
    return np.clip(0.2 * z + 0.5, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# independent references of the peers' equations


def keras_lstm(x, kernel, recurrent_kernel, bias, activation=np.tanh, recurrent_activation=sigmoid):
    """Keras LSTM (return_sequences=True, return_state=True) for x [mb, T, nIn]:
    z = x_t kernel + h recurrent_kernel + bias, split i, f, c, o;
    c = f c + i act(z_c); h = o act(c). Returns (sequences [mb, T, h], h_T, c_T)."""
    mb, T, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((mb, units))
    c = np.zeros((mb, units))
    seq = np.zeros((mb, T, units))
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent_kernel + (0 if bias is None else bias)
        zi, zf, zc, zo = np.split(z, 4, axis=1)
        i, f, o = recurrent_activation(zi), recurrent_activation(zf), recurrent_activation(zo)
        c = f * c + i * activation(zc)
        h = o * activation(c)
        seq[:, t] = h
    return seq, h, c


def onnx_lstm(X, W, R, B=None, P=None, initial_h=None, initial_c=None, direction="forward",
              f=sigmoid, g=np.tanh, h_act=np.tanh):
    """ONNX LSTM (operator docs) for X [T, mb, nIn], W [dirs, 4h, nIn] (i, o, f, c), R, B [dirs, 8h]
    (Wb, Rb), P [dirs, 3h] (i, o, f):
        it = f(Xt Wi^T + Ht-1 Ri^T + Pi . Ct-1 + Wbi + Rbi)
        ft = f(Xt Wf^T + Ht-1 Rf^T + Pf . Ct-1 + Wbf + Rbf)
        ct = g(Xt Wc^T + Ht-1 Rc^T + Wbc + Rbc)
        Ct = ft . Ct-1 + it . ct
        ot = f(Xt Wo^T + Ht-1 Ro^T + Po . Ct + Wbo + Rbo)
        Ht = ot . h(Ct)
    Returns Y [T, dirs, mb, h], Y_h, Y_c [dirs, mb, h]."""
    T, mb, _ = X.shape
    dirs, four_h, _ = W.shape
    hidden = four_h // 4
    Y = np.zeros((T, dirs, mb, hidden))
    Y_h = np.zeros((dirs, mb, hidden))
    Y_c = np.zeros((dirs, mb, hidden))
    for d in range(dirs):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        Wi, Wo, Wf, Wc = np.split(W[d], 4)
        Ri, Ro, Rf, Rc = np.split(R[d], 4)
        if B is None:
            bias = np.zeros(8 * hidden)
        else:
            bias = B[d]
        Wbi, Wbo, Wbf, Wbc, Rbi, Rbo, Rbf, Rbc = np.split(bias, 8)
        Pi, Po, Pf = np.split(np.zeros(3 * hidden) if P is None else P[d], 3)
        H = np.zeros((mb, hidden)) if initial_h is None else initial_h[d]
        C = np.zeros((mb, hidden)) if initial_c is None else initial_c[d]
        for step in range(T):
            t = T - 1 - step if reverse else step
            Xt = X[t]
            it = f(Xt @ Wi.T + H @ Ri.T + Pi * C + Wbi + Rbi)
            ft = f(Xt @ Wf.T + H @ Rf.T + Pf * C + Wbf + Rbf)
            ct = g(Xt @ Wc.T + H @ Rc.T + Wbc + Rbc)
            C = ft * C + it * ct
            ot = f(Xt @ Wo.T + H @ Ro.T + Po * C + Wbo + Rbo)
            H = ot * h_act(C)
            Y[t, d] = H
        Y_h[d], Y_c[d] = H, C
    return Y, Y_h, Y_c


def random_onnx(rng, dirs, n_in, hidden, peepholes=True, scale=0.5):
    return dict(W=scale * rng.standard_normal((dirs, 4 * hidden, n_in)),
                R=scale * rng.standard_normal((dirs, 4 * hidden, hidden)),
                B=scale * rng.standard_normal((dirs, 8 * hidden)),
                P=scale * rng.standard_normal((dirs, 3 * hidden)) if peepholes else None)


# ----------------------------------------------------------------------------------------------
# hand-computed values (one unit, one input)


def test_keras_one_unit_by_hand():
    # kernel/recurrent_kernel/bias per gate i, f, c, o
    k = np.array([[0.5, -0.3, 0.8, 0.2]])
    rk = np.array([[0.1, 0.4, -0.6, 0.7]])
    bias = np.array([0.05, 1.0, -0.1, 0.2])
    xs = [1.5, -0.5]
    s = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    h = c = 0.0
    expected = []
    for x in xs:
        i = s(0.5 * x + 0.1 * h + 0.05)
        f = s(-0.3 * x + 0.4 * h + 1.0)
        cand = math.tanh(0.8 * x - 0.6 * h - 0.1)
        o = s(0.2 * x + 0.7 * h + 0.2)
        c = f * c + i * cand
        h = o * math.tanh(c)
        expected.append(h)
    # the first step written out: i = s(0.8), f = s(0.55), cand = tanh(1.1), o = s(0.5), c = i cand
    assert expected[0] == pytest.approx(s(0.5) * math.tanh(s(0.8) * math.tanh(1.1)), rel=1e-15)
    layer = convert.from_keras(k, rk, bias)
    out = layer.forward(np.array(xs).reshape(1, 1, 2))
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_onnx_one_unit_peepholes_by_hand():
    # W, R per gate i, o, f, c; B = Wb then Rb; P per gate i, o, f
    W = np.array([0.5, 0.2, -0.3, 0.8]).reshape(1, 4, 1)
    R = np.array([0.1, 0.7, 0.4, -0.6]).reshape(1, 4, 1)
    Wb = np.array([0.05, 0.2, 1.0, -0.1])
    Rb = np.array([0.01, -0.02, 0.03, 0.04])
    P = np.array([[0.3, -0.25, 0.15]])
    xs = [1.5, -0.5, 0.25]
    s = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    H = C = 0.0
    expected = []
    for x in xs:
        i = s(0.5 * x + 0.1 * H + 0.3 * C + 0.05 + 0.01)      # peephole on C[t-1]
        f = s(-0.3 * x + 0.4 * H + 0.15 * C + 1.0 + 0.03)     # peephole on C[t-1]
        cand = math.tanh(0.8 * x - 0.6 * H - 0.1 + 0.04)
        C = f * C + i * cand
        o = s(0.2 * x + 0.7 * H - 0.25 * C + 0.2 - 0.02)      # peephole on C[t]
        H = o * math.tanh(C)
        expected.append(H)
    layer = convert.from_onnx(W, R, np.concatenate([Wb, Rb])[None], P)
    assert isinstance(layer, lstmfast.GravesLSTM)
    # the peepholes landed in wFF, wOO, wGG
    np.testing.assert_array_equal(layer.RW[0, 4:], [0.15, -0.25, 0.3])
    out = layer.forward(np.array(xs).reshape(1, 1, 3))
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Keras


@pytest.mark.parametrize("use_bias", [True, False])
def test_keras_matches_reference(use_bias):
    rng = np.random.default_rng(1)
    mb, T, n_in, h = 3, 7, 4, 5
    kernel = 0.5 * rng.standard_normal((n_in, 4 * h))
    rk = 0.5 * rng.standard_normal((h, 4 * h))
    bias = 0.5 * rng.standard_normal(4 * h) if use_bias else None
    x = rng.standard_normal((mb, T, n_in))
    seq, h_T, c_T = keras_lstm(x, kernel, rk, bias)
    layer = convert.from_keras(kernel, rk, bias)
    assert isinstance(layer, lstmfast.LSTM) and layer.dtype == F64
    out = layer.forward(x.transpose(0, 2, 1))
    np.testing.assert_allclose(out.transpose(0, 2, 1), seq, rtol=1e-10, atol=1e-12)
    # the state through the functional API
    W, RW, b = convert.keras_to_lstmfast(kernel, rk, bias)
    fwd = lstmfast.lstm_forward(x.transpose(0, 2, 1), W, RW, b)
    np.testing.assert_allclose(fwd.last_h, h_T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fwd.last_c, c_T, rtol=1e-10, atol=1e-12)
    # and back
    back = convert.to_keras(layer)
    np.testing.assert_array_equal(back[0], kernel)
    np.testing.assert_array_equal(back[1], rk)
    np.testing.assert_array_equal(back[2], bias if use_bias else np.zeros(4 * h))


def test_keras_hard_sigmoid_and_float32():
    rng = np.random.default_rng(2)
    mb, T, n_in, h = 2, 5, 3, 4
    kernel = rng.standard_normal((n_in, 4 * h)).astype(np.float32)
    rk = rng.standard_normal((h, 4 * h)).astype(np.float32)
    bias = rng.standard_normal(4 * h).astype(np.float32)
    x = rng.standard_normal((mb, T, n_in))
    seq, _, _ = keras_lstm(x, kernel.astype(F64), rk.astype(F64), bias.astype(F64),
                           recurrent_activation=hard_sigmoid)
    layer = convert.from_keras(kernel, rk, bias, recurrent_activation="hardsigmoid")
    assert layer.dtype == np.float32 and layer.gate_activation == "hardsigmoid"
    out = layer.forward(x.transpose(0, 2, 1).astype(np.float32))
    np.testing.assert_allclose(out.transpose(0, 2, 1), seq, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="keras_version=2 or keras_version=3"):
        convert.from_keras(kernel, rk, bias, recurrent_activation="hard_sigmoid")


def test_keras_layer_object_is_read_by_duck_typing():
    rng = np.random.default_rng(3)
    n_in, h = 3, 2
    weights = [rng.standard_normal((n_in, 4 * h)), rng.standard_normal((h, 4 * h)),
               rng.standard_normal(4 * h)]

    class FakeKerasLSTM:
        def get_weights(self):
            return weights

        def get_config(self):
            return {"units": h, "activation": "relu", "recurrent_activation": "sigmoid",
                    "go_backwards": False}

    layer = convert.from_keras(FakeKerasLSTM())
    assert layer.activation == "relu"
    x = rng.standard_normal((2, 4, n_in))
    seq, _, _ = keras_lstm(x, *weights, activation=lambda z: np.maximum(z, 0))
    np.testing.assert_allclose(layer.forward(x.transpose(0, 2, 1)).transpose(0, 2, 1), seq,
                               rtol=1e-10, atol=1e-12)


def test_keras_refuses_peepholes_and_bad_shapes():
    g = lstmfast.GravesLSTM(3, 2, dtype=F64, seed=0)
    with pytest.raises(ValueError, match="peephole"):
        convert.to_keras(g)
    with pytest.raises(ValueError, match="recurrent_kernel"):
        convert.keras_to_lstmfast(np.zeros((3, 8)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="4h"):
        convert.keras_to_lstmfast(np.zeros((3, 7)), np.zeros((2, 8)))


# ----------------------------------------------------------------------------------------------
# ONNX


@pytest.mark.parametrize("peepholes", [True, False])
def test_onnx_forward_matches_reference(peepholes):
    rng = np.random.default_rng(4)
    T, mb, n_in, h = 6, 3, 4, 5
    p = random_onnx(rng, 1, n_in, h, peepholes)
    X = rng.standard_normal((T, mb, n_in))
    Y, Y_h, Y_c = onnx_lstm(X, **p)
    layer = convert.from_onnx(**p)
    assert isinstance(layer, lstmfast.GravesLSTM if peepholes else lstmfast.LSTM)
    out = layer.forward(X.transpose(1, 2, 0))                   # [mb, h, T]
    np.testing.assert_allclose(out.transpose(2, 0, 1), Y[:, 0], rtol=1e-10, atol=1e-12)
    # with an initial state, through the array-level conversion and the functional API
    h0 = rng.standard_normal((1, mb, h))
    c0 = rng.standard_normal((1, mb, h))
    Y, Y_h, Y_c = onnx_lstm(X, **p, initial_h=h0, initial_c=c0)
    W, RW, b = convert.onnx_to_lstmfast(**p)
    fwd = lstmfast.lstm_forward(X.transpose(1, 2, 0), W, RW, b, h0=h0[0], c0=c0[0])
    np.testing.assert_allclose(fwd.output.transpose(2, 0, 1), Y[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fwd.last_h, Y_h[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fwd.last_c, Y_c[0], rtol=1e-10, atol=1e-12)


def test_onnx_peephole_semantics_previous_vs_current_cell():
    """Only a peephole on one gate at a time: each lands on the gate ONNX says, with the cell
    state (previous or current) ONNX says."""
    rng = np.random.default_rng(5)
    T, mb, n_in, h = 5, 2, 3, 2
    base = random_onnx(rng, 1, n_in, h, peepholes=False)
    X = rng.standard_normal((T, mb, n_in))
    for k in range(3):                                         # i, o, f
        P = np.zeros((1, 3 * h))
        P[0, k * h:(k + 1) * h] = 1.5
        Y, _, _ = onnx_lstm(X, **{**base, "P": P})
        Y0, _, _ = onnx_lstm(X, **base)
        assert np.abs(Y - Y0).max() > 1e-3                      # the peephole matters
        out = convert.from_onnx(**{**base, "P": P}).forward(X.transpose(1, 2, 0))
        np.testing.assert_allclose(out.transpose(2, 0, 1), Y[:, 0], rtol=1e-10, atol=1e-12)


def test_onnx_reverse_direction_arrays():
    rng = np.random.default_rng(6)
    T, mb, n_in, h = 5, 2, 3, 4
    p = random_onnx(rng, 1, n_in, h)
    X = rng.standard_normal((T, mb, n_in))
    Y, Y_h, Y_c = onnx_lstm(X, **p, direction="reverse")
    W, RW, b = convert.onnx_to_lstmfast(**p)
    fwd = lstmfast.lstm_forward(X.transpose(1, 2, 0), W, RW, b, forwards=False)
    np.testing.assert_allclose(fwd.output.transpose(2, 0, 1), Y[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fwd.last_c, Y_c[0], rtol=1e-10, atol=1e-12)
    layer = convert.from_onnx(**p, direction="reverse")      # a layer processing time backwards
    out = layer.forward(X.transpose(1, 2, 0))
    np.testing.assert_allclose(out.transpose(2, 0, 1), Y[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out[:, :, 0], Y_h[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("peepholes", [True, False])
def test_onnx_bidirectional_matches_reference(peepholes):
    rng = np.random.default_rng(7)
    T, mb, n_in, h = 6, 3, 4, 3
    p = random_onnx(rng, 2, n_in, h, peepholes)
    X = rng.standard_normal((T, mb, n_in))
    Y, _, _ = onnx_lstm(X, **p, direction="bidirectional")
    layer = convert.from_onnx(**p, direction="bidirectional")
    assert isinstance(layer, lstmfast.Bidirectional) and layer.mode == "concat"
    out = layer.forward(X.transpose(1, 2, 0))                   # [mb, 2h, T]
    expected = np.concatenate([Y[:, 0], Y[:, 1]], axis=2)       # [T, mb, 2h]
    np.testing.assert_allclose(out.transpose(2, 0, 1), expected, rtol=1e-10, atol=1e-12)
    exported = convert.to_onnx(layer)
    assert exported["attributes"]["direction"] == "bidirectional"
    assert exported["attributes"]["activations"] == ["Sigmoid", "Tanh", "Tanh"] * 2
    # the export is the same function (its bias is all in Wb)
    Y2, _, _ = onnx_lstm(X, exported["W"], exported["R"], exported["B"], exported["P"],
                         direction="bidirectional")
    np.testing.assert_allclose(Y2, Y, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(exported["W"], p["W"])
    np.testing.assert_array_equal(exported["R"], p["R"])
    np.testing.assert_allclose(exported["B"][:, :4 * h], p["B"][:, :4 * h] + p["B"][:, 4 * h:])
    assert not exported["B"][:, 4 * h:].any()
    if peepholes:
        np.testing.assert_array_equal(exported["P"], p["P"])
    else:
        assert exported["P"] is None


def test_onnx_activations():
    rng = np.random.default_rng(8)
    T, mb, n_in, h = 4, 2, 3, 2
    p = random_onnx(rng, 1, n_in, h)
    X = rng.standard_normal((T, mb, n_in))
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    Y, _, _ = onnx_lstm(X, **p, f=hard_sigmoid, g=relu, h_act=relu)
    for kwargs in ({"activations": ["HardSigmoid", "Relu", "Relu"]},
                   {"activations": ["HardSigmoid", "Relu", "Relu"], "activation_alpha": [0.2],
                    "activation_beta": [0.5]},
                   {"activations": ["HardSigmoid", "Relu", "Relu"],
                    "activation_alpha": [0.2, 0.0, 0.0], "activation_beta": [0.5, 0.0, 0.0]}):
        layer = convert.from_onnx(**p, **kwargs)
        assert (layer.gate_activation, layer.activation) == ("hardsigmoid", "relu")
        out = layer.forward(X.transpose(1, 2, 0))
        np.testing.assert_allclose(out.transpose(2, 0, 1), Y[:, 0], rtol=1e-10, atol=1e-12)
    assert convert.to_onnx(layer)["attributes"]["activations"] == ["HardSigmoid", "Relu", "Relu"]
    with pytest.raises(ValueError, match="alpha=0.3"):
        convert.from_onnx(**p, activations=["HardSigmoid", "Tanh", "Tanh"], activation_alpha=[0.3])
    with pytest.raises(ValueError, match="differ"):
        convert.from_onnx(**p, activations=["Sigmoid", "Tanh", "Relu"])
    with pytest.raises(ValueError, match="clip"):
        convert.from_onnx(**p, clip=3.0)
    with pytest.raises(ValueError, match="input_forget"):
        convert.from_onnx(**p, input_forget=1)


def test_onnx_round_trip_arrays_and_shape_errors():
    rng = np.random.default_rng(9)
    layer = lstmfast.GravesLSTM(3, 4, dtype=np.float32, seed=2)
    layer.params = rng.standard_normal(layer.params.size)
    W, R, B, P = convert.lstmfast_to_onnx(layer.W, layer.RW, layer.b)
    assert W.shape == (1, 16, 3) and R.shape == (1, 16, 4) and B.shape == (1, 32) and P.shape == (1, 12)
    assert W.dtype == np.float32
    W2, RW2, b2 = convert.onnx_to_lstmfast(W, R, B, P)
    np.testing.assert_array_equal(W2, layer.W)
    np.testing.assert_array_equal(RW2, layer.RW)
    np.testing.assert_array_equal(b2, layer.b)
    with pytest.raises(ValueError, match="R: expected"):
        convert.onnx_to_lstmfast(W, R[:, :, :3], B, P)
    with pytest.raises(ValueError, match="P: expected"):
        convert.onnx_to_lstmfast(W, R, B, P[:, :6])
    with pytest.raises(ValueError, match="direction"):
        convert.onnx_to_lstmfast(W, R, B, P, direction=1)


# ----------------------------------------------------------------------------------------------
# PyTorch


def _run_torch(module, x, state=None):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        out, (h_n, c_n) = module(torch.from_numpy(x), state)
    return out.numpy(), h_n.numpy(), c_n.numpy()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_matches_nn_lstm(bidirectional, bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    T, mb, n_in, h = 7, 3, 4, 5
    module = torch.nn.LSTM(n_in, h, bias=bias, bidirectional=bidirectional, dtype=torch.float64)
    if bias:  # make the two bias vectors distinct and large enough to matter
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.startswith("bias"):
                    p.normal_(0, 0.7)
    x = np.random.default_rng(10).standard_normal((T, mb, n_in))
    expected, _, _ = _run_torch(module, x)
    layer = convert.from_torch(module)
    assert isinstance(layer, lstmfast.Bidirectional if bidirectional else lstmfast.LSTM)
    out = layer.forward(x.transpose(1, 2, 0))
    np.testing.assert_allclose(out.transpose(2, 0, 1), expected, rtol=1e-10, atol=1e-12)
    # and back: the same function
    back = convert.to_torch(layer)
    got, _, _ = _run_torch(back, x)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert not back.bias_hh_l0.detach().numpy().any()


def test_torch_arrays_with_state_and_float32():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    T, mb, n_in, h = 5, 2, 3, 4
    module = torch.nn.LSTM(n_in, h)                       # float32
    rng = np.random.default_rng(11)
    x = rng.standard_normal((T, mb, n_in)).astype(np.float32)
    h0 = rng.standard_normal((1, mb, h)).astype(np.float32)
    c0 = rng.standard_normal((1, mb, h)).astype(np.float32)
    out_t, h_t, c_t = _run_torch(module, x, (torch.from_numpy(h0), torch.from_numpy(c0)))
    W, RW, b = convert.torch_to_lstmfast(module.weight_ih_l0, module.weight_hh_l0,
                                         module.bias_ih_l0, module.bias_hh_l0)
    assert W.dtype == np.float32 and W.shape == (n_in, 4 * h) and RW.shape == (h, 4 * h)
    fwd = lstmfast.lstm_forward(x.transpose(1, 2, 0), W, RW, b, h0=h0[0], c0=c0[0])
    np.testing.assert_allclose(fwd.output.transpose(2, 0, 1), out_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fwd.last_h, h_t[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fwd.last_c, c_t[0], rtol=1e-5, atol=1e-6)
    w_ih, w_hh, b_ih, b_hh = convert.lstmfast_to_torch(W, RW, b)
    np.testing.assert_array_equal(w_ih, module.weight_ih_l0.detach().numpy())
    np.testing.assert_array_equal(w_hh, module.weight_hh_l0.detach().numpy())
    np.testing.assert_allclose(b_ih, (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy(),
                               rtol=1e-6)
    assert not b_hh.any()


def test_from_torch_stacked_layers():
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    T, mb, n_in, h = 6, 2, 3, 4
    module = torch.nn.LSTM(n_in, h, num_layers=2, dtype=torch.float64)
    x = np.random.default_rng(12).standard_normal((T, mb, n_in))
    expected, _, _ = _run_torch(module, x)
    a = x.transpose(1, 2, 0)
    for k in range(2):
        a = convert.from_torch(module, layer=k).forward(a)
    np.testing.assert_allclose(a.transpose(2, 0, 1), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="layer"):
        convert.from_torch(module, layer=2)


def test_torch_refusals():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="proj_size"):
        convert.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(TypeError):
        convert.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(ValueError, match="peephole"):
        convert.to_torch(lstmfast.GravesLSTM(3, 4, seed=0))
    with pytest.raises(ValueError, match="tanh and sigmoid"):
        convert.to_torch(lstmfast.LSTM(3, 4, activation="relu", seed=0))
    with pytest.raises(TypeError, match="GravesBidirectionalLSTM"):
        convert.to_torch(lstmfast.GravesBidirectionalLSTM(3, 4, seed=0))
    with pytest.raises(ValueError, match="mode"):
        convert.to_torch(lstmfast.Bidirectional(lstmfast.LSTM(3, 4, seed=0), mode="add"))


def test_gate_orders_are_consistent():
    """A marker in one gate block of each peer's bias lands in the named lstmfast block."""
    h = 2
    names = {"c": 0, "f": 1, "o": 2, "i": 3}                 # lstmfast block positions
    for gate in "ifco":
        # torch / keras: i, f, c(g), o
        k = "ifco".index(gate)
        marker = np.zeros(4 * h)
        marker[k * h:(k + 1) * h] = 1.0
        _, _, b = convert.torch_to_lstmfast(np.zeros((4 * h, 1)), np.zeros((4 * h, h)), marker, None)
        assert b[names[gate] * h:(names[gate] + 1) * h].tolist() == [1.0] * h and b.sum() == h
        _, _, b = convert.keras_to_lstmfast(np.zeros((1, 4 * h)), np.zeros((h, 4 * h)), marker)
        assert b[names[gate] * h:(names[gate] + 1) * h].tolist() == [1.0] * h and b.sum() == h
        # onnx: i, o, f, c (Rb half)
        k = "iofc".index(gate)
        B = np.zeros((1, 8 * h))
        B[0, 4 * h + k * h:4 * h + (k + 1) * h] = 1.0
        _, _, b = convert.onnx_to_lstmfast(np.zeros((1, 4 * h, 1)), np.zeros((1, 4 * h, h)), B)
        assert b[names[gate] * h:(names[gate] + 1) * h].tolist() == [1.0] * h and b.sum() == h


def test_import_without_torch(tmp_path):
    """lstmfast and lstmfast.convert import (and the array functions work) without PyTorch."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "import lstmfast, lstmfast.convert as c, numpy as np\n"
            "W, RW, b = c.keras_to_lstmfast(np.ones((2, 8)), np.ones((2, 8)), np.ones(8))\n"
            "try:\n    import lstmfast.torch\nexcept ImportError:\n    print('ok')\n")
    import os
    # the same lstmfast as this process (installed or the source tree)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(lstmfast.__file__)), env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            cwd=str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----------------------------------------------------------------------------------------------
# names and attributes as Keras and ONNX hand them over; lazy submodules


def keras3_hard_sigmoid(z):      # Keras 3: relu6(x + 3) / 6
    return np.minimum(np.maximum(z + 3.0, 0.0), 6.0) / 6.0


def keras_weights(rng, n_in, h, scale=1.5):
    # large enough that many gate pre-activations fall where the two hard_sigmoids differ
    return [scale * rng.standard_normal((n_in, 4 * h)), scale * rng.standard_normal((h, 4 * h)),
            scale * rng.standard_normal(4 * h)]


def run_keras_layout(layer, x):
    return layer.forward(x.transpose(0, 2, 1)).transpose(0, 2, 1)


@pytest.mark.parametrize("version, reference", [(2, hard_sigmoid), (3, keras3_hard_sigmoid)])
def test_hard_sigmoid_as_each_keras_defines_it(version, reference):
    rng = np.random.default_rng(40 + version)
    weights = keras_weights(rng, 3, 4)
    x = rng.standard_normal((2, 6, 3))
    layer = convert.from_keras(*weights, recurrent_activation="hard_sigmoid", keras_version=version)
    assert layer.gate_activation == "hardsigmoid"
    expected = keras_lstm(x, *weights, recurrent_activation=reference)[0]
    np.testing.assert_allclose(run_keras_layout(layer, x), expected, rtol=1e-12, atol=1e-13)
    other = keras3_hard_sigmoid if version == 2 else hard_sigmoid
    # the two definitions give different outputs on these weights: the test tells them apart
    assert np.abs(keras_lstm(x, *weights, recurrent_activation=other)[0] - expected).max() > 1e-2


def test_hard_sigmoid_needs_the_keras_version_only_when_unknown():
    weights = keras_weights(np.random.default_rng(1), 2, 3)
    with pytest.raises(ValueError, match="keras_version=2 or keras_version=3"):
        convert.from_keras(*weights, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="keras_version must be 2, 3 or None"):
        convert.from_keras(*weights, recurrent_activation="hard_sigmoid", keras_version=4)
    # lstmfast's own name needs no version
    assert convert.from_keras(*weights, recurrent_activation="hardsigmoid").gate_activation == "hardsigmoid"


class FakeKerasLSTM:
    """A Keras layer as from_keras reads it (get_weights, get_config)."""

    def __init__(self, weights, **config):
        self.weights = weights
        self.config = {"activation": "tanh", "recurrent_activation": "sigmoid", "go_backwards": False}
        self.config.update(config)

    def get_weights(self):
        return self.weights

    def get_config(self):
        return dict(self.config)


def test_keywords_override_the_layer_configuration():
    rng = np.random.default_rng(5)
    weights = keras_weights(rng, 3, 2, scale=0.7)
    x = rng.standard_normal((2, 4, 3))
    fake = FakeKerasLSTM(weights, activation="relu", recurrent_activation="hard_sigmoid")
    # the configuration's hard_sigmoid with the version given as a keyword
    layer = convert.from_keras(fake, keras_version=2)
    assert (layer.activation, layer.gate_activation) == ("relu", "hardsigmoid")
    np.testing.assert_allclose(run_keras_layout(layer, x),
                               keras_lstm(x, *weights, activation=lambda z: np.maximum(z, 0),
                                          recurrent_activation=hard_sigmoid)[0],
                               rtol=1e-12, atol=1e-13)
    # keywords win over the configuration
    layer = convert.from_keras(fake, activation="tanh", recurrent_activation="sigmoid")
    assert (layer.activation, layer.gate_activation) == ("tanh", "sigmoid")
    np.testing.assert_allclose(run_keras_layout(layer, x), keras_lstm(x, *weights)[0],
                               rtol=1e-12, atol=1e-13)


def test_keras_version_of_a_real_keras_layer():
    os.environ.setdefault("KERAS_BACKEND", "numpy")     # Keras 3 without TensorFlow
    keras = pytest.importorskip("keras")
    layer = keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")
    layer.build((None, 5, 2))
    major = int(keras.__version__.split(".")[0])
    assert convert.keras_major_version(layer) == major
    rng = np.random.default_rng(6)
    weights = [w.astype(np.float32) for w in keras_weights(rng, 2, 3)]   # what Keras keeps
    layer.set_weights(weights)
    x = rng.standard_normal((2, 5, 2))
    ours = convert.from_keras(layer)
    reference = keras3_hard_sigmoid if major == 3 else hard_sigmoid
    np.testing.assert_allclose(run_keras_layout(ours, x),
                               keras_lstm(x, *weights, recurrent_activation=reference)[0],
                               rtol=0, atol=1e-6)       # float32 layer, float64 reference


def test_from_onnx_takes_attributes_as_onnx_stores_them():
    rng = np.random.default_rng(7)
    p = random_onnx(rng, 1, 3, 2, peepholes=False)
    as_text = convert.from_onnx(**p, direction="forward", activations=["HardSigmoid", "Tanh", "Tanh"])
    as_bytes = convert.from_onnx(**p, direction=b"forward", hidden_size=2, layout=1,
                                 activations=[b"HardSigmoid", b"Tanh", b"Tanh"],
                                 activation_alpha=[0.2], activation_beta=[0.5])
    assert as_bytes.gate_activation == "hardsigmoid"
    x = rng.standard_normal((2, 3, 5))
    np.testing.assert_array_equal(as_bytes.forward(x), as_text.forward(x))
    bi = convert.from_onnx(**random_onnx(rng, 2, 3, 2, peepholes=False), direction=b"bidirectional", hidden_size=2,
                           activations=[b"Sigmoid", b"Tanh", b"Tanh"] * 2)
    assert isinstance(bi, lstmfast.Bidirectional) and bi.mode == "concat"
    with pytest.raises(ValueError, match="hidden_size=3 does not match R"):
        convert.from_onnx(**p, hidden_size=3)
    with pytest.raises(ValueError, match="layout must be 0 or 1"):
        convert.from_onnx(**p, layout=2)
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        convert.from_onnx(**p, direction=b"sideways")
    with pytest.raises(ValueError, match="not UTF-8"):
        convert.from_onnx(**p, direction=b"\xff\xfe")
    with pytest.raises(ValueError, match="activation 'Swish' is not supported"):
        convert.from_onnx(**p, activations=[b"Swish", b"Tanh", b"Tanh"])


def run_python(code, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(lstmfast.__file__)), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=120)


def test_submodules_are_attributes_without_their_dependencies(tmp_path):
    """`import lstmfast` then lstmfast.convert etc. work; onnx, keras, h5py and torch stay
    unimported until a function needs them."""
    code = ("import sys\n"
            "import lstmfast\n"
            "names = lstmfast._LAZY_SUBMODULES\n"
            "assert set(names) == {'convert', 'onnx', 'keras', 'dl4j'}, names\n"
            "for name in names:\n"
            "    module = getattr(lstmfast, name)\n"
            "    assert module.__name__ == 'lstmfast.' + name\n"
            "heavy = [m for m in ('onnx', 'onnxruntime', 'keras', 'h5py', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "try:\n    lstmfast.no_such_module\nexcept AttributeError as e:\n    print('ok', e)\n")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok") and "no_such_module" in result.stdout
