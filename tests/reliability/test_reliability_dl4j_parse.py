"""Hostile configuration.json: numbers past the float range, non-finite initial values, bulk
that costs memory, and ComputationGraphs that cost time.

* a float field written as a 400-digit integer is refused with a ValueError naming the field
  (it raised OverflowError);
* a NaN forgetGateBiasInit / biasInit is refused at load (such a model loaded and then could
  not be saved again);
* the number of JSON values is bounded before decoding: a 64 KiB zip whose configuration.json
  (63 MiB, under the 64 MiB cap) holds an ignored array of ``{}`` took about 1.5 GiB to load;
  it is now refused with peak memory about twice the text, and what is accepted decodes within
  a small multiple of the text;
* ComputationGraph chains are checked in linear time, with at most 10,000 vertices (a 181 KiB
  chain took seconds to a minute).

The memory cases run in a child process with its address space capped, so that a regression
fails the test instead of exhausting the machine.
"""
import copy
import json
import time
import zipfile

import pytest

import lstmfast
from lstmfast import dl4j
from reliability_support import last_json_line, record, run_child


def _network():
    layers = [lstmfast.GravesLSTM(3, 4, seed=0),
              lstmfast.DenseLayer(4, 4, activation="leakyrelu", seed=1),
              lstmfast.RnnOutputLayer(4, 2, seed=2)]
    return lstmfast.Sequential(layers, updater=lstmfast.Adam(0.01), l2=1e-3)


def _model_zip(tmp_path, edit=None, name="m.zip", text=None):
    """A zip saved by lstmfast, with its configuration edited by ``edit(config)`` (or
    replaced by ``text``)."""
    source = tmp_path / "source.zip"
    dl4j.save(_network(), source)
    with zipfile.ZipFile(source) as z:
        config = json.loads(z.read("configuration.json"))
        coefficients = z.read("coefficients.bin")
    if edit is not None:
        edit(config)
    target = tmp_path / name
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("configuration.json", text if text is not None else json.dumps(config))
        z.writestr("coefficients.bin", coefficients)
    return target


HUGE = 10**400
FLOAT_FIELDS = {
    "forgetGateBiasInit": lambda c: c["confs"][0]["layer"],
    "biasInit": lambda c: c["confs"][1]["layer"],
    "learningRate": lambda c: c["confs"][0]["layer"]["iupdater"],
    "beta1": lambda c: c["confs"][1]["layer"]["iupdater"],
    "epsilon": lambda c: c["confs"][2]["layer"]["iupdater"],
    "alpha": lambda c: c["confs"][1]["layer"]["activationFn"],
    "value": lambda c: c["confs"][0]["layer"]["regularization"][0]["l2"],
}


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("field", list(FLOAT_FIELDS))
def test_a_float_field_written_as_a_huge_integer_is_refused_naming_it(tmp_path, field, sign):
    def edit(config):
        where = FLOAT_FIELDS[field](config)
        assert field in where
        where[field] = sign * HUGE

    path = _model_zip(tmp_path, edit)
    for load in (dl4j.load, dl4j.read_model):
        with pytest.raises(ValueError, match=rf"'{field}'.*401 digits"):
            load(path)
    # also given the decoded configuration
    config = json.loads(zipfile.ZipFile(path).read("configuration.json"))
    with pytest.raises(ValueError, match=rf"'{field}'"):
        dl4j.parse_configuration(config)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", float("nan"), float("inf")])
@pytest.mark.parametrize("field", ["forgetGateBiasInit", "biasInit"])
def test_a_non_finite_initial_value_is_refused_at_load(tmp_path, field, value):
    def edit(config):
        FLOAT_FIELDS[field](config)[field] = value

    path = _model_zip(tmp_path, edit)
    with pytest.raises(ValueError, match=rf"'{field}' must be a finite number"):
        dl4j.load(path)
    # what loads can be saved again (the reason for refusing)
    unedited = _model_zip(tmp_path, name="plain.zip")
    dl4j.save(dl4j.load(unedited), tmp_path / "again.zip")


def test_integers_in_integer_fields_and_ordinary_floats_still_load(tmp_path):
    def edit(config):
        FLOAT_FIELDS["forgetGateBiasInit"](config)["forgetGateBiasInit"] = 2   # an int, fine
        config["confs"][0]["layer"]["someUnusedField"] = 10**300               # < 1.8e308

    net = dl4j.load(_model_zip(tmp_path, edit))
    assert net.layers[0].forget_gate_bias_init == 2.0


# ---------------------------------------------------------------------------------------------
# bulk: memory

MEMORY_CHILD = r'''
import json, resource, sys, tracemalloc, zipfile
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from lstmfast import dl4j
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    text_bytes = z.getinfo("configuration.json").file_size
tracemalloc.start()
try:
    dl4j.load(path)
    outcome, message = "loaded", ""
except BaseException as error:
    outcome, message = type(error).__name__, str(error)[:300]
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"outcome": outcome, "message": message, "peak": peak, "text": text_bytes}))
'''


def _bulk_zip(tmp_path, name, unit, target_bytes):
    """A model zip whose configuration carries an ignored array of ``unit`` (e.g. "{}")
    repeated to about ``target_bytes`` of text."""
    path = _model_zip(tmp_path, name="base-" + name)
    with zipfile.ZipFile(path) as z:
        base = z.read("configuration.json").decode()
        coefficients = z.read("coefficients.bin")
    head = base[:-1] + ', "ignoredBulk": ['
    count = (target_bytes - len(head) - 2) // (len(unit) + 1)
    text = head + ",".join([unit] * count) + "]}"
    target = tmp_path / name
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("configuration.json", text)
        z.writestr("coefficients.bin", coefficients)
    return target


