"""``histosynth.atomic`` under faults: killed writers, orphaned jobs, a full disk. Subprocesses are waited on
through files they write, never on timing. (The other modules' faults are tested beside them: damaged slides in
test_wsi / test_tiling, an unreachable LLM server in test_text_summarize, a failed job's message in
test_workflow_scripts_common.)"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from histosynth import atomic
from histosynth.atomic import atomic_dir, atomic_path, clean_stale_partials
from histosynth.errors import ResourceError
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120  # generous: the machine may be busy; a passing test never waits this long


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial"))


# A writer that holds a temporary file open until it is killed. It reports its own temporary
# path in ready.txt, so the test knows exactly what it must find (or not find) afterwards.
WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from histosynth.atomic import atomic_path, install_signal_cleanup
    install_signal_cleanup()
    with atomic_path({out!r}) as tmp:
        tmp.write_bytes(b"x" * 100000)
        open({ready!r}, "w").write(str(tmp))
        while True:
            time.sleep(0.05)
""")


def start_writer(tmp_path: Path, name: str = "out.bin") -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / f"{name}.ready"
    code = WRITER.format(repo=str(REPO), out=str(tmp_path / name), ready=str(ready))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: ready.exists() and ready.read_text() or proc.poll() is not None, "the writer to start")
    assert proc.poll() is None, proc.stderr.read()
    tmp = Path(ready.read_text())
    assert tmp.exists() and tmp.name.endswith(f".{proc.pid}.partial")
    return proc, tmp


def test_sigterm_removes_the_temporary_file(tmp_path):
    proc, tmp = start_writer(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WAIT_S) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM; temporary files removed" in proc.stderr.read()
    assert not tmp.exists() and not (tmp_path / "out.bin").exists()


def test_stale_partial_of_a_killed_writer_is_removed_by_the_next_writer(tmp_path):
    proc, tmp = start_writer(tmp_path)
    proc.kill()  # SIGKILL: nothing runs, the temporary file stays
    proc.wait(timeout=WAIT_S)
    assert tmp.exists()
    # another process's live temporary file in the same folder must survive the sweep
    live, live_tmp = start_writer(tmp_path, "other.bin")
    try:
        atomic._swept.clear()
        with atomic_path(tmp_path / "out.bin") as t:
            t.write_text("done")
        assert not tmp.exists() and live_tmp.exists()
        assert (tmp_path / "out.bin").read_text() == "done"
    finally:
        live.kill()
        live.wait(timeout=WAIT_S)


def test_clean_stale_partials_spares_other_hosts_and_odd_names(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    ours = tmp_path / f".a.h5.{atomic._HOST}.{pid}.partial"
    other_host = tmp_path / f".a.h5.some-other-node.{pid}.partial"
    odd = tmp_path / ".notes.partial"
    folder = tmp_path / f".model.{atomic._HOST}.{pid}.partial"
    for p in (ours, other_host, odd):
        p.write_text("x")
    folder.mkdir()
    (folder / "weights.bin").write_text("x")
    assert sorted(clean_stale_partials(tmp_path)) == sorted([ours, folder])
    assert other_host.exists() and odd.exists()


def test_atomic_dir_cleans_up_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as d:
            (d / "w.bin").write_text("half")
            raise RuntimeError("boom")
    assert not partials(tmp_path) and not (tmp_path / "model").exists()


# A job as snakemake runs it: a parent (standing in for snakemake) starts a child that watches
# its ancestors. Killing the parent with SIGKILL must stop the orphaned child, which removes
# its temporary file on the way out.
ORPHAN_PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {child!r}])
    open({child_pid!r}, "w").write(str(child.pid))
    while True:
        time.sleep(0.05)
""")
ORPHAN_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from histosynth.atomic import atomic_path, install_signal_cleanup, watch_parents
    install_signal_cleanup()
    watch_parents(interval_s=0.1)
    with atomic_path({out!r}) as tmp:
        tmp.write_text("partial")
        open({ready!r}, "w").write(str(tmp))
        while True:
            time.sleep(0.05)
""")


def test_job_stops_when_its_parent_is_killed(tmp_path):
    ready, child_pid = tmp_path / "ready", tmp_path / "child.pid"
    child = ORPHAN_CHILD.format(repo=str(REPO), out=str(tmp_path / "out.bin"), ready=str(ready))
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_PARENT.format(child=child, child_pid=str(child_pid))])
    _kill_and_expect_the_job_to_stop(parent, ready, child_pid, tmp_path)


