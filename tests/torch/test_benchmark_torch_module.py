"""benchmarks/bench_torch_module.py compares the module with the functional API on the same
work: checked here in float64, the two sides give the same outputs and losses and, after a
training step each (with the loss, and with a given dL/d(out)), the same weights (projection
weights included)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import lstmfast

torch = pytest.importorskip("torch")


def load_benchmark():
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "benchmarks" / "bench_torch_module.py"
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("bench_torch_module", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"no benchmarks/bench_torch_module.py above {Path(__file__).parent}")


def module_arrays(module, layer, direction):
    """The module's weights of one layer and direction as the functional side keeps them."""
    from lstmfast.torch._function import kernel_weights, projection_weights
    arrays = list(kernel_weights(*module._layer_parameters(layer, direction)))
    if module.proj_size:
        w_hr = getattr(module, f"weight_hr_l{layer}{'_reverse' if direction else ''}")
        arrays.append(projection_weights(w_hr, None)[0])
    return arrays


def test_module_and_functional_cases_do_the_same_work():
    bench = load_benchmark()
    cases = bench.overhead_cases(3, 4, 6, 6, np.float64, lr=0.5)
    assert len(cases) == 7 * len(bench.CONFIGURATIONS)
    assert any(config[2] for config, _, _ in cases)        # a projection among them
    for (config, mode, impl), step in cases.items():
        if (mode, impl) != ("train", "module"):
            continue
        module = step.__defaults__[0]
        functional_step = cases[config, "train", "functional"]
        functional = functional_step.__defaults__[0]
        assert (module.num_layers, module.bidirectional, module.proj_size) == config
        x = np.random.default_rng(0).standard_normal((3, 4, 6))
        out_f, _ = functional.forward(x, False)
        with torch.no_grad():
            out_m, _ = module(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        features = (config[2] or 6) * (2 if config[1] else 1)
        assert out_f.shape == (3, features, 6)
        np.testing.assert_allclose(out_m.numpy().transpose(1, 2, 0), out_f, rtol=0, atol=1e-12)
        # one training step each, on the benchmark's own input: the same loss, new weights
        loss_m = step()
        loss_f = functional_step()
        np.testing.assert_allclose(loss_m.item(), loss_f, rtol=1e-12)
        for layer, directions in enumerate(functional.layers):
            for d, arrays in enumerate(directions):
                for got, want in zip(module_arrays(module, layer, d), arrays, strict=True):
                    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert np.abs(arrays[1]).max() > 0
        # and a step each with the same given dL/d(out) (no loss): the same weights again
        before = [a.copy() for a in functional.layers[0][0]]
        assert cases[config, "backprop", "functional"]() is None
        cases[config, "backprop", "module"]()
        for layer, directions in enumerate(functional.layers):
            for d, arrays in enumerate(directions):
                for got, want in zip(module_arrays(module, layer, d), arrays, strict=True):
                    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert not np.array_equal(before[1], functional.layers[0][0][1])
        # the derivation case gives what the module's forward pass hands the kernels: the same
        # first layer's pass as the functional side's weights
        W, RW, b, keywords = bench.derive_layout(module, 0, 0)
        keywords = {k: v for k, v in keywords.items() if not k.startswith("_")}
        W_f, RW_f, b_f, *projection = functional.layers[0][0]
        want = lstmfast.lstm_forward(x, W_f, RW_f, b_f, projection_weights=(
            projection[0] if projection else None)).output
        np.testing.assert_allclose(lstmfast.lstm_forward(x, W, RW, b, **keywords).output, want,
                                   rtol=0, atol=1e-12)


def test_floor_cases_give_nn_lstm_gradients():
    """The four sides of the ``floor`` mode (the module, the kernels inside a bare
    autograd.Function, the kernels alone, the functional API) compute the same pass: nn.LSTM's
    output gradient taken back to the same weight gradients, in float64."""
    from lstmfast.torch._function import TORCH_FROM_KERNEL, _blocks
    bench = load_benchmark()
    mb, n_in, h, T = 3, 4, 5, 6
    cases, ours = bench.floor_cases(mb, n_in, h, T, np.float64)
    assert list(cases) == ["module", "Function", "kernels", "functional"]
    grads = {}
    for name, (forward, backward, reset) in cases.items():
        if reset is not None:
            reset()
        forward()
        result = backward()
        if name == "functional":      # the kernels' gate order back to nn.LSTM's
            result = (_blocks(result.input_weights.T, TORCH_FROM_KERNEL),
                      _blocks(result.recurrent_weights.T, TORCH_FROM_KERNEL),
                      _blocks(result.bias, TORCH_FROM_KERNEL),
                      _blocks(result.bias, TORCH_FROM_KERNEL))
        grads[name] = [g.numpy().copy() if isinstance(g, torch.Tensor) else np.array(g)
                       for g in result]
    # the peer: nn.LSTM with the module's weights, on the benchmark's own x and dL/d(out)
    peer = torch.nn.LSTM(n_in, h, dtype=torch.float64)
    peer.load_state_dict(ours.state_dict())
    rng = np.random.default_rng(0)          # as floor_cases draws them
    x = rng.standard_normal((mb, n_in, T))
    grad_out = rng.standard_normal((T, mb, h)) / (T * mb)
    out, _ = peer(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
    out.backward(torch.from_numpy(grad_out))
    expected = [p.grad.numpy() for p in (peer.weight_ih_l0, peer.weight_hh_l0, peer.bias_ih_l0,
                                         peer.bias_hh_l0)]
    assert np.abs(expected[0]).max() > 1e-3
    for name, result in grads.items():
        for got, want in zip(result, expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)
