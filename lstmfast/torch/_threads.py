"""The BLAS thread pool behind lstmfast's kernels while they run inside PyTorch.

PyTorch's OpenMP pool and the OpenBLAS that lstmfast's kernels call fight when both are active
(a small GEMM right after the other pool's work costs milliseconds). By default
(``set_blas_threads(1)``) the kernels' BLAS runs single-threaded during the modules' calls and
PyTorch's pool does the rest; ``benchmarks/bench_torch_module.py`` has the measurements. The
kernels' own thread team (their time loops) runs on PyTorch's OpenMP workers by default
(``set_team_threads("auto")``), so that the two never spin on the same cores.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading

from .. import _blas_threads, _team

__all__ = ["set_blas_threads", "get_blas_threads", "set_team_threads", "get_team_threads"]


_blas_setting = 1
_team_setting = "auto"
_blas_lock = threading.Lock()
_blas_controller = None      # threadpoolctl controller restricted to lstmfast's (SciPy's) BLAS
_blas_unavailable = False


def set_blas_threads(setting):
    """How many threads the BLAS behind lstmfast's kernels may use during the modules' calls.

    1 (the default): single-threaded during the calls (the pool's size is restored after each).
    PyTorch's OpenMP pool and OpenBLAS's pthreads pool fight when both are active (measured in
    ``benchmarks/bench_torch_module.py``: 1.8 ms vs 19 ms per training step of a small layer at
    2 threads), and with ``torch.set_num_threads(1)`` (one core per process, as torchrun sets up)
    a multi-threaded BLAS would oversubscribe the cores. An integer n > 1: n threads during the
    calls (worth trying with ``torch.set_num_threads(1)`` and large layers); None: leave the
    pool alone. 1 holds every OpenBLAS copy of the process at one thread
    (``lstmfast._blas_threads``, no other package needed); n > 1 needs ``threadpoolctl`` (to
    find the library), without which nothing is changed.
    Returns the previous setting."""
    global _blas_setting
    previous, _blas_setting = _blas_setting, _thread_setting("set_blas_threads", setting)
    return previous


def _thread_setting(function, setting, most=None, words=()):
    """A thread setting checked: None, one of `words`, or an integer from 1 (to `most`)."""
    if setting is None or (isinstance(setting, str) and setting in words):
        return setting
    if (isinstance(setting, bool) or not isinstance(setting, numbers.Integral) or setting < 1
            or (most is not None and setting > most)):
        expected = ", ".join([f'"{word}"' for word in words] + ["None"])
        bound = "an integer >= 1" if most is None else f"an integer from 1 to {most}"
        raise ValueError(f"{function}: expected {expected} or {bound}, got {setting!r}")
    return int(setting)


def get_blas_threads():
    """The current :func:`set_blas_threads` setting."""
    return _blas_setting


def set_team_threads(setting):
    """How many threads the kernels' time loops may use during the modules' calls.

    "auto" (the default): while PyTorch's intra-op pool has n > 1 threads, a team of n, at most
    lstmfast's own setting (``lstmfast.set_num_threads``: the usable cores by default), that
    runs on that pool's own OpenMP workers (when PyTorch computes with OpenMP and its runtime is
    found: Linux; not in a child made by fork()), else one thread; with one torch thread,
    lstmfast's own setting. Why: the workers of PyTorch's OpenMP
    pool keep spinning for milliseconds after each of its parallel operations (the loss, the
    optimizer, a Linear layer), and a thread of lstmfast's own team then shares a core with one
    of them: at 2 threads on 2 cores a (50, 32, 64, 128) float32 forward pass right after a
    torch operation took 3.2 ms against 1.1-1.5 ms without it. On PyTorch's workers the
    module's training step there took 4.8 ms, against 6.6 ms with a team of one (Intel Xeon,
    AVX-512). An integer n from 1 to 8 (the team's size, as ``lstmfast.set_num_threads``): n
    threads of lstmfast's own team; None: lstmfast's own setting. Returns the previous
    setting."""
    global _team_setting
    previous = _team_setting
    _team_setting = _thread_setting("set_team_threads", setting, _blas_threads.THREADS_MAX,
                                    ("auto",))
    return previous


def get_team_threads():
    """The current :func:`set_team_threads` setting."""
    return _team_setting


def _team_plan():
    """The kernels' per-call tuning for the team setting (None: lstmfast's own, or
    {"threads": n}) and whether the team runs on PyTorch's OpenMP workers."""
    setting = _team_setting
    if setting == "auto":
        import torch

        from .. import get_num_threads
        threads = torch.get_num_threads()
        own = get_num_threads()
        if threads > 1 and own > 1 and _openmp_runtime() is not None:
            # PyTorch's own workers (_kernel_call), as many as its pool has, and no more than
            # lstmfast's setting (the usable cores by default): a team spinning at its step
            # barriers on more threads than cores waits for the descheduled ones every step
            return _THREADS[min(threads, own)], True
        # (no record when the team is at one thread anyway: parsing one costs ~1.4 us a call)
        return (_ONE_THREAD if threads > 1 and own > 1 else None), False
    if setting is None:
        return None, False
    return _THREADS[setting], False


