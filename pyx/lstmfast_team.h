/*
 * A small persistent thread team for lstmfast's time loops.
 *
 * Why: every time step of an LSTM depends on the previous one, so the per-step work (the
 * recurrent product h_{t-1} RW and the element-wise gate code) is too small for BLAS threading
 * to pay off and runs on one core. Split by hidden units instead, each thread computes groups of
 * units' columns of the product and their element-wise code (its own groups, then those of its
 * partners not yet taken: lf_claim_next), and the threads meet once per step at a barrier (the
 * next step reads every unit of h). The workers are created once, spin briefly
 * between jobs, then sleep on a condition variable.
 *
 * One job at a time: a pass that finds the team busy (another thread's pass) runs alone.
 * After fork() the child starts with no workers (they do not survive a fork).
 */
#ifndef LSTMFAST_TEAM_H
#define LSTMFAST_TEAM_H

#include <pthread.h>
#include <sched.h>
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <sys/mman.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define LF_TEAM_MAX 8

/* spins before a thread waiting inside a job sleeps (futex; elsewhere it yields): a thread whose
 * partner was descheduled must give the core back at once, or a step costs a time slice */
#define LF_SPINS_BEFORE_WAIT 2000
/* spins an idle worker waits for the next job before it sleeps on the condition variable */
#define LF_IDLE_SPINS 4000
/* a thread waiting inside a job wakes at least this often to check whether the job was given
 * up (lf_barrier.abort) or the pass cancelled */
#define LF_WAIT_SLICE_NS 20000000L
/* after a job was given up, the caller waits this many slices (2 s) for its workers to leave */
#define LF_ABANDON_SLICES 100

#if defined(__x86_64__) || defined(__i386__)
#define LF_PAUSE() __builtin_ia32_pause()
#else
#define LF_PAUSE() ((void)0)
#endif

typedef void (*lf_team_fn)(void* job, int tid, int nthreads);

/* Sleep while *addr == value, for at most LF_WAIT_SLICE_NS (returns at once if it differs; may
 * return spuriously). */
static inline void lf_sleep_slice_while_equal(unsigned int* addr, unsigned int value)
{
#ifdef __linux__
    struct timespec slice = {0, LF_WAIT_SLICE_NS};
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, value, &slice, NULL, 0);
#else
    (void)addr; (void)value;
    sched_yield();
#endif
}

static inline void lf_wake_all(unsigned int* addr)
{
#ifdef __linux__
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

static inline void lf_publish(unsigned int* addr, unsigned int value, int* sleepers)
{
    __atomic_store_n(addr, value, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST) > 0)
        lf_wake_all(addr);
}

/* A central counting barrier for the threads of one job, and the job's abort flag: a job is
 * given up (abort set, once) when its pass is cancelled while a thread waits, so that no wait
 * of a job outlasts a cancel by more than a slice. A thread that sees the flag leaves the job
 * at once and touches nothing shared. */
typedef struct {
    int count;
    unsigned int generation;
    int sleepers;
    int abort;
    const int* cancel;    /* the pass's cancel flag (may be NULL), polled by every wait */
} lf_barrier;

static inline void lf_barrier_init(lf_barrier* b)
{
    b->count = 0;
    b->generation = 0;
    b->sleepers = 0;
    b->abort = 0;
    b->cancel = NULL;
}

/* Whether the job is given up; gives it up if its pass was cancelled (and wakes its waits). */
static inline int lf_job_aborted(lf_barrier* b)
{
    if (__atomic_load_n(&b->abort, __ATOMIC_ACQUIRE))
        return 1;
    if (b->cancel != NULL && __atomic_load_n(b->cancel, __ATOMIC_RELAXED) != 0) {
        __atomic_store_n(&b->abort, 1, __ATOMIC_SEQ_CST);
        lf_wake_all(&b->generation);
        return 1;
    }
    return 0;
}

/* Wait until *addr != value: spin briefly, then sleep, in slices. A thread that goes to sleep
 * counts itself in *sleepers first; whoever changes *addr wakes the sleepers (both sides
 * sequentially consistent, so that one of them sees the other and no wake-up is lost).
 * Returns 1 when the job is given up (at once, even if *addr is unchanged), else 0. */
