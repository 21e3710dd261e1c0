# cython: language_level=3
"""The thread team's one instance. pyx/lstmfast_team.h keeps the team (its workers, the mutex a
pass holds it by, the job it publishes, whether a job was abandoned), OpenBLAS's thread setters
and the count of passes holding OpenBLAS at one thread, and the count of lstmfast threads that
may be in level-3 BLAS (OpenBLAS's buffer pool) in static variables, one copy per compiled
module that includes it: the passes (lstmfast._forward, lstmfast._backward) therefore take, run
and give back their threads only through this module's functions (lstmfast/_team.pxd), so that
the process has one team and one count of each. The barrier and the claims of groups keep no
state of their own and are used inline."""
import sys

from cpython.ref cimport Py_DECREF, Py_INCREF
from scipy.linalg cimport cython_blas as _cython_blas

from lstmfast._activations cimport lf_load_flag
from lstmfast._team cimport (lf_team_fn, lf_barrier, LF_TEAM_MAX, lf_team_execute,
                             lf_pass_acquire, lf_pass_release, lf_blas_buffers_checked,
                             lf_blas_threads_init, lf_team_acquire, lf_team_release,
                             lf_barrier_init)

cdef extern from "lstmfast_team.h" nogil:
    # for tests: the pool counts as holding at most this many buffers (-1: no ceiling)
    int lf_blas_buffer_ceiling
    # the passes' hold of OpenBLAS at one thread (counted; the last holder restores the count)
    ctypedef void (*lf_set_threads_fn)(int)
    lf_set_threads_fn lf_blas_set_threads
    void lf_blas_single_enter()
    void lf_blas_single_leave()
    int lf_blas_single_holders
    # an OpenMP runtime's workers as the team (see lstmfast_team.h)
    ctypedef void (*lf_omp_parallel_fn)(void (*body)(void*), void* data,
                                        unsigned num_threads, unsigned flags)
    ctypedef int (*lf_omp_int_fn)()
    lf_omp_parallel_fn lf_omp_parallel
    lf_omp_int_fn lf_omp_thread_num
    lf_omp_int_fn lf_omp_num_threads
    int lf_team_on_openmp
    ctypedef struct lf_team_state:
        unsigned long sequence
    lf_team_state lf_team


cdef int pass_acquire(int wanted, bint level3, bint blas_single) noexcept nogil:
    return lf_pass_acquire(wanted, level3, blas_single)


cdef void pass_release(int nthreads, bint level3, bint blas_single) noexcept nogil:
    lf_pass_release(nthreads, level3, blas_single)


cdef int team_execute(lf_team_fn fn, void* job, int nthreads, lf_barrier* barrier) noexcept nogil:
    return lf_team_execute(fn, job, nthreads, barrier)


# OpenBLAS's thread setters, found through the library SciPy's cython_blas calls
BLAS_THREAD_CONTROL = lf_blas_threads_init(<const void*>_cython_blas.sgemm) != 0
# OpenBLAS's buffer pool is filled, checked, before level-3 calls (lf_blas_buffers_acquire)
BLAS_BUFFER_CHECK = lf_blas_buffers_checked() != 0


def blas_setter_address():
    """The address of the OpenBLAS thread setter the passes hold at one thread (0: none found),
    so that lstmfast._blas_threads can tell that library from the process's other copies."""
    return <size_t>lf_blas_set_threads


def hold_blas_single():
    """Hold the kernels' OpenBLAS at one thread as a pass does (one more holder of the same
    count: the first sets one thread, the last restores what the first found). Pair with
    release_blas_single."""
    with nogil:
        lf_blas_single_enter()


def release_blas_single():
    """Give back one hold_blas_single."""
    with nogil:
        lf_blas_single_leave()


def blas_single_holders():
    """How many holds of the kernels' OpenBLAS at one thread are open (a child process after
    fork counts none once the team has forgotten its holders)."""
    return lf_blas_single_holders


def set_blas_buffer_ceiling(int buffers):
    """For tests: OpenBLAS's buffer pool counts as holding at most this many buffers (-1: no
    ceiling), as if the memory for more were not there. Returns the previous value."""
    global lf_blas_buffer_ceiling
    if buffers < -1:
        raise ValueError(f"buffers must be >= -1, got {buffers}")
    previous = lf_blas_buffer_ceiling
    lf_blas_buffer_ceiling = buffers
    return previous


