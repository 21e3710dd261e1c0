"""lstmfast.torch's thread team on PyTorch's own OpenMP workers (set_team_threads("auto") with
torch's pool at more than one thread): nn.LSTM's numbers there, and where that runtime cannot be
used the passes must take lstmfast's own workers or one thread, never hang.

The probes for a hang run in child processes under a timeout.
"""
import contextlib
import ctypes
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import lstmfast  # noqa: E402
import lstmfast.torch as lt  # noqa: E402
from lstmfast import _team  # noqa: E402
from lstmfast.torch import _threads  # noqa: E402
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


class _InterruptAt:
    """A trace function raising KeyboardInterrupt at the n-th line or return event (counting
    from 1) in the files of the module's call path: where a pending Ctrl-C can end up raised."""

    def __init__(self, n, files):
        self.n = n
        self.count = 0
        self.files = files

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename not in self.files:
            return None
        if event in ("line", "return"):
            self.count += 1
            if self.count == self.n:
                raise KeyboardInterrupt
        return self


def test_ctrl_c_anywhere_in_a_module_call_leaves_the_flag_off():
    """Ctrl-C raised at every line and every return in the module's call path (lstmfast.torch
    and the context managers it enters), the exception kept alive afterwards, as the
    interactive interpreter keeps the last one: the calling thread's flag is off every time. (It stayed on when
    the interrupt ended the entry or the exit of the context manager that set and restored it:
    its generator was left suspended, its `finally` run only once the exception was freed.)"""
    import contextlib
    import os

    import lstmfast
    import lstmfast.torch as lt
    from lstmfast import _team
    from lstmfast.torch import _function, _modules, _ops, _threads

    from lstmfast import _blas_threads

    previous = torch.get_num_threads(), lstmfast.get_num_threads()
    holds = _blas_threads.holders()
    torch.set_num_threads(2)
    lstmfast.set_num_threads(2)
    try:
        if _threads._openmp_runtime() is None:
            pytest.skip("torch's OpenMP runtime not found (not Linux, or not OpenMP)")
        # (not lstmfast.functional: on CPython 3.11 a line event fires before a `with` block's
        # normal exit calls __exit__, where no signal is ever raised; an interrupt there leaves
        # its buffer pool's lock held for good. The kernel's exceptions: the test below)
        path = (_function, _modules, _ops, _threads, contextlib)
        files = {m.__file__ for m in path} | {os.path.realpath(m.__file__) for m in path}
        torch.manual_seed(0)
        module = lt.LSTM(64, 128)
        x = torch.randn(8, 32, 64)
        left_on = []
        n = 1
        while True:
            kept = None
            sys.settrace(_InterruptAt(n, files))
            try:
                with torch.no_grad():
                    module(x)
            except KeyboardInterrupt as error:
                kept = error
            finally:
                sys.settrace(None)
            if _team.team_on_openmp(False):
                left_on.append(n)
            if kept is None:
                break
            del kept
            n += 1
        assert n > 10
        assert not left_on, f"flag left on after the interrupts at events {left_on} of {n}"
    finally:
        # an interrupt raised by the trace at the line event before a `with` block's exit,
        # where no signal is raised, leaves its OpenBLAS hold open: given back here, so that
        # the tests after this one find OpenBLAS as the user set it
        while _blas_threads.holders() > holds:
            _blas_threads.release()
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_an_exception_in_the_kernel_call_puts_the_flag_back(monkeypatch, error):
    """The kernels' entry raising while the calling thread's passes run on torch's workers (the
    flag on): the exception reaches the caller and the flag is off again."""
    import lstmfast
    import lstmfast.torch as lt
    from lstmfast import _team
    from lstmfast.torch import _function, _threads

    previous = torch.get_num_threads(), lstmfast.get_num_threads()
    torch.set_num_threads(2)
    lstmfast.set_num_threads(2)
    try:
        if _threads._openmp_runtime() is None:
            pytest.skip("torch's OpenMP runtime not found (not Linux, or not OpenMP)")
        torch.manual_seed(0)
        module = lt.LSTM(64, 128)
        x = torch.randn(8, 32, 64)
        real = _function.lstm_forward
        seen = []

        def raising_after_the_pass(*args, **kwargs):
            real(*args, **kwargs)
            on = _team.team_on_openmp(True)
            seen.append(on)
            raise error

        monkeypatch.setattr(_function, "lstm_forward", raising_after_the_pass)
        with pytest.raises(error), torch.no_grad():
            module(x)
        assert seen == [True]
        assert _team.team_on_openmp(False) is False, "the thread's flag was left on"
    finally:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])


@contextlib.contextmanager
def _one_thread_regions(regions):
    """A fake OpenMP runtime for the block whose parallel regions have one thread (nested in
    another region, a thread limit): each runs its body on the calling thread alone, and the
    thread count asked for is appended to `regions`."""
    body_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

    def one_thread_region(body, data, num_threads, flags):
        regions.append(num_threads)
        ctypes.cast(body, body_type)(data)

    fake = (ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                             ctypes.c_uint)(one_thread_region),
            ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0),
            ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 1))
    real = _threads._openmp
    _team.set_openmp_runtime(*(ctypes.cast(f, ctypes.c_void_p).value for f in fake))
    try:
        yield
    finally:
        _team.set_openmp_runtime(*real)


