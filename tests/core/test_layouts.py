"""The forward writes h where it goes when each step's output block is one contiguous block
(a Fortran-ordered output [mb, h, T], which the Python API allocates), and reads x in place when
x [mb, n_in, T] is Fortran-ordered (if the caller passes it so); the backward likewise reads
epsilon [mb, h, T]. Other layouts go through copies. Both ways must give the same bits, and the
NumPy reference's numbers to rounding: the forward through the kernels' array entry
(kernels.forward, which takes any strides for the output too, and reports which operands it
used in place), inference and with the cache for
the backward, with the packed kernel and OpenBLAS, in one chunk of steps and in several; the
backward through the Python API; both directions, with and without a mask and peepholes, at 1
and 2 threads."""
import numpy as np
import pytest

import lstmfast
from lstmfast import functional, kernels

from reference import ref_backward, ref_forward

ACT = functional._activation_code("tanh", "activation", functional.ACTIVATIONS)
GATE = functional._activation_code("sigmoid", "gate_activation", functional.GATE_ACTIVATIONS)


# tuning that lets these small shapes use the thread team
SMALL_TEAM = {"team_min_units": 1, "team_min_step_work": 0}


@pytest.fixture
def team_for_small_shapes():
    """The SMALL_TEAM tuning; restores the thread count afterwards."""
    threads = lstmfast.get_num_threads()
    yield dict(SMALL_TEAM)
    lstmfast.set_num_threads(threads)


def _layout(a, kind):
    """a [mb, F, T] in a given memory layout: 'F' (each step one contiguous [mb, F] block),
    'C' (time fastest), 'reversed' (Fortran-ordered blocks, negative time stride), 'C-reversed'
    (time fastest, stride -1)."""
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "C-reversed":
        return np.ascontiguousarray(a[:, :, ::-1])[:, :, ::-1]
    return np.asfortranarray(a[:, :, ::-1])[:, :, ::-1]


def _problem(seed, shape, dtype, peepholes, masked):
    """x [mb, n_in, T], W, RW (with the peephole columns if asked), b, h0, c0, epsilon
    [mb, h, T] and a mask (or None) for shape (T, mb, n_in, h)."""
    T, mb, n_in, h = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mb, n_in, T)).astype(dtype)
    W = np.asfortranarray(rng.standard_normal((n_in, 4 * h)) * 0.4, dtype)
    RW = np.asfortranarray(rng.standard_normal((h, 4 * h + (3 if peepholes else 0))) * 0.4,
                           dtype)
    b = (rng.standard_normal(4 * h) * 0.3).astype(dtype)
    h0 = rng.standard_normal((mb, h)).astype(dtype)
    c0 = rng.standard_normal((mb, h)).astype(dtype)
    eps = rng.standard_normal((mb, h, T)).astype(dtype)
    mask = (rng.random((mb, T)) > 0.3).astype(dtype) if masked else None
    return x, W, RW, b, h0, c0, eps, mask


def _forward(x, W, RW, b, h0, c0, mask, out, peepholes, forwards, for_backprop, tuning=SMALL_TEAM,
             report=None):
    """kernels.forward into `out` (any strides) under `tuning`, its report into `report` (a dict
    or None); returns (out, last_h, last_c, cache or None)."""
    mb, n_in, T = x.shape
    h = RW.shape[0]
    last_h = np.full((mb, h), np.nan, x.dtype)
    last_c = np.full((mb, h), np.nan, x.dtype)
    cache = None
    if for_backprop:
        cache = np.full(kernels.cache_size(mb, n_in, h, T), np.nan, x.dtype)
    workspace = np.empty(kernels.forward_workspace_size(mb, n_in, h, T, for_backprop, tuning),
                         x.dtype)
    kernels.forward(x, W, RW, b, h0, c0, mask, out, last_h, last_c, cache, workspace,
                    peepholes, forwards, ACT, GATE, tuning=tuning, report=report)
    return out, last_h, last_c, cache


@pytest.fixture(params=["packed", "blas"])
def recurrent_gemm(request):
    """The per-step products with the packed kernel or with OpenBLAS (tuning's packed_gemm)."""
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("masked,peepholes", [(False, False), (True, True)])
@pytest.mark.parametrize("for_backprop", [False, True])
@pytest.mark.parametrize("shape,chunk", [((7, 5, 6, 13), None), ((5, 16, 24, 30), None),
                                         ((6, 3, 4, 9), None), ((6, 1, 4, 9), None),
                                         ((1, 4, 3, 5), None), ((7, 5, 6, 13), 2)])
