"""Central-difference gradient checks in float64, the way DL4J's GradientCheckUtil does them:
eps = 1e-6, max relative error 1e-3, where the relative error of an entry is
|analytic - numeric| / (|analytic| + |numeric|), and an entry whose absolute error is below
1e-8 passes whatever its relative error (DL4J's minAbsoluteError).

The loss is L = sum(output * R) for a fixed random R that is zero at masked steps; masks are
contiguous zeros at the start and/or end of each sequence (what an RnnOutputLayer with a label
mask gives), where the seed's masked backward pass is the exact gradient.  Every parameter,
the input and the initial state (h0, c0; "absent" means the gradient at zeros) are checked.

The same check is run on lstmfast and on the reference implementation (tests/reference.py), so
the reference the other tests rely on is itself verified by finite differences.
"""

import itertools

import numpy as np
import pytest

import lstmfast
import reference as R
from gradcheck import EPS, MAX_REL_ERROR, MIN_ABS_ERROR, check_gradient

KINK_MARGIN = 1e-3        # pre-activations this close to a derivative jump are redrawn
STATES = ("none", "both", "h0", "c0")
MASKS = ("none", "leading", "trailing", "both")


def _lstmfast_forward(p, cfg, for_backprop=False):
    return lstmfast.lstm_forward(p["x"], p["W"], p["RW"], p["b"], h0=p["h0"], c0=p["c0"],
                                 activation=cfg["activation"], gate_activation=cfg["gate"],
                                 mask=cfg["mask"], forwards=cfg["forwards"],
                                 for_backprop=for_backprop)


def _ref_forward(p, cfg):
    return R.ref_forward(p["x"], p["W"], p["RW"], p["b"], p["h0"], p["c0"],
                         activation=cfg["activation"], gate_activation=cfg["gate"],
                         mask=cfg["mask"], forwards=cfg["forwards"])


def make_config(seed, *, peephole, gate, mask_kind, forwards, state, activation="tanh",
                mb=2, n_in=3, H=3, T=4):
    rng = np.random.default_rng(seed)
    scale = 0.6 if activation in ("cube", "identity", "relu", "leakyrelu", "elu", "selu",
                                  "softplus") else 1.0
    for _ in range(100):
        p = dict(
            x=rng.normal(size=(mb, n_in, T)),
            W=rng.normal(size=(n_in, 4 * H)) * scale,
            RW=rng.normal(size=(H, 4 * H + (3 if peephole else 0))) * scale,
            b=rng.normal(size=(4 * H,)) * 0.5,
            h0=rng.normal(size=(mb, H)) * 0.5 if state in ("both", "h0") else None,
            c0=rng.normal(size=(mb, H)) if state in ("both", "c0") else None,
        )
        cfg = dict(activation=activation, gate=gate, forwards=forwards, seed=seed,
                   mask=None if mask_kind == "none" else R.contiguous_mask(rng, mb, T, mask_kind))
        ref = _ref_forward(p, cfg)
        if R.min_kink_distance(ref) > KINK_MARGIN:
            break
    else:  # pragma: no cover
        raise RuntimeError("no draw away from the kinks")
    Rl = rng.normal(size=(mb, H, T))
    if cfg["mask"] is not None:
        Rl = Rl * cfg["mask"][:, None, :]        # no loss at masked steps
    return p, cfg, Rl


GRAD_OF = dict(x="input", W="input_weights", RW="recurrent_weights", b="bias", h0="h0", c0="c0")


