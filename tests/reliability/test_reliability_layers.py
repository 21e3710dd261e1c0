"""Property-based fuzzing of the layers: GravesLSTM, LSTM, GravesBidirectionalLSTM and
Bidirectional over sizes, dtypes, memory layouts and wrong inputs.

Valid calls (training forward + backward, streaming in random pieces, truncated-BPTT windows)
equal the NumPy reference of the seed (tests/reference.py); wrong calls raise ValueError /
TypeError naming the argument (or, for what a layer cannot do, UnsupportedOperationError) and
leave the layer exactly as it was: parameters, gradients, the training record, the streaming
and truncated-BPTT states.
"""
import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import lstmfast
import reference as R
from lstmfast.layers import UnsupportedOperationError
from reliability_support import (FLOOR, KINK_MARGIN, LAYOUTS, TOL, add_count, fuzz_settings,
                                 guarded, names_argument, value_of)

SMOOTH = ("tanh", "softsign", "rationaltanh", "sigmoid", "elu", "softplus", "identity")
KINDS = ("GravesLSTM", "LSTM", "GravesBidirectionalLSTM", "Bidirectional-concat",
         "Bidirectional-add", "Bidirectional-mul", "Bidirectional-average",
         "Bidirectional-graves-concat")


def make_layer(kind, n_in, h, dtype, activation, gate, seed):
    opts = dict(activation=activation, gate_activation=gate, dtype=dtype, seed=seed)
    if kind == "GravesLSTM":
        return lstmfast.GravesLSTM(n_in, h, **opts)
    if kind == "LSTM":
        return lstmfast.LSTM(n_in, h, **opts)
    if kind == "GravesBidirectionalLSTM":
        return lstmfast.GravesBidirectionalLSTM(n_in, h, **opts)
    inner = lstmfast.GravesLSTM if "graves" in kind else lstmfast.LSTM
    return lstmfast.Bidirectional(inner(n_in, h, **opts), mode=kind.split("-")[-1])


def directions(layer):
    if hasattr(layer, "forward_layer"):
        return [(layer.forward_layer, True), (layer.backward_layer, False)]
    return [(layer, True)]


def ref_direction(d, forwards, x, mask, dtype):
    return R.ref_forward(x, value_of(d.W, dtype), value_of(d.RW, dtype), value_of(d.b, dtype),
                         peepholes=d.peepholes, activation=d.activation,
                         gate_activation=d.gate_activation, mask=mask, forwards=forwards)


def combine(mode, outs):
    if len(outs) == 1:
        return outs[0]
    f, b = outs
    return {"concat": lambda: np.concatenate([f, b], axis=1), "add": lambda: f + b,
            "average": lambda: 0.5 * (f + b), "mul": lambda: f * b}[mode]()


def split_epsilon(mode, eps, outs, h):
    if len(outs) == 1:
        return [eps]
    f, b = outs
    return {"concat": lambda: [eps[:, :h], eps[:, h:]], "add": lambda: [eps, eps],
            "average": lambda: [0.5 * eps, 0.5 * eps],
            "mul": lambda: [eps * b, eps * f]}[mode]()


def close(name, got, want, dtype):
    got = np.asarray(got)
    assert got.shape == np.shape(want), (name, got.shape, np.shape(want))
    err = R.rel_err(got, want, floor=FLOOR[dtype])
    assert err <= TOL[dtype], f"{name}: relative error {err:.3g}"


@st.composite
def layer_cases(draw):
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    T = draw(st.integers(1, 6))
    return dict(
        kind=draw(st.sampled_from(KINDS)), dtype=dtype,
        mb=draw(st.integers(1, 3)), n_in=draw(st.integers(1, 4)), h=draw(st.integers(1, 3)), T=T,
        activation=draw(st.sampled_from(SMOOTH)), gate=draw(st.sampled_from(["sigmoid",
                                                                              "hardsigmoid"])),
        mask=draw(st.sampled_from([None, "ones", "leading", "trailing"])),
        two_d=T == 1 and draw(st.booleans()),
        x_layout=draw(st.sampled_from(LAYOUTS)),
        pieces=draw(st.lists(st.integers(1, 3), min_size=1, max_size=6)),
        seed=draw(st.integers(0, 2**31)),
    )