def test_in_place_and_copied_layouts_agree(team_for_small_shapes, recurrent_gemm, dtype,
                                           threads, forwards, masked, peepholes, for_backprop,
                                           shape, chunk):
    T, mb, n_in, h = shape
    lstmfast.set_num_threads(threads)
    x0, W, RW, b, h0, c0, _, mask = _problem(5, shape, dtype, peepholes, masked)
    tuning = dict(team_for_small_shapes, packed_gemm=int(recurrent_gemm == "packed"))
    if chunk is not None:
        # a chunk of `chunk` steps: the pass's projection and input handled in several parts
        tuning["projection_chunk_elements"] = chunk * mb * (n_in + 4 * h + 1)
    runs, paths = {}, {}
    for x_kind, out_kind in [("F", "F"), ("C", "C"), ("reversed", "reversed"), ("C", "F"),
                             ("F", "C"), ("C-reversed", "F")]:
        out = _layout(np.full((mb, h, T), np.nan, dtype), out_kind)
        report = {}
        runs[x_kind, out_kind] = _forward(_layout(x0, x_kind), W, RW, b, h0, c0, mask, out,
                                          peepholes, forwards, for_backprop, tuning, report)
        paths[x_kind, out_kind] = (bool(report["h_in_output"]), bool(report["x_in_place"]))

    # the in-place paths were taken where they apply, and only there (the per-step input
    # product, which reads x, runs with the packed kernel, in inference, when T > 1)
    x_in_place_possible = (recurrent_gemm == "packed" and kernels.simd_variant() != "portable"
                           and not for_backprop and T > 1)
    for (x_kind, out_kind), (h_used, x_used) in paths.items():
        assert h_used == (out_kind != "C"), (x_kind, out_kind)
        assert x_used == (x_in_place_possible and not x_kind.startswith("C")), (x_kind, out_kind)

    reference = ref_forward(x0.astype(np.float64), W.astype(np.float64),
                            RW.astype(np.float64), b.astype(np.float64), h0.astype(np.float64),
                            c0.astype(np.float64), peepholes=peepholes, mask=mask,
                            forwards=forwards)
    in_place = runs["F", "F"]
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    want_all = (reference.output, reference.last_h, reference.last_c)
    for name, got, want in zip(("output", "last_h", "last_c"), in_place, want_all):
        scale = max(float(np.max(np.abs(want))), 1e-30)
        assert np.max(np.abs(got - want)) / scale < tolerance, name
    for key, result in runs.items():
        for name, got, want in zip(("output", "last_h", "last_c", "cache"), result, in_place):
            if want is not None:
                np.testing.assert_array_equal(got, want, err_msg=f"{name} with x, out {key}")


@pytest.mark.parametrize("threads", [1, 2])
def test_output_whose_steps_overlap_goes_through_the_ring(team_for_small_shapes, threads):
    """An output whose step blocks overlap (time stride 0: every step lands on one block) must
    not be read back as the next step's h: the pass keeps h in its ring, and the block ends up
    with the last step's h."""
    shape = (12, 8, 6, 30)
    T, mb, n_in, h = shape
    lstmfast.set_num_threads(threads)
    x, W, RW, b, h0, c0, _, _ = _problem(3, shape, np.float64, False, False)
    plain = _forward(x, W, RW, b, h0, c0, None, _layout(np.empty((mb, h, T)), "F"), False, True,
                     False)
    block = np.full((mb, h), np.nan, order="F")
    overlapping = np.lib.stride_tricks.as_strided(block, shape=(mb, h, T),
                                                  strides=block.strides + (0,))
    report = {}
    got = _forward(x, W, RW, b, h0, c0, None, overlapping, False, True, False, report=report)
    assert report["h_in_output"] == 0
    np.testing.assert_array_equal(block, plain[0][:, :, -1])
    np.testing.assert_array_equal(got[1], plain[1])
    np.testing.assert_array_equal(got[2], plain[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("forwards", [True, False])
@pytest.mark.parametrize("masked,peepholes,tbptt", [(False, False, None), (True, True, 3)])
@pytest.mark.parametrize("shape", [(7, 5, 6, 13), (6, 3, 4, 9)])
def test_backward_reads_epsilon_in_place_or_gathered_alike(team_for_small_shapes, dtype, threads,
                                                         forwards, masked, peepholes, tbptt,
                                                         shape):
    """The backward adds a step's dL/d(output) where it is when that is one contiguous
    [mb, h] block (Fortran-ordered epsilon) and gathers it otherwise: the same bits either way,
    and the reference's gradients."""
    lstmfast.set_num_threads(threads)
    x, W, RW, b, _, _, eps0, mask = _problem(9, shape, dtype, peepholes, masked)
    fwd = lstmfast.lstm_forward(x, W, RW, b, peepholes=peepholes, mask=mask, forwards=forwards,
                                for_backprop=True, _tuning=team_for_small_shapes)
    names = ("input_weights", "recurrent_weights", "bias", "input", "h0", "c0")
    results = {}
    for kind in ("F", "C", "reversed"):
        report = {}
        grads = lstmfast.lstm_backward(fwd, _layout(eps0, kind), tbptt_length=tbptt,
                                       _tuning=team_for_small_shapes, _report=report)
        results[kind] = [getattr(grads, name).copy() for name in names]
        assert report["epsilon_in_place"] == (kind != "C"), kind
    forward_reference = ref_forward(x.astype(np.float64), W.astype(np.float64),
                                    RW.astype(np.float64), b.astype(np.float64),
                                    peepholes=peepholes, mask=mask, forwards=forwards)
    reference = ref_backward(forward_reference, eps0.astype(np.float64), tbptt_length=tbptt)
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    for name, got in zip(names, results["F"]):
        want = getattr(reference, name)
        scale = max(float(np.max(np.abs(want))), 1e-30)
        assert np.max(np.abs(got - want)) / scale < tolerance, name
    for kind, grads in results.items():
        for name, got, want in zip(names, grads, results["F"]):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} with epsilon {kind}")
