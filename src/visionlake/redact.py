"""Credentials out of URLs before they reach a message, a log line or `visionlake status`.

Camera, log, catalog and archive URLs often carry secrets: ``rtsp://admin:pw@cam/live``,
``http://cam/video.mjpg?token=...``, ``postgresql://u:pw@db/x?password=...``. Every URL that is shown
goes through `redact_url` first; the original string is still what connects.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["MASK", "is_sensitive_param", "redact_url"]

MASK = "***"

#: A query parameter whose name contains one of these (lower case, letters and digits only) is secret.
_SENSITIVE_PARTS = (
    "pass",  # password, passwd, passphrase, sslpassword, sasl.password
    "pwd",
    "secret",  # client_secret, aws_secret_access_key
    "token",  # token, access_token, x-amz-security-token
    "sig",  # sig, signature, x-amz-signature
    "auth",  # auth, authorization, oauth_*
    "cred",  # credential, x-amz-credential
    "session",
    "jaas",  # sasl.jaas.config embeds a password
    "apikey",
    "accesskey",
    "privatekey",
)
#: ...or is one of these, or ends with "key" (key, apikey, streamkey, sslkey).
_SENSITIVE_NAMES = frozenset({"pw", "pin", "code"})

_SCHEME_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*:)?//")


def is_sensitive_param(name: str) -> bool:
    """Whether a query parameter called `name` probably holds a credential."""
    compact = re.sub(r"[^a-z0-9]", "", unquote_plus(name).lower())
    return (
        compact in _SENSITIVE_NAMES
        or compact.endswith("key")
        or any(part in compact for part in _SENSITIVE_PARTS)
    )


def _redact_params(text: str) -> str:
    """``a=1&token=x;b=2`` -> ``a=1&token=***;b=2``: only sensitive, non-empty values change."""
    out = []
    for piece in re.split(r"([&;])", text):
        name, sep, value = piece.partition("=")
        out.append(f"{name}={MASK}" if sep and value and is_sensitive_param(name) else piece)
    return "".join(out)


def _redact_userinfo(rest: str) -> str:
    """`rest` is what follows ``//``: hide the password of ``user:password@host...``."""
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    authority = rest[:end]
    at = authority.rfind("@")  # the last @ ends the userinfo, as FFmpeg and urllib read it
    if at == -1:
        # A password with an unencoded / ? or # ends the authority early ("admin:pa/ss@cam"): a
        # non-numeric "port" followed later by an @ is taken for user:password.
        user, colon, port = authority.partition(":")
        later = rest.find("@", end)
        if not colon or port.isdigit() or later == -1:
            return rest
        return f"{user}:{MASK}{rest[later:]}"
    user, colon, password = authority[:at].partition(":")
    if not colon or not password:
        return rest
    return f"{user}:{MASK}{rest[at:]}"


def redact_url(url: object) -> str:
    """`url` with userinfo passwords and sensitive query/fragment values replaced by ``***``.

    Anything else is kept character for character (no normalisation), so the result still says
    which host, port, path and options were used. Never raises: it runs inside error handling, on
    malformed input as well ("not a url", ``http://[::1``, bytes, None).
    """
    try:
        if isinstance(url, bytes | bytearray):
            text = bytes(url).decode("utf-8", "replace")
        else:
            text = url if isinstance(url, str) else str(url)
        m = _SCHEME_AUTHORITY.match(text)
        if m:
            text = text[: m.end()] + _redact_userinfo(text[m.end() :])
        base, hash_, fragment = text.partition("#")
        head, qmark, query = base.partition("?")
        if qmark:
            base = head + qmark + _redact_params(query)
        if hash_ and "=" in fragment:
            fragment = _redact_params(fragment)
        return base + hash_ + fragment
    except Exception:  # noqa: BLE001 - a message must never fail because of the URL it shows
        return "<URL hidden>"
