"""lstmfast.onnx.load: graphs of LSTM nodes and the operators exporters put around them,
checked against ONNX Runtime running the same files; clear refusals for what it cannot run.

Skipped without onnx / onnxruntime (pip install 'lstmfast[onnx]').
"""

import numpy as np
import pytest

import lstmfast

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOLERANCE = 1e-5
F32 = np.float32


def save(tmp_path, nodes, inputs, outputs, initializers, opset=18, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def runtime(path, feeds):
    runtime = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return runtime.run(None, feeds)


def value(name, shape, elem=TensorProto.FLOAT):
    """A typed graph input/output; an int shape is a rank with symbolic dimensions."""
    if isinstance(shape, int):
        shape = [f"{name}_{k}" for k in range(shape)]
    return helper.make_tensor_value_info(name, elem, shape)


def lstm_weights(rng, dirs, n_in, hidden, peepholes):
    w = {"W": rng.standard_normal((dirs, 4 * hidden, n_in)).astype(F32),
         "R": rng.standard_normal((dirs, 4 * hidden, hidden)).astype(F32),
         "B": rng.standard_normal((dirs, 8 * hidden)).astype(F32)}
    if peepholes:
        w["P"] = rng.standard_normal((dirs, 3 * hidden)).astype(F32)
    return w


CASES = [
    # direction, layout, peepholes, activations, initial state, sequence_lens
    ("forward", 0, False, None, False, False),
    ("forward", 0, True, [b"HardSigmoid", b"Tanh", b"Tanh"], True, False),
    ("reverse", 0, True, None, True, False),
    ("bidirectional", 0, True, None, False, False),
    ("bidirectional", 1, False, [b"Sigmoid", b"Relu", b"Relu"] * 2, True, False),
    ("forward", 1, True, None, False, False),
    ("forward", 0, True, None, True, True),
    ("bidirectional", 0, False, None, False, True),
    ("reverse", 1, False, None, False, True),
    ("reverse", 0, True, None, True, True),
    ("bidirectional", 0, True, [b"HardSigmoid", b"Tanh", b"Tanh"] * 2, True, True),
    ("bidirectional", 1, False, None, True, True),
]


@pytest.mark.parametrize("direction, layout, peepholes, activations, with_state, with_lens", CASES)
def test_lstm_node_outputs_match_onnx_runtime(tmp_path, direction, layout, peepholes, activations,
                                              with_state, with_lens):
    rng = np.random.default_rng([CASES.index((direction, layout, peepholes, activations, with_state,
                                              with_lens))])
    dirs = 2 if direction == "bidirectional" else 1
    T, mb, n_in, h = 5, 3, 4, 3
    weights = lstm_weights(rng, dirs, n_in, h, peepholes)
    names = ["X", "W", "R", "B", "", "", "", ""]
    inputs = [value("X", [T, mb, n_in] if layout == 0 else [mb, T, n_in])]
    feeds = {"X": rng.standard_normal((T, mb, n_in) if layout == 0 else (mb, T, n_in)).astype(F32)}
    if with_lens:
        names[4] = "lens"
        inputs.append(value("lens", [mb], TensorProto.INT32))
        # length 0 (ONNX Runtime: Y, Y_h and Y_c zero, not the initial state), a short one, T
        feeds["lens"] = np.array([5, 2, 4] if not with_state else [2, 0, 5], dtype=np.int32)
    if with_state:
        shape = (dirs, mb, h) if layout == 0 else (mb, dirs, h)
        names[5], names[6] = "h0", "c0"
        inputs += [value("h0", list(shape)), value("c0", list(shape))]
        feeds["h0"] = rng.standard_normal(shape).astype(F32)
        feeds["c0"] = rng.standard_normal(shape).astype(F32)
    if peepholes:
        names[7] = "P"
    while names[-1] == "":
        names.pop()
    attributes = {"hidden_size": h, "direction": direction, "layout": layout}
    if activations:
        attributes["activations"] = activations
    outs = ["Y", "Y_h", "Y_c"]
    node = helper.make_node("LSTM", names, outs, name="lstm", **attributes)
    path = save(tmp_path, [node], inputs, [value(o, 4 if o == "Y" else 3) for o in outs], weights)
    if layout == 0:
        expected = runtime(path, feeds)
    else:
        # ONNX Runtime refuses layout=1 ("Batchwise recurrent operations (layout == 1) are not
        # supported"): it runs the same node with layout=0 on transposed tensors instead
        node0 = helper.make_node("LSTM", names, outs, name="lstm", **dict(attributes, layout=0))
        inputs0 = [value(i.name, None if i.name == "lens" else 3,
                         TensorProto.INT32 if i.name == "lens" else TensorProto.FLOAT) for i in inputs]
        inputs0 = [value("lens", [mb], TensorProto.INT32) if i.name == "lens" else i for i in inputs0]
        path0 = save(tmp_path, [node0], inputs0, [value(o, 4 if o == "Y" else 3) for o in outs],
                     weights, name="layout0.onnx")
        feeds0 = {k: v if k == "lens" else np.ascontiguousarray(np.swapaxes(v, 0, 1))
                  for k, v in feeds.items()}
        expected = runtime(path0, feeds0)
        expected = [np.ascontiguousarray(e.transpose(2, 0, 1, 3) if e.ndim == 4 else np.swapaxes(e, 0, 1))
                    for e in expected]
    got = lstmfast.onnx.load(path).run(**feeds)
    for o, e, g in zip(outs, expected, got):
        assert g.shape == e.shape, o
        np.testing.assert_allclose(g, e, rtol=0, atol=TOLERANCE, err_msg=o)


def test_exporter_style_graph(tmp_path):
    """What a PyTorch-style export of LSTM -> last step -> Linear -> Softmax looks like: batch-
    first input transposed, Squeeze of the direction axis, Slice of the last step with the int64
    sentinel, Gemm with transB, Unsqueeze/Concat of the final states, Split, Mul, Div."""
    rng = np.random.default_rng(11)
    T, mb, n_in, h, n_out = 6, 2, 3, 4, 5
    w = lstm_weights(rng, 2, n_in, h, False)
    w.update({"fc_w": rng.standard_normal((n_out, 2 * h)).astype(F32),
              "fc_b": rng.standard_normal(n_out).astype(F32),
              "one": np.array([1], np.int64), "minus1": np.array([-1], np.int64),
              "big": np.array([np.iinfo(np.int64).max], np.int64), "zero": np.array([0], np.int64),
              "two": np.array([2.0], F32), "shape": np.array([0, -1], np.int64),
              "shape3": np.array([0, 0, -1], np.int64), "halves": np.array([h, h], np.int64)})
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "W", "R", "B"], ["Y", "Y_h"], hidden_size=h,
                         direction="bidirectional", name="rnn"),
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "shape3"], ["Ycat"]),                 # [T, mb, 2h]
        helper.make_node("Slice", ["Y", "minus1", "big", "zero"], ["last"]),     # [1, 2, mb, h]
        helper.make_node("Squeeze", ["last", "zero"], ["last2"]),                # [2, mb, h]
        helper.make_node("Transpose", ["last2"], ["last3"], perm=[1, 0, 2]),     # [mb, 2, h]
        helper.make_node("Reshape", ["last3", "shape"], ["feat"]),               # [mb, 2h]
        helper.make_node("Gemm", ["feat", "fc_w", "fc_b"], ["z"], transB=1, alpha=0.5),
        helper.make_node("Softmax", ["z"], ["p"], axis=1),
        helper.make_node("Split", ["feat", "halves"], ["fa", "fb"], axis=1),
        helper.make_node("Mul", ["fa", "fb"], ["prod"]),
        helper.make_node("Div", ["prod", "two"], ["half"]),
        helper.make_node("Unsqueeze", ["half", "one"], ["half3"]),
        helper.make_node("Concat", ["half3", "half3"], ["both"], axis=1),
        helper.make_node("ReduceMean", ["both", "one"], ["mean"], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["s"]),
        helper.make_node("Tanh", ["Y_h"], ["th"]),
    ]
    path = save(tmp_path, nodes, [value("x", [mb, T, n_in])],
                [value("p", 2), value("s", 2), value("th", 3), value("Ycat", 3)], w)
    x = rng.standard_normal((mb, T, n_in)).astype(F32)
    expected = runtime(path, {"x": x})
    model = lstmfast.onnx.load(path)
    got = model.run(x)
    assert len(got) == 4 and isinstance(model.lstm_layers[0], lstmfast.Bidirectional)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("mode", ["concat", "add", "mul", "average"])
