"""Who may use the worker's web server: the rules in front of every route (docs/security.md).

Two aiohttp middlewares, so that no route can forget either: the Host/Origin guard against
cross-site requests and DNS rebinding (streams/web/guard.py), always on; and the optional
``CCI_WEB_TOKEN``. Both leave ``OPEN_PATHS`` (``/health``, ``/metrics``, the login page) open.

When the token is set, every path but ``/health``, ``/metrics`` and the login page needs it:
``Authorization: Bearer <token>`` (programs, ``cci query``), or the session cookie the login
page sets (browsers). The cookie holds an HMAC of the token, not the token: it opens this web
server (every worker with the same token), and stops working when the token changes. Every
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import orjson
from aiohttp import web
from yarl import URL

from streams.web import guard as web_guard

LOGIN_PATH = "/login"
OPEN_PATHS = frozenset({"/health", "/metrics", LOGIN_PATH})
COOKIE_NAME = "cci_session"
COOKIE_MAX_AGE = 7 * 86400  # seconds a browser stays logged in
MAX_LOGIN_BODY = 4096  # bytes of a login form; more is refused before it is read
AFTER_LOGIN = "/dashboard"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def middlewares(token: str, allowed_hosts: frozenset[str]) -> list[Middleware]:
    """The worker's middlewares, outermost first: the token (when set), then the guard."""
    token_check = [token_middleware(token)] if token else []
    return [*token_check, guard_middleware(allowed_hosts)]


def guard_middleware(allowed_hosts: frozenset[str]) -> Middleware:
    """An aiohttp middleware that answers 403 on every path but ``OPEN_PATHS`` to a request whose
    Host or Origin is not this worker's own (streams/web/guard.py)."""

    @web.middleware
    async def require_own_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            reason = web_guard.refusal(request.headers, allowed_hosts)
            if reason is not None:
                return web.Response(
                    status=403,
                    body=orjson.dumps({"error": reason}),
                    content_type="application/json",
                    charset="utf-8",
                )
        return await handler(request)

    return require_own_host


def session_value(token: str) -> str:
    """The cookie's value for ``token``."""
    return hmac.new(token.encode(), b"cci-stream web session v1", hashlib.sha256).hexdigest()


def bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def is_authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header and bearer_matches(header, token):
        return True
    cookie = request.cookies.get(COOKIE_NAME, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def token_middleware(token: str) -> Middleware:
    """An aiohttp middleware that asks for ``token`` on every path but ``OPEN_PATHS``."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or is_authorised(request, token):
            return await handler(request)
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            # A browser: to the login page, and back here after it.
            raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='/?=&')}")
        return web.Response(
            status=401,
            body=orjson.dumps({"error": "this worker needs CCI_WEB_TOKEN: Authorization: Bearer"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="cci"'},
        )

    return require_token


def safe_next(target: str | None) -> str:
    """Only a path on this server (never ``//host`` or a URL): no open redirect.

    Checked as the Location header will carry it: yarl (which builds that header) drops tab, CR
    and LF, so "/\t/evil" would become "//evil". Any control character or backslash is refused,
    and the target is judged after yarl's normalisation.
    """
    if not target or any(ord(c) < 0x20 or c in "\x7f\\" for c in target):
        return AFTER_LOGIN
    try:
        shown = str(URL(target))
    except ValueError:
        return AFTER_LOGIN
    if shown.startswith("/") and not shown.startswith("//") and not URL(shown).host:
        return shown
    return AFTER_LOGIN


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cci-stream: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 26rem; margin: 4rem auto">
<h1 style="font-size: 1.3rem">cci-stream</h1>
<p>This worker's web pages need its token (<code>CCI_WEB_TOKEN</code>).</p>
{error}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" id="token" autocomplete="current-password"
 required autofocus style="width: 100%"></label>
<p><button type="submit" id="login">Log in</button></p>
</form></body></html>
"""


def login_page(next_path: str, error: str = "", status: int = 200) -> web.Response:
    shown = f'<p role="alert" style="color: #b00020">{html.escape(error)}</p>' if error else ""
    body = LOGIN_PAGE.format(error=shown, next=html.escape(safe_next(next_path), quote=True))
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


async def answer_login(request: web.Request, token: str) -> web.Response:
    """``GET /login``: the form; ``POST /login`` with the token: the cookie and back to where the
    browser was going; a wrong token: the form again, 401."""
    if request.method != "POST":
        return login_page(request.query.get("next", AFTER_LOGIN))
    if not token:
        raise web.HTTPSeeOther(AFTER_LOGIN)  # nothing to log in to
    if (request.content_length or 0) > MAX_LOGIN_BODY:
        return login_page(AFTER_LOGIN, "the form is too large", status=413)
    form = await request.post()
    given, next_path = str(form.get("token", "")), str(form.get("next", AFTER_LOGIN))
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return login_page(next_path, "wrong token", status=401)
    response = web.HTTPSeeOther(safe_next(next_path))
    response.set_cookie(
        COOKIE_NAME,
        session_value(token),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response
