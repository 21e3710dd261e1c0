# cython: language_level=3
"""lstmfast._interrupt: long passes run in the main thread and still stop on Ctrl-C.

A pass holds no GIL while it computes, so no Python signal handler can run in the main thread
until it returns. While a long pass runs there (run_watched), a small C handler stands in front
of the handler of each signal in WATCHED that has one (neither SIG_DFL nor SIG_IGN): it hands the
signal on, so that Python records it, then sets the pass's cancel flag. The pass stops at its
next time step; then the pending Python handlers run. When one raises (Ctrl-C's
KeyboardInterrupt, a timeout's exception), that exception ends the call; when none does, nothing
asked the pass to stop and the caller runs it again. Then the handlers are put back as they were.

Why not a worker thread with the main thread waiting on it (lstmfast.functional's other way, kept
where this one is not available): waking the waiting main thread when the worker is done cost
0.16-0.44 ms per pass, 10-16% of a (50, 32, 64, 128) float32 forward pass at 1-2 threads (Intel
Xeon, AVX-512, 2 vCPUs).
"""
from cpython.exc cimport PyErr_CheckSignals

cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from *:
    """
    #if defined(__unix__) || defined(__APPLE__)
    #include <errno.h>
    #include <signal.h>
    #define LF_WATCHES_SIGNALS 1
    /* the signals a program gives a Python handler that may end a computation */
    static const int lf_watched[] = {SIGINT, SIGTERM, SIGALRM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    #define LF_WATCHED_COUNT ((int)(sizeof(lf_watched) / sizeof(lf_watched[0])))
    static struct sigaction lf_previous[LF_WATCHED_COUNT];
    static int lf_replaced[LF_WATCHED_COUNT];
    /* the cancel flag of the pass being watched: set once, an array that lives as long as the
     * module, so that a handler running late in another thread never writes to freed memory */
    static int *lf_watch_flag = NULL;

    static void lf_on_signal(int sig, siginfo_t *info, void *context) {
        int saved_errno = errno;
        int i;
        for (i = 0; i < LF_WATCHED_COUNT; i++) {
            if (lf_watched[i] != sig)
                continue;
            /* hand the signal on to the handler it had (Python's records it for the main
             * thread and writes its wakeup fd) */
            if (lf_previous[i].sa_flags & SA_SIGINFO)
                lf_previous[i].sa_sigaction(sig, info, context);
            else if (lf_previous[i].sa_handler != SIG_DFL && lf_previous[i].sa_handler != SIG_IGN)
                lf_previous[i].sa_handler(sig);
            break;
        }
        /* the flag after the hand-on: the pass that stops for it then finds the signal
         * recorded (in another thread, a pre-emption between the two could otherwise let it
         * find nothing pending and run again for no reason) */
        if (lf_watch_flag != NULL)
            __atomic_store_n(lf_watch_flag, 1, __ATOMIC_RELEASE);
        errno = saved_errno;
    }

    static int lf_is_ours(const struct sigaction *action) {
        return (action->sa_flags & SA_SIGINFO) && action->sa_sigaction == lf_on_signal;
    }

    /* Put lf_on_signal in front of every watched signal that has a handler; the count put. */
    static int lf_watch_begin(void) {
        int i, count = 0;
        for (i = 0; i < LF_WATCHED_COUNT; i++) {
            struct sigaction current, ours;
            lf_replaced[i] = 0;
            if (sigaction(lf_watched[i], NULL, &current) != 0 || lf_is_ours(&current))
                continue;
            if (!(current.sa_flags & SA_SIGINFO)
                    && (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN))
                continue;               /* the default (end the process) or ignored: as is */
            lf_previous[i] = current;
            ours = current;
            ours.sa_sigaction = lf_on_signal;
            ours.sa_flags = SA_SIGINFO | (current.sa_flags & (SA_ONSTACK | SA_RESTART));
            if (sigaction(lf_watched[i], &ours, NULL) == 0) {
                lf_replaced[i] = 1;
                count++;
            }
        }
        return count;
    }

    /* Give back the handlers lf_watch_begin replaced (unless something replaced ours since). */
    static void lf_watch_end(void) {
        int i;
        for (i = 0; i < LF_WATCHED_COUNT; i++) {
            struct sigaction current;
            if (!lf_replaced[i])
                continue;
            lf_replaced[i] = 0;
            if (sigaction(lf_watched[i], NULL, &current) == 0 && lf_is_ours(&current))
                sigaction(lf_watched[i], &lf_previous[i], NULL);
        }
    }
    #else
    #define LF_WATCHES_SIGNALS 0
    #define LF_WATCHED_COUNT 0
    static const int lf_watched[1] = {0};
    static int *lf_watch_flag = NULL;
    static int lf_watch_begin(void) { return 0; }
    static void lf_watch_end(void) { }
    #endif
    """
    const int LF_WATCHES_SIGNALS
    const int LF_WATCHED_COUNT
    const int lf_watched[]
    int* lf_watch_flag
    int lf_watch_begin() nogil
    void lf_watch_end() nogil


# whether watch() can see signals here (POSIX); without it, lstmfast.functional waits for long
# passes in the main thread on a worker thread instead
WATCHES_SIGNALS = bool(LF_WATCHES_SIGNALS)
# the signals watched (those of them that have a handler while a pass runs)
WATCHED = tuple(lf_watched[i] for i in range(LF_WATCHED_COUNT))


class PassStopped(KeyboardInterrupt):
    """A pass (lstmfast.kernels.forward / backward) stopped at a time step: its cancel flag was
    set."""


class PassAbandoned(PassStopped):
    """A stopped pass one of whose team threads did not stop: its arrays are kept for good
    (lstmfast.kernels), so the pass must not run again on them."""


# the one cancel flag of watched passes (int32, as the kernels poll it)
_FLAG = np.zeros(1, dtype=np.intc)
lf_watch_flag = <int*>cnp.PyArray_DATA(_FLAG)
cdef int _depth = 0         # watched passes under way (nested: one run by a signal handler)


def run_watched(kernel, tuple args, tuple extra):
    """Run ``kernel(*args, cancel, *extra)`` (a pass of lstmfast.kernels) in the calling thread,
    the main one, with the signals watched. True when it ran to the end; False when a signal
    stopped it and no Python handler raised (nothing asked it to stop: the caller runs it
    again). A handler's exception propagates (Ctrl-C: KeyboardInterrupt); a pass one of whose
    team threads did not stop raises PassAbandoned.

    This is Cython, not Python, for a reason: a pending handler runs only where the interpreter
    checks for one, and Python code between the kernel's return and the handlers' return would
    let it raise before the handlers are given back."""
    global _depth
    cdef object abandoned = None
    _FLAG[0] = 0
    if _depth == 0:
        lf_watch_begin()
    # a handler run below may itself run a watched pass: only the outermost one puts the
    # handlers in front and back
    _depth += 1
    try:
        # a signal that came just before the handlers were replaced is pending in Python: its
        # handler runs now, before the pass, not after it
        PyErr_CheckSignals()
        kernel(*args, _FLAG, *extra)
        return True
    except PassAbandoned as error:
        abandoned = error
    except PassStopped:
        pass
    finally:
        _depth -= 1
        if _depth == 0:
            lf_watch_end()
    if abandoned is not None:
        try:
            PyErr_CheckSignals()
        except KeyboardInterrupt:
            pass                # Ctrl-C's own: the pass's account says more
        raise abandoned
    PyErr_CheckSignals()
    return False


def stopped_by_signal():
    """Whether a watched signal arrived during the last watched pass (or since)."""
    return bool(_FLAG[0])
