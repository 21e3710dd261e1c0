"""The thread team publishes each job as one snapshot (a sequence lock in pyx/lstmfast_team.h):
a worker preempted between seeing a job and reading it must not take the next job's fields for
it, which made it run the next job twice (and corrupt the barrier in the caller's frame). The
schedule is forced, not left to luck: worker 2 is held at that point until the next job is
being published."""
import pytest

from lstmfast import kernels


@pytest.mark.parametrize("repeat", range(3))
def test_a_worker_held_between_two_jobs_runs_each_job_once(repeat):
    runs_a, runs_b = kernels._team_publication_under_forced_schedule()
    # job A ran on threads 0 and 1 only; worker 2, held while it read A, then ran B once
    assert runs_a == [1, 1, 0]
    assert runs_b == [1, 1, 1]
