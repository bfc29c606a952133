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
