"""The error lstmfast raises when it is imported from a source tree whose compiled kernels are
not built (plain Python with no lstmfast import, so that it loads when nothing else does)."""
import os

__all__ = ["uncompiled_tree_error"]


def uncompiled_tree_error(init_file):
    """The ImportError for a source tree whose kernels are not compiled (``python -m lstmfast``
    or ``import lstmfast`` from the repository root finds the sources before the installed
    package), saying what to do instead of failing inside a submodule."""
    package = os.path.dirname(os.path.abspath(init_file))
    if not os.path.isfile(os.path.join(os.path.dirname(package), "pyx", "kernels.pyx")):
        return None
    return ImportError(
        f"lstmfast is being imported from its source tree ({package}), where the compiled "
        f"kernels (lstmfast.kernels) are not built. Install it with `pip install .` and then "
        f"either use the `lstmfast` command (e.g. `lstmfast demo`) or run Python from another "
        f"directory; `python -m lstmfast` and `import lstmfast` from the repository root find "
        f"these sources first. (To work in the tree itself: `python setup.py build_ext --inplace`.)",
        name="lstmfast", path=package)