def test_round_trip_export_then_load(tmp_path, mode):
    net = lstmfast.Sequential([
        lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, gate_activation="hardsigmoid", seed=1), mode=mode),
        lstmfast.LSTM(8 if mode == "concat" else 4, 5, seed=2),
        lstmfast.DenseLayer(5, 6, activation="hardtanh", seed=3),
        lstmfast.RnnOutputLayer(6, 2, activation="softmax", seed=4),
    ])
    lstmfast.onnx.export(net, tmp_path / "net.onnx", sequence_lens=True)
    model = lstmfast.onnx.load(tmp_path / "net.onnx")
    assert model.inputs == ["x", "sequence_lens"]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3, 7)).astype(F32)
    full = np.array([7, 7, 7], np.int32)
    np.testing.assert_allclose(model.run(x, sequence_lens=full), net.output(x), rtol=0, atol=1e-6)
    lens = np.array([7, 3, 5], np.int32)
    mask = (np.arange(7)[None, :] < lens[:, None]).astype(F32)
    np.testing.assert_allclose(model.run(x, sequence_lens=lens), net.output(x, mask=mask),
                               rtol=0, atol=1e-6)
    first = model.lstm_layers[0]
    np.testing.assert_array_equal(first.forward_layer.RW, net.layers[0].forward_layer.RW)


