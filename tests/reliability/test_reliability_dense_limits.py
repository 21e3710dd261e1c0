"""Dense, output and RNN-output layers refuse sizes past the BLAS integer before allocating.

The LSTM layers refused such problems at once (tests/reliability/test_reliability_limits.py); the
feed-forward layers went on and, given a 2^32-row broadcast input, tried to allocate 128 GiB.
They now refuse rows (minibatch * T) or widths past the BLAS integer of this build with the
same kind of message. As there, the inputs are zero-stride broadcast views, the calls run in a
child process with its address space capped at 4 GiB, and tracemalloc measures what a refused
call allocated.
"""
import numpy as np
import pytest

import lstmfast
from reliability_support import check_refused_before_allocating, record

needs_32bit_blas = pytest.mark.skipif(
    lstmfast.kernels.BLAS_INT_MAX > 2**31 - 1,
    reason="this SciPy's BLAS takes 64-bit integers: the sizes below do not overflow it")

CHILD = r'''
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np
import lstmfast
from reliability_support import print_outcomes_and_peaks

def big(shape, dtype=np.float32):
    return np.broadcast_to(np.zeros(1, dtype), shape)

dense = lstmfast.DenseLayer(3, 8, seed=0)
output = lstmfast.OutputLayer(3, 2, seed=0)
rnn_output = lstmfast.RnnOutputLayer(3, 2, seed=0)
net = lstmfast.Sequential([lstmfast.DenseLayer(3, 4, seed=0), lstmfast.OutputLayer(4, 2, seed=1)])
cases = {
    "DenseLayer rows": lambda: dense.forward(big((2**32, 3))),
    "DenseLayer minibatch*T": lambda: dense.forward(big((2**16, 3, 2**16))),
    "DenseLayer training": lambda: dense.forward(big((2**32, 3)), training=True),
    "DenseLayer float64 input": lambda: dense.forward(big((2**32, 3), np.float64)),
    "OutputLayer rows": lambda: output.forward(big((2**32, 3))),
    "RnnOutputLayer minibatch*T": lambda: rnn_output.forward(big((2**16, 3, 2**16))),
    "Sequential.output": lambda: net.output(big((2**32, 3))),
}
print_outcomes_and_peaks(cases, sys.argv[1:])
'''

CASES = ["DenseLayer rows", "DenseLayer minibatch*T", "DenseLayer training",
         "DenseLayer float64 input", "OutputLayer rows", "RnnOutputLayer minibatch*T",
         "Sequential.output"]


@needs_32bit_blas
def test_feed_forward_layers_refuse_sizes_past_the_blas_integer_before_allocating():
    peaks = check_refused_before_allocating(CHILD, CASES,
                                            r"minibatch=\d+, nIn=\d+, nOut=\d+, T=\d+")
    record("limits: refused oversize dense/output problems (cases)", len(CASES))
    record("limits: largest allocation by a refused oversize dense/output call (bytes)",
           max(peaks.values()))


def test_small_broadcast_inputs_still_run():
    layer = lstmfast.RnnOutputLayer(3, 2, seed=0)
    x = np.broadcast_to(np.zeros(1, np.float32), (2, 3, 5))
    out = layer.forward(x)
    assert out.shape == (2, 2, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