static inline int lf_wait_while_equal_in_job(unsigned int* addr, unsigned int value, int* sleepers,
                                             lf_barrier* job)
{
    int spins = 0;
    while (__atomic_load_n(addr, __ATOMIC_ACQUIRE) == value) {
        if (++spins < LF_SPINS_BEFORE_WAIT) {
            LF_PAUSE();
            continue;
        }
        if (lf_job_aborted(job))
            return 1;
        __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) == value)
            lf_sleep_slice_while_equal(addr, value);
        __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
    }
    return __atomic_load_n(&job->abort, __ATOMIC_ACQUIRE);
}

/* Returns 0 when every thread has arrived, 1 when the job was given up (leave the job). */
static inline int lf_barrier_wait(lf_barrier* b, int nthreads)
{
    unsigned int generation = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nthreads) {
        /* the last one in: reset before releasing, so that a thread racing ahead to the next
         * barrier counts from zero */
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        lf_publish(&b->generation, generation + 1, &b->sleepers);
        return __atomic_load_n(&b->abort, __ATOMIC_ACQUIRE);
    }
    return lf_wait_while_equal_in_job(&b->generation, generation, &b->sleepers, b);
}

/* Work sharing inside a step: a counter of the items taken from one thread's run (the owner
 * and the threads helping it each take the next with lf_claim_next; an index past the run
 * means none is left). Relaxed: the step's barrier orders the items' results and the resets. */
static inline ptrdiff_t lf_claim_next(ptrdiff_t* counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static inline void lf_claims_reset(ptrdiff_t* counter)
{
    __atomic_store_n(counter, 0, __ATOMIC_RELAXED);
}

static inline void lf_count_add(ptrdiff_t* counter, ptrdiff_t value)
{
    __atomic_fetch_add(counter, value, __ATOMIC_RELAXED);
}

/* A wavefront of stacked layers (lstm_options.input_steps_ready / output_steps_done): one
 * pass publishes how many steps of its output are complete, the next layer's pass, on another
 * thread, waits for the steps of its input. Release and acquire: the output written before the
 * store is what the reader sees after its load. */
static inline void lf_steps_publish(ptrdiff_t* done, ptrdiff_t count)
{
    __atomic_store_n(done, count, __ATOMIC_RELEASE);
}

/* Wait until *ready >= count: 0 then; 1 when *ready is negative (the publishing pass failed)
 * or the waiting pass's cancel flag is set. It spins (the other pass is a step ahead, tens of
 * microseconds), and yields the CPU after about a millisecond of spinning, for a publisher that
 * was descheduled or runs on the same core. */
static inline int lf_steps_wait(const ptrdiff_t* ready, ptrdiff_t count, const int* cancel)
{
    unsigned int spins = 0;
    for (;;) {
        ptrdiff_t now = __atomic_load_n(ready, __ATOMIC_ACQUIRE);
        if (now >= count)
            return 0;
        if (now < 0 || (cancel != NULL && __atomic_load_n(cancel, __ATOMIC_RELAXED) != 0))
            return 1;
        if (spins < 20000) {
            spins++;
            LF_PAUSE();
        } else {
            sched_yield();
        }
    }
}

/* The job is published as one snapshot under a sequence lock: `sequence` is odd while the
 * caller writes fn, job and nthreads, and even (2 per job) once they are complete. A worker
 * reads the sequence, the fields, then the sequence again, and uses the fields only when both
 * reads agree on an even value. Why: read separately, a worker that saw one job's sequence
 * and was preempted before it read the fields could take the next job's fields for the one it
 * saw, then see the next sequence and run that job a second time (corrupting the barrier in
 * the caller's frame: every later pass needing it hung). */
typedef struct {
    pthread_mutex_t busy;      /* held by the pass that uses the team */
    pthread_mutex_t lock;      /* guards the sleep of idle workers */
    pthread_cond_t wake;
    int started;               /* workers 1..started exist */
    unsigned long sequence;    /* the job's sequence lock: +2 per job, odd while it is written */
    lf_team_fn fn;
    void* job;
    int nthreads;
    unsigned int finished;     /* workers done with the current job */
    int finished_sleepers;     /* the caller asleep waiting for them */
    int abandoned;             /* a job's worker never left it: busy stays held for good */
} lf_team_state;

/* A job as a worker takes it: the fields of one publication, and its sequence. */
typedef struct {
    unsigned long sequence;
    lf_team_fn fn;
    void* job;
    int nthreads;
} lf_team_snapshot;

static lf_team_state lf_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0};
static int lf_team_atfork_registered = 0;
/* the job sequence current when each worker was created: its first job is the next one (a
 * worker that starts running late must still see the job posted right after its creation) */