def test_team_on_torch_workers_matches_nn_lstm_and_falls_back_in_a_smaller_region(monkeypatch):
    """With torch at 2 threads the module's passes run on torch's OpenMP workers: forward and
    backward give nn.LSTM's numbers. A parallel region with fewer threads than the team (nested
    in another region, a thread limit) runs nothing of the job: the pass then takes lstmfast's
    own workers, with the same bits. (A fake runtime stands in for the smaller region.)"""
    previous = torch.get_num_threads(), lstmfast.get_num_threads()
    torch.set_num_threads(2)
    lstmfast.set_num_threads(2)
    try:
        if _threads._openmp_runtime() is None:
            pytest.skip("torch's OpenMP runtime not found (not Linux, or not OpenMP)")
        torch.manual_seed(1)
        module = lt.LSTM(64, 128, dtype=torch.float64)
        reference = torch.nn.LSTM(64, 128, dtype=torch.float64)
        reference.load_state_dict(module.state_dict())
        x = torch.randn(12, 32, 64, dtype=torch.float64)
        jobs = _team.jobs_published()
        out, (h_n, c_n) = module(x)
        (out.sum() + h_n.square().sum()).backward()
        assert _team.jobs_published() == jobs        # forward and backward on torch's workers
        ref_out, (ref_h, ref_c) = reference(x)
        (ref_out.sum() + ref_h.square().sum()).backward()
        assert torch.allclose(out, ref_out, rtol=0, atol=1e-12)
        assert torch.allclose(c_n, ref_c, rtol=0, atol=1e-12)
        for name, p in module.named_parameters():
            q = dict(reference.named_parameters())[name]
            assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-10), name
        with torch.no_grad():
            on_torch = module(x)[0]

        regions = []
        with _one_thread_regions(regions):
            jobs = _team.jobs_published()
            with torch.no_grad():
                on_own = module(x)[0]
        assert regions == [2]
        assert _team.jobs_published() > jobs
        assert torch.equal(on_own, on_torch)
    finally:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])


def _at_two_threads():
    """(torch's, lstmfast's) thread counts before setting both to 2; skips without the runtime."""
    previous = torch.get_num_threads(), lstmfast.get_num_threads()
    torch.set_num_threads(2)
    lstmfast.set_num_threads(2)
    if _threads._openmp_runtime() is None:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])
        pytest.skip("torch's OpenMP runtime not found (not Linux, or not OpenMP)")
    return previous


def _pair_spy(monkeypatch):
    """Count the calls of _team.call_pair_on_openmp (which still runs)."""
    calls = []
    real = _team.call_pair_on_openmp

    def spy(first, second):
        calls.append(1)
        return real(first, second)
    monkeypatch.setattr(_team, "call_pair_on_openmp", spy)
    return calls


# (each direction's pass at SIDE_BY_SIDE_FLOPS or more: smaller ones run one after the other)
SIDE_BY_SIDE_CASES = [
    ("one layer", lambda: lt.LSTM(24, 64, bidirectional=True), {}),
    ("two layers, dropout, hx", lambda: lt.LSTM(24, 64, 2, bidirectional=True, dropout=0.4),
     {"hx": True, "train": True}),
    ("projection, float64", lambda: lt.LSTM(24, 96, bidirectional=True, proj_size=32,
                                            dtype=torch.float64), {"hx": True}),
    ("batch first, unbatched", lambda: lt.LSTM(24, 64, bidirectional=True, batch_first=True),
     {"unbatched": True, "minibatch": 1, "steps": 320}),
    ("packed", lambda: lt.LSTM(24, 64, 2, bidirectional=True), {"packed": True}),
    ("Graves (directions summed)", lambda: lt.GravesBidirectionalLSTM(24, 64), {}),
]


def _side_by_side_inputs(module, case, seed=3):
    generator = torch.Generator().manual_seed(seed)
    dtype = module.weight_ih_l0.dtype
    steps, minibatch = case.get("steps", 20), case.get("minibatch", 16)
    x = torch.randn(steps, minibatch, 24, generator=generator, dtype=dtype)
    if case.get("unbatched"):
        x = x[:, 0]
    args = [x]
    if case.get("packed"):
        lengths = torch.tensor([20, 17, 20, 5, 14, 19, 3, 20, 12, 20, 1, 9, 20, 16, 20, 18])
        args = [torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)]
    if case.get("hx"):
        layers = module.num_layers * 2
        size = module.proj_size or module.hidden_size
        args.append((torch.randn(layers, minibatch, size, generator=generator, dtype=dtype),
                     torch.randn(layers, minibatch, module.hidden_size, generator=generator,
                                 dtype=dtype)))
    return args


