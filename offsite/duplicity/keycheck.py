"""Does this node's key open the host's backup? Checked before an incremental's dump scripts
run: with the local cache in place duplicity never decrypts anything of the chain, so a
changed passphrase would silently write increments that no single passphrase restores."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from offsite.host.settings import HostSettings
from offsite.duplicity.errors import describe_failure
from offsite.errors import OffsiteError
from offsite.process.execute import run_command
from offsite.crypto.passphrase import read_passphrase
from offsite.host.sources import host_cache
from offsite.target.bucket import fetch_host_object

MANIFEST_MAX_BYTES = 16 * 1024 * 1024
GPG_TIMEOUT_S = 120

# host -> (the newest set's manifest, a digest of the passphrase that opens it), for sets this
# process opened or wrote itself: an incremental that builds on the set this worker has just
# written, with the same passphrase, need not decrypt it again (a gpg key derivation, ~0.25 s
# a run). In memory only, beside the passphrase the process holds anyway; a restart forgets it.
_opened: dict[str, tuple[str, bytes]] = {}


def _digest(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


def remember_written(host: str, manifest_name: str | None, passphrase: str | None) -> None:
    """This process wrote and confirmed the set whose manifest is `manifest_name`, encrypted
    with `passphrase` (None: public-key mode, nothing to remember)."""
    if manifest_name and passphrase is not None:
        _opened[host] = (manifest_name, _digest(passphrase))


class KeyDoesNotOpen(OffsiteError):
    """This node's passphrase or key does not decrypt the host's newest backup set."""

    failure_class = "encryption_failed"


def check_key_opens(settings: HostSettings, manifest_name: str, step: str = "start") -> None:
    """Decrypt the manifest (a small object) with this node's passphrase, in a throwaway gpg
    home; raises KeyDoesNotOpen naming the set, TargetUnreadable when it cannot be fetched."""
    if not manifest_name.endswith(".gpg"):
        return
    host = settings.name
    passphrase = read_passphrase(settings)
    if _opened.get(host) == (manifest_name, _digest(passphrase)):
        return
    data = fetch_host_object(settings, manifest_name, MANIFEST_MAX_BYTES)
    with tempfile.TemporaryDirectory(prefix="keycheck-", dir=host_cache(settings)) as private:
        home = Path(private) / "gnupg"
        home.mkdir(mode=0o700)
        encrypted = Path(private) / "manifest.gpg"
        encrypted.write_bytes(data)
        try:
            result = run_command(
                ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(home),
                 "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--no-symkey-cache",
                 "--yes", "--output", os.devnull, "--decrypt", str(encrypted)],
                timeout_s=GPG_TIMEOUT_S, host=host, step=step, check=False,
                capture_stdout=False, stdin_data=passphrase.encode() + b"\n")
        finally:
            # the agent gpg started for this throwaway home must not outlive the check
            run_command(["gpgconf", "--homedir", str(home), "--kill", "all"], timeout_s=30,
                        host=host, step=step, check=False, capture_stdout=False)
    if result.exit_code != 0:
        failure = describe_failure(result.exit_code, "", result.stderr_tail)
        raise KeyDoesNotOpen(f"{failure.headline}: it does not open {manifest_name}, the "
                             "newest set of the chain this incremental would continue",
                             host=host, step=step)
    _opened[host] = (manifest_name, _digest(passphrase))