static unsigned long lf_team_first_seen[LF_TEAM_MAX];

/* For the tests only (NULL otherwise): called by worker tid with LF_TEAM_READING and the
 * sequence it saw, before it reads the job (a test may hold it there while the next job is
 * published), and with LF_TEAM_IDLE and the sequence of the last job it took, before it waits
 * for the next one. */
enum { LF_TEAM_READING = 0, LF_TEAM_IDLE = 1 };
static void (*lf_team_test_hook)(int tid, int event, unsigned long sequence) = NULL;

static inline void lf_team_call_test_hook(int tid, int event, unsigned long sequence)
{
    void (*hook)(int, int, unsigned long) = __atomic_load_n(&lf_team_test_hook, __ATOMIC_ACQUIRE);
    if (hook != NULL)
        hook(tid, event, sequence);
}

/* The current job as one consistent snapshot (see lf_team_state). */
static inline lf_team_snapshot lf_team_read_job(int tid)
{
    lf_team_snapshot snap;
    for (;;) {
        unsigned long before = __atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE);
        lf_team_call_test_hook(tid, LF_TEAM_READING, before);
        if (before & 1u) {
            LF_PAUSE();
            continue;
        }
        snap.fn = __atomic_load_n(&lf_team.fn, __ATOMIC_RELAXED);
        snap.job = __atomic_load_n(&lf_team.job, __ATOMIC_RELAXED);
        snap.nthreads = __atomic_load_n(&lf_team.nthreads, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&lf_team.sequence, __ATOMIC_RELAXED) == before) {
            snap.sequence = before;
            return snap;
        }
    }
}

/* Publishes a job (the caller holds lf_team.busy: one writer at a time). */
static inline void lf_team_publish_job(lf_team_fn fn, void* job, int nthreads)
{
    unsigned long sequence = __atomic_load_n(&lf_team.sequence, __ATOMIC_RELAXED);
    __atomic_store_n(&lf_team.sequence, sequence + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&lf_team.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&lf_team.job, job, __ATOMIC_RELAXED);
    __atomic_store_n(&lf_team.nthreads, nthreads, __ATOMIC_RELAXED);
    __atomic_store_n(&lf_team.sequence, sequence + 2, __ATOMIC_RELEASE);
}

static void lf_blas_after_fork_child(void);

static void lf_team_after_fork_child(void)
{
    /* only the forking thread exists in the child: forget the workers and reset the locks */
    pthread_mutex_init(&lf_team.busy, NULL);
    pthread_mutex_init(&lf_team.lock, NULL);
    pthread_cond_init(&lf_team.wake, NULL);
    lf_team.started = 0;
    lf_team.sequence = 0;
    lf_team.abandoned = 0;
    lf_blas_after_fork_child();
}

static void* lf_team_worker(void* arg)
{
    int tid = (int)(ptrdiff_t)arg;
    unsigned long seen = lf_team_first_seen[tid];
    for (;;) {
        int spins = 0;
        lf_team_call_test_hook(tid, LF_TEAM_IDLE, seen);
        while (__atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE) == seen) {
            if (++spins < LF_IDLE_SPINS) {
                LF_PAUSE();
                continue;
            }
            pthread_mutex_lock(&lf_team.lock);
            while (__atomic_load_n(&lf_team.sequence, __ATOMIC_ACQUIRE) == seen)
                pthread_cond_wait(&lf_team.wake, &lf_team.lock);
            pthread_mutex_unlock(&lf_team.lock);
        }
        lf_team_snapshot snap = lf_team_read_job(tid);
        seen = snap.sequence;
        if (tid < snap.nthreads) {
            snap.fn(snap.job, tid, snap.nthreads);
            __atomic_add_fetch(&lf_team.finished, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&lf_team.finished_sleepers, __ATOMIC_SEQ_CST) > 0)
                lf_wake_all(&lf_team.finished);
        }
    }
    return NULL;
}

/* Starts workers up to nthreads - 1 (caller holds lf_team.busy); returns how many threads the
 * team can offer (1 if no worker could be created). */
