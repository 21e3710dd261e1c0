"""Hostile files beyond tests/dl4j/test_dl4j.py.

tests/dl4j/test_dl4j.py already covers: every truncation, 600 random byte flips of real arrays and
300 of a real model zip, a header claiming 2^40 / 2^62 / 2^63-1 elements, a negative rank and
twenty more corrupted headers, fourteen JSON edits with wrong types, broken zips, two zip bombs
(an 80 MiB configuration, 100 MiB of coefficients) and a save killed (os._exit) after its first
entry. This module adds:

* hypothesis-driven *structured* mutations: any node of the real configuration.json of every
  real DL4J file replaced by a value of another type (or removed), loaded with ``load`` and,
  for graphs, ``load_graph``; any field of a real ND4J array header (rank, dimensions, strides,
  data-type flags, order, element counts, mode and type names) set to an extreme value;
* zips that lie: entries whose declared size is small but which inflate to 100 MiB, encrypted
  and unknown-compression entries, duplicate names, 20,000 entries;
* a save killed from outside (SIGKILL) at random moments: the file is always the previous
  model or the new one, complete.

Each outcome is a model / an array, or ValueError with bounded memory.
"""
import copy
import json
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import lstmfast
from lstmfast import dl4j
from lstmfast.dl4j import _files as dl4j_files
from reliability_support import add_count, fuzz_settings, record
from testdata import data_file


ZIPS = ("080_ModelSerializer_Regression_LSTM_1.zip", "080_ModelSerializer_Regression_CG_LSTM_1.zip",
        "LSTMCharModelingExample_100b6.zip", "SyntheticBidirectionalRNNGraph_100b6.zip")
ARRAYS = ("SyntheticBidirectionalRNNGraph_Output_100b6.bin",
          "SyntheticBidirectionalRNNGraph_Input_100b6.bin")

_cache = {}


def _zip_parts(name):
    if name not in _cache:
        with zipfile.ZipFile(data_file(name)) as z:
            _cache[name] = (json.loads(z.read("configuration.json")), z.read("coefficients.bin"))
    return _cache[name]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


WRONG_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 3, 2**31, 2**63, 2**70, -(2**70), 10**400]),
    st.sampled_from([0.5, -0.0, 1e308, -1e308, float("nan"), float("inf"), -float("inf")]),
    st.sampled_from(["", "x", "NaN", "-1", "tanh", "org.deeplearning4j.nn.conf.layers.LSTM"]),
    st.sampled_from([[], [1], [None], [[]], {}, {"@class": "x"}, {"a": 1}]),
)


@fuzz_settings(200)
@given(name=st.sampled_from(ZIPS), edits=st.lists(st.tuples(st.integers(0, 10**6), WRONG_VALUES,
                                                             st.booleans()),
                                                   min_size=1, max_size=3))
def test_configuration_json_with_wrong_types_loads_or_raises_value_error(tmp_path_factory, name,
                                                                          edits):
    conf, coefficients = _zip_parts(name)
    conf = copy.deepcopy(conf)
    for pick, value, delete in edits:
        paths = list(_paths(conf))[1:]
        path = paths[pick % len(paths)]
        parent = conf
        for key in path[:-1]:
            parent = parent[key]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(value)
        note(f"{path} -> {'(removed)' if delete and isinstance(parent, dict) else value!r}")
    target = tmp_path_factory.mktemp("json") / "m.zip"
    with zipfile.ZipFile(target, "w") as z:
        z.writestr("configuration.json", json.dumps(conf))
        z.writestr("coefficients.bin", coefficients)
    loaders = [dl4j.load] + ([dl4j.load_graph] if "Graph" in name or "CG" in name else [])
    for loader in loaders:
        tracemalloc.start()
        try:
            with np.errstate(all="ignore"):
                loader(target)
        except ValueError:
            add_count("files: mutated configurations refused (ValueError)")
        else:
            add_count("files: mutated configurations loaded")
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 64 << 20


