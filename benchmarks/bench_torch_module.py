"""lstmfast.torch.LSTM inside PyTorch against the same work through lstmfast's functional API;
and (``pools``) the two thread pools in one process.

Default mode: the module against the functional API on the same work. Configurations
(CONFIGURATIONS): num_layers 1 and 2, one direction and bidirectional, proj_size = h/2 with one
layer and with two bidirectional layers. Steps: "train" = forward, the loss 0.5 * mean(out^2),
backward and an SGD step (the module: torch.optim.SGD after zero_grad; the functional side:
lstm_forward / lstm_backward per layer and direction, the loss and the update in NumPy),
"backprop" = the same with a fixed dL/d(out) in place of the loss (the module:
out.backward(grad); the functional side: the same values as its epsilon), so that the loss's
autograd in torch (its temporaries page-faulted on every step: 0.2-1 ms with two directions)
does not count as the module's, "infer" = the forward pass alone (the module under
torch.no_grad()). Also measured on its own:
what every forward call of the module does to hand nn.LSTM's parameters to the kernels (views
in nn.LSTM's gate order and the two biases summed; a reordered copy with peepholes) (its share
of a step). tests/torch/test_benchmark_torch_module.py checks
that both sides give the same outputs, losses and weights after a step.

    python benchmarks/bench_torch_module.py [--minibatch 32 --n-in 64 --hidden 128 --steps 50]
                                            [--threads 1,2] [--reps 40] [--configs 0,1]
                                            [--callgrind [--count-steps 2] [--no-timings]
                                             [--callgrind-keep DIR]]

prints per configuration and step the module's cost over the functional API's as ratios:
--callgrind counts the instructions per step of every case under valgrind's callgrind in a
child process (one thread; only the measured calls are counted), which repeat exactly; the
timings (at n threads: torch.set_num_threads(n), lstmfast's team and BLAS at n, the module at
its default lstmfast.torch.set_blas_threads(1)) call the module's and the functional side's
steps alternately and take medians, so a burst of load from elsewhere hits both alike: on
shared cores they are indications. --callgrind-keep keeps each case's dump for
callgrind_annotate (where the extra instructions go).

``pools`` mode (``python benchmarks/bench_torch_module.py pools [...]``): a training step of
lstmfast.torch.GravesLSTM inside PyTorch vs the same work through lstmfast alone, at 1 and 2
threads.

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

    python benchmarks/bench_torch_module.py pools [--minibatch 32 --n-in 64 --hidden 128
                                            --steps 50] [--reps 20] [--dtype float32] [--small]

Prints milliseconds per training step (the best of --trials medians of --reps steps, the cases
interleaved within each trial) and a markdown table. "lstmfast alone" runs with BLAS at n threads
(as lstmfast does by default).

Limiting the kernels' BLAS to one thread during the module's calls (the default,
lstmfast.torch.set_blas_threads(1)) cut the 2-thread step 1.7-4x; at 1 thread the module costs
lstmfast alone + 0.6 ms (autograd, loss and optimizer in torch) + ~20%.

``floor`` mode (``python benchmarks/bench_torch_module.py floor [--minibatch 32 --n-in 64
--hidden 128 --steps 50] [--reps 60] [--dtype float32]``): one layer and direction at one
thread, a forward pass keeping what the backward pass needs, then the backward pass with a given
dL/d(out) (weight gradients only), timed apart, the cases alternated: the module; the least any
integration through torch's autograd does (an autograd.Function calling the same two kernel
calls on the weights as the module hands them over, derived once, nothing checked); the same
two calls without torch; the functional API on its own Fortran-ordered arrays. What the
module costs over the functional API splits into the layout (kernels - functional), torch's
autograd around any Python operation (Function - kernels) and the module's own code (module -
Function).

``peers`` mode (``python benchmarks/bench_torch_module.py peers [--threads 1,2] [--rounds 3]
[--reps 20] [--configs ...]``): lstmfast.torch.LSTM against torch.nn.LSTM on the same
configurations (nn.LSTM's initial weights in both), a training step (loss 0.5 * mean(out^2),
SGD) and inference, each library in its own process, rounds alternating the two; medians.
"""
import argparse
import gc
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
from lstmfast import _team
from lstmfast.functional import _side_by_side


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


