"""Atomic file output: write to a temporary sibling, rename on success.

A killed or failed job therefore never leaves a half-written file under the final name, and a
rerun never mistakes one for a finished result. The temporary name is
``.{name}.{host}.{pid}.partial``, so leftovers can be traced to their writer:

- on an exception, the block's own ``finally`` removes it;
- on SIGTERM / SIGHUP (a cancelled job, ``scancel``, a stopping ``snakemake``), the handler
  installed by :func:`install_signal_cleanup` removes every temporary path this process still
  holds, then exits with 128 + signal;
- after a SIGKILL (nothing can run then), the next writer into the same folder removes the
  leftovers whose writer process, on this host, is dead (:func:`clean_stale_partials`). Files from
  other hosts (a shared filesystem under SLURM) are left alone: their PID means nothing here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError, ResourceError

log = logging.getLogger(__name__)

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.partial$")

FULL_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full
_live: set[Path] = set()  # temporary paths this process is writing now
_live_lock = threading.Lock()
_swept: set[Path] = set()  # folders already checked for stale leftovers by this process


def partial_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{_HOST}.{os.getpid()}.partial")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove ``*.partial`` leftovers in ``folder`` whose writer (on this host) is no longer running."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.partial"):
        m = _PARTIAL.match(p.name)
        if not m or m["host"] != _HOST or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        _remove(p)
        removed.append(p)
        log.warning("removed %s, left behind by process %s that was killed", p, m["pid"])
    return removed


def _sweep_once(folder: Path) -> None:
    # once per folder and process: a folder with thousands of outputs (the summary cache) is listed once
    folder = folder.resolve()
    if folder not in _swept:
        _swept.add(folder)
        clean_stale_partials(folder)


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC anywhere in the exception chain (h5py reports it only inside its message), or a
    failed write (torch's serializer names no errno) on a filesystem that is now full."""
    if not isinstance(exc, InputError) and isinstance(exc, (OSError, RuntimeError)) and "writ" in str(exc).lower():
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < FULL_BYTES:
                return True
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if (
            (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))
            or "No space left on device" in text
            or "errno = 28" in text
            or "Disk quota exceeded" in text
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _disk_full_error(final: Path, exc: BaseException) -> ResourceError:
    try:
        free = f"{shutil.disk_usage(final.parent).free / 2**20:.0f} MiB free now"
    except OSError:
        free = "free space unknown"
    return ResourceError(
        f"{final}: no space left on device while writing it ({free} on {final.parent}); "
        "free some space (or move results/ to a larger disk) and rerun: finished outputs are kept"
    )


@contextlib.contextmanager
def _temporary(final: Path, make: Callable[[Path], None], commit: Callable[[Path, Path], None]) -> Iterator[Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(final.parent)
    tmp = partial_name(final)
    _remove(tmp)
    with _live_lock:
        _live.add(tmp)
    try:
        make(tmp)
        yield tmp
        commit(tmp, final)
    except Exception as e:
        if not isinstance(e, ResourceError) and _is_disk_full(e, final.parent):  # not twice when nested
            raise _disk_full_error(final, e) from e
        raise
    finally:
        _remove(tmp)
        with _live_lock:
            _live.discard(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds."""
    with _temporary(Path(path), lambda tmp: None, os.replace) as tmp:
        yield tmp


def _replace_dir(tmp: Path, final: Path) -> None:
    # two renames, then the slow delete: the old folder is never half-deleted under its final name
    old = partial_name(final.with_name(final.name + ".old"))
    if final.exists():
        _remove(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _remove(old)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; it replaces ``path`` only if the block succeeds."""
    with _temporary(Path(path), lambda tmp: tmp.mkdir(), _replace_dir) as tmp:
        yield tmp


def remove_live_partials() -> None:
    """Delete every temporary path this process is writing (called on SIGTERM, before exiting)."""
    with _live_lock:
        paths = list(_live)
    for p in paths:
        _remove(p)


_installed_by: int | None = None


def _on_signal(signum, frame):
    if os.getpid() != _installed_by:
        # a forked child (a DataLoader worker) inherits the handler and the list of live paths,
        # which belong to its parent: it must die as usual and leave them alone
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    remove_live_partials()
    name = signal.Signals(signum).name
    print(f"histosynth: stopped by {name}; temporary files removed", file=sys.stderr)
    # SystemExit unwinds the stack, so open files are closed and `finally` blocks run
    raise SystemExit(128 + signum)


def install_signal_cleanup() -> None:
    """Make SIGTERM and SIGHUP remove this process's temporary files and exit (main thread only)."""
    global _installed_by
    _installed_by = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


# -- stopping when the snakemake that started us is gone ---------------------------------------


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a process from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces and ')'
    return int(fields[1]), fields[19]


def _is_snakemake(pid: int) -> bool:
    """A Python process running snakemake (``snakemake ...`` or ``python -m snakemake ...``).

    Requiring Python keeps a shell or terminal multiplexer that merely mentions snakemake in its
    command line (``tmux new -s snakemake``) out of the watched chain.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    exe = Path(argv[0]).name
    return ("python" in exe or exe == "snakemake") and any(Path(a).name == "snakemake" for a in argv)


def snakemake_ancestors() -> list[tuple[int, str]]:
    """(pid, start time) of the ancestors from our parent up to the outermost ``snakemake`` process.

    Under the local executor a script job runs several levels below the ``snakemake`` the user
    started (shell, job-step snakemake, shell), so a parent-death signal on the direct parent would
    not fire when the top one is killed. Without a snakemake ancestor, only the parent is watched.
    """
    chain, pid = [], os.getppid()
    while pid > 1:
        st = _proc_stat(pid)
        if st is None:
            break
        chain.append((pid, st[1], _is_snakemake(pid)))
        pid = st[0]
    outer = max((i for i, c in enumerate(chain) if c[2]), default=0)
    return [(p, start) for p, start, _ in chain[: outer + 1]]


def watch_parents(interval_s: float = 1.0, signum: int = signal.SIGTERM) -> threading.Thread | None:
    """Send ``signum`` to this process as soon as one of its snakemake ancestors has died.

    A killed ``snakemake`` otherwise leaves its jobs running as orphans, and a rerun with
    ``--rerun-incomplete`` would start a second writer beside them. Linux only (reads /proc);
    elsewhere only the direct parent is watched, through ``os.getppid()``.
    """
    if os.getppid() == 1 and not _is_snakemake(
        1
    ):  # orphaned before we looked (snakemake as a container's init is fine)

        def gone() -> bool:
            return True
    elif Path("/proc/self/stat").exists():
        watched = snakemake_ancestors()

        def gone() -> bool:
            return any((st := _proc_stat(pid)) is None or st[1] != start for pid, start in watched)
    else:
        parent = os.getppid()

        def gone() -> bool:
            return os.getppid() != parent

    def loop():
        while not gone():
            time.sleep(interval_s)
        print("histosynth: the snakemake that started this job has stopped; stopping too", file=sys.stderr)
        os.kill(os.getpid(), signum)

    t = threading.Thread(target=loop, name="histosynth-parent-watch", daemon=True)
    t.start()
    return t