_THREADS = {n: {"threads": n} for n in range(1, _blas_threads.THREADS_MAX + 1)}
_ONE_THREAD = _THREADS[1]
_OPENMP_FUNCTIONS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
_openmp = None               # (GOMP_parallel, omp_get_thread_num, omp_get_num_threads) or ()


def _find_openmp_runtime():
    """The addresses of _OPENMP_FUNCTIONS in the OpenMP runtime PyTorch computes with (its
    parallel backend OpenMP, the runtime a library loaded from PyTorch's directory, or the
    only one loaded), or None."""
    import ctypes

    import torch
    try:
        if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
            return None
        with open("/proc/self/maps") as maps:
            fields = [line.split(None, 5) for line in maps]
        paths = {f[5].strip() for f in fields if len(f) == 6}
    except (OSError, AttributeError, RuntimeError):
        return None
    runtimes = sorted(p for p in paths
                      if os.path.basename(p).startswith(("libgomp", "libiomp5", "libomp"))
                      and ".so" in os.path.basename(p))
    torch_dir = os.path.dirname(os.path.realpath(torch.__file__)) + os.sep
    own = [p for p in runtimes if os.path.realpath(p).startswith(torch_dir)]
    if own:
        runtimes = own
    elif len(runtimes) != 1:
        return None
    try:
        library = ctypes.CDLL(runtimes[0], mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        return tuple(ctypes.cast(getattr(library, name), ctypes.c_void_p).value
                     for name in _OPENMP_FUNCTIONS)
    except (OSError, AttributeError):
        return None


def _openmp_runtime():
    """The OpenMP runtime's functions once found and given to the team, or None."""
    global _openmp
    if _openmp is None:
        found = _find_openmp_runtime()
        if found is not None and all(found):
            _team.set_openmp_runtime(*found)
        else:
            found = ()
        _openmp = found
    return _openmp or None


def _forget_openmp_runtime():
    """In a child made by fork(): the team never runs on the OpenMP runtime's workers there. A
    thread keeps GNU OpenMP's workers after its first parallel region, they are not in the child,
    and a region that thread starts there waits for them for ever (the module's next pass hung).
    The passes take one thread, as they did inside torch before the team ran on its workers."""
    global _openmp
    _openmp = ()
    _team.set_openmp_runtime(0, 0, 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_openmp_runtime)


def _kernel_call(openmp, kernel, *args, **kwargs):
    """``kernel(*args, **kwargs)``, a kernel call from the modules: lstmfast's BLAS limited
    (_blas_limit), and with `openmp` (from _team_plan) the calling thread's team on PyTorch's
    OpenMP workers (the thread's flag set and put back around the call by compiled code:
    _team.call_on_openmp)."""
    # the default setting's hold without _blas_limit's generator (2-3 us of a call that the
    # modules make once per layer and direction)
    with _blas_threads.held() if _blas_setting == 1 else _blas_limit():
        if not openmp:
            return kernel(*args, **kwargs)
        return _team.call_on_openmp(kernel, args, kwargs)


def _scipy_blas_controller():
    """A threadpoolctl controller for the BLAS library SciPy's cython_blas (hence lstmfast's
    kernels) uses, and nothing else (PyTorch's MKL / OpenMP pools are left alone)."""
    global _blas_controller, _blas_unavailable
    if _blas_controller is not None or _blas_unavailable:
        return _blas_controller
    with _blas_lock:
        if _blas_controller is not None or _blas_unavailable:
            return _blas_controller
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (loaded already by the kernels)
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_unavailable = True
            return None
        controller = ThreadpoolController()
        blas = controller.select(user_api="blas")
        # SciPy's own BLAS (a wheel's scipy.libs/libscipy_openblas); other builds (conda, system
        # packages) share one BLAS between NumPy and SciPy: then limit all BLAS libraries
        scipy_paths = [lib.filepath for lib in blas.lib_controllers
                       if "scipy.libs" in lib.filepath or "/scipy/" in lib.filepath]
        ours = controller.select(filepath=scipy_paths) if scipy_paths else blas
        if not ours.lib_controllers:
            _blas_unavailable = True
            return None
        _blas_controller = ours
        return ours


class _Pool:
    """Get / set the thread count of one BLAS library. OpenBLAS is called directly through its
    ``openblas_set_num_threads`` (threadpoolctl >= 3.6 lets only one "controlling" Python thread
    change an OpenBLAS pthreads pool and silently ignores the others, which would leave the pool
    limited after calls from several threads); other libraries go through threadpoolctl."""

    def __init__(self, lib):
        self._lib = lib
        self._get = self._set = None
        if lib.internal_api == "openblas":
            dynlib = getattr(lib, "dynlib", None)
            for prefix in ("", "scipy_"):
                for suffix in ("", "64_", "_64"):
                    setter = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                    getter = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None and self._set is None:
                        self._get, self._set = getter, setter

    def get(self):
        return self._get() if self._get is not None else self._lib.get_num_threads()

    def set(self, n):
        if self._set is not None:
            self._set(int(n))
        else:
            self._lib.set_num_threads(n)


_pools = None
_limit_depth = 0            # kernel calls currently inside the limit (from any Python thread)
_limit_saved = None         # the pools' thread counts before the outermost one
_limit_applied = None       # the limit the outermost one set


def _blas_pools():
    global _pools
    if _pools is None:
        controller = _scipy_blas_controller()
        _pools = [] if controller is None else [_Pool(lib) for lib in controller.lib_controllers]
    return _pools


@contextlib.contextmanager
def _blas_limit():
    """Limit lstmfast's BLAS as set_blas_threads says for the duration of a kernel call. The pool
    size is process-wide: concurrent calls share one limit, set by the first and undone by the
    last (so that interleaved calls from several threads cannot leave it limited)."""
    global _limit_depth, _limit_saved, _limit_applied
    limit = _blas_setting
    if limit is None:
        yield
        return
    if limit == 1:
        # the counted hold of every OpenBLAS copy that the kernels' passes and lstmfast's
        # networks share (lstmfast._blas_threads): no count of its own that a pass could undo
        with _blas_threads.held():
            yield
        return
    pools = _blas_pools()
    if not pools:
        yield
        return
    with _blas_lock:
        if _limit_depth == 0:
            _limit_saved = [pool.get() for pool in pools]
            _limit_applied = limit
            for pool, n in zip(pools, _limit_saved):
                if n != limit:          # a pool already at the limit is left alone
                    pool.set(limit)
        _limit_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _limit_depth -= 1
            if _limit_depth == 0:
                for pool, n in zip(pools, _limit_saved):
                    if n is not None and n != _limit_applied:
                        pool.set(n)
                _limit_saved = None