@fuzz_settings(150)
@given(c=layer_cases())
def test_layers_match_the_reference(c):
    dtype, mb, n_in, h, T = c["dtype"], c["mb"], c["n_in"], c["h"], c["T"]
    rng = np.random.default_rng(c["seed"])
    layer = make_layer(c["kind"], n_in, h, dtype, c["activation"], c["gate"], c["seed"])
    mode = getattr(layer, "mode", None)
    x_values = rng.standard_normal((mb, n_in) if c["two_d"] else (mb, n_in, T))
    mask = None if c["mask"] is None else R.contiguous_mask(rng, mb, T, c["mask"])
    x = guarded(x_values, c["x_layout"], dtype, other_dtype=np.float32)
    note(f"{c['kind']} x layout {c['x_layout']}")
    xv = value_of(x.view, dtype)

    # training forward + backward
    refs = [ref_direction(d, fw, xv, mask, dtype) for d, fw in directions(layer)]
    for r in refs:
        assume(np.all(np.isfinite(r.output)) and np.max(np.abs(np.stack(r.c))) < 1e3)
    outs = [r.output for r in refs]       # [mb, h, T] also for 2-D input, as lstm_forward
    out = layer.forward(x.view, mask=mask, training=True)
    close("output", out, combine(mode, outs), dtype)
    assert out.dtype == dtype
    eps = rng.standard_normal(np.shape(out))
    if min(R.min_kink_distance(r) for r in refs) >= KINK_MARGIN[dtype]:
        dx = layer.backward(eps)
        split = split_epsilon(mode, eps, outs, h)
        want_dx = 0
        for (d, _), r, e in zip(directions(layer), refs, split):
            g = R.ref_backward(r, e)
            close("W gradient", d.W_gradient, g.input_weights, dtype)
            close("RW gradient", d.RW_gradient, g.recurrent_weights, dtype)
            close("b gradient", d.b_gradient, g.bias, dtype)
            want_dx = want_dx + g.input
        close("dL/dx", dx, want_dx, dtype)
        add_count("fuzz: layer training passes compared incl. gradients")
    assert x.intact()

    # streaming in pieces and truncated-BPTT windows (one direction only)
    if len(refs) == 1 and not c["two_d"]:
        whole = refs[0]
        src = x.view if isinstance(x.view, np.ndarray) else np.asarray(x.view)
        for method in ("rnn_time_step", "rnn_activate_using_stored_state"):
            layer.rnn_clear_previous_state()
            got, start = [], 0
            for size in c["pieces"] * T:
                if start >= T:
                    break
                stop = min(T, start + size)
                piece_mask = None if mask is None else mask[:, start:stop]
                if method == "rnn_time_step" and stop - start == 1 and size == 1:
                    got.append(layer.rnn_time_step(src[:, :, start], mask=piece_mask)[:, :, None])
                else:
                    got.append(getattr(layer, method)(src[:, :, start:stop], mask=piece_mask))
                start = stop
            close(method, np.concatenate(got, axis=2), whole.output, dtype)
            state = layer.rnn_get_previous_state() if method == "rnn_time_step" \
                else layer.tbptt_state
            close("h", state[0], whole.last_h, dtype)
            close("c", state[1], whole.last_c, dtype)
        add_count("fuzz: layer streaming / tBPTT sequences compared")
    add_count("fuzz: layer cases")


# ---------------------------------------------------------------------------------------------
# wrong calls leave the layer as it was

def snapshot(layer):
    parts = [layer.params.tobytes(), layer.gradients.tobytes(), getattr(layer, "_outputs", None)]
    for d, _ in directions(layer):
        parts += [d._record, d.drop_connect_mask, d.state_gradients,
                  None if d._stream_state is None else [s.tobytes() for s in d._stream_state],
                  None if d._tbptt_state is None else [s.tobytes() for s in d._tbptt_state]]
    return parts


def same_snapshot(a, b):
    if len(a) != len(b):
        return False
    for u, v in zip(a, b):
        if isinstance(u, (bytes, list)) or isinstance(v, (bytes, list)):
            if u != v:
                return False
        elif u is not v:
            return False
    return True


WRONG_X = ("n_in+1", "rank1", "rank4", "zero-batch", "zero-time", "complex", "str", "none",
           "object", "bool", "scalar")
WRONG_CALLS = ("forward-x", "forward-mask", "backward-eps", "backward-tbptt", "time_step-x",
               "time_step-mask", "stored_state-x", "set_state", "params", "unsupported")


@fuzz_settings(200)
@given(kind=st.sampled_from(KINDS), dtype=st.sampled_from([np.float32, np.float64]),
       call=st.sampled_from(WRONG_CALLS), wrong=st.sampled_from(WRONG_X),
       pick=st.integers(0, 2**16), trained=st.booleans(), streamed=st.booleans())
