"""Atomic writes: a failed write leaves the old file and no temporary; writers never mix."""

import os
import threading

import pytest

from mem1lite.files import atomic_open, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # the usual mode, not mkstemp's 0600


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    target = tmp_path / "same.json"
    texts = [f"writer {i}\n" * 20_000 for i in range(8)]
    barrier = threading.Barrier(len(texts))

    def write(text):
        barrier.wait()
        write_text(target, text)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts  # one writer's whole output, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["same.json"]


def test_binary_mode_and_new_folders(tmp_path):
    with atomic_open(tmp_path / "a" / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"


# ---------------------------------------------------------------------------------------------
# Write failures: one line naming the path and the cause (issue #32)


def test_a_refused_write_is_one_line_naming_the_target_not_the_temporary(tmp_path):
    import errno
    import resource

    from mem1lite.files import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*file/out.json: a part of the path is a file"):
        write_text(blocker / "out.json", "y")
    with pytest.raises(OutputError, match=r"cannot write .*: it is a directory; give a file path"):
        write_text(tmp_path, "y")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # Python ignores SIGXFSZ: the write gets EFBIG
    try:
        with pytest.raises(OutputError) as caught:
            write_text(tmp_path / "big.txt", "z" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    limit = "the file size limit is reached (ulimit -f)"
    assert str(caught.value) == f"cannot write {tmp_path / 'big.txt'}: {limit}"
    assert caught.value.__cause__.errno == errno.EFBIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temporary, no half file


def test_write_cause_reads_the_errno_through_libraries_and_lets_other_errors_pass(tmp_path):
    import errno

    from mem1lite.files import OutputError, write_cause, write_failure_line, writing

    assert write_cause(OSError(errno.ENOSPC, "No space left on device")) == "no space left on the device"
    rust = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert write_cause(rust) == "no space left on the device"  # safetensors' wording
    try:  # torch.save to a path: no errno, only a failed stream; the disk here has room
        try:
            raise RuntimeError("basic_ios::clear: iostream error")
        except RuntimeError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from inner
    except RuntimeError as exc:
        assert write_cause(exc, tmp_path) == "the write failed (is the disk full?)"
    assert write_cause(ValueError("a bad value")) is None
    with pytest.raises(ValueError):  # not a write failure: passes unchanged
        with writing(tmp_path / "x"):
            raise ValueError("a bad value")
    with pytest.raises(OutputError, match=r"cannot write .*ckpt: no space left on the device"):
        with writing(tmp_path / "ckpt"):
            raise rust
    # at the top, without a path of its own: the path the OS error names; a read's error not called a write
    full = OSError(errno.ENOSPC, "No space left on device", "/x/y.json")
    assert write_failure_line(full) == "cannot write /x/y.json: no space left on the device"
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/in.json")
    assert write_failure_line(missing) == "/x/in.json: No such file or directory"


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mem1lite.files import save_figure

    fig = plt.figure()
    target = tmp_path / "f.png"
    target.write_bytes(b"old")

    class Broken:  # a figure whose writing fails half-way (as a full disk does)
        def savefig(self, f, **kw):
            f.write(b"\x89PNG half")
            raise OSError(28, "No space left on device")

    from mem1lite.files import OutputError

    with pytest.raises(OutputError, match="no space left"):
        save_figure(Broken(), target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.png"]
    save_figure(fig, target)
    assert target.read_bytes().startswith(b"\x89PNG") and target.stat().st_size > 1000
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# One run per output


def test_a_second_holder_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(tmp_path):
    import subprocess
    import sys

    from mem1lite.files import Busy, lock, lock_path

    path = lock_path(tmp_path / "run")
    assert path == tmp_path / "run.lock"
    holder = subprocess.Popen(  # another process holds the lock until told to stop
        [sys.executable, "-c", "import sys; from mem1lite.files import lock\n"
         f"with lock({str(path)!r}, 'writing run'):\n print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy) as caught:
            with lock(path, "writing run"):
                pass
        message = str(caught.value)
        assert f"pid {holder.pid}, started " in message and "is writing run" in message
        assert len(message.splitlines()) == 1
    finally:
        holder.communicate("")
    assert not path.exists()  # the holder removed its lock at the end
    # a lock a killed run left (the file, no live holder): taken over, with a note naming it
    path.write_text('{"pid": 99999999, "started": "2025-01-01 00:00:00", "command": "mem1 sft"}\n')
    notes = []
    with lock(path, "writing run", note=notes.append):
        assert '"pid": ' + str(os.getpid()) in path.read_text()
    assert len(notes) == 1 and "pid 99999999, started 2025-01-01 00:00:00: mem1 sft" in notes[0]
    assert "no longer running" in notes[0] and not path.exists()


def test_a_device_is_written_in_place_never_replaced():
    """`--json /dev/null` is a sink; renaming a temporary over it would replace the device (as root)."""
    import stat

    from mem1lite.files import OutputError, check_output

    check_output("/dev/null")
    write_text("/dev/null", "into nothing\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    if os.path.exists("/dev/full"):
        with pytest.raises(OutputError, match="cannot write /dev/full: no space left on the device"):
            write_text("/dev/full", "x" * 100_000)
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
