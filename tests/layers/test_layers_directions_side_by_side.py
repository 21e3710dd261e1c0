"""A bidirectional layer of lstmfast's own at two threads runs its two directions side by side:
each direction's passes on one thread, one of them on a worker of lstmfast's team
(lstmfast._team.call_pair), with no barrier per step between two threads. The same bits as one
thread computing the directions one after the other, in every combination mode, with a mask or
lengths; an error in either direction leaves both directions' records and gradients as they
were."""
import numpy as np
import pytest

import lstmfast
from lstmfast import _team

from memory_support import traced_peak


@pytest.fixture
def pairs(monkeypatch):
    """Counts the calls of _team.call_pair (which still runs)."""
    calls = []
    real = _team.call_pair
    monkeypatch.setattr(_team, "call_pair", lambda first, second: calls.append(1)
                        or real(first, second))
    return calls


def _layer(kind, dtype):
    # (passes at SIDE_BY_SIDE_FLOPS or more: smaller ones run one after the other)
    if kind == "graves":
        return lstmfast.GravesBidirectionalLSTM(24, 64, dtype=dtype, seed=4)
    return lstmfast.Bidirectional(lstmfast.LSTM(24, 64, dtype=dtype, seed=4), mode=kind, seed=5)


def _problem(layer, dtype, extra, seed=6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 24, 20)).astype(dtype)
    kwargs = {}
    if extra == "mask":
        mask = np.ones((16, 20), dtype=dtype)
        mask[3, 5:] = 0
        mask[7, 2:] = 0
        kwargs["mask"] = mask
    elif extra == "lengths":
        kwargs["lengths"] = np.array([20, 5, 20, 1, 0, 20, 3, 2, 20, 6, 7, 19, 20, 11, 20, 4])
    width = 128 if getattr(layer, "mode", "add") == "concat" else 64
    eps = rng.standard_normal((16, width, 20)).astype(dtype)
    return x, kwargs, eps


def _pass(layer, x, kwargs, eps):
    out = layer.forward(x, training=True, **kwargs).copy()
    dx = layer.backward(eps).copy()
    return [out, dx, layer.gradients.copy(), *layer.forward_layer.state_gradients,
            *layer.backward_layer.state_gradients, layer.forward(x, **kwargs)]


