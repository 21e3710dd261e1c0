"""Gather the docstrings of the Python standard library, for the demo's default corpus.

Run as a script in a child interpreter (``python -I _stdlib_docs.py OUT.json``) so that
whatever importing ~200 modules does - threads, signal handlers, atexit hooks, writes to the
terminal - stays in that child.  The child writes a JSON list of docstrings to ``OUT.json``.

Nothing here imports lstmfast; no text is stored in the project: the corpus is whatever the
running Python's own modules say about themselves.
"""

import inspect
import json
import os
import sys
import warnings

#: Modules not imported: they act when imported (open a browser, print, start a GUI, touch
#: the terminal or write files), are test suites, or only exist on other platforms.
SKIP = frozenset({
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "readline",
    "rlcompleter", "test", "lib2to3", "pydoc_data", "msilib", "winreg",
    "winsound", "msvcrt", "nt", "nturl2path", "_winapi", "_msi", "xxsubtype", "xxlimited",
    "sitecustomize", "usercustomize", "site", "__main__",
})


def _clean(doc):
    if not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc).strip()
    # very short docstrings ("Return self.") and signature-only lines add little text
    return doc if len(doc) >= 40 else None


def _public_members(module):
    names = getattr(module, "__all__", None)
    if not isinstance(names, (list, tuple)):
        names = [n for n in dir(module) if not n.startswith("_")]
    for name in names:
        if not isinstance(name, str) or name.startswith("_"):
            continue
        try:
            obj = getattr(module, name)
        except Exception:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        owner = getattr(obj, "__module__", None)
        if not isinstance(owner, str) or owner.split(".")[0] != module.__name__:
            continue  # re-exported from elsewhere: collected with its own module
        yield obj


def collect(names=None):
    """Docstrings (cleaned, de-duplicated, in a fixed order) of the standard library's public
    top-level modules and of their public classes (with methods) and functions."""
    if names is None:
        names = sorted(getattr(sys, "stdlib_module_names", ()))
    docs, seen = [], set()

    def add(doc):
        doc = _clean(doc)
        if doc and doc not in seen:
            seen.add(doc)
            docs.append(doc)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name.startswith("_") or name in SKIP:
                continue
            try:
                module = __import__(name)
            except BaseException:  # ImportError, SystemExit, anything a module may raise
                continue
            add(module.__doc__)
            for obj in _public_members(module):
                add(obj.__doc__)
                if inspect.isclass(obj):
                    for attr, member in sorted(vars(obj).items()):
                        if not attr.startswith("_") and callable(member):
                            add(getattr(member, "__doc__", None))
    return docs


def main(argv):
    if len(argv) != 2:
        print("usage: python -I _stdlib_docs.py OUT.json", file=sys.stderr)
        return 2
    docs = collect()
    tmp = argv[1] + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(docs, f)
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    # leave the interpreter without running other modules' atexit hooks or thread joins
    code = main(sys.argv)
    sys.stdout.flush()
    os._exit(code)
