# The thread team of the time loops (pyx/lstmfast_team.h) as the passes use it: the groups of
# hidden units each step is split into, who takes which group, the end-of-step barrier, and the
# parts of the GEMMs outside the time loop. The team's state (its workers, OpenBLAS's thread
# setting, the count of threads that may be in level-3 BLAS, whether a job was abandoned) lives
# in lstmfast._team (pyx/_team.pyx): take, run and give back a pass's threads through
# pass_acquire / team_execute / pass_release, never lf_team_* / lf_pass_* / lf_blas_* directly.
# Build-only: it needs pyx/lstmfast_team.h on the include path.
from lstmfast._activations cimport lf_load_flag, LF_SMALL_M
from lstmfast._products cimport _packed_gemm_on
from lstmfast.kernels cimport lstm_dims, lstm_tuning

# The thread team of the time loops (pyx/lstmfast_team.h): each step's recurrent product and
# element-wise code split across threads by hidden units, one barrier per step.
cdef extern from "lstmfast_team.h" nogil:
    ctypedef struct lf_barrier:
        int abort                  # the job was given up (every wait of a thread leaves it)
        const int* cancel          # the pass's cancel flag (may be NULL), polled by every wait
    ctypedef void (*lf_team_fn)(void* job, int tid, int nthreads) noexcept nogil
    int LF_TEAM_MAX
    int LF_TEAM_ABANDONED
    # (the functions below keep state in statics: only pyx/_team.pyx calls them)
    int lf_team_acquire(int nthreads)
    void lf_team_release(int nthreads)
    int lf_team_execute(lf_team_fn fn, void* job, int nthreads, lf_barrier* barrier)
    int lf_pass_acquire(int wanted, int level3, int blas_single)
    void lf_pass_release(int nthreads, int level3, int blas_single)
    int lf_blas_buffers_checked()
    int lf_blas_threads_init(const void* blas_function)
    # stateless: inline in every pass
    void lf_barrier_init(lf_barrier* b)
    int lf_barrier_wait(lf_barrier* b, int nthreads)
    Py_ssize_t lf_claim_next(Py_ssize_t* counter)
    void lf_claims_reset(Py_ssize_t* counter)
    void lf_count_add(Py_ssize_t* counter, Py_ssize_t value)
    void lf_steps_publish(Py_ssize_t* done, Py_ssize_t count)
    int lf_steps_wait(const Py_ssize_t* ready, Py_ssize_t count, const int* cancel)


# the one team of the process (pyx/_team.pyx). pass_acquire: the threads a pass runs on (up to
# `wanted`), after the BLAS buffer check when it makes level-3 BLAS calls and with OpenBLAS held
# at one thread when blas_single; 0 when OpenBLAS has no buffer for even one thread (nothing
# held: fail with LSTM_ERR_NO_MEMORY before any BLAS call). pass_release with the same flags.
# team_execute: 0, or LF_TEAM_ABANDONED (the job and what it points to stay with a stuck thread).
cdef int pass_acquire(int wanted, bint level3, bint blas_single) noexcept nogil
cdef void pass_release(int nthreads, bint level3, bint blas_single) noexcept nogil
cdef int team_execute(lf_team_fn fn, void* job, int nthreads, lf_barrier* barrier) noexcept nogil
# for tests: thread `tid` spins here, deaf to cancels, while lstmfast._team.set_thread_stuck asks
cdef void spin_if_asked(int tid) noexcept nogil


# room in _unit_groups: at most this many groups in all
cdef enum:
    UNIT_GROUPS_MAX = 128

ctypedef struct _unit_groups:
    # thread t owns groups first[t] .. first[t+1]-1; group g is units units[g] .. units[g+1]-1,
    # and cols[g] packed (padded) columns precede it
    Py_ssize_t first[9]
    Py_ssize_t units[129]
    Py_ssize_t cols[129]
    # per step parity and thread: how many of its groups have been taken, 64 bytes apart and
    # 64 bytes from the fields around them (see _claim_slot)
    Py_ssize_t claims[144]
    Py_ssize_t taken_over          # groups run by a thread other than their owner, in all


