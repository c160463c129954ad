"""Where the login form may send a browser back to: this server's paths only."""

from __future__ import annotations

import pytest
from aiohttp import web

from streams.web.auth import AFTER_LOGIN, safe_next


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",  # the Location header drops tab, CR and LF: "//evil.example"
        "/\n/evil.example",
        "/\r/evil.example",
        "/\x00/evil",
        "/a\\b",
        "https://evil.example/",
        "evil.example",
        "",
        None,
    ],
)
def test_anything_but_a_path_here_goes_to_the_default(target: str | None) -> None:
    assert safe_next(target) == AFTER_LOGIN


@pytest.mark.parametrize("target", ["/dashboard", "/dashboard?month=2026-03&x=1", "/api/cci"])
def test_a_path_here_is_kept_as_the_location_header_will_show_it(target: str) -> None:
    assert safe_next(target) == target
    assert web.HTTPSeeOther(safe_next(target)).headers["Location"] == target