def _header_fields(raw):
    """Offsets of the fields of an ND4J array header: [(offset, size, kind)], kind one of
    'count' / 'info' (integers, `size` bytes big-endian) or 'name' (a UTF string)."""
    fields, pos = [], 0

    def utf():
        nonlocal pos
        n = struct.unpack_from(">H", raw, pos)[0]
        fields.append((pos, 2 + n, "name"))
        text = raw[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        return text

    mode = utf()
    width = 8 if mode in ("LONG_SHAPE", "MIXED_DATA_TYPES") else 4
    count = int.from_bytes(raw[pos:pos + width], "big", signed=True)
    fields.append((pos, width, "count"))
    pos += width
    shape_type = utf()
    item = 8 if shape_type == "LONG" else 4
    if not 0 <= count <= 68 or pos + count * item > len(raw):
        raise IndexError("the shape buffer no longer parses")
    for _ in range(count):
        fields.append((pos, item, "info"))
        pos += item
    mode = utf()
    width = 8 if mode in ("LONG_SHAPE", "MIXED_DATA_TYPES") else 4
    fields.append((pos, width, "count"))
    pos += width
    utf()
    return fields


EXTREMES = [0, 1, 2, -1, -2, 3, 31, 32, 33, 99, 102, 2**31 - 1, -(2**31), 2**32, 2**40, 2**62,
            2**63 - 1, -(2**63), 8192, 16384, 131072, 262144]
NAMES = ["", "LONG", "INT", "FLOAT", "DOUBLE", "HALF", "UTF8", "COMPRESSED", "JAVACPP",
         "MIXED_DATA_TYPES", "LONG_SHAPE", "HEAP", "x" * 300, "\u00e9"]


def _array_sources():
    sources = [data_file(n).read_bytes() for n in ARRAYS]
    with zipfile.ZipFile(data_file(ZIPS[0])) as z:
        sources.append(z.read("coefficients.bin"))     # a legacy JAVACPP/INT header
    return sources


@fuzz_settings(300)
@given(source=st.integers(0, 2), changes=st.lists(
    st.tuples(st.integers(0, 10**6), st.sampled_from(EXTREMES), st.sampled_from(NAMES)),
    min_size=1, max_size=3), cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_array_headers_with_extreme_fields_read_or_raise_value_error(source, changes, cut):
    raw = bytearray(_array_sources()[source])
    for pick, number, name in changes:
        fields = _header_fields(bytes(raw)) if raw[:2] != b"\xff\xff" else []
        if not fields:
            break
        offset, size, kind = fields[pick % len(fields)]
        if kind == "name":
            data = name.encode("utf-8")
            raw[offset:offset + size] = struct.pack(">H", len(data)) + data
        else:
            raw[offset:offset + size] = (number % (1 << (8 * size))).to_bytes(size, "big")
        try:
            _header_fields(bytes(raw))
        except (struct.error, UnicodeDecodeError, IndexError):
            break                      # the header no longer parses: mutate no further
    if cut is not None:
        raw = raw[:cut % (len(raw) + 1)]
    tracemalloc.start()
    try:
        array = dl4j.read_array(bytes(raw))
    except ValueError:
        add_count("files: mutated array headers refused (ValueError)")
    else:
        assert isinstance(array, np.ndarray) and array.size <= len(raw)
        add_count("files: mutated array headers read")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 * len(raw) + (1 << 20)


# ---------------------------------------------------------------------------------------------
# zips that lie

def _tiny_model_zip(path, coefficients=None, config=None, **zip_kw):
    model = lstmfast.Sequential([lstmfast.LSTM(2, 3, seed=0), lstmfast.RnnOutputLayer(3, 2, seed=1)])
    dl4j.save(model, path)
    with zipfile.ZipFile(path) as z:
        conf, coeffs = z.read("configuration.json"), z.read("coefficients.bin")
    return model, conf if config is None else config, coeffs if coefficients is None else coefficients


def _patch_sizes(data, name, declared):
    """Rewrite the uncompressed size of entry `name` (local header and central directory)."""
    data = bytearray(data)
    encoded = name.encode()
    pos = 0
    while True:
        pos = data.find(b"PK\x03\x04", pos)
        if pos < 0:
            break
        n = struct.unpack_from("<H", data, pos + 26)[0]
        if bytes(data[pos + 30:pos + 30 + n]) == encoded:
            struct.pack_into("<I", data, pos + 22, declared)
        pos += 4
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + n]) == encoded:
            struct.pack_into("<I", data, pos + 24, declared)
        pos += 4
    return bytes(data)


