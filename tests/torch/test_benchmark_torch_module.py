"""benchmarks/bench_torch_module.py compares the module with the functional API on the same
work: checked here in float64, the two sides give the same outputs and, after a training step
each, the same weights."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

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


def test_module_and_functional_cases_do_the_same_work():
    bench = load_benchmark()
    from lstmfast.torch._function import kernel_weights
    cases = bench.overhead_cases(3, 4, 5, 6, np.float64, lr=0.5)
    assert len(cases) == 16
    for key, step in cases.items():
        if key[2:] != ("train", "module"):
            continue
        module = step.__defaults__[0]
        functional = cases[key[:2] + ("train", "functional")].__defaults__[0]
        x = np.random.default_rng(0).standard_normal((3, 4, 6))
        out_f, _ = functional.forward(x, False)
        with torch.no_grad():
            out_m, _ = module(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        assert out_f.shape == (3, 5 * (2 if key[1] else 1), 6)
        np.testing.assert_allclose(out_m.numpy().transpose(1, 2, 0), out_f, rtol=0, atol=1e-12)
        # one training step each, on the benchmark's own input: the same new weights
        step()
        cases[key[:2] + ("train", "functional")]()
        for layer, directions in enumerate(functional.layers):
            for d, arrays in enumerate(directions):
                for got, want in zip(kernel_weights(*module._layer_parameters(layer, d)), arrays):
                    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert np.abs(arrays[1]).max() > 0