def one_lstm_node(tmp_path, weights_as_inputs=False, **attributes):
    rng = np.random.default_rng(0)
    w = lstm_weights(rng, 1, 2, 3, False)
    inputs = [value("X", [4, 1, 2])]
    if weights_as_inputs:
        inputs.append(value("W", list(w.pop("W").shape)))
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="the_lstm", hidden_size=3,
                            **attributes)
    return save(tmp_path, [node], inputs, [value("Y", 4)], w)


def test_refusals_name_the_node(tmp_path):
    with pytest.raises(ValueError, match=r"node 'the_lstm' \(LSTM\): clip=3.0 is not supported"):
        lstmfast.onnx.load(one_lstm_node(tmp_path, clip=3.0))
    with pytest.raises(ValueError, match=r"node 'the_lstm' \(LSTM\): input_forget=1"):
        lstmfast.onnx.load(one_lstm_node(tmp_path, input_forget=1))
    with pytest.raises(ValueError, match=r"'the_lstm'.*activation 'ThresholdedRelu'"):
        lstmfast.onnx.load(one_lstm_node(tmp_path, activations=["Sigmoid", "ThresholdedRelu",
                                                                 "ThresholdedRelu"]))
    with pytest.raises(ValueError, match=r"'the_lstm'.*input W \('W'\) must be an initializer"):
        lstmfast.onnx.load(one_lstm_node(tmp_path, weights_as_inputs=True))
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="fine"),
             helper.make_node("Erf", ["a"], ["y"], name="mystery")]
    path = save(tmp_path, nodes, [value("x", [2])], [value("y", 1)], {})
    with pytest.raises(ValueError, match=r"node 'mystery' \(Erf\): operator 'Erf' is not supported"):
        lstmfast.onnx.load(path)


