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

#if defined(__x86_64__) || defined(__i386__)
#define LF_PAUSE() __builtin_ia32_pause()
#else
#define LF_PAUSE() ((void)0)
#endif

typedef void (*lf_team_fn)(void* job, int tid, int nthreads);

/* Sleep while *addr == value (returns at once if it differs; may return spuriously). */
static inline void lf_sleep_while_equal(unsigned int* addr, unsigned int value)
{
#ifdef __linux__
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
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

/* Wait until *addr != value: spin briefly, then sleep. A thread that goes to sleep counts itself
 * in *sleepers first; whoever changes *addr wakes the sleepers (both sides sequentially
 * consistent, so that one of them sees the other and no wake-up is lost). */
static inline void lf_wait_while_equal(unsigned int* addr, unsigned int value, int* sleepers)
{
    int spins = 0;
    while (__atomic_load_n(addr, __ATOMIC_ACQUIRE) == value) {
        if (++spins < LF_SPINS_BEFORE_WAIT) {
            LF_PAUSE();
            continue;
        }
        __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) == value)
            lf_sleep_while_equal(addr, value);
        __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
    }
}

static inline void lf_publish(unsigned int* addr, unsigned int value, int* sleepers)
{
    __atomic_store_n(addr, value, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST) > 0)
        lf_wake_all(addr);
}

/* A central counting barrier for the threads of one job. */
typedef struct {
    int count;
    unsigned int generation;
    int sleepers;
} lf_barrier;

static inline void lf_barrier_init(lf_barrier* b)
{
    b->count = 0;
    b->generation = 0;
    b->sleepers = 0;
}

static inline void lf_barrier_wait(lf_barrier* b, int nthreads)
{
    unsigned int generation = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nthreads) {
        /* the last one in: reset before releasing, so that a thread racing ahead to the next
         * barrier counts from zero */
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        lf_publish(&b->generation, generation + 1, &b->sleepers);
        return;
    }
    lf_wait_while_equal(&b->generation, generation, &b->sleepers);
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
} lf_team_state;

/* A job as a worker takes it: the fields of one publication, and its sequence. */
typedef struct {
    unsigned long sequence;
    lf_team_fn fn;
    void* job;
    int nthreads;
} lf_team_snapshot;

static lf_team_state lf_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0};
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

static void lf_team_after_fork_child(void)
{
    /* only the forking thread exists in the child: forget the workers and reset the locks */
    pthread_mutex_init(&lf_team.busy, NULL);
    pthread_mutex_init(&lf_team.lock, NULL);
    pthread_cond_init(&lf_team.wake, NULL);
    lf_team.started = 0;
    lf_team.sequence = 0;
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
 * pass ran 0.66x-0.9x the speed of a 1-thread pass). So while the team is held, OpenBLAS's thread
 * count is set to 1 and then restored. The setting is process-wide (OpenBLAS has no per-thread
 * one in pthreads builds): BLAS calls from other threads during the pass also run on one thread. */
typedef void (*lf_set_threads_fn)(int);
typedef int (*lf_get_threads_fn)(void);
static lf_set_threads_fn lf_blas_set_threads = NULL;
static lf_get_threads_fn lf_blas_get_threads = NULL;
static int lf_blas_saved_threads = 0;

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
    lf_blas_saved_threads = 0;
    if (lf_blas_get_threads != NULL) {
        int blas_threads = lf_blas_get_threads();
        if (blas_threads > 1) {
            lf_blas_set_threads(1);
            lf_blas_saved_threads = blas_threads;
        }
    }
    return nthreads;
}

static void lf_team_release(int nthreads)
{
    if (nthreads > 1) {
        if (lf_blas_saved_threads > 1)
            lf_blas_set_threads(lf_blas_saved_threads);
        lf_blas_saved_threads = 0;
        pthread_mutex_unlock(&lf_team.busy);
    }
}

/* Runs fn(job, tid, nthreads) for tid 0..nthreads-1 (the caller is tid 0) and returns when all
 * have returned. nthreads is what lf_team_acquire granted; fn's threads meet with
 * lf_barrier_wait(barrier, nthreads). */
static void lf_team_execute(lf_team_fn fn, void* job, int nthreads)
{
    if (nthreads <= 1) {
        fn(job, 0, 1);
        return;
    }
    __atomic_store_n(&lf_team.finished, 0u, __ATOMIC_RELAXED);
    pthread_mutex_lock(&lf_team.lock);
    lf_team_publish_job(fn, job, nthreads);
    pthread_cond_broadcast(&lf_team.wake);
    pthread_mutex_unlock(&lf_team.lock);
    fn(job, 0, nthreads);
    unsigned int done;
    while ((done = __atomic_load_n(&lf_team.finished, __ATOMIC_ACQUIRE)) < (unsigned int)nthreads - 1)
        lf_wait_while_equal(&lf_team.finished, done, &lf_team.finished_sleepers);
}

#endif /* LSTMFAST_TEAM_H */
