"""Sizes past the BLAS integer.

Problems whose dimensions make a BLAS size overflow the 32-bit integer of this SciPy's BLAS
(minibatch * (T + 1), 4h + 3, nIn) are refused with a ValueError that says so, before anything
is allocated. The inputs are zero-stride broadcast views (np.broadcast_to / as_strided), so
nothing huge exists; the calls run in a child process whose address space is capped at 4 GiB,
so that a regression shows up as a failed test rather than the machine running out of memory,
and tracemalloc measures what the refused call allocated.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import lstmfast
from reliability_support import check_refused_before_allocating, record


def blas_int_max():
    text = (Path(lstmfast.__file__).parent / "_blas_int.pxd").read_text()
    match = re.search(r"LSTMFAST_BLAS_INT_MAX\s+(\d+)", text)
    return int(match.group(1)) if match else None


BLAS_INT_MAX = blas_int_max()
needs_32bit_blas = pytest.mark.skipif(
    BLAS_INT_MAX is None or BLAS_INT_MAX > 2**31 - 1,
    reason="this SciPy's BLAS takes 64-bit integers: the sizes below do not overflow it")

CHILD = r'''
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np
import lstmfast
from reliability_support import print_outcomes_and_peaks

def big(shape, dtype=np.float32):
    return np.broadcast_to(np.zeros(1, dtype), shape)

h = 4
W = np.zeros((3, 4 * h), np.float32)
RW = np.zeros((h, 4 * h), np.float32)
b = np.zeros(4 * h, np.float32)
H = 2**29                                  # 4H = 2^31 > 2^31 - 1
cases = {
    "minibatch*T": lambda: lstmfast.lstm_forward(big((2**16, 3, 2**15)), W, RW, b),
    "minibatch*(T+1)": lambda: lstmfast.lstm_forward(big((2**16, 3, 2**15 - 1)), W, RW, b),
    "minibatch": lambda: lstmfast.lstm_forward(big((2**31, 3)), W, RW, b),
    "minibatch, training": lambda: lstmfast.lstm_forward(big((2**31, 3)), W, RW, b,
                                                         for_backprop=True),
    "minibatch with h0, c0, mask": lambda: lstmfast.lstm_forward(
        big((2**16, 3, 2**15)), W, RW, b, h0=big((2**16, h)), c0=big((2**16, h)),
        mask=big((2**16, 2**15))),
    "nIn": lambda: lstmfast.lstm_forward(big((1, 2**31, 1)), big((2**31, 4 * h)), RW, b),
    "4h": lambda: lstmfast.lstm_forward(big((1, 3, 1)), big((3, 4 * H)), big((H, 4 * H)),
                                        big((4 * H,))),
    "4h (peepholes)": lambda: lstmfast.lstm_forward(big((1, 3, 1)), big((3, 4 * H)),
                                                    big((H, 4 * H + 3)), big((4 * H,))),
    "float64": lambda: lstmfast.lstm_forward(big((2**16, 3, 2**15), np.float64),
                                             W.astype(np.float64), RW.astype(np.float64),
                                             b.astype(np.float64)),
    "layer.forward": lambda: lstmfast.GravesLSTM(3, h, seed=0).forward(big((2**16, 3, 2**15))),
    "layer.rnn_time_step": lambda: lstmfast.LSTM(3, h, seed=0).rnn_time_step(big((2**31, 3))),
    "layer.forward training": lambda: lstmfast.LSTM(3, h, seed=0).forward(
        big((2**16, 3, 2**15)), training=True),
    # the input is converted to the weights' dtype only after the size check
    "x float64, weights float32": lambda: lstmfast.lstm_forward(
        big((2**16, 3, 2**15), np.float64), W, RW, b),
}
print_outcomes_and_peaks(cases, sys.argv[1:])
'''

CASES = ["minibatch*T", "minibatch*(T+1)", "minibatch", "minibatch, training",
         "minibatch with h0, c0, mask", "nIn", "4h", "4h (peepholes)", "float64",
         "layer.forward", "layer.rnn_time_step", "layer.forward training",
         "x float64, weights float32"]


@needs_32bit_blas
def test_sizes_past_the_blas_integer_are_refused_before_allocating():
    # the sizes are in the message
    peaks = check_refused_before_allocating(CHILD, CASES, r"minibatch=\d+, nIn=\d+, h=\d+, T=\d+")
    record("limits: refused oversize problems (cases)", len(CASES))
    record("limits: largest allocation by a refused oversize call (bytes)", max(peaks.values()))


def test_check_dims_agrees_with_the_blas_integer():
    """kernels.check_dims: the kernels' verdict at the edge of the BLAS integer."""
    from lstmfast import kernels
    if BLAS_INT_MAX is None or BLAS_INT_MAX > 2**31 - 1:
        pytest.skip("64-bit BLAS integer")
    tanh, sigmoid = 0, 1
    ok, too_large = 0, -3
    limit = BLAS_INT_MAX
    # rows of the stacked state: minibatch * (T + 1)
    assert kernels.check_dims(1, 1, 1, limit - 1, False, tanh, sigmoid) == ok
    assert kernels.check_dims(1, 1, 1, limit, False, tanh, sigmoid) == too_large
    assert kernels.check_dims(2, 1, 1, limit // 2, False, tanh, sigmoid) == too_large
    # 4h + 3 columns
    assert kernels.check_dims(1, 1, (limit - 3) // 4, 1, True, tanh, sigmoid) in (ok, too_large)
    assert kernels.check_dims(1, 1, (limit - 3) // 4 + 1, 1, True, tanh, sigmoid) == too_large
    assert kernels.check_dims(1, limit + 1, 1, 1, False, tanh, sigmoid) == too_large
    # products that overflow 64 bits are not wrapped around
    assert kernels.check_dims(2**40, 1, 1, 2**40, False, tanh, sigmoid) == too_large
    assert kernels.check_dims(1, 2**62, 2**62, 1, False, tanh, sigmoid) == too_large


@pytest.mark.parametrize("projection", [0, 2**15 - 1])
def test_sizes_below_the_quick_check_bound_stay_far_from_overflow(projection):
    """check_dims skips computing the buffer sizes when every dimension is under 2^15 (its
    comment bounds them under 2^60); at that corner the sizes, computed in full, are that small,
    and one more in any dimension still gets a verdict from the full computation."""
    from lstmfast import kernels
    edge = 2**15 - 1
    sizes = [kernels.cache_size(edge, edge, edge, edge, projection),
             kernels.forward_workspace_size(edge, edge, edge, edge, False, projection=projection),
             kernels.forward_workspace_size(edge, edge, edge, edge, True, projection=projection),
             kernels.backward_workspace_size(edge, edge, edge, edge, projection=projection)]
    assert all(0 < size < 2**60 for size in sizes), sizes
    tanh, sigmoid, ok = 0, 1, 0
    # (mb (T + 1) stays under 2^31 and 4h + 3 fits, so every BLAS integer takes these too)
    assert kernels.check_dims(edge, edge, edge, edge, True, tanh, sigmoid) == ok
    for grown in range(4):
        dims = [edge] * 4
        dims[grown] += 1
        assert kernels.check_dims(*dims, True, tanh, sigmoid) == ok


def _sparse_wide_weights(tmp_path, n_in, gates, ld):
    """input_weights [n_in, gates] whose columns are `ld` elements apart, in a sparse file."""
    import mmap
    nbytes = (ld * (gates - 1) + n_in) * 4
    f = open(tmp_path / "sparse.bin", "w+b")
    try:
        f.truncate(nbytes)
        mm = mmap.mmap(f.fileno(), nbytes)
    except (OSError, ValueError, OverflowError) as error:
        f.close()
        pytest.skip(f"no sparse file of {nbytes} bytes here: {error}")
    base = np.frombuffer(mm, dtype=np.float32)
    W = np.lib.stride_tricks.as_strided(base, shape=(n_in, gates), strides=(4, ld * 4))
    return W, (f, mm)


@needs_32bit_blas
def test_weights_with_a_leading_dimension_past_the_blas_integer_are_copied(tmp_path):
    h, n_in = 4, 3
    W, keep = _sparse_wide_weights(tmp_path, n_in, 4 * h, 2**31 + 16)
    W[...] = 0.1
    x = np.ones((2, n_in, 3), np.float32)
    RW, b = np.zeros((h, 4 * h), np.float32), np.zeros(4 * h, np.float32)
    expected = lstmfast.lstm_forward(x, np.array(W), RW, b).output
    got = lstmfast.lstm_forward(x, W, RW, b).output
    np.testing.assert_array_equal(got, expected)