cdef inline Py_ssize_t _claim_slot(Py_ssize_t step, int tid) noexcept nogil:
    """Index in _unit_groups.claims of thread tid's counter for a step: one per step parity, 8
    Py_ssize_t (64 bytes) apart and from the array's ends, so that a counter shares its cache
    line with no other counter and no other field."""
    return 8 + ((step % 2) * 8 + tid) * 8


cdef inline void _plan_groups(_unit_groups* groups, Py_ssize_t h, int nthreads,
                              Py_ssize_t mb, const lstm_tuning* tuning) noexcept nogil:
    """Thread t's units (h t / nthreads to h (t + 1) / nthreads, as even as they come) cut into
    up to tuning.unit_groups_per_thread groups (one for a single thread), each a whole number of
    packed panels (6 columns, 8 below LF_SMALL_M rows) but the thread's last, the panels
    spread evenly (no sliver of a group at the end)."""
    cdef Py_ssize_t panel = 8 if mb < LF_SMALL_M else 6
    cdef Py_ssize_t per_thread = tuning.unit_groups_per_thread if nthreads > 1 else 1
    cdef Py_ssize_t first, last, panels, count, i, u, n = 0
    cdef Py_ssize_t share_work = (h + nthreads - 1) // nthreads * 4 * mb * h
    cdef int t
    if tuning.unit_group_min_work > 0 and per_thread > share_work // tuning.unit_group_min_work:
        per_thread = share_work // tuning.unit_group_min_work
    if per_thread < 1:
        per_thread = 1
    if per_thread > UNIT_GROUPS_MAX // nthreads:
        per_thread = UNIT_GROUPS_MAX // nthreads
    groups.units[0] = 0
    groups.cols[0] = 0
    for t in range(nthreads):
        groups.first[t] = n
        first = h * t // nthreads
        last = h * (t + 1) // nthreads
        panels = (last - first + panel - 1) // panel
        count = per_thread if per_thread < panels else panels
        for i in range(1, count + 1):
            u = first + panels * i // count * panel
            u = u if u < last else last
            n += 1
            groups.units[n] = u
            groups.cols[n] = (groups.cols[n - 1]
                              + (u - groups.units[n - 1] + panel - 1) // panel * panel)
    groups.first[nthreads] = n
    if tuning.groups_all_to_first:
        for t in range(1, nthreads):
            groups.first[t] = n


cdef inline void _reset_claims(_unit_groups* groups, Py_ssize_t step, int nthreads) noexcept nogil:
    """Every thread's counter for `step` (before the threads start on it)."""
    cdef int t
    for t in range(nthreads):
        groups.claims[_claim_slot(step, t)] = 0


cdef inline int _start_step(_unit_groups* groups, Py_ssize_t step, int tid) noexcept nogil:
    """Thread tid's start of a step: it resets its counter of the next step (the same parity as
    the step before this one, which every thread has left: the barrier at its end), and takes
    its own groups first (the owner _take_group starts from, returned)."""
    lf_claims_reset(&groups.claims[_claim_slot(step + 1, tid)])
    return tid


cdef inline bint _take_group(_unit_groups* groups, Py_ssize_t step, int tid, int nthreads,
                             int* owner, Py_ssize_t* taken_group, Py_ssize_t* u0,
                             Py_ssize_t* u1) noexcept nogil:
    """The next group of `step` for thread tid (*taken_group, its units *u0..*u1-1): its own, in
    order, then those its partners have not taken (*owner: whose run it takes from); False
    when none is left."""
    cdef Py_ssize_t taken, group
    while True:
        taken = lf_claim_next(&groups.claims[_claim_slot(step, owner[0])])
        group = groups.first[owner[0]] + taken
        if group < groups.first[owner[0] + 1]:
            if owner[0] != tid:
                lf_count_add(&groups.taken_over, 1)
            taken_group[0] = group
            u0[0] = groups.units[group]
            u1[0] = groups.units[group + 1]
            return True
        owner[0] = owner[0] + 1 if owner[0] + 1 < nthreads else 0
        if owner[0] == tid:
            return False


cdef inline Py_ssize_t _group_slice(const _unit_groups* groups, Py_ssize_t K, Py_ssize_t group,
                                    int blocks, int block) noexcept nogil:
    """Offset of the packed slice (group, block) in weights packed by groups, `blocks` blocks
    (the forward's 4 gate blocks of RW or W, K = h or n_in rows; the backward's one of RW^T,
    K = 4h): per group, per block, the group's columns padded to panels."""
    return K * (blocks * groups.cols[group]
                + block * (groups.cols[group + 1] - groups.cols[group]))


cdef inline bint _team_stop(const int* cancel, int* stop_slots, Py_ssize_t s, lf_barrier* barrier,
                            int tid, int nthreads) noexcept nogil:
    """End of a step: wait for every thread, and agree on whether to stop (cancel set).

    Thread 0 reads the cancel flag into a slot of the step's parity before the barrier and all
    read it after; the slot is written again two steps later, after the next barrier, when every
    thread has read it."""
    if nthreads == 1:
        return cancel != NULL and lf_load_flag(cancel) != 0
    if tid == 0:
        stop_slots[s % 2] = 1 if (cancel != NULL and lf_load_flag(cancel) != 0) else 0
    if lf_barrier_wait(barrier, nthreads):
        return True      # the job was given up (cancelled while a thread waited)
    return stop_slots[s % 2] != 0


cdef inline int _team_size(const lstm_dims* dims, Py_ssize_t steps,
                           const lstm_tuning* tuning) noexcept nogil:
    """How many threads the time loop of a pass of `steps` steps should use (tuning.threads
    resolved: at least 1)."""
    cdef Py_ssize_t threads = tuning.threads
    if steps < 2 or threads <= 1:
        return 1
    if threads > LF_TEAM_MAX:
        threads = LF_TEAM_MAX
    # recurrent product of one step: mb x 4h x h multiply-adds, element-wise work aside
    cdef Py_ssize_t work = 4 * dims.minibatch * dims.hidden * dims.hidden
    while threads > 1 and (dims.hidden < tuning.team_min_units * threads
                           or work < tuning.team_min_step_work * threads):
        threads -= 1
    return <int>threads


cdef inline bint _shape_uses_team(const lstm_dims* dims, Py_ssize_t steps,
                                  const lstm_tuning* tuning) noexcept nogil:
    """Whether a pass of this shape runs on a team of two or more at some thread count (the
    packed path, enough units and work per step: see _team_size). Such a pass splits its large
    GEMMs into the parts of a plan fixed by this answer alone (_split_parts) and holds OpenBLAS
    at one thread (pass_acquire), whatever team it gets: its bits depend neither on the thread
    count nor on what else runs."""
    return (steps > 1 and _packed_gemm_on(tuning, dims.minibatch)
            and dims.hidden >= 2 * tuning.team_min_units
            and 4 * dims.minibatch * dims.hidden * dims.hidden >= 2 * tuning.team_min_step_work)


cdef inline int _split_parts(const lstm_dims* dims, Py_ssize_t steps,
                             const lstm_tuning* tuning) noexcept nogil:
    """Parts of the GEMMs outside the time loop (the chunk's input projection, dL/dx, the
    gradient GEMMs): two for a shape that may use the team, at every team size (one thread
    computes both), else one. The parts are BLAS calls of fixed dimensions whose results do not
    depend on which thread computes them."""
    return 2 if _shape_uses_team(dims, steps, tuning) else 1
