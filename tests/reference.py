"""Independent float64 NumPy reference of DL4J 0.9.1 ``LSTMHelpers``.

Written for the tests, from DL4J 0.9.1's ``LSTMHelpers.java``: ``ref_forward`` follows
``activateHelper`` and ``ref_backward`` follows ``backpropGradientHelper``, one time step at a
time, in the seed's order of operations, with the seed's names in the comments.  It is
deliberately plain (no BLAS tricks, no fused loops) so that it can be read against the Java.

Layout (DL4J): x is ``[minibatch, nIn, T]`` (or ``[minibatch, nIn]`` for T = 1), outputs are
``[minibatch, h, T]``.  Gate blocks of the ``4h`` columns are, in order, the block input (layer
activation, the seed's "i"), the forget gate ("f"), the output gate ("o") and the input gate
("g", the seed's "input modulation gate"); the peephole columns ``wFF, wOO, wGG`` follow the
``4h`` columns of the recurrent weights.

Things beyond the seed follow ``docs/design.md`` ("Semantics beyond the seed"):

* an absent ``h0`` / ``c0`` is zeros, and the gradients are exactly those for zeros (the seed's
  first-step special cases are the same thing; its stale forget delta when only one of the two is
  given is not reproduced);
* ``grads.c0 = m_0 * f_0 * nablaCellState_0 + wFF * delta_f_0 + wGG * delta_g_0`` (peephole terms
  only with peepholes; masked deltas), ``grads.h0 = delta_ifog_0 . RW[:, :4h]^T``, both zero when
  truncated BPTT stops before the first processed step.
"""

import zlib
from types import SimpleNamespace

import numpy as np

# ---------------------------------------------------------------------------------------------
# Activations: value and derivative with respect to the pre-activation z, with DL4J's
# definitions (libnd4j legacy ops), including the value of the derivative at the kinks.
# ---------------------------------------------------------------------------------------------

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946
LEAKYRELU_ALPHA = 0.01
RATIONALTANH_K = 1.41645


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _tanh(z):
    return np.tanh(z)


def _dtanh(z):
    t = np.tanh(z)
    return 1.0 - t * t


def _dsigmoid(z):
    s = _sigmoid(z)
    return s * (1.0 - s)


def _hardsigmoid(z):
    return np.minimum(1.0, np.maximum(0.0, 0.2 * z + 0.5))


def _dhardsigmoid(z):
    # 0.2 strictly inside (-2.5, 2.5), else 0
    return np.where((z > -2.5) & (z < 2.5), 0.2, 0.0)


def _softsign(z):
    return z / (1.0 + np.abs(z))


def _dsoftsign(z):
    d = 1.0 + np.abs(z)
    return 1.0 / (d * d)


def _relu(z):
    return np.maximum(0.0, z)


def _drelu(z):
    # RectifedLinear.derivative() = Step: 1 if z > 0 else 0
    return np.where(z > 0.0, 1.0, 0.0)


def _leakyrelu(z):
    return np.where(z < 0.0, LEAKYRELU_ALPHA * z, z)


def _dleakyrelu(z):
    # LeakyRELUDerivative: 1 if z >= 0 else alpha
    return np.where(z >= 0.0, 1.0, LEAKYRELU_ALPHA)


def _elu(z):
    # alpha = 1: z if z >= 0 else exp(z) - 1
    return np.where(z >= 0.0, z, np.expm1(np.minimum(z, 0.0)))


def _delu(z):
    return np.where(z >= 0.0, 1.0, np.exp(np.minimum(z, 0.0)))


def _selu(z):
    neg = SELU_LAMBDA * (SELU_ALPHA * np.exp(np.minimum(z, 0.0)) - SELU_ALPHA)
    return np.where(z > 0.0, SELU_LAMBDA * z, neg)


def _dselu(z):
    # SELUDerivative: lambda if z > 0 else lambda * alpha * exp(z)
    return np.where(z > 0.0, SELU_LAMBDA, SELU_LAMBDA * SELU_ALPHA * np.exp(np.minimum(z, 0.0)))


def _softplus(z):
    return np.logaddexp(0.0, z)


def _identity(z):
    return np.array(z, dtype=np.float64, copy=True)


def _didentity(z):
    return np.ones_like(z, dtype=np.float64)


def _hardtanh(z):
    return np.minimum(1.0, np.maximum(-1.0, z))


