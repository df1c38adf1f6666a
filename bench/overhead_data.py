"""The data the overhead benchmark backs up: a generated tree, half random and half text,
and the changes made to it between runs."""
from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from pathlib import Path

MB = 1_000_000



@dataclass(frozen=True)
class Tree:
    root: Path
    random_files: list[Path]
    text_files: list[Path]

    @property
    def files(self) -> list[Path]:
        return self.random_files + self.text_files

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


@dataclass(frozen=True)
class Change:
    paths: list[Path]
    bytes_changed: int


class TextSource:
    """Word-like text with a Zipf vocabulary: compresses about as well as logs or source."""

    def __init__(self, rng: random.Random, pool_bytes: int = 4 * 1024 * 1024) -> None:
        vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10)))
                 for _ in range(5000)]
        weights = [1 / (rank + 1) for rank in range(len(vocab))]
        words = rng.choices(vocab, weights=weights, k=pool_bytes // 5)
        lines = (" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
        pool = "\n".join(lines).encode()
        self.size = len(pool)
        self._doubled = pool + pool
        self._rng = rng

    def take(self, size: int) -> bytes:
        parts = []
        while size > 0:
            chunk = min(size, self.size)
            start = self._rng.randrange(self.size)
            parts.append(self._doubled[start:start + chunk])
            size -= chunk
        return b"".join(parts)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(max(low + 1, high)))))


def _sizes(rng: random.Random, budget: int, low: int, high: int) -> list[int]:
    sizes: list[int] = []
    while budget > 0:
        size = min(budget, _log_uniform(rng, low, high))
        sizes.append(size)
        budget -= size
    return sizes


def generate_tree(root: Path, total_bytes: int, rng: random.Random, text: TextSource) -> Tree:
    """Half random bytes (16 KB to 8 MB a file), half text (4 KB to 1 MB), 25 files a folder."""
    cap = max(64 * 1024, total_bytes // 20)
    kinds = ([("bin", size) for size in _sizes(rng, total_bytes // 2, 16_000, min(8 * MB, cap))]
             + [("txt", size) for size in _sizes(rng, total_bytes - total_bytes // 2, 4_000,
                                                 min(MB, cap, text.size))])
    rng.shuffle(kinds)
    random_files: list[Path] = []
    text_files: list[Path] = []
    for index, (kind, size) in enumerate(kinds):
        path = root / f"d{index // 25:03d}" / f"f{index:05d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "bin":
            path.write_bytes(rng.randbytes(size))
            random_files.append(path)
        else:
            path.write_bytes(text.take(size))
            text_files.append(path)
    return Tree(root, random_files, text_files)


def tiny_tree(root: Path, text: TextSource) -> Tree:
    path = root / "only.txt"
    root.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.take(1000))
    return Tree(root, [], [path])


def change_tree(tree: Tree, budget: int, rng: random.Random, text: TextSource) -> Change:
    """Rewrite whole random files with up to half the budget, append text with the rest."""
    changed: list[Path] = []
    rewritten = 0
    for path in rng.sample(tree.random_files, k=len(tree.random_files)):
        size = path.stat().st_size
        if size <= budget // 2 - rewritten:
            path.write_bytes(rng.randbytes(size))
            changed.append(path)
            rewritten += size
    texts = rng.sample(tree.text_files, k=min(20, len(tree.text_files)))
    per_file = max(1, (budget - rewritten) // len(texts))
    for path in texts:
        with path.open("ab") as handle:
            handle.write(text.take(per_file))
        changed.append(path)
    return Change(changed, rewritten + per_file * len(texts))
