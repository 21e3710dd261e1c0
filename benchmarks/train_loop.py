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
"""
from __future__ import annotations

import math
import statistics
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
    from threadpoolctl import threadpool_info
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
    samples, losses = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            losses.append(step())
        samples.append((time.perf_counter() - t0) / batches)     # seconds per minibatch
    median = statistics.median(samples)
    return {"shape": "charlm", "mode": "train_loop", "lib": lib, "threads": threads,
            "dtype": dtype.name, "model": cfg, "samples_s": samples, "median_s": median,
            "chars_per_s": chars / median, "chars_per_s_samples": [chars / s for s in samples],
            "batches_per_sample": batches, "loss_first": first_loss, "loss_last": losses[-1],
            "loss_uniform": math.log(cfg["vocab"]), "settings": thread_settings(lib)}