def check_gradients(loss, analytic, params, mb, H):
    """tests/gradcheck.py's check of every entry of every parameter.  ``analytic`` maps the
    gradient names to arrays; ``params`` are the float64 arrays the loss reads (absent h0/c0 are
    checked as zeros).  Returns (number of entries checked, failures as (name, index, analytic,
    numeric, relative error), largest |analytic| seen)."""
    params = {k: (np.zeros((mb, H)) if v is None else np.array(v, dtype=np.float64, copy=True))
              for k, v in params.items()}
    failures = []
    n = 0
    biggest = 0.0
    for name, arr in params.items():
        ana_all = np.asarray(analytic[GRAD_OF[name]], dtype=np.float64)
        assert ana_all.shape == arr.shape, (name, ana_all.shape, arr.shape)
        found = check_gradient(lambda: loss(params), arr, ana_all, eps=EPS, max_rel_error=MAX_REL_ERROR,
                               min_abs_error=MIN_ABS_ERROR)
        failures += [(name, np.unravel_index(i, arr.shape), a, num, rel) for i, a, num, rel in found]
        n += arr.size
        biggest = max(biggest, float(np.max(np.abs(ana_all), initial=0.0)))
    return n, failures, biggest


def _gradcheck_lstmfast(p, cfg, Rl):
    fwd = _lstmfast_forward(p, cfg, for_backprop=True)
    grads = lstmfast.lstm_backward(fwd, Rl)
    analytic = {k: getattr(grads, k) for k in R.GRAD_NAMES}

    def loss(q):
        return float(np.sum(_lstmfast_forward(q, cfg).output * Rl))

    mb, H = Rl.shape[:2]
    return check_gradients(loss, analytic, p, mb, H)


def _gradcheck_reference(p, cfg, Rl):
    grads = R.ref_backward(_ref_forward(p, cfg), Rl)
    analytic = {k: getattr(grads, k) for k in R.GRAD_NAMES}

    def loss(q):
        return float(np.sum(_ref_forward(q, cfg).output * Rl))

    mb, H = Rl.shape[:2]
    return check_gradients(loss, analytic, p, mb, H)


def _report(failures):
    return "\n".join(f"{name}{list(idx)}: analytic {a:.10g} numeric {n:.10g} rel {r:.3g}"
                     for name, idx, a, n, r in failures[:20])


CONFIGS = list(itertools.product((True, False), R.GATE_ACTIVATION_NAMES, MASKS, (True, False),
                                 STATES))


@pytest.mark.parametrize("peephole,gate,mask_kind,forwards,state", CONFIGS)
def test_gradients_lstmfast(peephole, gate, mask_kind, forwards, state):
    p, cfg, Rl = make_config(R.stable_seed(peephole, gate, mask_kind, forwards, state), peephole=peephole,
                             gate=gate, mask_kind=mask_kind, forwards=forwards, state=state)
    n, failures, biggest = _gradcheck_lstmfast(p, cfg, Rl)
    assert n == sum(np.size(v) if v is not None else Rl.shape[0] * Rl.shape[1]
                    for v in p.values())
    assert biggest > 1e-3            # the check is not vacuous
    assert not failures, f"{len(failures)} of {n} entries fail (seed {cfg['seed']}):\n{_report(failures)}"


@pytest.mark.parametrize("activation", R.ACTIVATION_NAMES)
@pytest.mark.parametrize("gate", R.GATE_ACTIVATION_NAMES)
def test_gradients_lstmfast_every_activation(activation, gate):
    p, cfg, Rl = make_config(R.stable_seed("act", activation, gate), peephole=True, gate=gate,
                             mask_kind="both", forwards=True, state="both",
                             activation=activation, mb=2, n_in=2, H=2, T=3)
    n, failures, biggest = _gradcheck_lstmfast(p, cfg, Rl)
    assert biggest > 1e-3
    assert not failures, f"{len(failures)} of {n} entries fail (seed {cfg['seed']}):\n{_report(failures)}"


# The reference itself: every option (fewer combinations: it is slower)
REF_CONFIGS = [c for i, c in enumerate(CONFIGS) if i % 3 == 0]


