"""How a node encrypts and decrypts a host's backups: the passphrase (one per host if wanted), or
in public-key mode the recipients' public keys in a keyring of offsite's own, and on the
operator's machine a secret keyring given for one command only.

A host in public-key mode holds no secret: it encrypts to the recipients and cannot decrypt a
thing, so a stolen host (or its leaked upload keys) reveals no backup.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
import os
import tempfile

from offsite.host.settings import EncryptionSettings, HostSettings
from offsite.crypto.passphrase import read_passphrase
from offsite.errors import OffsiteError
from offsite.process.execute import run_command

GPG_TIMEOUT_S = 120
KEY_FILE_MAX_BYTES = 1024 * 1024


class KeyringError(OffsiteError):
    """A key file or keyring cannot be used: not a key, a secret where only public keys belong,
    a recipient missing."""

    failure_class = "encryption_failed"


# The passphrase's key-derivation count, written out so gpg need not ask an agent for it: left
# unset, gpg starts a gpg-agent, which times SHA-1 runs for ~0.7 s to pick a count (then
# clamped to this maximum on any current CPU; duplicity's earlier sets say `count 65011712`),
# and that agent dies with the command (offsite.process.reaper), so every command paid it
# again. Every duplicity command pays it, not only an upload: before any action duplicity
# checks gpg's loopback pinentry by encrypting a test message symmetrically with the
# --gpg-options it was given (duplicity.gpg), so a restore, a drill or a listing started an
# agent too (~1 s of CPU and of wall time each).
S2K_COUNT = 65011712


def gpg_count_flags() -> list[str]:
    """duplicity's flags for every command (see S2K_COUNT): the count, so neither its loopback
    check nor a symmetric encryption starts a gpg-agent."""
    return ["--gpg-options", f"--s2k-count {S2K_COUNT}"]


def encrypt_flags(settings: EncryptionSettings) -> list[str]:
    """duplicity's flags for writing: one --encrypt-key per recipient in public-key mode (in
    symmetric mode the passphrase and gpg_count_flags are all it needs)."""
    if not settings.public_key:
        return []
    return [flag for fpr in settings.recipients for flag in ("--encrypt-key", fpr)]


def gpg(home: Path, *args: str, host: str | None, step: str, stdin: bytes | None = None,
        check: bool = True) -> tuple[int, str, str]:
    """Run gpg on `home` in batch mode; (exit code, stdout, stderr tail)."""
    result = run_command(["gpg", "--batch", "--no-tty", "--homedir", str(home), *args],
                         timeout_s=GPG_TIMEOUT_S, host=host, step=step, check=check,
                         stdin_data=stdin)
    return result.exit_code, result.stdout, result.stderr_tail


def stop_agent(home: Path, host: str | None, step: str) -> None:
    """The agent gpg started for a throwaway home must not outlive it."""
    run_command(["gpgconf", "--homedir", str(home), "--kill", "all"], timeout_s=30, host=host,
                step=step, check=False, capture_stdout=False)


def _fingerprints(home: Path, secret: bool, host: str | None, step: str) -> list[str]:
    listing = "--list-secret-keys" if secret else "--list-keys"
    code, out, _ = gpg(home, "--with-colons", listing, host=host, step=step, check=False)
    if code != 0:
        return []
    fprs: list[str] = []
    for line in out.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr" and len(fields) > 9:
            fprs.append(fields[9].upper())
    return fprs


def holds_secret_key(home: Path, host: str | None, step: str) -> bool:
    """Whether the keyring `home` holds a secret key."""
    return bool(_fingerprints(home, True, host, step))


def _read_key_file(path: Path, host: str | None, what: str) -> None:
    """Refuse what cannot be a key file before gpg sees it."""
    try:
        if not path.is_file():
            raise KeyringError(f"{what} {path} is not a file", host=host, step="encryption")
        with open(path, "rb") as handle:
            data = handle.read(KEY_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise KeyringError(f"cannot read {what} {path}: {exc.strerror}", host=host,
                           step="encryption") from None
    if len(data) > KEY_FILE_MAX_BYTES:
        raise KeyringError(f"{what} {path} is larger than {KEY_FILE_MAX_BYTES} bytes: not a "
                           "key file", host=host, step="encryption")


def import_keys(home: Path, path: Path, host: str | None, what: str) -> None:
    """Import a key file into `home`; raises KeyringError when it holds no key."""
    _read_key_file(path, host, what)
    code, _, stderr = gpg(home, "--import", "--", str(path), host=host, step="encryption",
                          check=False)
    if code != 0 or not _fingerprints(home, False, host, "encryption"):
        last = stderr.strip().splitlines()[-1:] or [""]
        raise KeyringError(f"{what} {path} holds no usable OpenPGP key ({last[0][:200]})",
                           host=host, step="encryption")


def _has_key(fprs: list[str], wanted: str) -> bool:
    return any(fpr == wanted or fpr.endswith(wanted) for fpr in fprs)


@contextmanager
def public_keyring(host_settings: HostSettings) -> Iterator[Path | None]:
    """In public-key mode with a public_keys_file: a throwaway keyring holding exactly the
    file's keys (never a secret one), removed afterwards; None otherwise (the node's GNUPGHOME is
    used). Raises KeyringError when the file is not what it should be. Throwaway and short:
    gpg's agent socket lives in the home, and a socket path has at most 107 bytes."""
    host, settings = host_settings.name, host_settings.encryption
    if not settings.public_key:
        yield None
        return
    if settings.public_keys_file is None:
        check_recipients_in(Path(os.environ.get("GNUPGHOME") or Path.home() / ".gnupg"),
                            settings, host)
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="offsite-pub-") as private:
        home = Path(private)
        home.chmod(0o700)
        try:
            import_keys(home, settings.public_keys_file, host, "public_keys_file")
            if _fingerprints(home, True, host, "encryption"):
                raise KeyringError(f"public_keys_file {settings.public_keys_file} holds a "
                                   "secret key: a host must hold only public keys (export "
                                   "with `gpg --armor --export FPR`)", host=host,
                                   step="encryption")
            check_recipients_in(home, settings, host)
            yield home
        finally:
            stop_agent(home, host, "encryption")