def test_job_stops_when_snakemake_two_levels_up_is_killed(tmp_path):
    """As under the local executor: snakemake -> shell -> job. The middle process survives."""
    ready, child_pid = tmp_path / "ready", tmp_path / "child.pid"
    child = ORPHAN_CHILD.format(repo=str(REPO), out=str(tmp_path / "out.bin"), ready=str(ready))
    middle = ORPHAN_PARENT.format(child=child, child_pid=str(child_pid))
    top = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {middle!r}])\nwhile True: time.sleep(0.05)\n"
    # the trailing argument makes the top process look like `python ... snakemake` to the watcher
    snakemake = subprocess.Popen([sys.executable, "-c", top, "snakemake"], start_new_session=True)
    try:
        _kill_and_expect_the_job_to_stop(snakemake, ready, child_pid, tmp_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(snakemake.pid, signal.SIGKILL)  # the middle process, which nothing else stops


def _kill_and_expect_the_job_to_stop(ancestor, ready, child_pid, tmp_path):
    try:
        wait_for(lambda: ready.exists() and ready.read_text(), "the child's temporary file")
        tmp = Path(ready.read_text())
        pid = int(child_pid.read_text())
        assert tmp.exists()
        ancestor.kill()
        ancestor.wait(timeout=WAIT_S)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), "the orphaned child to stop")
        assert not tmp.exists() and not (tmp_path / "out.bin").exists()
    finally:
        if ancestor.poll() is None:
            ancestor.kill()


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rindex(")") + 2]


# -- a full disk ----------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full (always ENOSPC) is Linux-only")
def test_real_enospc_names_the_output_file(tmp_path):
    out = tmp_path / "summaries.tsv"
    with pytest.raises(ResourceError, match=rf"{out}: no space left on device") as info:
        with atomic_path(out) as tmp:
            tmp.write_text("start")
            with open("/dev/full", "w") as full:  # the kernel answers every write with ENOSPC
                full.write("x" * 100000)
                full.flush()
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert not out.exists() and not partials(tmp_path)


def test_h5py_disk_full_is_one_clear_error(tmp_path, monkeypatch):
    import h5py

    out = tmp_path / "slide.h5"
    spec = PatchFileSpec(patch_size=8, label_names=["a"])
    batch = PatchBatch(
        np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 2)), np.zeros(2), ["s"] * 2, ["c"] * 2, np.ones(2)
    )

    def full(self, *a, **k):  # what h5py raises when HDF5's write() gets ENOSPC
        raise OSError(
            "Can't write data (file write failed: time = Sun Nov 22 22:00:00 2026, filename = "
            f"'{out}', file descriptor = 5, errno = 28, error message = 'No space left on device', "
            "buf = 0x1, total write size = 192, bytes this sub-write = 192, bytes actually written = "
            "18446744073709551615, offset = 0)"
        )

    with PatchWriter(out, spec) as w:
        w.append(batch)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(ResourceError, match=rf"^{out}: no space left on device") as info:
        with PatchWriter(out, spec) as w:
            w.append(batch)
    assert "\n" not in str(info.value)
    assert out.exists() and not partials(tmp_path)  # the earlier, complete file is kept


def test_torch_style_write_failure_on_a_full_disk(tmp_path, monkeypatch):
    """torch.save's error names no errno; a failed write on a full filesystem is still reported as such."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 4096))
    with pytest.raises(ResourceError, match="no space left on device"):
        with atomic_dir(tmp_path / "checkpoint") as d:
            (d / "x").write_text("x")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: file write failed")
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors are left alone
        with atomic_path(tmp_path / "y"):
            raise RuntimeError("unrelated")


def test_atomic_dir_replaces_an_old_folder(tmp_path):
    with atomic_dir(tmp_path / "model") as d:
        (d / "v").write_text("1")
    with atomic_dir(tmp_path / "model") as d:
        (d / "v").write_text("2")
    assert (tmp_path / "model" / "v").read_text() == "2" and not partials(tmp_path)


FORKING_WRITER = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {repo!r})
    from histosynth.atomic import atomic_path, install_signal_cleanup
    install_signal_cleanup()
    with atomic_path({out!r}) as tmp:
        tmp.write_text("partial")
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # a worker, as a DataLoader forks them: it inherits the handler
            os.write(w, b"up")  # only now: a signal that arrives during the fork itself is dropped by Python
            while True:
                time.sleep(0.05)
        os.read(r, 2)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        open({ready!r}, "w").write(f"{{os.WTERMSIG(status)}} {{tmp.exists()}}")
""")


def test_a_forked_worker_killed_by_sigterm_leaves_its_parents_files_alone(tmp_path):
    ready = tmp_path / "ready"
    code = FORKING_WRITER.format(repo=str(REPO), out=str(tmp_path / "out.bin"), ready=str(ready))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S)
    assert res.returncode == 0, res.stderr
    assert ready.read_text() == f"{int(signal.SIGTERM)} True"  # the worker died of SIGTERM; the parent's file survived
    assert (tmp_path / "out.bin").read_text() == "partial"