def _dhardtanh(z):
    # HardTanhDerivative: 1 for -1 <= z <= 1 (inclusive), else 0
    return np.where((z >= -1.0) & (z <= 1.0), 1.0, 0.0)


def _cube(z):
    return z * z * z


def _dcube(z):
    return 3.0 * z * z


def _rectifiedtanh(z):
    return np.maximum(0.0, np.tanh(z))


def _drectifiedtanh(z):
    # RectifiedTanhDerivative: 1 - tanh(z)^2 if z > 0 else 0
    t = np.tanh(z)
    return np.where(z > 0.0, 1.0 - t * t, 0.0)


def _rationaltanh(z):
    # 1.7159 * t(2z/3), t(y) = sgn(y) * (1 - 1 / (1 + |y| + y^2 + 1.41645 y^4))
    y = 2.0 * z / 3.0
    a = 1.0 + np.abs(y) + y * y + RATIONALTANH_K * y ** 4
    return 1.7159 * np.sign(y) * (1.0 - 1.0 / a)


def _drationaltanh(z):
    # d t / d y = sgn(y) * a'(y) / a^2 with a' = sgn(y) + 2y + 4k y^3, i.e.
    # (1 + sgn(y) (2y + 4k y^3)) / a^2 (continuous, = 1 at y = 0)
    y = 2.0 * z / 3.0
    a = 1.0 + np.abs(y) + y * y + RATIONALTANH_K * y ** 4
    dt = (1.0 + np.sign(y) * (2.0 * y + 4.0 * RATIONALTANH_K * y ** 3)) / (a * a)
    return 1.7159 * (2.0 / 3.0) * dt


ACTIVATIONS = {
    "tanh": (_tanh, _dtanh),
    "sigmoid": (_sigmoid, _dsigmoid),
    "hardsigmoid": (_hardsigmoid, _dhardsigmoid),
    "softsign": (_softsign, _dsoftsign),
    "relu": (_relu, _drelu),
    "leakyrelu": (_leakyrelu, _dleakyrelu),
    "elu": (_elu, _delu),
    "selu": (_selu, _dselu),
    "softplus": (_softplus, _sigmoid),
    "identity": (_identity, _didentity),
    "hardtanh": (_hardtanh, _dhardtanh),
    "cube": (_cube, _dcube),
    "rectifiedtanh": (_rectifiedtanh, _drectifiedtanh),
    "rationaltanh": (_rationaltanh, _drationaltanh),
}
ACTIVATION_NAMES = tuple(ACTIVATIONS)
GATE_ACTIVATION_NAMES = ("sigmoid", "hardsigmoid")

# Points where the first derivative jumps (finite differences and float32 rounding must stay
# away from them).  elu (alpha 1), softsign and rationaltanh have continuous first derivatives.
KINKS = {
    "relu": (0.0,),
    "leakyrelu": (0.0,),
    "selu": (0.0,),
    "rectifiedtanh": (0.0,),
    "hardtanh": (-1.0, 1.0),
    "hardsigmoid": (-2.5, 2.5),
}


def activation(name, z):
    return ACTIVATIONS[name][0](np.asarray(z, dtype=np.float64))


def activation_derivative(name, z):
    return ACTIVATIONS[name][1](np.asarray(z, dtype=np.float64))


def _gate_derivative(gate_name, z, a):
    """The seed's gate derivative: a (1 - a) from the stored activation for sigmoid gates
    (``TimesOneMinus``), ``gateActivationFn.backprop(z, .)`` at the stored pre-activation
    otherwise."""
    if gate_name == "sigmoid":
        return a * (1.0 - a)
    return activation_derivative(gate_name, z)


# ---------------------------------------------------------------------------------------------
# Forward pass: activateHelper
# ---------------------------------------------------------------------------------------------


def _f64(a):
    return None if a is None else np.array(a, dtype=np.float64, copy=True)