# for tests: the team thread with this id (-1: none) spins, deaf to cancels, before the
# backward pass's gradient barrier while _spin_hold is nonzero (a thread stuck in a pass)
cdef int _spin_tid = -1
cdef int _spin_hold = 0


cdef void spin_if_asked(int tid) noexcept nogil:
    if tid == _spin_tid:
        while lf_load_flag(&_spin_hold) != 0:
            pass


def set_thread_stuck(int tid):
    """For tests: team thread `tid` (1 .. LF_TEAM_MAX - 1; -1: none) spins before the backward
    pass's gradient barrier until set_thread_stuck(-1), ignoring cancels."""
    global _spin_tid, _spin_hold
    if tid != -1 and not 1 <= tid < LF_TEAM_MAX:
        raise ValueError(f"tid must be -1 or 1 to {LF_TEAM_MAX - 1}, got {tid}")
    _spin_hold = 1 if tid != -1 else 0
    _spin_tid = tid if tid != -1 else _spin_tid


# A forced schedule for the team's job publication (tests): worker 2 is held after it has seen
# one job's sequence, before it reads the job, until the next job has been published.
cdef extern from *:
    """
    #include <time.h>
    static int lf_schedule_armed = 0, lf_schedule_paused = 0;
    static unsigned long lf_schedule_idle_after = 0;
    static int lf_schedule_runs[2][LF_TEAM_MAX];

    static void lf_schedule_hook(int tid, int event, unsigned long sequence)
    {
        if (tid != 2)
            return;
        if (event == LF_TEAM_IDLE) {
            __atomic_store_n(&lf_schedule_idle_after, sequence, __ATOMIC_RELEASE);
            return;
        }
        /* (an odd sequence: job A still being written; the pause waits for A complete) */
        if ((sequence & 1u) || !__atomic_exchange_n(&lf_schedule_armed, 0, __ATOMIC_ACQ_REL))
            return;
        __atomic_store_n(&lf_schedule_paused, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE) != sequence + 2)
            LF_PAUSE();
    }

    static void lf_schedule_job_a(void* job, int tid, int nthreads)
    {
        (void)job; (void)nthreads;
        __atomic_add_fetch(&lf_schedule_runs[0][tid], 1, __ATOMIC_RELAXED);
    }

    static void lf_schedule_job_b(void* job, int tid, int nthreads)
    {
        (void)job; (void)nthreads;
        __atomic_add_fetch(&lf_schedule_runs[1][tid], 1, __ATOMIC_RELAXED);
    }

    /* Sleeps in 1 ms ticks until *flag == value, at most 10 s; 1 if it got there. */
    static int lf_schedule_wait(const void* flag, int is_long, unsigned long value)
    {
        struct timespec tick = {0, 1000000};
        for (int i = 0; i < 10000; i++) {
            unsigned long now = is_long ? __atomic_load_n((const unsigned long*)flag, __ATOMIC_ACQUIRE)
                                        : (unsigned long)__atomic_load_n((const int*)flag, __ATOMIC_ACQUIRE);
            if (now == value)
                return 1;
            nanosleep(&tick, NULL);
        }
        return 0;
    }

    /* Job A on threads 0-1 with worker 2 held as it reads it until job B (threads 0-2) has been
     * published; then waits for worker 2 to be idle after job B, so that lf_schedule_runs holds
     * every run of each job by each thread. 0: done; -1: no team of 3; -2: worker 2 never
     * reached the pause or never went idle (after 10 s each). */
    static int lf_schedule_run(void)
    {
        int n = lf_team_acquire(3), status = 0;
        if (n < 3) {
            lf_team_release(n);
            return -1;
        }
        memset(lf_schedule_runs, 0, sizeof(lf_schedule_runs));
        __atomic_store_n(&lf_schedule_paused, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&lf_schedule_armed, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&lf_team_test_hook, lf_schedule_hook, __ATOMIC_RELEASE);
        lf_barrier barrier;      /* the jobs never wait: its abort flag is never set */
        lf_barrier_init(&barrier);
        lf_team_execute(lf_schedule_job_a, NULL, 2, &barrier);
        lf_schedule_wait(&lf_schedule_paused, 0, 1);
        if (__atomic_exchange_n(&lf_schedule_armed, 0, __ATOMIC_ACQ_REL))
            status = -2;                       /* never held: job B runs unforced */
        lf_team_execute(lf_schedule_job_b, NULL, 3, &barrier);
        unsigned long after_b = __atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE);
        if (!lf_schedule_wait(&lf_schedule_idle_after, 1, after_b))
            status = -2;
        __atomic_store_n(&lf_team_test_hook, NULL, __ATOMIC_RELEASE);
        lf_team_release(n);
        return status;
    }
    """
    int lf_schedule_run() nogil
    int lf_schedule_runs[2][8]


