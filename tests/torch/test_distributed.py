"""Data-parallel training with torch.distributed: two local processes (gloo, CPU, a
file store under tmp_path) train a small lstmfast.torch model in DistributedDataParallel; both
replicas must hold identical parameters, equal to single-process training on the combined batch.
The worker is tests/ddp_worker.py (also runnable with torchrun, see docs/distributed.md)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD_SIZE = 2
STEPS = 5


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not available")
def test_ddp_two_processes_equal_single_process(tmp_path):
    # the workers import the same lstmfast as this process (installed or the source tree)
    import lstmfast
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(lstmfast.__file__)), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    store = tmp_path / "store"
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(HERE, "ddp_worker.py"), "--rank", str(rank),
         "--world-size", str(WORLD_SIZE), "--init-method", f"file://{store}",
         "--steps", str(STEPS), "--out", str(tmp_path)],
        env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(WORLD_SIZE)]
    # (imported while the workers start: torch's DDP imports are slow; by file, since tests/ is
    # not on sys.path, see tests/conftest.py)
    spec = importlib.util.spec_from_file_location("ddp_worker", os.path.join(HERE, "ddp_worker.py"))
    ddp_worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ddp_worker)

    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out}"

    replicas = [np.load(tmp_path / f"rank{r}.npy") for r in range(WORLD_SIZE)]
    np.testing.assert_array_equal(replicas[0], replicas[1])

    # single process, whole batch, the initial parameters DDP broadcast (rank 0's)
    x, y = ddp_worker.make_data()
    single = ddp_worker.train(ddp_worker.build_model(seed=0), x, y, steps=STEPS)
    expected = ddp_worker.flat_parameters(single)
    initial = ddp_worker.flat_parameters(ddp_worker.build_model(seed=0))
    assert np.abs(expected - initial).max() > 1e-3          # training moved the parameters
    np.testing.assert_allclose(replicas[0], expected, rtol=1e-10, atol=1e-12)
