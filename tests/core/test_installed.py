"""The tests exercise the installed package (a missing package_data entry or a broken
MANIFEST.in shows up as a failure), not the source tree."""
import os
from pathlib import Path

import pytest

import lstmfast

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("LSTMFAST_ALLOW_SOURCE_TREE") == "1",
                    reason="development run against an in-place build (LSTMFAST_ALLOW_SOURCE_TREE=1)")
def test_lstmfast_is_imported_from_its_installed_location():
    location = Path(lstmfast.__file__).resolve().parent
    assert location != REPOSITORY / "lstmfast", (
        f"lstmfast was imported from the source tree ({location}); install it (pip install .) "
        f"and run `pytest tests` from outside the package directory's parent on sys.path")


def test_the_installed_package_ships_its_declarations():
    include = Path(lstmfast.get_include())
    for name in ("kernels.pxd", "_blas.pxd", "_blas_int.pxd"):
        assert (include / "lstmfast" / name).is_file(), name
    from lstmfast import kernels
    assert kernels.simd_variant() in ("avx512", "avx2+fma", "portable")
