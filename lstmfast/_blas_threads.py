"""OpenBLAS's own threads while lstmfast computes.

A process that imports lstmfast usually holds two copies of OpenBLAS: SciPy's, which the kernels
call (through ``scipy.linalg.cython_blas``), and NumPy's, behind the dense and output layers'
``@``. Each has a pthreads pool sized to the cores. lstmfast's own thread team already splits a
pass across the cores, and an OpenBLAS helper thread, once woken by a threaded call, keeps
polling for its next job for a long while (about 0.1 s), on a core the team needs. Profiled on
2 cores, training a character model at the default settings: NumPy's helper thread took 42% of
the process's CPU samples spinning (``blas_thread_server``) and 17% more waiting inside its
threaded GEMMs for a partner that was not running, and the team's second thread got 12%.

So while lstmfast runs a network or layer call, or a pass large enough to matter, every OpenBLAS
copy in the process is held at one thread (:func:`held`); the last holder gives each copy back
the thread count it had. The kernels' copy is held through the same counted hold the passes
take themselves (``lstmfast._team``), so the two can never undo each other. The setting is
process-wide (OpenBLAS has no per-thread one): BLAS calls other threads make meanwhile run on
one thread too.

The copies are found without threadpoolctl: on Linux from the process's mapped files, each
opened again by path (``RTLD_NOLOAD``) and asked for OpenBLAS's thread functions under any of
the names the builds export (``openblas_set_num_threads``, ``scipy_openblas_set_num_threads``,
``scipy_openblas_set_num_threads64_``, ...); elsewhere through threadpoolctl when it is
installed, else not at all (then nothing is changed).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import itertools
import os
import sys
import threading

from . import _team

__all__ = ["OpenBlasLibrary", "libraries", "held", "hold", "release", "holders", "run_parts",
           "run_ranges"]

# the prefixes and suffixes of OpenBLAS's exported names across builds (plain, SciPy's wheels,
# NumPy's 64-bit-integer wheels, distributions' 64-bit builds)
_NAME_FORMS = [(prefix, suffix) for prefix in ("openblas_", "scipy_openblas_")
               for suffix in ("", "64_", "_64")]


def _function(dll, name, restype, argtypes):
    try:
        fn = getattr(dll, name)
    except AttributeError:
        return None
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


class OpenBlasLibrary:
    """One loaded copy of OpenBLAS: its file, whose copy it is ("NumPy", "SciPy" or "other"),
    and its thread count, core type and build configuration as the library itself reports
    them."""

    def __init__(self, path, dll, prefix, suffix):
        self.path = path
        self.owner = _owner_of(path)
        self._get = _function(dll, f"{prefix}get_num_threads{suffix}", ctypes.c_int, [])
        self._set = _function(dll, f"{prefix}set_num_threads{suffix}", None, [ctypes.c_int])
        self._corename = _function(dll, f"{prefix}get_corename{suffix}", ctypes.c_char_p, [])
        self._config = _function(dll, f"{prefix}get_config{suffix}", ctypes.c_char_p, [])
        #: the address of its thread setter (the same function means the same library)
        self.setter_address = ctypes.cast(self._set, ctypes.c_void_p).value

    def get_num_threads(self):
        return int(self._get())

    def set_num_threads(self, n):
        self._set(int(n))

    def corename(self):
        """The kernels OpenBLAS chose for this CPU (``openblas_get_corename``: "SkylakeX",
        "Haswell", "Zen", ...), or None if the build does not say."""
        return None if self._corename is None else self._corename().decode(errors="replace")

    def config(self):
        """The build's own description (``openblas_get_config``), or None."""
        return None if self._config is None else self._config().decode(errors="replace")

    def __repr__(self):
        return f"OpenBlasLibrary({self.owner}, {os.path.basename(self.path)!r})"


def _owner_of(path):
    parts = os.path.normpath(path).split(os.sep)
    if any(p in ("scipy", "scipy.libs") for p in parts):
        return "SciPy"
    if any(p in ("numpy", "numpy.libs") for p in parts):
        return "NumPy"
    return "other"


def _mapped_files():
    """The shared objects mapped into this process (Linux) whose names say BLAS (every OpenBLAS
    build's does: libopenblas*.so, libscipy_openblas*.so, libblas.so.3 as a distribution's
    alternative), in the order first mapped."""
    seen = {}
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split(None, 5)
            if len(fields) == 6:
                path = fields[5].strip()
                name = os.path.basename(path).lower()
                if path.startswith("/") and ".so" in name and "blas" in name:
                    seen.setdefault(path, None)
    return list(seen)


