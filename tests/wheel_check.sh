#!/usr/bin/env bash
# The compiled wheel, proven:
#   1. `python -m build` on a clean copy of the source tree makes an sdist, then a wheel *from that
#      sdist* (so the sdist builds from scratch);
#   2. the sdist carries pyx/*.pyx (+ .h), lstmfast/*.pxd (except the generated
#      lstmfast/_blas_int.pxd), tests (with tests/downstream and the DL4J files in tests/data),
#      benchmarks and docs, and no generated .c, .so or build products;
#   3. the wheel carries the extension module and every .pxd but the build-only ones
#      (_activations, _cells, _layout, _products, _team, _forward, _backward)
#      (with _blas_int.pxd, which _blas.pxd
#      cimports), and no .c;
#   4. nothing machine-specific was compiled in: setup.py and the build log have no -march=native
#      (or -mavx*, -mfma, -mtune=native), and every AVX2/FMA or AVX-512 instruction of the
#      extensions sits in a function named for its instruction set (chosen at run time);
#   5. the wheel installs into a fresh virtual environment (no system site-packages) with its
#      `test` extra, and the test suite from the sdist runs against it from a directory outside the
#      source tree (lstmfast imported from the venv's site-packages).
#
# Usage: bash tests/wheel_check.sh        (from anywhere; needs network access to PyPI for the
#                                          isolated build environments and the venv)
# Environment: PYTHON (default: python3), KEEP_WORK=1 keeps the temporary directory.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lstmfast-wheel.XXXXXX")"
if [[ "${KEEP_WORK:-0}" != 1 ]]; then
    trap 'rm -rf "$WORK"' EXIT
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
fail() { echo "wheel_check: FAIL: $*" >&2; exit 1; }
step() { echo; echo "== wheel_check: $*"; }

# --- 0. a clean copy of the source tree: what git sees (tracked + untracked, minus ignored) ----
step "copying the source tree to $WORK/src"
mkdir -p "$WORK/src"
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$WORK/src"
else
    tar -C "$SRC" --exclude=build --exclude=dist --exclude='*.egg-info' --exclude='*.so' \
        --exclude='*.o' --exclude=__pycache__ --exclude='pyx/*.c' -cf - . | tar -xf - -C "$WORK/src"
fi
[[ -f "$WORK/src/pyproject.toml" ]] || fail "no pyproject.toml in the copied tree"

# --- 1. build: sdist, then the wheel from the sdist ------------------------------------------
step "python -m build (sdist, then wheel from the sdist)"
"$PY" -m venv "$WORK/buildtool"
"$WORK/buildtool/bin/python" -m pip install -q build
if ! "$WORK/buildtool/bin/python" -m build --outdir "$WORK/dist" "$WORK/src" > "$WORK/build.log" 2>&1; then
    tail -60 "$WORK/build.log" >&2
    fail "python -m build failed (whole log in $WORK/build.log with KEEP_WORK=1)"
