"""lstmfast.onnx.export: the files pass onnx.checker's full check and ONNX Runtime (a separate
implementation of the ONNX operators) computes lstmfast's outputs from them.

Skipped without onnx / onnxruntime (pip install 'lstmfast[onnx]').
"""

import numpy as np
import pytest

import lstmfast

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5


def onnx_runtime(path, x, sequence_lens=None):
    runtime = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": x}
    if sequence_lens is not None:
        feed["sequence_lens"] = sequence_lens
    return runtime.run(["y"], feed)[0]


def export_and_check(model, tmp_path, **kwargs):
    path = tmp_path / "model.onnx"
    proto = lstmfast.onnx.export(model, path, **kwargs)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path, proto


def assert_same(model, tmp_path, shapes, dtype=np.float32, seed=0):
    """Export once, then run several (minibatch, T) shapes through the one file."""
    path, _ = export_and_check(model, tmp_path)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        x = rng.standard_normal(shape).astype(dtype)
        expected = model.output(x) if isinstance(model, lstmfast.Sequential) else model.forward(x)
        got = onnx_runtime(path, x)
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst <= TOLERANCE
    return worst


SEQUENCE_SHAPES = [(2, 3, 5), (1, 3, 1), (4, 3, 9)]


def scaled(layer, factor=2.0):
    """Larger weights drive gates into hardsigmoid's clipped range and relu's kink."""
    layer.params = layer.params * factor
    return layer


@pytest.mark.parametrize("cls", [lstmfast.LSTM, lstmfast.GravesLSTM])
@pytest.mark.parametrize("gate", ["sigmoid", "hardsigmoid"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "softsign"])
def test_unidirectional_layers(tmp_path, cls, gate, activation):
    layer = cls(3, 4, gate_activation=gate, activation=activation, seed=1)
    if activation != "relu":      # relu's outputs grow without bound: keep them O(1)
        scaled(layer)
    assert_same(layer, tmp_path, SEQUENCE_SHAPES)


def test_peepholes_reach_the_output(tmp_path):
    """The GravesLSTM's peepholes change the output and ONNX Runtime follows each of them:
    a file that dropped or swapped P would fail here."""
    layer = lstmfast.GravesLSTM(3, 4, seed=2)
    h = layer.n_out
    rng = np.random.default_rng(3)
    for column in range(3):           # wFF, wOO, wGG one at a time
        layer.RW[:, 4 * h:] = 0
        layer.RW[:, 4 * h + column] = 2.0 * rng.standard_normal(h)
        x = rng.standard_normal((2, 3, 6)).astype(np.float32)
        path, proto = export_and_check(layer, tmp_path)
        assert any(node.op_type == "LSTM" and len(node.input) == 8 for node in proto.graph.node)
        np.testing.assert_allclose(onnx_runtime(path, x), layer.forward(x), rtol=0, atol=TOLERANCE)


def test_reverse_direction(tmp_path):
    bi = lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, seed=4))
    backward = bi.backward_layer
    _, proto = export_and_check(backward, tmp_path)
    lstm = [n for n in proto.graph.node if n.op_type == "LSTM"][0]
    assert onnx.helper.get_attribute_value(
        [a for a in lstm.attribute if a.name == "direction"][0]) == b"reverse"
    assert_same(backward, tmp_path, SEQUENCE_SHAPES)


@pytest.mark.parametrize("mode", ["concat", "add", "mul", "average"])
@pytest.mark.parametrize("cls", [lstmfast.LSTM, lstmfast.GravesLSTM])
def test_bidirectional_modes(tmp_path, mode, cls):
    layer = lstmfast.Bidirectional(cls(3, 4, gate_activation="hardsigmoid", seed=5), mode=mode)
    scaled(layer)
    assert_same(layer, tmp_path, SEQUENCE_SHAPES)


def test_graves_bidirectional(tmp_path):
    assert_same(scaled(lstmfast.GravesBidirectionalLSTM(3, 4, seed=6)), tmp_path, SEQUENCE_SHAPES)


def test_stacked_network_with_dense_and_output_layers(tmp_path):
    net = lstmfast.Sequential([
        lstmfast.GravesLSTM(3, 5, seed=7),
        lstmfast.Bidirectional(lstmfast.LSTM(5, 4, gate_activation="hardsigmoid", seed=8),
                               mode="concat"),
        lstmfast.LSTM(8, 6, seed=9),
        lstmfast.DenseLayer(6, 5, activation="elu", seed=10),
        lstmfast.RnnOutputLayer(5, 3, activation="softmax", seed=11),
    ])
    net.params = net.params * 1.5
    assert_same(net, tmp_path, SEQUENCE_SHAPES)


@pytest.mark.parametrize("activation", ["identity", "sigmoid", "tanh", "relu", "leakyrelu", "softsign",
                                        "softplus", "elu", "hardtanh", "hardsigmoid", "softmax"])
def test_dense_activations_on_sequences_and_rows(tmp_path, activation):
    seq = lstmfast.Sequential([lstmfast.LSTM(3, 4, seed=12),
                               lstmfast.DenseLayer(4, 5, activation=activation, seed=13)])
    seq.params = seq.params * 3.0
    assert_same(seq, tmp_path, SEQUENCE_SHAPES)
    rows = lstmfast.Sequential([lstmfast.DenseLayer(3, 5, activation=activation, seed=14),
                                lstmfast.OutputLayer(5, 2, activation="softmax", seed=15)])
    rows.params = rows.params * 3.0
    assert_same(rows, tmp_path, [(2, 3), (7, 3)])


