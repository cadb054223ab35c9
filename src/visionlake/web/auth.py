"""Access to the dashboard: nothing without the token, once a token is set.

A request is let in with `Authorization: Bearer TOKEN` or with the session cookie the login form
sets. The cookie holds an HMAC of the token, not the token itself; every comparison is
`hmac.compare_digest`. The cookie is HttpOnly and SameSite=Strict. Without a token (the default,
on localhost only: see `cli_web`) everything is open.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "vl_session"
#: Paths open without the token: the login form and the stylesheet it uses.
OPEN_PATHS = {"/login", "/static/style.css"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"visionlake-dashboard-session", hashlib.sha256).hexdigest()


def token_matches(token: str, given: str) -> bool:
    return hmac.compare_digest(token.encode(), given.encode())


def authorized(token: str, request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given and token_matches(token, given.strip()):
        return True
    cookie = request.cookies.get(COOKIE)
    return bool(cookie) and hmac.compare_digest(session_value(token).encode(), cookie.encode())


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never //host or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class TokenMiddleware:
    """Pure ASGI middleware (streams such as the live events pass through untouched)."""

    def __init__(self, app: ASGIApp, token: str, login_page) -> None:  # noqa: ANN001 - a callable
        self.app = app
        self.token = token
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if authorized(self.token, request):
            await self.app(scope, receive, send)
            return
        response: Response
        path = scope["path"]
        wants_html = "text/html" in request.headers.get("accept", "") and not path.startswith("/api/")
        if wants_html:
            target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope["query_string"] else "")
            response = self.login_page(request, quote(target, safe="/?=&%"), status_code=401)
        else:
            response = JSONResponse(
                {"error": "this dashboard needs a token: Authorization: Bearer TOKEN, or log in at /login"},
                status_code=401,
            )
        response.headers["WWW-Authenticate"] = 'Bearer realm="visionlake"'
        await response(scope, receive, send)
