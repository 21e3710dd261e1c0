"""A training step of lstmfast.torch.GravesLSTM inside PyTorch vs the same work through lstmfast
alone, at 1 and 2 threads (issue 6, "Thread pools").

PyTorch's intra-op pool (OpenMP) and the OpenBLAS behind lstmfast's kernels (SciPy's) are two
thread pools in one process. When both are active they interfere: a pool's threads spin for a
while after their work, and a small GEMM of the other pool issued meanwhile waits for cores.
Cases per thread count n (torch.set_num_threads(n); lstmfast's BLAS at n unless said):

  lstmfast alone       lstm_forward(for_backprop) + lstm_backward + SGD update in NumPy
                       (BLAS at n threads)
  module, BLAS n       lstmfast.torch module, loss and SGD in torch, BLAS left at n threads
                       (lstmfast.torch.set_blas_threads(None))
  module, BLAS 1       the same, BLAS limited to 1 thread during the module's calls
                       (set_blas_threads(1); the default "auto" does this when torch uses > 1 thread)
  + head: BLAS n / 1   the module followed by a torch Linear head on every step (torch's pool
                       busy between the kernels' calls: where the pools fight)

    python benchmarks/bench_torch_module.py [--minibatch 32 --n-in 64 --hidden 128 --steps 50]
                                            [--reps 20] [--dtype float32] [--small]

Prints median milliseconds per training step (best of 3 medians) and a markdown table.
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
from threadpoolctl import ThreadpoolController

import lstmfast.torch as lt


def timeit(step, reps, trials=3):
    for _ in range(3):
        step()
    medians = []
    for _ in range(trials):
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    return 1e3 * min(medians)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minibatch", type=int, default=32)
    ap.add_argument("--n-in", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--reps", type=int, default=20)
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

    controller = ThreadpoolController()
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
            torch.set_num_threads(n)
            with controller.limit(limits=n, user_api="blas"):
                alone = timeit(lstmfast_step, args.reps)
                previous = lt.set_blas_threads(None)
                try:
                    mod_n = timeit(module_step, args.reps)
                    head_n = timeit(module_head_step, args.reps)
                    lt.set_blas_threads(1)
                    mod_1 = timeit(module_step, args.reps)
                    head_1 = timeit(module_head_step, args.reps)
                finally:
                    lt.set_blas_threads(previous)
            rows.append((f"mb={mb} nIn={n_in} h={h} T={T}", n, alone, mod_n, mod_1, head_n, head_1))
            print(f"mb={mb} nIn={n_in} h={h} T={T} threads={n}: lstmfast alone {alone:.2f} ms | "
                  f"module BLAS {n} {mod_n:.2f} ms, BLAS 1 {mod_1:.2f} ms | "
                  f"+head BLAS {n} {head_n:.2f} ms, BLAS 1 {head_1:.2f} ms", flush=True)
    try:
        print(f"# load average after: {os.getloadavg()}")
    except OSError:
        pass
    print()
    print("| problem | threads | lstmfast alone | module, BLAS n | module, BLAS 1 | "
          "module + head, BLAS n | module + head, BLAS 1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | " + " | ".join(f"{v:.2f} ms" for v in r[2:]) + " |")


if __name__ == "__main__":
    main()
