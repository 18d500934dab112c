"""The legacy history key (spec 01 §3.2: every example of its table, quirks included), URL
classification, eligibility and the webhook's two schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.downloads.history import local_timestamp
from services.downloads.urls import Row, classify, has_web_scheme, is_eligible, normalize_url
from services.downloads.webhook import parse_rows

D = "https://www.dropbox.com/scl/fo/abc/xyz"

SPEC_TABLE = [
    (f"{D}?rlkey=KEY&amp;dl=0", f"{D}?dl=1&rlkey=KEY"),
    (f"{D}?amp%3Bdl=0&dl=1&rlkey=KEY", f"{D}?dl=1&rlkey=KEY"),
    # [Q] a stray ";dl" key survives
    (f"{D}?rlkey=KEY&amp%3Bdl=0", f"{D}?%3Bdl=0&dl=1&rlkey=KEY"),
    # [Q]
    (f"{D}?rlkey=KEY&amp;amp;dl=0", f"{D}?amp%3Bdl=0&dl=1&rlkey=KEY"),
    # [Q] the whole-URL unquote broke %26
    (f"{D}?rlkey=KEY&amp%3Bdl=0&x=a%26b", f"{D}?%3Bdl=0&dl=1&rlkey=KEY&x=a"),
    (
        "HTTPS://WWW.Dropbox.com:443//s/abc//file%20name.zip?dl=0",
        "https://www.dropbox.com/s/abc/file%20name.zip?dl=1",
    ),
    ("https://www.dropbox.com/s/abc/file.zip", "https://www.dropbox.com/s/abc/file.zip?dl=1"),
    ("https://example.com/a?b=2&a=1&a=1&c=&dl=0&dl=1", "https://example.com/a?a=1&b=2&dl=0&dl=1"),
    # unchanged: a proxy is not a Dropbox host
    (
        "https://ex.workers.dev/dropbox/abc/f.zip?dl=0",
        "https://ex.workers.dev/dropbox/abc/f.zip?dl=0",
    ),
    ("https://example.com/a%2Fb", "https://example.com/a/b"),
    ("https://example.com/p(1)+@/", "https://example.com/p%281%29%2B%40"),
]


@pytest.mark.parametrize(("raw", "key"), SPEC_TABLE, ids=[r for r, _ in SPEC_TABLE])
def test_every_example_of_the_spec_gives_its_legacy_key(raw: str, key: str) -> None:
    assert normalize_url(raw) == key
    # A key is its own key, except for the quirky ones: normalising "amp%3Bdl" again removes it
    # (the monitor never renormalises stored keys, so this only documents the quirk).
    assert (normalize_url(key) == key) is ("amp%3Bdl" not in key)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("", ""),
        (None, ""),
        ("  http://x.test:99999/a  ", "http://x.test:99999/a"),  # bad port: the stripped text
        ("https://notdropbox.com/a", "https://notdropbox.com/a?dl=1"),  # [Q] the suffix test
        ("http://Example.com:80/a/?q=a b", "http://example.com/a?q=a+b"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://user:p%40ss@Example.com/", "https://user:p%40ss@example.com/"),
        ("https://example.com/a#frag", "https://example.com/a"),
        (
            "https://dl.dropboxusercontent.com/s/a/f.zip?dl=0",
            "https://dl.dropboxusercontent.com/s/a/f.zip?dl=1",
        ),
    ],
)
def test_edge_cases_keep_the_legacy_rules(raw: str | None, key: str) -> None:
    assert normalize_url(raw) == key


def test_classification_and_scheme() -> None:
    assert classify("https://fromsmash.com/x") == "fromsmash"
    assert classify("https://www.swisstransfer.com/d/x") == "swisstransfer"
    assert classify("https://www.dropbox.com/s/a/f.zip") == "dropbox"
    assert classify("https://x.workers.dev/dropbox/a/f.zip") == "dropbox"
    assert classify("https://example.com/f.zip") == "external"
    assert has_web_scheme("https://a/b") and has_web_scheme("www.dropbox.com/s/a.zip")
    assert not has_web_scheme("ftp://a/b.zip")


@pytest.mark.parametrize(
    ("row", "eligible"),
    [
        (Row("https://www.dropbox.com/s/a/x.zip", original_filename="x.zip"), True),
        (Row("https://www.dropbox.com/scl/fo/a/b?rlkey=k", fallback_url="https://f/x"), True),
        (Row("https://x.workers.dev/dropbox/a/f.zip"), True),  # a proxy is its own hint
        # legacy rows (no filename, no fallback) are never auto-downloaded
        (Row("https://www.dropbox.com/s/a/x.zip"), False),
        # .rar is not eligible
        (Row("https://www.dropbox.com/s/a/x.rar", original_filename="x.rar"), False),
        (Row("https://example.com/x.zip", original_filename="x.zip"), False),
        (Row("https://example.com/x.zip", original_filename="x.zip", provider="Dropbox"), True),
        (Row("https://example.com/x", original_filename="x.zip", url_type="dropbox"), True),
        (Row("https://r2.example/x", original_filename="x.zip", provider="proxy_php"), False),
    ],
)
def test_eligibility_needs_dropbox_an_archive_and_a_new_schema_row(
    row: Row, eligible: bool
) -> None:
    assert is_eligible(row) is eligible


def test_webhook_rows_of_both_schemas() -> None:
    body = json.loads(
        json.dumps(
            [
                {
                    "r2_url": "https://x.workers.dev/dropbox/a/f.zip",
                    "source_url": "https://www.dropbox.com/s/a/f.zip?dl=0",
                    "original_filename": "f.zip",
                    "provider": "Dropbox",
                    "created_at": "2026-12-01T09:30:00Z",
                },
                {"source_url": "https://www.dropbox.com/s/b/g.zip", "created_at": "naive text"},
                {"url": "https://fromsmash.com/x", "timestamp": "2026-12-01 10:00:00"},
                {"url": ""},
                "not an object",
                {"url": 42},
            ]
        )
    )
    proxy, plain, legacy = parse_rows(body)
    assert proxy.url == "https://x.workers.dev/dropbox/a/f.zip"
    assert proxy.fallback_url == "https://www.dropbox.com/s/a/f.zip?dl=0"
    assert proxy.url_type == "dropbox" and proxy.original_filename == "f.zip"
    utc = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert proxy.timestamp == utc.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert (plain.fallback_url, plain.timestamp, plain.url_type) == ("", "naive text", "dropbox")
    assert (legacy.url_type, legacy.timestamp, legacy.source) == (
        "fromsmash",
        "2026-12-01 10:00:00",
        "webhook",
    )
    assert parse_rows({"not": "a list"}) == []


def test_timestamps_with_a_zone_become_local_others_stay() -> None:
    aware = "2026-06-01T12:00:00+02:00"
    expected = datetime.fromisoformat(aware).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert local_timestamp(aware) == expected
    assert local_timestamp("2026-06-01 12:00:00") == "2026-06-01 12:00:00"
    assert local_timestamp("garbage") == "garbage"
