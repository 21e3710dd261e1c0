"""Property-based fuzzing of lstm_forward / lstm_backward.

Every call either returns what the independent NumPy port of the seed (tests/reference.py)
returns, or raises ValueError / TypeError with a message naming the offending argument; never
a crash, and never a write into an input or next to it: every array argument is a view inside a
larger buffer of sentinel values, whose bytes are compared after the call.

Hypothesis runs derandomized (a fixed sequence of cases, the same in CI and locally), without
an example database; LSTMFAST_FUZZ_SCALE=10 runs ten times more cases. The number of cases
that ran is recorded (printed at the end of the session).
"""
import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import lstmfast
import reference as R
from reliability_support import (FLOOR, KINK_MARGIN, LAYOUTS, TOL, UNBOUNDED, add_count,
                                 fuzz_settings, guarded, names_argument, value_of)

OTHER = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.float32}
MASK_DTYPES = (np.float32, np.float64, np.bool_, np.int8, np.uint8, np.int64)


@st.composite
def problems(draw, *, layouts=True):
    """A valid problem: sizes (zero-size dimensions are the wrong-input tests' business),
    options, values from a seed, and a memory layout for every array argument."""
    p = dict(
        dtype=np.dtype(draw(st.sampled_from([np.float32, np.float64]))),
        mb=draw(st.integers(1, 4)), n_in=draw(st.integers(1, 4)), h=draw(st.integers(1, 4)),
        T=draw(st.integers(1, 5)),
        peepholes=draw(st.booleans()), infer_peepholes=draw(st.booleans()),
        activation=draw(st.sampled_from(R.ACTIVATION_NAMES)),
        gate=draw(st.sampled_from(R.GATE_ACTIVATION_NAMES)),
        forwards=draw(st.booleans()),
        h0=draw(st.booleans()), c0=draw(st.booleans()),
        mask=draw(st.sampled_from([None, "ones", "leading", "trailing", "random"])),
        bias_2d=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    p["two_d"] = p["T"] == 1 and draw(st.booleans())
    p["tbptt"] = draw(st.one_of(st.none(), st.integers(1, p["T"] + 2)))
    names = ("x", "W", "RW", "b", "h0", "c0", "mask", "eps")
    if layouts:
        p["layout"] = {k: draw(st.sampled_from(LAYOUTS)) for k in names}
        # the dtype of input_weights decides the computation's: keep it a float32/64 array
        p["layout"]["W"] = draw(st.sampled_from([lay for lay in LAYOUTS
                                                 if lay not in ("other-dtype", "list")]))
        p["mask_dtype"] = draw(st.sampled_from(MASK_DTYPES))
    else:
        p["layout"] = {k: "c" for k in names}
        p["mask_dtype"] = p["dtype"]
    return p


def make_values(p):
    """float64 values of every argument (None where absent)."""
    rng = np.random.default_rng(p["seed"])
    mb, n_in, h, T = p["mb"], p["n_in"], p["h"], p["T"]
    scale = 0.3 if p["activation"] == "cube" else (0.5 if p["activation"] in UNBOUNDED else 1.0)
    v = dict(
        x=rng.standard_normal((mb, n_in) if p["two_d"] else (mb, n_in, T)),
        W=rng.standard_normal((n_in, 4 * h)) * (scale / np.sqrt(n_in)),
        RW=rng.standard_normal((h, 4 * h + (3 if p["peepholes"] else 0))) * (scale / np.sqrt(h)),
        b=rng.standard_normal((1, 4 * h) if p["bias_2d"] else (4 * h,)) * 0.3,
        h0=rng.standard_normal((mb, h)) * 0.5 if p["h0"] else None,
        c0=rng.standard_normal((mb, h)) if p["c0"] else None,
        mask=None if p["mask"] is None else R.contiguous_mask(rng, mb, T, p["mask"]),
        eps=rng.standard_normal((mb, h) if p["two_d"] else (mb, h, T)),
    )
    return v


def lay_out(p, values):
    """Guarded arguments: each array in its drawn layout (the mask in its drawn dtype)."""
    dtype = p["dtype"]
    out = {}
    for k, val in values.items():
        if val is None:
            out[k] = None
            continue
        arg_dtype = p["mask_dtype"] if k == "mask" else dtype
        layout = p["layout"][k]
        if k == "mask" and layout == "other-dtype":
            layout = "c"
        if layout == "unaligned" and np.dtype(arg_dtype).itemsize == 1:
            layout = "strided"
        out[k] = guarded(val, layout, arg_dtype, other_dtype=OTHER[dtype])
    return out


def call_kwargs(p, args):
    return dict(h0=None if args["h0"] is None else args["h0"].view,
                c0=None if args["c0"] is None else args["c0"].view,
                mask=None if args["mask"] is None else args["mask"].view,
                peepholes=None if p["infer_peepholes"] else p["peepholes"],
                activation=p["activation"], gate_activation=p["gate"], forwards=p["forwards"])


def assert_close(name, got, want, dtype):
    got = np.asarray(got)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert got.dtype == dtype, (name, got.dtype)
    err = R.rel_err(got, want, floor=FLOOR[dtype])
    assert err <= TOL[dtype], f"{name}: relative error {err:.3g} > {TOL[dtype]:g}"


def _no_shared_memory(results, args):
    for r in results:
        for g in args.values():
            if g is not None and g.parent is not None:
                assert not np.shares_memory(r, g.parent), "a result shares memory with an input"


@fuzz_settings(300)
@given(p=problems())
def test_valid_calls_match_the_reference(p):
    """Any valid call, in any memory layout, equals the reference and touches no input."""
    dtype = p["dtype"]
    values = make_values(p)
    args = lay_out(p, values)
    note(f"layouts {p['layout']}, mask dtype {np.dtype(p['mask_dtype'])}")
    kw = call_kwargs(p, args)
    x, W, RW, b = (args[k].view for k in ("x", "W", "RW", "b"))

    # the reference, from exactly the values the call computes with
    ref_args = {k: value_of(None if g is None else g.view, dtype) for k, g in args.items()}
    with np.errstate(all="ignore"):
        ref = R.ref_forward(ref_args["x"], ref_args["W"], ref_args["RW"],
                            ref_args["b"].reshape(np.shape(values["b"])), ref_args["h0"],
                            ref_args["c0"], peepholes=p["peepholes"], activation=p["activation"],
                            gate_activation=p["gate"], mask=ref_args["mask"],
                            forwards=p["forwards"])
    assume(np.all(np.isfinite(ref.output)) and np.max(np.abs(np.stack(ref.c))) < 1e3)

    inference = lstmfast.lstm_forward(x, W, RW, b, **kw)
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True, **kw)
    for result in (inference, fwd):
        assert_close("output", result.output, ref.output, dtype)
        assert_close("last_h", result.last_h, ref.last_h, dtype)
        assert_close("last_c", result.last_c, ref.last_c, dtype)

    before = [a.copy() for a in (fwd.output, fwd.last_h, fwd.last_c, fwd._cache)]
    grads = lstmfast.lstm_backward(fwd, args["eps"].view, tbptt_length=p["tbptt"])
    # backward leaves the forward result alone
    for a, saved in zip((fwd.output, fwd.last_h, fwd.last_c, fwd._cache), before):
        assert a.tobytes() == saved.tobytes()
    assert grads.input_weights.shape == np.shape(W) and grads.recurrent_weights.shape == np.shape(RW)
    assert grads.bias.shape == np.shape(b) and grads.input.shape == np.shape(x)
    if R.min_kink_distance(ref) >= KINK_MARGIN[dtype]:
        ref_grads = R.ref_backward(ref, ref_args["eps"], tbptt_length=p["tbptt"])
        for name in R.GRAD_NAMES:
            assert_close(name, getattr(grads, name), getattr(ref_grads, name), dtype)
        add_count("fuzz: functional valid calls compared incl. gradients")
    else:
        add_count("fuzz: functional valid calls compared, gradients skipped (at a kink)")

    for g in args.values():
        if g is not None:
            assert g.intact(), "an input (or the memory around it) was written"
    _no_shared_memory([inference.output, fwd.output, fwd.last_h, grads.input, grads.bias,
                       grads.input_weights], args)