static int lf_team_grow(int nthreads)
{
    if (!lf_team_atfork_registered) {
        if (pthread_atfork(NULL, NULL, lf_team_after_fork_child) == 0)
            lf_team_atfork_registered = 1;
    }
    /* the workers block every signal (they inherit the mask of their creator), so that signals
     * such as Ctrl-C's SIGINT go to the application's own threads */
    sigset_t all_signals, previous_mask;
    sigfillset(&all_signals);
    int masked = pthread_sigmask(SIG_BLOCK, &all_signals, &previous_mask) == 0;
    while (lf_team.started < nthreads - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) != 0)
            break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        lf_team_first_seen[lf_team.started + 1] = __atomic_load_n(&lf_team.sequence,
                                                                  __ATOMIC_ACQUIRE);
        int rc = pthread_create(&thread, &attr, lf_team_worker,
                                (void*)(ptrdiff_t)(lf_team.started + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        lf_team.started++;
    }
    if (masked)
        pthread_sigmask(SIG_SETMASK, &previous_mask, NULL);
    return lf_team.started + 1 < nthreads ? lf_team.started + 1 : nthreads;
}

/* ------------------------------------------------------------------ the BLAS's own threads
 *
 * A pass that runs on the team also splits its large GEMMs (input projection, weight gradients)
 * across the team, each thread calling BLAS on its own rows or columns. OpenBLAS must then run each call
 * on the calling thread: measured here, after one multithreaded OpenBLAS call its helper thread
 * busy-waits for work for about 0.1 s, taking the core the team's second thread needs (a 2-thread
 * pass ran 0.66x-0.9x the speed of a 1-thread pass). And OpenBLAS's thread count changes its
 * partition of a GEMM, hence the last bits of some elements: a pass whose shape may use the team
 * (whether or not it gets it) holds OpenBLAS at 1 thread, so that its bits do not depend on the
 * team size or on what else runs. The setting is process-wide (OpenBLAS has no per-thread one
 * in pthreads builds): the passes holding it are counted, the first sets 1, the last restores
 * the count it found; BLAS calls from other threads meanwhile also run on one thread. */
typedef void (*lf_set_threads_fn)(int);
typedef int (*lf_get_threads_fn)(void);
static lf_set_threads_fn lf_blas_set_threads = NULL;
static lf_get_threads_fn lf_blas_get_threads = NULL;
static int lf_blas_saved_threads = 0;
static int lf_blas_single_holders = 0;
static pthread_mutex_t lf_blas_single_lock = PTHREAD_MUTEX_INITIALIZER;

static void lf_blas_single_enter(void)
{
    if (lf_blas_get_threads == NULL)
        return;
    pthread_mutex_lock(&lf_blas_single_lock);
    if (lf_blas_single_holders++ == 0) {
        int blas_threads = lf_blas_get_threads();
        lf_blas_saved_threads = 0;
        if (blas_threads > 1) {
            lf_blas_set_threads(1);
            lf_blas_saved_threads = blas_threads;
        }
    }
    pthread_mutex_unlock(&lf_blas_single_lock);
}

static void lf_blas_single_leave(void)
{
    if (lf_blas_get_threads == NULL)
        return;
    pthread_mutex_lock(&lf_blas_single_lock);
    if (--lf_blas_single_holders == 0 && lf_blas_saved_threads > 1) {
        lf_blas_set_threads(lf_blas_saved_threads);
        lf_blas_saved_threads = 0;
    }
    pthread_mutex_unlock(&lf_blas_single_lock);
}

/* ------------------------------------------------------------------ OpenBLAS's buffers
 *
 * An OpenBLAS level-3 call takes a BUFFER_SIZE work buffer (32 MiB in SciPy's x86_64 builds),
 * and so does a gemv whose m + n outgrow its 2 KiB stack buffer, from a process-wide pool;
 * when every buffer is in use it maps a new one, and when mmap and then malloc fail it tries
 * again, forever (driver/others/memory.c, blas_memory_alloc, 0.3.30; 0.3.31 exits the process
 * after 10 tries): the thread spins and the pass never ends. The pool never shrinks. So
 * lstmfast counts its threads that may be inside such BLAS calls at once, over
 * all passes of the process, and before a pass adds its threads to the count the pool is
 * filled to a buffer per counted thread, from one thread, each buffer only after its room was
 * mapped and unmapped here (a failed check is an answer; OpenBLAS's is a hang). Not covered:
 * buffers that other code holds through the same OpenBLAS at that moment, and memory taken by
 * others between the check and OpenBLAS's own mapping (microseconds). */