def test_wrong_layer_calls_are_refused_and_change_nothing(kind, dtype, call, wrong, pick, trained,
                                                          streamed):
    mb, n_in, h, T = 2, 3, 2, 4
    rng = np.random.default_rng(pick)
    layer = make_layer(kind, n_in, h, dtype, "tanh", "sigmoid", pick)
    bidirectional = hasattr(layer, "forward_layer")
    x = rng.standard_normal((mb, n_in, T))
    if trained:
        out = layer.forward(x, training=True)
        layer.backward(np.ones_like(out))
        layer.forward(x, training=True)
    if streamed and not bidirectional:
        layer.rnn_time_step(x[:, :, :2])
        layer.rnn_activate_using_stored_state(x[:, :, :2], training=False)
    before = snapshot(layer)
    # (an inference pass drops the training record, as in DL4J)
    trained = directions(layer)[0][0]._record is not None

    def bad_x():
        return {"n_in+1": lambda: np.ones((mb, n_in + 1, T)), "rank1": lambda: np.ones(n_in),
                "rank4": lambda: np.ones((mb, n_in, T, 1)),
                "zero-batch": lambda: np.ones((0, n_in, T)),
                "zero-time": lambda: np.ones((mb, n_in, 0)),
                "complex": lambda: x.astype(complex), "str": lambda: x.astype(str),
                "none": lambda: None, "object": lambda: x.astype(object),
                "bool": lambda: x > 0, "scalar": lambda: 1.0}[wrong]()

    expected = (ValueError, TypeError)
    names = ["x"]
    if bidirectional and call in ("time_step-x", "time_step-mask", "stored_state-x", "set_state",
                                  "backward-tbptt", "unsupported"):
        expected, names = UnsupportedOperationError, None
    if call == "forward-x":
        action = lambda: layer.forward(bad_x(), training=bool(pick % 2))  # noqa: E731
    elif call == "forward-mask":
        bad_mask = [np.ones((mb, T + 1)), np.ones((mb + 1, T)), np.ones(T), "ones",
                    np.ones((mb, T), dtype=complex)][pick % 5]
        action = lambda: layer.forward(x, mask=bad_mask, training=True)  # noqa: E731
        names = ["mask"]
    elif call == "backward-eps":
        if not trained:
            names = []  # "no training forward pass": a ValueError naming no argument
        bad_eps = [np.ones((mb, 99, T)), np.ones((mb, layer.n_out, T + 1)), None, "eps",
                   np.ones((mb, layer.n_out, T), dtype=complex)][pick % 5]
        action = lambda: layer.backward(bad_eps)  # noqa: E731
        names = names and ["epsilon"]
    elif call == "backward-tbptt":
        action = lambda: layer.backward(np.ones((mb, layer.n_out, T)),  # noqa: E731
                                        tbptt_length=[0, -3, 1.5, "2"][pick % 4])
        if expected is not UnsupportedOperationError:
            names = ["tbptt_length"] if trained else []
    elif call == "time_step-x":
        action = lambda: layer.rnn_time_step(bad_x())  # noqa: E731
    elif call == "time_step-mask":
        action = lambda: layer.rnn_time_step(x, mask=np.ones((mb, T + 2)))  # noqa: E731
        if expected is not UnsupportedOperationError:
            names = ["mask"]
    elif call == "stored_state-x":
        action = lambda: layer.rnn_activate_using_stored_state(bad_x())  # noqa: E731
    elif call == "set_state":
        bad_state = [(np.ones((mb, h + 1)), np.ones((mb, h))), (np.ones((mb, h)), np.ones(h)),
                     (np.ones(h), np.ones(h)), (np.ones((mb, h)), None)][pick % 4]
        action = lambda: layer.rnn_set_previous_state(*bad_state)  # noqa: E731
        if expected is not UnsupportedOperationError:
            names = ["h", "c"]
    elif call == "params":
        bad_params = [np.ones(layer.num_params() + 1), np.ones((2, layer.num_params())),
                      np.ones(layer.num_params(), dtype=complex), "p"][pick % 4]

        def action():
            layer.params = bad_params
        names = ["params"]
    else:  # streaming through a bidirectional layer / nothing unsupported for the others
        if not bidirectional:
            return
        action = lambda: layer.rnn_time_step(x)  # noqa: E731

    with pytest.raises(expected) as info:
        action()
    if names:
        msg = str(info.value)
        assert any(names_argument(msg, n) for n in names), f"{type(info.value).__name__}: {msg}"
    assert same_snapshot(before, snapshot(layer)), "a refused call changed the layer"
    # and the layer still works
    out = layer.forward(x, training=True)
    layer.backward(np.ones_like(out))
    add_count("fuzz: layer wrong calls refused")


def test_ragged_input_to_a_layer_names_x():
    layer = lstmfast.LSTM(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"\bx\b"):
        layer.forward([[1.0, 2.0], [3.0]])
