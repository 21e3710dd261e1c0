"""The training loop users run, timed in lstmfast and in PyTorch (used by bench_lstm.py).

A character model like `lstmfast demo`'s: two LSTM(128) layers, a softmax output over the
characters, Adam, truncated BPTT of 50 steps, minibatches of 32 sequences of 100 characters.

* lstmfast: `Sequential([LSTM, LSTM, RnnOutputLayer(softmax, mcxent)], updater=Adam,
  tbptt_forward_length=50)`, one `fit_batch(x, y)` per minibatch (x, y one-hot [32, V, 100]);
* PyTorch: `nn.LSTM(V, 128, num_layers=2)` and `nn.Linear(128, V)`, `torch.optim.Adam`; per
  minibatch two windows of 50 steps, each a forward from the state the previous window left
  (detached), the cross-entropy summed over the window's characters and divided by the
  minibatch (DL4J's score, which `fit_batch` minimises), backward and an Adam step; the state
  starts from zeros in every minibatch, as `fit_batch` clears it.

The text is drawn from a fixed first-order Markov chain over V = 77 characters (each character
has a few likely successors), so that both models visibly learn: the loss per character of the
first and last timed minibatch is recorded beside the rate.

Each library runs in its own process, at the thread count given by OMP_NUM_THREADS in its
environment and otherwise at its own defaults (bench_lstm.py sets nothing else): lstmfast's
time-loop threads, SciPy's and NumPy's OpenBLAS and PyTorch's OpenMP pool all follow it. The
rate is characters per second of training (minibatch x sequence length per fit_batch).

Run on its own, it times both libraries at 1 and 2 threads, each job in a fresh process,
alternating the libraries and thread counts round by round, and prints each library's median
rate, lstmfast's rate over PyTorch's and each library's 2-thread / 1-thread speed-up, with the
load average around every job (figures from a loaded machine are indications only):

    python benchmarks/train_loop.py                  # about 4 minutes on 2 cores
    python benchmarks/train_loop.py --quick          # about 2 minutes
    python benchmarks/train_loop.py --threads 1,2,4 --rounds 5 --json loop.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

# the model and the loop (the demo's defaults for its character model; Adam's epsilon is both
# libraries' default)
CHAR_MODEL = {"vocab": 77, "hidden": 128, "layers": 2, "seq_len": 100, "tbptt": 50,
              "minibatch": 32, "learning_rate": 1e-2, "adam_epsilon": 1e-8}
#: distinct minibatches prepared before timing (the loop cycles through them)
POOL = 8


def markov_text(n_chars, vocab, seed=2024):
    """n_chars character codes from a random first-order Markov chain whose every state has
    three successors of probability 0.6, 0.25 and 0.15 (entropy about 0.94 nats per
    character, against ln(vocab) = 4.34 for a model that has learnt nothing)."""
    rng = np.random.default_rng(seed)
    successors = np.stack([rng.choice(vocab, 3, replace=False) for _ in range(vocab)])
    picks = rng.choice(3, size=n_chars, p=[0.6, 0.25, 0.15])
    codes = np.empty(n_chars, dtype=np.intp)
    codes[0] = 0
    for i in range(1, n_chars):
        codes[i] = successors[codes[i - 1], picks[i]]
    return codes


def minibatches(cfg, seed=2024, count=POOL):
    """`count` minibatches of character windows [minibatch, seq_len + 1] (inputs and the next
    characters as labels)."""
    mb, steps = cfg["minibatch"], cfg["seq_len"]
    codes = markov_text(count * mb * (steps + 1), cfg["vocab"], seed)
    return codes.reshape(count, mb, steps + 1)


def lstmfast_model(cfg, dtype):
    """The character model as an lstmfast Sequential (DL4J's initialisation)."""
    import lstmfast
    V, hidden = cfg["vocab"], cfg["hidden"]
    seeds = np.random.SeedSequence(7).generate_state(cfg["layers"] + 1)
    layers, n_in = [], V
    for i in range(cfg["layers"]):
        layers.append(lstmfast.LSTM(n_in, hidden, dtype=dtype, seed=int(seeds[i])))
        n_in = hidden
    layers.append(lstmfast.RnnOutputLayer(n_in, V, activation="softmax", loss="mcxent", dtype=dtype,
                                          seed=int(seeds[-1])))
    return lstmfast.Sequential(layers, updater=lstmfast.Adam(learning_rate=cfg["learning_rate"],
                                                             epsilon=cfg["adam_epsilon"]),
                               tbptt_forward_length=cfg["tbptt"], tbptt_backward_length=cfg["tbptt"])


def torch_model(cfg, dtype):
    """The same model in PyTorch (its own initialisation): (nn.LSTM, nn.Linear)."""
    import torch
    torch.manual_seed(7)
    tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    lstm = torch.nn.LSTM(cfg["vocab"], cfg["hidden"], num_layers=cfg["layers"]).to(tdtype)
    out = torch.nn.Linear(cfg["hidden"], cfg["vocab"]).to(tdtype)
    return lstm, out


def copy_weights(net, lstm, out):
    """Give the PyTorch model the lstmfast model's weights (for checking that the two loops
    compute the same thing)."""
    import torch
    from lstmfast.convert import lstmfast_to_torch
    with torch.no_grad():
        for k, layer in enumerate(net.layers[:-1]):
            for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                   lstmfast_to_torch(layer.W, layer.RW, layer.b)):
                getattr(lstm, f"{name}_l{k}").copy_(torch.from_numpy(value))
        out.weight.copy_(torch.from_numpy(np.ascontiguousarray(net.layers[-1].W.T)))
        out.bias.copy_(torch.from_numpy(np.ascontiguousarray(net.layers[-1].b).reshape(-1)))


