"""Hostile configuration.json: numbers past the float range and non-finite initial values.

* a float field written as a 400-digit integer is refused with a ValueError naming the field
  (it raised OverflowError);
* a NaN forgetGateBiasInit / biasInit is refused at load (such a model loaded and then could
  not be saved again).
"""
import json
import zipfile

import pytest

import lstmfast
from lstmfast import dl4j


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