def test_bad_files_are_value_errors(tmp_path):
    good = lstmfast.onnx.export(lstmfast.GravesLSTM(3, 4, seed=0), tmp_path / "good.onnx")
    data = (tmp_path / "good.onnx").read_bytes()
    for name, content in [("truncated", data[: len(data) // 2]), ("garbage", b"\x00\xff" * 100),
                          ("text", b"this is not a model")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not"):
            lstmfast.onnx.load(tmp_path / name)
    # an initializer claiming 10^12 floats it does not hold: refused without allocating them
    huge = onnx.ModelProto()
    huge.CopyFrom(good)
    tensor = huge.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([10 ** 6, 10 ** 6])
    with pytest.raises(ValueError, match=r"initializer: tensor 'layer0_W' \(dims \[1000000, 1000000\]\)"):
        lstmfast.onnx.load(huge)
    # weights of the wrong shape: the node is named
    wrong = onnx.ModelProto()
    wrong.CopyFrom(good)
    wrong.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros((1, 16, 5), F32), "layer0_R"))
    with pytest.raises(ValueError, match=r"node 'layer0/LSTM' \(LSTM\): hidden_size=4 does not match R"):
        lstmfast.onnx.load(wrong)
    # an input of the wrong size at run time
    model = lstmfast.onnx.load(good)
    with pytest.raises(ValueError, match=r"'layer0/LSTM'.*input size 5, W expects 3"):
        model.run(np.zeros((1, 5, 2), F32))


def test_from_onnx_takes_a_node_and_its_initializers(tmp_path):
    layer = lstmfast.Bidirectional(lstmfast.GravesLSTM(3, 4, seed=9), mode="concat")
    proto = lstmfast.onnx.export(layer, None)
    node = [n for n in proto.graph.node if n.op_type == "LSTM"][0]
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(F32)
    for initializers in (proto.graph, list(proto.graph.initializer),
                         {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}):
        back = lstmfast.convert.from_onnx(node, initializers)
        assert isinstance(back, lstmfast.Bidirectional) and back.peepholes
        np.testing.assert_array_equal(back.forward(x), layer.forward(x))
    with pytest.raises(ValueError, match="expected an LSTM NodeProto, got 'Transpose'"):
        lstmfast.convert.from_onnx(proto.graph.node[0], proto.graph)


@pytest.mark.parametrize("peepholes", [False, True])
def test_reverse_node_as_a_layer(tmp_path, peepholes):
    """A direction='reverse' node becomes a layer processing time backwards: its forward output
    is ONNX Runtime's Y in the original time order, its last state Y_h / Y_c; it exports back
    to a reverse node, and formats without such a layer refuse it."""
    rng = np.random.default_rng(21)
    T, mb, n_in, h = 6, 3, 4, 5
    weights = lstm_weights(rng, 1, n_in, h, peepholes)
    names = ["X", "W", "R", "B"] + (["", "", "", "P"] if peepholes else [])
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], name="rev", hidden_size=h,
                            direction=b"reverse")
    path = save(tmp_path, [node], [value("X", 3)], [value("Y", 4), value("Y_h", 3), value("Y_c", 3)],
                weights)
    x = rng.standard_normal((T, mb, n_in)).astype(F32)
    Y, Y_h, Y_c = runtime(path, {"X": x})
    proto = onnx.load(str(path))
    for layer in (lstmfast.convert.from_onnx(proto.graph.node[0], proto.graph),
                  lstmfast.convert.from_onnx(weights["W"], weights["R"], weights["B"],
                                             weights.get("P"), direction="reverse")):
        assert type(layer) is (lstmfast.GravesLSTM if peepholes else lstmfast.LSTM)
        out = layer.forward(np.ascontiguousarray(x.transpose(1, 2, 0)))     # [mb, h, T]
        np.testing.assert_allclose(out.transpose(2, 0, 1), Y[:, 0], rtol=0, atol=TOLERANCE)
        # the reverse direction ends at time 0: Y_h is Y's first step
        np.testing.assert_allclose(out[:, :, 0], Y_h[0], rtol=0, atol=TOLERANCE)
        assert np.abs(out[:, :, -1] - Y_h[0]).max() > 1e-3
    np.testing.assert_allclose(lstmfast.onnx.load(path).run(x)[2], Y_c, rtol=0, atol=TOLERANCE)
    exported = lstmfast.onnx.export(layer, tmp_path / "back.onnx")
    lstm, = [n for n in exported.graph.node if n.op_type == "LSTM"]
    assert helper.get_attribute_value([a for a in lstm.attribute if a.name == "direction"][0]) \
        == b"reverse"
    assert lstmfast.convert.to_onnx(layer)["attributes"]["direction"] == "reverse"
    with pytest.raises(ValueError, match="processes time in reverse"):
        lstmfast.convert.to_torch(layer)
    with pytest.raises(ValueError, match=r"layer 'layer0'.*reverse has no DL4J equivalent"):
        lstmfast.dl4j.save(lstmfast.Sequential([layer]), tmp_path / "model.zip")


