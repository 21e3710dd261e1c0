"""Every instruction-set path this machine has (AVX-512, AVX2+FMA, the baseline) gives the
reference's numbers.

The path is chosen once per process at import (pyx/lstmfast_isa.h), so each path other than this
process's runs the reference comparison (tests/reference.py, float64 within 1e-10), the gradient
checks (finite differences) and the vector-math tests (the ulp bounds of pyx/lstmfast_simd.h) in
a subprocess with LSTMFAST_ISA set; this process's own path is what the rest of the suite runs
on. Paths the CPU (or its OS) lacks are skipped, naming the path.
"""
import os
import subprocess
import sys

import pytest

from lstmfast import kernels

HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = ("baseline", "avx2", "avx512")
VARIANT = {"baseline": "portable", "avx2": "avx2+fma", "avx512": "avx512"}
CHECKS = ["test_reference.py", "test_gradcheck.py", "test_simd_math.py"]


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
