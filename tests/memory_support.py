"""Measuring what a call allocates, for the tests of the memory reports."""
import tracemalloc


def traced_peak(action):
    """The peak of memory newly allocated (tracemalloc: NumPy's arrays included) while
    `action()` runs, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