def lstmfast_step(net, windows):
    """A function that trains the lstmfast model on the next of the prepared minibatches (one
    `fit_batch`) and returns its loss per character."""
    V = net.layers[0].n_in
    batch, steps = windows.shape[1], windows.shape[2] - 1
    data = []
    for w in windows:                                  # one-hot [minibatch, V, T], as the demo's
        x = np.zeros((batch, V, steps), dtype=net.dtype)
        y = np.zeros((batch, V, steps), dtype=net.dtype)
        b = np.repeat(np.arange(batch), steps)
        t = np.tile(np.arange(steps), batch)
        x[b, w[:, :-1].reshape(-1), t] = 1
        y[b, w[:, 1:].reshape(-1), t] = 1
        data.append((x, y))
    state = {"i": 0}

    def step():
        x, y = data[state["i"] % len(data)]
        state["i"] += 1
        net.fit_batch(x, y)
        return float(np.sum(net.last_window_scores)) / steps
    return step


def torch_step(lstm, out, cfg, windows):
    """The same loop in PyTorch: per minibatch, windows of cfg["tbptt"] steps from the state the
    previous window left (detached), each followed by an Adam step."""
    import torch
    V, k = cfg["vocab"], cfg["tbptt"]
    tdtype = out.weight.dtype
    opt = torch.optim.Adam(list(lstm.parameters()) + list(out.parameters()), lr=cfg["learning_rate"],
                           eps=cfg["adam_epsilon"])
    batch, steps = windows.shape[1], windows.shape[2] - 1
    data = []
    for w in windows:                                  # [T, minibatch, V] one-hot, [T, minibatch]
        codes = torch.from_numpy(np.ascontiguousarray(w.T))
        x = torch.nn.functional.one_hot(codes[:-1], V).to(tdtype)
        data.append((x, codes[1:].contiguous()))
    state = {"i": 0}

    def step():
        x, y = data[state["i"] % len(data)]
        state["i"] += 1
        hc = None
        total = 0.0
        for s in range(0, steps, k):
            h, hc = lstm(x[s:s + k], hc)
            logits = out(h)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y[s:s + k].reshape(-1),
                                                     reduction="sum") / batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hc = (hc[0].detach(), hc[1].detach())
            total += loss.detach().item()
        return total / steps
    return step


def thread_settings(lib):
    """What each library decided on its own (nothing is set in the worker)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = list
    settings = {"blas": [{"file": i.get("filepath", "").rsplit("/", 1)[-1],
                          "num_threads": i.get("num_threads"), "architecture": i.get("architecture")}
                         for i in threadpool_info() if i.get("user_api") == "blas"]}
    if lib == "lstmfast":
        import lstmfast
        settings["lstmfast_threads"] = lstmfast.get_num_threads()
    else:
        import torch
        settings["torch_threads"] = torch.get_num_threads()
    return settings


def run(lib, threads, dtype="float32", repeats=5, batches=8, warmup=2, cfg=None):
    """Time the loop in this process: `warmup` minibatches, then `repeats` samples of `batches`
    minibatches. One record (rates in characters per second)."""
    cfg = dict(CHAR_MODEL, **(cfg or {}))
    dtype = np.dtype(dtype)
    windows = minibatches(cfg)
    if lib == "lstmfast":
        step = lstmfast_step(lstmfast_model(cfg, dtype), windows)
    else:
        step = torch_step(*torch_model(cfg, dtype), cfg, windows)
    first_loss = step()
    for _ in range(warmup - 1):
        step()
    chars = cfg["minibatch"] * cfg["seq_len"]
    samples, losses, busy = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(batches):
            losses.append(step())
        wall = time.perf_counter() - t0
        samples.append(wall / batches)                            # seconds per minibatch
        busy.append((time.process_time() - c0) / wall)            # the process's CPUs in use
    median = statistics.median(samples)
    return {"shape": "charlm", "mode": "train_loop", "lib": lib, "threads": threads,
            "dtype": dtype.name, "model": cfg, "samples_s": samples, "median_s": median,
            "chars_per_s": chars / median, "chars_per_s_samples": [chars / s for s in samples],
            "batches_per_sample": batches, "loss_first": first_loss, "loss_last": losses[-1],
            # CPU time over wall time per sample: near the thread count on idle cores; well
            # below it when other processes took the cores (then the rate says little)
            "cpu_per_wall": statistics.median(busy),
            "loss_uniform": math.log(cfg["vocab"]), "settings": thread_settings(lib)}


# ---------------------------------------------------------------------------------------------
# standalone: each (library, thread count) in processes of its own, alternating

#: the floor at 2 threads and more: lstmfast against PyTorch, and against its own 1-thread rate
MIN_RATIO, MIN_SCALING = 1.1, 1.5


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _job(lib, threads, args):
    """One worker process: its record, with the load average before and after."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, os.path.abspath(__file__), "--worker", lib, "--worker-threads",
               str(threads), "--repeats", str(args.repeats), "--batches", str(args.batches),
               "--warmup", str(args.warmup)]
    load_before = _loadavg()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{lib} at {threads} threads failed:\n{done.stderr}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["loadavg"] = (load_before, _loadavg())
    return record


