"""Writing a file so that nothing is half-written, lost or mixed with another writer's.

Every output of the package goes through `atomic_open` / `write_text`: the bytes go to a temporary
file with a unique name in the target's folder, are flushed to disk, and only then renamed over the
target (a rename within one folder is atomic). A crash or an error mid-write leaves the old file (or
none) and removes the temporary one; two processes writing the same path each rename their own
complete file, so the target is always one writer's whole output, never a mix.

A folder that must survive a kill at any instant (a training checkpoint) is written the same way,
whole: `new_folder` makes a uniquely named temporary folder beside it, the caller writes its files
and its `marker` file last, and `commit_folder` flushes them and swaps the folder in by renames that
keep the previous one as `<name>.old` until the new one is in place. `find_folder` returns whichever
complete one exists. `lock` is an exclusive-create lock file for writers that must not overlap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A file object for `path` whose content appears at `path` only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Folders that survive a kill at any instant


def _fsync_folder(path: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """Flush every file under `path`, then its folders, to disk."""
    path = Path(path)
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for d in sorted((d for d in path.rglob("*") if d.is_dir()), reverse=True):
        _fsync_folder(d)
    _fsync_folder(path)


def old_folder(path: str | Path) -> Path:
    """Where `commit_folder` keeps the previous folder while the new one moves in."""
    path = Path(path)
    return path.with_name(path.name + ".old")


def new_folder(path: str | Path) -> Path:
    """A new empty folder, uniquely named, beside `path`; earlier ones left by a kill are removed.
    Only one writer may write `path` (a training run's main process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))


def remove_folder(path: str | Path, marker: str) -> None:
    """Delete a folder, its marker first, so that a deletion cut short never leaves a folder that
    looks complete."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / marker)
    shutil.rmtree(path, ignore_errors=True)


def commit_folder(tmp: str | Path, path: str | Path, marker: str) -> Path:
    """Move the complete folder `tmp` (its `marker` written last) to `path`. At every instant a
    complete folder exists at `path` or at `old_folder(path)`: the current one is renamed to the
    latter before `tmp` takes its name, and removed only after."""
    tmp, path, old = Path(tmp), Path(path), old_folder(path)
    if not (tmp / marker).is_file():
        raise ValueError(f"{tmp} has no {marker}: not a complete folder")
    fsync_tree(tmp)
    if path.exists():
        if old.exists():  # left by an earlier kill; `path` is complete, so this one is not needed
            remove_folder(old, marker)
        os.rename(path, old)
    os.rename(tmp, path)
    _fsync_folder(path.parent)
    if old.exists():
        remove_folder(old, marker)
    return path


def find_folder(path: str | Path, marker: str) -> Path | None:
    """The complete folder `commit_folder` left: `path`, else `old_folder(path)`, else None."""
    for candidate in (Path(path), old_folder(path)):
        if (candidate / marker).is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# A lock


@contextlib.contextmanager
def lock(path: str | Path, what: str) -> Iterator[Path]:
    """Hold the lock file `path` (created exclusively, so one holder at a time) for the block.
    `what` names the work in the message another writer gets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        holder = path.read_text().strip() if path.is_file() else "?"
        raise FileExistsError(
            f"{path} exists: another process ({holder}) is {what}; if none is, a killed one left "
            f"the lock: delete {path} and run again"
        ) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"pid {os.getpid()}\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