# ---------------------------------------------------------------------------------------------
# wrong inputs: every kind of mistake, one at a time

ARRAY_ARGS = ("x", "W", "RW", "b", "h0", "c0", "mask", "eps")
NAME = {"x": "x", "W": "input_weights", "RW": "recurrent_weights", "b": "bias", "h0": "h0",
        "c0": "c0", "mask": "mask", "eps": "epsilon"}
BAD_DTYPES = (np.complex128, np.float16, np.int32, np.bool_, np.str_, np.object_, ">f8",
              "datetime64[s]", np.longdouble)


def _reshape_mistake(value, k, kind, p, rng_pick):
    """A wrong array for argument k (shape mistakes), or None if this mistake does not apply."""
    shape = value.shape
    if kind == "rank+":
        return value.reshape(shape + (1, 1)) if k in ("x", "eps", "b") else value[..., None]
    if kind == "rank-":
        return np.asarray(value.reshape(-1)[0])              # a 0-d array
    if kind == "zero":
        axis = rng_pick(len(shape))
        return np.zeros(shape[:axis] + (0,) + shape[axis + 1:], dtype=value.dtype)
    if kind in ("plus", "minus"):
        # the axes whose size must match another argument (x's minibatch and time axes are
        # free unless a state, a mask or epsilon ties them)
        axes = {"x": [1], "W": [0, 1], "RW": [0, 1], "b": [len(shape) - 1], "h0": [0, 1],
                "c0": [0, 1], "mask": [0, 1], "eps": [0, 1, 2] if len(shape) == 3 else [0, 1]}[k]
        axis = axes[rng_pick(len(axes))]
        delta = 1 if kind == "plus" or shape[axis] == 1 else -1
        new = list(shape)
        new[axis] += delta
        return np.ones(tuple(new), dtype=value.dtype) * 0.1
    raise ValueError(kind)


