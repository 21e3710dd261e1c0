"""The character model's text: the standard library's docstrings gathered at run time (or a
text file's paragraphs), the part of it ``--max-chars`` picks, the character vocabulary and the
one-hot windows the model trains on (``python -m lstmfast demo``; importable from
``lstmfast.demo``)."""

import collections
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

__all__ = ["stdlib_docstrings", "read_text_file", "pick_documents", "CharVocabulary",
           "unigram_entropy", "one_hot_sequences"]


def stdlib_docstrings(timeout=120):
    """The docstrings of the running Python's standard library (modules, their public classes
    with methods, public functions), cleaned and de-duplicated, in a fixed order.

    The modules are imported in a child interpreter (``python -I``), so that whatever they do
    when imported stays there.  If that fails, the docstrings of the modules already imported
    in this process are used.
    """
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_stdlib_docs.py")
    with tempfile.TemporaryDirectory(prefix="lstmfast-demo-") as tmp:
        target = os.path.join(tmp, "docs.json")
        try:
            subprocess.run([sys.executable, "-I", script, target], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                           check=True, cwd=tmp)
            with open(target, encoding="utf-8") as f:
                docs = json.load(f)
            if isinstance(docs, list) and docs:
                return [d for d in docs if isinstance(d, str)]
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    from . import _stdlib_docs  # fallback: only modules this process has imported already
    stdlib = getattr(sys, "stdlib_module_names", ())
    return _stdlib_docs.collect(sorted(n for n in list(sys.modules) if n in stdlib))


def read_text_file(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    # paragraphs are the units --max-chars picks from
    return [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _split_long(docs, limit=10_000):
    """Documents longer than ``limit`` characters cut into pieces at line ends (so that
    --max-chars can pick parts of a text that has no blank lines)."""
    out = []
    for doc in docs:
        while len(doc) > limit:
            cut = doc.rfind("\n", limit // 2, limit)
            cut = limit if cut < 0 else cut + 1
            out.append(doc[:cut])
            doc = doc[cut:]
        if doc:
            out.append(doc)
    return out


def pick_documents(docs, max_chars, rng):
    """At most ``max_chars`` characters of whole documents, picked at random (order kept)."""
    total = sum(len(d) + 2 for d in docs)
    if not max_chars or total <= max_chars:
        return list(docs)
    docs = _split_long(docs)
    chosen, size = [], 0
    for i in rng.permutation(len(docs)):
        if size + len(docs[i]) + 2 > max_chars and chosen:
            continue
        chosen.append(i)
        size += len(docs[i]) + 2
        if size >= max_chars * 0.98:
            break
    return [docs[i] for i in sorted(chosen)]


class CharVocabulary:
    """The characters a model reads and writes, in a fixed order (one-hot index = position).

    ``CharVocabulary.from_text(text, min_count)`` keeps the characters occurring at least
    ``min_count`` times; ``encode`` drops any other character.
    """

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise ValueError("vocabulary characters must be distinct")

    @classmethod
    def from_text(cls, text, min_count=1):
        counts = collections.Counter(text)
        return cls(sorted(c for c, n in counts.items() if n >= min_count))

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        index = self.index
        return np.fromiter((index[c] for c in text if c in index), dtype=np.int32)

    def decode(self, codes):
        return "".join(self.chars[int(i)] for i in codes)

    def to_json(self):
        return json.dumps({"characters": "".join(self.chars)})

    @classmethod
    def from_json(cls, text):
        return cls(json.loads(text)["characters"])


def unigram_entropy(codes, size):
    """Entropy (nats per character) of the character frequencies of ``codes``: the loss of the
    best model that ignores context."""
    counts = np.bincount(codes, minlength=size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def one_hot_sequences(windows, size, dtype):
    """Integer windows ``[B, T+1]`` → inputs ``x`` and next-character labels ``y``, both
    ``[B, size, T]`` one-hot."""
    batch, steps = windows.shape[0], windows.shape[1] - 1
    x = np.zeros((batch, size, steps), dtype=dtype)
    y = np.zeros((batch, size, steps), dtype=dtype)
    b = np.repeat(np.arange(batch), steps)
    t = np.tile(np.arange(steps), batch)
    x[b, windows[:, :-1].reshape(-1), t] = 1
    y[b, windows[:, 1:].reshape(-1), t] = 1
    return x, y
