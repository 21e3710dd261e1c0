"""The command line: ``python -m lstmfast demo`` (the Reber task must reach 99% of held-out
strings; a short character-model run must learn and save a loadable model) and ``info``."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import lstmfast
from lstmfast import _blas_threads, demo, reber
from lstmfast.__main__ import main
from pngread import pixels_of_colour, read_png


def _run(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in:\n{text}"
    return float(match.group(1))


# --------------------------------------------------------------------------------------
# the embedded Reber grammar

def test_reber_grammar_legal_sets():
    rng = np.random.default_rng(0)
    for string, legal in reber.generate_dataset(rng, 200):
        assert len(legal) == len(string) - 1
        assert string[0] == "B" and string[-1] == "E" and string[2] == "B"
        assert string[1] in "TP" and string[-2] == string[1]  # the long-range dependency
        assert legal[-2] == frozenset(string[1]) and legal[-1] == frozenset("E")
        for t, allowed in enumerate(legal):
            assert string[t + 1] in allowed and 1 <= len(allowed) <= 2


def test_reber_scoring_is_exact_top_k():
    rng = np.random.default_rng(1)
    examples = reber.generate_dataset(rng, 20, distinct=True)
    x, y, mask = reber.encode([s for s, _ in examples])
    perfect = reber.legal_mask(examples, x.shape[2]).astype(float) + 0.01 * x  # any monotone score
    assert reber.correct_strings(perfect, examples).all()
    wrong = perfect.copy()
    i = 3
    t = len(examples[i][1]) - 2  # the step that must predict the remembered T/P
    wrong[i, :, t] = 0.5  # a tie: the top-1 set is ambiguous, hence wrong
    result = reber.correct_strings(wrong, examples)
    assert not result[i] and result.sum() == len(examples) - 1
    wrong[i, :, t] = 0
    wrong[i, reber.SYMBOLS.index("T" if "P" in examples[i][1][t] else "P"), t] = 1
    assert not reber.correct_strings(wrong, examples)[i]


def test_reber_demo_reaches_99_percent(capsys):
    start = time.perf_counter()
    status, out, _ = _run(capsys, ["demo", "--task", "reber"])
    elapsed = time.perf_counter() - start
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"accuracy: (\d+\.\d)%", last)
    assert match, f"the last line is not 'accuracy: NN.N%': {last!r}\n{out}"
    accuracy = float(match.group(1))
    assert accuracy >= 99.0, out
    assert status == 0
    print(f"reber: accuracy {accuracy}% in {elapsed:.1f} s")


# --------------------------------------------------------------------------------------
# the character model

def test_charlm_smoke_learns_and_saves(capsys, tmp_path):
    model_path = tmp_path / "charlm.zip"
    plot_path = tmp_path / "loss.png"
    # a small model on part of the docstring corpus: a fixed amount of work (the time budget is
    # only a ceiling for a very slow machine)
    status, out, err = _run(capsys, [
        "demo", "--hidden", "64", "--layers", "1", "--seq-len", "50", "--tbptt", "25", "--lr", "0.01",
        "--max-chars", "60000", "--epochs", "2", "--sample-chars", "40", "--time-budget", "60",
        "--seed", "3", "--threads", "1", "--save", str(model_path), "--plot", str(plot_path), "--progress", "plain"])
    assert status == 0, out
    entropy = _number(r"unigram entropy: ([\d.]+) nats/char", out)
    loss = _number(r"done: loss ([\d.]+) nats/char", out)
    valid = _number(r"validation ([\d.]+) \(unigram", out)
    assert 2.0 < entropy < 5.0
    assert loss < entropy - 0.2 and valid < entropy - 0.2, out
    assert "epoch 2/2" in out and "| Return the " in out
    assert "chars/s" in err  # the plain progress lines
    # the saved model loads back and computes what the trained one computes
    net, vocab = demo.load_char_model(model_path)
    assert isinstance(net, lstmfast.Sequential) and len(vocab) == net.layers[0].n_in
    assert lstmfast.dl4j.load(model_path).num_params() == net.num_params()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        # the picture of this run: a PNG whose running-mean curve falls as the loss did
        assert f"loss curve: {plot_path}" in out
        header, pixels = read_png(plot_path.read_bytes())
        assert (header["width"], header["height"]) == (770, 440)
        rows, columns = pixels_of_colour(pixels, (0x08, 0x51, 0x9c))
        assert rows.size > 100
        low, high = np.percentile(columns, [20, 80])
        assert rows[columns <= low].mean() < rows[columns >= high].mean(), "the curve does not fall"
    text = demo.sample_text(net, vocab, "Return the ", 30, rng=np.random.default_rng(0))
    assert len(text) == 30 and set(text) <= set(vocab.chars)


def test_charlm_time_budget_stops_cleanly(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the", "lstm", "reads", "a", "sequence", "and", "writes", "its", "state"]
    corpus.write_text("\n\n".join(" ".join(rng.choice(words, 12)) for _ in range(2000)), encoding="utf-8")
    start = time.perf_counter()
    status, out, _ = _run(capsys, [
        "demo", "--text", str(corpus), "--epochs", "1000", "--hidden", "32", "--time-budget", "1",
        "--sample-chars", "20", "--no-plot", "--progress", "none", "--dtype", "float64"])
    elapsed = time.perf_counter() - start
    assert status == 0, out
    assert "stopped early: time budget of 1 s reached" in out
    assert out.strip().splitlines()[-1].startswith("done: loss ")
    assert elapsed < 15


def test_unigram_entropy_and_vocabulary():
    vocab = demo.CharVocabulary.from_text("aab" * 10 + "z", min_count=2)
    assert vocab.chars == ["a", "b"]
    codes = vocab.encode("abzab")
    assert vocab.decode(codes) == "abab"
    assert demo.unigram_entropy(codes, len(vocab)) == pytest.approx(np.log(2))
    assert demo.CharVocabulary.from_json(vocab.to_json()).chars == vocab.chars


# --------------------------------------------------------------------------------------
# info and the module entry point

def test_info(capsys):
    status, out, _ = _run(capsys, ["info"])
    assert status == 0
    assert lstmfast.__version__ in out
    assert "float32, float64" in out
    assert re.search(r"fast path: +(active \((avx512|avx2\+fma)\)|not active \(portable\))", out), out
    assert "BLAS" in out
    # the hold's line names every OpenBLAS copy it holds
    (hold_line,) = [line for line in out.splitlines() if line.startswith("BLAS hold:")]
    assert "at one thread during passes and network calls" in hold_line
    for lib in _blas_threads.libraries():
        assert f"{lib.owner} ({os.path.basename(lib.path)})" in hold_line, hold_line


def test_demo_threads_sets_lstmfast_threads_for_the_run(capsys, monkeypatch):
    # no threadpoolctl needed: --threads is lstmfast's own thread count (OpenBLAS is held)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    before = lstmfast.get_num_threads()
    wanted = 1 if before > 1 else 2
    status, out, _ = _run(capsys, ["demo", "--task", "reber", "--epochs", "1", "--hidden", "8",
                                   "--threads", str(wanted)])
    assert status in (0, 1), out
    (model_line,) = [line for line in out.splitlines() if line.startswith("model: ")]
    assert model_line.endswith(f"; {wanted} thread" + ("s" if wanted > 1 else "")), model_line
    assert "ignored" not in out
    assert lstmfast.get_num_threads() == before        # given back after the run
    # 0 (as no --threads) leaves the setting alone
    status, out, _ = _run(capsys, ["demo", "--task", "reber", "--epochs", "1", "--hidden", "8",
                                   "--threads", "0"])
    (model_line,) = [line for line in out.splitlines() if line.startswith("model: ")]
    assert model_line.endswith(f"; {before} thread" + ("s" if before > 1 else "")), model_line


def test_python_dash_m_entry_point():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(lstmfast.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "lstmfast", "--version"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0 and lstmfast.__version__ in result.stdout


def test_no_command_prints_help(capsys):
    status, out, _ = _run(capsys, [])
    assert status == 2 and "demo" in out and "info" in out
