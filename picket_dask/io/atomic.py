"""Write-to-temporary-then-rename, so a failed write never leaves half an output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import PicketError


def remove(path: Path) -> None:
    """Delete a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ensure_dir(path: str | Path) -> Path:
    """Create the output folder ``path`` (and its parents) if needed; a folder that cannot be
    created or written to is a one-line PicketError naming it, not a traceback."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PicketError(path, f"cannot create the output folder ({exc.strerror or type(exc).__name__})",
                          "choose a writable output location (a folder that exists or can be created)") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PicketError(path, "output folder is not writable", "choose a writable output location or fix its permissions")
    return path


def ensure_parent(path: str | Path) -> Path:
    """``path`` after creating the folder it goes into (see ``ensure_dir``)."""
    path = Path(path)
    ensure_dir(path.parent if str(path.parent) else Path("."))
    return path


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse an existing output without ``overwrite`` and an output whose folder is not writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise PicketError(path, "output already exists", "pass --overwrite (overwrite=True) or choose another path")
    ensure_parent(path)


@contextmanager
def exclusive(lock_path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock (flock on the file ``lock_path``, made beside the output it guards) while
    writing ``what``: a second run on the same output (a batch job submitted twice) stops with one line
    naming the holder instead of interleaving its writes with the first's. The kernel drops the lock when
    its process ends, so a killed run leaves none held; the file is removed on release. Where flock is
    missing (not POSIX) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    import socket
    import time

    lock_path = Path(lock_path)
    ensure_dir(lock_path.parent)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise PicketError(what, f"is being written by another picket-dask run ({holder})",
                              "wait for it to finish, or give another --out") from None
        except OSError:  # a file system without locks (Lustre mounted without flock, some NFS): unguarded
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            yield
            return
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released and removed the file between our open and our lock: again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        yield
    finally:
        try:
            os.unlink(lock_path)
        finally:
            os.close(fd)  # closing drops the lock


@contextmanager
def removed_on_input_error(path: str | Path, only_if_empty: bool = False) -> Iterator[Path]:
    """Work in the folder ``path``; when a PicketError (bad input: NaN, a constant or too thin volume,
    found after the conversion has started) ends that work, delete the folder if this call is the one
    that created it, so bad input leaves nothing half-written; ``only_if_empty``: only when nothing is
    left in it (an output folder holding other tomograms' finished results). A folder that existed
    before (a resumed run, earlier outputs) is left as it was; other exceptions leave it for a resume."""
    path = Path(path)
    fresh = not path.exists()
    try:
        yield path
    except PicketError:
        if fresh and path.is_dir() and not (only_if_empty and any(path.iterdir())):
            remove(path)
        raise


@contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    check_writable(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    except OSError as exc:
        remove(tmp)
        if exc.filename and str(tmp) in str(exc.filename):  # name the user's path, not the temporary one
            raise PicketError(path, f"cannot be written ({exc.strerror or type(exc).__name__})",
                              "choose a writable output location with free space") from None
        raise
    except BaseException:
        remove(tmp)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
        os.replace(tmp, path)
        remove(old)
    else:
        os.replace(tmp, path)
