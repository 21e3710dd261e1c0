"""``python -m lstmfast info``: what lstmfast runs on."""

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys

__all__ = ["collect", "run"]


def _version_of(name):
    """The installed version of a distribution, without importing it (None: not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _blas_from_threadpoolctl():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    rows = []
    for entry in threadpool_info():
        if entry.get("user_api") != "blas":
            continue
        path = entry.get("filepath") or ""
        parts = os.path.normpath(path).split(os.sep)
        if any(p in ("scipy", "scipy.libs") for p in parts):
            owner = "SciPy"
        elif any(p in ("numpy", "numpy.libs") for p in parts):
            owner = "NumPy"
        else:
            owner = "shared"
        rows.append(dict(owner=owner, library=entry.get("internal_api"), version=entry.get("version"),
                         threads=entry.get("num_threads"), threading=entry.get("threading_layer"),
                         architecture=entry.get("architecture"), path=path))
    return rows


def _blas_from_scipy_config():
    import scipy
    try:
        config = scipy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:
        return None


def collect():
    """A dict of what ``info`` prints."""
    import numpy
    import scipy
    import scipy.linalg  # loads SciPy's BLAS, so that threadpoolctl sees it

    import lstmfast
    from lstmfast import _blas_threads, kernels

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    # not imported here (importing torch takes seconds): whether the pieces are there
    if importlib.util.find_spec("lstmfast.torch") is None:
        torch_module = "not in this build"
    elif importlib.util.find_spec("torch") is None:
        torch_module = "needs PyTorch (pip install torch)"
    else:
        torch_module = "available (import lstmfast.torch)"
    return dict(
        version=lstmfast.__version__,
        location=os.path.dirname(os.path.abspath(lstmfast.__file__)),
        python=platform.python_version(),
        numpy=numpy.__version__,
        scipy=scipy.__version__,
        machine=platform.machine(),
        cpus=affinity,
        dtypes=["float32", "float64"],
        simd=kernels.simd_variant(),
        isa_levels=list(kernels.isa_levels()),
        lstmfast_threads=kernels.get_num_threads(),
        blas_held=[(lib.owner, lib.path) for lib in _blas_threads.libraries(refresh=True)],
        blas=_blas_from_threadpoolctl(),
        blas_build=_blas_from_scipy_config(),
        thread_env={k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                    if k in os.environ},
        optional={name: _version_of(name) for name in ("threadpoolctl", "tqdm", "matplotlib", "torch")},
        torch_module=torch_module,
    )


def run(out=None):
    out = sys.stdout if out is None else out
    info = collect()

    def say(label, text):
        print(f"{label + ':' if label else '':<16}{text}", file=out)

    say("lstmfast", f"{info['version']}  ({info['location']})")
    say("python", f"{info['python']}, numpy {info['numpy']}, scipy {info['scipy']}")
    say("cpu", f"{info['machine']}, {info['cpus']} usable cores")
    say("dtypes", ", ".join(info["dtypes"]) + " (every layer and kernel, chosen by the weights' dtype)")
    names = {"avx512": "AVX-512", "avx2+fma": "AVX2+FMA"}
    if info["simd"] in names:
        fast = (f"active ({info['simd']}): vectorised exp/tanh/sigmoid, fused cells, recurrent "
                f"GEMMs on packed weights, {names[info['simd']]} code chosen at run time")
    else:
        fast = "not active (portable): baseline x86-64 code, BLAS for every product"
    limit = os.environ.get("LSTMFAST_ISA", "")
    if os.environ.get("LSTMFAST_DISABLE_AVX2", "") not in ("", "0"):
        fast += "; lowered by LSTMFAST_DISABLE_AVX2"
    elif limit:
        fast += f"; LSTMFAST_ISA={limit}"
    fast += f" (this CPU: {', '.join(info['isa_levels'])})"
    say("fast path", fast)
    say("threads", f"{info['lstmfast_threads']} for each pass's time loop (lstmfast.set_num_threads, "
                   "LSTMFAST_NUM_THREADS)")
    copies = ", ".join(f"{owner} ({os.path.basename(path)})" for owner, path in info["blas_held"])
    say("BLAS hold", "every loaded OpenBLAS copy at one thread during passes and network calls: "
                     + (copies or "none found"))
    if info["blas"] is None:
        build = info["blas_build"] or "unknown"
        env = ", ".join(f"{k}={v}" for k, v in info["thread_env"].items()) or "no thread variables set"
        say("BLAS", f"{build} (SciPy's build configuration); threads unknown without threadpoolctl "
                    f"(pip install threadpoolctl); {env}")
    elif not info["blas"]:
        say("BLAS", "threadpoolctl found no BLAS library loaded")
    else:
        for row in sorted(info["blas"], key=lambda r: r["owner"] != "SciPy"):
            used = {"SciPy": " (the LSTM kernels)", "NumPy": " (dense and output layers)",
                    "shared": ""}[row["owner"]]
            details = ", ".join(str(v) for v in (row["version"], row["threading"], row["architecture"]) if v)
            say(f"BLAS ({row['owner']})", f"{row['library']} {details}; {row['threads']} threads{used}")
            say("", row["path"])
    optional = ", ".join(f"{k} {v}" if v else f"{k} -" for k, v in info["optional"].items())
    say("optional", optional)
    say("lstmfast.torch", info["torch_module"])
    return 0
