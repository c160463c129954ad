"""Who may call the worker's web routes from a browser: the rules against cross-site requests and
DNS rebinding (docs/security.md, "Query API").

A web page the user visits can make the browser send requests to ``127.0.0.1:6066``, and a
DNS-rebinding page can even read the answers (its own name now points at the worker). Both show in
the headers: such a request names another host in ``Host`` (rebinding) or another site in
``Origin`` (cross-site). So every route but ``/health``, ``/metrics`` and the login page answers
only requests whose ``Host`` is one of the worker's own addresses (loopback at its port, its bind
address, or ``CCI_WEB_ALLOWED_HOSTS``) and whose ``Origin``, when sent, is that same host. Pure (no
web server library): ``streams/web/auth.py`` applies it to every route as a middleware; the query
API's own answer (``streams/store/query.py``) checks it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = {"0.0.0.0", "::", "", "[::]"}


def allowed_hosts(web_host: str, web_port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """``Host`` header values (``host:port``, lower case) that name this worker."""
    host = f"[{web_host}]" if ":" in web_host and not web_host.startswith("[") else web_host
    names = {*LOOPBACK_NAMES, *(() if host in _WILDCARDS else (host,))}
    return frozenset({f"{name}:{web_port}".lower() for name in names} | {e.lower() for e in extra})


def refusal(headers: Mapping[str, str], allowed: frozenset[str]) -> str | None:
    """Why a request with these headers may not be answered (403), or None when it may."""
    host = (headers.get("Host") or "").strip().lower()
    if host not in allowed:
        return f"Host {host or '(none)'!r} is not this worker's address (see CCI_WEB_ALLOWED_HOSTS)"
    origin = headers.get("Origin")
    if origin is not None:
        scheme, _, origin_host = origin.strip().lower().partition("://")
        if scheme not in {"http", "https"} or origin_host.rstrip("/") not in allowed:
            return f"Origin {origin!r} is not this worker's own"
    return None
