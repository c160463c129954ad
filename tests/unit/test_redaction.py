"""The one redaction function (streams/redaction.py) on every shape a secret takes."""

from __future__ import annotations

import logging
import time

import pytest

from streams.redaction import RedactingFilter, redact_text, redact_url, secret_values, shown_setting
from streams.settings import load_settings


def test_redact_url_hides_only_the_password_and_secret_parameters() -> None:
    assert redact_url("http://default:s3cret@ch:8123/cci") == "http://default:***@ch:8123/cci"
    assert redact_url("https://ch.example:8443/db") == "https://ch.example:8443/db"
    assert redact_url("chdb:///var/lib/cci") == "chdb:///var/lib/cci"
    assert redact_url("https://u:p@ss@[::1]:8443/db") == "https://u:***@[::1]:8443/db"
    assert redact_url("http://ch/db?user=a&password=x&token=y") == (
        "http://ch/db?user=a&password=***&token=***"
    )
    assert redact_url("http://user@ch/db") == "http://user@ch/db"


def test_secret_values_and_shown_settings() -> None:
    settings = load_settings(
        {
            "CCI_CLICKHOUSE_URL": "http://u:p%40ss@ch:8123/db",
            "CCI_KAFKA_SASL_PASSWORD": "sasl-pw",
            "CCI_WEB_TOKEN": "t" * 20,
        }
    )
    assert set(secret_values(settings)) == {"p%40ss", "p@ss", "sasl-pw", "t" * 20}
    assert shown_setting(settings, "clickhouse_url") == "http://u:***@ch:8123/db"
    assert shown_setting(settings, "kafka_sasl_password") == "***"
    assert shown_setting(settings, "web_token") == "***"
    assert shown_setting(settings, "web_port") == "6066"
    # A library's message that quotes a secret without its URL.
    assert redact_text("auth failed for p@ss and sasl-pw", secret_values(settings)) == (
        "auth failed for *** and ***"
    )


def test_log_records_lose_their_secrets() -> None:
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "login %s at %s", ("pw1", "h"), None)
    record.url = "http://a:pw2@h/db"
    try:
        raise RuntimeError("bad pw1")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter(["pw1"]).filter(record)
    text = logging.Formatter().format(record)
    assert "pw1" not in text and "pw2" not in record.url
    assert "login *** at h" in text and "RuntimeError: bad ***" in text


def test_a_very_short_secret_is_hidden_in_urls_but_not_replaced_in_free_text() -> None:
    settings = load_settings({"CCI_CLICKHOUSE_URL": "http://u:abc@ch:8123/db"})
    assert secret_values(settings) == ()
    assert redact_text("a cab at http://u:abc@ch:8123/db", secret_values(settings)) == (
        "a cab at http://u:***@ch:8123/db"
    )


def test_a_password_holding_a_slash_is_hidden_up_to_the_last_at() -> None:
    assert redact_url("http://u:S3cret/Pass4@127.0.0.1:1/db") == "http://u:***@127.0.0.1:1/db"
    assert redact_text("url http://u:a/b@c/d@host:1/db, then") == "url http://u:***@host:1/db, then"


@pytest.mark.parametrize(
    "adversarial",
    [
        "a." * 500_000,  # a scheme could start at every letter
        "a://b:" * 170_000,  # a userinfo could start at every '://'
        "?" + "a" * 1_000_000,  # a parameter name that never ends
        "&a=" * 340_000,
    ],
    ids=["letters", "userinfo", "parameter-name", "parameters"],
)
def test_redaction_takes_linear_time(adversarial: str) -> None:
    """1 MB of text that made the patterns backtrack (20K characters took 0.8 s, 40K 2.7 s)."""
    # CPU time, not wall time: under a loaded machine (parallel make test) the wall clock also
    # counts other processes' turns. Linear is ~0.4 s here; backtracking would take minutes.
    started = time.process_time()
    redact_text(adversarial, ("s3cret",))
    assert time.process_time() - started < 2.0