@pytest.mark.parametrize("extra", ["none", "mask", "lengths"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["graves", "concat", "add", "mul", "average"])
def test_directions_side_by_side_give_the_bits_of_one_thread(two_threads, pairs, kind, dtype,
                                                             extra):
    layer = _layer(kind, dtype)
    x, kwargs, eps = _problem(layer, dtype, extra)
    side_by_side = _pass(layer, x, kwargs, eps)
    assert len(pairs) == 3            # the training forward pass, backward, inference
    lstmfast.set_num_threads(1)
    one_thread = _pass(layer, x, kwargs, eps)
    assert len(pairs) == 3
    for got, want in zip(side_by_side, one_thread):
        np.testing.assert_array_equal(got, want)


class _Planted(RuntimeError):
    pass


@pytest.mark.parametrize("failing", ["forward_layer", "backward_layer"])
def test_an_error_in_one_direction_leaves_both_as_they_were(two_threads, monkeypatch, failing):
    """The other direction's call completes beside the failing one; the layer then puts both
    directions' training records (forward) and gradients (backward) back."""
    layer = _layer("concat", np.float64)
    x, kwargs, eps = _problem(layer, np.float64, "none")
    layer.forward(x, training=True)
    layer.backward(eps)
    records = [layer.forward_layer._pass_state(), layer.backward_layer._pass_state()]
    gradients = layer.gradients.copy()
    states = [layer.forward_layer.state_gradients, layer.backward_layer.state_gradients]
    direction = getattr(layer, failing)
    for method in ("forward", "backward"):
        real = getattr(direction, method)
        ran = []

        def planted(*args, **kwargs):
            ran.append(method)
            raise _Planted(method)
        monkeypatch.setattr(direction, method, planted)
        x2 = x[::-1].copy()
        with pytest.raises(_Planted):
            if method == "forward":
                layer.forward(x2, training=True)
            else:
                layer.backward(-eps)
        assert ran == [method]
        monkeypatch.setattr(direction, method, real)
        for sub, record in zip((layer.forward_layer, layer.backward_layer), records):
            assert sub._pass_state()[0] is record[0]
        np.testing.assert_array_equal(layer.gradients, gradients)
        assert [layer.forward_layer.state_gradients,
                layer.backward_layer.state_gradients] == states


def test_pair_call_runs_both_and_raises_the_first_error_after_both(two_threads):
    ran = []

    def record(tag, fail=False):
        ran.append(tag)
        if fail:
            raise _Planted(tag)
        return tag + "!"

    assert _team.call_pair((record, ("a",), {}), (record, ("b",), {})) == ("a!", "b!")
    for fails, expected in (((True, False), "a"), ((False, True), "b"), ((True, True), "a")):
        ran.clear()
        with pytest.raises(_Planted) as raised:
            _team.call_pair((record, ("a", fails[0]), {}), (record, ("b", fails[1]), {}))
        assert str(raised.value) == expected
        assert sorted(ran) == ["a", "b"]


def test_the_partner_pass_stops_within_a_step_when_the_first_call_raises(two_threads):
    """Ctrl-C reaches only the calling thread, so its call's pass stops within a time step; the
    call beside it polls a flag that the first call sets when it raises
    (lstmfast.functional._side_by_side), and stops at its next step, not after its whole pass
    (about a second here). The weights are column-major, as the layers keep theirs: C-ordered
    ones are copied before each pass (32 MB here, fresh pages every call), which took 35-50 ms
    and at times 150-270 ms on a shared machine before the pass's first step could see the flag."""
    import time

    from lstmfast.functional import _side_by_side, lstm_forward

    rng = np.random.default_rng(0)
    steps = 600
    x = rng.standard_normal((8, 16, steps))
    W = np.asfortranarray(rng.standard_normal((16, 4096)) * 0.05)
    RW = np.asfortranarray(rng.standard_normal((1024, 4096)) * 0.05)
    b = np.zeros(4096)
    started = time.perf_counter()
    lstm_forward(x[:, :, :30], W, RW, b)
    step = (time.perf_counter() - started) / 30

    def interrupted():
        time.sleep(0.05)
        raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        _side_by_side(_team.call_pair, (interrupted, (), {}), (lstm_forward, (x, W, RW, b), {}))
    elapsed = time.perf_counter() - started
    assert steps * step > 0.4                  # the whole pass would take this long
    assert elapsed < 0.05 + 20 * step + 0.1, (elapsed, step)


def test_a_pair_inside_a_partner_leaves_the_partner_its_flag(two_threads):
    """A partner call that itself runs a pair (on the calling thread, one after the other: the
    team is held by the outer pair) still polls the outer pair's flag afterwards, so that its
    later passes stop when the outer first call raises."""
    from lstmfast import functional

    def flag():
        return getattr(functional._partner, "cancel", None)

    def partner():
        before = flag()
        inner = functional._side_by_side(_team.call_pair, (flag, (), {}), (flag, (), {}))
        return before, inner, flag()

    for runner in (_team.call_pair, lambda first, second: (first[0](*first[1]),
                                                           second[0](*second[1]))):
        lead, (before, inner, after) = functional._side_by_side(
            runner, (flag, (), {}), (partner, (), {}))
        assert lead is None and before is not None
        assert inner[0] is before and inner[1] is not None and inner[1] is not before
        assert after is before
        assert flag() is None


@pytest.mark.parametrize("kind, dtype", [("graves", np.float32), ("concat", np.float64),
                                         ("mul", np.float32), ("average", np.float64)])
def test_memory_report_counts_both_passes_at_once(two_threads, pairs, kind, dtype):
    """With the directions side by side, both passes' arrays may be alive at once: the layer's
    memory report counts them so (the most it allocates; a partner pass that starts late
    overlaps less). What tracemalloc measures lies between the report for the directions one
    after the other and that figure, within 10% (sizes below the buffer pool's, whose reuse
    tracemalloc would not see)."""
    layer = _layer(kind, dtype)
    x, _, eps = _problem(layer, dtype, "none")
    mb, steps = x.shape[0], x.shape[2]
    side_by_side = layer.memory_report(steps, minibatch=mb).allocated_bytes
    lstmfast.set_num_threads(1)
    one_after_the_other = layer.memory_report(steps, minibatch=mb).allocated_bytes
    lstmfast.set_num_threads(2)
    layer.forward(x, training=True)          # warm up (first-call allocations)
    layer.backward(eps)
    for phase in ("training", "inference"):
        assert side_by_side[phase] > one_after_the_other[phase]
        fresh = _layer(kind, dtype)
        fresh.params = layer.params
        if phase == "training":
            measured = traced_peak(lambda: (fresh.forward(x, training=True),
                                             fresh.backward(eps)))
        else:
            measured = traced_peak(lambda: fresh.forward(x))
        assert 0.9 * one_after_the_other[phase] <= measured <= 1.1 * side_by_side[phase], (
            phase, measured, one_after_the_other[phase], side_by_side[phase])
    assert len(pairs) == 5
