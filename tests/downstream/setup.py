"""Build script of the downstream example (docs/c-api.md), against the installed lstmfast:

    python setup.py build_ext --inplace

lstmfast.get_include() is all that is needed to `cimport lstmfast.kernels`; NumPy's include
directory is there for extensions that also `cimport numpy` (this one does not need it).
No -march=native or other machine-specific flag: keep the result as portable as lstmfast's wheel.
"""
import lstmfast
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extension = Extension(
    "lstm_downstream",
    ["lstm_downstream.pyx"],
    include_dirs=[lstmfast.get_include(), numpy.get_include()],
)

setup(
    name="lstm-downstream",
    ext_modules=cythonize([extension], include_path=[lstmfast.get_include()],
                          language_level=3),
)