MISTAKES = ("rank+", "rank-", "zero", "plus", "minus", "dtype", "none", "scalar", "ragged")


@st.composite
def wrong_calls(draw):
    p = draw(problems(layouts=False))
    # keep x 3-D so that adding or removing an axis is always a mistake
    p["two_d"] = False
    stage = draw(st.sampled_from(["forward", "backward"]))
    if stage == "forward":
        target = draw(st.sampled_from(ARRAY_ARGS[:-1] + ("activation", "gate_activation",
                                                         "peepholes", "flags")))
    else:
        target = draw(st.sampled_from(("eps", "tbptt_length", "fwd")))
    kind = draw(st.sampled_from(MISTAKES)) if target in ARRAY_ARGS else None
    if target in ("h0", "c0"):
        p[target] = True
    if target == "mask":
        p["mask"] = "ones"
    if target in ("h0", "c0", "mask") and kind == "none":
        kind = "rank-"              # None is valid for optional arguments
    if target == "mask" and kind == "dtype":
        bad = draw(st.sampled_from([d for d in BAD_DTYPES if d not in (np.int32, np.bool_)]))
    else:
        bad = draw(st.sampled_from(BAD_DTYPES))
    choice = draw(st.integers(0, 2**16))
    value = draw(st.sampled_from([
        "", "TANH ", "softmax", "swish", None, 5, b"tanh", ["tanh"], "tanh\0"]))
    return p, stage, target, kind, bad, choice, value


def _expect_refusal(call, names):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    msg = str(info.value)
    assert any(names_argument(msg, n) for n in names), \
        f"the message does not name {' or '.join(names)}: {type(info.value).__name__}: {msg}"
    return info


