"""Zip entries read with bounded memory, and saves that replace a file atomically."""

import os
import secrets
import stat
import zipfile


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _save_target(path):
    """``(file to replace, its permission bits or None)`` for a save to ``path``: the path
    itself, or the regular file its symbolic links lead to (the links stay). Anything else
    there (a directory, FIFO, device, socket, a link to nothing) is refused with ValueError:
    replacing it by a regular file would destroy it (as root, a save to /dev/null would)."""
    target = os.path.realpath(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ValueError(f"save: {path!r} is a symbolic link to a missing file "
                             f"({target!r}); refusing to write through it") from None
        return target, None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)),
                    "not a regular file")
        raise ValueError(f"save: {path!r} is {kind}; only a regular file is replaced")
    return target, stat.S_IMODE(info.st_mode) & 0o777


def _create_temporary(directory, base):
    """An exclusive new file next to the target, created with mode 0o666 so that the process's
    umask applies (tempfile.mkstemp's fixed 0o600 made every save private)."""
    for _ in range(100):
        name = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                           0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"save: no free temporary name in {directory!r}")


def _atomic_write(path, writer):
    """Write through ``writer(file)`` to a temporary file next to the target and rename it
    over the target: a save interrupted at any moment leaves the previous file or the new one,
    complete. The new file keeps the replaced file's permission bits (else the umask's)."""
    path = os.fsdecode(os.fspath(path))
    target, mode = _save_target(path)
    fd, tmp = _create_temporary(os.path.dirname(target), os.path.basename(target))
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(tmp, mode)
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_MAX_JSON_BYTES = 64 << 20  # configuration.json larger than this is refused (zip bombs)


def _read_entry(zf, name, limit, where):
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{where}: not a DL4J model: no {name} in the zip") from None
    if info.file_size > limit:
        raise ValueError(f"{where}: {name} is {info.file_size} bytes (more than {limit})")
    with zf.open(info) as f:
        # never more than the entry declares (+1 to notice one that lies): bounded memory
        raw = f.read(min(limit, info.file_size) + 1)
    if len(raw) > limit:
        raise ValueError(f"{where}: {name} is larger than {limit} bytes")
    return raw


def _open_zip(path, where):
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"{where}: not a DL4J model zip ({e})") from None


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
               RuntimeError)