fi
grep -E '^(\* |Successfully)' "$WORK/build.log" || true
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/*.whl)"
echo "sdist: $(basename "$SDIST")"
echo "wheel: $(basename "$WHEEL")"

# --- 2. the sdist's contents ------------------------------------------------------------------
step "checking the sdist"
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | grep -v '/$' | sort > "$WORK/sdist.txt"
required=(setup.py pyproject.toml MANIFEST.in README.md lstmfast/__init__.py lstmfast/kernels.pxd
          tests/conftest.py tests/core/test_c_api.py tests/core/test_threads.py tests/wheel_check.sh
          tests/downstream/lstm_downstream.pyx tests/downstream/setup.py
          benchmarks/bench_threads.py docs/c-api.md)
for f in "${required[@]}"; do
    grep -qxF "$f" "$WORK/sdist.txt" || fail "the sdist lacks $f"
done
# every source the build or the tests use, as present in the tree
while IFS= read -r f; do
    [[ "$f" == lstmfast/_blas_int.pxd ]] && continue
    grep -qxF "$f" "$WORK/sdist.txt" || fail "the sdist lacks $f"
done < <(cd "$WORK/src" && ls pyx/*.pyx pyx/*.h lstmfast/*.pxd lstmfast/*.py tests/*.py tests/*/*.py tests/data/* \
            tests/downstream/* benchmarks/*.py benchmarks/*.c 2>/dev/null)
# compiled or generated files: a .c, .so, .o or .pyd that is not a source of the tree (the tree's
# own C, such as benchmarks/fma_peak.c, is in the clean copy; Cython's pyx/kernels.c is not)
generated="$({ grep -E '\.(c|so|o|pyd)$' "$WORK/sdist.txt" || true; } | while IFS= read -r f; do
                 [[ "$f" == *.c && -f "$WORK/src/$f" ]] || echo "$f"; done)"
if [[ -n "$generated" ]]; then echo "$generated"; fail "the sdist carries generated files (above)"; fi
if grep -qxF lstmfast/_blas_int.pxd "$WORK/sdist.txt"; then
    fail "the sdist carries lstmfast/_blas_int.pxd (setup.py generates it for the SciPy it builds against)"
fi
if grep -E '^(build|dist)/|__pycache__' "$WORK/sdist.txt"; then fail "the sdist carries build products (above)"; fi
echo "sdist OK: $(wc -l < "$WORK/sdist.txt") files; pyx: $(grep -c '^pyx/' "$WORK/sdist.txt"), pxd: $(grep -c '\.pxd$' "$WORK/sdist.txt")"

# --- 3. the wheel's contents ------------------------------------------------------------------
step "checking the wheel"
"$PY" - "$WHEEL" > "$WORK/wheel.txt" <<'EOF'
import sys, zipfile
for name in sorted(zipfile.ZipFile(sys.argv[1]).namelist()):
    print(name)
EOF
for module in kernels _team _forward _backward _stream _isa _interrupt; do
    grep -qE "^lstmfast/$module\..*\.so$" "$WORK/wheel.txt" || fail "the wheel has no lstmfast/$module extension"
done
for f in kernels.pxd _blas.pxd _blas_int.pxd __init__.py functional.py; do
    grep -qxF "lstmfast/$f" "$WORK/wheel.txt" || fail "the wheel lacks lstmfast/$f"
done
BUILD_ONLY_PXD="lstmfast/_activations.pxd lstmfast/_cells.pxd lstmfast/_layout.pxd"
BUILD_ONLY_PXD+=" lstmfast/_products.pxd lstmfast/_team.pxd lstmfast/_forward.pxd"
BUILD_ONLY_PXD+=" lstmfast/_backward.pxd"
while IFS= read -r f; do
    # build-only (they need the headers in pyx/); pyproject.toml excludes them
    [[ " $BUILD_ONLY_PXD " == *" $f "* ]] && continue
    grep -qxF "$f" "$WORK/wheel.txt" || fail "the wheel lacks $f"
done < <(cd "$WORK/src" && ls lstmfast/*.pxd lstmfast/*.py)
for f in $BUILD_ONLY_PXD; do
    if grep -qxF "$f" "$WORK/wheel.txt"; then fail "the wheel carries the build-only $f"; fi
done
if grep -E '\.c$' "$WORK/wheel.txt"; then fail "the wheel carries generated C (above)"; fi
echo "wheel OK: $(grep -c . "$WORK/wheel.txt") files"

# --- 4. no machine-specific code generation ---------------------------------------------------
step "checking compile flags and instructions"
if sed 's/#.*$//' "$WORK/src/setup.py" | grep -nE -- '-march=native|-mtune=native|-mavx|-mfma|-mcpu=native|-xHost'; then
    fail "setup.py asks for machine-specific code (above): the wheel must run on any x86-64"
fi
if grep -E '^(gcc|cc|x86_64-linux-gnu-gcc|clang)' "$WORK/build.log" | grep -E -- '-march=native|-mtune=native|-mavx|-mfma'; then
    fail "the extension was compiled with machine-specific flags (above)"
fi
grep -E '^(gcc|cc|x86_64-linux-gnu-gcc|clang) ' "$WORK/build.log" | grep -- ' -c ' | head -3 | sed 's/^/compile: /'
mkdir -p "$WORK/wheel"
"$PY" -m zipfile -e "$WHEEL" "$WORK/wheel"
if command -v objdump >/dev/null 2>&1 && [[ "$(uname -m)" == x86_64 ]]; then
    # AVX2/FMA and AVX-512 code is compiled per function (target attributes) and chosen at run
    # time: every such instruction must sit in a function named for its instruction set.
    for so in "$WORK"/wheel/lstmfast/*.so; do
        objdump -d --no-show-raw-insn "$so" | awk -v so="$(basename "$so")" '
            /^[0-9a-f]+ <.*>:$/ { fn = $2; next }
            /%zmm|%k[0-7]\>|\{%k/ { zmm++; if (fn !~ /avx512/) { stray[fn] = "AVX-512"; bad++ }; next }
            /%ymm|vfn?m(add|sub)/ { ymm++; if (fn !~ /avx2|avx512/) { stray[fn] = "AVX2/FMA"; bad++ } }
            END {
                printf "instructions in %s: AVX-512 (zmm/mask registers) %d, AVX2/FMA %d\n", so, zmm, ymm
                for (f in stray) printf "  %s instructions outside a dispatched function: %s\n", stray[f], f
                exit bad > 0
            }' || fail "instructions of a later ISA outside the run-time dispatched functions (above)"
    done
else
    echo "objdump not available (or not x86-64): instruction check skipped"
fi

# --- 5. install into a fresh venv and run the suite from outside the source tree --------------
step "installing the wheel into a fresh virtual environment"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q "${WHEEL}[test]"
mkdir -p "$WORK/run"
tar -xzf "$SDIST" -C "$WORK/run" --strip-components=1 --wildcards '*/tests/*' '*/docs/*' '*/benchmarks/*' '*/pyproject.toml'
[[ ! -e "$WORK/run/lstmfast" ]] || fail "the test directory must not contain the package sources"
cd "$WORK/run"
env -u PYTHONPATH "$VPY" - <<'EOF'
import os, sys, lstmfast
here = os.path.dirname(os.path.abspath(lstmfast.__file__))
print("lstmfast", lstmfast.__version__, "imported from", here)
assert os.path.realpath(here).startswith(os.path.realpath(sys.prefix)), "not the venv's lstmfast"
assert os.path.isfile(os.path.join(lstmfast.get_include(), "lstmfast", "kernels.pxd"))
from importlib.metadata import distribution
for ep in distribution("lstmfast").entry_points:       # console scripts must resolve
    try:
        ep.load()
    except Exception as exc:
        sys.exit(f"entry point {ep.name} = {ep.value} does not load: {exc!r}")
    print("entry point", ep.group, ep.name, "=", ep.value, "loads")
EOF
step "running the test suite against the installed wheel (in $WORK/run)"
env -u PYTHONPATH -u LSTMFAST_WHEEL_TEST "$VPY" -m pytest tests -q -p no:cacheprovider
echo
echo "wheel_check: OK ($(basename "$SDIST"), $(basename "$WHEEL"))"
