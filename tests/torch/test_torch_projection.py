"""proj_size (LSTMP) in lstmfast.torch.LSTM: nn.LSTM's parameters and state shapes, values and
gradients against nn.LSTM, gradcheck (peepholes too, which nn.LSTM lacks), state dicts both
ways, and the compiled op's output shapes."""

import pytest

torch = pytest.importorskip("torch")

import lstmfast.torch as lt  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

F64 = torch.float64


def pair(num_layers=2, bidirectional=True, batch_first=False, proj_size=2):
    torch.manual_seed(1)
    ref = nn.LSTM(3, 4, num_layers, batch_first=batch_first, bidirectional=bidirectional,
                  proj_size=proj_size, dtype=F64)
    ours = lt.LSTM(3, 4, num_layers, batch_first=batch_first, bidirectional=bidirectional,
                   proj_size=proj_size, dtype=F64)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def state(module, mb, seed=2):
    g = torch.Generator().manual_seed(seed)
    n = module.num_layers * (2 if module.bidirectional else 1)
    real = module.proj_size or module.hidden_size
    return (torch.randn(n, mb, real, dtype=F64, generator=g),
            torch.randn(n, mb, module.hidden_size, dtype=F64, generator=g))


def run(module, x, hx):
    x = x.detach().clone().requires_grad_(True)
    hx = tuple(t.detach().clone().requires_grad_(True) for t in hx)
    out, (h_n, c_n) = module(x, hx)
    g = torch.Generator().manual_seed(5)
    loss = sum((t * torch.randn(t.shape, dtype=F64, generator=g)).sum() for t in (out, h_n, c_n))
    grads = torch.autograd.grad(loss, [x, *hx, *module.parameters()])
    return [out, h_n, c_n, *grads]


def test_parameters_and_shapes_are_nn_lstm_s():
    ref, ours = pair()
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, p.shape) for n, p in ref.named_parameters()]
    assert ours.weight_hr_l1_reverse.shape == (2, 4)
    assert ours.weight_ih_l1.shape == (16, 4)        # proj_size * 2 directions in
    out, (h_n, c_n) = ours(torch.zeros(5, 3, 3, dtype=F64))
    assert out.shape == (5, 3, 4) and h_n.shape == (4, 3, 2) and c_n.shape == (4, 3, 4)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first",
                         [(1, False, False), (2, True, False), (2, False, True), (3, True, True)])
def test_values_and_gradients_equal_nn_lstm(num_layers, bidirectional, batch_first):
    ref, ours = pair(num_layers, bidirectional, batch_first)
    x = torch.randn(4, 6, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    hx = state(ref, 4 if batch_first else 6)
    for a, b in zip(run(ours, x, hx), run(ref, x, hx)):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-10


@pytest.mark.parametrize("peepholes", [False, True])
def test_gradcheck(peepholes):
    torch.manual_seed(4)
    module = lt.LSTM(2, 3, 2, bidirectional=True, proj_size=2, peepholes=peepholes, dtype=F64)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 2, dtype=F64, generator=g, requires_grad=True)
    h0, c0 = (t.requires_grad_(True) for t in state(module, 2))

    def f(x, h0, c0, *rest):
        out, (h_n, c_n) = functional_call(module, dict(zip(names, rest)), (x, (h0, c0)))
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_state_dict_loads_strictly_both_ways():
    ref, ours = pair()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1)
    back = nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2, dtype=F64)
    back.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(5, 2, 3, dtype=F64)
    hx = state(ref, 2)
    for a, b in zip(run(back, x, hx), run(ours, x, hx)):
        assert (a - b).abs().max().item() <= 1e-10
    assert (run(ref, x, hx)[0] - run(ours, x, hx)[0]).abs().max().item() > 1e-3
    new = lt.LSTM.from_torch(back)
    assert new.proj_size == 2
    assert (run(new, x, hx)[0] - run(back, x, hx)[0]).abs().max().item() <= 1e-10


def test_compiled_op_gives_the_projected_shapes_values_and_gradients():
    ref, ours = pair()
    x = torch.randn(5, 2, 3, dtype=F64)
    hx = state(ref, 2)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    for a, b in zip(run(compiled, x, hx), run(ref, x, hx)):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-10


# ----------------------------------------------------------------------------------------------
# PackedSequence: one pass per layer and direction, with each sequence's length


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_projection_equals_nn_lstm(enforce_sorted, batch_first):
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    ref, ours = pair(2, True, batch_first)
    x = torch.randn(4, 6, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    hx = state(ref, 4)
    results = []
    for module in (ref, ours):
        xs = x.detach().clone().requires_grad_(True)
        h = tuple(t.detach().clone().requires_grad_(True) for t in hx)
        packed = nn.utils.rnn.pack_padded_sequence(xs, lengths, batch_first=batch_first,
                                                   enforce_sorted=enforce_sorted)
        out, (h_n, c_n) = module(packed, h)
        g = torch.Generator().manual_seed(5)
        loss = sum((t * torch.randn(t.shape, dtype=F64, generator=g)).sum()
                   for t in (out.data, h_n, c_n))
        results.append([out.data, h_n, c_n,
                        *torch.autograd.grad(loss, [xs, *h, *module.parameters()])])
    for a, b in zip(*results):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-10


@pytest.mark.parametrize("proj_size", [0, 2])
def test_packed_peepholes_equal_each_sequence_run_alone(proj_size, monkeypatch):
    """Peepholes (nn.LSTM has none): the packed batch gives what each sequence gives run
    alone, unpadded, and the layers run once per layer and direction, whatever the lengths."""
    from lstmfast.torch import _modules
    calls = []
    real = _modules.run_layer
    monkeypatch.setattr(_modules, "run_layer", lambda *a: calls.append(1) or real(*a))
    real_pair = _modules.run_directions_side_by_side

    def pair(*args):
        # (two threads on torch's workers: both directions of a layer in one call)
        both = real_pair(*args)
        calls.extend([1, 1] if both is not None else [])
        return both
    monkeypatch.setattr(_modules, "run_directions_side_by_side", pair)
    torch.manual_seed(8)
    module = lt.GravesLSTM(3, 4, 2, bidirectional=True, proj_size=proj_size, dtype=F64)
    lengths = [3, 5, 1, 4, 2]
    x = torch.randn(5, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    hx = state(module, 5)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h_n, c_n) = module(packed, hx)
    assert len(calls) == 4
    out, _ = nn.utils.rnn.pad_packed_sequence(out)
    for m, n in enumerate(lengths):
        alone, (h_m, c_m) = module(x[:n, m:m + 1], (hx[0][:, m:m + 1], hx[1][:, m:m + 1]))
        assert (out[:n, m:m + 1] - alone).abs().max().item() <= 1e-12
        if n < len(x):
            assert out[n:, m].abs().max().item() == 0
        assert (h_n[:, m:m + 1] - h_m).abs().max().item() <= 1e-12
        assert (c_n[:, m:m + 1] - c_m).abs().max().item() <= 1e-12
