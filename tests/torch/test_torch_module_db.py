"""PyTorch's own test inputs for nn.LSTM (torch.testing._internal.common_modules: the
module_inputs_torch_nn_LSTM samples and the RNN error inputs), run through lstmfast.torch.LSTM
in float32 and float64 (proj_size included): each sample gives nn.LSTM's outputs and
gradients; each error input raises nn.LSTM's exception type with its message."""

import copy

import pytest

torch = pytest.importorskip("torch")
common_modules = pytest.importorskip("torch.testing._internal.common_modules",
                                     reason="needs expecttest (PyTorch's test helpers)")

import lstmfast.torch as lt  # noqa: E402
from torch import nn  # noqa: E402

MODULE_INFO = next(m for m in common_modules.module_db if m.module_cls is nn.LSTM)
DTYPES = [torch.float32, torch.float64]


def samples(dtype):
    return MODULE_INFO.module_inputs_func(MODULE_INFO, device="cpu", dtype=dtype,
                                          requires_grad=True, training=True)


def results(module, args):
    """out, h_n, c_n and the gradients of a fixed loss with respect to every input tensor and
    every parameter."""
    args = copy.deepcopy(args)
    out, (h_n, c_n) = module(*args)
    inputs = [args[0]] + (list(args[1]) if len(args) > 1 else [])
    g = torch.Generator().manual_seed(3)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
               for t in (out, h_n, c_n))
    return [out, h_n, c_n] + list(torch.autograd.grad(loss, inputs + list(module.parameters())))


def to64(args):
    return [tuple(to64(a)) if isinstance(a, tuple) else
            a.detach().double().requires_grad_(True) for a in args]


def test_pytorch_has_the_expected_samples():
    for dtype in DTYPES:
        assert len(samples(dtype)) == SAMPLES


SAMPLES = 32


@pytest.mark.parametrize("index", range(SAMPLES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lstm_sample_gives_nn_lstm_results(dtype, index):
    sample = samples(dtype)[index]
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    ref = nn.LSTM(*args, **kwargs, dtype=dtype)
    ours = lt.LSTM(*args, **kwargs, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    fwd = sample.forward_input.args
    got, expected = results(ours, fwd), results(ref, fwd)
    assert len(got) == len(expected)
    if dtype == torch.float64:
        for a, b in zip(got, expected):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= 1e-10, (kwargs, fwd[0].shape)
    else:
        truth = results(copy.deepcopy(ref).double(), to64(fwd))
        eps = torch.finfo(torch.float32).eps
        # a gradient that cancels to far below the others' size (a deep layer's weight_hh
        # with a projection: ~1e-4 against ~4) keeps the rounding of its terms, whose order
        # of summation differs between the two implementations: no tensor is held tighter
        # than float32 rounding at the size of the largest result
        largest = max(t.abs().max().item() for t in truth)
        for a, b, t in zip(got, expected, truth):
            assert a.shape == b.shape
            ours_err = (a.double() - t).abs().max().item()
            nn_err = (b.double() - t).abs().max().item()
            assert ours_err <= max(4 * max(nn_err, eps * t.abs().max().item()),
                                   eps * largest), kwargs


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_every_rnn_error_input_raises_nn_lstm_error(dtype):
    errors = MODULE_INFO.module_error_inputs_func(MODULE_INFO, device="cpu", dtype=dtype,
                                                  requires_grad=False, training=True)
    assert len(errors) >= 5
    construction = common_modules.ModuleErrorEnum.CONSTRUCTION_ERROR
    for error in errors:
        sample = error.module_error_input
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        if error.error_on == construction:
            with pytest.raises(error.error_type, match=error.error_regex):
                lt.LSTM(*args, **kwargs)
            continue
        module = lt.LSTM(*args, **kwargs)
        with pytest.raises(error.error_type, match=error.error_regex):
            module(*sample.forward_input.args, **sample.forward_input.kwargs)
