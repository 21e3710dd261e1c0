"""Do passes in two Python threads run in parallel? (Every pass releases the GIL.)

Two independent problems, each a forward pass with cache + a backward pass repeated `--reps`
times, are run (a) one after the other in one thread and (b) in two threads at once, with BLAS
limited to one thread per call (threadpoolctl) and lstmfast.set_num_threads(1), so that each
Python thread uses one core. If the
GIL were held during a pass, (b) could not be faster than (a). Prints the timings, the speed-up
(serial time / threaded time, best of `--trials`) and a markdown snippet for
benchmarks/RESULTS.md. It also reports the process's CPU time over wall time during the
threaded runs: above 1 only if both threads computed at once (impossible with the GIL held).

    python benchmarks/bench_threads.py [--threads 2] [--minibatch 32 --n-in 64 --hidden 128
                                        --steps 100] [--reps 8] [--trials 5] [--dtype float64]
                                       [--json out.json] [--min-speedup X]

The figure only means something on an otherwise idle machine with at least `--threads` cores;
the script prints the load average before and after so that a busy run can be recognised.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np

import lstmfast  # imported first: loads SciPy's BLAS, so that threadpoolctl sees it

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover - the test extra installs it
    sys.exit("bench_threads.py needs threadpoolctl (pip install threadpoolctl, or lstmfast[test])")


def make_problem(seed, args, dtype):
    rng = np.random.default_rng(seed)
    G = 4 * args.hidden
    return dict(
        x=rng.standard_normal((args.minibatch, args.n_in, args.steps)).astype(dtype),
        W=np.asfortranarray(0.1 * rng.standard_normal((args.n_in, G))).astype(dtype, order="F"),
        RW=np.asfortranarray(0.1 * rng.standard_normal((args.hidden, G + 3))).astype(dtype,
                                                                                    order="F"),
        b=np.zeros(G, dtype),
        eps=rng.standard_normal((args.minibatch, args.hidden, args.steps)).astype(dtype),
    )


def work(problem, reps):
    grads = None
    for _ in range(reps):
        fwd = lstmfast.lstm_forward(problem["x"], problem["W"], problem["RW"], problem["b"],
                                    for_backprop=True)
        grads = lstmfast.lstm_backward(fwd, problem["eps"])
    return grads


def run_serial(problems, reps):
    start = time.perf_counter()
    results = [work(p, reps) for p in problems]
    return time.perf_counter() - start, results


def run_threaded(problems, reps):
    results = [None] * len(problems)
    barrier = threading.Barrier(len(problems) + 1)

    def target(i):
        barrier.wait()
        results[i] = work(problems[i], reps)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    barrier.wait()
    start, cpu_start = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    # CPU time of the whole process (BLAS runs in the calling threads here) over wall time:
    # above 1 only if the threads computed at the same time, i.e. with the GIL released
    return wall, results, (time.process_time() - cpu_start) / wall


def same(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("input_weights", "recurrent_weights", "bias", "input"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--n-in", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--reps", type=int, default=8, help="passes per thread per trial")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--min-speedup", type=float, default=None,
                        help="exit with status 1 if the speed-up is below this")
    args = parser.parse_args(argv)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    problems = [make_problem(seed, args, np.dtype(args.dtype)) for seed in range(args.threads)]

    # one core per Python thread: BLAS at one thread (below) and lstmfast's time-loop team off
    # (with it, serial passes would use both cores and the threaded ones split the team, whose
    # results differ from single-thread ones by rounding)
    lstmfast.set_num_threads(1)
    with threadpool_limits(limits=1):
        blas = [f"{i.get('internal_api')} {os.path.basename(i.get('filepath', ''))} "
                f"threads={i.get('num_threads')}" for i in threadpool_info()
                if i.get("user_api") == "blas"]
        work(problems[0], 1)                                  # warm-up
        serial_times, threaded_times, cpu_ratios = [], [], []
        for trial in range(args.trials):
            # alternate the order so that neither mode always runs on a warmer machine
            if trial % 2 == 0:
                t_serial, serial_results = run_serial(problems, args.reps)
                t_threaded, threaded_results, cpu_ratio = run_threaded(problems, args.reps)
            else:
                t_threaded, threaded_results, cpu_ratio = run_threaded(problems, args.reps)
                t_serial, serial_results = run_serial(problems, args.reps)
            serial_times.append(t_serial)
            threaded_times.append(t_threaded)
            cpu_ratios.append(cpu_ratio)
            if not all(same(a, b) for a, b in zip(serial_results, threaded_results)):
                sys.exit("threaded results differ from serial results")
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    passes = args.threads * args.reps
    best_serial, best_threaded = min(serial_times), min(threaded_times)
    speedup = best_serial / best_threaded
    median_speedup = statistics.median(s / t for s, t in zip(serial_times, threaded_times))
    per_pass_ms = best_serial / passes * 1e3
    shape = (f"minibatch={args.minibatch}, nIn={args.n_in}, h={args.hidden}, T={args.steps}, "
             f"{args.dtype}, peepholes")

    print(f"lstmfast {lstmfast.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {cores} usable cores, numpy {np.__version__}")
    print("BLAS (limited to 1 thread per call):", "; ".join(blas) or "not found by threadpoolctl")
    if load_before is not None:
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"problem: {shape}; forward (for_backprop) + backward = one pass")
    print(f"{passes} passes serially: best {best_serial:.3f} s "
          f"({per_pass_ms:.1f} ms/pass), all {[round(t, 3) for t in serial_times]}")
    print(f"{args.threads} threads x {args.reps} passes: best {best_threaded:.3f} s, "
          f"all {[round(t, 3) for t in threaded_times]}")
    print(f"speed-up (best serial / best threaded): {speedup:.2f}x "
          f"(median per trial {median_speedup:.2f}x; ideal {min(args.threads, cores)}x)")
    print(f"CPU time / wall time of the threaded runs: {max(cpu_ratios):.2f} (best; median "
          f"{statistics.median(cpu_ratios):.2f}; at most ~1 if a pass held the GIL)")
    print()
    print("Markdown for benchmarks/RESULTS.md:")
    print()
    print(f"### Threads: {args.threads} Python threads vs serial, BLAS at 1 thread each\n")
    load = (f"; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
            if load_before is not None else "")
    print(f"{shape}; one pass = lstm_forward(for_backprop=True) + lstm_backward; "
          f"{cores} cores, {'; '.join(blas)}{load}.\n")
    print("| mode | passes | best time (s) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| serial, 1 thread | {passes} | {best_serial:.3f} | 1.00x |")
    print(f"| {args.threads} threads | {passes} | {best_threaded:.3f} | {speedup:.2f}x |")
    print()
    print(f"(best of {args.trials} trials; median speed-up {median_speedup:.2f}x; CPU/wall "
          f"time of the threaded runs up to {max(cpu_ratios):.2f}; threaded results bitwise equal "
          f"to serial ones.)")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"shape": shape, "threads": args.threads, "cores": cores,
                       "passes": passes, "serial_s": serial_times, "threaded_s": threaded_times,
                       "speedup_best": speedup, "speedup_median": median_speedup,
                       "threaded_cpu_per_wall": cpu_ratios,
                       "blas": blas, "load_before": load_before, "load_after": load_after},
                      handle, indent=2)
    if args.min_speedup is not None and speedup < args.min_speedup:
        print(f"speed-up {speedup:.2f}x is below --min-speedup {args.min_speedup}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
