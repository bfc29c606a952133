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
complete one exists.

Two more duties, so that every command fails the same way:

- A write the operating system refuses (the disk full, a file size limit, a read-only folder, a
  path of the wrong type, a permission) becomes `OutputError`, one line naming the path and the
  cause (`write_cause`, `writing`); `mem1`'s `main` prints it. Figures go through `save_figure`,
  atomic like the rest (a full disk never leaves a 0-byte PNG where a report reads it).
- `lock` keeps one run per output: a second run is refused with one line naming the first (its
  pid, when it started, its command); a lock whose holder died (the kernel drops an `flock` with
  its process) is taken over with a note.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
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
    if path.exists() and not path.is_file() and not path.is_dir():  # /dev/null, a pipe: written in place
        with writing(path), open(path, mode, encoding=None if "b" in mode else encoding) as f:
            yield f  # (renaming a temporary over a device would replace the device itself)
        return
    with writing(path):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path):
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


def append_text(path: str | Path, text: str) -> None:
    """Append `text` to a log (`path` is one run's own, under its lock); a refused write is one line."""
    with writing(path), open(path, "a") as f:
        f.write(text)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure as a PNG atomically (a full disk leaves the old file, never 0 bytes)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Write failures: one line naming the path and the cause


class OutputError(Exception):
    """An output could not be written: one line naming the path and the cause."""


WRITE_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit is reached (ulimit -f)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (an immutable or protected folder?)",
    errno.EISDIR: "it is a directory; give a file path",
    errno.ENOTDIR: "a part of the path is a file, where a folder is needed",
    errno.EEXIST: "a part of the path is a file, where a folder is needed",  # mkdir over a file
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOENT: "its folder does not exist and cannot be made",
    errno.EIO: "an input/output error on the device",
}
"""the operating system's refusals of a write, each as the line says it"""
_ERRNO_IN_TEXT = re.compile(r"(?:os error|\[Errno|code:)\s*(\d+)")
"""how a library that wraps the OS error in its own (safetensors' Rust, pyarrow) still names it"""
_STREAM_FAILURES = ("PytorchStreamWriter", "inline_container.cc", "iostream error", "file write failed")
"""torch.save to a path drops the errno: its error says only that the stream failed"""


def _chain(exc: BaseException):
    seen = []
    while exc is not None and exc not in seen and len(seen) < 16:
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def write_errno(exc: BaseException) -> int | None:
    """The OS error number of a refused write somewhere in `exc`'s chain (None: not a write refusal)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in WRITE_CAUSES:
            return e.errno
        match = _ERRNO_IN_TEXT.search(str(e))
        if match and int(match.group(1)) in WRITE_CAUSES:
            return int(match.group(1))
    return None


def write_cause(exc: BaseException, path: str | Path | None = None) -> str | None:
    """Why a write failed, in words, or None when `exc` is no write failure. A stream error without
    an errno (torch) is explained by looking at `path`'s disk and this process's file size limit."""
    number = write_errno(exc)
    if number is not None:
        return WRITE_CAUSES[number]
    if not any(marker in str(e) for e in _chain(exc) for marker in _STREAM_FAILURES):
        return None
    if path is not None:
        folder = Path(path)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < 1 << 20:
                return WRITE_CAUSES[errno.ENOSPC]
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return WRITE_CAUSES[errno.EFBIG] + " (or the disk is full)"
    return "the write failed (is the disk full?)"


def check_output(path: str | Path, folder: bool = False) -> None:
    """Before any work: `path` can be written as a file (or, `folder`, as a folder): it is not of
    the other type, its nearest existing folder is a folder and takes a new file. Nothing is made."""
    path = Path(path)
    if path.exists() and folder != path.is_dir():
        raise OutputError(
            f"cannot write {path}: "
            + ("it is a file, where a folder is written" if folder else WRITE_CAUSES[errno.EISDIR])
        )
    if not folder and path.exists() and not path.is_file():  # a device or a pipe: written in place
        return
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {path}: {existing} is a file, where a folder is needed")
    with writing(path), tempfile.TemporaryFile(dir=existing, prefix=".mem1-write-check-"):
        pass


def _failed_path(exc: BaseException) -> str | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
    return None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a refused write inside the block into `OutputError` naming `path` (a folder written
    file by file is named itself) and the cause; any other error passes unchanged."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        cause = write_cause(exc, path)
        if cause is None:
            raise
        raise OutputError(f"cannot write {path}: {cause}") from exc


def write_failure_line(exc: BaseException) -> str | None:
    """The one line for a refused write that reached the top without a `writing` block (its path
    is the one the OS error names, if any); None when `exc` is no write failure. An error that a
    read gives as well (a missing file, a permission) is said without claiming it was a write."""
    cause = write_cause(exc, _failed_path(exc))
    if cause is None:
        return None
    where, number = _failed_path(exc), write_errno(exc)
    if number in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR):  # reads too
        return f"{where or 'a file'}: {os.strerror(number)}"
    return f"cannot write {where}: {cause}" if where else f"a write failed: {cause}"


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
    with writing(path):
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
    with writing(path):
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
# One run per output


class Busy(FileExistsError):
    """Another live run holds the output's lock (message is one line naming it)."""


def lock_path(output: str | Path) -> Path:
    """The lock of an output (a folder, replaced whole, or a file): `NAME.lock` beside it."""
    output = Path(output).resolve()
    return output.with_name(output.name + ".lock")


def _holder(text: str) -> str:
    """A lock's content in words: 'pid 12, started 2025-01-02 03:04:05: mem1 sft --out x'."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return text.strip()[:200] or "unknown"


@contextlib.contextmanager
def lock(path: str | Path, what: str, note=None) -> Iterator[Path]:
    """Hold the lock file `path` for the block: one holder at a time. The file is `flock`ed, so
    the lock dies with its process: a file left by a killed run is taken over, with a note (on
    stderr unless `note` is given). A live holder makes this raise `Busy`, naming the holder's pid,
    start time and command; `what` names the work ('writing runs/x')."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with writing(path):
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise Busy(
                f"another run ({holder}) is {what}; wait for it to end or choose another output "
                f"(its lock: {path})"
            ) from None
        try:  # the file we locked may have been removed by its last holder as we opened it
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        left = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if left.strip():
            (note or (lambda s: print(s, file=sys.stderr, flush=True)))(
                f"mem1: note: took over the lock {path} left by a run that is no longer running "
                f"({_holder(left)})"
            )
        record = {
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "?",
            "what": what,
        }
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def one_run(output: str | Path, what: str):
    """The lock of `output` for a run that writes it; a no-op on the non-main processes of a
    several-process run (`accelerate launch` sets RANK), whose main process holds it."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        return contextlib.nullcontext()
    return lock(lock_path(output), what)