def add_shape_arguments(ap):
    """The problem's sizes and dtype: the same options in every mode."""
    ap.add_argument("--minibatch", type=int, default=32)
    ap.add_argument("--n-in", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])


def pools_main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(ap)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--small", action="store_true",
                    help="also a small problem (mb 8, nIn 16, h 32, T 50) where per-call overheads dominate")
    args = ap.parse_args(argv)

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


# ---------------------------------------------------------------------------------------------
# the module against the functional API on the same work

class FunctionalLSTM:
    """The module's network in lstmfast's functional API: NumPy weights in the kernels' layout
    (copied from the module), lstm_forward / lstm_backward per layer and direction (with the
    projection weights when proj_size > 0), directions concatenated as nn.LSTM does (and run
    side by side where the module runs them so: _directions), the loss 0.5 * mean(out^2) and
    plain SGD in NumPy."""

    def __init__(self, module):
        from lstmfast.torch._function import kernel_weights, projection_weights
        self.layers = []
        for layer in range(module.num_layers):
            directions = []
            for d in range(2 if module.bidirectional else 1):
                arrays = [a.copy(order="F")
                          for a in kernel_weights(*module._layer_parameters(layer, d))]
                if module.proj_size:
                    w_hr = getattr(module, f"weight_hr_l{layer}{'_reverse' if d else ''}")
                    arrays.append(projection_weights(w_hr, None)[0])
                directions.append(arrays)
            self.layers.append(directions)

    def forward(self, x, for_backprop):
        """x [mb, nIn, T] -> (out [mb, features, T], the ForwardResults per layer)."""
        results = []
        for directions in self.layers:
            layer = _directions([(lstmfast.lstm_forward, (x, *arrays[:3]),
                                  {"forwards": d == 0, "for_backprop": for_backprop,
                                   "projection_weights": arrays[3] if len(arrays) > 3 else None})
                                 for d, arrays in enumerate(directions)],
                                _layer_sizes(x.shape[0], x.shape[2], directions[0]))
            results.append(layer)
            x = layer[0].output if len(layer) == 1 else np.concatenate(
                [r.output for r in layer], axis=1)
        return x, results

    def train_step(self, x, lr, grad=None):
        """One step; returns the loss (computed as a training loop would, to report it). With
        `grad` ([mb, features, T]) that is dL/d(out), and there is no loss (None)."""
        out, results = self.forward(x, True)
        if grad is None:
            loss = 0.5 * np.mean(out * out)
            eps = out * (1.0 / out.size)               # d/d out of 0.5 * mean(out^2)
        else:
            loss, eps = None, grad
        for depth, directions, layer in zip(reversed(range(len(self.layers))),
                                            reversed(self.layers), reversed(results)):
            size = directions[0][1].shape[0]           # h, or P with a projection
            grad_input = None
            # the first layer's dL/dx is not wanted (x needs no gradient; the module skips it)
            gradients = _directions([(lstmfast.lstm_backward,
                                      (fwd, eps if len(directions) == 1
                                       else eps[:, d * size:(d + 1) * size]),
                                      {"input_gradient": depth > 0})
                                     for d, fwd in enumerate(layer)],
                                    _layer_sizes(eps.shape[0], eps.shape[2], directions[0]))
            for arrays, g in zip(directions, gradients):
                W, RW, b = arrays[:3]
                W -= lr * g.input_weights
                RW -= lr * g.recurrent_weights
                b -= (2.0 * lr) * g.bias        # nn.LSTM's two biases: their sum moves twice
                if len(arrays) > 3:
                    arrays[3] -= lr * g.projection_weights
                if depth > 0:
                    grad_input = g.input if grad_input is None else grad_input + g.input
            eps = grad_input
        return loss