@fuzz_settings(300)
@given(case=wrong_calls())
def test_wrong_inputs_are_refused_naming_the_argument(case):
    p, stage, target, kind, bad, choice, value = case
    values = make_values(p)
    args = lay_out(p, values)
    kw = call_kwargs(p, args)
    call_args = {k: (None if g is None else g.view) for k, g in args.items()}
    names = [NAME.get(target, target)]
    note(f"{stage}: {target} {kind} {bad!r} {value!r}")

    def pick(n):
        return choice % n

    if target in ARRAY_ARGS:
        arr = np.asarray(call_args[target])
        if kind in ("rank+", "rank-", "zero", "plus", "minus"):
            wrong = _reshape_mistake(arr, target, kind, p, pick)
            if target == "W" and kind in ("plus", "minus") or target == "x" and kind == "zero":
                names = ["input_weights", "x"]
            if target == "RW" and kind in ("plus", "minus"):
                names = ["recurrent_weights"]
        elif kind == "dtype":
            try:
                wrong = arr.astype(bad)
            except (TypeError, ValueError):
                wrong = np.array([["a"]])
        elif kind == "none":
            wrong = None
        elif kind == "ragged":             # a nested list NumPy cannot make an array of
            wrong = [[1.0, 2.0], [3.0]]
        else:  # scalar
            wrong = 1.5
        call_args[target] = wrong

    def forward(**extra):
        kwargs = dict(kw, h0=call_args["h0"], c0=call_args["c0"], mask=call_args["mask"])
        kwargs.update(extra)
        return lstmfast.lstm_forward(call_args["x"], call_args["W"], call_args["RW"],
                                     call_args["b"], **kwargs)

    if stage == "forward":
        if target == "activation":
            _expect_refusal(lambda: forward(activation=value), ["activation"])
        elif target == "gate_activation":
            bad_gate = value if value is not None else "tanh"
            _expect_refusal(lambda: forward(gate_activation=bad_gate if bad_gate != "" else "tanh"),
                            ["gate_activation"])
        elif target == "peepholes":
            _expect_refusal(lambda: forward(peepholes=not p["peepholes"]),
                            ["recurrent_weights", "peepholes"])
        elif target == "flags":
            flag = ["forwards", "peepholes", "for_backprop", "check_finite"][choice % 4]
            bad_flag = [np.ones(3), "yes", 2, [True]][(choice // 4) % 4]
            _expect_refusal(lambda: forward(**{flag: bad_flag}), [flag])
        else:
            _expect_refusal(forward, names)
        add_count("fuzz: functional wrong inputs refused")
    else:
        fwd = lstmfast.lstm_forward(args["x"].view, args["W"].view, args["RW"].view,
                                    args["b"].view, for_backprop=True,
                                    **dict(kw, h0=args["h0"] and args["h0"].view,
                                           c0=args["c0"] and args["c0"].view,
                                           mask=args["mask"] and args["mask"].view))
        saved = [a.tobytes() for a in (fwd.output, fwd.last_h, fwd.last_c, fwd._cache)]
        if target == "eps":
            _expect_refusal(lambda: lstmfast.lstm_backward(fwd, call_args["eps"]), ["epsilon"])
        elif target == "tbptt_length":
            bad_k = [0, -1, -(2**70), 1.5, "2", True, [2], np.float64(2.0)][choice % 8]
            if choice % 9 == 8:            # valid: any k >= T is full BPTT, however large
                full = lstmfast.lstm_backward(fwd, args["eps"].view)
                huge = lstmfast.lstm_backward(fwd, args["eps"].view, tbptt_length=2**70 + choice)
                assert huge.input_weights.tobytes() == full.input_weights.tobytes()
            _expect_refusal(lambda: lstmfast.lstm_backward(fwd, args["eps"].view,
                                                           tbptt_length=bad_k), ["tbptt_length"])
        else:
            plain = lstmfast.lstm_forward(args["x"].view, args["W"].view, args["RW"].view,
                                          args["b"].view)
            bad_fwd = [None, plain, plain.output, object(), {"output": plain.output}][choice % 5]
            _expect_refusal(lambda: lstmfast.lstm_backward(bad_fwd, args["eps"].view), ["fwd"])
        assert saved == [a.tobytes() for a in (fwd.output, fwd.last_h, fwd.last_c, fwd._cache)]
        add_count("fuzz: functional wrong inputs refused")
    for g in args.values():
        if g is not None:
            assert g.intact(), "a refused call wrote into an input"


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0), (0, 3), (2, 0), (0, 0, 0)])
@pytest.mark.parametrize("layout", ["c", "f", "broadcast", "readonly"])
def test_zero_size_inputs_are_refused(shape, layout):
    n_in = shape[1]
    W = np.zeros((n_in, 8))
    x = guarded(np.zeros(shape), layout, np.float64)
    with pytest.raises(ValueError, match=r"\bx\b"):
        lstmfast.lstm_forward(x.view, W, np.zeros((2, 8)), np.zeros(8))
    assert x.intact()