def _run(module, args, train):
    """(outputs, gradients of the inputs and parameters) of a forward pass, and with `train` a
    backward pass of a loss of every output (None gradients without)."""
    for p in module.parameters():
        p.grad = None
    torch.manual_seed(11)                  # the dropout masks
    with torch.set_grad_enabled(train):
        out, (h_n, c_n) = module(*args)
    data = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    if train:
        (data.square().sum() + h_n.sin().sum() + 0.5 * c_n.sum()).backward()
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    return [data, h_n, c_n], grads + [a.grad for a in inputs]


@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name,make,case", SIDE_BY_SIDE_CASES, ids=[c[0] for c in SIDE_BY_SIDE_CASES])
def test_bidirectional_layers_run_their_directions_side_by_side(monkeypatch, name, make, case,
                                                               train):
    """A bidirectional layer at two threads runs its directions side by side, each pass on one
    thread (one on torch's OpenMP worker), the forward passes and then the backward passes:
    the same bits as one thread computing them one after the other, for every layer, state and
    input form, and nn.LSTM's numbers and gradients."""
    torch.manual_seed(5)
    module = make()
    module.train(bool(case.get("train")))
    args = _side_by_side_inputs(module, case)
    if train and not case.get("packed"):
        args[0].requires_grad_(True)
    previous = _at_two_threads()
    try:
        calls = _pair_spy(monkeypatch)
        outputs, grads = _run(module, args, train)
        assert len(calls) == module.num_layers * (2 if train else 1)
        if train and not case.get("packed"):
            args[0].grad = None
        torch.set_num_threads(1)
        ref_outputs, ref_grads = _run(module, args, train)
        assert len(calls) == module.num_layers * (2 if train else 1)   # (one after the other)
    finally:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])
    for got, want in zip(outputs + grads, ref_outputs + ref_grads):
        assert (got is None) == (want is None)
        assert got is None or torch.equal(got, want)
    if isinstance(module, lt.GravesBidirectionalLSTM):
        return                             # (DL4J's sum of the directions: no nn.LSTM peer)
    reference = torch.nn.LSTM(24, module.hidden_size, module.num_layers, bidirectional=True,
                              batch_first=module.batch_first, dropout=module.dropout,
                              proj_size=module.proj_size, dtype=module.weight_ih_l0.dtype)
    reference.load_state_dict(module.state_dict())
    reference.train(module.training)
    if train and not case.get("packed"):
        args[0].grad = None
    peer_outputs, peer_grads = _run(reference, args, train)
    tolerance = 1e-10 if outputs[0].dtype == torch.float64 else 1e-4
    for got, want in zip(outputs + grads, peer_outputs + peer_grads):
        assert got is None or torch.allclose(got, want, rtol=0, atol=tolerance)


def test_side_by_side_only_on_two_threads_of_torch(monkeypatch):
    """At torch's one thread, with lstmfast's team at one thread, or on passes below
    SIDE_BY_SIDE_FLOPS, a bidirectional layer keeps the usual schedule (the directions one
    after the other)."""
    torch.manual_seed(5)
    module = lt.LSTM(24, 64, bidirectional=True)
    x = torch.randn(20, 16, 24)
    previous = _at_two_threads()
    try:
        calls = _pair_spy(monkeypatch)
        with torch.no_grad():
            module(x[:, :4])            # 3.6e6 operations a direction
        assert calls == []
        module(x)                       # 1.4e7
        assert calls == [1]
        calls.clear()
        torch.set_num_threads(1)
        module(x)[0].sum().backward()
        torch.set_num_threads(2)
        lstmfast.set_num_threads(1)
        with torch.no_grad():
            module(x)
    finally:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])
    assert calls == []


def test_pair_call_returns_both_results_and_raises_the_first_error_after_both_ran():
    """_team.call_pair_on_openmp: both calls run whatever the other does; their results in
    order; an exception of either is raised once both have returned (the first call's first),
    also when the region has one thread only and the calls run one after the other."""
    ran = []

    def record(tag, fail=None):
        ran.append(tag)
        if fail is not None:
            raise fail(tag)
        return tag * 2

    previous = _at_two_threads()
    try:
        assert _team.call_pair_on_openmp((record, ("a",), {}), (record, (), {"tag": "b"})) == (
            "aa", "bb")
        assert sorted(ran) == ["a", "b"]
        for failing, expected in (((ValueError, None), "a"), ((None, KeyError), "'b'"),
                                  ((ValueError, KeyError), "a")):
            ran.clear()
            with pytest.raises((ValueError, KeyError)) as raised:
                _team.call_pair_on_openmp((record, ("a", failing[0]), {}),
                                          (record, ("b", failing[1]), {}))
            assert str(raised.value) == expected
            assert sorted(ran) == ["a", "b"]

        with _one_thread_regions([]):
            ran.clear()
            assert _team.call_pair_on_openmp((record, ("a",), {}), (record, ("b",), {})) == (
                "aa", "bb")
            assert ran == ["a", "b"]
    finally:
        torch.set_num_threads(previous[0])
        lstmfast.set_num_threads(previous[1])