def _layer_sizes(minibatch, steps, arrays):
    """(T, mb, nIn, h, P or 0) of a layer of FunctionalLSTM (`arrays`: W, RW, b[, W_proj])."""
    projection = arrays[3].shape[1] if len(arrays) > 3 else 0
    return steps, minibatch, arrays[0].shape[0], arrays[0].shape[1] // 4, projection


def _directions(calls, sizes):
    """The (function, args, kwargs) calls of a layer's directions, their results in order: two
    side by side, each pass on one thread and one of them on a worker of torch's OpenMP
    runtime, where the module runs them so (lstmfast.torch._ops._side_by_side_possible, given
    the layer's `sizes`: T, mb, nIn, h, P or 0), else one after the other."""
    if len(calls) == 2 and lt._ops._side_by_side_possible(*sizes):
        for call in calls:
            call[2]["_tuning"] = {"threads": 1}
        with lt._threads._blas_limit():
            return list(_side_by_side(_team.call_pair_on_openmp, *calls))
    return [function(*args, **kwargs) for function, args, kwargs in calls]


#: (num_layers, bidirectional, proj_size as a fraction of hidden_size)
CONFIGURATIONS = ((1, False, 0), (1, True, 0), (2, False, 0), (2, True, 0), (1, False, 0.5),
                  (2, True, 0.5))


def overhead_cases(mb, n_in, h, T, dtype, lr=0.01, configs=None):
    """{((num_layers, bidirectional, proj_size), mode, "module" | "functional"): step}, mode
    "train" (forward, loss, backward, SGD step), "backprop" (the same with a given dL/d(out)
    instead of the loss: the module's own cost, without the loss's autograd in torch against
    one NumPy expression), "infer" (forward only, no gradient kept) or "derive" (the module's
    preparation of the weights for the kernels alone); `configs`: indices into CONFIGURATIONS (None: all)."""
    cases = {}
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((mb, n_in, T)).astype(dtype)
    x_t = torch.from_numpy(np.ascontiguousarray(x_np.transpose(2, 0, 1)))    # [T, mb, nIn]
    t_dtype = torch.float32 if dtype == np.float32 else torch.float64
    for index, (num_layers, bidirectional, proj_fraction) in enumerate(CONFIGURATIONS):
        if configs is not None and index not in configs:
            continue
        proj_size = int(proj_fraction * h)
        torch.manual_seed(0)
        module = lt.LSTM(n_in, h, num_layers, bidirectional=bidirectional, proj_size=proj_size,
                         dtype=t_dtype)
        functional = FunctionalLSTM(module)
        opt = torch.optim.SGD(module.parameters(), lr=lr)

        def module_train(module=module, opt=opt):
            opt.zero_grad(set_to_none=True)
            out, _ = module(x_t)
            loss = 0.5 * out.pow(2).mean()
            loss.backward()
            opt.step()
            return loss

        def module_infer(module=module):
            with torch.no_grad():
                module(x_t)

        def derive(module=module):
            for layer in range(module.num_layers):
                for d in range(2 if module.bidirectional else 1):
                    derive_layout(module, layer, d)

        # dL/d(out) given: time-major for the module (as autograd hands it on), the same
        # values Fortran-ordered [mb, features, T] for the functional side (its own layout)
        features = (proj_size or h) * (2 if bidirectional else 1)
        grad_time_major = rng.standard_normal((T, mb, features)).astype(dtype) / (T * mb)
        grad_t = torch.from_numpy(grad_time_major)
        grad_np = np.asfortranarray(grad_time_major.transpose(1, 2, 0))

        def module_backprop(module=module, opt=opt, grad_t=grad_t):
            opt.zero_grad(set_to_none=True)
            out, _ = module(x_t)
            out.backward(grad_t)
            opt.step()

        config = (num_layers, bidirectional, proj_size)
        cases[config, "train", "module"] = module_train
        cases[config, "train", "functional"] = (
            lambda functional=functional: functional.train_step(x_np, lr))
        cases[config, "backprop", "module"] = module_backprop
        cases[config, "backprop", "functional"] = (
            lambda functional=functional, grad_np=grad_np: functional.train_step(x_np, lr,
                                                                                 grad_np))
        cases[config, "infer", "module"] = module_infer
        cases[config, "infer", "functional"] = (
            lambda functional=functional: functional.forward(x_np, False))
        cases[config, "derive", "module"] = derive
    return cases


