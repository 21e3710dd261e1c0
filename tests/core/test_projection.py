"""The recurrent projection (LSTMP, nn.LSTM's proj_size): lstm_forward(...,
projection_weights=...) against the reference (tests/reference.py's projected step), central
differences, torch.nn.LSTM(proj_size=...) (also with packed sequences, for lengths), and the
clear refusals. Tolerances as tests/core/test_reference.py: float64 1e-10, float32 1e-4."""
import numpy as np
import pytest

import lstmfast
import reference as R
from gradcheck import assert_lstm_gradients

TOL = {np.float32: 1e-4, np.float64: 1e-10}
TUNINGS = {"plain": None, "blas": {"packed_gemm": 0},
           "team": {"threads": 2, "team_min_units": 1, "team_min_step_work": 0},
           "chunked": {"projection_chunk_elements": 1}}
GRADS = R.GRAD_NAMES + ("projection_weights", "peephole_weights")


def _rel(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30)


def _weights(rng, n_in, H, P, peepholes):
    W = rng.standard_normal((n_in, 4 * H)) * 0.5
    RW = rng.standard_normal((P, 4 * H)) * 0.5
    b = rng.standard_normal(4 * H) * 0.3
    Wp = rng.standard_normal((H, P)) * 0.5
    peep = rng.standard_normal((H, 3)) * 0.5 if peepholes else None
    return W, RW, b, Wp, peep


def _compare(got, ref, names, dtype):
    for name in names:
        expected = getattr(ref, name)
        if expected is None:
            assert getattr(got, name) is None, name
        else:
            assert _rel(getattr(got, name), expected) < TOL[dtype], name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("tuning", sorted(TUNINGS))
