"""lstmfast.lstm_forward / lstm_backward against the independent float64 NumPy port of the seed
(tests/reference.py), over randomized configurations of every option.

float64 results must agree to 1e-10 and float32 results to 1e-4 (norm-based relative error
max|a - b| / max|b| per array).  Epsilon is random everywhere (also at masked steps): both
implementations follow the seed there.
"""

import itertools
import zlib

import numpy as np
import pytest

import lstmfast
import reference as R

DTYPES = (np.float32, np.float64)
TOL = {np.float32: 1e-4, np.float64: 1e-10}
FLOOR = {np.float32: 1e-20, np.float64: 1e-30}
# minimum distance of evaluated pre-activations to a derivative jump (see R.min_kink_distance):
# float32 rounding must not move a value across a kink of hardsigmoid / relu / hardtanh ...
KINK_MARGIN = {np.float32: 1e-3, np.float64: 1e-9}
UNBOUNDED = {"relu", "leakyrelu", "elu", "selu", "softplus", "identity", "cube"}
STATES = ("none", "both", "h0", "c0")
MASKS = ("none", "ones", "leading", "trailing", "both", "random")


def _seed(*parts):
    return zlib.crc32(repr(parts).encode())


def _pick(rng, value, choices):
    if value is not None:
        return value
    return choices[int(rng.integers(len(choices)))]


def draw_case(seed, dtype, *, activation=None, gate=None, peephole=None, forwards=None,
              mb=None, n_in=None, H=None, T=None, two_d=None, state=None, mask_kind=None,
              tbptt="random", bias_2d=None, infer_peepholes=None):
    """A random configuration: arrays in ``dtype`` and the reference forward pass computed
    from exactly those values.  Redraws (deterministically) if a float32 run could cross a
    derivative kink or the values would overflow."""
    rng = np.random.default_rng(seed)
    activation = _pick(rng, activation, R.ACTIVATION_NAMES)
    gate = _pick(rng, gate, R.GATE_ACTIVATION_NAMES)
    peephole = _pick(rng, peephole, (True, False))
    forwards = _pick(rng, forwards, (True, False))
    mb = _pick(rng, mb, (1, 1, 2, 3, 4, 6))
    n_in = _pick(rng, n_in, (1, 2, 3, 5, 8))
    H = _pick(rng, H, (1, 2, 3, 4, 7))
    T = _pick(rng, T, (1, 1, 2, 3, 4, 6, 9))
    two_d = _pick(rng, two_d, (False, True)) if T == 1 else False
    state = _pick(rng, state, STATES)
    mask_kind = _pick(rng, mask_kind, MASKS)
    bias_2d = _pick(rng, bias_2d, (False, True))
    infer_peepholes = _pick(rng, infer_peepholes, (False, True))
    if tbptt == "random":
        tbptt = None if rng.random() < 0.5 else int(rng.integers(1, T + 3))

    scale = 1.0
    if activation in UNBOUNDED:
        scale = 0.5
    if activation == "cube":
        scale = 0.3
    for _attempt in range(200):
        s = scale * float(rng.choice([0.5, 1.0, 1.6]))
        x = rng.normal(size=(mb, n_in) if two_d else (mb, n_in, T))
        W = rng.normal(size=(n_in, 4 * H)) * (1.4 * s / np.sqrt(n_in))
        RW = rng.normal(size=(H, 4 * H + (3 if peephole else 0))) * (s / np.sqrt(H))
        if peephole:
            RW[:, 4 * H:] = rng.normal(size=(H, 3)) * 0.7
        b = rng.normal(size=(1, 4 * H) if bias_2d else (4 * H,)) * 0.5
        h0 = rng.normal(size=(mb, H)) * 0.5 if state in ("both", "h0") else None
        c0 = rng.normal(size=(mb, H)) if state in ("both", "c0") else None
        mask = None if mask_kind == "none" else R.contiguous_mask(rng, mb, T, mask_kind)
        eps = rng.normal(size=(mb, H, T))
        arrs = {k: (None if v is None else v.astype(dtype))
                for k, v in dict(x=x, W=W, RW=RW, b=b, h0=h0, c0=c0, mask=mask, eps=eps).items()}
        with np.errstate(over="ignore", invalid="ignore"):
            ref = R.ref_forward(arrs["x"], arrs["W"], arrs["RW"], arrs["b"], arrs["h0"], arrs["c0"],
                                peepholes=peephole, activation=activation, gate_activation=gate,
                                mask=arrs["mask"], forwards=forwards)
        if not np.all(np.isfinite(ref.output)) or np.max(np.abs(np.stack(ref.c))) > 1e3:
            scale *= 0.5
            continue
        if R.min_kink_distance(ref) < KINK_MARGIN[dtype]:
            continue
        break
    else:  # pragma: no cover - the generator must always find a usable draw
        raise RuntimeError("no usable random draw")
    kwargs = dict(h0=arrs["h0"], c0=arrs["c0"], activation=activation, gate_activation=gate,
                  mask=arrs["mask"], forwards=forwards,
                  peepholes=None if infer_peepholes else peephole)
    return dict(x=arrs["x"], W=arrs["W"], RW=arrs["RW"], b=arrs["b"], kwargs=kwargs,
                eps=arrs["eps"], tbptt=tbptt, ref=ref, dtype=dtype,
                desc=dict(activation=activation, gate=gate, peephole=peephole, forwards=forwards,
                          mb=mb, n_in=n_in, H=H, T=T, two_d=two_d, state=state, mask=mask_kind,
                          tbptt=tbptt, bias_2d=bias_2d, infer_peepholes=infer_peepholes))


