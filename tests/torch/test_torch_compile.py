"""The modules under PyTorch's compilers: torch.compile (one graph, no break, the eager numbers
and gradients) and torch.jit.trace (saved, then loaded and run in a fresh process)."""

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import lstmfast.torch as lt  # noqa: E402
from torch import nn  # noqa: E402

F64 = torch.float64


class Model(nn.Module):
    """An lstmfast LSTM inside a model, its outputs all used."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 1, dtype=F64)

    def forward(self, x, hx):
        out, (h_n, c_n) = self.rnn(x, hx)
        return self.head(out).square().sum() + (h_n * c_n).sum()


def make_model(seed=0, **options):
    torch.manual_seed(seed)
    return Model(lt.LSTM(3, 4, 2, bidirectional=True, dtype=F64, **options))


def model_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 2, 3, generator=g, dtype=F64, requires_grad=True)
    hx = tuple(torch.randn(4, 2, 4, generator=g, dtype=F64, requires_grad=True)
               for _ in range(2))
    return x, hx


def loss_and_gradients(model, x, hx):
    loss = model(x, hx)
    return [loss] + list(torch.autograd.grad(loss, [x, *hx, *model.parameters()]))


def test_dynamo_traces_the_module_in_one_graph_without_a_break():
    model = make_model(peepholes=True)
    x, hx = model_inputs()
    explained = torch._dynamo.explain(model)(x, hx)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        explained.break_reasons
    ops = [str(node.target) for graph in explained.graphs for node in graph.graph.nodes]
    assert sum("lstmfast.lstm_layer" in op for op in ops) == 4     # 2 layers, 2 directions


def test_plain_nn_lstm_is_left_to_dynamo_own_rules():
    """Only lstmfast's modules are let through: Dynamo still refuses a plain nn.LSTM."""
    torch.manual_seed(0)
    model = Model(nn.LSTM(3, 4, 2, bidirectional=True, dtype=F64))
    with pytest.raises(torch._dynamo.exc.Unsupported, match="LSTM"):
        torch.compile(model, fullgraph=True)(*model_inputs())


def test_compiled_fullgraph_gives_eager_values_and_gradients():
    model = make_model()
    x, hx = model_inputs()
    eager = loss_and_gradients(model, x, hx)
    compiled = torch.compile(model, fullgraph=True)
    for seed in (1, 2):          # a second call runs the cached graph
        x, hx = model_inputs(seed)
        got = loss_and_gradients(compiled, x, hx)
        expected = loss_and_gradients(model, x, hx)
        if seed == 1:
            assert torch.equal(expected[0], eager[0])
        assert len(got) == len(expected) == 1 + 3 + 16 + 2     # loss, x and hx, rnn, head
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_jit_trace_saves_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    module = lt.LSTM(3, 4, 2, bidirectional=True, batch_first=True, dtype=F64, peepholes=True)
    x = torch.randn(2, 5, 3, dtype=F64)
    other = torch.randn(3, 7, 3, dtype=F64)
    traced = torch.jit.trace(module, (x,))
    torch.jit.save(traced, tmp_path / "lstm.pt")
    with torch.no_grad():
        torch.save({"x": x, "other": other, "expected": module(x), "expected_other":
                    module(other)}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import torch
        import lstmfast.torch
        io = torch.load({str(tmp_path / 'io.pt')!r})
        loaded = torch.jit.load({str(tmp_path / 'lstm.pt')!r})
        worst = 0.0
        # the traced shapes, then another batch size and length
        for name, expected in (("x", "expected"), ("other", "expected_other")):
            out, (h_n, c_n) = loaded(io[name])
            ref_out, (ref_h, ref_c) = io[expected]
            for a, b in ((out, ref_out), (h_n, ref_h), (c_n, ref_c)):
                assert a.shape == b.shape, (a.shape, b.shape)
                worst = max(worst, (a - b).abs().max().item())
        out, _ = loaded(io["x"].requires_grad_(True))
        out.sum().backward()                 # the loaded graph trains too
        assert io["x"].grad.shape == io["x"].shape
        print(worst)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) <= 1e-12


def test_double_backward_through_the_compiled_model_is_refused():
    """Never a gradient penalty silently dropped: the compiled graph refuses the second
    backward pass (eager mode raises lstmfast's DoubleBackwardError already at the first)."""
    model = make_model()
    compiled = torch.compile(model, fullgraph=True)
    x, hx = model_inputs()
    with pytest.raises(RuntimeError, match="double backward|create_graph=False"):
        grads = torch.autograd.grad(compiled(x, hx), list(model.rnn.parameters()),
                                    create_graph=True)
        sum(g.square().sum() for g in grads).backward()


@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l1_reverse"])
def test_compiled_model_refuses_weights_changed_in_place_before_backward(name):
    """The backward pass reads the weights the forward pass read, where they are: the compiled
    graph must keep them among its saved tensors, so that autograd refuses them changed in
    place in between (as for a compiled nn.Linear), instead of a gradient of the forward
    pass's activations with other weights."""
    model = make_model()
    compiled = torch.compile(model, fullgraph=True)
    x, hx = model_inputs()
    loss = compiled(x, hx)
    with torch.no_grad():
        getattr(model.rnn, name).mul_(1.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("memory_budget", [1.0, 0.0])
def test_weights_computed_in_the_compiled_graph_give_eager_gradients(memory_budget):
    """Weights computed inside the graph (a scaling here; weight dropping, parametrizations):
    the forward graph may reuse their buffers once the forward op has run, and the backward
    graph may recompute them (memory_budget 0 recomputes what it can), so the backward op
    must read the weights it is given, not the forward graph's buffers."""
    from lstmfast.torch import _ops
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 3, generator=g, dtype=F64, requires_grad=True)
    params = [torch.randn(shape, generator=g, dtype=F64, requires_grad=True)
              for shape in ((16, 3), (16, 4), (16,), (16,))]

    def loss(x, w_ih, w_hh, b_ih, b_hh):
        out, h, c, _ = _ops.lstm_layer(x, w_ih * 0.5, w_hh * 0.5, b_ih, b_hh, None, None, None,
                                       None, None, True, "tanh", "sigmoid", True)
        # after the op, same-sized buffers the scaled weights' may be reused for
        e_ih = torch.mm(torch.sin(w_ih * 3.0 + out.sum()), torch.eye(3, dtype=F64))
        e_hh = torch.mm(torch.cos(w_hh * 3.0 + out.sum()), torch.eye(4, dtype=F64))
        return out.square().sum() + (h * c).sum() + e_ih.square().sum() + e_hh.square().sum()

    def value_and_gradients(fn):
        value = fn(x, *params)
        return [value] + list(torch.autograd.grad(value, [x, *params]))

    expected = value_and_gradients(loss)
    torch._dynamo.reset()        # (the other budget's graph for the same code is not reused)
    with torch._functorch.config.patch(activation_memory_budget=memory_budget):
        got = value_and_gradients(torch.compile(loss, fullgraph=True))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
