"""lstmfast.torch: LSTM, GravesLSTM, GravesBidirectionalLSTM against the NumPy reference.

Values are checked against torch.nn.LSTM (LSTM), against the independent NumPy reference of
the seed in tests/reference.py (peepholes, both directions), and gradients with
torch.autograd.gradcheck in float64 for every module, batch-first and time-major, with and
without an initial state.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lstmfast  # noqa: E402
import lstmfast.torch as lt  # noqa: E402
from lstmfast import _team  # noqa: E402
from lstmfast.torch import _function, _threads  # noqa: E402
from torch.func import functional_call  # noqa: E402

from reference import ref_backward, ref_forward  # noqa: E402

F64 = torch.float64
MODULES = [lt.LSTM, lt.GravesLSTM, lt.GravesBidirectionalLSTM]


def make(cls, n_in=3, h=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    module = cls(n_in, h, dtype=kwargs.pop("dtype", F64), **kwargs)
    with torch.no_grad():   # every parameter random, biases too
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module


def directions(module):
    return 2 if module.bidirectional else 1


def kernel_layout(module, d, tensors=None):
    """(W, RW, b) of direction d in the kernels' layout, from the module's parameters or from
    tensors shaped like them (gradients: the bias gradient is bias_ih's)."""
    params = module._layer_parameters(0, d)
    if tensors is not None:
        params = [None if p is None else tensors[p] for p in params]
        params[3] = None if params[2] is None else torch.zeros_like(params[2])
    return _function.kernel_weights(*params)


def inputs(module, T=4, mb=2, batch_first=False, seed=1, state=True):
    g = torch.Generator().manual_seed(seed)
    dtype = module.weight_ih_l0.dtype
    shape = (mb, T, module.input_size) if batch_first else (T, mb, module.input_size)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    if not state:
        return x, None
    D = directions(module)
    h0 = torch.randn(D, mb, module.hidden_size, generator=g, dtype=dtype)
    c0 = torch.randn(D, mb, module.hidden_size, generator=g, dtype=dtype)
    return x, (h0, c0)


def reference_outputs(module, x, state, batch_first):
    """(out [T, mb, h] or [mb, T, h], h_n, c_n) from tests/reference.py."""
    xd = x.permute(0, 2, 1) if batch_first else x.permute(1, 2, 0)
    outs, hs, cs = [], [], []
    for d in range(directions(module)):
        W, RW, b = kernel_layout(module, d)
        kwargs = {}
        if state is not None:
            kwargs = dict(h0=state[0][d].numpy(), c0=state[1][d].numpy())
        r = ref_forward(xd.numpy(), W, RW, b, forwards=d == 0, activation=module.activation,
                        gate_activation=module.gate_activation, **kwargs)
        outs.append(r.output)
        hs.append(r.last_h)
        cs.append(r.last_c)
    out = sum(outs)
    out = out.transpose(0, 2, 1) if batch_first else out.transpose(2, 0, 1)
    return out, np.stack(hs), np.stack(cs)


# ----------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_equals_nn_lstm_values_and_gradients(batch_first, with_state):
    torch.manual_seed(3)
    ref = torch.nn.LSTM(3, 4, batch_first=batch_first, dtype=F64)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.5)
    module = lt.LSTM.from_torch(ref)
    assert module.batch_first == batch_first
    x, state = inputs(module, T=5, mb=3, batch_first=batch_first, state=with_state)
    x.requires_grad_(True)
    if state is not None:
        state = tuple(s.clone().requires_grad_(True) for s in state)
    out_r, (h_r, c_r) = ref(x, state)
    out, (h_n, c_n) = module(x, state)
    assert out.shape == out_r.shape and h_n.shape == h_r.shape == (1, 3, 4)
    torch.testing.assert_close(out, out_r, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(h_n, h_r, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(c_n, c_r, rtol=1e-12, atol=1e-13)
    # gradients (out and h_n in the loss: the kernels' path)
    wrt = [x] + (list(state) if state is not None else [])
    g_r = torch.autograd.grad((out_r ** 2).sum() + h_r.sum() * 0.3, wrt + [ref.weight_ih_l0])
    g = torch.autograd.grad((out ** 2).sum() + h_n.sum() * 0.3, wrt + [module.weight_ih_l0])
    for a, b in zip(g, g_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_values_match_reference(cls, batch_first, with_state):
    module = make(cls, batch_first=batch_first)
    x, state = inputs(module, T=5, mb=3, batch_first=batch_first, state=with_state)
    out, (h_n, c_n) = module(x, state)
    out_r, h_r, c_r = reference_outputs(module, x, state, batch_first)
    np.testing.assert_allclose(out.detach().numpy(), out_r, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.detach().numpy(), h_r, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n.detach().numpy(), c_r, rtol=1e-10, atol=1e-12)
    # inference (no graph kept) gives the same
    with torch.no_grad():
        out2, _ = module(x, state)
    assert out2.grad_fn is None
    torch.testing.assert_close(out2, out.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("cls", MODULES)
def test_gradients_match_reference(cls):
    """Parameter and input gradients against tests/reference.py's backward pass."""
    module = make(cls)
    x, (h0, c0) = inputs(module, T=5, mb=2)
    x.requires_grad_(True)
    h0.requires_grad_(True)
    c0.requires_grad_(True)
    out, _ = module(x, (h0, c0))
    eps = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(9))
    params = list(module.parameters())
    gx, gh0, gc0, *gp = torch.autograd.grad(out, [x, h0, c0] + params, eps)
    gp = dict(zip(params, gp))
    xd = x.detach().permute(1, 2, 0).numpy()
    eps_d = eps.permute(1, 2, 0).numpy()
    gx_ref = 0
    for d in range(directions(module)):
        W, RW, b = kernel_layout(module, d)
        r = ref_forward(xd, W, RW, b, h0=h0[d].detach().numpy(), c0=c0[d].detach().numpy(),
                        forwards=d == 0)
        rb = ref_backward(r, eps_d)
        gW, gRW, gb = kernel_layout(module, d, gp)
        np.testing.assert_allclose(gW, rb.input_weights, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(gRW, rb.recurrent_weights, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(gb, rb.bias.ravel(), rtol=1e-9, atol=1e-11)
        b_ih, b_hh = module._layer_parameters(0, d)[2:4]
        torch.testing.assert_close(gp[b_ih], gp[b_hh], rtol=0, atol=0)
        gx_ref = gx_ref + rb.input
        np.testing.assert_allclose(gh0[d].numpy(), rb.h0, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(gc0[d].numpy(), rb.c0, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gx.permute(1, 2, 0).numpy(), gx_ref, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# gradcheck


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_gradcheck(cls, batch_first, with_state):
    module = make(cls, n_in=3, h=2, batch_first=batch_first)
    x, state = inputs(module, T=3, mb=2, batch_first=batch_first, state=with_state)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    x.requires_grad_(True)
    state = () if not with_state else tuple(s.clone().requires_grad_(True) for s in state)

    def f(x, *rest):
        hx = (rest[0], rest[1]) if with_state else None
        out, (h_n, c_n) = functional_call(module, dict(zip(names, rest[len(state):])), (x, hx))
        return out, h_n, c_n

    args = (x, *state, *params)
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_functional_peepholes_reverse():
    g = torch.Generator().manual_seed(4)
    T, mb, n_in, h = 3, 2, 2, 2
    x = torch.randn(mb, T, n_in, dtype=F64, generator=g, requires_grad=True)
    W = (0.5 * torch.randn(n_in, 4 * h, dtype=F64, generator=g)).requires_grad_(True)
    RW = (0.5 * torch.randn(h, 4 * h + 3, dtype=F64, generator=g)).requires_grad_(True)
    b = (0.5 * torch.randn(4 * h, dtype=F64, generator=g)).requires_grad_(True)
    h0 = torch.randn(mb, h, dtype=F64, generator=g, requires_grad=True)
    c0 = torch.randn(mb, h, dtype=F64, generator=g, requires_grad=True)

    def f(x, W, RW, b, h0, c0):
        out, (h_n, c_n) = lt.lstm(x, W, RW, b, h0, c0, batch_first=True, forwards=False,
                                  activation="softsign", gate_activation="sigmoid")
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, W, RW, b, h0, c0), eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# the c_n path


def test_c_n_gradient_goes_through_the_kernels_and_is_exact():
    """A loss on c_n (an encoder's state handed on) reaches lstm_backward's grad_last_c; the
    input gradient equals nn.LSTM's, without any warning."""
    torch.manual_seed(5)
    ref = torch.nn.LSTM(3, 4, dtype=F64)
    module = lt.LSTM.from_torch(ref)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    out_r, (h_r, c_r) = ref(x)
    out, (h_n, c_n) = module(x)
    g_r = torch.autograd.grad(out_r.sum() + (c_r ** 2).sum() + h_r.sum(), [x])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = torch.autograd.grad(out.sum() + (c_n ** 2).sum() + h_n.sum(), [x])
    torch.testing.assert_close(g[0], g_r[0], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# layout, conversion, misc


def test_parameter_layout_is_the_lstmfast_layers():
    for cls, layer_cls in ((lt.LSTM, lstmfast.LSTM), (lt.GravesLSTM, lstmfast.GravesLSTM),
                           (lt.GravesBidirectionalLSTM, lstmfast.GravesBidirectionalLSTM)):
        layer = layer_cls(3, 4, dtype=np.float64, seed=7)
        module = cls.from_layer(layer)
        names = [n for n, _ in module.named_parameters()]
        assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
        assert ("weight_peephole_l0" in names) == (cls is not lt.LSTM)
        views = [a for d in range(directions(module)) for a in kernel_layout(module, d)]
        for v, ref in zip(views, layer.param_table().values()):
            np.testing.assert_array_equal(v, ref)
        back = module.to_layer()
        assert type(back) is layer_cls
        np.testing.assert_array_equal(back.params, layer.params)
        # same function as the NumPy layer
        x = np.random.default_rng(0).standard_normal((2, 3, 5))
        out, _ = module(torch.from_numpy(x.transpose(2, 0, 1).copy()))
        np.testing.assert_allclose(out.detach().numpy().transpose(1, 2, 0), layer.forward(x),
                                   rtol=1e-12, atol=1e-13)


def test_no_bias_and_init():
    torch.manual_seed(0)
    m = lt.GravesLSTM(3, 4, bias=False, dtype=F64)
    assert sum(p.numel() for p in m.parameters()) == 3 * 16 + 4 * 19
    assert [n for n, _ in m.named_parameters()] == ["weight_ih_l0", "weight_hh_l0",
                                                    "weight_peephole_l0"]
    x = torch.randn(4, 2, 3, dtype=F64)
    out, _ = m(x)
    layer = m.to_layer()
    np.testing.assert_allclose(out.detach().numpy().transpose(1, 2, 0),
                               layer.forward(x.permute(1, 2, 0).numpy()), rtol=1e-12, atol=1e-13)
    out.sum().backward()
    assert all(p.grad.shape == p.shape for p in m.parameters())
    # DL4J init: forget-gate bias 1 (nn.LSTM's block order i, f, g, o), other biases 0
    m = lt.GravesBidirectionalLSTM(3, 4)
    assert m.weight_ih_l0.dtype == torch.get_default_dtype()
    for b in (m.bias_ih_l0, m.bias_ih_l0_reverse):
        assert b[4:8].eq(1).all() and b[:4].eq(0).all() and b[8:].eq(0).all()
    assert not m.bias_hh_l0.any() and not m.bias_hh_l0_reverse.any()


def test_unbatched_and_float32():
    module = make(lt.GravesBidirectionalLSTM, dtype=torch.float32)
    x = torch.randn(5, 3)
    h0 = torch.randn(2, 4)
    c0 = torch.randn(2, 4)
    out, (h_n, c_n) = module(x, (h0, c0))
    assert out.shape == (5, 4) and h_n.shape == (2, 4) and out.dtype == torch.float32
    out_b, (h_b, _) = module(x.unsqueeze(1), (h0.unsqueeze(1), c0.unsqueeze(1)))
    torch.testing.assert_close(out, out_b.squeeze(1))
    torch.testing.assert_close(h_n, h_b.squeeze(1))
    m64 = lt.GravesBidirectionalLSTM.from_layer(module.to_layer().__class__(3, 4, seed=0))
    assert m64.weight_ih_l0.dtype == torch.float32   # the layer's dtype (float32 default)


def test_strided_input_read_in_place_gives_the_same_values():
    module = make(lt.LSTM)
    x, _ = inputs(module, T=6, mb=3, batch_first=True, state=False)
    out, _ = module(x.transpose(0, 1))               # a strided time-major view
    out2, _ = module(x.transpose(0, 1).contiguous())
    torch.testing.assert_close(out, out2, rtol=0, atol=0)


def test_training_in_a_model():
    torch.manual_seed(0)
    lstm = lt.GravesLSTM(3, 8, batch_first=True, dtype=F64)
    head = torch.nn.Linear(8, 1, dtype=F64)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=0.02)
    x = torch.randn(16, 10, 3, dtype=F64)
    y = x.sum(dim=(1, 2)).unsqueeze(1) * 0.1
    losses = []
    for _ in range(60):
        opt.zero_grad()
        out, (h_n, _) = lstm(x)
        loss = torch.nn.functional.mse_loss(head(h_n[0]), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_errors():
    with pytest.raises(lt.UnsupportedError, match="CPU"):
        lt.LSTM(3, 4, device="meta")
    with pytest.raises(lt.UnsupportedError, match="float32 or torch.float64"):
        lt.LSTM(3, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="activation"):
        lt.LSTM(3, 4, activation="swish")
    with pytest.raises(TypeError, match="lstmfast.GravesLSTM"):
        lt.GravesLSTM.from_layer(lstmfast.LSTM(3, 4, seed=0))
    with pytest.raises(ValueError, match="set_blas_threads"):
        lt.set_blas_threads(0)


def test_blas_thread_settings_give_identical_results():
    module = make(lt.GravesLSTM, n_in=8, h=16)
    x, _ = inputs(module, T=10, mb=8, state=False)
    x.requires_grad_(True)
    results = []
    previous = lt.get_blas_threads()
    try:
        for setting in (1, None, 2):
            lt.set_blas_threads(setting)
            out, _ = module(x)
            g = torch.autograd.grad(out.pow(2).sum(), [x, *module.parameters()])
            results.append((out.detach(), *g))
    finally:
        lt.set_blas_threads(previous)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if lt._scipy_blas_controller() is not None:   # the limit is undone after each call
        before = [i["num_threads"] for i in lt._scipy_blas_controller().info()]
        lt.set_blas_threads(1)
        try:
            module(x)
        finally:
            lt.set_blas_threads(previous)
        assert [i["num_threads"] for i in lt._scipy_blas_controller().info()] == before


def test_team_threads_setting_decides_the_kernels_threads(monkeypatch):
    """"auto" runs the kernels' time loops on torch's own OpenMP workers while its pool has more
    than one thread (one thread where the runtime is not found: its workers spin after each
    torch operation); an integer or None (lstmfast's own setting) overrides it. The kernels'
    report says how many threads a pass used, and lstmfast's own workers took no job for a pass
    on torch's; the results are the same bits whatever the setting."""
    for bad in (0, 9, 1.5, True, "two"):
        with pytest.raises(ValueError, match="set_team_threads"):
            lt.set_team_threads(bad)
    assert lt.get_team_threads() == "auto"
    reports = []
    real_forward = _function.lstm_forward

    def reporting_forward(*args, **kwargs):
        report = {}
        result = real_forward(*args, _report=report, **kwargs)
        reports.append(report["threads"])
        return result

    monkeypatch.setattr(_function, "lstm_forward", reporting_forward)
    torch.manual_seed(0)
    module = lt.LSTM(64, 128)          # each step large enough for a team of two
    x = torch.randn(10, 32, 64)
    previous = lstmfast.get_num_threads(), torch.get_num_threads()
    outputs = []
    try:
        lstmfast.set_num_threads(2)
        torch.set_num_threads(2)
        on_openmp = _threads._openmp_runtime() is not None
        for torch_threads, setting, want, own_jobs in (
                (2, "auto", 2 if on_openmp else 1, not on_openmp and None),
                (1, "auto", 2, True), (2, None, 2, True), (2, 2, 2, True), (1, 1, 1, False)):
            torch.set_num_threads(torch_threads)
            lt.set_team_threads(setting)
            reports.clear()
            jobs = _team.jobs_published()
            with torch.no_grad():
                outputs.append(module(x)[0])
            assert reports == [want], (torch_threads, setting, reports)
            if own_jobs is not None:
                assert (_team.jobs_published() > jobs) == own_jobs, (torch_threads, setting)
        # "auto" on torch's workers: no more threads than lstmfast's own setting
        lt.set_team_threads("auto")
        for own, torch_threads, want in ((1, 2, 1), (2, 4, 2 if on_openmp else 1)):
            lstmfast.set_num_threads(own)
            torch.set_num_threads(torch_threads)
            reports.clear()
            with torch.no_grad():
                outputs.append(module(x)[0])
            assert reports == [want], (own, torch_threads, reports)
    finally:
        lt.set_team_threads("auto")
        lstmfast.set_num_threads(previous[0])
        torch.set_num_threads(previous[1])
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


def test_blas_limit_in_effect_during_calls_and_restored_after_concurrent_use(monkeypatch):
    controller = lt._scipy_blas_controller()
    if controller is None:
        pytest.skip("threadpoolctl is not installed")
    import threading
    before = [i["num_threads"] for i in controller.info()]
    seen = []
    real_forward = _function.lstm_forward

    def spying_forward(*args, **kwargs):
        seen.append(max(i["num_threads"] for i in controller.info()))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(_function, "lstm_forward", spying_forward)
    module = make(lt.GravesLSTM, n_in=8, h=16)
    x, _ = inputs(module, T=10, mb=8, state=False)
    previous = lt.set_blas_threads(1)
    errors = []

    def work():
        try:
            for _ in range(20):
                out, _ = module(x)
                out.sum().backward()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        lt.set_blas_threads(previous)
    assert not errors
    assert seen and set(seen) == {1}
    assert [i["num_threads"] for i in controller.info()] == before
