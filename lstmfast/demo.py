"""``python -m lstmfast demo``: two small, real training runs on the CPU, nothing to download.

* ``--task charlm`` (default): a character-level language model like Deeplearning4j's flagship
  example (``LSTMCharModellingExample``: GravesLSTM layers, a softmax ``RnnOutputLayer``,
  truncated BPTT, Adam), trained on the docstrings of the Python standard library, gathered
  at run time from the running interpreter (``--text FILE`` for your own text).
* ``--task reber``: the embedded Reber grammar (Hochreiter & Schmidhuber, 1997); a GravesLSTM
  learns next-symbol prediction, judged on held-out strings.  The last line printed is
  ``accuracy: NN.N%``.

Everything here is ordinary use of the public API (``lstmfast.Sequential``, ``GravesLSTM``,
``RnnOutputLayer``, ``Adam``, ``rnn_time_step``, ``lstmfast.dl4j.save`` / ``load``).
"""

import argparse
import contextlib
import math
import os
import random
import re
import sys
import time
import zipfile

import numpy as np

from . import reber
from ._blas_threads import THREADS_MAX
from ._corpus import (CharVocabulary, one_hot_sequences, pick_documents, read_text_file,
                      stdlib_docstrings, unigram_entropy)
from .functional import set_num_threads
from .kernels import get_num_threads
from .layers import GravesLSTM
from .network import Adam, RnnOutputLayer, Sequential

__all__ = ["add_arguments", "run", "stdlib_docstrings", "CharVocabulary", "train_char_model",
           "train_reber", "sample_text"]

#: zip entry holding the character vocabulary of a saved char model (DL4J ignores extra entries)
VOCABULARY_ENTRY = "lstmfast/characters.json"

#: task defaults (an option left unset takes the task's value)
CHARLM_DEFAULTS = dict(epochs=3, hidden=128, layers=2, seq_len=100, tbptt=50, batch=32, lr=1e-2,
                       max_chars=500_000)
REBER_DEFAULTS = dict(epochs=60, hidden=32, layers=1, batch=16, lr=2e-2)
REBER_TARGET = 0.99
#: training stops once every validation string is right in this many consecutive epochs
REBER_PATIENCE = 2


# ======================================================================================
# command line