def _inputs(case):
    d = dict(x=case["x"], W=case["W"], RW=case["RW"], b=case["b"], eps=case["eps"],
             h0=case["kwargs"]["h0"], c0=case["kwargs"]["c0"], mask=case["kwargs"]["mask"])
    return {k: v for k, v in d.items() if v is not None}


def assert_close(name, got, want, dtype, desc):
    got = np.asarray(got)
    assert got.shape == np.shape(want), f"{name}: shape {got.shape} != {np.shape(want)} ({desc})"
    err = R.rel_err(got, want, FLOOR[dtype])
    assert err <= TOL[dtype], f"{name}: relative error {err:.3g} > {TOL[dtype]:g} ({desc})"


def check_case(case, compute_dtype=None, grad_input_out=None, report=None):
    """Run lstmfast on the case and compare everything with the reference; also check that the
    inputs are not modified and that dtypes/shapes are as documented. grad_input_out: passed to
    lstm_backward; report (a dict): receives the backward pass's report."""
    dtype = compute_dtype or case["dtype"]
    desc = case["desc"]
    before = {k: np.array(v, copy=True) for k, v in _inputs(case).items()}
    fwd = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], for_backprop=True,
                                **case["kwargs"])
    grads = lstmfast.lstm_backward(fwd, case["eps"], tbptt_length=case["tbptt"],
                                   grad_input_out=grad_input_out, _report=report)
    assert grad_input_out is None or grads.input is grad_input_out
    ref = case["ref"]
    rgrads = R.ref_backward(ref, case["eps"], tbptt_length=case["tbptt"])

    for name in ("output", "last_h", "last_c"):
        got = getattr(fwd, name)
        assert got.dtype == dtype, f"{name} dtype {got.dtype} != {np.dtype(dtype)}"
        assert_close(name, got, getattr(ref, name), dtype, desc)
    for name in R.GRAD_NAMES:
        got = getattr(grads, name)
        assert got is not None, f"grads.{name} is None ({desc})"
        assert got.dtype == dtype, f"grads.{name} dtype {got.dtype} != {np.dtype(dtype)}"
        assert_close("grads." + name, got, getattr(rgrads, name), dtype, desc)
    assert grads.input.shape == np.shape(case["x"])
    assert grads.bias.shape == np.shape(case["b"])
    assert grads.input_weights.shape == np.shape(case["W"])
    assert grads.recurrent_weights.shape == np.shape(case["RW"])

    for k, v in _inputs(case).items():
        assert np.array_equal(v, before[k]), f"input {k} was modified ({desc})"
    return fwd, grads