@pytest.mark.parametrize("entry", ["configuration.json", "coefficients.bin"])
def test_entries_that_inflate_far_beyond_their_declared_size(tmp_path, entry):
    """An entry declared as 1000 bytes whose deflate stream inflates to 100 MiB."""
    path = tmp_path / "m.zip"
    model, conf, coeffs = _tiny_model_zip(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in (("configuration.json", conf), ("coefficients.bin", coeffs)):
            if name != entry:
                z.writestr(name, data)
                continue
            zero = b"\0" * (1 << 20)
            with z.open(name, "w", force_zip64=False) as f:
                f.write(data[:20])
                for _ in range(100):
                    f.write(zero)
    path.write_bytes(_patch_sizes(path.read_bytes(), entry, 1000))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            dl4j.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    record(f"files: peak memory loading a 100 MiB-inflating {entry} declared as 1000 bytes (KiB)",
           round(peak / 1024))
    # coefficients.bin is read as far as its header says; configuration.json is read with
    # f.read(64 MiB + 1), which zipfile inflates up to that cap before cutting it to the declared
    # size: bounded by the cap (reading min(cap, declared size) + 1 would make it ~1 KiB)
    bound = 8 << 20 if entry == "coefficients.bin" else 3 * dl4j_files._MAX_JSON_BYTES
    assert peak < bound


def test_encrypted_unknown_compression_duplicate_and_many_entries(tmp_path):
    path = tmp_path / "m.zip"
    model, conf, coeffs = _tiny_model_zip(path)
    # the encrypted flag on an entry
    raw = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(signature)
        while pos >= 0:
            struct.pack_into("<H", raw, pos + flag_at, struct.unpack_from("<H", raw, pos + flag_at)[0] | 1)
            pos = raw.find(signature, pos + 4)
    (tmp_path / "enc.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        dl4j.load(tmp_path / "enc.zip")
    # an unknown compression method (99)
    raw = bytearray(path.read_bytes())
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        pos = raw.find(signature)
        while pos >= 0:
            struct.pack_into("<H", raw, pos + method_at, 99)
            pos = raw.find(signature, pos + 4)
    (tmp_path / "method.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        dl4j.load(tmp_path / "method.zip")
    # the same name twice: zipfile reads the last one; either way a model or a ValueError
    with zipfile.ZipFile(tmp_path / "dup.zip", "w") as z:
        z.writestr("configuration.json", b"{}")
        z.writestr("configuration.json", conf)
        z.writestr("coefficients.bin", coeffs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # zipfile: "Duplicate name"
        try:
            loaded = dl4j.load(tmp_path / "dup.zip")
        except ValueError:
            pass
        else:
            assert loaded.params.tobytes() == model.params.tobytes()
    # coefficients.bin as a directory, and 20,000 junk entries around a valid model
    with zipfile.ZipFile(tmp_path / "dir.zip", "w") as z:
        z.writestr("configuration.json", conf)
        z.writestr(zipfile.ZipInfo("coefficients.bin/"), b"")
    with pytest.raises(ValueError):
        dl4j.load(tmp_path / "dir.zip")
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as z:
        for i in range(20000):
            z.writestr(f"junk/{i}", b"")
        z.writestr("configuration.json", conf)
        z.writestr("coefficients.bin", coeffs)
    start = time.perf_counter()
    assert dl4j.load(tmp_path / "many.zip").params.tobytes() == model.params.tobytes()
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------------------------
# a save killed from outside at random moments

SAVER = r'''
import sys
import numpy as np
import lstmfast
from lstmfast import dl4j
seed, path = int(sys.argv[1]), sys.argv[2]
model = lstmfast.Sequential([lstmfast.GravesLSTM(200, 250, seed=seed),
                             lstmfast.RnnOutputLayer(250, 5, seed=seed + 1)])
print("saving", flush=True)
while True:                     # save again and again until killed
    dl4j.save(model, path)
'''


def test_save_killed_at_random_moments_leaves_a_complete_file(tmp_path):
    import lstmfast as lf
    path = tmp_path / "model.zip"
    models = {}
    for seed in (10, 20):
        models[seed] = lf.Sequential([lf.GravesLSTM(200, 250, seed=seed),
                                      lf.RnnOutputLayer(250, 5, seed=seed + 1)])
    dl4j.save(models[10], path)
    start = time.perf_counter()
    dl4j.save(models[10], tmp_path / "timing.zip")
    save_time = time.perf_counter() - start
    env = dict(os.environ)
    root = str(Path(lstmfast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    rng = np.random.default_rng(3)
    seen = {10: 0, 20: 0}
    kills = 6
    for k in range(kills):
        seed = (10, 20)[k % 2]
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(seed), str(path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"saving", proc.stderr.read()[-2000:]
        time.sleep(float(rng.uniform(0.0, 2.5 * save_time)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = dl4j.load(path)                  # never a partial file
        match = [s for s, m in models.items() if m.params.tobytes() == loaded.params.tobytes()]
        assert len(match) == 1, "the file is neither the previous nor the new model"
        seen[match[0]] += 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("model.zip", "timing.zip")]
    # a kill may leave a temporary file (named .model.zip.*.tmp) beside it, never a broken target
    assert all(n.startswith(".model.zip.") and n.endswith(".tmp") for n in leftovers), leftovers
    record("files: saves killed by SIGKILL at random moments, target always complete", kills)