def _threadpoolctl_files():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [entry["filepath"] for entry in threadpool_info() if entry.get("internal_api") == "openblas"]


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _defining_file(function, default):
    """The file that defines `function` (a ctypes function): dlsym on a library's handle also
    finds the symbols of its dependencies (SciPy's cython_blas module answers for its OpenBLAS)."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return default
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info)) and info.dli_fname:
        return os.fsdecode(info.dli_fname)
    return default


def _open(path):
    """The library at `path` as an OpenBlasLibrary, if it is loaded and is OpenBLAS."""
    try:
        dll = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
    except OSError:
        return None
    for prefix, suffix in _NAME_FORMS:
        if (hasattr(dll, f"{prefix}set_num_threads{suffix}")
                and hasattr(dll, f"{prefix}get_num_threads{suffix}")):
            path = os.path.normpath(_defining_file(getattr(dll, f"{prefix}set_num_threads{suffix}"), path))
            return OpenBlasLibrary(path, dll, prefix, suffix)
    return None


_found = None
_found_lock = threading.Lock()


def libraries(refresh=False):
    """The copies of OpenBLAS loaded in this process, one per library (found once; `refresh`
    looks again, e.g. after importing a package that brings its own)."""
    global _found
    with _found_lock:
        if _found is None or refresh:
            try:
                paths = _mapped_files() if sys.platform.startswith("linux") else _threadpoolctl_files()
            except OSError:
                paths = _threadpoolctl_files()
            found, setters = [], set()
            for path in paths:
                lib = _open(path)
                if lib is not None and lib.setter_address not in setters:
                    setters.add(lib.setter_address)
                    found.append(lib)
            _found = found
        return list(_found)


def _kernel_hold():
    """lstmfast._team's hold of the kernels' OpenBLAS (hold, release, setter address), or None
    when the team module cannot steer it."""
    if not _team.BLAS_THREAD_CONTROL:
        return None
    return _team.hold_blas_single, _team.release_blas_single, _team.blas_setter_address()


# -------------------------------------------------------------------------- the counted hold

_lock = threading.Lock()
_depth = {}           # thread ident -> how many holds that thread has open
_saved = {}           # library -> the thread count to give it back (copies set to 1 by a hold)
_kernels_held = None  # (hold, release, setter address, count found) of the kernels' copy, held


def hold():
    """Hold every OpenBLAS copy at one thread until the matching :func:`release` (calls nest,
    from any thread: the first takes the kernels' copy, the last restores every copy). Each
    hold sets the other copies to one thread again if something raised them meanwhile, and
    then restores the count it found there."""
    global _kernels_held
    ident = threading.get_ident()
    with _lock:
        if not _depth:
            kernels = _kernel_hold()
            if kernels is not None:
                # the count found, for a child process whose team module forgot it (fork)
                found = [lib.get_num_threads() for lib in libraries()
                         if lib.setter_address == kernels[2]]
                kernels[0]()
                _kernels_held = kernels + (found[0] if found else None,)
        skip = None if _kernels_held is None else _kernels_held[2]
        for lib in libraries():
            if lib.setter_address != skip:
                n = lib.get_num_threads()
                if n > 1:
                    lib.set_num_threads(1)
                    _saved[lib] = n
        _depth[ident] = _depth.get(ident, 0) + 1


def release():
    """Give back one :func:`hold` of the calling thread; the last one in the process restores
    each copy's thread count."""
    ident = threading.get_ident()
    with _lock:
        depth = _depth.get(ident, 0)
        if depth == 0:
            raise RuntimeError("release() without a hold() in this thread")
        if depth > 1:
            _depth[ident] = depth - 1
            return
        del _depth[ident]
        if not _depth:
            _restore()


def _restore():
    """(With _lock held, the last hold gone.) Every copy back to the count the holds found."""
    global _kernels_held
    for lib, n in _saved.items():
        lib.set_num_threads(n)
    _saved.clear()
    if _kernels_held is not None:
        kernels, _kernels_held = _kernels_held, None
        kernels[1]()


def holders():
    """How many holds are open, in all threads (for tests and diagnostics)."""
    with _lock:
        return sum(_depth.values())


class _Held:
    """The context manager of :func:`held` (a class, not a generator: it costs less per call)."""

    __slots__ = ()

    def __enter__(self):
        hold()
        return self

    def __exit__(self, *exc):
        release()
        return False


_HELD = _Held()


def held():
    """``with held(): ...``: every OpenBLAS copy at one thread for the block."""
    return _HELD


def holding(method):
    """Decorator: the call runs inside :func:`held`."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        hold()
        try:
            return method(*args, **kwargs)
        finally:
            release()
    return wrapper


def _after_fork_in_child():
    """Only the forking thread survives a fork: keep its holds, forget the others'. The team
    module may have forgotten its holders in the child (pyx/lstmfast_team.h, once its workers
    exist): then a hold still open here takes the kernels' copy again, and none left lets go
    of it without a release."""
    global _lock, _depth, _kernels_held
    _lock = threading.Lock()
    ident = threading.get_ident()
    _depth = {ident: _depth[ident]} if ident in _depth else {}
    if _kernels_held is not None:
        forgotten = _team.blas_single_holders() == 0
        if _depth and forgotten:
            for lib in libraries():
                if lib.setter_address == _kernels_held[2] and _kernels_held[3] is not None:
                    lib.set_num_threads(_kernels_held[3])
            _kernels_held[0]()
        elif not _depth and forgotten:
            _kernels_held = None
    if not _depth:
        _restore()


# -------------------------------------------------------------- lstmfast's threads outside the kernels

#: the most threads lstmfast runs (lstmfast.set_num_threads's range)
THREADS_MAX = 8
_pool = None
_pool_lock = threading.Lock()


def run_parts(count, work):
    """work(i) for i in 0..count-1 on up to lstmfast.get_num_threads() threads (the caller and
    a worker of lstmfast's team at two threads, a small pool at more; each thread takes the
    next part not taken), for the work around the kernels
    that OpenBLAS, held at one thread, no longer spreads: dense products, Adam. NumPy releases
    the GIL inside each part's products and loops. Returns when every part is done, an
    interrupt or error included (the first error is raised then)."""
    threads = min(_team_threads(), count)
    if threads <= 1:
        for i in range(count):
            work(i)
        return
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=THREADS_MAX - 1,
                                                          thread_name_prefix="lstmfast-parts")
        pool = _pool
    claims = itertools.count()              # next() is atomic under the GIL
    stop = []                               # set when a part failed: take no more

    def take():
        for i in iter(claims.__next__, None):
            if i >= count or stop:
                return
            try:
                work(i)
            except BaseException:
                stop.append(True)
                raise

    if threads == 2:
        # the caller and a worker of lstmfast's team, awake after a pass (8.6 us per call
        # against the pool's 42 us); the caller alone when the team is busy elsewhere
        from . import _team
        _team.call_pair((take, (), {}), (take, (), {}))
        return
    helpers = [pool.submit(take) for _ in range(threads - 1)]
    try:
        take()
    finally:
        # no part may still run when the caller goes on: a Ctrl-C meanwhile, or any signal
        # handler's exception (a timeout's), waits for the parts under way too
        interrupted = None
        while True:
            try:
                concurrent.futures.wait(helpers)
                break
            except BaseException as error:
                stop.append(True)
                if interrupted is None:
                    interrupted = error
        if interrupted is not None:
            raise interrupted
    for helper in helpers:
        helper.result()


def run_ranges(count, parts, work, multiple=1):
    """work(lo, hi) over 0..count cut into `parts` contiguous ranges (each cut a multiple of
    `multiple`), run as run_parts runs parts; work(0, count) in one call for one part. The
    ranges depend on count and parts alone: callers whose bits must not depend on the thread
    count choose parts by the shape."""
    if parts <= 1:
        work(0, count)
        return
    bounds = [count * i // parts // multiple * multiple for i in range(parts)] + [count]
    run_parts(parts, lambda i: work(bounds[i], bounds[i + 1]))


def _team_threads():
    from .kernels import get_num_threads
    return get_num_threads()


def _after_fork_forget_pool():
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()     # its threads did not survive the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
    os.register_at_fork(after_in_child=_after_fork_forget_pool)

# Found at import (NumPy's copy is loaded with NumPy, SciPy's with lstmfast._team), not in the
# first call that holds them: a call refused for its size must allocate next to nothing.
libraries()


def default_team_threads(limit):
    """LSTMFAST_NUM_THREADS; else OMP_NUM_THREADS when it is a plain positive integer (torchrun
    and most job launchers set it to give each process its share of the cores); else the CPUs
    this process may run on. At most `limit` (the team's LF_TEAM_MAX)."""
    value = os.environ.get("LSTMFAST_NUM_THREADS", "").strip()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"LSTMFAST_NUM_THREADS: expected an integer, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"LSTMFAST_NUM_THREADS: expected at least 1, got {threads}")
    elif omp.isdigit() and int(omp) >= 1:
        threads = int(omp)
    else:
        try:
            threads = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            threads = os.cpu_count() or 1
    return max(1, min(threads, limit))
