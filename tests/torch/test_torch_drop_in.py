"""lstmfast.torch.LSTM as a drop-in for torch.nn.LSTM: constructor, stacked and bidirectional
layers, dropout, state dicts, unbatched and empty inputs, autograd and errors, each checked
against the real nn.LSTM (float64 within 1e-10; float32 within a small multiple of nn.LSTM's
own float32 error against float64)."""

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")

import lstmfast.torch as lt  # noqa: E402
from torch import nn  # noqa: E402

F64 = torch.float64


def pair(*args, dtype=F64, seed=0, **kwargs):
    """(nn.LSTM, lstmfast.torch.LSTM) with the same parameters."""
    torch.manual_seed(seed)
    ref = nn.LSTM(*args, dtype=dtype, **kwargs)
    ours = lt.LSTM(*args, dtype=dtype, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def run(module, x, hx, loss_weights):
    """Outputs and the gradients of a loss using out, h_n and c_n with respect to x, hx and
    every parameter."""
    out, (h_n, c_n) = module(x, hx)
    wo, wh, wc = loss_weights
    loss = (out * wo).sum() + (h_n * wh).sum() + (c_n ** 2 * wc).sum()
    wrt = [x] + ([] if hx is None else list(hx)) + list(module.parameters())
    return [out, h_n, c_n] + list(torch.autograd.grad(loss, wrt))


def make_inputs(ref, T, mb, dtype, with_state, seed=1, batched=True):
    g = torch.Generator().manual_seed(seed)
    D = 2 if ref.bidirectional else 1
    shape = (mb, T) if ref.batch_first else (T, mb)
    if not batched:
        shape = (T,)
    x = torch.randn(*shape, ref.input_size, generator=g, dtype=dtype, requires_grad=True)
    hx = None
    if with_state:
        lead = (ref.num_layers * D, mb) if batched else (ref.num_layers * D,)
        hx = tuple(torch.randn(*lead, ref.hidden_size, generator=g, dtype=dtype,
                               requires_grad=True) for _ in range(2))
    return x, hx


def loss_weights_like(ref, x, hx):
    with torch.no_grad():
        out, (h_n, c_n) = ref(x, hx)
    g = torch.Generator().manual_seed(7)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (out, h_n, c_n)]


def assert_all_close(got, expected, atol):
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, i
        err = (a - b).abs().max().item() if a.numel() else 0.0
        assert err <= atol, f"item {i}: max error {err:.3g} > {atol:.3g}"


def float32_errors(got32, ref32, truth64):
    """Max abs error of ours and of nn.LSTM's float32 results against float64, per item."""
    return [((a.double() - t).abs().max().item(), (r.double() - t).abs().max().item(),
             t.abs().max().item()) for a, r, t in zip(got32, ref32, truth64) if t.numel()]


def assert_float32_like_nn(got32, ref32, truth64):
    eps32 = torch.finfo(torch.float32).eps
    for i, (ours, theirs, scale) in enumerate(float32_errors(got32, ref32, truth64)):
        assert ours <= 4 * max(theirs, eps32 * scale), \
            f"item {i}: float32 error {ours:.3g}, nn.LSTM's {theirs:.3g}"


# ----------------------------------------------------------------------------------------------
# values and gradients


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_float64_outputs_and_all_gradients_equal_nn_lstm(num_layers, bidirectional,
                                                          batch_first, bias, with_state):
    ref, ours = pair(3, 5, num_layers, bias, batch_first, 0.0, bidirectional)
    x, hx = make_inputs(ref, T=6, mb=4, dtype=F64, with_state=with_state)
    w = loss_weights_like(ref, x, hx)
    assert_all_close(run(ours, x, hx, w), run(ref, x, hx, w), 1e-10)


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_float32_error_as_small_as_nn_lstm_own(num_layers, bidirectional):
    ref32, ours32 = pair(6, 16, num_layers, bidirectional=bidirectional, dtype=torch.float32)
    ref64 = copy.deepcopy(ref32).double()
    x64, hx64 = make_inputs(ref64, T=30, mb=5, dtype=F64, with_state=True)
    x32 = x64.detach().float().requires_grad_(True)
    hx32 = tuple(s.detach().float().requires_grad_(True) for s in hx64)
    w64 = loss_weights_like(ref64, x64, hx64)
    w32 = [t.float() for t in w64]
    truth = run(ref64, x64, hx64, w64)
    assert_float32_like_nn(run(ours32, x32, hx32, w32), run(ref32, x32, hx32, w32), truth)


