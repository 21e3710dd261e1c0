"""The one-call-at-a-time guard of layers and networks.

A layer or a ``Sequential`` keeps per-call state, so one object runs one call at a time: a call
made while another thread is inside a call on the same object raises
:class:`ConcurrentUseError` at once, without waiting and before anything is changed (see
"Threads" in ``lstmfast.layers``). The same thread may re-enter: containers call their layers,
layers call their own guarded methods.
"""

import functools
import threading

__all__ = ["ConcurrentUseError", "Guarded", "exclusive", "in_use_lock", "busy_error"]


class ConcurrentUseError(RuntimeError):
    """A layer (or network) was called while another thread was inside a call on it. Raised at
    once, before anything is changed; the running call is not disturbed."""


_GUARD_CREATION = threading.Lock()


def in_use_lock(obj):
    """The object's re-entrant in-use lock, made on first use (so that every constructor,
    copy and unpickled object gets one without having to ask for it)."""
    lock = obj.__dict__.get("_in_use_lock")
    if lock is None:
        with _GUARD_CREATION:
            lock = obj.__dict__.get("_in_use_lock")
            if lock is None:
                lock = threading.RLock()
                obj.__dict__["_in_use_lock"] = lock
    return lock


def exclusive(method):
    """Run ``method`` holding the object's in-use lock; raise ConcurrentUseError, without
    waiting, if another thread holds it (the same thread may re-enter)."""
    what = method.__name__

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        lock = in_use_lock(self)
        if not lock.acquire(blocking=False):
            raise busy_error(self, what)
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    return guarded


def busy_error(obj, what):
    """The ConcurrentUseError for a call ``what`` on ``obj`` while another thread is in it."""
    kind = "network" if getattr(obj, "guard_noun", "layer") == "network" else "layer"
    return ConcurrentUseError(
        f"{type(obj).__name__}.{what}: {kind} is in use by another thread (a call on it is "
        f"still running). A {kind} keeps per-call state and runs one call at a time: use one "
        f"{kind} per thread, or serialise the calls with your own lock")


class Guarded:
    """Objects with an in-use lock: the lock is not part of their pickled or copied state."""

    #: what the object is called in ConcurrentUseError's message ("layer" or "network")
    guard_noun = "layer"
    #: per-process attributes, left out of pickles and copies (remade on first use)
    _transient_attributes = ("_in_use_lock",)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._transient_attributes:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
