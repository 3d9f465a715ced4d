"""Run claims: concurrent sweeps on one results folder (or on several machines sharing it) split the work.

Before executing a run, a sweep creates ``.<run id>.claim`` next to the run's JSON with ``O_CREAT | O_EXCL`` (atomic,
also on NFS v3+), holding its host, pid and the process's start time. Another sweep that finds the claim skips the
run while the holder lives; a claim left by a dead process on this host (kill -9, power loss) is taken over.
Claims from other hosts cannot be checked and are honoured until deleted.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


def claim_path(run_json: Path) -> Path:
    run_json = Path(run_json)
    return run_json.with_name(f".{run_json.stem}.claim")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()), "since": time.time()}


def holder_alive(info: dict) -> bool:
    """True unless the claim's holder is known to be gone (only checkable for a process on this host)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = _start_time(pid)
    if Path("/proc").is_dir() and start is None:
        return False  # gone, or a zombie
    return info.get("start") is None or start is None or start == info["start"]


def read_claim(path: Path) -> dict | None:
    try:
        info = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written or foreign: treated as a dead holder
    return info if isinstance(info, dict) else {}


def _create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(_me(), f)
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(run_json: Path) -> tuple[bool, dict | None]:
    """(True, None) when this process now holds the run; (False, holder) when a live process does."""
    path = claim_path(run_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        if _create(path):
            return True, None
        info = read_claim(path)
        if info is None:
            continue  # released meanwhile: try again
        if info == {} and time.time() - _mtime(path) < 60:
            return False, {"note": "a claim being written"}  # created a moment ago, not yet filled in
        if info and holder_alive(info):
            return False, info
        # stale: one sweep at a time takes it over (the guard is itself an O_EXCL file)
        guard = path.with_name(path.name + ".takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            if time.time() - _mtime(guard) < 60:
                return False, {"host": "?", "pid": "?", "note": "being taken over by another sweep"}
            guard.unlink(missing_ok=True)  # a takeover that died midway
            continue
        try:
            now = read_claim(path)
            if now is None or now == info:  # still the same stale claim
                path.unlink(missing_ok=True)
                if _create(path):
                    return True, None
        finally:
            guard.unlink(missing_ok=True)
    info = read_claim(path) or {}
    return False, info


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def release(run_json: Path) -> None:
    path = claim_path(run_json)
    info = read_claim(path)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def describe(info: dict | None, age: bool = True) -> str:
    info = info or {}
    since = info.get("since")
    age = f", for {time.time() - since:.0f} s" if age and isinstance(since, (int, float)) else ""
    return f"claimed by {info.get('host', '?')} pid {info.get('pid', '?')}{age}"


def for_run(spec, path: Path, busy: list, retry_failed: bool, say=None) -> bool:
    """Claim run ``spec`` (its JSON at ``path``) for this sweep: True when it is ours to execute (release it after).
    A run another live sweep holds is appended to ``busy`` as (spec, holder) and reported through ``say``; one that
    another sweep finished meanwhile is released at once."""
    from peftzoo.bench import store
    got, holder = acquire(path)
    if not got:
        busy.append((spec, holder))
        if say is not None:
            say(f"{spec.label}: {describe(holder)}; left to it")
        return False
    if store.is_finished(path, retry_failed):
        release(path)
        return False
    return True