def test_float64_files_check_and_run_in_onnx_reference(tmp_path):
    """ONNX Runtime has no float64 LSTM kernel ("LSTM operator does not support double yet"):
    float64 files are checked and run by onnx's own reference evaluator instead."""
    from onnx.reference import ReferenceEvaluator

    net = lstmfast.Sequential([
        lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, dtype=np.float64, seed=16), mode="average"),
        lstmfast.RnnOutputLayer(4, 2, activation="softmax", dtype=np.float64, seed=17),
    ])
    path, proto = export_and_check(net, tmp_path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = np.random.default_rng(18).standard_normal((2, 3, 5))
    got = ReferenceEvaluator(str(path)).run(None, {"x": x})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, net.output(x), rtol=0, atol=1e-12)


def test_dynamic_axes(tmp_path):
    _, proto = export_and_check(lstmfast.LSTM(3, 4, seed=19), tmp_path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "time"]
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 4, "time"]


def prefix_mask(lengths, T):
    return (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


@pytest.mark.parametrize("mode", ["concat", "add"])
def test_sequence_lens_from_prefix_masks(tmp_path, mode):
    net = lstmfast.Sequential([
        lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, seed=20), mode=mode),
        lstmfast.LSTM(8 if mode == "concat" else 4, 5, seed=21),
        lstmfast.RnnOutputLayer(5, 2, activation="identity", loss="mse", seed=22),
    ])
    path, _ = export_and_check(net, tmp_path, sequence_lens=True)
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 3, 6)).astype(np.float32)
    mask = prefix_mask([6, 2, 4], 6)
    lens = lstmfast.onnx.mask_to_sequence_lens(mask)
    assert lens.tolist() == [6, 2, 4] and lens.dtype == np.int32
    expected = net.output(x, mask=mask)
    np.testing.assert_allclose(onnx_runtime(path, x, lens), expected, rtol=0, atol=TOLERANCE)


def _reverse_layer(cls, seed):
    donor = cls(3, 4, seed=seed)
    return lstmfast.convert.from_onnx(*lstmfast.convert.lstmfast_to_onnx(donor.W, donor.RW, donor.b),
                                      direction="reverse")


@pytest.mark.parametrize("make", [
    lambda: lstmfast.GravesLSTM(3, 4, seed=30),
    lambda: _reverse_layer(lstmfast.GravesLSTM, 31),
    lambda: _reverse_layer(lstmfast.LSTM, 32),
    lambda: lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, seed=33), mode="concat"),
    lambda: lstmfast.Bidirectional(lstmfast.LSTM(3, 4, seed=34), mode="mul"),
    lambda: lstmfast.GravesBidirectionalLSTM(3, 4, seed=35),
], ids=["graves", "reverse-graves", "reverse-lstm", "concat", "mul", "graves-bidirectional"])
def test_layers_run_with_lengths_export_with_sequence_lens(tmp_path, make):
    layer = make()
    path, _ = export_and_check(layer, tmp_path, sequence_lens=True)
    rng = np.random.default_rng(36)
    x = rng.standard_normal((4, 3, 6)).astype(np.float32)
    lengths = np.array([6, 0, 2, 5], np.int32)
    x[2, :, 2:] = 9.0              # padding: read by neither
    expected = layer.forward(x, lengths=lengths)
    np.testing.assert_allclose(onnx_runtime(path, x, lengths), expected, rtol=0, atol=TOLERANCE)


def test_network_run_with_lengths_exports_with_sequence_lens(tmp_path):
    net = lstmfast.Sequential([
        lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, seed=40), mode="add"),
        lstmfast.DenseLayer(4, 5, activation="tanh", seed=41),
        lstmfast.LSTM(5, 5, seed=42),
        lstmfast.RnnOutputLayer(5, 2, activation="softmax", seed=43),
    ])
    path, _ = export_and_check(net, tmp_path, sequence_lens=True)
    rng = np.random.default_rng(44)
    x = rng.standard_normal((3, 3, 7)).astype(np.float32)
    lengths = np.array([3, 7, 1], np.int32)
    expected = net.output(x, lengths=lengths)
    np.testing.assert_allclose(onnx_runtime(path, x, lengths), expected, rtol=0, atol=TOLERANCE)
    # a prefix mask is the same thing to the LSTM layers
    np.testing.assert_allclose(net.output(x, mask=prefix_mask(lengths, 7)), expected,
                               rtol=0, atol=1e-6)


def test_masks_without_an_exact_sequence_lens_are_refused():
    with pytest.raises(ValueError, match="row 1 .*not a prefix of ones"):
        lstmfast.onnx.mask_to_sequence_lens([[1, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="row 1 .*prefix"):
        lstmfast.onnx.mask_to_sequence_lens([[1, 1, 1], [0, 1, 1]])
    # an all-zero row is the empty prefix: length 0
    assert lstmfast.onnx.mask_to_sequence_lens([[0, 0, 0], [1, 0, 0]]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="only 0 and 1"):
        lstmfast.onnx.mask_to_sequence_lens([[1, 0.5]])
    with pytest.raises(ValueError, match=r"\[minibatch, T\]"):
        lstmfast.onnx.mask_to_sequence_lens([1, 1])


def test_export_refusals(tmp_path):
    with pytest.raises(TypeError, match="layer 0 is a str"):
        lstmfast.onnx.export("not a model", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="activation 'cube' has no ONNX LSTM equivalent"):
        lstmfast.onnx.export(lstmfast.LSTM(2, 3, activation="cube"), tmp_path / "x.onnx")
    rows = lstmfast.Sequential([lstmfast.DenseLayer(2, 3), lstmfast.OutputLayer(3, 2)])
    with pytest.raises(ValueError, match="needs a model whose input is a sequence"):
        lstmfast.onnx.export(rows, tmp_path / "x.onnx", sequence_lens=True)
    assert not (tmp_path / "x.onnx").exists()