def test_unbatched_input_and_state():
    ref, ours = pair(3, 4, 2, bidirectional=True)
    for with_state in (False, True):
        x, hx = make_inputs(ref, T=5, mb=None, dtype=F64, with_state=with_state, batched=False)
        w = loss_weights_like(ref, x, hx)
        got, expected = run(ours, x, hx, w), run(ref, x, hx, w)
        assert got[0].shape == (5, 8) and got[1].shape == (4, 4)
        assert_all_close(got, expected, 1e-10)


@pytest.mark.parametrize("with_state", [False, True])
def test_empty_batch_gives_empty_outputs_and_zero_gradients(with_state):
    ref, ours = pair(3, 4, 2, bidirectional=True)
    x, hx = make_inputs(ref, T=5, mb=0, dtype=F64, with_state=with_state)
    w = loss_weights_like(ref, x, hx)
    got, expected = run(ours, x, hx, w), run(ref, x, hx, w)
    assert got[0].shape == (5, 0, 8) and got[1].shape == (4, 0, 4)
    assert_all_close(got, expected, 0.0)


def test_dropout_between_layers_uses_nn_lstm_mask_under_the_same_seed():
    for bidirectional in (False, True):
        ref, ours = pair(3, 5, 3, dropout=0.4, bidirectional=bidirectional, batch_first=True)
        x, hx = make_inputs(ref, T=6, mb=4, dtype=F64, with_state=True)
        w = loss_weights_like(ref, x, hx)
        torch.manual_seed(11)
        expected = run(ref, x, hx, w)
        torch.manual_seed(11)
        got = run(ours, x, hx, w)
        assert_all_close(got, expected, 1e-10)
        # the mask really dropped something (else this test could not tell)
        ref.eval()
        assert (ref(x, hx)[0] - expected[0]).abs().max() > 1e-3
        ours.eval()   # no dropout in evaluation mode
        assert_all_close(run(ours, x, hx, w), run(ref, x, hx, w), 1e-10)


def test_positional_arguments_in_nn_lstm_order():
    args = (3, 5, 2, False, True, 0.25, True, 0)
    ref, ours = nn.LSTM(*args), lt.LSTM(*args)
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):
        assert getattr(ours, name) == getattr(ref, name), name
    assert isinstance(ours, nn.LSTM)
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
def test_packed_sequence_gives_nn_lstm_outputs_final_states_and_gradients(enforce_sorted,
                                                                          with_state, dtype):
    """h_n/c_n at each sequence's own last valid step (first, in the reverse direction), the
    gradients arriving there, sorted or not."""
    lengths = [7, 5, 5, 2, 1] if enforce_sorted else [2, 7, 1, 5, 5]
    ref, ours = pair(3, 4, 2, bidirectional=True, dtype=dtype)
    x, hx = make_inputs(ref, T=7, mb=5, dtype=dtype, with_state=with_state)
    results = []
    for module in (ref, ours):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        out, (h_n, c_n) = module(packed, hx)
        assert isinstance(out, nn.utils.rnn.PackedSequence)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        g = torch.Generator().manual_seed(5)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=dtype)).sum()
                   for t in (out.data, h_n, c_n))
        wrt = [x] + ([] if hx is None else list(hx)) + list(module.parameters())
        results.append([out.data, h_n, c_n] + list(torch.autograd.grad(loss, wrt)))
    tol = 1e-10 if dtype == F64 else 1e-5
    assert_all_close(results[1], results[0], tol)