def check_recipients_in(home: Path, settings: EncryptionSettings, host: str) -> None:
    fprs = _fingerprints(home, False, host, "encryption")
    missing = [fpr for fpr in settings.recipients if not _has_key(fprs, fpr)]
    if missing:
        where = settings.public_keys_file or home
        raise KeyringError(f"recipient {', '.join(missing)} is not among the public keys in "
                           f"{where}", host=host, step="encryption")


@contextmanager
def secret_keyring(host: str | None, secret_keys_file: Path | None) -> Iterator[Path | None]:
    """For reading backups on the operator's machine: a throwaway keyring holding the given
    secret keys, removed afterwards; None when no file is given (GNUPGHOME is used)."""
    if secret_keys_file is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="offsite-keys-") as private:
        home = Path(private) / "gnupg"
        home.mkdir(mode=0o700)
        try:
            import_keys(home, secret_keys_file, host, "secret keys file")
            if not _fingerprints(home, True, host, "encryption"):
                raise KeyringError(f"secret keys file {secret_keys_file} holds no secret key "
                                   "(export with `gpg --armor --export-secret-keys FPR`)",
                                   host=host, step="encryption")
            yield home
        finally:
            stop_agent(home, host, "encryption")


def decryption_env(settings: HostSettings, gnupg_home: Path | None,
                   passphrase: str | None = None) -> dict[str, str]:
    """PASSPHRASE (and GNUPGHOME) for a duplicity or gpg child: the symmetric passphrase (the
    one the caller already read, else read here), or in public-key mode the secret key's
    passphrase from env PASSPHRASE ('' for an unprotected key, so duplicity never waits on a
    prompt)."""
    env: dict[str, str] = {}
    if settings.encryption.public_key:
        env["PASSPHRASE"] = os.environ.get("PASSPHRASE", "")
    else:
        env["PASSPHRASE"] = passphrase if passphrase is not None \
            else read_passphrase(settings)
    if gnupg_home is not None:
        env["GNUPGHOME"] = str(gnupg_home)
    return env
