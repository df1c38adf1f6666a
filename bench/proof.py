"""What proof of restorability costs, side by side with its baselines in one run.

1. The digest manifest on a full: `offsite.run.manifest.write_manifest` over the staged tree against
   the plain `duplicity full` of the same tree (goal: manifest ≤ 3% of the full).
2. Verify throughput: `offsite verify --local` (restore on a fresh throwaway cache + compare with
   the manifest) against a plain `duplicity restore` of the same set on a fresh cache
   (goal: ≤ 1.1×).

Everything runs here against a `file://` target, symmetric gpg, no broker. Prints medians of
`--repeat` runs (≥ 3) with min and max; asserts nothing.

    .venv/bin/python -m bench.proof [--size-mb 200] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Callable

import yaml

from offsite.config.model import load_config
from offsite.run.manifest import write_manifest

VENV_BIN = Path(sys.executable).parent
PASSPHRASE = "bench-passphrase-not-a-secret"
MB = 1_000_000


def generate(root: Path, total: int, seed: int = 7) -> None:
    """Half random bytes, half text, in files of 64 KB to 4 MB, 20 to a folder."""
    rng = random.Random(seed)
    words = [("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9))))
             for _ in range(2000)]
    written, index = 0, 0
    while written < total:
        size = min(rng.randint(64_000, 4_000_000), total - written)
        folder = root / f"d{index // 20:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if index % 2:
            data = os.urandom(size)
        else:
            text = " ".join(rng.choice(words) for _ in range(size // 5 + 1)).encode()
            data = text[:size]
        (folder / f"f{index:04d}.bin").write_bytes(data)
        written, index = written + size, index + 1


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({result.returncode}):\n"
                         f"{result.stderr[-2000:]}\n{result.stdout[-2000:]}")


def figures(values: list[float]) -> str:
    return f"{median(values):7.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-proof-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "DUPLICITY_AWS_", "OFFSITE_"))}
    env.update(PASSPHRASE=PASSPHRASE, HOME=str(work / "home"))
    os.environ.update(PASSPHRASE=PASSPHRASE)
    (work / "home").mkdir()
    try:
        staging = work / "staging" / "h"
        generate(staging / "data", args.size_mb * MB)
        config_path = work / "offsite.yaml"
        config_path.write_text(yaml.safe_dump({
            "broker_url": "redis://127.0.0.1:1/0", "staging_root": str(work / "staging"),
            "cache_root": str(work / "cache"),
            "target": {"url": f"file://{work}/target"},
            "hosts": {"h": {"scripts": {"data": {"bash": "true"}}}}}))
        config = load_config(config_path)
        duplicity = str(VENV_BIN / "duplicity")
        manifest_s, full_s = [], []
        for attempt in range(args.repeat):
            shutil.rmtree(work / "target", ignore_errors=True)
            shutil.rmtree(work / "cache", ignore_errors=True)
            manifest_s.append(timed(lambda: write_manifest(staging)))
            full_s.append(timed(lambda: run(
                [duplicity, "full", "--archive-dir", str(work / "cache"), "--name", "h",
                 "--volsize", "200", str(staging), f"file://{work}/target/h"], env)))
        from offsite.proof.verify import verify_local
        verify_s, restore_s = [], []
        for attempt in range(args.repeat):
            plain = work / f"plain-{attempt}"
            restore_s.append(timed(lambda: run(
                [duplicity, "restore", "--archive-dir", str(work / f"fresh-{attempt}"),
                 "--name", "h", f"file://{work}/target/h", str(plain)], env)))
            shutil.rmtree(plain)
            shutil.rmtree(work / f"fresh-{attempt}")
            record = None

            def verify() -> None:
                nonlocal record
                record = verify_local(config, "h", None)
            verify_s.append(timed(verify))
            assert record is not None and record.state == "succeeded", record
        print(f"tree: {args.size_mb} MB, half random, half text; repeat {args.repeat}")
        print(f"manifest (SHA-256 of every file)  {figures(manifest_s)}")
        print(f"plain duplicity full              {figures(full_s)}")
        print(f"  manifest / full: {median(manifest_s) / median(full_s):.1%} (goal ≤ 3%)")
        print(f"offsite verify --local            {figures(verify_s)}")
        print(f"plain duplicity restore           {figures(restore_s)}")
        print(f"  verify / restore: {median(verify_s) / median(restore_s):.2f}x (goal ≤ 1.1x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
