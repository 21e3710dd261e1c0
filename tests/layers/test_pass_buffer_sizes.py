"""lstmfast.functional.pass_buffer_sizes: the buffers of a pass as the kernels size them, and
the layers' memory report built from it."""

import numpy as np
import pytest

import lstmfast
from lstmfast import kernels
from lstmfast.functional import pass_buffer_sizes

SHAPES = [(1, 1, 1, 1), (3, 5, 4, 7), (16, 40, 64, 30), (2, 300, 8, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [False, True])
def test_sizes_are_the_kernels_size_functions_in_bytes(shape, dtype, lengths):
    mb, n_in, h, steps = shape
    item = np.dtype(dtype).itemsize
    sizes = pass_buffer_sizes(mb, n_in, h, steps, peepholes=True, dtype=dtype, lengths=lengths)
    assert sizes.cache == kernels.cache_size(mb, n_in, h, steps) * item
    assert sizes.forward_workspace_inference == \
        kernels.forward_workspace_size(mb, n_in, h, steps, False) * item
    assert sizes.forward_workspace_training == \
        kernels.forward_workspace_size(mb, n_in, h, steps, True) * item
    some_lengths = np.full(mb, steps, dtype=np.intp) if lengths else None
    assert sizes.backward_workspace == \
        kernels.backward_workspace_size(mb, n_in, h, steps, None, some_lengths) * item
    assert min(sizes) > 0


def test_lengths_add_one_block_to_the_backward_workspace_only():
    mb, n_in, h, steps = 6, 5, 7, 4
    plain = pass_buffer_sizes(mb, n_in, h, steps, dtype=np.float64)
    with_lengths = pass_buffer_sizes(mb, n_in, h, steps, dtype=np.float64, lengths=True)
    assert with_lengths.backward_workspace - plain.backward_workspace == mb * h * 8
    assert with_lengths[:3] == plain[:3]


def test_the_tuning_of_the_passes_is_used():
    tuning = {"projection_chunk_elements": 1}
    sizes = pass_buffer_sizes(8, 16, 32, 10, _tuning=tuning)
    assert sizes.forward_workspace_training == \
        kernels.forward_workspace_size(8, 16, 32, 10, True, tuning) * 4
    assert sizes.forward_workspace_training != pass_buffer_sizes(8, 16, 32, 10).forward_workspace_training


def test_the_memory_report_counts_these_buffers():
    layer = lstmfast.GravesLSTM(5, 7, dtype=np.float64, seed=0)
    parts = layer._allocation_parts(9, 3)
    sizes = pass_buffer_sizes(3, 5, 7, 9, peepholes=True, dtype=np.float64)
    output, state = 3 * 7 * 9 * 8, 2 * 3 * 7 * 8
    assert parts["inference"] == output + state + sizes.forward_workspace_inference
    weight_copies = (5 * 28 + 7 * 31) * 8
    assert parts["record"] == output + state + sizes.cache + weight_copies


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="hidden: expected an integer >= 1, got 0"):
        pass_buffer_sizes(1, 1, 0, 1)
    with pytest.raises(TypeError, match="time_steps"):
        pass_buffer_sizes(1, 1, 1, 2.0)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        pass_buffer_sizes(1, 1, 1, 1, dtype=np.int32)
    with pytest.raises(TypeError, match="lengths: expected True or False"):
        pass_buffer_sizes(1, 1, 1, 1, lengths=[3])
    with pytest.raises(ValueError, match="problem too large"):
        pass_buffer_sizes(2 ** 40, 1, 1, 2 ** 30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_projection_sizes_are_the_kernels_projected_sizes(dtype):
    mb, n_in, h, steps, proj = 4, 6, 9, 5, 3
    item = np.dtype(dtype).itemsize
    sizes = pass_buffer_sizes(mb, n_in, h, steps, dtype=dtype, projection=proj)
    assert sizes.cache == kernels.cache_size(mb, n_in, h, steps, proj) * item
    assert sizes.forward_workspace_training == \
        kernels.forward_workspace_size(mb, n_in, h, steps, True, None, proj) * item
    assert sizes.backward_workspace == \
        kernels.backward_workspace_size(mb, n_in, h, steps, None, None, proj) * item
    # a projected pass keeps r = o * act(c) per step: its cache differs from the plain pass's
    assert sizes.cache != pass_buffer_sizes(mb, n_in, h, steps, dtype=dtype).cache
    with pytest.raises(ValueError, match="projection: expected an integer >= 0, got -1"):
        pass_buffer_sizes(mb, n_in, h, steps, projection=-1)
