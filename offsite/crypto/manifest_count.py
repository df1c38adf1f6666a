"""The volume count of an unsealed set, read from its manifest where this node holds the key.

A set without a seal (plain duplicity, an offsite from before seals) is judged whole by its
contiguous volumes 1..N (offsite.target.catalog); its last volume(s) deleted leave no gap, so
where this node can decrypt the set's manifest (the symmetric passphrase, or in public-key mode
a secret key in the keyring given or GNUPGHOME), the catalog also asks that N be the count the
manifest lists (its `Volume N:` entries). A manifest is small; reading one is bounded (at most
MANIFEST_MAX_BYTES fetched, gpg killed after GPG_TIMEOUT_S, only the last OUTPUT_TAIL_BYTES of
its text read: the volume entries end it) and its count is remembered for the process (by
target, name, size and key), so a `list` or a chain check over many unsealed sets decrypts each
once (a gpg key derivation, ~0.25 s of CPU, each). The plain copy duplicity keeps of a manifest
in this node's cache (`<cache>/<host>/duplicity-full.<time>.manifest`) is read instead when it is
there: no key, no download. Where the node holds no key, the set is judged by contiguity alone
and says so.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Mapping

from offsite.crypto.encryption import holds_secret_key, stop_agent
from offsite.crypto.passphrase import read_passphrase
from offsite.errors import OffsiteError
from offsite.host.settings import HostSettings
from offsite.process.execute import run_command
from offsite.target.bucket import TargetObject, fetch_host_object, list_host_objects
from offsite.target.catalog import Catalog, ManifestCount, catalog_of
from offsite.target.seal import Seal

MANIFEST_MAX_BYTES = 16 * 1024 * 1024
GPG_TIMEOUT_S = 60
OUTPUT_TAIL_BYTES = 1024 * 1024     # the `Volume N:` entries end the manifest
REMEMBERED_MAX = 10_000
_VOLUME = re.compile(r"^Volume (\d+):", re.MULTILINE)
STEP = "catalog"

# (target url, manifest name, size, key digest) -> the volume count its manifest lists: a
# manifest is never rewritten under its name, so a count read once holds for the process
_remembered: dict[tuple[str, str, int, bytes], int] = {}


def read_keyed_catalog(settings: HostSettings, gnupg_home: Path | None = None,
                       objects: list[TargetObject] | None = None,
                       known: Mapping[str, Seal] | None = None) -> Catalog:
    """offsite.target.catalog.read_catalog, with unsealed sets' manifests counted where this
    node holds the key (`gnupg_home`: a keyring with the secret key, public-key mode).
    `objects`: the host's prefix as the caller just listed it (else listed here); `known`: seals
    the caller just read (offsite.target.seal.read_seals)."""
    listed = list_host_objects(settings) if objects is None else objects
    with ManifestCounter(settings, gnupg_home) as counter:
        return catalog_of(settings.target.url, listed,
                          lambda name, most: fetch_host_object(settings, name, most), counter,
                          known)


def volumes_listed(text: str) -> int | None:
    """The highest `Volume N:` entry of a manifest's text; None when it lists none."""
    return max((int(number) for number in _VOLUME.findall(text)), default=None)


