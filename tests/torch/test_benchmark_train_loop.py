"""The benchmark's training loop (benchmarks/train_loop.py) times the same computation in
lstmfast and in PyTorch: from the same weights, the two loops (truncated BPTT windows, each
followed by an Adam step) give the same losses and the same parameters, minibatch after
minibatch. Checked in float64 on a small model; PyTorch is the peer."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lstmfast.convert import lstmfast_to_torch  # noqa: E402

def find_train_loop():
    """benchmarks/train_loop.py in the tree (or unpacked sdist) that holds this test, at any depth
    of tests/."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "benchmarks" / "train_loop.py"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no benchmarks/train_loop.py above {Path(__file__).parent}")


def load_train_loop():
    spec = importlib.util.spec_from_file_location("bench_train_loop", find_train_loop())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_loop_peers_compute_the_same_thing():
    tl = load_train_loop()
    # 12 steps in windows of 5 (the last one partial), two layers; Adam's epsilon negligible,
    # because DL4J's Adam adds it to sqrt(v) and PyTorch's to the bias-corrected sqrt(v)
    cfg = dict(tl.CHAR_MODEL, vocab=11, hidden=8, seq_len=12, tbptt=5, minibatch=3,
               adam_epsilon=1e-30)
    windows = tl.minibatches(cfg, count=3)
    net = tl.lstmfast_model(cfg, np.float64)
    lstm, out = tl.torch_model(cfg, np.float64)
    tl.copy_weights(net, lstm, out)
    # nn.LSTM has a second bias vector; Adam would move the sum of the two twice as far
    for k in range(cfg["layers"]):
        getattr(lstm, f"bias_hh_l{k}").requires_grad_(False)
    step_lstmfast = tl.lstmfast_step(net, windows)
    step_torch = tl.torch_step(lstm, out, cfg, windows)
    losses = []
    for _ in range(4):                       # the fourth minibatch is the first one again
        a, b = step_lstmfast(), step_torch()
        losses.append(a)
        assert a == pytest.approx(b, rel=1e-10)
    assert losses[-1] < losses[0]            # it trains
    for k, layer in enumerate(net.layers[:-1]):
        mine = lstmfast_to_torch(layer.W, layer.RW, layer.b)
        np.testing.assert_allclose(mine[0], getattr(lstm, f"weight_ih_l{k}").detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(mine[1], getattr(lstm, f"weight_hh_l{k}").detach().numpy(), rtol=0, atol=1e-12)
        bias = (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach().numpy()
        np.testing.assert_allclose(mine[2], bias, rtol=0, atol=1e-12)
    np.testing.assert_allclose(net.layers[-1].W.T, out.weight.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.reshape(net.layers[-1].b, -1), out.bias.detach().numpy(), rtol=0, atol=1e-12)


def test_markov_text_is_learnable_and_fixed():
    tl = load_train_loop()
    codes = tl.markov_text(20_000, 77)
    assert codes.min() >= 0 and codes.max() < 77
    np.testing.assert_array_equal(codes, tl.markov_text(20_000, 77))
    # every character is followed by at most three others
    pairs = {(int(a), int(b)) for a, b in zip(codes[:-1], codes[1:])}
    successors = {}
    for a, b in pairs:
        successors.setdefault(a, set()).add(b)
    assert max(len(s) for s in successors.values()) <= 3