def without(node, name):
    for attribute in [a for a in node.attribute if a.name == name]:
        node.attribute.remove(attribute)


def lstm_of(model):
    return [n for n in model.graph.node if n.op_type == "LSTM"][0]


def replace_initializer(model, index, array):
    tensor = model.graph.initializer[index]
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def set_attribute(name, value):
    def change(model):
        node = lstm_of(model)
        without(node, name)
        node.attribute.append(helper.make_attribute(name, value))
    return change


def external_data(model):
    tensor = model.graph.initializer[0]
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"


def negative_dims(model):
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([-1, 16, 3])


BROKEN = [
    ("direction of the wrong type", set_attribute("direction", 3),
     r"node 'layer0/LSTM' \(LSTM\): direction must be a string, got int"),
    ("activations of the wrong type", set_attribute("activations", [1, 2, 3]),
     r"node 'layer0/LSTM' \(LSTM\): activation must be a string"),
    ("hidden_size of the wrong type", set_attribute("hidden_size", "four"),
     r"node 'layer0/LSTM' \(LSTM\): hidden_size=b'four' does not match R"),
    ("layout out of range", set_attribute("layout", 7), r"'layer0/LSTM'.*layout must be 0 or 1"),
    ("integer weights", lambda m: replace_initializer(m, 0, np.ones((1, 16, 3), np.int32)),
     r"'layer0/LSTM'.*input W has dtype int32; ONNX's LSTM takes floating-point"),
    ("flat weights", lambda m: replace_initializer(m, 0, np.ones(48, F32)),
     r"'layer0/LSTM'.*W has shape \[48\]"),
    ("negative dims", negative_dims, r"tensor 'layer0_W' has negative dims \[-1, 16, 3\]"),
    ("external data", external_data, r"tensor 'layer0_W' keeps its data in an external file"),
    ("an input nobody produces", lambda m: m.graph.node[1].input.__setitem__(0, "nowhere"),
     r"input 'nowhere' is produced by no earlier"),
    ("a cycle", lambda m: m.graph.node[0].input.__setitem__(0, m.graph.node[-1].output[0]),
     r"node 'layer0/Transpose' \(Transpose\): input .* is produced by no earlier node"),
    ("another domain", lambda m: m.graph.node[0].__setattr__("domain", "com.example"),
     r"node 'layer0/Transpose' \(Transpose\): operator domain 'com.example' is not supported"),
    ("an output nobody produces", lambda m: m.graph.output[0].__setattr__("name", "zzz"),
     r"graph output 'zzz' is produced by no node"),
]


@pytest.mark.parametrize("what, change, match", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_graphs_are_value_errors_naming_the_node(what, change, match):
    """Wrong types, impossible shapes and broken wiring inside an otherwise valid file."""
    good = lstmfast.onnx.export(lstmfast.Sequential([lstmfast.LSTM(3, 4, seed=0),
                                                     lstmfast.RnnOutputLayer(4, 2, seed=1)]), None)
    assert np.isfinite(lstmfast.onnx.load(good).run(np.zeros((2, 3, 5), F32))).all()
    broken = onnx.ModelProto()
    broken.CopyFrom(good)
    change(broken)
    with pytest.raises(ValueError, match=match):
        lstmfast.onnx.load(broken)