#define LF_BLAS_BUFFER_BYTES (((size_t)32 << 20) + 4096)
#define LF_BLAS_BUFFERS_MAX 64
typedef void* (*lf_blas_alloc_fn)(int);
typedef void (*lf_blas_free_fn)(void*);
static lf_blas_alloc_fn lf_blas_memory_alloc = NULL;
static lf_blas_free_fn lf_blas_memory_free = NULL;
static int lf_blas_buffers_ready = 0;      /* buffers the pool is known to hold */
static int lf_blas_buffer_users = 0;       /* lstmfast threads that may be in level-3 BLAS now */
static pthread_mutex_t lf_blas_buffers_lock = PTHREAD_MUTEX_INITIALIZER;
/* for tests: the pool counts as holding at most this many buffers (-1: no ceiling) */
static int lf_blas_buffer_ceiling = -1;

static int lf_blas_buffer_room(void)
{
    void* room = mmap(NULL, LF_BLAS_BUFFER_BYTES, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (room == MAP_FAILED)
        return 0;
    munmap(room, LF_BLAS_BUFFER_BYTES);
    return 1;
}

/* Makes the pool hold at least `wanted` buffers if it can; returns how many it is known to
 * hold (caller holds lf_blas_buffers_lock). Holding n buffers at once makes the pool have n
 * (it hands out idle ones first and maps a new one only when none is idle). */
static int lf_blas_buffers_fill(int wanted)
{
    void* held[LF_BLAS_BUFFERS_MAX];
    int n = 0;
    if (wanted > LF_BLAS_BUFFERS_MAX)
        wanted = LF_BLAS_BUFFERS_MAX;
    if (lf_blas_buffers_ready < wanted) {
        while (n < wanted && lf_blas_buffer_room()) {
            held[n] = lf_blas_memory_alloc(0);
            if (held[n] == NULL)
                break;
            n++;
        }
        for (int i = 0; i < n; i++)
            lf_blas_memory_free(held[i]);
        if (n > lf_blas_buffers_ready)
            lf_blas_buffers_ready = n;
    }
    if (lf_blas_buffer_ceiling >= 0 && lf_blas_buffer_ceiling < lf_blas_buffers_ready)
        return lf_blas_buffer_ceiling;
    return lf_blas_buffers_ready;
}

/* Counts `threads` more lstmfast threads that may call level-3 BLAS at once, if the pool has a
 * buffer for each counted thread: returns threads, or 1 if the pool serves only one more (the
 * pass then runs alone), or 0 if not even that (no memory for BLAS; nothing counted). Without
 * OpenBLAS's allocator at hand, returns threads. */
static int lf_blas_buffers_acquire(int threads)
{
    if (lf_blas_memory_alloc == NULL || lf_blas_memory_free == NULL)
        return threads;
    pthread_mutex_lock(&lf_blas_buffers_lock);
    int ready = lf_blas_buffers_fill(lf_blas_buffer_users + threads);
    int granted = 0;
    if (ready >= lf_blas_buffer_users + threads)
        granted = threads;
    else if (ready >= lf_blas_buffer_users + 1)
        granted = 1;
    lf_blas_buffer_users += granted;
    pthread_mutex_unlock(&lf_blas_buffers_lock);
    return granted;
}

/* In a forked child only the forking thread exists: no pass counts threads or holds OpenBLAS
 * at one thread there (the locks may have been held by threads that are gone). OpenBLAS is not
 * called here: a child forked during such a pass keeps OpenBLAS at one thread. */
static void lf_blas_after_fork_child(void)
{
    pthread_mutex_init(&lf_blas_buffers_lock, NULL);
    pthread_mutex_init(&lf_blas_single_lock, NULL);
    lf_blas_buffer_users = 0;
    lf_blas_single_holders = 0;
    lf_blas_saved_threads = 0;
}

/* Whether OpenBLAS's allocator was found, so that buffers are checked before BLAS calls. */
static int lf_blas_buffers_checked(void)
{
    return lf_blas_memory_alloc != NULL && lf_blas_memory_free != NULL;
}

static void lf_blas_buffers_release(int threads)
{
    if (lf_blas_memory_alloc == NULL || lf_blas_memory_free == NULL)
        return;
    pthread_mutex_lock(&lf_blas_buffers_lock);
    lf_blas_buffer_users -= threads;
    pthread_mutex_unlock(&lf_blas_buffers_lock);
}

/* Finds OpenBLAS's thread setters among the dependencies of the library that holds
 * blas_function (SciPy's cython_blas). Returns 1 if found; otherwise BLAS threads are left alone. */
static int lf_blas_threads_init(const void* blas_function)
{
    static const char* set_names[] = {"scipy_openblas_set_num_threads",
                                      "scipy_openblas_set_num_threads64_",
                                      "openblas_set_num_threads", NULL};
    static const char* get_names[] = {"scipy_openblas_get_num_threads",
                                      "scipy_openblas_get_num_threads64_",
                                      "openblas_get_num_threads", NULL};
    Dl_info info;
    if (blas_function == NULL || dladdr(blas_function, &info) == 0 || info.dli_fname == NULL)
        return 0;
    void* handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == NULL)
        return 0;
    for (int i = 0; set_names[i] != NULL; i++) {
        void* set = dlsym(handle, set_names[i]);
        void* get = dlsym(handle, get_names[i]);
        if (set != NULL && get != NULL) {
            lf_blas_set_threads = (lf_set_threads_fn)set;
            lf_blas_get_threads = (lf_get_threads_fn)get;
            break;
        }
    }
    lf_blas_memory_alloc = (lf_blas_alloc_fn)dlsym(handle, "blas_memory_alloc");
    lf_blas_memory_free = (lf_blas_free_fn)dlsym(handle, "blas_memory_free");
    /* the library stays loaded: SciPy holds it */
    dlclose(handle);
    return lf_blas_set_threads != NULL;
}

