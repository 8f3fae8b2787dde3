"""Partition keys that are safe to use as one file name under the storage root.

A partition key becomes a path component (``tables/<table>/<key>.parquet``, an S3 key), so a key must never
be able to name another place: :func:`validate_partition_key` is called wherever keys enter the pipeline
(dynamic partitions registered by a sensor or a runner, and Storage before it builds a path).
"""

from __future__ import annotations

import re

MAX_PARTITION_KEY_BYTES = 200
"""Longest key in UTF-8 bytes: leaves room for a suffix within the 255-byte file-name limit."""

PARTITION_KEY_PUNCTUATION = "-_.:|=+,@ "
"""Characters allowed besides letters and digits (``|`` joins the keys of a multi-partition)."""


class InvalidPartitionKey(ValueError):
    """A partition key that is not a safe single path component; the message says why and what to do."""


def validate_partition_key(key: str) -> str:
    """Return ``key`` unchanged when it is safe as one file name, else raise :class:`InvalidPartitionKey`.

    A key is 1 to :data:`MAX_PARTITION_KEY_BYTES` UTF-8 bytes of letters, digits and
    :data:`PARTITION_KEY_PUNCTUATION`; it does not start with ``.``, ``-`` or a space, does not end with
    ``.`` or a space, never contains ``..`` and does not start with a drive letter (``C:``). So ``/``, ``\\``,
    absolute paths (``/etc``, ``C:\\x``), ``~``, URLs, ``%``-escapes, control and other invisible characters
    are all refused.
    """
    problem = _problem(key)
    if problem:
        raise InvalidPartitionKey(
            f"partition key {key!r}: {problem}. Use 1-{MAX_PARTITION_KEY_BYTES} bytes of letters, digits and "
            f"{PARTITION_KEY_PUNCTUATION.strip()!r} or space, not starting with '.', '-' or a space"
        )
    return key


def _problem(key: object) -> str | None:
    if not isinstance(key, str):
        return f"not a string ({type(key).__name__})"
    if not key:
        return "empty"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_PARTITION_KEY_BYTES:
        return f"longer than {MAX_PARTITION_KEY_BYTES} bytes"
    for ch in ("/", "\\", ".."):
        if ch in key:
            return f"contains {ch!r} (a path)"
    bad = sorted({c for c in key if not (c.isalnum() or c in PARTITION_KEY_PUNCTUATION)})
    if bad:
        return f"contains disallowed characters {''.join(bad)!r}"
    if len(key) >= 2 and key[1] == ":" and key[0].isascii() and key[0].isalpha():
        return "starts with a drive letter (a Windows path)"
    if key[0] in ".- ":
        return f"starts with {key[0]!r}"
    if key[-1] in ". ":
        return f"ends with {key[-1]!r}"
    return None


SITE_KEY_PATTERN = r"synthetic|site-[a-z0-9]{1,12}"
"""A site (echo source) key: ``synthetic``, or ``site-`` and 1-12 lower-case letters or digits
(``site-0007``, ``site-cle2``), with no run of five or more digits. The key is a Dagster partition key: it is
stored in the instance's run, tag and check tables and becomes part of published file names, gate records,
validations and Data Docs, so it must be an opaque code the deployment assigns, never a hospital's or a
person's name or a date."""

_SITE_KEY = re.compile(SITE_KEY_PATTERN)


class InvalidSiteKey(InvalidPartitionKey):
    """A site key that is not an opaque site code; the message never repeats the key (it may identify)."""


def validate_site_key(key: str) -> str:
    """Return ``key`` when it matches :data:`SITE_KEY_PATTERN`, else raise :class:`InvalidSiteKey`, whose
    message describes the key (its length, which rule fails) without quoting it."""
    if not isinstance(key, str) or not _SITE_KEY.fullmatch(key) or re.search(r"[0-9]{5}", key):
        length = len(key) if isinstance(key, str) else 0
        raise InvalidSiteKey(
            f"an echo source key ({length} characters, not shown: it may name a person) is not an opaque "
            "site code: use 'site-' and 1-12 lower-case letters or digits without a run of five digits "
            "(e.g. site-0007), assigned by the deployment, never a name, a date or a record number; "
            "register the source again under such a code (and name its folder with MEDRWR_SOURCE_ECHO_<CODE>)"
        )
    return key