class ManifestCounter:
    """`counter(name, size) -> ManifestCount` for one catalog read; a context manager (the
    throwaway gpg home of symmetric mode, and its agent, end with it)."""

    def __init__(self, settings: HostSettings, gnupg_home: Path | None = None):
        self.settings, self.gnupg_home = settings, gnupg_home
        self._key: tuple[bytes, bytes] | None = None   # (gpg's stdin, a digest of the key)
        self._no_key = ""                               # why this node cannot decrypt
        self._private: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> ManifestCounter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._private is not None:
            stop_agent(Path(self._private.name) / "gnupg", self.settings.name, STEP)
            self._private.cleanup()
            self._private = None

    def __call__(self, name: str, size: int) -> ManifestCount:
        cached = self._cached_copy(name)
        if cached is not None:
            return ManifestCount(cached)
        key = self._find_key()
        if key is None:
            return ManifestCount(None, self._no_key)
        remembered = (self.settings.target.url, name, size, key[1])
        if remembered in _remembered:
            return ManifestCount(_remembered[remembered])
        if size > MANIFEST_MAX_BYTES:
            return ManifestCount(None, f"it is larger than {MANIFEST_MAX_BYTES} bytes")
        try:
            count = self._count(name, key[0])
        except OffsiteError as error:
            return ManifestCount(None, f"it cannot be read: {error.cause[:200]}")
        if isinstance(count, str):
            return ManifestCount(None, count)
        if len(_remembered) >= REMEMBERED_MAX:
            _remembered.clear()
        _remembered[remembered] = count
        return ManifestCount(count)

    def _cached_copy(self, name: str) -> int | None:
        """The count in duplicity's plain copy of the manifest in this node's cache, if any."""
        plain = self.settings.cache / self.settings.name / name.removesuffix(".gpg")
        if not plain.name.endswith(".manifest") or "/" in name:
            return None
        try:   # O_NONBLOCK and a regular file only: nothing in its place may hang a reader
            descriptor = os.open(plain, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(descriptor, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - OUTPUT_TAIL_BYTES))
                return volumes_listed(handle.read(OUTPUT_TAIL_BYTES).decode("utf-8", "replace"))
        except OSError:
            return None

    def _find_key(self) -> tuple[bytes, bytes] | None:
        """The key this node holds, found once: None (with _no_key) when it holds none."""
        if self._key is not None or self._no_key:
            return self._key
        settings = self.settings
        if not settings.encryption.public_key:
            try:
                passphrase = read_passphrase(settings, STEP)
            except OffsiteError as error:
                self._no_key = f"this node holds no passphrase: {error.cause[:120]}"
                return None
            self._key = (passphrase.encode() + b"\n",
                         hashlib.sha256(b"symmetric\0" + passphrase.encode()).digest())
            return self._key
        home = self._public_key_home()   # gpg would make a home that is not there: none
        if not home.is_dir() or not holds_secret_key(home, settings.name, STEP):
            self._no_key = ("this node holds no secret key to decrypt it (public-key mode: "
                            "give the secret key to a restore or verify)")
            return None
        secret = os.environ.get("PASSPHRASE", "")
        self._key = (secret.encode() + b"\n",
                     hashlib.sha256(f"public\0{home}\0{secret}".encode()).digest())
        return self._key

    def _public_key_home(self) -> Path:
        return self.gnupg_home or Path(os.environ.get("GNUPGHOME") or Path.home() / ".gnupg")

    def _home(self) -> Path:
        if self.settings.encryption.public_key:
            return self._public_key_home()
        if self._private is None:
            self._private = tempfile.TemporaryDirectory(prefix="offsite-count-")
            (Path(self._private.name) / "gnupg").mkdir(mode=0o700)
        return Path(self._private.name) / "gnupg"

    def _count(self, name: str, stdin: bytes) -> int | str:
        """The count the manifest lists, or why it gives none; raises TargetUnreadable,
        CommandTimedOut."""
        host = self.settings.name
        data = fetch_host_object(self.settings, name, MANIFEST_MAX_BYTES)
        if not name.endswith(".gpg"):
            text = data.decode("utf-8", "replace")
        else:
            with tempfile.NamedTemporaryFile(prefix="manifest-", suffix=".gpg") as encrypted:
                encrypted.write(data)
                encrypted.flush()
                result = run_command(
                    ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(self._home()),
                     "--pinentry-mode", "loopback", "--passphrase-fd", "0",
                     "--no-symkey-cache", "--decrypt", encrypted.name],
                    timeout_s=GPG_TIMEOUT_S, host=host, step=STEP, check=False,
                    stdout_max_bytes=OUTPUT_TAIL_BYTES, stdin_data=stdin)
            if result.exit_code != 0:
                last = (result.stderr_tail.strip().splitlines() or [""])[-1][:160]
                return f"it does not open with this node's key ({last})"
            text = result.stdout
        count = volumes_listed(text)
        return count if count is not None else "it lists no volume"