/* Reserves the team for one pass: returns the number of threads the pass may use, nthreads
 * or fewer (1 if the team is busy with another pass or no worker could be created). A result
 * above 1 must be given back with lf_team_release after the pass's lf_team_execute calls. */
static int lf_team_acquire(int nthreads)
{
    if (nthreads > LF_TEAM_MAX)
        nthreads = LF_TEAM_MAX;
    if (nthreads <= 1 || pthread_mutex_trylock(&lf_team.busy) != 0)
        return 1;
    nthreads = lf_team_grow(nthreads);
    if (nthreads <= 1) {
        pthread_mutex_unlock(&lf_team.busy);
        return 1;
    }
    return nthreads;
}

static void lf_team_release(int nthreads)
{
    if (nthreads > 1 && !lf_team.abandoned)
        pthread_mutex_unlock(&lf_team.busy);
}

/* The caller's wait for the workers of the current job (nthreads in all) to return: returns 0
 * when they have, or LF_TEAM_ABANDONED when the job was given up (barrier->abort, or the pass's
 * cancel flag) and a worker is still inside LF_ABANDON_SLICES slices later. Then the job, and
 * whatever it points to, belongs to that worker for good: the caller must neither free nor
 * reuse any of it; the team stays held (lf_team.abandoned), so later passes run alone. */
#define LF_TEAM_ABANDONED 1
static int lf_team_wait_finished(int nthreads, lf_barrier* barrier)
{
    int slices_after_abort = 0;
    unsigned int done;
    while ((done = __atomic_load_n(&lf_team.finished, __ATOMIC_ACQUIRE)) < (unsigned int)nthreads - 1) {
        if (lf_wait_while_equal_in_job(&lf_team.finished, done, &lf_team.finished_sleepers,
                                       barrier) == 0)
            continue;
        /* given up: the workers leave at their next wait; one that does not is stuck */
        if (++slices_after_abort > LF_ABANDON_SLICES) {
            lf_team.abandoned = 1;
            return LF_TEAM_ABANDONED;
        }
        __atomic_add_fetch(&lf_team.finished_sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&lf_team.finished, __ATOMIC_SEQ_CST) == done)
            lf_sleep_slice_while_equal(&lf_team.finished, done);
        __atomic_sub_fetch(&lf_team.finished_sleepers, 1, __ATOMIC_SEQ_CST);
    }
    return 0;
}

/* ------------------------------------------------------------------ an OpenMP runtime's workers
 *
 * Inside PyTorch (lstmfast.torch) the team's work can run on the workers of the OpenMP runtime
 * PyTorch computes with, instead of on lstmfast's own: those workers spin on the cores for a
 * while after each of PyTorch's parallel operations, and a second pool of spinning threads on
 * the same cores made each side wait for the other (a pass right after a torch operation took
 * 2-3 times as long). lstmfast.torch finds the runtime (lf_omp_* through dlsym of the library
 * PyTorch loaded) and turns it on for the passes of the calling thread only
 * (lf_team_on_openmp). A pass then runs fn in one parallel region of nthreads threads; a region
 * with fewer threads (nested in another region, a thread limit) runs nothing, and the pass
 * takes lstmfast's own workers as usual. The threads meet at the job's own barriers as
 * lstmfast's workers do; a region cannot be abandoned, so a cancelled job's threads leave at
 * their next wait and the caller waits for them. */