def test_ignored_bulk_of_empty_objects_is_refused_with_memory_bounded_by_the_text(tmp_path):
    path = _bulk_zip(tmp_path, "bulk.zip", "{}", 63 << 20)
    assert path.stat().st_size < 256 << 10          # a small zip
    proc = run_child(MEMORY_CHILD, path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json_line(proc.stdout)
    assert result["outcome"] == "ValueError", result
    assert "JSON values" in result["message"], result
    ratio = result["peak"] / result["text"]
    # the text is read (bytes) and decoded (str): about twice its size, nothing more
    assert ratio < 2.5, result
    record("files: 63 MiB configuration.json of ignored {} (refused) - peak memory / text size",
           round(ratio, 2))


# (each unit with its comma takes the 8 bytes of text allowed per value; "[]" and '{"a":0}'
# count as two values, so 16)
@pytest.mark.parametrize("unit", ["{}     ", "[]" + " " * 13, '{"a":0}' + " " * 8, '"abcde"',
                                  "0.5e-30"])
def test_accepted_bulk_decodes_within_a_small_multiple_of_the_text(tmp_path, unit):
    # as dense as the bound on values allows (one value per 8 bytes): accepted and loaded,
    # and its decoded form costs a bounded multiple of the text
    path = _bulk_zip(tmp_path, "dense.zip", unit, 4 << 20)
    proc = run_child(MEMORY_CHILD, path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json_line(proc.stdout)
    assert result["outcome"] == "loaded", result
    ratio = result["peak"] / result["text"]
    assert ratio < 16, result
    record(f"files: 4 MiB configuration.json of accepted bulk {unit.strip()} - peak memory / "
           f"text size", round(ratio, 2))


def test_the_value_bound_accepts_real_configurations_written_without_indentation(tmp_path):
    net = _network()
    compact = json.dumps(json.loads(dl4j.configuration_json(net)), separators=(",", ":"))
    spec = dl4j.parse_configuration(compact)
    assert [layer.kind for layer in spec.layers] == ["GravesLSTM", "DenseLayer", "RnnOutputLayer"]
    # and a long chain of layers (3,000 of them: about 2 MiB written compactly)
    config = json.loads(compact)
    config["confs"] = [copy.deepcopy(config["confs"][1]) for _ in range(3000)]
    config["inputPreProcessors"] = {}
    spec = dl4j.parse_configuration(json.dumps(config, separators=(",", ":")))
    assert len(spec.layers) == 3000


# ---------------------------------------------------------------------------------------------
# ComputationGraph chains: time


def _chain_text(n, body):
    names = [f"{i:x}" for i in range(n)]
    config = {"vertices": {v: body for v in names},
              "vertexInputs": {v: [names[i - 1] if i else "in"] for i, v in enumerate(names)},
              "networkInputs": ["in"], "networkOutputs": [names[-1]]}
    return json.dumps(config, separators=(",", ":"))


def _chain_of_size(kib, body):
    low, high = 1, 100000
    while low < high:
        mid = (low + high + 1) // 2
        if len(_chain_text(mid, body)) <= kib << 10:
            low = mid
        else:
            high = mid - 1
    return low, _chain_text(low, body)


def _timed(function, text):
    start = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        function(text)
    return time.perf_counter() - start, str(caught.value)


@pytest.mark.parametrize("kib", [122, 181, 390])
def test_computation_graph_chains_are_checked_in_linear_time(kib):
    # vertices that are not valid layers: the chain walk and the topological order ran
    # before any other check (quadratic: 0.6 s / 3.9 s at 122 KiB here, a minute reported
    # at 181 KiB on another machine; 390 KiB is about 9,800 vertices, just under the limit)
    n, text = _chain_of_size(kib, {"LayerVertex": None})
    times = {}
    for function in (dl4j.parse_configuration, dl4j.parse_graph):
        seconds, message = _timed(function, text)
        assert "missing layerConf" in message, message
        # linear: about 30 ms for 10,000 vertices
        assert seconds < 1.0, (function.__name__, n, seconds)
        times[function.__name__] = round(seconds, 3)
    record(f"files: ComputationGraph chain of {kib} KiB ({n} vertices) checked in (s)", times)


def test_computation_graphs_with_too_many_vertices_are_refused():
    n, text = _chain_of_size(500, {"LayerVertex": None})
    assert n > 10000
    for function in (dl4j.parse_configuration, dl4j.parse_graph):
        seconds, message = _timed(function, text)
        assert f"ComputationGraph with {n} vertices (at most 10000)" in message
        assert seconds < 1.0


def test_graphs_without_a_stored_order_still_need_a_unique_order():
    """Kahn's algorithm keeps the old rule: an order is accepted only when it is unique."""
    def graph(inputs):
        vertices = {v: {"@class": "org.deeplearning4j.nn.conf.graph.MergeVertex"} for v in inputs}
        return json.dumps({"vertices": vertices, "vertexInputs": inputs,
                           "networkInputs": ["in"], "networkOutputs": [list(inputs)[-1]]})

    chain = graph({"b": ["a"], "a": ["in"], "c": ["b", "a"]})
    assert [v.name for v in dl4j.parse_graph(chain).vertices] == ["a", "b", "c"]
    for ambiguous in ({"a": ["in"], "b": ["in"], "c": ["a", "b"]},       # a, b in any order
                      {"a": ["in", "b"], "b": ["a"]}):                    # a cycle
        with pytest.raises(ValueError, match="ambiguous"):
            dl4j.parse_graph(graph(ambiguous))
