#!/usr/bin/env python
"""Where does lstmfast's time go? A sampling profile (Linux `perf`) split into BLAS and the rest.

    python benchmarks/profile_lstm.py                       # (50, 32, 64, 128) float32, 1 thread
    python benchmarks/profile_lstm.py --shape 100,64,256,256 --dtype float64 --modes forward
    python benchmarks/profile_lstm.py --source-tree        # an in-place build instead of the installed package

For each mode (forward = lstm_forward for inference; backward = lstm_backward on a fixed forward
record; training = forward(for_backprop=True) + backward) it runs the call in a loop for
`--seconds` under `perf record -e cpu-clock` (a software clock, so it works in VMs without a PMU;
recording is enabled only around the timed loop, through perf's control FIFO) and attributes the
samples by shared object:

  BLAS          scipy's OpenBLAS (GEMM kernels, packing, anything else in libscipy_openblas)
  lstmfast      the compiled kernels (element-wise gate code, packing loops, inlined math)
  libm          exp/tanh/... called from the kernels
  libc          memset/memcpy/malloc (zeroing, copies, allocation)
  OS kernel     page faults (fresh allocations being touched), scheduling
  Python/NumPy  the interpreter and NumPy: the Python API's validation and allocation

and prints the top symbols. Also prints the wall time per call measured in the same loop.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CATEGORIES = (
    ("BLAS", ("openblas", "libblas", "mkl")),
    ("lstmfast", ("kernels.cpython", "_forward.cpython", "_backward.cpython", "_stream.cpython",
                  "_team.cpython", "_training_math.cpython", "_interrupt.cpython", "lstmfast")),
    ("libm", ("libm.so", "libm-", "libmvec")),
    ("libc", ("libc.so", "libc-", "ld-linux")),
    ("OS kernel", ("[kernel", "kallsyms")),
    ("Python/NumPy", ("python", "libpython", "_multiarray", "numpy", "[unknown]", "perf-")),
)


def category(dso, sym=""):
    d = dso.lower()
    if any(k in d for k in dict(CATEGORIES)["lstmfast"]) and "gemm" in sym.lower():
        return "lstmfast GEMM"      # a GEMM compiled into lstmfast itself (not OpenBLAS)
    for name, keys in CATEGORIES:
        if any(k in d for k in keys):
            return name
    return "other"


def inner(args):
    """The profiled process: set up, then enable perf, loop, disable perf."""
    import numpy as np
    sys.path.insert(0, HERE)
    import lstmfast
    import scipy.linalg.cython_blas  # noqa: F401  (load scipy's OpenBLAS before limiting threads)
    from threadpoolctl import threadpool_info, threadpool_limits
    threadpool_limits(args.threads, user_api="blas")
    lstmfast.set_num_threads(args.threads)   # lstmfast's own time-loop team, as in bench_lstm
    so = lstmfast.kernels.__file__
    with open(so, "rb") as fh:
        print(f"@@LSTMFAST {lstmfast.__version__} {so} sha1 {hashlib.sha1(fh.read()).hexdigest()[:12]}, "
              f"built {time.ctime(os.path.getmtime(so))}", flush=True)
    print("@@BLAS " + "; ".join(f"{os.path.basename(i['filepath'])} {i.get('architecture')} "
                                f"threads={i['num_threads']}" for i in threadpool_info()
                                if i.get("user_api") == "blas"), flush=True)
    from bench_lstm import lstmfast_layout, make_problem
    T, mb, n_in, h = args.shape
    prob = make_problem((T, mb, n_in, h), np.dtype(args.dtype))
    x = lstmfast_layout(prob["x_tmn"], "F")
    eps = lstmfast_layout(prob["eps_tmh"], "F")
    W, RW, b = prob["W"], prob["RWp"] if args.peepholes else prob["RW"], prob["b"]
    fixed = lstmfast.lstm_forward(x, W, RW, b, for_backprop=True)
    if args.mode == "forward":
        def fn():
            lstmfast.lstm_forward(x, W, RW, b)
    elif args.mode == "backward":
        def fn():
            lstmfast.lstm_backward(fixed, eps)
    else:
        def fn():
            lstmfast.lstm_backward(lstmfast.lstm_forward(x, W, RW, b, for_backprop=True), eps)
    for _ in range(3):
        fn()
    ctl = open(args.ctl, "w") if args.ctl else None
    ack = open(args.ack, "r") if args.ack else None
    if ctl:
        ctl.write("enable\n")
        ctl.flush()
        ack.readline()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < args.seconds:
        fn()
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ctl:
        ctl.write("disable\n")
        ctl.flush()
        ack.readline()
    print(f"@@CALLS {n} {wall / n * 1e3:.4f} {cpu / n * 1e3:.4f}", flush=True)


def profile(args, mode):
    perf = shutil.which("perf")
    if perf is None:
        sys.exit("perf not found (apt-get install linux-perf)")
    tmp = tempfile.mkdtemp(prefix="lstmprof")
    data, ctl, ack = (os.path.join(tmp, n) for n in ("perf.data", "ctl", "ack"))
    os.mkfifo(ctl)
    os.mkfifo(ack)
    env = dict(os.environ)
    if args.source_tree:
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [perf, "record", "-q", "-e", "cpu-clock", "-F", str(args.freq), "-D", "-1",
           f"--control=fifo:{ctl},{ack}", "-o", data, "--",
           sys.executable, os.path.abspath(__file__), "--inner", "--mode", mode,
           "--shape", ",".join(map(str, args.shape)), "--dtype", args.dtype,
           "--threads", str(args.threads), "--seconds", str(args.seconds),
           "--ctl", ctl, "--ack", ack] + (["--peepholes"] if args.peepholes else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
    calls = [line for line in proc.stdout.splitlines() if line.startswith("@@CALLS")]
    if proc.returncode != 0 or not calls:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"profiling {mode} failed")
    _, n, wall_ms, cpu_ms = calls[0].split()
    blas = [line[7:] for line in proc.stdout.splitlines() if line.startswith("@@BLAS ")]
    package = [line[11:] for line in proc.stdout.splitlines() if line.startswith("@@LSTMFAST ")]
    rep = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                          "--sort", "dso,sym", "--field-separator", "\t", "--percent-limit", "0"],
                         capture_output=True, text=True)
    rows = []
    for line in rep.stdout.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().endswith("%"):
            continue
        rows.append((float(parts[0].strip().rstrip("%")), parts[1].strip(), parts[2].strip()))
    shutil.rmtree(tmp, ignore_errors=True)
    cats = {}
    for pct, dso, sym in rows:
        cat = category(dso, sym)
        cats[cat] = cats.get(cat, 0.0) + pct
    return {"blas": blas[0] if blas else "?", "lstmfast": package[0] if package else "?", "calls": int(n),
            "wall_ms": float(wall_ms), "cpu_ms": float(cpu_ms), "categories": cats,
            "top": sorted(rows, reverse=True)[:args.top]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="50,32,64,128", type=lambda v: tuple(int(x) for x in v.split(",")),
                   help="T,minibatch,nIn,h")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", default="forward,backward,training")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--freq", type=int, default=4000, help="samples per second")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--peepholes", action="store_true", help="GravesLSTM instead of LSTM")
    p.add_argument("--source-tree", action="store_true",
                   help="profile the source tree's lstmfast/ (built in place with `python setup.py "
                        "build_ext --inplace`) instead of the installed package")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="forward", help=argparse.SUPPRESS)
    p.add_argument("--ctl", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ack", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        inner(args)
        return
    print(f"lstmfast profile: shape (T, mb, nIn, h) = {args.shape}, {args.dtype}, {args.threads} thread(s)"
          f"{', peepholes' if args.peepholes else ''}; load average {os.getloadavg()[0]:.2f}")
    names = ["BLAS", "lstmfast GEMM"] + [n for n, _ in CATEGORIES[1:]] + ["other"]
    for mode in args.modes.split(","):
        r = profile(args, mode)
        print(f"\n== {mode}: {r['wall_ms']:.3f} ms/call wall, {r['cpu_ms']:.3f} ms CPU ({r['calls']} calls)")
        print(f"   lstmfast: {r['lstmfast']}")
        print(f"   BLAS libraries: {r['blas']}")
        print("   " + ", ".join(f"{n} {r['categories'].get(n, 0.0):.1f}%" for n in names
                                if r["categories"].get(n, 0.0) >= 0.05))
        c = r["categories"]
        gemm = c.get("BLAS", 0.0) + c.get("lstmfast GEMM", 0.0)
        elementwise = c.get("lstmfast", 0.0) + c.get("libm", 0.0)
        print(f"   => GEMM (OpenBLAS + lstmfast's own) {gemm:.1f}%, element-wise/packing code in "
              f"lstmfast (+libm) {elementwise:.1f}%, rest {100 - gemm - elementwise:.1f}% "
              f"(of {r['cpu_ms']:.2f} ms CPU per call)")
        for pct, dso, sym in r["top"]:
            print(f"   {pct:6.2f}%  {category(dso, sym):<13} {os.path.basename(dso):<42} {sym}")


if __name__ == "__main__":
    main()