typedef void (*lf_omp_parallel_fn)(void (*body)(void*), void* data, unsigned num_threads,
                                   unsigned flags);
typedef int (*lf_omp_int_fn)(void);
static lf_omp_parallel_fn lf_omp_parallel = NULL;     /* GOMP_parallel (libgomp's ABI) */
static lf_omp_int_fn lf_omp_thread_num = NULL;        /* omp_get_thread_num */
static lf_omp_int_fn lf_omp_num_threads = NULL;       /* omp_get_num_threads */
static __thread int lf_team_on_openmp = 0;

typedef struct {
    lf_team_fn fn;
    void* job;
    int nthreads;
    int ran;
} lf_omp_call;

static void lf_omp_body(void* data)
{
    lf_omp_call* call = (lf_omp_call*)data;
    /* every thread of the region sees the same team size: all run, or none does */
    if (lf_omp_num_threads() != call->nthreads)
        return;
    int tid = lf_omp_thread_num();
    if (tid == 0)
        call->ran = 1;      /* read after the region's closing barrier */
    call->fn(call->job, tid, call->nthreads);
}

/* Runs the job on the OpenMP runtime's threads: 1 if it ran, 0 if the region had fewer threads
 * (nothing ran). */
static int lf_team_execute_openmp(lf_team_fn fn, void* job, int nthreads)
{
    lf_omp_call call = {fn, job, nthreads, 0};
    lf_omp_parallel(lf_omp_body, &call, (unsigned)nthreads, 0u);
    return call.ran;
}

/* Runs fn(job, tid, nthreads) for tid 0..nthreads-1 (the caller is tid 0) and returns when all
 * have returned (0), or LF_TEAM_ABANDONED (see lf_team_wait_finished). nthreads is what
 * lf_team_acquire granted; fn's threads meet with lf_barrier_wait(barrier, nthreads), the
 * barrier of the job (its abort flag and cancel flag guard every wait). */
static int lf_team_execute(lf_team_fn fn, void* job, int nthreads, lf_barrier* barrier)
{
    if (nthreads <= 1) {
        fn(job, 0, 1);
        return 0;
    }
    if (lf_team_on_openmp && lf_omp_parallel != NULL && lf_team_execute_openmp(fn, job, nthreads))
        return 0;
    __atomic_store_n(&lf_team.finished, 0u, __ATOMIC_RELAXED);
    pthread_mutex_lock(&lf_team.lock);
    lf_team_publish_job(fn, job, nthreads);
    pthread_cond_broadcast(&lf_team.wake);
    pthread_mutex_unlock(&lf_team.lock);
    fn(job, 0, nthreads);
    return lf_team_wait_finished(nthreads, barrier);
}

/* ------------------------------------------------------------------ one pass's threads
 *
 * A pass takes the team (up to `wanted` threads), then, if it makes BLAS calls that may take a
 * pool buffer (level3: level-3 ones, or gemv), the BLAS buffers for its threads
 * (lf_blas_buffers_acquire: fewer buffers than threads -> the pass runs alone), and, if its
 * shape may use the team, holds OpenBLAS at one thread (see above).
 * Returns the threads the pass runs on, or 0 (nothing held) when OpenBLAS has no buffer for even
 * one: the pass must fail with "no memory" before any BLAS call. Give back with lf_pass_release
 * and the same flags. */
static int lf_pass_acquire(int wanted, int level3, int blas_single)
{
    int nthreads = lf_team_acquire(wanted);
    if (level3) {
        int granted = lf_blas_buffers_acquire(nthreads);
        if (granted < nthreads)
            lf_team_release(nthreads);
        nthreads = granted;
        if (nthreads == 0)
            return 0;
    }
    if (blas_single)
        lf_blas_single_enter();
    return nthreads;
}

static void lf_pass_release(int nthreads, int level3, int blas_single)
{
    if (nthreads < 1)
        return;
    if (blas_single)
        lf_blas_single_leave();
    if (level3)
        lf_blas_buffers_release(nthreads);
    lf_team_release(nthreads);
}

#endif /* LSTMFAST_TEAM_H */