@pytest.mark.parametrize("mb, H, P", [(1, 6, 3), (5, 30, 7), (4, 4, 9)])
def test_projection_matches_reference(dtype, forwards, peepholes, masked, tuning, mb, H, P):
    rng = np.random.default_rng(mb * 100 + H + P + peepholes)
    n_in, T = 3, 6
    x = rng.standard_normal((mb, n_in, T))
    W, RW, b, Wp, peep = _weights(rng, n_in, H, P, peepholes)
    h0, c0 = rng.standard_normal((mb, P)), rng.standard_normal((mb, H))
    mask = None
    if masked:
        mask = np.ones((mb, T))
        mask[0, 4:] = 0
    cast = [a if a is None else a.astype(dtype) for a in (x, W, RW, b, Wp, peep, h0, c0)]
    x_, W_, RW_, b_, Wp_, peep_, h0_, c0_ = cast
    ref = R.ref_forward(x_, W_, RW_, b_, h0_, c0_, mask=mask, forwards=forwards,
                        projection_weights=Wp_, peephole_weights=peep_)
    eps = rng.standard_normal((mb, P, T))
    glh, glc = rng.standard_normal((mb, P)), rng.standard_normal((mb, H))
    ref_grads = R.ref_backward(ref, eps, grad_last_h=glh, grad_last_c=glc)
    for for_backprop in (False, True):
        fwd = lstmfast.lstm_forward(x_, W_, RW_, b_, h0=h0_, c0=c0_, mask=mask, forwards=forwards,
                                    projection_weights=Wp_, peephole_weights=peep_,
                                    for_backprop=for_backprop, _tuning=TUNINGS[tuning])
        _compare(fwd, ref, ("output", "last_h", "last_c"), dtype)
    grads = lstmfast.lstm_backward(fwd, eps.astype(dtype), grad_last_h=glh.astype(dtype),
                                   grad_last_c=glc.astype(dtype), _tuning=TUNINGS[tuning])
    _compare(grads, ref_grads, GRADS, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("peepholes", [False, True])
def test_projection_with_lengths(dtype, forwards, peepholes):
    rng = np.random.default_rng(5 + forwards + 2 * peepholes)
    mb, n_in, H, P, T = 5, 3, 8, 3, 6
    x = rng.standard_normal((mb, n_in, T))
    W, RW, b, Wp, peep = _weights(rng, n_in, H, P, peepholes)
    h0, c0 = rng.standard_normal((mb, P)), rng.standard_normal((mb, H))
    lengths = np.array([6, 0, 3, 1, 5])
    cast = [a if a is None else a.astype(dtype) for a in (x, W, RW, b, Wp, peep, h0, c0)]
    x_, W_, RW_, b_, Wp_, peep_, h0_, c0_ = cast
    ref = R.ref_forward_lengths(x_, W_, RW_, b_, lengths, h0_, c0_, forwards=forwards,
                                projection_weights=Wp_, peephole_weights=peep_)
    eps = rng.standard_normal((mb, P, T))
    glh, glc = rng.standard_normal((mb, P)), rng.standard_normal((mb, H))
    ref_grads = R.ref_backward_lengths(ref, eps, glh, glc)
    fwd = lstmfast.lstm_forward(x_, W_, RW_, b_, h0=h0_, c0=c0_, lengths=lengths,
                                forwards=forwards, projection_weights=Wp_,
                                peephole_weights=peep_, for_backprop=True)
    _compare(fwd, ref, ("output", "last_h", "last_c"), dtype)
    grads = lstmfast.lstm_backward(fwd, eps.astype(dtype), grad_last_h=glh.astype(dtype),
                                   grad_last_c=glc.astype(dtype))
    _compare(grads, ref_grads, GRADS, dtype)


@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("peepholes", [False, True])
def test_projection_gradients_match_finite_differences(forwards, peepholes):
    rng = np.random.default_rng(21 + 2 * forwards + peepholes)
    mb, n_in, H, P, T = 3, 3, 4, 2, 4
    x = rng.standard_normal((mb, n_in, T))
    W, RW, b, Wp, peep = _weights(rng, n_in, H, P, peepholes)
    h0, c0 = rng.standard_normal((mb, P)), rng.standard_normal((mb, H))
    Ro = rng.standard_normal((mb, P, T))
    Qh, Qc = rng.standard_normal((mb, P)), rng.standard_normal((mb, H))
    extra = [("projection_weights", Wp, "projection_weights")]
    if peepholes:
        extra.append(("peephole_weights", peep, "peephole_weights"))
    assert_lstm_gradients((x, W, RW, b, h0, c0), Ro, Qh, Qc, extra=extra, forwards=forwards)


def _torch_to_dl4j(module, suffix=""):
    """nn.LSTM's weights (gate rows i, f, g, o) in lstmfast's layout (gate columns: block
    input = torch's g, forget, output, input gate = torch's i); W_hr [P, h] transposed."""
    def blocks(w):
        i, f, g, o = np.split(w.detach().numpy().astype(np.float64), 4, axis=0)
        return np.concatenate([g, f, o, i], axis=0)
    W = blocks(getattr(module, "weight_ih_l0" + suffix)).T
    RW = blocks(getattr(module, "weight_hh_l0" + suffix)).T
    b = blocks((getattr(module, "bias_ih_l0" + suffix)
                + getattr(module, "bias_hh_l0" + suffix))[:, None])[:, 0]
    Wp = getattr(module, "weight_hr_l0" + suffix).detach().numpy().astype(np.float64).T
    return W, RW, b, Wp


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_projection_and_lengths_match_torch(bidirectional, packed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    T, mb, n_in, H, P = 7, 4, 3, 6, 4
    module = torch.nn.LSTM(n_in, H, proj_size=P, bidirectional=bidirectional).double()
    x = torch.randn(T, mb, n_in, dtype=torch.float64, requires_grad=True)
    lengths = np.array([7, 3, 5, 1]) if packed else np.full(mb, T)
    h0 = torch.randn(1 + bidirectional, mb, P, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1 + bidirectional, mb, H, dtype=torch.float64, requires_grad=True)
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                      enforce_sorted=False)
        out_packed, (h_n, c_n) = module(seq, (h0, c0))
        out = torch.nn.utils.rnn.pad_packed_sequence(out_packed, total_length=T)[0]
    else:
        out, (h_n, c_n) = module(x, (h0, c0))
    rng = np.random.default_rng(1)
    Ro = rng.standard_normal(out.shape)
    Qh, Qc = rng.standard_normal(h_n.shape), rng.standard_normal(c_n.shape)
    loss = ((out * torch.from_numpy(Ro)).sum() + (h_n * torch.from_numpy(Qh)).sum()
            + (c_n * torch.from_numpy(Qc)).sum())
    loss.backward()
    x_dl = x.detach().numpy().transpose(1, 2, 0)
    grad_x = np.zeros_like(x_dl)
    for d, suffix in enumerate(["", "_reverse"][:1 + bidirectional]):
        W, RW, b, Wp = _torch_to_dl4j(module, suffix)
        fwd = lstmfast.lstm_forward(x_dl, W, RW, b, h0=h0[d].detach().numpy(),
                                    c0=c0[d].detach().numpy(), lengths=lengths,
                                    forwards=d == 0, projection_weights=Wp, for_backprop=True)
        out_d = out.detach().numpy()[:, :, d * P:(d + 1) * P].transpose(1, 2, 0)
        np.testing.assert_allclose(fwd.output, out_d, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fwd.last_h, h_n[d].detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(fwd.last_c, c_n[d].detach().numpy(), rtol=0, atol=1e-12)
        grads = lstmfast.lstm_backward(fwd, Ro[:, :, d * P:(d + 1) * P].transpose(1, 2, 0),
                                       grad_last_h=Qh[d], grad_last_c=Qc[d])
        W_t, RW_t, b_t, Wp_t = _torch_to_dl4j_grad(module, suffix)
        np.testing.assert_allclose(grads.input_weights, W_t, rtol=0, atol=1e-11)
        np.testing.assert_allclose(grads.recurrent_weights, RW_t, rtol=0, atol=1e-11)
        np.testing.assert_allclose(grads.bias, b_t, rtol=0, atol=1e-11)
        np.testing.assert_allclose(grads.projection_weights, Wp_t, rtol=0, atol=1e-11)
        np.testing.assert_allclose(grads.h0, h0.grad[d].numpy(), rtol=0, atol=1e-11)
        np.testing.assert_allclose(grads.c0, c0.grad[d].numpy(), rtol=0, atol=1e-11)
        grad_x += grads.input
    np.testing.assert_allclose(grad_x, x.grad.numpy().transpose(1, 2, 0), rtol=0, atol=1e-11)


def _torch_to_dl4j_grad(module, suffix):
    """The gradients of nn.LSTM's weights in lstmfast's layout (as _torch_to_dl4j)."""
    def blocks(g):
        i, f, gg, o = np.split(g.numpy(), 4, axis=0)
        return np.concatenate([gg, f, o, i], axis=0)
    grad = {name: getattr(module, name + suffix).grad
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "weight_hr_l0")}
    return (blocks(grad["weight_ih_l0"]).T, blocks(grad["weight_hh_l0"]).T,
            blocks(grad["bias_ih_l0"][:, None])[:, 0], grad["weight_hr_l0"].numpy().T)


def test_projection_refusals():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    W, RW, b, Wp, peep = _weights(rng, 3, 5, 2, True)
    with pytest.raises(ValueError, match=r"recurrent_weights: expected shape \[P, 4h\] = \[2, 20\]"):
        lstmfast.lstm_forward(x, W, np.ones((5, 20)), b, projection_weights=Wp)
    with pytest.raises(ValueError, match="peephole_weights: only with projection_weights"):
        lstmfast.lstm_forward(x, W, np.ones((5, 20)), b, peephole_weights=peep)
    with pytest.raises(ValueError, match="peepholes=True but peephole_weights is None"):
        lstmfast.lstm_forward(x, W, RW, b, projection_weights=Wp, peepholes=True)
    with pytest.raises(ValueError, match=r"peephole_weights: expected shape \[h, 3\] = \[5, 3\]"):
        lstmfast.lstm_forward(x, W, RW, b, projection_weights=Wp, peephole_weights=peep.T)
    with pytest.raises(ValueError, match=r"projection_weights: expected a 2-D array \[h, P\]"):
        lstmfast.lstm_forward(x, W, RW, b, projection_weights=Wp[:, 0])
    with pytest.raises(ValueError, match=r"h0: expected shape \[minibatch, h\] = \[2, 2\]"):
        lstmfast.lstm_forward(x, W, RW, b, projection_weights=Wp, h0=np.zeros((2, 5)))
    fwd = lstmfast.lstm_forward(x, W, RW, b, projection_weights=Wp, for_backprop=True)
    with pytest.raises(ValueError, match=r"epsilon: expected shape \[minibatch, h, T\] = \[2, 2, 4\]"):
        lstmfast.lstm_backward(fwd, np.zeros((2, 5, 4)))