@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence_dropout_uses_nn_lstm_mask_under_the_same_seed(bidirectional):
    """nn.LSTM drops out the packed data between layers ([sum of lengths, features]), so a
    mask drawn on the padded [T, mb, features] tensor would be another one."""
    lengths = [2, 6, 1, 4]
    ref, ours = pair(3, 5, 3, dropout=0.4, bidirectional=bidirectional)
    x, hx = make_inputs(ref, T=6, mb=4, dtype=F64, with_state=True)
    results = []
    for module in (ref, ours):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        torch.manual_seed(11)
        out, (h_n, c_n) = module(packed, hx)
        g = torch.Generator().manual_seed(5)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=F64)).sum()
                   for t in (out.data, h_n, c_n))
        wrt = [x] + list(hx) + list(module.parameters())
        results.append([out.data, h_n, c_n] + list(torch.autograd.grad(loss, wrt)))
    assert_all_close(results[1], results[0], 1e-10)
    # the mask really dropped something (else this test could not tell)
    ref.eval()
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    assert (ref(packed, hx)[0].data - results[0][0]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------
# parameters


def test_state_dicts_load_strictly_both_ways():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, 2, bidirectional=True)
    ours = lt.LSTM(3, 5, 2, bidirectional=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [[tuple(p.shape) for p in layer] for layer in ours.all_weights] == \
        [[tuple(p.shape) for p in layer] for layer in ref.all_weights]
    assert ours._flat_weights_names == ref._flat_weights_names
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters()))
    ours.load_state_dict(ref.state_dict())                 # strict by default
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-6)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-6)
    ours.flatten_parameters()                              # a no-op on the CPU, as nn.LSTM's


def test_writes_through_data_are_seen_by_the_next_call():
    """Parameters changed in place by any route (optimizer, .data, load_state_dict) reach the
    kernels at the next call: nothing stale is cached."""
    ref, ours = pair(3, 4)
    x = torch.randn(5, 2, 3, dtype=F64)
    ours(x)
    for module in (ref, ours):
        module.weight_hh_l0.data.mul_(-1.5)
        module.bias_ih_l0.data.add_(0.25)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-12)
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    ours(x)[0].sum().backward()
    opt.step()
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-12)


def test_peephole_parameters_are_named_and_zero_peepholes_are_nn_lstm():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, 2, bidirectional=True, dtype=F64)
    ours = lt.LSTM(3, 4, 2, bidirectional=True, dtype=F64, peepholes=True)
    names = [n for n, _ in ours.named_parameters()]
    assert names[:len(ref.state_dict())] == list(ref.state_dict())
    peep = ["weight_peephole_l0", "weight_peephole_l0_reverse", "weight_peephole_l1",
            "weight_peephole_l1_reverse"]
    assert names[len(ref.state_dict()):] == peep
    assert all(getattr(ours, n).shape == (3, 4) for n in peep)
    missing = ours.load_state_dict(ref.state_dict(), strict=False).missing_keys
    assert missing == peep
    x = torch.randn(5, 2, 3, dtype=F64)
    assert (ours(x)[0] - ref(x)[0]).abs().max() > 1e-3      # the random peepholes count
    with torch.no_grad():
        for n in peep:
            getattr(ours, n).zero_()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-12)
    g = lt.GravesLSTM(3, 4, 2)
    assert g.peepholes and [n for n, _ in g.named_parameters()][-2:] == peep[::2]