# -------------------------------------------------------------------------------------------
# Randomized configurations
# -------------------------------------------------------------------------------------------

GRID = list(itertools.product(R.ACTIVATION_NAMES, R.GATE_ACTIVATION_NAMES, (True, False),
                              (True, False)))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation,gate,peephole,forwards", GRID)
def test_every_activation_gate_peephole_direction(activation, gate, peephole, forwards, dtype):
    case = draw_case(_seed("grid", activation, gate, peephole, forwards, np.dtype(dtype).name),
                     dtype, activation=activation, gate=gate, peephole=peephole,
                     forwards=forwards)
    check_case(case)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("seed", range(200))
def test_random_configuration(seed, dtype):
    check_case(draw_case(_seed("random", seed, np.dtype(dtype).name), dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("forwards", (True, False))
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("state", STATES)
def test_initial_state_and_mask(state, mask_kind, forwards, dtype):
    case = draw_case(_seed("state", state, mask_kind, forwards, np.dtype(dtype).name), dtype,
                     state=state, mask_kind=mask_kind, forwards=forwards, T=5, mb=3,
                     peephole=True, tbptt=None)
    check_case(case)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("peephole", (True, False))
@pytest.mark.parametrize("forwards", (True, False))
@pytest.mark.parametrize("k", (1, 2, 3, 5, 6, 7, 100))
def test_truncated_bptt(k, forwards, peephole, dtype):
    case = draw_case(_seed("tbptt", k, forwards, peephole, np.dtype(dtype).name), dtype, T=6,
                     forwards=forwards, peephole=peephole, tbptt=k, state="both")
    _, grads = check_case(case)
    if k < 6:  # stopped before step 0: no initial-state gradients, no dL/dx at early steps
        assert not np.any(grads.h0) and not np.any(grads.c0)
        early = range(0, 6 - k) if forwards else range(k, 6)
        assert not np.any(grads.input[:, :, list(early)])


SIZES = [  # mb, nIn, H, T, two_d
    (1, 1, 1, 1, False), (1, 1, 1, 1, True), (1, 3, 2, 1, True), (4, 2, 3, 1, True),
    (5, 3, 2, 1, False), (1, 5, 4, 9, False), (7, 1, 1, 5, False), (3, 4, 8, 3, False),
    (2, 3, 16, 2, False), (1, 2, 5, 12, False), (9, 6, 2, 4, False), (2, 7, 3, 1, True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("peephole", (True, False))
@pytest.mark.parametrize("mb,n_in,H,T,two_d", SIZES)
def test_sizes(mb, n_in, H, T, two_d, peephole, dtype):
    case = draw_case(_seed("sizes", mb, n_in, H, T, two_d, peephole, np.dtype(dtype).name), dtype,
                     mb=mb, n_in=n_in, H=H, T=T, two_d=two_d, peephole=peephole)
    fwd, _ = check_case(case)
    assert fwd.output.shape == (mb, H, T)       # 3-D always, also for 2-D input
    assert fwd.last_h.shape == fwd.last_c.shape == (mb, H)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bias_2d", (False, True))
def test_bias_shapes(bias_2d, dtype):
    case = draw_case(_seed("bias", bias_2d, np.dtype(dtype).name), dtype, bias_2d=bias_2d, T=4)
    _, grads = check_case(case)
    assert grads.bias.shape == ((1, 4 * case["desc"]["H"]) if bias_2d else (4 * case["desc"]["H"],))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("peephole", (True, False))
def test_peepholes_inferred_from_recurrent_weights(peephole, dtype):
    case = draw_case(_seed("infer", peephole, np.dtype(dtype).name), dtype, peephole=peephole,
                     infer_peepholes=True, T=4, state="both")
    assert case["kwargs"]["peepholes"] is None
    check_case(case)


def _grad_input_array(kind, shape, dtype):
    """None (lstm_backward's own, Fortran-ordered), or a caller's dL/dx array [mb, n_in, T]:
    the view of a time-major [T, mb, n_in] array (each example's features contiguous)."""
    if kind is None:
        return None
    mb, n_in, T = shape
    return np.full((T, mb, n_in), np.nan, dtype).transpose(1, 2, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threads", (1, 2))
@pytest.mark.parametrize("grad_out", (None, "time-major"))
@pytest.mark.parametrize("tbptt", (None, 4))
@pytest.mark.parametrize("mask_kind", MASKS + ("weights",))
def test_packed_kernel_minibatch_with_masks(mask_kind, tbptt, grad_out, threads, dtype):
    """Minibatches on the packed kernel, where the backward pass computes each step's dL/dx in
    its time loop and writes an unmasked step's straight into a Fortran-ordered dL/dx (the
    one it returns), else into its step-stacked buffer, copied out after the loop (a
    time-major grad_input_out): masked steps (also weighted by 0.5: there the mask of dL/dx is
    not the identity), steps before a truncation, one thread and a team of two (which splits
    each step's dL/dx by columns: n_in 70 is no multiple of the kernel's 6-column panels)."""
    mb, n_in, H, T = (16, 5, 8, 7) if threads == 1 else (32, 70, 64, 20)
    case = draw_case(_seed("packed", mask_kind, tbptt, grad_out, threads, np.dtype(dtype).name),
                     dtype, activation="tanh", gate="sigmoid", mb=mb, n_in=n_in, H=H, T=T,
                     two_d=False, mask_kind=mask_kind, tbptt=tbptt, state="both")
    report = {}
    previous = lstmfast.set_num_threads(threads)
    try:
        check_case(case, grad_input_out=_grad_input_array(grad_out, case["x"].shape, dtype),
                   report=report)
    finally:
        lstmfast.set_num_threads(previous)
    # (the portable path has no packed kernel: its passes call BLAS, on one thread)
    if lstmfast.kernels.simd_variant() != "portable":
        assert report["threads"] == threads


# -------------------------------------------------------------------------------------------
# Memory layouts, read-only inputs, mixed dtypes
# -------------------------------------------------------------------------------------------


def _relayout(a, layout, rng):
    if a is None:
        return None
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout in ("strided", "strided_readonly"):
        # a view with every axis strided (and negatively strided on the last axis)
        big = rng.normal(size=tuple(2 * n + 1 for n in a.shape)).astype(a.dtype)
        idx = tuple(slice(1, 2 * n + 1, 2) for n in a.shape[:-1]) + (slice(2 * a.shape[-1] - 1, None, -2),)
        view = big[idx]
        view[...] = a
        assert view.shape == a.shape
        assert a.size <= 1 or not (view.flags.c_contiguous or view.flags.f_contiguous)
        if layout == "strided_readonly":
            view.flags.writeable = False
        return view
    if layout == "readonly":
        r = np.array(a, copy=True)
        r.flags.writeable = False
        return r
    raise ValueError(layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ("C", "F", "strided", "readonly", "strided_readonly"))
@pytest.mark.parametrize("variant", range(4))
def test_layouts_and_readonly_inputs(layout, variant, dtype):
    case = draw_case(_seed("layout", layout, variant, np.dtype(dtype).name), dtype,
                     state="both", mask_kind=("random", "both", "none", "trailing")[variant],
                     T=(4, 1, 3, 5)[variant], mb=(3, 2, 1, 4)[variant], two_d=variant == 1)
    rng = np.random.default_rng(variant)
    for k in ("x", "W", "RW", "b", "eps"):
        case[k] = _relayout(case[k], layout, rng)
    for k in ("h0", "c0", "mask"):
        case["kwargs"][k] = _relayout(case["kwargs"][k], layout, rng)
    check_case(case)


@pytest.mark.parametrize("weights_dtype,other_dtype", [(np.float64, np.float32),
                                                       (np.float32, np.float64)])
def test_dtype_of_input_weights_decides(weights_dtype, other_dtype):
    """Other arrays are converted to the dtype of input_weights."""
    # drawn in float32, so that every value is exactly representable in both dtypes and the
    # reference (computed from these values) applies to either compute precision
    case = draw_case(_seed("mixed", np.dtype(weights_dtype).name), np.float32, state="both",
                     mask_kind="random", T=4, mb=3)
    case["W"] = case["W"].astype(weights_dtype)
    for k in ("x", "RW", "b", "eps"):
        case[k] = case[k].astype(other_dtype)
    for k in ("h0", "c0", "mask"):
        case["kwargs"][k] = case["kwargs"][k].astype(other_dtype)
    check_case(case, compute_dtype=weights_dtype)


def test_float64_data_rounded_when_weights_are_float32():
    """float32 weights with float64 data: the computation is float32, on the rounded data."""
    case = draw_case(_seed("rounding"), np.float64, T=3, mb=2, state="both", tbptt=None,
                     activation="tanh", gate="sigmoid")
    x64 = case["x"] + 1e-3 * np.random.default_rng(5).normal(size=case["x"].shape)
    W32 = case["W"].astype(np.float32)
    fwd = lstmfast.lstm_forward(x64, W32, case["RW"], case["b"], **case["kwargs"])
    kw = dict(case["kwargs"])
    for k in ("h0", "c0", "mask"):
        if kw[k] is not None:
            kw[k] = kw[k].astype(np.float32)
    ref = R.ref_forward(x64.astype(np.float32), W32, case["RW"].astype(np.float32),
                        case["b"].astype(np.float32), kw["h0"], kw["c0"],
                        peepholes=case["desc"]["peephole"], activation=kw["activation"],
                        gate_activation=kw["gate_activation"], mask=kw["mask"],
                        forwards=kw["forwards"])
    assert fwd.output.dtype == np.float32
    assert R.rel_err(fwd.output, ref.output) <= 1e-4


# -------------------------------------------------------------------------------------------
# No hidden state: backward twice, forward modes
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("gate", R.GATE_ACTIVATION_NAMES)
@pytest.mark.parametrize("variant", range(3))
def test_backward_does_not_alter_forward_record(variant, gate, dtype):
    case = draw_case(_seed("twice", variant, gate, np.dtype(dtype).name), dtype, gate=gate,
                     T=5, mb=3, state=("both", "none", "h0")[variant],
                     mask_kind=("random", "none", "both")[variant])
    fwd, g1 = check_case(case)
    saved = {k: np.array(getattr(fwd, k), copy=True) for k in ("output", "last_h", "last_c")}
    other = np.random.default_rng(99).normal(size=case["eps"].shape).astype(dtype)
    g_other = lstmfast.lstm_backward(fwd, other, tbptt_length=2)
    g2 = lstmfast.lstm_backward(fwd, case["eps"], tbptt_length=case["tbptt"])
    for name in R.GRAD_NAMES:
        assert np.array_equal(getattr(g1, name), getattr(g2, name)), f"grads.{name} changed"
    for k, v in saved.items():
        assert np.array_equal(getattr(fwd, k), v), f"fwd.{k} changed by lstm_backward"
    # and the intermediate call was itself right
    r_other = R.ref_backward(case["ref"], other, tbptt_length=2)
    for name in R.GRAD_NAMES:
        assert_close("grads." + name, getattr(g_other, name), getattr(r_other, name), dtype,
                     case["desc"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("seed", range(12))
def test_for_backprop_false_gives_the_same_output(seed, dtype):
    case = draw_case(_seed("inference", seed, np.dtype(dtype).name), dtype)
    a = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], for_backprop=True,
                              **case["kwargs"])
    b = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], for_backprop=False,
                              **case["kwargs"])
    tight = {np.float32: 1e-6, np.float64: 1e-14}[dtype]
    for name in ("output", "last_h", "last_c"):
        assert getattr(b, name).dtype == dtype
        assert R.rel_err(getattr(b, name), getattr(a, name), FLOOR[dtype]) <= tight, name
        assert_close(name, getattr(b, name), getattr(case["ref"], name), dtype, case["desc"])


# -------------------------------------------------------------------------------------------
# Properties that do not depend on the reference
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("seed", range(4))
def test_backwards_direction_is_forwards_on_reversed_time(seed, dtype):
    case = draw_case(_seed("reverse", seed, np.dtype(dtype).name), dtype, T=5, forwards=False,
                     mask_kind="random", state="both")
    kw = dict(case["kwargs"])
    back = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], for_backprop=True, **kw)
    gb = lstmfast.lstm_backward(back, case["eps"])
    kw["forwards"] = True
    kw["mask"] = kw["mask"][:, ::-1]
    fw = lstmfast.lstm_forward(case["x"][:, :, ::-1], case["W"], case["RW"], case["b"],
                               for_backprop=True, **kw)
    gf = lstmfast.lstm_backward(fw, case["eps"][:, :, ::-1])
    tol = TOL[dtype]
    assert R.rel_err(back.output, fw.output[:, :, ::-1], FLOOR[dtype]) <= tol
    assert R.rel_err(back.last_h, fw.last_h, FLOOR[dtype]) <= tol
    assert R.rel_err(gb.input, gf.input[:, :, ::-1], FLOOR[dtype]) <= tol
    for name in ("input_weights", "recurrent_weights", "bias", "h0", "c0"):
        assert R.rel_err(getattr(gb, name), getattr(gf, name), FLOOR[dtype]) <= tol, name


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("seed", range(4))
def test_zero_peephole_weights_equal_no_peepholes(seed, dtype):
    case = draw_case(_seed("zeropeep", seed, np.dtype(dtype).name), dtype, T=4, peephole=False,
                     state="both", mask_kind="both")
    kw = dict(case["kwargs"], peepholes=None)
    RW = case["RW"]
    RWp = np.concatenate([RW, np.zeros((RW.shape[0], 3), dtype)], axis=1)
    a = lstmfast.lstm_forward(case["x"], case["W"], RW, case["b"], for_backprop=True, **kw)
    b = lstmfast.lstm_forward(case["x"], case["W"], RWp, case["b"], for_backprop=True, **kw)
    ga = lstmfast.lstm_backward(a, case["eps"])
    gb = lstmfast.lstm_backward(b, case["eps"])
    tol = TOL[dtype]
    H = RW.shape[0]
    assert gb.recurrent_weights.shape == RWp.shape
    assert R.rel_err(b.output, a.output, FLOOR[dtype]) <= tol
    assert R.rel_err(gb.recurrent_weights[:, :4 * H], ga.recurrent_weights, FLOOR[dtype]) <= tol
    for name in ("input_weights", "bias", "input", "h0", "c0"):
        assert R.rel_err(getattr(gb, name), getattr(ga, name), FLOOR[dtype]) <= tol, name
    # the peephole columns do get a (generally nonzero) gradient
    assert np.any(gb.recurrent_weights[:, 4 * H:] != 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_absent_state_equals_zero_state(dtype):
    case = draw_case(_seed("zerostate", np.dtype(dtype).name), dtype, T=4, state="none",
                     peephole=True, mask_kind="random")
    kw = dict(case["kwargs"])
    a = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], for_backprop=True, **kw)
    mb, H = a.last_h.shape
    kw["h0"] = np.zeros((mb, H), dtype)
    kw["c0"] = np.zeros((mb, H), dtype)
    b = lstmfast.lstm_forward(case["x"], case["W"], case["RW"], case["b"], for_backprop=True, **kw)
    ga = lstmfast.lstm_backward(a, case["eps"])
    gb = lstmfast.lstm_backward(b, case["eps"])
    assert R.rel_err(a.output, b.output, FLOOR[dtype]) <= TOL[dtype]
    for name in R.GRAD_NAMES:
        assert R.rel_err(getattr(ga, name), getattr(gb, name), FLOOR[dtype]) <= TOL[dtype], name