def publication_under_forced_schedule():
    """Run the forced schedule of lf_schedule_run (a team of 3 threads; worker 2 held between
    seeing job A and reading it, until job B has been published) and return how often each of
    threads 0-2 ran job A and job B, as two lists. For tests: a worker that took job B's
    fields for job A would run B twice."""
    cdef int status
    with nogil:
        status = lf_schedule_run()
    if status == -1:
        raise RuntimeError("the thread team could not provide 3 threads")
    if status == -2:
        raise RuntimeError("worker 2 never reached the forced pause or never went idle")
    return ([lf_schedule_runs[0][t] for t in range(3)], [lf_schedule_runs[1][t] for t in range(3)])


def set_openmp_runtime(size_t parallel, size_t thread_num, size_t num_threads):
    """The OpenMP runtime whose workers the team may run on: the addresses of its
    GOMP_parallel, omp_get_thread_num and omp_get_num_threads (all three, or all 0: none)."""
    global lf_omp_parallel, lf_omp_thread_num, lf_omp_num_threads
    if (parallel == 0) != (thread_num == 0) or (parallel == 0) != (num_threads == 0):
        raise ValueError("set_openmp_runtime: give all three functions, or none")
    lf_omp_parallel = NULL
    lf_omp_thread_num = <lf_omp_int_fn>thread_num
    lf_omp_num_threads = <lf_omp_int_fn>num_threads
    lf_omp_parallel = <lf_omp_parallel_fn>parallel


def jobs_published():
    """How many jobs passes have given lstmfast's own workers so far (for tests: a pass on the
    OpenMP runtime's workers gives none)."""
    return lf_team.sequence // 2


def team_on_openmp(bint on):
    """Whether the calling thread's passes run their team on the OpenMP runtime's workers (when
    one is set); returns the previous value."""
    global lf_team_on_openmp
    previous = lf_team_on_openmp != 0
    lf_team_on_openmp = on
    return previous


def call_on_openmp(kernel, tuple args, dict kwargs):
    """``kernel(*args, **kwargs)`` with the calling thread's passes on the OpenMP runtime's
    workers (when one is set), the thread's flag put back afterwards whatever happens. Here, not
    in Python: no signal handler can raise between the flag's change and the call, nor between
    the call's end and the flag's return (a Python context manager left it on when Ctrl-C ended
    its entry or exit)."""
    global lf_team_on_openmp
    cdef int previous = lf_team_on_openmp
    lf_team_on_openmp = 1
    try:
        return kernel(*args, **kwargs)
    finally:
        lf_team_on_openmp = previous


ctypedef struct _pair_call:
    void* calls[2]          # (callable, args, kwargs) tuples, borrowed from the caller's frame
    void* results[2]        # new references, or NULL when the call raised (its error in errors)
    void* errors[2]         # (type, value, traceback) tuples, new references
    int ran


cdef void _pair_member(_pair_call* pair, int tid) noexcept nogil:
    """Call member `tid` of the pair with the GIL (taken on this thread, which may be one of the
    OpenMP runtime's workers); its result or its exception into the pair."""
    with gil:
        call = <tuple>pair.calls[tid]
        try:
            result = call[0](*call[1], **call[2])
            Py_INCREF(result)
            pair.results[tid] = <void*>result
        except BaseException:
            error = sys.exc_info()
            Py_INCREF(error)
            pair.errors[tid] = <void*>error