def derive_layout(module, layer, direction):
    """What each forward call of the module does to hand one layer's and direction's weights
    to the kernels (measured on its own: its share of a step): lstm_forward's (W, RW, b,
    keywords) for them."""
    from lstmfast.torch._ops import kernel_arrays
    w_ih, w_hh, b_ih, b_hh, w_peep = module._layer_parameters(layer, direction)
    w_hr = getattr(module, f"weight_hr_l{layer}{'_reverse' if direction else ''}", None)
    return kernel_arrays(w_ih, w_hh, b_ih, b_hh, w_peep, w_hr)


def config_name(config):
    layers, bidirectional, proj_size = config
    return (f"layers={layers} {'bi' if bidirectional else 'uni'}"
            + (f" proj={proj_size}" if proj_size else ""))


def case_name(key):
    config, mode, impl = key
    return f"{config_name(config)} {mode} {impl}"


def count_instructions(args):
    """Each case's instructions per step, counted by callgrind in a child process: the child
    calls getppid() before a case's steps (callgrind zeroes its counters there) and getpgrp()
    after them (callgrind dumps), one thread each side, so only the measured calls count.
    Returns {key: instructions per step}; with --callgrind-keep DIR the per-case dumps are kept
    there (callgrind_annotate DIR/<case>.out gives the per-function costs)."""
    import glob
    import shutil
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                   "--zero-before=getppid", "--dump-before=getpgrp", sys.executable,
                   os.path.abspath(__file__), "--callgrind-child", *problem_args(args)]
        # valgrind runs AVX2's FMA instructions through slow helpers (a step of this size took
        # minutes): OpenBLAS's AVX kernels without FMA and lstmfast's baseline path (BLAS for
        # every product) count the same work on both sides in a tolerable time. The kernels'
        # share is then larger than on FMA / AVX-512 machines, where the ratios are higher:
        # the extra instructions per step (module - functional) are the figure that carries over
        env = {**os.environ, "LSTMFAST_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Sandybridge",
               "LSTMFAST_ISA": "baseline"}
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env)
        dumps = sorted(glob.glob(out + ".*"), key=lambda f: int(f.rsplit(".", 1)[1]))[1:]
        totals = []
        for dump in dumps:                 # (the first region, dropped, is the child's warm-up)
            with open(dump) as f:
                totals.append(next(int(line.split()[1]) for line in f
                                   if line.startswith(("totals:", "summary:"))))
        keys = list(overhead_cases(2, 2, args.hidden, 2, np.float32,   # the child's order
                                   configs=selected(args)))
        if len(totals) != len(keys):
            raise RuntimeError(f"callgrind gave {len(totals)} dumps for {len(keys)} cases")
        if args.callgrind_keep:
            os.makedirs(args.callgrind_keep, exist_ok=True)
            for key, dump in zip(keys, dumps):
                shutil.copy(dump, os.path.join(args.callgrind_keep,
                                               case_name(key).replace(" ", "_") + ".out"))
    return {key: total / args.count_steps for key, total in zip(keys, totals)}


def problem_args(args):
    return ["--minibatch", str(args.minibatch), "--n-in", str(args.n_in), "--hidden",
            str(args.hidden), "--steps", str(args.steps), "--dtype", args.dtype,
            "--count-steps", str(args.count_steps)] + (
                ["--configs", args.configs] if args.configs else [])


