"""The embedded Reber grammar (Hochreiter & Schmidhuber, 1997), generated in code.

The (plain) Reber grammar is a small finite automaton over the symbols ``B T P S X V E``::

    start -B-> 0
    0 -T-> 1    0 -P-> 2
    1 -S-> 1    1 -X-> 3
    2 -T-> 2    2 -V-> 4
    3 -X-> 2    3 -S-> 5
    4 -P-> 3    4 -V-> 5
    5 -E-> end

every branch taken with probability 1/2.  An *embedded* Reber string wraps a Reber string as
``B a <Reber string> a E`` with ``a`` either ``T`` or ``P``: the symbol before the final ``E``
repeats the second symbol of the string, which lies arbitrarily far back - the long-range
dependency a network must carry across the inner string.

A next-symbol predictor is *correct* on a string when, at every step (every symbol but the
last), its ``k`` highest-scoring symbols are exactly the ``k`` symbols the grammar allows next.
"""

import random

import numpy as np

__all__ = ["SYMBOLS", "generate", "generate_dataset", "encode", "legal_mask", "correct_strings"]

#: The alphabet, in the one-hot order used by :func:`encode`.
SYMBOLS = "BTPSXVE"
_INDEX = {s: i for i, s in enumerate(SYMBOLS)}

#: state -> ((symbol, next state), (symbol, next state)); state 5 emits E and ends (None).
_TRANSITIONS = {
    0: (("T", 1), ("P", 2)),
    1: (("S", 1), ("X", 3)),
    2: (("T", 2), ("V", 4)),
    3: (("X", 2), ("S", 5)),
    4: (("P", 3), ("V", 5)),
    5: (("E", None),),
}


#: state -> the symbols allowed next
_LEGAL = {state: frozenset(symbol for symbol, _ in options) for state, options in _TRANSITIONS.items()}


def _reber(rng):
    """One plain Reber string (``rng``: a ``random.Random``) and, for each of its symbols, the
    set of symbols allowed after it (``None`` after the final ``E``: the caller decides what
    may follow)."""
    symbols, legal = ["B"], [_LEGAL[0]]
    state = 0
    while state is not None:
        options = _TRANSITIONS[state]
        symbol, state = options[rng.getrandbits(1)] if len(options) > 1 else options[0]
        symbols.append(symbol)
        legal.append(None if state is None else _LEGAL[state])
    return symbols, legal


def _as_random(rng):
    """A ``random.Random`` from one, from a seed, or from a NumPy ``Generator``."""
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(2**63)))
    return random.Random(rng)


def generate(rng):
    """One embedded Reber string: ``(string, legal)`` where ``legal[t]`` is the set of symbols
    the grammar allows after ``string[t]`` (``legal`` has one entry fewer than ``string``).
    ``rng``: a ``random.Random`` (or a seed, or a NumPy ``Generator``); each branch of the
    grammar is taken with probability 1/2."""
    rng = _as_random(rng)
    branch = "TP"[rng.getrandbits(1)]
    inner, inner_legal = _reber(rng)
    string = ["B", branch] + inner + [branch, "E"]
    legal = [frozenset("TP"), frozenset("B")] + inner_legal[:-1] + [frozenset(branch), frozenset("E")]
    return "".join(string), legal


def generate_dataset(rng, count, exclude=(), distinct=False):
    """``count`` embedded Reber strings drawn from the grammar, none of them in ``exclude``
    (and no two alike when ``distinct``), with their legal next-symbol sets: a list of
    ``(string, legal)``. ``rng`` as for :func:`generate`."""
    rng = _as_random(rng)
    out, excluded = [], set(exclude)
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 1000 * count + 10000:
            raise RuntimeError(f"could not draw {count} embedded Reber strings outside the excluded ones")
        string, legal = generate(rng)
        if string in excluded:
            continue
        if distinct:
            excluded.add(string)
        out.append((string, legal))
    return out


def encode(strings, dtype=np.float32):
    """One-hot inputs and next-symbol targets for a list of strings, padded to the longest.

    Returns ``(x, y, mask)``: ``x`` ``[n, 7, T]`` (symbols ``0..len-2`` of each string),
    ``y`` ``[n, 7, T]`` (symbols ``1..len-1``, the next symbol at each step) and ``mask``
    ``[n, T]`` (1 for real steps, 0 for padding), with ``T`` = longest length - 1.
    """
    n = len(strings)
    steps = max(len(s) for s in strings) - 1
    x = np.zeros((n, len(SYMBOLS), steps), dtype=dtype)
    y = np.zeros((n, len(SYMBOLS), steps), dtype=dtype)
    mask = np.zeros((n, steps), dtype=dtype)
    for i, s in enumerate(strings):
        codes = np.fromiter((_INDEX[c] for c in s), dtype=np.intp, count=len(s))
        t = np.arange(len(s) - 1)
        x[i, codes[:-1], t] = 1
        y[i, codes[1:], t] = 1
        mask[i, : len(s) - 1] = 1
    return x, y, mask


def legal_mask(examples, steps=None):
    """Boolean ``[n, 7, T]``: ``True`` where a symbol is allowed after step ``t`` of string ``i``
    (all ``False`` at padding steps)."""
    if steps is None:
        steps = max(len(legal) for _, legal in examples)
    out = np.zeros((len(examples), len(SYMBOLS), steps), dtype=bool)
    for i, (_, legal) in enumerate(examples):
        for t, allowed in enumerate(legal):
            for symbol in allowed:
                out[i, _INDEX[symbol], t] = True
    return out


def correct_strings(scores, examples):
    """For each ``(string, legal)`` in ``examples``, whether the scores ``[n, 7, T]`` (any
    monotone score: probabilities, logits) rank exactly the legal symbols highest at every step
    (every legal symbol scores strictly higher than every other one, so ties count as wrong).
    Returns a boolean array ``[n]``."""
    scores = np.asarray(scores, dtype=np.float64)
    allowed = legal_mask(examples, scores.shape[2])
    lowest_legal = np.where(allowed, scores, np.inf).min(axis=1)
    highest_other = np.where(allowed, -np.inf, scores).max(axis=1)
    padding = ~allowed.any(axis=1)
    return ((lowest_legal > highest_other) | padding).all(axis=1)