def ref_forward(x, W, RW, b, h0=None, c0=None, peepholes=None, activation="tanh",
                gate_activation="sigmoid", mask=None, forwards=True, projection_weights=None,
                peephole_weights=None):
    """Forward pass of the seed.  Returns a namespace with ``output`` [mb, h, T], ``last_h``,
    ``last_c`` [mb, h] and the per-time-step record the backward pass needs (indexed by the
    time index, not the processing index, as the seed's ``toReturn.*[time]``).

    Beyond the seed, ``projection_weights`` Wp [h, P] makes it an LSTMP (the LSTM with a
    recurrent projection layer, nn.LSTM's proj_size): each step's unit output r = o * act(c)
    (masked) becomes h = r . Wp [mb, P], which is output and fed back (RW then [P, 4h], h0
    [mb, P]); the peepholes are then ``peephole_weights`` [h, 3] (wFF, wOO, wGG)."""
    if activation not in ACTIVATIONS:
        raise ValueError(activation)
    if gate_activation not in GATE_ACTIVATION_NAMES:
        raise ValueError(gate_activation)
    x = _f64(x)
    is_2d = x.ndim == 2
    if is_2d:  # edge case T = 1, [m, nIn] is [m, nIn, 1]
        x = x[:, :, None]
    W, RW = _f64(W), _f64(RW)
    b_shape = np.shape(b)
    b = _f64(b).reshape(-1)
    mb, n_in, T = x.shape
    Wp = _f64(projection_weights)
    H = RW.shape[0] if Wp is None else Wp.shape[0]
    assert W.shape == (n_in, 4 * H) and b.shape == (4 * H,)
    if Wp is not None:
        peepholes = peephole_weights is not None
    elif peepholes is None:
        peepholes = RW.shape[1] == 4 * H + 3
    m = None if mask is None else _f64(mask).reshape(mb, T)
    afn = ACTIVATIONS[activation][0]
    gfn = ACTIVATIONS[gate_activation][0]

    rw_ifog = RW[:, :4 * H]                      # recurrentWeightsIFOG
    if peepholes:
        peep = RW[:, 4 * H:] if Wp is None else _f64(peephole_weights)
        w_ff = peep[:, 0]                        # wFFTranspose (as a row, broadcast over rows)
        w_oo = peep[:, 1]                        # wOOTranspose
        w_gg = peep[:, 2]                        # wGGTranspose

    h_given = _f64(h0)
    c_given = _f64(c0)
    P = H if Wp is None else Wp.shape[1]
    h_prev = np.zeros((mb, P)) if h_given is None else h_given      # prevOutputActivations
    c_prev = np.zeros((mb, H)) if c_given is None else c_given      # prevMemCellState

    rec = {k: [None] * T for k in ("iz", "ia", "fz", "fa", "oz", "oa", "gz", "ga",
                                   "c", "c_act", "h", "r")}
    output = np.zeros((mb, P, T))
    for it in range(T):
        t = it if forwards else T - it - 1
        # ifogActivations = x_t . W + h_prev . RW_ifog + b
        ifog = x[:, :, t] @ W
        ifog = ifog + h_prev @ rw_ifog
        ifog = ifog + b[None, :]
        # block input (layer activation)
        iz = ifog[:, 0:H].copy()
        ia = afn(iz)
        # forget gate, peephole on the previous cell state
        fz = ifog[:, H:2 * H].copy()
        if peepholes:
            fz = fz + c_prev * w_ff[None, :]
        fa = gfn(fz)
        # input ("modulation") gate, peephole on the previous cell state
        gz = ifog[:, 3 * H:4 * H].copy()
        if peepholes:
            gz = gz + c_prev * w_gg[None, :]
        ga = gfn(gz)
        # memory cell state
        c = c_prev * fa + ga * ia
        # output gate, peephole on the current (unmasked) cell state
        oz = ifog[:, 2 * H:3 * H].copy()
        if peepholes:
            oz = oz + c * w_oo[None, :]
        oa = gfn(oz)
        # unit outputs
        c_act = afn(c)                           # currMemoryCellActivation (unmasked c)
        h = c_act * oa
        if m is not None:                        # mask h and c (c is carried forward masked)
            h = h * m[:, t][:, None]
            c = c * m[:, t][:, None]
        r = h
        if Wp is not None:                       # the projection (LSTMP)
            h = r @ Wp
        for k, v in (("iz", iz), ("ia", ia), ("fz", fz), ("fa", fa), ("oz", oz), ("oa", oa),
                     ("gz", gz), ("ga", ga), ("c", c), ("c_act", c_act), ("h", h), ("r", r)):
            rec[k][t] = v
        output[:, :, t] = h
        h_prev, c_prev = h, c

    return SimpleNamespace(
        output=output, last_h=h_prev.copy(), last_c=c_prev.copy(),
        x=x, is_2d=is_2d, W=W, RW=RW, b=b, b_shape=b_shape, H=H, T=T, mb=mb, n_in=n_in,
        h0=h_given, c0=c_given, peepholes=peepholes, activation=activation,
        gate_activation=gate_activation, mask=m, forwards=forwards, Wp=Wp,
        peep=peep if peepholes else None, **rec)


