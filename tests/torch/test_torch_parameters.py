"""The modules' parameters: every way of changing them reaches the next call (eager and
compiled)."""

import pytest

torch = pytest.importorskip("torch")

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
