"""A training step of lstmfast.torch.GravesLSTM inside PyTorch vs the same work through lstmfast
alone, at 1 and 2 threads (the two thread pools in one process).

PyTorch's intra-op pool (OpenMP) and the OpenBLAS behind lstmfast's kernels (SciPy's) are two
thread pools in one process. When both are active they interfere: a pool's threads spin for a
while after their work, and a small GEMM of the other pool issued meanwhile waits for cores.
Cases per thread count n (torch.set_num_threads(n); lstmfast's BLAS at n unless said):

  lstmfast alone       lstm_forward(for_backprop) + lstm_backward + SGD update in NumPy
                       (BLAS at n threads, and at 1)
  module, BLAS n       lstmfast.torch module, loss and SGD in torch, BLAS left at n threads
                       (lstmfast.torch.set_blas_threads(None))
  module, BLAS 1       the same, BLAS limited to 1 thread during the module's calls
                       (set_blas_threads(1): the default)
  module, torch 1      torch.set_num_threads(1), BLAS at n (the pools cannot fight; the kernels
                       get the threads, PyTorch's ops run single-threaded)
  + head: ...          the module followed by a torch Linear head on every step (torch's pool
                       busy between the kernels' calls: where the pools fight)

    python benchmarks/bench_torch_module.py [--minibatch 32 --n-in 64 --hidden 128 --steps 50]
                                            [--reps 20] [--dtype float32] [--small]

Prints milliseconds per training step (the best of --trials medians of --reps steps, the cases
interleaved within each trial) and a markdown table. "lstmfast alone" runs with BLAS at n threads
(as lstmfast does by default).

Limiting the kernels' BLAS to one thread during the module's calls (the default,
lstmfast.torch.set_blas_threads(1)) cut the 2-thread step 1.7-4x; at 1 thread the module costs
lstmfast alone + 0.6 ms (autograd, loss and optimizer in torch) + ~20%.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import lstmfast  # noqa: F401  (loads SciPy's BLAS before threadpoolctl looks)

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("bench_torch_module.py needs PyTorch")
import lstmfast.torch as lt


def median_ms(step, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def compare(cases, reps, trials):
    """{name: best-of-`trials` median ms}; the cases interleaved within every trial, so that a
    burst of load from elsewhere hits all of them alike."""
    for setup, step in cases.values():
        setup()
        for _ in range(3):
            step()
    best = {name: float("inf") for name in cases}
    for _ in range(trials):
        for name, (setup, step) in cases.items():
            setup()
            best[name] = min(best[name], median_ms(step, reps))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minibatch", type=int, default=32)
    ap.add_argument("--n-in", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--small", action="store_true",
                    help="also a small problem (mb 8, nIn 16, h 32, T 50) where per-call overheads dominate")
    args = ap.parse_args()

    problems = [(args.minibatch, args.n_in, args.hidden, args.steps)]
    if args.small:
        problems.append((8, 16, 32, 50))
    thread_counts = [int(t) for t in args.threads.split(",")]
    np_dtype = np.dtype(args.dtype)
    t_dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np_dtype]

    scipy_blas = lt._scipy_blas_controller()
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}, lstmfast {lstmfast.__version__}, dtype {args.dtype}")
    print(f"# lstmfast's BLAS: {[i['filepath'].rsplit('/', 1)[-1] for i in scipy_blas.info()]}")
    try:
        print(f"# load average before: {os.getloadavg()}")
    except OSError:
        pass
    rows = []
    for (mb, n_in, h, T) in problems:
        rng = np.random.default_rng(0)
        layer = lstmfast.GravesLSTM(n_in, h, dtype=np_dtype, seed=1)
        x_np = rng.standard_normal((mb, n_in, T)).astype(np_dtype)
        lr = 0.01

        def lstmfast_step():
            fwd = lstmfast.lstm_forward(x_np, layer.W, layer.RW, layer.b, for_backprop=True)
            eps = fwd.output * (1.0 / fwd.output.size)        # d/d out of 0.5 * mean(out^2)
            g = lstmfast.lstm_backward(fwd, eps)
            layer.W -= lr * g.input_weights
            layer.RW -= lr * g.recurrent_weights
            layer.b -= lr * g.bias

        module = lt.GravesLSTM.from_layer(layer)
        head = torch.nn.Linear(h, n_in, dtype=t_dtype)
        x_t = torch.from_numpy(np.ascontiguousarray(x_np.transpose(2, 0, 1)))   # [T, mb, nIn]
        target = torch.randn(T, mb, n_in, dtype=t_dtype)
        opt = torch.optim.SGD(list(module.parameters()) + list(head.parameters()), lr=lr)

        def module_step():
            opt.zero_grad(set_to_none=True)
            out, _ = module(x_t)
            loss = 0.5 * out.pow(2).mean()
            loss.backward()
            opt.step()

        def module_head_step():
            opt.zero_grad(set_to_none=True)
            out, _ = module(x_t)
            loss = torch.nn.functional.mse_loss(head(out), target)
            loss.backward()
            opt.step()

        for n in thread_counts:
            def setting(torch_threads, blas_threads, module_blas):
                """torch's pool size, lstmfast's BLAS pool size, and the module's BLAS setting
                during its calls (lstmfast.torch.set_blas_threads: None = leave the pool alone)."""
                def setup():
                    torch.set_num_threads(torch_threads)
                    for pool in lt._blas_pools():
                        pool.set(blas_threads)
                    lt.set_blas_threads(module_blas)
                return setup
            cases = {
                "alone": (setting(n, n, None), lstmfast_step),
                "module BLAS n": (setting(n, n, None), module_step),
                "module BLAS 1": (setting(n, n, 1), module_step),
                "head BLAS n": (setting(n, n, None), module_head_step),
                "head BLAS 1": (setting(n, n, 1), module_head_step),
            }
            if n > 1:
                # lstmfast alone with its BLAS single-threaded, and the other way round for the
                # module: PyTorch single-threaded, the kernels' BLAS gets the n threads
                cases["alone BLAS 1"] = (setting(n, 1, None), lstmfast_step)
                cases["module torch 1"] = (setting(1, n, None), module_step)
                cases["head torch 1"] = (setting(1, n, None), module_head_step)
            previous = lt.get_blas_threads()
            try:
                r = compare(cases, args.reps, args.trials)
            finally:
                setting(n, n, previous)()
            rows.append((f"mb={mb} nIn={n_in} h={h} T={T}", n,
                         *[r.get(k) for k in ("alone", "alone BLAS 1", "module BLAS n", "module BLAS 1",
                                              "module torch 1", "head BLAS n", "head BLAS 1",
                                              "head torch 1")]))
            print(f"mb={mb} nIn={n_in} h={h} T={T} threads={n}: " +
                  ", ".join(f"{k} {v:.2f} ms" for k, v in r.items()), flush=True)
    try:
        print(f"# load average after: {os.getloadavg()}")
    except OSError:
        pass
    print()
    print("| problem | n threads | lstmfast alone, BLAS n | lstmfast alone, BLAS 1 | module, BLAS n | "
          "module, BLAS 1 | module, torch 1 + BLAS n | + head, BLAS n | + head, BLAS 1 | "
          "+ head, torch 1 + BLAS n |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | " + " | ".join("-" if v is None else f"{v:.2f} ms"
                                                  for v in r[2:]) + " |")


if __name__ == "__main__":
    main()
