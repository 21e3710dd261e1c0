"""Argument checks shared by the layers, the network and the updaters: each returns the value
in its canonical form or raises TypeError / ValueError naming the argument."""

import math
import numbers

import numpy as np

__all__ = ["check_size", "check_dtype", "check_choice", "check_non_negative", "check_positive",
           "seed_sequence"]


def check_size(name, value):
    """A positive integer (any integer type, not a bool), as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_dtype(dtype):
    """float32 or float64, as a NumPy dtype."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {resolved}")
    return resolved


def check_choice(name, value, choices):
    """One of ``choices`` (lower-case names), in any case; returned in lower case."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value.lower()


def check_non_negative(name, value):
    """A finite real number >= 0, as a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a non-negative number; got {value!r}")
    return float(value)


def check_positive(name, value):
    """A finite real number > 0, as a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    return float(value)


def seed_sequence(seed):
    """``seed`` may be None (fresh entropy), a non-negative int, or a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed must be None, a non-negative integer or a numpy SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))