@pytest.mark.parametrize("which, shape", [("input_weights", (0, 8)), ("input_weights", (3, 0)),
                                          ("recurrent_weights", (0, 0)),
                                          ("recurrent_weights", (0, 8)), ("bias", (0,)),
                                          ("bias", (1, 0)), ("h0", (0, 2)), ("c0", (2, 0)),
                                          ("mask", (0, 4)), ("mask", (2, 0))])
def test_zero_size_parameters_and_states_are_refused(which, shape):
    args = dict(x=np.ones((2, 3, 4)), input_weights=np.zeros((3, 8)),
                recurrent_weights=np.zeros((2, 8)), bias=np.zeros(8))
    kw = {}
    if which in args:
        args[which] = np.zeros(shape)
    else:
        kw[which] = np.zeros(shape)
    with pytest.raises(ValueError) as info:
        lstmfast.lstm_forward(*args.values(), **kw)
    names = {which} | ({"x"} if which == "input_weights" else set())
    assert any(names_argument(str(info.value), n) for n in names), str(info.value)


# ---------------------------------------------------------------------------------------------
# regressions: core bugs this fuzzing found (fixed in functional.py)

def _small():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    W, RW, b = rng.standard_normal((3, 8)), rng.standard_normal((2, 8)), np.zeros(8)
    return x, W, RW, b


def test_huge_tbptt_length_is_full_bptt():
    x, W, RW, b = _small()
    fwd = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    eps = np.ones((2, 2, 4))
    full = lstmfast.lstm_backward(fwd, eps)
    huge = lstmfast.lstm_backward(fwd, eps, tbptt_length=2**70)
    assert huge.input_weights.tobytes() == full.input_weights.tobytes()


@pytest.mark.parametrize("which", ["x", "input_weights", "recurrent_weights", "bias", "h0", "mask",
                                   "epsilon"])
def test_ragged_lists_are_refused_naming_the_argument(which):
    x, W, RW, b = _small()
    args = dict(x=x, input_weights=W, recurrent_weights=RW, bias=b)
    ragged = [[1.0, 2.0], [3.0]]
    with pytest.raises(ValueError) as info:
        if which == "epsilon":
            lstmfast.lstm_backward(lstmfast.lstm_forward(x, W, RW, b, for_backprop=True), ragged)
        elif which in args:
            args[which] = ragged
            lstmfast.lstm_forward(*args.values())
        else:
            lstmfast.lstm_forward(*args.values(), **{which: ragged})
    assert names_argument(str(info.value), which), str(info.value)


@pytest.mark.parametrize("which", ["forwards", "peepholes"])
def test_array_flags_are_refused_naming_the_argument(which):
    x, W, RW, b = _small()
    with pytest.raises((ValueError, TypeError)) as info:
        lstmfast.lstm_forward(x, W, RW, b, **{which: np.ones(3)})
    assert names_argument(str(info.value), which), str(info.value)
