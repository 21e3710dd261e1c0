"""lstmfast.torch's thread team on PyTorch's own OpenMP workers (set_team_threads("auto") with
torch's pool at more than one thread): where that runtime cannot be used the passes must take
lstmfast's own workers or one thread, never hang.

The probes run in child processes under a timeout, since the failure they look for is a hang.
"""
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from reliability_support import last_json_line, run_child  # noqa: E402

# The module runs once in the parent on torch's workers (GNU OpenMP then keeps a pool of
# workers for the parent's thread), then a child forked by multiprocessing calls it again. The
# pool's workers are not in the child: a parallel region started there waits for them for ever.
FORK_CHILD = r"""
import hashlib, json, multiprocessing
import torch
import lstmfast, lstmfast.torch as lt
from lstmfast import _team
from lstmfast.torch import _threads

torch.set_num_threads(2)
lstmfast.set_num_threads(2)
torch.manual_seed(0)
module = lt.LSTM(64, 128)
x = torch.randn(8, 32, 64)          # a team pass; torch's own operations on it stay serial
jobs = _team.jobs_published()
with torch.no_grad():
    parent = hashlib.sha256(module(x)[0].numpy().tobytes()).hexdigest()
on_torch = _threads._openmp_runtime() is not None and _team.jobs_published() == jobs

def child(queue):
    with torch.no_grad():
        queue.put(hashlib.sha256(module(x)[0].numpy().tobytes()).hexdigest())

context = multiprocessing.get_context("fork")
queue = context.Queue()
process = context.Process(target=child, args=(queue,))
process.start()
process.join(20)
hung = process.is_alive()
if hung:
    process.kill()
    process.join()
same = None if hung else queue.get(timeout=10) == parent
print(json.dumps({"on_torch": on_torch, "hung": hung, "exitcode": process.exitcode,
                  "same": same}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_calls_the_module_without_hanging():
    try:
        result = run_child(FORK_CHILD, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the parent hung")
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = last_json_line(result.stdout)
    if not outcome["on_torch"]:
        pytest.skip("the parent's pass did not run on torch's OpenMP workers")
    assert not outcome["hung"], "the module hung in a forked child"
    assert outcome["exitcode"] == 0 and outcome["same"], json.dumps(outcome)


def test_ctrl_c_as_the_flag_is_set_leaves_it_off(monkeypatch):
    """A signal that arrives while the call turning the calling thread's flag on runs raises as
    that call returns (CPython runs pending handlers after each call): the flag must still be
    turned off again, or every later pass of the thread (lstmfast's own API too) runs on the
    OpenMP runtime's workers."""
    import lstmfast
    import lstmfast.torch as lt
    from lstmfast import _team
    from lstmfast.torch import _threads

    previous = torch.get_num_threads(), lstmfast.get_num_threads()
    torch.set_num_threads(2)
    lstmfast.set_num_threads(2)
    try:
        if _threads._openmp_runtime() is None:
            pytest.skip("torch's OpenMP runtime not found (not Linux, or not OpenMP)")
        torch.manual_seed(0)
        module = lt.LSTM(64, 128)
        x = torch.randn(8, 32, 64)
        real = _team.team_on_openmp

        def interrupted_as_it_returns(on):
            was = real(on)
            if on:
                raise KeyboardInterrupt
            return was

        monkeypatch.setattr(_team, "team_on_openmp", interrupted_as_it_returns)
        with pytest.raises(KeyboardInterrupt), torch.no_grad():
            module(x)
        monkeypatch.undo()
        assert _team.team_on_openmp(False) is False, "the thread's flag was left on"
    finally:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])
