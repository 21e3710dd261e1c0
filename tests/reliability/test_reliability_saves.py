"""What a save does to what is already at its path.

A save writes a temporary file next to the target and renames it over the target (atomic:
tests/reliability/test_reliability_files.py kills saves at random moments). Before, the rename replaced
whatever was there: a symbolic link became a regular file (the file it pointed to kept the old
model), a FIFO or device node was replaced (as root, a save to /dev/null deleted it), and every
save got mode 0600 (tempfile.mkstemp's) whatever the umask or the replaced file's mode. Now a
symbolic link is followed to the regular file it leads to, which is replaced (the link stays);
anything that is not a regular file is refused; the new file keeps the replaced file's
permission bits, or gets 0666 less the umask.
"""
import os
import stat
import zipfile

import numpy as np
import pytest

import lstmfast
from lstmfast import dl4j
from lstmfast.dl4j import _files as dl4j_files


def _network(seed=0):
    return lstmfast.Sequential([lstmfast.LSTM(3, 4, seed=seed),
                                lstmfast.RnnOutputLayer(4, 2, seed=seed + 1)])


def _params_in(path):
    return dl4j.load(path).params.copy()


SAVES = {
    "dl4j.save": lambda path: dl4j.save(_network(), path),
    "dl4j.write_array": lambda path: dl4j.write_array(np.arange(6.0).reshape(2, 3), path),
}


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("save", list(SAVES))
def test_a_symbolic_link_is_followed_to_the_file_it_leads_to(tmp_path, save):
    real = tmp_path / "models" / "real.bin"
    real.parent.mkdir()
    real.write_bytes(b"old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    chain = tmp_path / "chain.bin"       # a link to the link
    chain.symlink_to(link)
    SAVES[save](chain)
    assert chain.is_symlink() and link.is_symlink()
    assert os.readlink(link) == str(real)
    assert real.read_bytes() != b"old" and real.stat().st_size > 10
    assert _mode(real) == 0o640
    # no temporary file left behind, in either directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.bin", "link.bin", "models"]
    assert [p.name for p in real.parent.iterdir()] == ["real.bin"]


def test_a_saved_model_reached_through_a_link_loads_back(tmp_path):
    real = tmp_path / "real.zip"
    dl4j.save(_network(0), real)
    link = tmp_path / "link.zip"
    link.symlink_to(real)
    net = _network(5)
    dl4j.save(net, link)
    assert link.is_symlink()
    np.testing.assert_array_equal(_params_in(real), net.params)


@pytest.mark.parametrize("save", list(SAVES))
def test_a_link_to_nothing_is_refused(tmp_path, save):
    link = tmp_path / "dangling.zip"
    link.symlink_to(tmp_path / "missing" / "model.zip")
    with pytest.raises(ValueError, match="symbolic link to a missing file"):
        SAVES[save](link)
    assert link.is_symlink() and not (tmp_path / "missing").exists()


def _special_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "directory"
    directory.mkdir()
    files = {"a FIFO": fifo, "a directory": directory}
    # a device node of our own (never /dev/null: a regression run as root would replace it)
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        files["a character device"] = device
    except (PermissionError, AttributeError):
        pass
    link = tmp_path / "link-to-fifo"
    link.symlink_to(fifo)
    files["a FIFO (through a link)"] = link
    return files


@pytest.mark.parametrize("save", list(SAVES))
def test_what_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, save):
    for kind, path in _special_files(tmp_path).items():
        before = os.lstat(path)
        with pytest.raises(ValueError, match=kind.split(" (")[0]):
            SAVES[save](path)
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino, after.st_rdev) == \
            (before.st_mode, before.st_ino, before.st_rdev), kind
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o664, 0o444, 0o755])
def test_a_replaced_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "model.zip"
    dl4j.save(_network(0), path)
    os.chmod(path, mode)
    net = _network(7)
    dl4j.save(net, path)
    assert _mode(path) == mode
    np.testing.assert_array_equal(_params_in(path), net.params)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        dl4j.save(_network(), tmp_path / "model.zip")
        dl4j.write_array(np.zeros(3), tmp_path / "array.bin")
        with open(tmp_path / "plain", "wb"):      # what open() gives, for comparison
            pass
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "model.zip") == 0o666 & ~umask
    assert _mode(tmp_path / "array.bin") == 0o666 & ~umask
    assert _mode(tmp_path / "plain") == 0o666 & ~umask


def test_saving_stays_atomic_when_the_writer_fails(tmp_path):
    path = tmp_path / "model.zip"
    dl4j.save(_network(0), path)
    os.chmod(path, 0o640)
    before = path.read_bytes()

    def writer(f):                       # fails half-way through writing
        f.write(b"half a model")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        dl4j_files._atomic_write(path, writer)
    assert path.read_bytes() == before and _mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
