"""OpenBLAS's threads while lstmfast computes (lstmfast._blas_threads): every copy in the process
held at one thread inside network, layer and large pass calls, and each copy's own setting back
afterwards, whatever the order of holds from several threads and the passes' own hold."""
import os
import threading

import numpy as np
import pytest

import lstmfast
from lstmfast import _blas_threads, _team
from lstmfast import functional as F

LIBRARIES = _blas_threads.libraries()
pytestmark = pytest.mark.skipif(not LIBRARIES, reason="no OpenBLAS loaded in this process")


def counts():
    return [lib.get_num_threads() for lib in LIBRARIES]


@pytest.fixture
def user_setting():
    """Every copy at 3 threads (a value no default gives), put back as found afterwards."""
    before = counts()
    for lib in LIBRARIES:
        lib.set_num_threads(3)
    yield [3] * len(LIBRARIES)
    assert _blas_threads.holders() == 0
    for lib, n in zip(LIBRARIES, before):
        lib.set_num_threads(n)


def test_finds_the_copies_threadpoolctl_finds():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    theirs = {(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()
              if i.get("internal_api") == "openblas"}
    ours = {(os.path.realpath(lib.path), lib.get_num_threads()) for lib in LIBRARIES}
    assert ours == {(os.path.realpath(path), n) for path, n in theirs}


def test_the_kernels_copy_is_scipys():
    scipy_copies = [lib for lib in LIBRARIES if lib.owner == "SciPy"]
    if not _team.BLAS_THREAD_CONTROL or not scipy_copies:
        pytest.skip("SciPy's BLAS is not a separate OpenBLAS here")
    assert [lib.setter_address for lib in scipy_copies] == [_team.blas_setter_address()]
    assert all(lib.corename() for lib in LIBRARIES)


def test_hold_sets_one_thread_and_release_restores(user_setting):
    with _blas_threads.held():
        assert counts() == [1] * len(LIBRARIES)
        with _blas_threads.held():
            assert counts() == [1] * len(LIBRARIES)
        assert counts() == [1] * len(LIBRARIES)
    assert counts() == user_setting


def test_restored_after_an_exception(user_setting):
    with pytest.raises(ZeroDivisionError):
        with _blas_threads.held():
            1 / 0
    assert counts() == user_setting


def test_release_without_hold_is_refused():
    with pytest.raises(RuntimeError, match="without a hold"):
        _blas_threads.release()


def test_holds_from_two_threads_restore_only_at_the_last(user_setting):
    entered, leave_first = threading.Event(), threading.Event()
    seen = {}

    def first():
        with _blas_threads.held():
            entered.set()
            leave_first.wait(10)
        seen["after first"] = counts()

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    with _blas_threads.held():
        leave_first.set()
        thread.join(10)
        assert seen["after first"] == [1] * len(LIBRARIES)   # this thread still holds
    assert counts() == user_setting


@pytest.mark.parametrize("order", ["pass first", "network first"])
def test_shares_one_count_with_the_passes_hold(user_setting, order):
    """A pass's own hold (lstmfast._team) and a network's hold, interleaved either way, end
    with the user's setting: neither restores over the other."""
    if not _team.BLAS_THREAD_CONTROL:
        pytest.skip("the kernels do not steer their OpenBLAS here")
    if order == "pass first":
        _team.hold_blas_single()
        _blas_threads.hold()
        _team.release_blas_single()
        assert counts() == [1] * len(LIBRARIES)
        _blas_threads.release()
    else:
        _blas_threads.hold()
        _team.hold_blas_single()
        _blas_threads.release()
        # the pass still holds the kernels' copy; the others are the user's again
        kernels = _team.blas_setter_address()
        assert counts() == [1 if lib.setter_address == kernels else 3 for lib in LIBRARIES]
        _team.release_blas_single()
    assert counts() == user_setting


def _spy(monkeypatch, owner, name, log):
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        log.append(counts())
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, spy)


def test_a_large_pass_runs_held_a_small_one_not(user_setting, monkeypatch):
    log = []
    _spy(monkeypatch, F, "_run_pass", log)
    rng = np.random.default_rng(0)
    for minibatch, hidden, steps in ((32, 64, 40), (1, 4, 2)):
        x = rng.standard_normal((minibatch, 8, steps))
        W, RW = rng.standard_normal((8, 4 * hidden)), rng.standard_normal((hidden, 4 * hidden))
        lstmfast.lstm_forward(x, W, RW, np.zeros(4 * hidden))
    assert log == [[1] * len(LIBRARIES), user_setting]
    assert counts() == user_setting


def test_large_dense_products_run_held_small_ones_not(user_setting, monkeypatch):
    """A layer's product OpenBLAS would thread (1024 x 256 x 300) holds it at one thread; a
    streaming step's (1 x 6 x 5) does not take the hold at all."""
    from lstmfast import network
    log, holds = [], []
    _spy(monkeypatch, _blas_threads, "run_parts", log)
    _spy(monkeypatch, _blas_threads, "hold", holds)
    layer = lstmfast.DenseLayer(256, 300, activation="tanh", seed=1)
    out = layer.forward(np.ones((1024, 256), np.float32), training=True)
    layer.backward(np.ones_like(out))
    assert log == [[1] * len(LIBRARIES)] * 3
    del holds[:]
    network.DenseLayer(6, 5, seed=1).forward(np.ones((1, 6), np.float32))
    assert holds == []
    assert counts() == user_setting


def test_a_nested_hold_sets_one_thread_again(user_setting):
    """A copy raised while a hold is open (by other code of the process) is held again by the
    next hold, and given the raised count back at the end."""
    with _blas_threads.held():
        LIBRARIES[-1].set_num_threads(2)
        with _blas_threads.held():
            assert counts() == [1] * len(LIBRARIES)
    assert counts() == user_setting[:-1] + [2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_inside_a_hold_restores_when_it_releases(user_setting):
    with _blas_threads.held():
        pid = os.fork()
        if pid == 0:                                     # the child: exit status = verdict
            try:
                ok = counts() == [1] * len(LIBRARIES) and _blas_threads.holders() == 1
                _blas_threads.release()
                ok = ok and counts() == user_setting and _blas_threads.holders() == 0
                _blas_threads.hold()                     # and the hold works again
                ok = ok and counts() == [1] * len(LIBRARIES)
                _blas_threads.release()
                ok = ok and counts() == user_setting
            finally:
                os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert counts() == user_setting
