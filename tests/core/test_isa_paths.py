"""Every instruction-set path this machine has (AVX-512, AVX2+FMA, the baseline) gives the
reference's numbers.

The path is chosen once per process at import (pyx/lstmfast_isa.h), so each path other than this
process's runs the reference comparison (tests/reference.py, float64 within 1e-10), the gradient
checks (finite differences), the vector-math tests (the ulp bounds of pyx/lstmfast_simd.h) and
the training loops (softmax output, Adam) in a subprocess with LSTMFAST_ISA set; this process's
own path is what the rest of the suite runs on. Paths the CPU (or its OS) lacks are skipped,
naming the path.
"""
import os
import subprocess
import sys

import pytest

from lstmfast import kernels

HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = ("baseline", "avx2", "avx512")
VARIANT = {"baseline": "portable", "avx2": "avx2+fma", "avx512": "avx512"}
CHECKS = ["test_reference.py", "test_gradcheck.py", "test_simd_math.py", "test_training_math.py"]


def _env(**values):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LSTMFAST_ISA", "LSTMFAST_DISABLE_AVX2")}
    env.update(values)
    return env


def _variant_under(env):
    result = subprocess.run(
        [sys.executable, "-P", "-W", "error::RuntimeWarning", "-c",
         "from lstmfast import kernels; print(kernels.simd_variant())"],
        env=env, capture_output=True, text=True, timeout=120)
    return result


def _current_level():
    return {v: k for k, v in VARIANT.items()}[kernels.simd_variant()]


@pytest.mark.parametrize("isa", LEVELS)
def test_path_agrees_with_the_reference(isa):
    if isa not in kernels.isa_levels():
        pytest.skip(f"this CPU (or its OS) lacks the {isa} path")
    if isa == _current_level():
        pytest.skip(f"{isa} is this process's path: the rest of the suite runs on it")
    env = _env(LSTMFAST_ISA=isa)
    chosen = _variant_under(env)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == VARIANT[isa]
    result = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"] + CHECKS,
        env=env, capture_output=True, text=True, timeout=1800, cwd=HERE)
    assert result.returncode == 0, f"LSTMFAST_ISA={isa}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("isa", LEVELS)
def test_variable_lowers_the_path(isa):
    if isa not in kernels.isa_levels():
        pytest.skip(f"this CPU (or its OS) lacks the {isa} path")
    result = _variant_under(_env(LSTMFAST_ISA=isa))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == VARIANT[isa]


def test_unset_variable_takes_the_best_path():
    result = _variant_under(_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == VARIANT[kernels.isa_levels()[-1]]


def test_bad_value_warns_naming_the_variable_and_the_values():
    result = subprocess.run(
        [sys.executable, "-P", "-c", "from lstmfast import kernels; print(kernels.simd_variant())"],
        env=_env(LSTMFAST_ISA="avx3"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LSTMFAST_ISA='avx3'" in result.stderr
    assert "baseline, avx2, avx512" in result.stderr
    assert result.stdout.strip() == VARIANT[kernels.isa_levels()[-1]]


def test_value_above_the_cpu_warns_and_keeps_the_cpus_best():
    missing = [isa for isa in LEVELS if isa not in kernels.isa_levels()]
    if not missing:
        pytest.skip("this CPU has every path: no level above it to ask for")
    result = subprocess.run(
        [sys.executable, "-P", "-c", "from lstmfast import kernels; print(kernels.simd_variant())"],
        env=_env(LSTMFAST_ISA=missing[-1]), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"LSTMFAST_ISA='{missing[-1]}'" in result.stderr and "supports only up to" in result.stderr
    assert result.stdout.strip() == VARIANT[kernels.isa_levels()[-1]]


def test_info_names_the_path_in_use():
    for isa in kernels.isa_levels():
        result = subprocess.run([sys.executable, "-P", "-m", "lstmfast", "info"],
                                env=_env(LSTMFAST_ISA=isa), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stdout.splitlines() if line.startswith("fast path:"))
        if isa == "baseline":
            assert "not active (portable)" in line, line
        else:
            assert f"active ({VARIANT[isa]})" in line, line


BITS_SCRIPT = r"""
import hashlib
import numpy as np
from lstmfast import kernels
from lstmfast.functional import lstm_forward
digest = hashlib.sha256()
rng = np.random.default_rng(7)
# (mb, n_in, h, T): one step of one example (W and RW read in place), with k and the columns
# past whole vectors; a few steps of one and of three examples (row-packed weights); of 20
# (panel-packed)
for dtype in (np.float32, np.float64):
    for mb, n_in, h, T in ((1, 13, 7, 1), (1, 32, 32, 1), (1, 5, 33, 1), (1, 9, 11, 4),
                           (3, 6, 10, 3), (20, 7, 12, 3)):
        for peepholes in (False, True):
            x = rng.standard_normal((mb, n_in, T)).astype(dtype)
            W = rng.standard_normal((n_in, 4 * h)).astype(dtype) / 4
            RW = rng.standard_normal((h, 4 * h + (3 if peepholes else 0))).astype(dtype) / 4
            b = rng.standard_normal(4 * h).astype(dtype)
            h0 = rng.standard_normal((mb, h)).astype(dtype)
            c0 = rng.standard_normal((mb, h)).astype(dtype)
            for for_backprop in (False, True):
                record = lstm_forward(x, W, RW, b, h0=h0, c0=c0, peepholes=peepholes,
                                      for_backprop=for_backprop)
                for part in (record.output, record.last_h, record.last_c):
                    digest.update(np.ascontiguousarray(part).tobytes())
print(kernels.simd_variant(), digest.hexdigest())
"""


def test_vector_paths_give_the_same_bits():
    """The AVX2 and AVX-512 products add the same terms in the same order (pyx/lstmfast_gemm.inc.h),
    so a forward pass gives the same bits on both; the baseline calls BLAS instead."""
    vector = [isa for isa in ("avx2", "avx512") if isa in kernels.isa_levels()]
    if len(vector) < 2:
        pytest.skip("this CPU has fewer than two vector paths to compare")
    hashes = {}
    for isa in vector:
        result = subprocess.run([sys.executable, "-P", "-c", BITS_SCRIPT],
                                env=_env(LSTMFAST_ISA=isa), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        variant, digest = result.stdout.split()
        assert variant == VARIANT[isa]
        hashes[isa] = digest
    assert hashes["avx2"] == hashes["avx512"], hashes