def selected(args):
    return None if args.configs is None else [int(i) for i in args.configs.split(",")]


def set_threads(n):
    """torch's pool, lstmfast's team and lstmfast's BLAS at n threads (the module keeps its
    default BLAS limit during its calls)."""
    torch.set_num_threads(n)
    lstmfast.set_num_threads(n)
    for pool in lt._blas_pools():
        pool.set(n)


def callgrind_child(args):
    set_threads(1)                         # valgrind runs threads one at a time anyway
    cases = overhead_cases(args.minibatch, args.n_in, args.hidden, args.steps,
                           np.dtype(args.dtype), configs=selected(args))
    for step in cases.values():            # first calls: allocations, buffer pool, lazy imports
        step()
    # a first region, not reported: the first one measured ran ~2x the instructions of the
    # same case measured later (whatever the order), so every reported case comes after it
    os.getppid()
    next(iter(cases.values()))()
    os.getpgrp()
    for step in cases.values():
        gc.collect()                       # no collection of earlier cases' garbage inside
        os.getppid()                       # callgrind: zero the counters
        for _ in range(args.count_steps):
            step()
        os.getpgrp()                       # callgrind: dump them


def alternate(module_step, functional_step, reps):
    """The two steps called alternately, `reps` times each (a burst of load from elsewhere
    hits both alike): (median module ms, median functional ms, median of the per-pair
    ratios). Each timed call follows an untimed one of the same side: at 2 threads the module's
    passes run on PyTorch's OpenMP workers and the functional side's on lstmfast's own, and
    each pool's threads spin for a while after their work, so the first call after a switch
    pays for the other side's spinning, which neither side's users see."""
    for _ in range(3):
        module_step()
        functional_step()
    gc.collect()
    m_times, f_times = [], []
    for i in range(reps):
        first, second = ((module_step, m_times), (functional_step, f_times))[::1 if i % 2 else -1]
        for step, times in (first, second):
            step()
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    ratios = [m / f for m, f in zip(m_times, f_times)]
    return (1e3 * statistics.median(m_times), 1e3 * statistics.median(f_times),
            statistics.median(ratios))


def overhead_main(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(ap)
    ap.add_argument("--reps", type=int, default=40, help="alternated steps per case and side")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count instructions per step with callgrind (one thread)")
    ap.add_argument("--no-timings", action="store_true", help="callgrind counts only")
    ap.add_argument("--count-steps", type=int, default=2, help="steps per case under callgrind")
    ap.add_argument("--configs", default=None,
                    help="comma-separated indices into CONFIGURATIONS (default: all)")
    ap.add_argument("--callgrind-keep", metavar="DIR",
                    help="keep each case's callgrind dump in DIR (for callgrind_annotate)")
    ap.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.callgrind_child:
        callgrind_child(args)
        return
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}, lstmfast {lstmfast.__version__}, dtype {args.dtype}, "
          f"mb={args.minibatch} nIn={args.n_in} h={args.hidden} T={args.steps}")
    counts = count_instructions(args) if args.callgrind else {}
    timed = {}
    thread_counts = [] if args.no_timings else [int(t) for t in args.threads.split(",")]
    if thread_counts:
        cases = overhead_cases(args.minibatch, args.n_in, args.hidden, args.steps,
                               np.dtype(args.dtype), configs=selected(args))
        previous = lt.get_blas_threads(), torch.get_num_threads()
        for n in thread_counts:
            set_threads(n)
            for key, step in cases.items():
                if key[1] == "derive":
                    timed[key[:2] + (n,)] = median_ms(step, args.reps)
                elif key[2] == "module":
                    timed[key[:2] + (n,)] = alternate(step, cases[key[:2] + ("functional",)],
                                                      args.reps)
        lt.set_blas_threads(previous[0])
        set_threads(previous[1])
    print()
    print("module / functional API: instructions per step (callgrind, 1 thread) and time per "
          "step (medians of alternated calls; the cores may be shared: an indication)")
    print()
    print("| configuration | step | module Ir | functional Ir | Ir ratio | weight preparation, "
          "Ir share |" + "".join(f" ms module / functional, {n} thr | time ratio, {n} thr | "
                                 f"weight preparation ms, {n} thr |" for n in thread_counts))
    print("|---|---|---|---|---|---|" + "---|---|---|" * len(thread_counts))
    rows = []
    for key in list(counts) + list(timed):
        if key[1] != "derive" and key[:2] not in rows:
            rows.append(key[:2])
    for config, mode in rows:
        ir = [counts.get((config, mode, impl)) for impl in ("module", "functional")]
        row = [config_name(config), mode]
        if ir[0] is None:
            row += ["-"] * 4
        else:
            derive = counts[config, "derive", "module"]
            row += [f"{ir[0] / 1e6:,.1f} M", f"{ir[1] / 1e6:,.1f} M", f"{ir[0] / ir[1]:.3f}",
                    f"{derive / ir[0]:.1%}"]
        for n in thread_counts:
            m, f, r = timed[config, mode, n]
            row += [f"{m:.2f} / {f:.2f}", f"{r:.3f}", f"{timed[config, 'derive', n]:.3f}"]
        print("| " + " | ".join(row) + " |", flush=True)


