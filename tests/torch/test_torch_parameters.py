"""The modules' parameters: every way of changing them reaches the next call (eager and
compiled), and state dicts of earlier versions (one flat DL4J-layout `params`) still load."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lstmfast  # noqa: E402
import lstmfast.torch as lt  # noqa: E402
from torch import nn  # noqa: E402

F64 = torch.float64


def pair(seed=0, **options):
    torch.manual_seed(seed)
    ref = nn.LSTM(3, 4, 2, bidirectional=True, dtype=F64, **options)
    ours = lt.LSTM(3, 4, 2, bidirectional=True, dtype=F64, **options)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def optimizer_step(module):
    opt = torch.optim.SGD(module.parameters(), lr=0.3)
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    module(x)[0].square().sum().backward()
    opt.step()
    opt.zero_grad()


def copy_under_no_grad(module):
    with torch.no_grad():
        module.weight_hh_l1.copy_(module.weight_hh_l1.flip(0))
        module.bias_ih_l0_reverse.add_(0.5)


def data_assignment(module):
    module.weight_ih_l0.data = module.weight_ih_l0.data * -2.0
    module.bias_hh_l1.data = torch.full_like(module.bias_hh_l1, 0.25)


def data_in_place(module):
    # writes through .data do not bump the parameters' version counters
    module.weight_hh_l0.data.mul_(-1.5)
    module.weight_ih_l1_reverse.data.copy_(module.weight_ih_l1_reverse.data.flip(1))


def state_dict_load(module):
    torch.manual_seed(5)
    module.load_state_dict(nn.LSTM(3, 4, 2, bidirectional=True, dtype=F64).state_dict())


ROUTES = [optimizer_step, copy_under_no_grad, data_assignment, data_in_place, state_dict_load]


def outputs(module, x):
    with torch.no_grad():
        out, (h_n, c_n) = module(x)
    return torch.cat([out.flatten(), h_n.flatten(), c_n.flatten()])


def check_routes(ref, ours, run):
    """Each route in turn, applied alike to both modules (with a new value each time), then
    `run(ours)` (a first call before each change, so that anything derived from the old weights
    could be reused) against nn.LSTM."""
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    for route in ROUTES:
        before = outputs(ref, x)
        torch.testing.assert_close(run(ours, x), before, rtol=0, atol=1e-12)
        for module in (ref, ours):
            route(module)
        after = outputs(ref, x)
        assert (after - before).abs().max() > 1e-3, route.__name__     # the change matters
        torch.testing.assert_close(run(ours, x), after, rtol=0, atol=1e-12,
                                   msg=lambda m: f"{route.__name__}: {m}")


def test_every_way_of_changing_parameters_reaches_the_next_call():
    check_routes(*pair(), outputs)


def test_every_way_of_changing_parameters_reaches_the_compiled_model():
    ref, ours = pair(seed=1)
    compiled = torch.compile(ours, fullgraph=True)
    check_routes(ref, ours, outputs_of(compiled))


def outputs_of(compiled):
    def run(_, x):
        return outputs(compiled, x)
    return run


# ----------------------------------------------------------------------------------------------
# state dicts of earlier versions: one flat parameter `params` in DL4J's layout (the lstmfast
# layers' params)


@pytest.mark.parametrize("kind", ["LSTM", "GravesLSTM", "GravesBidirectionalLSTM"])
def test_flat_params_state_dict_of_earlier_versions_loads(kind):
    layer_class = getattr(lstmfast, kind)
    layer = layer_class(3, 4, dtype=np.float64, seed=3)
    layer.params = np.random.default_rng(4).normal(size=layer.params.size)
    module_class = getattr(lt, kind)
    legacy = {"params": torch.from_numpy(layer.params.copy())}
    module = module_class(3, 4, dtype=F64)
    module.load_state_dict(legacy)                        # strict: every name filled
    expected = module_class.from_layer(layer)
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(module.state_dict()[name], value, rtol=0, atol=0)
    # the same function as the layer's, which computes from the flat layout directly
    x = np.random.default_rng(6).normal(size=(2, 3, 5))            # [mb, nIn, T]
    out, (h_n, _) = module(torch.from_numpy(x.transpose(2, 0, 1).copy()))
    want = layer.forward(x)
    if kind == "GravesBidirectionalLSTM":
        assert out.shape == (5, 2, 4)
    np.testing.assert_allclose(out.detach().numpy().transpose(1, 2, 0), want, rtol=0,
                               atol=1e-12)
    assert h_n.shape[0] == (2 if kind == "GravesBidirectionalLSTM" else 1)
    # and inside a model's state dict, under the module's prefix
    model = nn.Sequential(module_class(3, 4, dtype=F64))
    model.load_state_dict({"0.params": legacy["params"]})
    torch.testing.assert_close(model[0].weight_hh_l0, expected.weight_hh_l0, rtol=0, atol=0)


def test_flat_params_without_bias_load_into_a_module_without_bias():
    layer = lstmfast.GravesLSTM(3, 4, dtype=np.float64, seed=3)
    module = lt.GravesLSTM(3, 4, bias=False, dtype=F64)
    flat = layer.params[:layer.params.size - 16]               # W and RW, no b
    module.load_state_dict({"params": torch.from_numpy(flat.copy())})
    assert [n for n, _ in module.named_parameters()] == ["weight_ih_l0", "weight_hh_l0",
                                                         "weight_peephole_l0"]
    layer.params[flat.size:] = 0.0
    x = np.random.default_rng(6).normal(size=(2, 3, 5))
    out = module(torch.from_numpy(x.transpose(2, 0, 1).copy()))[0].detach().numpy()
    np.testing.assert_allclose(out.transpose(1, 2, 0), layer.forward(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make,size", [
    (lambda: lt.LSTM(3, 4, dtype=F64), 3 * 16 + 4 * 19 + 16),      # saved with peepholes
    (lambda: lt.LSTM(3, 4, 2, dtype=F64), 3 * 16 + 4 * 16 + 16),   # two layers: never flat
    (lambda: lt.GravesLSTM(3, 5, dtype=F64), 3 * 16 + 4 * 19 + 16),  # another hidden size
], ids=["peepholes-differ", "two-layers", "sizes-differ"])
def test_flat_params_of_another_shape_is_a_clear_error(make, size):
    module = make()
    with pytest.raises(RuntimeError, match=r"'params'.*from_layer"):
        module.load_state_dict({"params": torch.zeros(size, dtype=F64)})


def test_from_layer_refuses_a_layer_processing_time_in_reverse():
    pair = lstmfast.GravesBidirectionalLSTM(3, 4, dtype=np.float64, seed=0)
    assert pair.backward_layer.reverse and not pair.forward_layer.reverse
    with pytest.raises(ValueError, match="processes time in reverse"):
        lt.GravesLSTM.from_layer(pair.backward_layer)
    module = lt.GravesLSTM.from_layer(pair.forward_layer)
    assert module.weight_peephole_l0.shape == (3, 4)