def test_graves_bidirectional_sums_the_two_graves_directions():
    torch.manual_seed(2)
    bi = lt.GravesBidirectionalLSTM(3, 4, dtype=F64)
    fwd = lt.GravesLSTM(3, 4, dtype=F64)
    both = lt.GravesLSTM(3, 4, bidirectional=True, dtype=F64)
    both.load_state_dict(bi.state_dict())
    fwd.load_state_dict({k: v for k, v in bi.state_dict().items() if "reverse" not in k})
    x = torch.randn(5, 2, 3, dtype=F64)
    out, (h_n, c_n) = bi(x)
    out_cat, (h_cat, c_cat) = both(x)
    assert out.shape == (5, 2, 4)
    torch.testing.assert_close(out, out_cat[..., :4] + out_cat[..., 4:], rtol=0, atol=1e-14)
    torch.testing.assert_close(out_cat[..., :4], fwd(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(h_n, h_cat, rtol=0, atol=0)
    torch.testing.assert_close(c_n, c_cat, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# autograd


def test_output_is_contiguous_like_nn_lstm_and_in_place_ops_work():
    for batch_first in (False, True):
        ref, ours = pair(3, 4, 2, batch_first=batch_first)
        x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
        out_r, out = ref(x)[0], ours(x)[0]
        assert out.is_contiguous() == out_r.is_contiguous() == (not batch_first)
        assert out.stride() == out_r.stride()
        grads = []
        for o in (out_r, out):
            o.mul_(3.0).add_(1.0)
            grads.append(torch.autograd.grad((o ** 2).sum(), [x, ours.weight_hh_l1
                                                             if o is out else ref.weight_hh_l1]))
        assert_all_close(grads[1], grads[0], 1e-10)
    out = ours(torch.randn(5, 2, 3, dtype=F64))[0].transpose(0, 1)
    assert out.contiguous().view(-1, 4).shape == (10, 4)


@pytest.mark.parametrize("compiled_op", [False, True])
@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l0", "weight_hh_l1_reverse"])
def test_weights_changed_in_place_before_backward_are_refused_like_nn_lstm(name, compiled_op):
    """The backward pass reads the weights where the forward pass read them (no private copy):
    changed in place in between, autograd refuses, as it does for nn.LSTM, instead of mixing
    the forward pass's activations with other weights. compiled_op: through the custom op
    (the path torch.compile and torch.jit.trace take)."""
    modules = pair(3, 4, 2, bidirectional=True)
    for module in modules:
        x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
        if compiled_op and module is modules[1]:
            from lstmfast.torch import _ops
            args = (x, module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0,
                    module.bias_hh_l0, None, None, None, None, None, True, "tanh", "sigmoid",
                    True)
            out = _ops.lstm_layer(*args)[0]
            if name not in ("weight_ih_l0", "weight_hh_l0"):
                continue
        else:
            out = module(x)[0]
        with torch.no_grad():
            getattr(module, name).mul_(1.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


@pytest.mark.parametrize("mode", ["no_grad", "frozen parameters"])
def test_forward_mode_ad_is_refused_instead_of_dropping_the_tangents(mode):
    """A pass with nothing needing a gradient skips autograd's Function; dual tensors
    (forward-mode AD, which the kernels do not implement) must still meet the Function's
    refusal rather than come out as plain tensors without their tangents."""
    import torch.autograd.forward_ad as forward_ad
    ref, ours = pair(3, 4)
    x = torch.randn(5, 2, 3, dtype=F64)
    tangent = torch.randn_like(x)
    for module in (ref, ours):
        module.requires_grad_(mode == "no_grad")
    with forward_ad.dual_level(), torch.set_grad_enabled(mode != "no_grad"):
        expected = forward_ad.unpack_dual(ref(forward_ad.make_dual(x, tangent))[0]).tangent
        assert expected is not None
        with pytest.raises(NotImplementedError, match="jvp"):
            ours(forward_ad.make_dual(x, tangent))


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True},
                                    {"proj_size": 2}])
def test_functional_call_uses_the_parameters_it_is_given(kwargs):
    """torch.func.functional_call swaps parameters in for one call: the module computes with
    them (outputs and their gradients as nn.LSTM's), and with its own again afterwards."""
    from torch.func import functional_call
    ref, ours = pair(3, 4, **kwargs)
    g = torch.Generator().manual_seed(5)
    swapped = {name: (torch.randn(p.shape, generator=g, dtype=F64) * 0.5).requires_grad_()
               for name, p in ref.named_parameters()}
    x = torch.randn(5, 2, 3, dtype=F64, generator=g)
    results = []
    for module in (ref, ours):
        out, (h_n, c_n) = functional_call(module, swapped, (x,))
        loss = (out ** 2).sum() + h_n.sum() + (c_n ** 3).sum()
        results.append([out, h_n, c_n] + list(torch.autograd.grad(loss, list(swapped.values()))))
    assert_all_close(results[1], results[0], 1e-10)
    # its own parameters again on the next call
    assert_all_close(ours(x)[0], ref(x)[0], 1e-10)
    assert not torch.allclose(ours(x)[0], results[1][0])


def test_parameters_of_mixed_dtypes_are_refused_like_nn_lstm():
    ref, ours = pair(3, 4, dtype=torch.float32)
    x = torch.randn(5, 2, 3)
    for module in (ref, ours):
        module.weight_hh_l0.data = module.weight_hh_l0.data.double()
        with pytest.raises(RuntimeError) as refused:
            module(x)
        if module is ours:
            assert "weight_hh_l0" in str(refused.value)
            assert "torch.float64" in str(refused.value)


def test_double_backward_raises_instead_of_a_silently_wrong_gradient():
    _, ours = pair(3, 4)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    out, _ = ours(x)
    with pytest.raises(lt.DoubleBackwardError, match="create_graph=True"):
        torch.autograd.grad(out.sum(), [x, ours.weight_ih_l0], create_graph=True)
    # first-order gradients are unaffected
    out, _ = ours(x)
    assert torch.autograd.grad(out.sum(), [x])[0].shape == x.shape


# ----------------------------------------------------------------------------------------------
# errors: the same exception types (and messages) as nn.LSTM


CONSTRUCTOR_MISTAKES = [
    ((3, 5), {"bias": 0}), ((3, 5), {"bias": "True"}), ((3, 5), {"batch_first": "False"}),
    ((3, 5), {"batch_first": 1}), ((3, 5.0), {}), ((3.0, 5), {}), ((3, 0), {}), ((0, 5), {}),
    ((3, 5, 0), {}), ((3, 5, -1), {}), ((3, 5), {"dropout": 1.5}), ((3, 5), {"dropout": True}),
    ((3, 5), {"dropout": "0.1"}), ((3, 5), {"proj_size": -1}), ((3, 5), {"proj_size": 5}),
]


@pytest.mark.parametrize("args,kwargs", CONSTRUCTOR_MISTAKES)
def test_constructor_mistakes_raise_nn_lstm_exception(args, kwargs):
    with pytest.raises(Exception) as expected:
        nn.LSTM(*args, **kwargs)
    with pytest.raises(expected.type) as got:
        lt.LSTM(*args, **kwargs)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("kwargs,name", [({"num_layers": 2.0}, "num_layers"),
                                         ({"num_layers": True}, "num_layers"),
                                         ({"proj_size": 1.0}, "proj_size"),
                                         ({"peepholes": 1}, "peepholes")])
def test_non_int_sizes_and_non_bool_flags_are_type_errors_naming_the_argument(kwargs, name):
    with pytest.raises(TypeError, match=name):
        lt.LSTM(3, 5, **kwargs)


def forward_mistakes():
    z = torch.zeros
    return [
        ("4-D input", (z(5, 2, 3, 1),)),
        ("input size", (z(5, 2, 7),)),
        ("input dtype", (z(5, 2, 3, dtype=torch.float32),)),
        ("hx batch", (z(5, 2, 3), (z(2, 3, 4), z(2, 2, 4)))),
        ("cx batch", (z(5, 2, 3), (z(2, 2, 4), z(2, 3, 4)))),
        ("hx layers", (z(5, 2, 3), (z(1, 2, 4), z(1, 2, 4)))),
        ("hx size", (z(5, 2, 3), (z(2, 2, 5), z(2, 2, 4)))),
        ("2-D hx, batched", (z(5, 2, 3), (z(2, 4), z(2, 4)))),
        ("3-D hx, unbatched", (z(5, 3), (z(2, 1, 4), z(2, 1, 4)))),
        ("zero steps", (z(0, 2, 3),)),
        ("not a tensor", ([[1.0, 2.0, 3.0]],)),
    ]


@pytest.mark.parametrize("what,args", forward_mistakes(), ids=[m[0] for m in forward_mistakes()])
def test_forward_mistakes_raise_nn_lstm_exception(what, args):
    torch.set_default_dtype(F64)
    try:
        ref, ours = pair(3, 4, 2)
    finally:
        torch.set_default_dtype(torch.float32)
    with pytest.raises(Exception) as expected:
        ref(*args)
    with pytest.raises(expected.type) as got:
        ours(*args)
    if expected.type is not AttributeError:
        assert str(got.value).split(".")[0] == str(expected.value).split(".")[0]


def test_unsupported_features_are_refused_by_name():
    assert issubclass(lt.UnsupportedError, NotImplementedError)
    ours = lt.LSTM(3, 5)
    with pytest.raises(lt.UnsupportedError, match="torch.float16"):
        ours.half()(torch.zeros(4, 2, 3, dtype=torch.float16))
    with pytest.raises(lt.UnsupportedError, match="device='meta'"):
        lt.LSTM(3, 5, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # dropout with one layer warns as nn.LSTM does
        with pytest.raises(UserWarning, match="num_layers greater than 1"):
            lt.LSTM(3, 5, dropout=0.5)


# ----------------------------------------------------------------------------------------------
# gradcheck on small double cases of the options


@pytest.mark.parametrize("options", [
    dict(num_layers=2, bidirectional=True, peepholes=True),
    dict(num_layers=2, bias=False, batch_first=True, activation="softsign"),
    dict(num_layers=1, gate_activation="hardsigmoid", peepholes=True),
], ids=["stacked-bidirectional-peepholes", "no-bias-batch-first-softsign", "hardsigmoid"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gradcheck_every_option(options, packed):
    torch.manual_seed(4)
    module = lt.LSTM(2, 2, dtype=F64, **options)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    x, hx = make_inputs(module, T=3, mb=3, dtype=F64, with_state=True)

    def f(x, h0, c0, *params):
        inp = x
        if packed:
            inp = nn.utils.rnn.pack_padded_sequence(
                x, [3, 1, 2], batch_first=module.batch_first, enforce_sorted=False)
        out, (h_n, c_n) = torch.func.functional_call(module, dict(zip(names, params)),
                                                     (inp, (h0, c0)))
        return (out.data if packed else out), h_n, c_n

    assert torch.autograd.gradcheck(f, (x, *hx, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("case", ["dropout", "unbatched", "dl4j-sum", "no-state"])
def test_gradcheck_dropout_unbatched_dl4j_sum_and_zero_state(case):
    torch.manual_seed(4)
    if case == "dl4j-sum":
        module = lt.GravesBidirectionalLSTM(2, 2, dtype=F64)
    else:
        module = lt.LSTM(2, 2, 2 if case == "dropout" else 1, dtype=F64,
                         dropout=0.5 if case == "dropout" else 0.0,
                         bidirectional=case != "no-state")
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    x, hx = make_inputs(module, T=3, mb=2, dtype=F64, with_state=case != "no-state",
                        batched=case != "unbatched")
    state = () if hx is None else hx

    def f(x, *rest):
        hx, params = (None, rest) if case == "no-state" else (rest[:2], rest[2:])
        torch.manual_seed(11)         # the same dropout mask on every evaluation
        out, (h_n, c_n) = torch.func.functional_call(module, dict(zip(names, params)),
                                                     (x, hx))
        return out, h_n, c_n

    if case == "dropout":             # the mask is really applied
        out_train = f(x, *state, *params)[0]
        module.eval()
        assert (f(x, *state, *params)[0] - out_train).abs().max() > 1e-3
        module.train()
    assert torch.autograd.gradcheck(f, (x, *state, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
