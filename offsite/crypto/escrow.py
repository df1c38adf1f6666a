"""The escrow check: does a key held on this node decrypt each host's newest backup?

In public-key mode the hosts cannot answer that (they hold no secret key), so a recipient list
that names a lost key, or a key that was never escrowed, would go unnoticed until the day of a
restore. A node that holds the secret keys (the operator's machine, the drill node) proves it:
`offsite check --connect` decrypts the newest manifest of every host. `escrow_problems` is the
alert-worthy part, for the control node's watchdog to raise as a condition.

Symmetric hosts are checked with a passphrase file readable here (the host's own, else the
fleet's); env PASSPHRASE is not used, since on a host node it is that host's alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import os
import tempfile

from offsite.config.model import Config
from offsite.crypto.encryption import gpg, secret_keyring, stop_agent
from offsite.host.settings import HostSettings, resolve_host
from offsite.target.bucket import TargetUnreadable, fetch_host_object
from offsite.crypto.manifest_count import read_keyed_catalog

MANIFEST_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class EscrowResult:
    host: str
    state: str       # opens, does-not-open, no-backup, no-key-here, unreadable
    detail: str

    @property
    def alert_worthy(self) -> bool:
        return self.state == "does-not-open"


def escrow_check(config: Config, secret_keys_file: Path | None = None) -> list[EscrowResult]:
    with secret_keyring(None, secret_keys_file) as given:
        return [_check_host(resolve_host(config, host), given) for host in config.hosts]


def escrow_problems(config: Config, secret_keys_file: Path | None = None) -> list[EscrowResult]:
    """The hosts whose newest backup no key held on this node decrypts (an alert each)."""
    return [result for result in escrow_check(config, secret_keys_file) if result.alert_worthy]


def _check_host(settings: HostSettings, given_home: Path | None) -> EscrowResult:
    host = settings.name
    try:
        chain = read_keyed_catalog(settings).newest_chain
    except TargetUnreadable as exc:
        return EscrowResult(host, "unreadable", exc.cause)
    if chain is None or chain.last.manifest is None:
        return EscrowResult(host, "no-backup", "no complete backup in the target")
    manifest = chain.last.manifest
    if not manifest.endswith(".gpg"):
        return EscrowResult(host, "opens", f"{manifest} is not encrypted")
    try:
        data = fetch_host_object(settings, manifest, MANIFEST_MAX_BYTES)
    except TargetUnreadable as exc:
        return EscrowResult(host, "unreadable", exc.cause)
    with tempfile.TemporaryDirectory(prefix="offsite-escrow-") as private:
        encrypted = Path(private) / "manifest.gpg"
        encrypted.write_bytes(data)
        if settings.encryption.public_key:
            return _with_secret_key(host, manifest, encrypted, given_home)
        return _with_passphrase(settings, manifest, encrypted, Path(private))


def _with_secret_key(host: str, manifest: str, encrypted: Path,
                     given_home: Path | None) -> EscrowResult:
    home = given_home or Path(os.environ.get("GNUPGHOME") or Path.home() / ".gnupg")
    code, out, _ = gpg(home, "--with-colons", "--list-secret-keys", host=host, step="escrow",
                       check=False)
    if code != 0 or "\nsec:" not in "\n" + out:
        return EscrowResult(host, "no-key-here", f"no secret key in {home}")
    code, _, stderr = gpg(home, "--pinentry-mode", "loopback", "--passphrase-fd", "0",
                          "--output", os.devnull, "--yes", "--decrypt", str(encrypted),
                          host=host, step="escrow", check=False,
                          stdin=os.environ.get("PASSPHRASE", "").encode() + b"\n")
    if code != 0:
        return EscrowResult(host, "does-not-open", f"no secret key held here decrypts "
                            f"{manifest} ({_last(stderr)})")
    return EscrowResult(host, "opens", f"a secret key held here decrypts {manifest}")


def _with_passphrase(settings: HostSettings, manifest: str, encrypted: Path,
                     private: Path) -> EscrowResult:
    host, path = settings.name, settings.encryption.passphrase_file
    try:
        passphrase = path.read_text().strip() if path is not None else ""
    except OSError:
        passphrase = ""
    if not passphrase:
        return EscrowResult(host, "no-key-here", "no passphrase file readable here")
    home = private / "gnupg"
    home.mkdir(mode=0o700)
    try:
        code, _, stderr = gpg(home, "--pinentry-mode", "loopback", "--passphrase-fd", "0",
                              "--no-symkey-cache", "--output", os.devnull, "--yes",
                              "--decrypt", str(encrypted), host=host, step="escrow",
                              check=False, stdin=passphrase.encode() + b"\n")
    finally:
        stop_agent(home, host, "escrow")
    if code != 0:
        return EscrowResult(host, "does-not-open", f"the passphrase in {path} does not decrypt "
                            f"{manifest} ({_last(stderr)})")
    return EscrowResult(host, "opens", f"the passphrase in {path} decrypts {manifest}")


def _last(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "gpg failed"
