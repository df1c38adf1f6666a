"""Configuration of the security model: encryption (per host), object layout, provisioning.

Kept apart from offsite.config.model so that the security keys read as one block; offsite.config.model
imports these models into the fleet's Config.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from offsite.config.types import AbsolutePath, Duration


# A key is named by its full fingerprint (40 hex digits, v4) or a long key id (16 hex digits):
# short ids and user ids are ambiguous, and an attacker can make a key with the same user id.
_FINGERPRINT = re.compile(r"^(?:0x)?([0-9A-Fa-f]{40}|[0-9A-Fa-f]{16})$")
_NAME_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+=,.@_-]{0,31}$")

# Data volumes are written under this name prefix (duplicity --file-prefix-archive), inside the
# host's prefix: `<host>/data-duplicity-full.<time>.vol1.difftar.gpg`. Manifests and signatures
# keep duplicity's own names, so a lifecycle rule can archive volumes only.
DATA_PREFIX = "data-"
# The object tag that the lifecycle rule filters on (S3 lifecycle filters match a key prefix or
# tags; a prefix inside every host's prefix would need one rule per host).
VOLUME_TAG = ("offsite-class", "volume")


def _check_fingerprint(value: str) -> str:
    match = _FINGERPRINT.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"recipient {str(value)[:80]!r} is not a key fingerprint (40 hex "
                         "digits, or a 16-digit long key id; see `gpg --list-keys "
                         "--with-colons`)")
    return match.group(1).upper()


def _not_a_number(value: object) -> object:
    """YAML reads an unquoted 0x… fingerprint as a number: say so, and how to write it."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("YAML read this fingerprint as a number (an unquoted 0x…): quote it, "
                         "e.g. recipients: [\"0x43C1C2DEFA6B309A849D1A0CA66A9CE96F094D4D\"]")
    return value


Fingerprint = Annotated[str, BeforeValidator(_not_a_number), AfterValidator(_check_fingerprint)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncryptionConfig(_Strict):
    mode: Literal["symmetric", "public-key"] = Field(
        "symmetric", description="symmetric: a passphrase on every host; public-key: hosts hold "
                                 "only public keys and cannot decrypt any backup")
    passphrase_file: AbsolutePath | None = Field(
        None, description="symmetric: file holding the passphrase; else env PASSPHRASE")
    recipients: list[Fingerprint] = Field(
        default_factory=list, description="public-key: fingerprints the backups are encrypted to")
    public_keys_file: AbsolutePath | None = Field(
        None, description="public-key: ASCII-armoured public keys of the recipients; imported "
                          "into a keyring of offsite's own (else the node's GNUPGHOME)")

    @model_validator(mode="after")
    def _mode_needs(self) -> EncryptionConfig:
        if self.mode == "public-key" and not self.recipients:
            raise ValueError("mode public-key needs 'recipients' (key fingerprints)")
        if len(self.recipients) != len(set(self.recipients)):
            raise ValueError("a recipient is listed twice")
        return self


class HostEncryption(_Strict):
    """Per-host overrides: a passphrase of its own, so one host's compromise does not decrypt
    the fleet's backups (or recipients of its own in public-key mode)."""

    passphrase_file: AbsolutePath | None = None
    recipients: list[Fingerprint] | None = None
    public_keys_file: AbsolutePath | None = None


class LifecycleConfig(_Strict):
    infrequent_access_after: Duration | None = Field(
        32 * 86400, description="data volumes move to STANDARD_IA after this (null: never)")
    archive_after: Duration | None = Field(
        64 * 86400, description="data volumes move to archive_class after this (null: never)")
    archive_class: Literal["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"] = "GLACIER"
    noncurrent_expire_after: Duration = Field(
        30 * 86400, description="old versions (overwritten or deleted objects) are kept this "
                                "long: the undo window for prunes and for an attacker's deletes")

    @model_validator(mode="after")
    def _whole_days(self) -> LifecycleConfig:
        for name in ("infrequent_access_after", "archive_after", "noncurrent_expire_after"):
            value = getattr(self, name)
            if value is not None and (value % 86400 or value <= 0):
                raise ValueError(f"{name} must be a whole number of days (like 30d)")
        ia, archive = self.infrequent_access_after, self.archive_after
        if ia is not None and archive is not None and archive <= ia:
            raise ValueError("archive_after must be later than infrequent_access_after")
        return self


def _check_name_prefix(value: str) -> str:
    if not _NAME_PREFIX.match(value):
        raise ValueError(f"name_prefix {value!r}: letters, digits and +=,.@_- only, at most "
                         "32 characters")
    return value


class ProvisionConfig(_Strict):
    name_prefix: Annotated[str, AfterValidator(_check_name_prefix)] = Field(
        "offsite", description="IAM users are named <prefix>-host-<host>, <prefix>-alert, ...")
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    managed: bool = Field(False, description="the bucket and identities are made by `offsite "
                          "provision`: `offsite check --connect` compares them with its plan")


Layout = Literal["split", "flat"]
