"""tests/data: the DL4J files are all there (in a clone, in the sdist, next to the installed
package's tests) and tests/data/README.md says where each one came from."""
from testdata import DATA_DIR, DL4J_FILES, data_file


def test_every_dl4j_file_is_present_and_not_empty():
    for name in DL4J_FILES:
        assert data_file(name).stat().st_size > 0, name


def test_the_readme_names_every_file_and_nothing_else_is_there():
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    assert "Apache-2.0" in readme
    for name in DL4J_FILES:
        assert f"`{name}`" in readme, f"tests/data/README.md does not describe {name}"
    present = {p.name for p in DATA_DIR.iterdir()} - {"README.md"}
    assert present == set(DL4J_FILES), sorted(present ^ set(DL4J_FILES))