cdef void _pair_body(void* data) noexcept nogil:
    cdef _pair_call* pair = <_pair_call*>data
    if lf_omp_num_threads() != 2:
        return
    cdef int tid = lf_omp_thread_num()
    if tid == 0:
        pair.ran = 1
    _pair_member(pair, tid)


cdef tuple _pair_results(_pair_call* pair):
    """The pair's two results (None where a call raised or did not run), every reference the
    members took given back; the first error raised again after that."""
    results = []
    error = None
    for tid in range(2):
        if pair.errors[tid] != NULL:
            if error is None:
                error = <tuple>pair.errors[tid]
            Py_DECREF(<object>pair.errors[tid])
        if pair.results[tid] != NULL:
            results.append(<object>pair.results[tid])
            Py_DECREF(<object>pair.results[tid])
        else:
            results.append(None)
    if error is not None:
        raise error[1].with_traceback(error[2])
    return results[0], results[1]


cdef void _pair_start(_pair_call* pair, first, second) except *:
    # the members read the calls' items unchecked (no bounds check in this build): a list or a
    # shorter tuple read that way crashed the process
    for name, call in (("first", first), ("second", second)):
        if type(call) is not tuple or len(call) != 3:
            raise TypeError(f"call_pair: {name} must be a (callable, args, kwargs) tuple; got "
                            f"{call!r}")
    pair.calls[0] = <void*>first
    pair.calls[1] = <void*>second
    pair.results[0] = pair.results[1] = NULL
    pair.errors[0] = pair.errors[1] = NULL
    pair.ran = 0


cdef void _pair_one_after_the_other(_pair_call* pair):
    """The members on the calling thread, the second only if the first returned (after Ctrl-C
    in the first, the second would only delay the KeyboardInterrupt by a whole call)."""
    _pair_member(pair, 0)
    if pair.errors[0] == NULL:
        _pair_member(pair, 1)


def call_pair_on_openmp(first, second):
    """Two independent calls, ``(callable, args, kwargs)`` each, run side by side: the second on
    a worker of the OpenMP runtime (one parallel region of two threads), the first on the calling
    thread; each takes the GIL for its Python parts, and a kernel pass inside releases it. Each
    call's passes run on the one thread they start on. Returns the two results; the first
    exception raised (the first call's first) is raised again after both have returned. Without
    a runtime, or in a region that cannot have two threads, the calls run one after the other
    (the second only if the first returned)."""
    cdef _pair_call pair
    _pair_start(&pair, first, second)
    if lf_omp_parallel != NULL:
        with nogil:
            lf_omp_parallel(_pair_body, &pair, 2, 0)
    if not pair.ran:
        _pair_one_after_the_other(&pair)
    return _pair_results(&pair)


def call_flagging_failure(flag, function, tuple args, dict kwargs):
    """``function(*args, **kwargs)``, with flag[0] = 1 when it raises (the first call of a pair,
    whose partner polls the flag). Compiled: no signal handler runs between this call's start
    and its handler, where a Python wrapper's first line could be preceded by Ctrl-C (raised
    on entry to the function, outside its try) and a partner waiting for the call's steps then
    waited for ever."""
    try:
        return function(*args, **kwargs)
    except BaseException:
        flag[0] = 1
        raise


cdef void _pair_team_member(void* job, int tid, int nthreads) noexcept nogil:
    _pair_member(<_pair_call*>job, tid)


def call_pair(first, second):
    """call_pair_on_openmp on lstmfast's own team: the second call on one of its workers when
    two threads of it can be had (no other pass holding it), else both on the calling thread,
    one after the other. The passes inside find the team held by the pair and run on the thread
    they start on."""
    cdef _pair_call pair
    cdef lf_barrier barrier
    cdef int nthreads
    _pair_start(&pair, first, second)
    lf_barrier_init(&barrier)
    with nogil:
        nthreads = lf_team_acquire(2)
        if nthreads == 2:
            # (no barrier nor cancel flag: the workers' wait ends when the second call returns)
            lf_team_execute(_pair_team_member, &pair, 2, &barrier)
            lf_team_release(2)
    if nthreads != 2:
        _pair_one_after_the_other(&pair)
    return _pair_results(&pair)
