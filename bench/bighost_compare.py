"""A drill's compare at a file count, in a fresh process each time so its peak RSS is its own:
the streaming compare (offsite.proof.compare) against the one it replaced (a dict of every
manifest entry and a list of every restored entry), as the baseline.

`python -m bench.bighost_compare make ROOT FILES` builds a restored-like tree of FILES files of
2-8 KB (1,000 a folder) with its digest manifest; `python -m bench.bighost_compare run ROOT
new|before` compares it and prints `<seconds> <peak RSS KiB> <mismatches>`.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.services import status_kib
from offsite.ledger.run_record import VerifyRecord
from offsite.proof.compare import compare
from offsite.run.manifest import Entry, ManifestUnreadable, manifest_path, read_manifest, walk

PER_FOLDER = 1000


def make(root: Path, files: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    block = rng.randbytes(8192 * 4)
    for number in range(files):
        folder = root / f"d{number // PER_FOLDER:05}"
        if number % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(2048, 8192)
        start = rng.randrange(len(block) - size)
        (folder / f"f{number:07}").write_bytes(block[start:start + size])
    from offsite.run.manifest import write_manifest
    write_manifest(root)


def compare_before(restored: Path, outcome: VerifyRecord) -> None:
    """The compare offsite had before (offsite/proof/verify.py at 8120516): the baseline."""
    try:
        expected: dict[str, Entry] = {entry.path: entry
                                      for entry in read_manifest(manifest_path(restored))}
    except ManifestUnreadable as problem:
        outcome.add(f"manifest: {problem}")
        return
    entries = list(walk(restored))
    for entry in entries:
        if entry.kind == "file":
            outcome.files_checked += 1
            outcome.bytes_read += entry.size
    for found in entries:
        wanted = expected.pop(found.path, None)
        if wanted is None or wanted.kind != found.kind or (
                found.kind == "file" and (found.size != wanted.size
                                          or found.sha256 != wanted.sha256)):
            outcome.add(f"mismatch: {found.path}")
    for missing in sorted(expected):
        outcome.add(f"missing: {missing}")


def run(root: Path, how: str) -> None:
    outcome = VerifyRecord(backup_set="bench")
    started = time.monotonic()
    if how == "new":
        compare(root, outcome)
    else:
        compare_before(root, outcome)
    seconds = time.monotonic() - started
    # its own VmHWM, not getrusage's ru_maxrss, which Linux carries over exec from the forked
    # image: a compare started after the bench made 500,000 files read the bench's 301 MiB
    peak_kib = status_kib("self", "VmHWM")
    if peak_kib is None:
        raise RuntimeError("no VmHWM in /proc/self/status")
    print(f"{seconds:.3f} {peak_kib} {outcome.mismatch_count}")


def measure(root: Path, how: str) -> tuple[float, int, int]:
    """One compare in a child process: (seconds, peak RSS KiB, mismatches)."""
    out = subprocess.run([sys.executable, "-m", "bench.bighost_compare", "run", str(root), how],
                         check=True, capture_output=True, text=True, env=dict(os.environ),
                         cwd=Path(__file__).resolve().parent.parent).stdout
    match = re.fullmatch(r"(\S+) (\d+) (\d+)\s*", out)
    if match is None:
        raise RuntimeError(f"unexpected output of the compare: {out!r}")
    return float(match[1]), int(match[2]), int(match[3])


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        run(Path(sys.argv[2]), sys.argv[3])
