"""Reading /proc for tests: a process's peak memory, the processes whose argv holds a marker,
a process's descendants and whether duplicity is uploading under a worker."""
from __future__ import annotations

from pathlib import Path


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (the resident set's high-water mark) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")


def live_pids_with(marker: str) -> list[int]:
    """Live (not zombie) processes with `marker` as one of their arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker in argv_of(int(entry.name)) and \
                not is_zombie(int(entry.name)):
            found.append(int(entry.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (part.decode(errors="replace").partition("=") for part in raw.split(b"\0") if part)
    return {name: value for name, _, value in pairs}


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def duplicity_uploading(worker_pid: int) -> bool:
    """duplicity's full upload is running under the worker (not only recorded as started)."""
    for pid in descendants(worker_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"duplicity") for arg in argv[:2]) and b"full" in argv:
            return True
    return False
