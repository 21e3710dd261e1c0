"""lstmfast.dl4j.load_graph: ComputationGraphs that are not chains, against the output DL4J
stored with its own file, and the zip reading load_graph shares with load."""

import zipfile

import numpy as np
import pytest

import lstmfast
from lstmfast import dl4j
from testdata import data_file as data


@pytest.mark.parametrize("dtype", [None, np.float64])
def test_synthetic_bidirectional_graph_reproduces_dl4j_output(dtype):
    lf = lstmfast
    graph = dl4j.load_graph(data("SyntheticBidirectionalRNNGraph_100b6.zip"), dtype=dtype)
    assert graph.num_params() == 4515
    rnn1 = graph.layers["rnn1"]
    assert type(rnn1) is lf.Bidirectional and rnn1.mode == "concat"
    assert type(rnn1.forward_layer) is lf.LSTM and rnn1.forward_layer.activation == "relu"
    assert "SimpleRnn" in repr(graph.layers["rnn2"]) and "max" in repr(graph.layers["pooling"])
    # parameter order: rnn1 (fW [10, 64], fRW [16, 64], fb, bW, bRW, bb), rnn2, out
    with zipfile.ZipFile(data("SyntheticBidirectionalRNNGraph_100b6.zip")) as z:
        flat = dl4j.read_array(z.read("coefficients.bin"))[0]
    assert rnn1.forward_layer.W[1, 0] == flat[1] and rnn1.forward_layer.W[0, 1] == flat[10]
    n_dir = 10 * 64 + 16 * 64 + 64
    assert rnn1.backward_layer.W[0, 0] == flat[n_dir]
    out_layer = graph.layers["out"]
    np.testing.assert_array_equal(out_layer.b, flat[-3:])
    np.testing.assert_array_equal(out_layer.W, flat[-3 - 192:-3].reshape(64, 3, order="F"))
    x = dl4j.read_array(data("SyntheticBidirectionalRNNGraph_Input_100b6.bin"))
    expected = dl4j.read_array(data("SyntheticBidirectionalRNNGraph_Output_100b6.bin"))
    out = graph.output(x)
    assert out.shape == (4, 3)
    err = float(np.max(np.abs(out.astype(np.float64) - expected)))
    assert err < 1e-5, err


def test_load_graph_of_a_chain_equals_load():
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    seq = dl4j.load(data("080_ModelSerializer_Regression_CG_LSTM_1.zip"), dtype=np.float64)
    graph = dl4j.load_graph(data("080_ModelSerializer_Regression_CG_LSTM_1.zip"),
                            dtype=np.float64)
    np.testing.assert_array_equal(graph.params, seq.params)
    small = np.sin(np.arange(1, 478))
    seq.params = small
    graph.params[...] = small  # the layers' parameters are views into graph.params
    np.testing.assert_array_equal(graph.output(x), seq.output(x))


@pytest.mark.parametrize("change, match", [
    (lambda raw: raw + b"\0", "unexpected bytes after the array"),
    (lambda raw: raw[:len(raw) // 2], "graph.zip: coefficients.bin: truncated"),
    (lambda raw: raw + b"\0" * (9 * 4515), "too large for the 4515 parameters"),
    (None, "no coefficients.bin"),
])
def test_load_graph_reads_the_coefficients_as_load_does(tmp_path, change, match):
    """ComputationGraph zips go through the same bounded reading as load's: a truncated, padded
    or missing coefficients.bin is a ValueError naming the file."""
    source = data("SyntheticBidirectionalRNNGraph_100b6.zip")
    path = tmp_path / "graph.zip"
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(path, "w") as b:
        for item in a.infolist():
            raw = a.read(item.filename)
            if item.filename == "coefficients.bin":
                if change is None:
                    continue
                raw = change(raw)
            b.writestr(item, raw)
    with pytest.raises(ValueError, match=match):
        dl4j.load_graph(path)