@pytest.mark.parametrize("peephole,gate,mask_kind,forwards,state", REF_CONFIGS)
def test_gradients_reference(peephole, gate, mask_kind, forwards, state):
    p, cfg, Rl = make_config(R.stable_seed("ref", peephole, gate, mask_kind, forwards, state),
                             peephole=peephole, gate=gate, mask_kind=mask_kind,
                             forwards=forwards, state=state, mb=2, n_in=2, H=2, T=4)
    n, failures, biggest = _gradcheck_reference(p, cfg, Rl)
    assert biggest > 1e-3
    assert not failures, f"{len(failures)} of {n} entries fail (seed {cfg['seed']}):\n{_report(failures)}"


@pytest.mark.parametrize("activation", R.ACTIVATION_NAMES)
def test_gradients_reference_every_activation(activation):
    p, cfg, Rl = make_config(R.stable_seed("refact", activation), peephole=True, gate="sigmoid",
                             mask_kind="both", forwards=False, state="both",
                             activation=activation, mb=2, n_in=2, H=2, T=3)
    n, failures, biggest = _gradcheck_reference(p, cfg, Rl)
    assert biggest > 1e-3
    assert not failures, f"{len(failures)} of {n} entries fail (seed {cfg['seed']}):\n{_report(failures)}"


@pytest.mark.parametrize("activation", R.ACTIVATION_NAMES)
def test_reference_activation_derivatives(activation):
    z = np.linspace(-4.0, 4.0, 801) + 1.234e-3
    f, df = R.ACTIVATIONS[activation]
    num = (f(z + EPS) - f(z - EPS)) / (2 * EPS)
    near = np.zeros(z.shape, bool)
    for k in R.KINKS.get(activation, ()):
        near |= np.abs(z - k) < 1e-4
    np.testing.assert_allclose(df(z)[~near], num[~near], rtol=1e-6, atol=1e-8)


def test_checker_detects_a_wrong_gradient():
    """The checker itself can fail: a 1% error in one entry of one gradient is caught."""
    p, cfg, Rl = make_config(R.stable_seed("negative"), peephole=True, gate="sigmoid", mask_kind="none",
                             forwards=True, state="both", mb=1, n_in=2, H=2, T=3)
    grads = R.ref_backward(_ref_forward(p, cfg), Rl)
    analytic = {k: np.array(getattr(grads, k), copy=True) for k in R.GRAD_NAMES}
    i = np.unravel_index(np.argmax(np.abs(analytic["recurrent_weights"])),
                         analytic["recurrent_weights"].shape)
    analytic["recurrent_weights"][i] *= 1.01

    def loss(q):
        return float(np.sum(_ref_forward(q, cfg).output * Rl))

    _, failures, _ = check_gradients(loss, analytic, p, 1, 2)
    assert [(f[0], tuple(f[1])) for f in failures] == [("RW", i)]


def test_checker_detects_non_finite_values():
    """A NaN or infinite gradient entry, or a loss that is NaN, fails the check (a relative
    error of NaN compares false with any bound)."""
    values = np.array([0.3, -0.2, 0.5])
    good = 2 * values
    assert check_gradient(lambda: float(np.sum(values ** 2)), values, good) == []
    for bad_index, bad in ((1, np.nan), (2, np.inf)):
        analytic = good.copy()
        analytic[bad_index] = bad
        assert [f[0] for f in check_gradient(lambda: float(np.sum(values ** 2)), values, analytic)] == [bad_index]
    failures = check_gradient(lambda: float("nan"), values, good)
    assert [f[0] for f in failures] == [0, 1, 2]


def test_checker_tolerances_are_dl4js():
    """Below min_abs_error an entry passes whatever its relative error; above it, a relative
    error past max_rel_error fails."""
    values = np.array([1.0])
    tiny = check_gradient(lambda: 1e-12 * float(values[0]), values, np.array([2e-12]))
    assert tiny == []                                      # abs error 1e-12 < 1e-8
    off = check_gradient(lambda: float(values[0]), values, np.array([1.003]))
    assert [f[0] for f in off] == [0] and off[0][3] > MAX_REL_ERROR