# ---------------------------------------------------------------------------------------------
# floor: torch's autograd around the kernels, without the module


class KernelsInAutograd(torch.autograd.Function):
    """The least a torch integration of one layer does: lstm_forward / lstm_backward on arrays
    prepared once (`arrays`: the module's W, RW, b and keywords, as its forward call hands them
    to the kernels), x time-major [T, mb, nIn], no checks; gradients of the weights only."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, arrays):
        W, RW, b, extra = arrays
        out = np.empty((x.shape[0], x.shape[1], RW.shape[0]), dtype=W.dtype)
        ctx.fwd = lstmfast.lstm_forward(x.numpy().transpose(1, 2, 0), W, RW, b,
                                        for_backprop=True, out=out.transpose(1, 2, 0), **extra)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):
        g = lstmfast.lstm_backward(ctx.fwd, grad_out.numpy().transpose(1, 2, 0),
                                   input_gradient=False)
        return (None, torch.from_numpy(g.input_weights.T),
                torch.from_numpy(g.recurrent_weights.T), torch.from_numpy(g.bias),
                torch.from_numpy(g.bias.copy()), None)


def floor_cases(mb, n_in, h, T, dtype):
    """({name: (forward, backward, reset)}, the module) for one layer and direction (see
    ``floor`` mode). Each forward keeps what its backward needs; each backward returns the
    weight gradients (torch's sides: in nn.LSTM's layout and gate order, w_ih, w_hh and each
    bias's; the functional API: its lstm_backward result, in the kernels' order); reset
    (untimed, None where nothing is kept) clears the parameters' gradients, so that every
    backward pass writes new ones instead of adding to the last."""
    from lstmfast.torch._ops import kernel_arrays
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((mb, n_in, T)).astype(dtype)                 # [mb, nIn, T]
    x_time_major = np.ascontiguousarray(x_np.transpose(2, 0, 1))            # [T, mb, nIn]
    grad_time_major = rng.standard_normal((T, mb, h)).astype(dtype) / (T * mb)
    grad_np = np.asfortranarray(grad_time_major.transpose(1, 2, 0))
    x_t, grad_t = torch.from_numpy(x_time_major), torch.from_numpy(grad_time_major)
    torch.manual_seed(0)
    module = lt.LSTM(n_in, h, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    parameters = module._layer_parameters(0, 0)[:4]
    arrays = kernel_arrays(*parameters, None, None)
    W, RW, b = FunctionalLSTM(module).layers[0][0]      # the default mode's functional side
    out = np.empty((T, mb, h), dtype=dtype)
    state = {}

    def reset():
        for p in parameters:
            p.grad = None

    def module_forward():
        state["module"] = module(x_t)[0]

    def module_backward():
        state["module"].backward(grad_t)
        return tuple(p.grad for p in parameters)

    def function_forward():
        state["function"] = KernelsInAutograd.apply(x_t, *parameters, arrays)

    def function_backward():
        state["function"].backward(grad_t)
        return tuple(p.grad for p in parameters)

    def kernels_forward():
        W_k, RW_k, b_k, extra = kernel_arrays(*parameters, None, None)
        state["kernels"] = lstmfast.lstm_forward(x_time_major.transpose(1, 2, 0), W_k, RW_k,
                                                 b_k, for_backprop=True,
                                                 out=out.transpose(1, 2, 0), **extra)

    def kernels_backward():
        g = lstmfast.lstm_backward(state["kernels"], grad_time_major.transpose(1, 2, 0),
                                   input_gradient=False)
        return g.input_weights.T, g.recurrent_weights.T, g.bias, g.bias

    def functional_forward():
        state["functional"] = lstmfast.lstm_forward(x_np, W, RW, b, for_backprop=True)

    def functional_backward():
        return lstmfast.lstm_backward(state["functional"], grad_np, input_gradient=False)

    return {"module": (module_forward, module_backward, reset),
            "Function": (function_forward, function_backward, reset),
            "kernels": (kernels_forward, kernels_backward, None),
            "functional": (functional_forward, functional_backward, None)}, module


def floor_main(argv):
    ap = argparse.ArgumentParser(description="the module against torch's autograd around the "
                                 "kernels, the kernels alone and the functional API")
    add_shape_arguments(ap)
    ap.add_argument("--reps", type=int, default=60, help="alternated passes per case")
    args = ap.parse_args(argv)
    set_threads(1)
    cases, _ = floor_cases(args.minibatch, args.n_in, args.hidden, args.steps,
                           np.dtype(args.dtype))
    for forward, backward, reset in cases.values():
        for _ in range(3):
            if reset is not None:
                reset()
            forward()
            backward()
    gc.collect()
    times = {name: ([], []) for name in cases}
    for i in range(args.reps):
        order = list(cases) if i % 2 else list(cases)[::-1]
        for name in order:
            forward, backward, reset = cases[name]
            if reset is not None:
                reset()
            t0 = time.perf_counter()
            forward()
            t1 = time.perf_counter()
            backward()
            times[name][0].append(t1 - t0)
            times[name][1].append(time.perf_counter() - t1)
    ms = {name: tuple(1e3 * statistics.median(t) for t in pair) for name, pair in times.items()}
    base = sum(ms["functional"])
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"lstmfast {lstmfast.__version__}, dtype {args.dtype}, mb={args.minibatch} "
          f"nIn={args.n_in} h={args.hidden} T={args.steps}, 1 thread; medians of {args.reps} "
          f"alternated passes")
    print()
    print("| case | forward ms | backward ms | total ms | over the functional API |")
    print("|---|---|---|---|---|")
    for name, (forward, backward) in ms.items():
        total = forward + backward
        print(f"| {name} | {forward:.3f} | {backward:.3f} | {total:.3f} | "
              f"{total - base:+.3f} ms ({total / base:.3f}x) |")


# ---------------------------------------------------------------------------------------------
# peers: the module against nn.LSTM, each in its own process

PEER_MODES = ("train", "infer")


def peer_steps(side, mb, n_in, h, T, dtype, configs):
    """{(config, mode): step} for one side ("lstmfast": lstmfast.torch.LSTM, "torch":
    nn.LSTM), nn.LSTM's initial weights (seed 0) in both."""
    t_dtype = torch.float32 if dtype == "float32" else torch.float64
    x = torch.randn(T, mb, n_in, dtype=t_dtype, generator=torch.Generator().manual_seed(1))
    steps = {}
    for index, (num_layers, bidirectional, proj_fraction) in enumerate(CONFIGURATIONS):
        if configs is not None and index not in configs:
            continue
        proj_size = int(proj_fraction * h)
        torch.manual_seed(0)
        module = torch.nn.LSTM(n_in, h, num_layers, bidirectional=bidirectional,
                               proj_size=proj_size, dtype=t_dtype)
        if side == "lstmfast":
            mine = lt.LSTM(n_in, h, num_layers, bidirectional=bidirectional,
                           proj_size=proj_size, dtype=t_dtype)
            mine.load_state_dict(module.state_dict())
            module = mine
        opt = torch.optim.SGD(module.parameters(), lr=0.01)

        def train(module=module, opt=opt):
            opt.zero_grad(set_to_none=True)
            out, _ = module(x)
            (0.5 * out.pow(2).mean()).backward()
            opt.step()

        def infer(module=module):
            with torch.no_grad():
                module(x)

        config = (num_layers, bidirectional, proj_size)
        steps[config, "train"] = train
        steps[config, "infer"] = infer
    return steps