# ---------------------------------------------------------------------------------------------
# Backward pass: backpropGradientHelper
# ---------------------------------------------------------------------------------------------


def ref_backward(fwd, epsilon, tbptt_length=None, grad_last_h=None, grad_last_c=None):
    """Backward pass of the seed for ``epsilon`` = dL/d(output) [mb, h, T]; ``grad_last_h``,
    ``grad_last_c`` [mb, h] (beyond the seed): dL/d(last_h), dL/d(last_c), which join the last
    processed step's dL/dh and cell error (masked as last_h and last_c are).

    Returns a namespace with ``input_weights``, ``recurrent_weights``, ``bias`` (same shapes as
    the parameters), ``input`` (dL/dx, the seed's epsilonNext, shaped like x), ``h0``, ``c0``."""
    eps = _f64(epsilon)
    if eps.ndim == 2:
        eps = eps[:, :, None]
    mb, H, T, n_in = fwd.mb, fwd.H, fwd.T, fwd.n_in
    Wp = fwd.Wp
    P = H if Wp is None else Wp.shape[1]
    assert eps.shape == (mb, P, T)
    W, RW, x, m = fwd.W, fwd.RW, fwd.x, fwd.mask
    peep = fwd.peepholes
    rw_ifog = RW[:, :4 * H]                      # wIFOG
    if peep:
        w_ff, w_oo, w_gg = fwd.peep[:, 0], fwd.peep[:, 1], fwd.peep[:, 2]
    wp_grad = None if Wp is None else np.zeros_like(Wp)
    peep_grad = np.zeros((H, 3))
    dafn = ACTIVATIONS[fwd.activation][1]
    gate = fwd.gate_activation
    h_first = np.zeros((mb, P)) if fwd.h0 is None else fwd.h0
    c_first = np.zeros((mb, H)) if fwd.c0 is None else fwd.c0

    def time_of(it):
        return it if fwd.forwards else T - it - 1

    end_idx = 0 if tbptt_length is None else max(0, T - int(tbptt_length))

    iw_grad = np.zeros_like(W)                   # iwGradientsOut
    rw_grad = np.zeros_like(RW)                  # rwGradientsOut (IFOG, then FF, OO, GG)
    b_grad = np.zeros(4 * H)                     # bGradientsOut
    eps_next = np.zeros((mb, n_in, T))           # epsilonNext

    delta_next = None                            # deltaifogNext (masked, from step it + 1)
    nabla_next = None                            # nablaCellStateNext (NOT masked)
    for it in range(T - 1, end_idx - 1, -1):
        t = time_of(it)
        is_last = it == T - 1
        # cell-state error from the next step's forget / input-gate peepholes
        if not is_last and peep:
            nabla = delta_next[:, H:2 * H] * w_ff[None, :] + delta_next[:, 3 * H:] * w_gg[None, :]
        else:
            nabla = np.zeros((mb, H))
        if it == 0:
            c_prev, h_prev = c_first, h_first    # fwdPass.prevMemCell / prevAct
        else:
            tp = time_of(it - 1)
            c_prev, h_prev = fwd.c[tp], fwd.h[tp]
        c_curr = fwd.c[t]                        # memCellState[time] (masked)
        # nablaOut = epsilon_t + deltaifogNext . wIFOG^T
        nabla_out = eps[:, :, t].copy()
        m_t = 1.0 if m is None else m[:, t][:, None]
        if is_last and grad_last_h is not None:
            nabla_out = nabla_out + m_t * _f64(grad_last_h)
        if not is_last:
            nabla_out = nabla_out + delta_next @ rw_ifog.T
        if Wp is not None:                       # through the projection h = r . Wp
            wp_grad += fwd.r[t].T @ nabla_out
            nabla_out = nabla_out @ Wp.T
        # output gate delta
        delta_o = nabla_out * fwd.c_act[t] * _gate_derivative(gate, fwd.oz[t], fwd.oa[t])
        # memory cell error: afn'(stored, masked c) * oa * nablaOut
        nabla = nabla + dafn(c_curr) * (fwd.oa[t] * nabla_out)
        if peep:
            nabla = nabla + delta_o * w_oo[None, :]
        if not is_last:
            nabla = nabla + fwd.fa[time_of(it + 1)] * nabla_next
        if is_last and grad_last_c is not None:
            nabla = nabla + m_t * _f64(grad_last_c)
        # forget gate delta (zero when c_prev is zero, which covers the seed's t = 0 case)
        delta_f = _gate_derivative(gate, fwd.fz[t], fwd.fa[t]) * nabla * c_prev
        # input ("modulation") gate delta
        delta_g = _gate_derivative(gate, fwd.gz[t], fwd.ga[t]) * fwd.ia[t] * nabla
        # block input delta
        delta_i = dafn(fwd.iz[t]) * (fwd.ga[t] * nabla)
        delta = np.concatenate([delta_i, delta_f, delta_o, delta_g], axis=1)
        if m is not None:
            delta = delta * m[:, t][:, None]
        x_t = x[:, :, t]
        iw_grad += x_t.T @ delta
        rw_grad[:, :4 * H] += h_prev.T @ delta
        if peep:
            peep_grad[:, 0] += np.sum(delta[:, H:2 * H] * c_prev, axis=0)
            peep_grad[:, 2] += np.sum(delta[:, 3 * H:] * c_prev, axis=0)
            peep_grad[:, 1] += np.sum(delta[:, 2 * H:3 * H] * c_curr, axis=0)
        b_grad += np.sum(delta, axis=0)
        e = delta @ W.T
        if m is not None:
            e = e * m[:, t][:, None]
        eps_next[:, :, t] = e
        delta_next, nabla_next = delta, nabla

    dh0 = np.zeros((mb, P))
    dc0 = np.zeros((mb, H))
    if end_idx == 0:
        t0 = time_of(0)
        m0 = 1.0 if m is None else m[:, t0][:, None]
        dc0 = m0 * fwd.fa[t0] * nabla_next
        if peep:
            dc0 = dc0 + delta_next[:, H:2 * H] * w_ff[None, :] + delta_next[:, 3 * H:] * w_gg[None, :]
        dh0 = delta_next @ rw_ifog.T

    if peep and Wp is None:
        rw_grad[:, 4 * H:] = peep_grad
    return SimpleNamespace(
        input_weights=iw_grad, recurrent_weights=rw_grad, bias=b_grad.reshape(fwd.b_shape),
        input=eps_next[:, :, 0] if fwd.is_2d else eps_next, h0=dh0, c0=dc0,
        projection_weights=wp_grad, peephole_weights=peep_grad if peep and Wp is not None else None)


