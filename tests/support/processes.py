"""Finding the processes a test's stack started, from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> dict[int, str]:
    """{pid: command name} of the processes whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if int(rest[1]) == pid:
                found[int(entry.name)] = name
    return found


def processes_mentioning(marker: str, program: bytes = b"") -> list[int]:
    """Processes whose command line holds `marker` (a temp dir, say), and whose program ends with `program`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(program) and any(marker.encode() in a for a in argv):
                pids.append(int(entry.name))
    return pids


def ray_processes_of(driver_pid: int) -> list[str]:
    """Processes of the Ray sessions a driver started (Ray names each session dir ..._<driver pid>)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"_{driver_pid}/" in cmdline or cmdline.rstrip().endswith(f"_{driver_pid}"):
                found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of the processes under `pid`, at any depth."""
    found, parents = {}, [pid]
    while parents:
        below = children(parents.pop())
        found.update(below)
        parents.extend(below)
    return found


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), None if it is gone: with the pid, one process."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])