def peer_child(args):
    import json
    torch.set_num_threads(args.peer_threads)
    lstmfast.set_num_threads(args.peer_threads)
    steps = peer_steps(args.peer_child, args.minibatch, args.n_in, args.hidden, args.steps,
                       args.dtype, selected(args))
    results = {}
    for key, step in steps.items():
        for _ in range(3):
            step()
        gc.collect()
        (layers, bidirectional, proj_size), mode = key
        results[f"{layers},{int(bidirectional)},{proj_size},{mode}"] = median_ms(step, args.reps)
    print(json.dumps(results))


def peers_main(argv):
    import json
    import subprocess
    ap = argparse.ArgumentParser(description="lstmfast.torch.LSTM against torch.nn.LSTM, each "
                                 "in its own process (rounds alternating the two)")
    add_shape_arguments(ap)
    ap.add_argument("--reps", type=int, default=20, help="timed steps per case and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--configs", default=None,
                    help="comma-separated indices into CONFIGURATIONS (default: all)")
    ap.add_argument("--peer-child", choices=["lstmfast", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--peer-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer_child:
        peer_child(args)
        return
    threads = [int(t) for t in args.threads.split(",")]
    medians = {}
    for n in threads:
        runs = {"lstmfast": [], "torch": []}
        for _ in range(args.rounds):
            for side in runs:
                command = [sys.executable, os.path.abspath(__file__), "peers", *argv,
                           "--peer-child", side, "--peer-threads", str(n)]
                out = subprocess.run(command, check=True, capture_output=True, text=True)
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for side, results in runs.items():
            for key in results[0]:
                medians[key, side, n] = statistics.median(r[key] for r in results)
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"lstmfast {lstmfast.__version__}, dtype {args.dtype}, mb={args.minibatch} "
          f"nIn={args.n_in} h={args.hidden} T={args.steps}; medians of {args.rounds} rounds "
          f"(each a median of {args.reps} steps), one process per library and round")
    print()
    print("| configuration | step |" + "".join(
        f" ms lstmfast.torch / nn.LSTM, {n} thr | nn.LSTM / lstmfast.torch, {n} thr |"
        for n in threads))
    print("|---|---|" + "---|---|" * len(threads))
    for key in dict.fromkeys(key for key, _, _ in medians):
        layers, bidirectional, proj_size, mode = key.split(",")
        config = (int(layers), bidirectional == "1", int(proj_size))
        row = f"| {config_name(config)} | {mode} |"
        for n in threads:
            mine, theirs = medians[key, "lstmfast", n], medians[key, "torch", n]
            row += f" {mine:.2f} / {theirs:.2f} | {theirs / mine:.2f}x |"
        print(row)


if __name__ == "__main__":
    if sys.argv[1:2] == ["pools"]:
        pools_main(sys.argv[2:])
    elif sys.argv[1:2] == ["peers"]:
        peers_main(sys.argv[2:])
    elif sys.argv[1:2] == ["floor"]:
        floor_main(sys.argv[2:])
    else:
        overhead_main(sys.argv[1:])