# ---------------------------------------------------------------------------------------------
# Per-example lengths (beyond the seed): each example run alone on its own valid steps
# ---------------------------------------------------------------------------------------------


def ref_forward_lengths(x, W, RW, b, lengths, h0=None, c0=None, **options):
    """The forward pass with ``lengths`` [mb] (PackedSequence's semantics): example m is the
    sequence x[m, :, :lengths[m]] run alone (in reverse with ``forwards=False``) from its own
    h0[m], c0[m]; its outputs sit at times 0..lengths[m]-1, zeros after; last_h / last_c are its
    final state (h0 / c0 when the length is 0). ``options`` as ref_forward's (no mask)."""
    x = _f64(x)
    mb, _, T = x.shape
    H, P = np.shape(W)[1] // 4, np.shape(RW)[0]        # P: the size of h (a projection's)
    h_all = np.zeros((mb, P)) if h0 is None else _f64(h0)
    c_all = np.zeros((mb, H)) if c0 is None else _f64(c0)
    output = np.zeros((mb, P, T))
    last_h, last_c = h_all.copy(), c_all.copy()
    runs = []
    for m, length in enumerate(int(n) for n in lengths):
        run = None
        if length > 0:
            run = ref_forward(x[m:m + 1, :, :length], W, RW, b, h_all[m:m + 1], c_all[m:m + 1],
                              **options)
            output[m, :, :length] = run.output[0]
            last_h[m], last_c[m] = run.last_h[0], run.last_c[0]
        runs.append(run)
    return SimpleNamespace(output=output, last_h=last_h, last_c=last_c, runs=runs, T=T, H=H,
                           W=_f64(W), RW=_f64(RW), b_shape=np.shape(b), x_shape=x.shape,
                           Wp=_f64(options.get("projection_weights")),
                           peep=_f64(options.get("peephole_weights")))


