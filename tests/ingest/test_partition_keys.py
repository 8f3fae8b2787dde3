"""Partition keys: only safe single file names get through; traversal and other hostile keys are refused."""

import pytest

from storage.keys import MAX_PARTITION_KEY_BYTES, InvalidPartitionKey, validate_partition_key

HOSTILE = {
    "../../up": "contains '/'",
    "..": "contains '..'",
    "a..b": "contains '..'",
    ".": "starts with '.'",
    ".hidden": "starts with '.'",
    "/abs": "contains '/'",
    "/etc/passwd": "contains '/'",
    "tables/x": "contains '/'",
    "..\\..\\up": "contains '\\\\'",
    "C:\\Windows": "contains '\\\\'",
    "C:x": "drive letter",
    "": "empty",
    " ": "starts with ' '",
    "x ": "ends with ' '",
    "x.": "ends with '.'",
    "-rf": "starts with '-'",
    "~": "disallowed characters '~'",
    "~/up": "contains '/'",
    "%2e%2e": "disallowed characters '%'",
    "s3://bucket/x": "contains '/'",
    "a\x00b": "disallowed characters",
    "a\nb": "disallowed characters",
    "a\tb": "disallowed characters",
    "a\x7fb": "disallowed characters",
    "a\u200bb": "disallowed characters",  # zero-width space
    "a\u202eb": "disallowed characters",  # right-to-left override
    "a\uff0fb": "disallowed characters",  # fullwidth solidus
    "a*b": "disallowed characters '*'",
    "a[1]": "disallowed characters '[]'",
    "x" * (MAX_PARTITION_KEY_BYTES + 1): f"longer than {MAX_PARTITION_KEY_BYTES} bytes",
    "é" * (MAX_PARTITION_KEY_BYTES // 2 + 1): f"longer than {MAX_PARTITION_KEY_BYTES} bytes",
}

GOOD = [
    "vqa_rad",
    "mcq_custom",
    "2024-01-01",
    "2024-01-01-00:00",
    "site_a|2024-01-01",
    "medrag_textbooks",
    "Echo 2024",
    "v1.2",
    "hôpital-nord",
    "x" * MAX_PARTITION_KEY_BYTES,
    "é" * (MAX_PARTITION_KEY_BYTES // 2),
]


@pytest.mark.parametrize("key", list(HOSTILE))
def test_hostile_keys_are_refused(key):
    with pytest.raises(InvalidPartitionKey) as e:
        validate_partition_key(key)
    msg = str(e.value)
    assert msg.startswith(f"partition key {key!r}: ") and HOSTILE[key] in msg
    assert "Use 1-200 bytes of letters, digits" in msg


@pytest.mark.parametrize("key", GOOD)
def test_safe_keys_pass_unchanged(key):
    assert validate_partition_key(key) == key


@pytest.mark.parametrize("key", [None, 5, b"vqa_rad"])
def test_non_strings_are_refused(key):
    with pytest.raises(InvalidPartitionKey, match="not a string"):
        validate_partition_key(key)