def summarize(records, threads_list):
    """Rows per thread count: each library's median rate over every sample of every round,
    lstmfast / PyTorch, and each library's speed-up over its own 1-thread rate."""
    samples = {}
    for r in records:
        samples.setdefault((r["lib"], r["threads"]), []).extend(r["chars_per_s_samples"])
    median = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for threads in threads_list:
        row = {"threads": threads}
        for lib in ("lstmfast", "torch"):
            rate = median.get((lib, threads))
            base = median.get((lib, 1))
            row[lib] = rate
            row[f"{lib}_scaling"] = rate / base if (rate and base and threads > 1) else None
        row["ratio"] = (row["lstmfast"] / row["torch"]) if (row["lstmfast"] and row["torch"]) else None
        loads = [x for r in records if r["threads"] == threads for x in r["loadavg"] if x is not None]
        row["loadavg"] = (min(loads), max(loads)) if loads else None
        rows.append(row)
    return rows


def _fmt(value, spec):
    """value formatted by spec; ratios ('.2f') with an x."""
    if value is None:
        return "-"
    return format(value, spec) + ("x" if spec == ".2f" else "")


def report(rows):
    lines = ["| threads | lstmfast chars/s | PyTorch chars/s | lstmfast / PyTorch | lstmfast speed-up "
             "| PyTorch speed-up | load average |", "|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        load = "-" if row["loadavg"] is None else f"{row['loadavg'][0]:.2f}-{row['loadavg'][1]:.2f}"
        lines.append(f"| {row['threads']} | {_fmt(row['lstmfast'], ',.0f')} | {_fmt(row['torch'], ',.0f')} "
                     f"| {_fmt(row['ratio'], '.2f')} | {_fmt(row['lstmfast_scaling'], '.2f')} "
                     f"| {_fmt(row['torch_scaling'], '.2f')} | {load} |")
    for row in rows:
        if row["threads"] > 1 and row["ratio"] is not None and row["lstmfast_scaling"] is not None:
            met = row["ratio"] >= MIN_RATIO and row["lstmfast_scaling"] >= MIN_SCALING
            lines.append(f"{row['threads']} threads: floor (>= {MIN_RATIO:g}x PyTorch, >= {MIN_SCALING:g}x "
                         f"lstmfast's 1-thread rate) {'met' if met else 'NOT met'} in this run")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and samples (about 2 minutes)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--libs", default="lstmfast,torch", help="libraries (default lstmfast,torch)")
    parser.add_argument("--rounds", type=int, help="processes per library and thread count (default 4, quick 2)")
    parser.add_argument("--repeats", type=int, help="samples per process (default 5, quick 3)")
    parser.add_argument("--batches", type=int, help="minibatches per sample (default 6, quick 4)")
    parser.add_argument("--warmup", type=int, default=2, help="minibatches before the samples (default 2)")
    parser.add_argument("--json", metavar="PATH", help="write the records and the summary here")
    parser.add_argument("--worker", choices=("lstmfast", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.batches = args.batches or (4 if args.quick else 6)
    if args.worker:
        record = run(args.worker, args.worker_threads, repeats=args.repeats, batches=args.batches,
                     warmup=args.warmup)
        print(json.dumps(record))
        return 0
    threads_list = sorted({int(t) for t in args.threads.split(",")})
    libs = [lib for lib in args.libs.split(",") if lib]
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}")
    print(f"model: {CHAR_MODEL}; {args.rounds} rounds x {args.repeats} samples x {args.batches} "
          f"minibatches per (library, threads)")
    records, started = [], time.time()
    for rnd in range(args.rounds):
        order = [(lib, t) for t in threads_list for lib in libs]
        if rnd % 2:
            order.reverse()
        for lib, threads in order:
            record = _job(lib, threads, args)
            records.append(record)
            print(f"  round {rnd + 1}: {lib:8s} {threads} thread(s): {record['chars_per_s']:>9,.0f} chars/s "
                  f"(loss {record['loss_first']:.2f} -> {record['loss_last']:.2f}; CPU/wall "
                  f"{record['cpu_per_wall']:.2f}; load {record['loadavg'][0]} -> {record['loadavg'][1]})",
                  flush=True)
    rows = summarize(records, threads_list)
    print()
    print(report(rows))
    print(f"({time.time() - started:.0f} s; on a machine shared with other work these figures are "
          f"indications: compare them with the load averages)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"records": records, "summary": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