def ref_backward_lengths(fwd, epsilon, grad_last_h=None, grad_last_c=None):
    """The backward pass of ref_forward_lengths: each example's ref_backward on its own steps,
    the parameter gradients summed over the examples."""
    eps = _f64(epsilon)
    mb, P, T = eps.shape
    glh = np.zeros((mb, P)) if grad_last_h is None else _f64(grad_last_h)
    glc = np.zeros((mb, fwd.H)) if grad_last_c is None else _f64(grad_last_c)
    out = SimpleNamespace(input_weights=np.zeros_like(fwd.W),
                          recurrent_weights=np.zeros_like(fwd.RW),
                          bias=np.zeros(fwd.b_shape), input=np.zeros(fwd.x_shape),
                          h0=glh.copy(), c0=glc.copy(),
                          projection_weights=None if fwd.Wp is None else np.zeros_like(fwd.Wp),
                          peephole_weights=None if fwd.peep is None else np.zeros_like(fwd.peep))
    for m, run in enumerate(fwd.runs):
        if run is None:
            continue             # length 0: last_h, last_c are h0, c0
        g = ref_backward(run, eps[m:m + 1, :, :run.T], grad_last_h=glh[m:m + 1],
                         grad_last_c=glc[m:m + 1])
        out.input_weights += g.input_weights
        out.recurrent_weights += g.recurrent_weights
        out.bias += g.bias
        if fwd.Wp is not None:
            out.projection_weights += g.projection_weights
        if fwd.peep is not None:
            out.peephole_weights += g.peephole_weights
        out.input[m, :, :run.T] = g.input[0]
        out.h0[m], out.c0[m] = g.h0[0], g.c0[0]
    return out


# ---------------------------------------------------------------------------------------------
# Helpers shared by the tests
# ---------------------------------------------------------------------------------------------

GRAD_NAMES = ("input_weights", "recurrent_weights", "bias", "input", "h0", "c0")


def stable_seed(*parts):
    """A seed from the test case's parameters that is the same in every process (``hash()`` of
    a str, or of a tuple holding one or None, changes from one interpreter to the next)."""
    return zlib.crc32(repr(parts).encode())


def rel_err(a, b, floor=1e-300):
    """Norm-based relative error max|a - b| / max(max|b|, floor)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape {a.shape} != {b.shape}")
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return np.inf
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor))


def min_kink_distance(fwd):
    """Smallest distance of any pre-activation at which a derivative is evaluated to a point
    where that derivative jumps (inf if none).  Cell states that are exactly zero because of the
    mask are skipped: they are exact in every precision."""
    best = np.inf
    for k in KINKS.get(fwd.activation, ()):
        for t in range(fwd.T):
            best = min(best, float(np.min(np.abs(fwd.iz[t] - k))))
            c = fwd.c[t]
            nz = c[c != 0.0]
            if nz.size:
                best = min(best, float(np.min(np.abs(nz - k))))
    for k in KINKS.get(fwd.gate_activation, ()):
        for t in range(fwd.T):
            for z in (fwd.fz[t], fwd.oz[t], fwd.gz[t]):
                best = min(best, float(np.min(np.abs(z - k))))
    return best


def contiguous_mask(rng, mb, T, kind):
    """0/1 mask [mb, T]: 'leading' zeros, 'trailing' zeros, 'both', per example (possibly none),
    'random' (arbitrary 0/1 pattern), 'ones'; or 'weights': 0, 0.5 and 1 at random (the seed
    multiplies by the mask wherever it masks, so a mask may weight steps)."""
    m = np.ones((mb, T))
    if kind == "ones":
        return m
    if kind == "weights":
        m = rng.choice([0.0, 0.5, 1.0, 1.0], size=(mb, T))
        m[0, 0] = 0.5
        return m
    if kind == "random":
        return (rng.random((mb, T)) < 0.65).astype(np.float64)
    for r in range(mb):
        lead = int(rng.integers(0, T)) if kind in ("leading", "both") else 0
        trail = int(rng.integers(0, T - lead + 1)) if kind in ("trailing", "both") else 0
        m[r, :lead] = 0.0
        if trail:
            m[r, T - trail:] = 0.0
    # make sure the kind is represented: at least one example gets a zero when T > 1
    if kind in ("leading", "both") and T > 1 and m.all():
        m[0, 0] = 0.0
    if kind in ("trailing", "both") and T > 1 and m.all():
        m[-1, -1] = 0.0
    # single examples may be fully masked, but not the whole minibatch
    if not m.any():
        m[0, 0 if kind == "trailing" else (T - 1) // 2] = 1.0
    return m