def add_arguments(parser):
    """Add the demo's options to an ``argparse`` parser."""
    parser.add_argument("--task", choices=("charlm", "reber"), default="charlm",
                        help="charlm: character language model (default); reber: the embedded "
                             "Reber grammar, ending with the line 'accuracy: NN.N%%'")
    parser.add_argument("--text", metavar="FILE",
                        help="train the character model on this UTF-8 text file instead of the "
                             "standard library's docstrings")
    parser.add_argument("--epochs", type=_positive_int, metavar="N",
                        help="passes over the training text (charlm, default %d); most epochs "
                             "(reber, default %d; stops early once all validation strings are "
                             "right in two consecutive epochs)" % (CHARLM_DEFAULTS["epochs"], REBER_DEFAULTS["epochs"]))
    parser.add_argument("--hidden", type=_positive_int, metavar="H",
                        help="units per LSTM layer (charlm %d, reber %d)"
                             % (CHARLM_DEFAULTS["hidden"], REBER_DEFAULTS["hidden"]))
    parser.add_argument("--layers", type=_positive_int, metavar="N",
                        help="GravesLSTM layers (charlm %d, reber %d)"
                             % (CHARLM_DEFAULTS["layers"], REBER_DEFAULTS["layers"]))
    parser.add_argument("--seq-len", type=_positive_int, metavar="T",
                        help="characters per training sequence (charlm, default %d)"
                             % CHARLM_DEFAULTS["seq_len"])
    parser.add_argument("--tbptt", type=_non_negative_int, metavar="K",
                        help="truncated BPTT length, forward = backward (charlm, default %d; "
                             "0 = full BPTT)" % CHARLM_DEFAULTS["tbptt"])
    parser.add_argument("--batch", type=_positive_int, metavar="B",
                        help="minibatch size (charlm %d, reber %d)"
                             % (CHARLM_DEFAULTS["batch"], REBER_DEFAULTS["batch"]))
    parser.add_argument("--lr", type=_positive_float, metavar="RATE",
                        help="Adam learning rate (charlm %g, reber %g)"
                             % (CHARLM_DEFAULTS["lr"], REBER_DEFAULTS["lr"]))
    parser.add_argument("--max-chars", type=_non_negative_int, metavar="N",
                        help="use at most N characters of text, whole documents or paragraphs "
                             "picked at random (charlm, default %d; 0 = all)"
                             % CHARLM_DEFAULTS["max_chars"])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="parameter and activation type (default float32)")
    parser.add_argument("--threads", type=_thread_count, metavar="N",
                        help="threads of lstmfast's passes (lstmfast.set_num_threads, 1 to %d; "
                             "default or 0: LSTMFAST_NUM_THREADS, else OMP_NUM_THREADS, else the "
                             "usable cores). OpenBLAS stays at one thread while lstmfast computes"
                             % THREADS_MAX)
    parser.add_argument("--seed", type=_non_negative_int, default=12345,
                        help="seed of initialisation, data order and sampling (default 12345)")
    parser.add_argument("--time-budget", type=_positive_float, metavar="SECONDS",
                        help="stop training cleanly after this many seconds")
    parser.add_argument("--save", metavar="PATH",
                        help="save the trained model as a DL4J zip (lstmfast.dl4j.load reads it back)")
    parser.add_argument("--plot", metavar="PNG", default="lstmfast-demo-loss.png",
                        help="where to save the loss curve (charlm; default %(default)s; needs matplotlib)")
    parser.add_argument("--no-plot", action="store_true", help="do not save the loss curve")
    parser.add_argument("--sample-chars", type=_non_negative_int, default=240, metavar="N",
                        help="characters generated after each epoch (charlm, default %(default)s)")
    parser.add_argument("--temperature", type=_positive_float, default=0.7,
                        help="sampling temperature (charlm, default %(default)s)")
    parser.add_argument("--prime", metavar="TEXT",
                        help="text the samples start from (charlm; default 'Return the ' for the "
                             "docstrings, the start of a line of your text otherwise)")
    parser.add_argument("--progress", choices=("auto", "tqdm", "plain", "none"), default="auto",
                        help="progress display: tqdm when installed (auto), plain lines, or none")
    return parser


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _positive_int(text):
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _thread_count(text):
    value = _non_negative_int(text)
    if value > THREADS_MAX:
        raise argparse.ArgumentTypeError(f"must be 0 to {THREADS_MAX}, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _setting(args, name, defaults):
    value = getattr(args, name, None)
    return defaults[name] if value is None else value


def run(args, out=None):
    """Run the demo described by parsed ``args``; returns the process exit status."""
    out = sys.stdout if out is None else out
    problem = _path_problem(args)
    if problem:
        return _fail(problem)
    with _lstmfast_threads(args.threads):
        if args.task == "reber":
            return _run_reber(args, out)
        return _run_charlm(args, out)


@contextlib.contextmanager
def _lstmfast_threads(threads):
    """lstmfast's own thread count set to ``threads`` for the run (None or 0: left as it is).
    No BLAS limit is needed: OpenBLAS is held at one thread during every network call."""
    if not threads:
        yield
        return
    previous = set_num_threads(threads)
    try:
        yield
    finally:
        set_num_threads(previous)


def _thread_note():
    """'; N threads' for the model line."""
    threads = get_num_threads()
    return f"; {threads} thread{'s' if threads > 1 else ''}"


def _say(out, text=""):
    print(text, file=out, flush=True)


def _fail(text, status=2):
    """An error the user can fix: one line on stderr, and the exit status."""
    print(f"lstmfast demo: error: {text}", file=sys.stderr, flush=True)
    return status


def _path_problem(args):
    """What is wrong with the paths given on the command line (checked before a minute of
    training, not after), or None."""
    if args.task == "charlm" and args.text is not None:
        if not os.path.exists(args.text):
            return f"--text {args.text}: no such file"
        if not os.path.isfile(args.text):
            return f"--text {args.text}: not a file"
        if not os.access(args.text, os.R_OK):
            return f"--text {args.text}: not readable"
    outputs = [("--save", args.save)]
    if args.task == "charlm" and not args.no_plot:
        outputs.append(("--plot", args.plot))
    for option, path in outputs:
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            return f"{option} {path}: is a directory (give a file name)"
        if not os.path.isdir(folder):
            return f"{option} {path}: the directory {folder} does not exist"
    return None


def _format_rate(rate):
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"


def _format_duration(seconds):
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ======================================================================================
# the character model

def build_char_model(vocab_size, hidden, layers, *, tbptt, lr, dtype, seed):
    """DL4J's character-model architecture: ``layers`` GravesLSTM(tanh) of ``hidden`` units,
    a softmax RnnOutputLayer with MCXENT loss, Adam, truncated BPTT of ``tbptt`` steps."""
    seeds = np.random.SeedSequence(seed).generate_state(layers + 1)
    stack = []
    n_in = vocab_size
    for i in range(layers):
        stack.append(GravesLSTM(n_in, hidden, activation="tanh", dtype=dtype, seed=int(seeds[i])))
        n_in = hidden
    stack.append(RnnOutputLayer(n_in, vocab_size, activation="softmax", loss="mcxent", dtype=dtype,
                                seed=int(seeds[-1])))
    return Sequential(stack, updater=Adam(lr), tbptt_forward_length=tbptt or None,
                      tbptt_backward_length=tbptt or None)


def sample_text(net, vocab, prime, length, *, temperature=1.0, rng=None):
    """Generate ``length`` characters after ``prime`` with the network's streaming
    ``rnn_time_step`` (the state is cleared before and after)."""
    rng = np.random.default_rng() if rng is None else rng
    codes = vocab.encode(prime)
    if codes.size == 0:
        codes = np.array([int(rng.integers(len(vocab)))], dtype=np.int32)
    net.rnn_clear_previous_state()
    try:
        x, _ = one_hot_sequences(np.append(codes, 0)[None, :], len(vocab), net.dtype)
        probs = net.rnn_time_step(x)[0, :, -1]
        step = np.zeros((1, len(vocab)), dtype=net.dtype)
        produced = []
        for _ in range(length):
            logits = np.log(np.maximum(probs.astype(np.float64), 1e-30)) / temperature
            p = np.exp(logits - logits.max())
            p /= p.sum()
            code = int(rng.choice(len(vocab), p=p))
            produced.append(code)
            step[...] = 0
            step[0, code] = 1
            probs = net.rnn_time_step(step)[0]
    finally:
        net.rnn_clear_previous_state()
    return vocab.decode(produced)


class _Progress:
    """A progress display: tqdm when available (and wanted), else plain lines on stderr."""

    def __init__(self, total, mode, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.last_print = 0.0
        self.bar = None
        self.mode = mode
        if mode in ("auto", "tqdm"):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if mode == "tqdm":
                    print("note: tqdm is not installed (pip install tqdm); plain progress lines instead",
                          file=self.stream)
                self.mode = "plain"
            else:
                self.bar = tqdm(total=total, unit="char", unit_scale=True, file=self.stream,
                                dynamic_ncols=True, smoothing=0.1, leave=False)
                self.mode = "tqdm"
        self.tty = self.mode == "plain" and hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, n, description, loss, rate, eta):
        self.done += n
        if self.mode == "tqdm":
            self.bar.set_description(description, refresh=False)
            self.bar.set_postfix_str(f"loss {loss:.3f}", refresh=False)
            self.bar.update(n)
            return
        if self.mode != "plain":
            return
        now = time.perf_counter()
        interval = 0.5 if self.tty else 10.0
        if now - self.last_print < interval and self.done < self.total:
            return
        self.last_print = now
        pct = 100.0 * self.done / max(self.total, 1)
        line = (f"{description}  {pct:3.0f}%  loss {loss:.3f}  {_format_rate(rate)} chars/s  "
                f"time left {_format_duration(eta)}")
        if self.tty:
            print("\r" + line.ljust(78), end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def write(self, text, out):
        """Print ``text`` to ``out`` without garbling the bar."""
        if self.mode == "tqdm":
            self.bar.clear()
            print(text, file=out, flush=True)
            self.bar.refresh()
        else:
            if self.tty:
                print("\r" + " " * 78 + "\r", end="", file=self.stream, flush=True)
            print(text, file=out, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.tty:
            print("\r" + " " * 78 + "\r", end="", file=self.stream, flush=True)


def _validation_loss(net, windows, vocab_size, batch):
    """Mean loss (nats per character) over held-out windows, each from a cleared state."""
    total, count = 0.0, 0
    for k in range(0, len(windows), batch):
        chunk = windows[k:k + batch]
        x, y = one_hot_sequences(chunk, vocab_size, net.dtype)
        total += net.score(x, y) * chunk.shape[0]  # score = sum of losses / minibatch size
        count += chunk.shape[0] * (chunk.shape[1] - 1)
    return total / count


def _split_validation(codes, fraction=0.05, block=4000):
    """Every ``1/fraction``-th block of the text is held out (so both parts cover all of it)."""
    n_blocks = max(1, len(codes) // block)
    stride = max(2, int(round(1 / fraction)))
    held = np.zeros(len(codes), dtype=bool)
    for b in range(stride // 2, n_blocks, stride):
        held[b * block:(b + 1) * block] = True
    if not held.any():  # a short text: hold out its last 5%
        held[int(len(codes) * (1 - fraction)):] = True
    return codes[~held], codes[held]


def train_char_model(train_codes, vocab, *, epochs, hidden, layers, seq_len, tbptt, batch, lr,
                     dtype, seed, time_budget=None, valid_codes=None, prime="", sample_chars=0,
                     temperature=0.7, progress="none", out=None):
    """Train a character model; returns a dict with the network and the run's figures."""
    out = sys.stdout if out is None else out
    rng = np.random.default_rng(seed)
    sample_rng = np.random.default_rng([seed, 1])
    V = len(vocab)
    tbptt = min(tbptt, seq_len) if tbptt else 0
    net = build_char_model(V, hidden, layers, tbptt=tbptt, lr=lr, dtype=np.dtype(dtype), seed=seed)
    n_windows = (len(train_codes) - 1) // seq_len
    if n_windows < 1:
        raise ValueError(f"the training text ({len(train_codes)} characters) is shorter than one "
                         f"sequence (--seq-len {seq_len})")
    chars_per_epoch = n_windows * seq_len
    valid_windows = None
    if valid_codes is not None and len(valid_codes) > seq_len + 1:
        # up to 128 windows spread evenly over the held-out text
        n_valid = min(128, (len(valid_codes) - 1) // seq_len)
        starts = np.linspace(0, len(valid_codes) - seq_len - 1, n_valid).astype(np.intp)
        valid_windows = np.stack([valid_codes[s:s + seq_len + 1] for s in starts])

    history = dict(step_loss=[], step_chars=[], epoch_valid=[], epoch_chars=[])
    display = _Progress(epochs * chars_per_epoch, progress)
    start = time.perf_counter()
    deadline = None if time_budget is None else start + time_budget
    train_seconds = 0.0
    trained_chars = 0
    ema, ema_weight, smoothed = 0.0, 0.0, float("nan")
    stopped = None
    epochs_done = 0
    try:
        for epoch in range(epochs):
            # a different cut into windows every epoch (all n_windows windows always fit)
            slack = min(seq_len - 1, len(train_codes) - 1 - n_windows * seq_len)
            starts = int(rng.integers(slack + 1)) + np.arange(n_windows) * seq_len
            rng.shuffle(starts)
            processed = processed_steps = 0
            for k in range(0, len(starts), batch):
                idx = starts[k:k + batch]
                windows = train_codes[idx[:, None] + np.arange(seq_len + 1)]
                x, y = one_hot_sequences(windows, V, net.dtype)
                t0 = time.perf_counter()
                net.fit_batch(x, y)
                train_seconds += time.perf_counter() - t0
                # score of a window = its summed loss / minibatch: sum the windows, per character
                loss = float(np.sum(net.last_window_scores)) / seq_len
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} (try a smaller --lr)")
                n_chars = len(idx) * seq_len
                processed += len(idx)
                processed_steps += 1
                trained_chars += n_chars
                ema = 0.95 * ema + 0.05 * loss
                ema_weight = 0.95 * ema_weight + 0.05
                smoothed = ema / ema_weight  # bias-corrected moving average
                history["step_loss"].append(loss)
                history["step_chars"].append(trained_chars)
                rate = trained_chars / max(train_seconds, 1e-9)
                eta = (epochs * chars_per_epoch - trained_chars) / rate
                if deadline is not None:
                    eta = min(eta, deadline - time.perf_counter())
                display.update(n_chars, f"epoch {epoch + 1}/{epochs}", smoothed, rate, eta)
                if deadline is not None and time.perf_counter() >= deadline:
                    stopped = f"time budget of {time_budget:g} s reached"
                    break
            epochs_done = epoch + processed / max(len(starts), 1)
            if stopped and processed == len(starts) and epoch + 1 == epochs:
                stopped = None  # the budget ran out with the last minibatch: nothing was cut
            epoch_loss = float(np.mean(history["step_loss"][-processed_steps:]))
            part = f" (stopped at {processed / len(starts):.0%})" if stopped else ""
            lines = [f"epoch {epoch + 1}/{epochs}{part}: training loss {epoch_loss:.3f} nats/char"]
            if valid_windows is not None:
                valid = _validation_loss(net, valid_windows, V, batch)
                history["epoch_valid"].append(valid)
                history["epoch_chars"].append(trained_chars)
                lines[0] += f", validation {valid:.3f}"
            lines[0] += f" ({_format_rate(trained_chars / max(train_seconds, 1e-9))} chars/s)"
            if sample_chars:
                text = sample_text(net, vocab, prime, sample_chars, temperature=temperature, rng=sample_rng)
                lines.append("  | " + (prime + text).replace("\n", "\n  | "))
            display.write("\n".join(lines), out)
            if stopped:
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        display.close()
    recent = history["step_loss"][-max(1, min(20, len(history["step_loss"]))):]
    return dict(net=net, history=history, trained_chars=trained_chars, train_seconds=train_seconds,
                final_loss=float(np.mean(recent)) if recent else float("nan"),
                final_valid=history["epoch_valid"][-1] if history["epoch_valid"] else None,
                stopped=stopped, epochs_done=epochs_done, chars_per_epoch=chars_per_epoch)


def _plot(history, entropy, path, out):
    """Draw the loss curve into the PNG ``path``; False when it could not be written."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        _say(out, "loss curve: not drawn (matplotlib is not installed: pip install \"lstmfast[demo]\")")
        return True
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot()
    chars = np.asarray(history["step_chars"], dtype=float)
    loss = np.asarray(history["step_loss"], dtype=float)
    if loss.size:
        ax.plot(chars, loss, color="#9ecae1", linewidth=0.8, label="training loss (minibatch)")
        if loss.size >= 10:
            width = max(5, loss.size // 30)
            kernel = np.ones(width) / width
            ax.plot(chars[width - 1:], np.convolve(loss, kernel, mode="valid"), color="#08519c",
                    linewidth=1.6, label=f"training loss ({width}-step mean)")
    if history["epoch_valid"]:
        ax.plot(history["epoch_chars"], history["epoch_valid"], "o-", color="#e6550d",
                label="validation loss (end of epoch)")
    ax.axhline(entropy, color="gray", linestyle="--", linewidth=1,
               label=f"unigram entropy {entropy:.2f}")
    from matplotlib.ticker import EngFormatter
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("characters trained")
    ax.set_ylabel("loss (nats per character)")
    ax.set_title("lstmfast demo: character model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        _fail(f"cannot write the loss curve to {path}: {exc.strerror or exc}")
        return False
    _say(out, f"loss curve: {os.path.abspath(path)}")
    return True


def save_char_model(net, vocab, path):
    """``lstmfast.dl4j.save`` plus the vocabulary as an extra zip entry (DL4J ignores it)."""
    from . import dl4j
    dl4j.save(net, path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(VOCABULARY_ENTRY, vocab.to_json())


def load_char_model(path):
    """``(net, vocab)`` from a file written by :func:`save_char_model`."""
    from . import dl4j
    net = dl4j.load(path)
    with zipfile.ZipFile(path) as z:
        vocab = CharVocabulary.from_json(z.read(VOCABULARY_ENTRY).decode("utf-8"))
    return net, vocab


def _run_charlm(args, out):
    wall_start = time.perf_counter()
    epochs = _setting(args, "epochs", CHARLM_DEFAULTS)
    hidden = _setting(args, "hidden", CHARLM_DEFAULTS)
    layers = _setting(args, "layers", CHARLM_DEFAULTS)
    seq_len = _setting(args, "seq_len", CHARLM_DEFAULTS)
    tbptt = _setting(args, "tbptt", CHARLM_DEFAULTS)
    batch = _setting(args, "batch", CHARLM_DEFAULTS)
    lr = _setting(args, "lr", CHARLM_DEFAULTS)
    max_chars = _setting(args, "max_chars", CHARLM_DEFAULTS)
    rng = np.random.default_rng([args.seed, 2])

    t0 = time.perf_counter()
    if args.text:
        try:
            docs = read_text_file(args.text)
        except OSError as exc:
            return _fail(f"cannot read --text {args.text}: {exc.strerror or exc}")
        source = args.text
    else:
        # long runs of spaces (aligned tables, deep indentation) squeezed to four
        docs = [re.sub(r" {5,}", "    ", doc) for doc in stdlib_docstrings()]
        source = f"docstrings of the Python {sys.version_info.major}.{sys.version_info.minor} standard library"
    all_chars = sum(len(d) for d in docs)
    docs = pick_documents(docs, max_chars, rng)
    text = "\n\n".join(docs)
    if not text:
        return _fail(f"no text to train on ({source} is empty)")
    # characters rarer than this are dropped (a model cannot learn them from a few examples)
    vocab = CharVocabulary.from_text(text, min_count=5 if len(text) >= 100_000 else 1)
    codes = vocab.encode(text)
    train_codes, valid_codes = _split_validation(codes)
    entropy = unigram_entropy(train_codes, len(vocab))
    picked = f", {len(text):,} used (--max-chars)" if len(text) < all_chars else ""
    _say(out, f"corpus: {source}: {all_chars:,} characters{picked}; gathered in "
              f"{time.perf_counter() - t0:.1f} s")
    _say(out, f"        {len(vocab)} distinct characters, {len(train_codes):,} for training, "
              f"{len(valid_codes):,} held out for validation")
    _say(out, f"unigram entropy: {entropy:.3f} nats/char ({entropy / math.log(2):.2f} bits): the loss "
              f"of a model that ignores context")
    prime = args.prime
    if prime is None:
        if args.text:
            lines = [line for line in text.split("\n") if len(line) >= 12]
            prime = lines[int(rng.integers(len(lines)))][:8] if lines else text[:1]
        else:
            prime = "Return the "
    tb = min(tbptt, seq_len) if tbptt else 0
    _say(out, f"model: {layers} x GravesLSTM({hidden}) + softmax RnnOutputLayer({len(vocab)}), "
              f"{args.dtype}; Adam({lr:g}), minibatch {batch}, sequences of {seq_len} characters, "
              + (f"truncated BPTT {tb}" if tb else "full BPTT") + _thread_note())

    try:
        result = train_char_model(
            train_codes, vocab, epochs=epochs, hidden=hidden, layers=layers, seq_len=seq_len,
            tbptt=tbptt, batch=batch, lr=lr, dtype=args.dtype, seed=args.seed,
            time_budget=args.time_budget, valid_codes=valid_codes, prime=prime,
            sample_chars=args.sample_chars, temperature=args.temperature, progress=args.progress,
            out=out)
    except (ValueError, FloatingPointError) as exc:
        return _fail(str(exc))
    net = result["net"]
    _say(out, f"parameters: {net.num_params():,}")
    if result["stopped"]:
        _say(out, f"stopped early: {result['stopped']} after {result['trained_chars']:,} characters")
    status = 0
    if not args.no_plot and result["history"]["step_loss"]:
        if not _plot(result["history"], entropy, args.plot, out):
            status = 1
    if args.save:
        save_char_model(net, vocab, args.save)
        _say(out, f"model saved: {args.save} (DL4J zip; lstmfast.dl4j.load reads it back, "
                  f"the characters are in its entry {VOCABULARY_ENTRY})")
    rate = result["trained_chars"] / max(result["train_seconds"], 1e-9)
    valid = result["final_valid"]
    valid_text = f", validation {valid:.3f}" if valid is not None else ""
    _say(out, f"done: loss {result['final_loss']:.3f} nats/char{valid_text} (unigram entropy "
              f"{entropy:.3f}) | {_format_rate(rate)} chars/s | wall time "
              f"{time.perf_counter() - wall_start:.1f} s")
    return status


# ======================================================================================
# the embedded Reber grammar

def build_reber_model(hidden, layers, *, lr, dtype, seed):
    seeds = np.random.SeedSequence(seed).generate_state(layers + 1)
    stack, n_in = [], len(reber.SYMBOLS)
    for i in range(layers):
        stack.append(GravesLSTM(n_in, hidden, dtype=dtype, seed=int(seeds[i])))
        n_in = hidden
    stack.append(RnnOutputLayer(n_in, len(reber.SYMBOLS), activation="softmax", loss="mcxent",
                                dtype=dtype, seed=int(seeds[-1])))
    return Sequential(stack, updater=Adam(lr))


def _reber_accuracy(net, examples, encoded, batch=500):
    x, _, mask = encoded
    correct = 0
    for k in range(0, len(examples), batch):
        scores = net.output(x[k:k + batch], mask=mask[k:k + batch])
        correct += int(reber.correct_strings(scores, examples[k:k + batch]).sum())
    return correct / len(examples)


def train_reber(*, n_train=1000, n_valid=500, n_test=1000, epochs=60, hidden=32, layers=1,
                batch=16, lr=2e-2, dtype="float32", seed=12345, time_budget=None, out=None,
                verbose=True):
    """Train a GravesLSTM on embedded Reber strings until every validation string is right in
    two consecutive epochs (or ``epochs`` / ``time_budget`` run out); returns a dict with the
    accuracy on the test strings (none of them seen in training or validation)."""
    out = sys.stdout if out is None else out
    rng = np.random.default_rng([seed, 3])
    strings_rng = random.Random(seed)
    train = reber.generate_dataset(strings_rng, n_train, distinct=True)
    seen = [s for s, _ in train]
    valid = reber.generate_dataset(strings_rng, n_valid, exclude=seen, distinct=True)
    test = reber.generate_dataset(strings_rng, n_test, exclude=seen + [s for s, _ in valid], distinct=True)
    dtype = np.dtype(dtype)
    train_encoded = reber.encode([s for s, _ in train], dtype)
    valid_encoded = reber.encode([s for s, _ in valid], dtype)
    test_encoded = reber.encode([s for s, _ in test], dtype)
    lengths = np.array([len(s) for s, _ in train])
    if verbose:
        _say(out, f"embedded Reber grammar: {n_train} distinct training strings (length {lengths.min()}-"
                  f"{lengths.max()}, mean {lengths.mean():.1f}); {n_valid} validation and {n_test} test "
                  f"strings, all different and none seen in training")
        _say(out, f"model: {layers} x GravesLSTM({hidden}) + softmax RnnOutputLayer(7), {dtype.name}; "
                  f"Adam({lr:g}), minibatch {batch}, full BPTT with padding masks{_thread_note()}")
    net = build_reber_model(hidden, layers, lr=lr, dtype=dtype, seed=seed)
    start = time.perf_counter()
    deadline = None if time_budget is None else start + time_budget
    stopped = None
    epochs_done = 0
    perfect_epochs = 0
    x_all, y_all, m_all = train_encoded
    try:
        for epoch in range(epochs):
            order = rng.permutation(n_train)
            losses = []
            for k in range(0, n_train, batch):
                idx = order[k:k + batch]
                steps = int(lengths[idx].max()) - 1  # trim the padding to this batch's longest
                mask = m_all[idx, :steps]
                score = net.fit_batch(x_all[idx, :, :steps], y_all[idx, :, :steps], mask=mask)
                losses.append(score * len(idx) / float(mask.sum()))
                if deadline is not None and time.perf_counter() >= deadline:
                    stopped = f"time budget of {time_budget:g} s reached"
                    break
            epochs_done = epoch + 1
            accuracy = _reber_accuracy(net, valid, valid_encoded)
            if verbose:
                _say(out, f"epoch {epoch + 1:2d}: loss {np.mean(losses):.4f} nats/symbol, validation "
                          f"{100 * accuracy:5.1f}% of strings correct  ({time.perf_counter() - start:.1f} s)")
            perfect_epochs = perfect_epochs + 1 if accuracy >= 1.0 else 0
            if perfect_epochs >= REBER_PATIENCE or stopped:
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    train_seconds = time.perf_counter() - start
    accuracy = _reber_accuracy(net, test, test_encoded)
    return dict(net=net, accuracy=accuracy, n_test=n_test, epochs_done=epochs_done,
                train_seconds=train_seconds, stopped=stopped)


def _run_reber(args, out):
    wall_start = time.perf_counter()
    for name in ("text", "seq_len", "tbptt", "max_chars"):
        if getattr(args, name, None) is not None:
            _say(out, f"note: --{name.replace('_', '-')} does not apply to --task reber (ignored)")
    result = train_reber(
        epochs=_setting(args, "epochs", REBER_DEFAULTS), hidden=_setting(args, "hidden", REBER_DEFAULTS),
        layers=_setting(args, "layers", REBER_DEFAULTS), batch=_setting(args, "batch", REBER_DEFAULTS),
        lr=_setting(args, "lr", REBER_DEFAULTS), dtype=args.dtype, seed=args.seed,
        time_budget=args.time_budget, out=out)
    if result["stopped"]:
        _say(out, f"stopped early: {result['stopped']}")
    if args.save:
        from . import dl4j
        dl4j.save(result["net"], args.save)
        _say(out, f"model saved: {args.save} (DL4J zip; lstmfast.dl4j.load reads it back)")
    accuracy = result["accuracy"]
    correct = int(round(accuracy * result["n_test"]))
    _say(out, f"test: {correct}/{result['n_test']} held-out strings correct (the k top-scoring symbols "
              f"are the grammar's k legal ones at every step); {result['epochs_done']} epochs, "
              f"training {result['train_seconds']:.1f} s, wall time {time.perf_counter() - wall_start:.1f} s")
    if accuracy < REBER_TARGET:
        _say(out, f"below the {100 * REBER_TARGET:.0f}% target")
    _say(out, f"accuracy: {_format_percent(accuracy)}")
    return 0 if accuracy >= REBER_TARGET else 1


def _format_percent(fraction):
    """One decimal, never rounded up to 100.0% unless every string is right."""
    value = math.floor(fraction * 1000 + 1e-9) / 10
    return f"{value:.1f}%"
