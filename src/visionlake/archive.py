"""The image archive: JPEG files under one root, on any fsspec filesystem (a directory, S3, ...).

Keys are `<camera>/<yyyy>/<mm>/<dd>/<frame_id>.jpg`. Camera ids are user text, so each is escaped to
one safe path segment: no key can climb out of the archive root whatever the camera is called.

Local archives write a temporary file and link it into place. S3 archives (`s3://bucket/prefix`,
through s3fs) write with one PUT, which S3 makes visible all at once. Credentials and endpoint come
from the standard AWS places (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, AWS_PROFILE and ~/.aws) unless `storage_options` (the lake's
`[archive_options]`) name them: `endpoint_url`, `key`, `secret`, `client_kwargs`, `config_kwargs`,
... go to `s3fs.S3FileSystem`; `retry_seconds` is read here.

Failures on S3, and the error each becomes:

- s3fs missing: `MissingDependency` (pip install 'visionlake[s3]');
- no credentials, a key or secret the server refuses, no permission, or a missing bucket:
  `ConfigError`, checked when the archive is opened, naming the access key id (never the secret),
  the endpoint and the bucket. Deliberately not an `ArchiveError`: that one means "this object or key
  is bad" and makes a worker dead-letter the frame; a wrong setting must stop it before any commit;
- the endpoint not answering, timeouts, connection resets, 5xx, throttling: retried with backoff
  (botocore's standard retry mode for single requests, then this module for outages) until
  `retry_seconds` (default 60) have passed, then `BackendUnavailable`. Every write is idempotent, so
  an operation retried after the server had in fact done it changes nothing. Opening the archive
  waits at most `CHECK_SECONDS` for the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import fsspec

from .errors import (
    ArchiveConflict,
    ArchiveError,
    ArchiveFull,
    BackendUnavailable,
    ConfigError,
    MissingDependency,
)
from .frames import utc
from .redact import redact_url

log = logging.getLogger("visionlake.archive")

_SAFE = re.compile(r"[A-Za-z0-9_\-]")
_FRAME_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
T = TypeVar("T")
#: Local writes go to this folder first, then are linked into place; `.` cannot start an escaped
#: camera segment, so no key can land here. What a killed writer leaves is swept after an hour.
PARTIAL_DIR = ".partial"
PARTIAL_MAX_AGE = 3600.0
_LOADER: Any = None  # botocore's data loader, shared by the sessions of all S3 archives


MAX_SEGMENT = 200  # bytes; file systems allow 255

#: How long an S3 operation keeps retrying through an outage before BackendUnavailable.
RETRY_SECONDS = 60.0
#: How long opening an S3 archive waits for the endpoint (bucket and credential check).
CHECK_SECONDS = 10.0
#: botocore settings for every S3 request; `[archive_options] config_kwargs` overrides each key.
S3_CONFIG = {
    "connect_timeout": 3,
    "read_timeout": 10,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
_S3_PROTOCOLS = ("s3", "s3a")
_AUTH_CODES = {
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "InvalidSecurity",
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
    "Forbidden",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "InternalError",
    "PriorRequestNotComplete",
}


def escape_segment(text: str) -> str:
    """Percent-encode everything but [A-Za-z0-9_-] (dots too, so '.' and '..' cannot appear).

    A segment too long for a file name is cut and suffixed with `~` and a hash of the whole text
    (`~` never appears in escaped output, so distinct texts stay distinct).
    """
    out = "".join(c if _SAFE.match(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in text)
    if not out:
        raise ArchiveError("empty path segment")
    if len(out) > MAX_SEGMENT:
        digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        out = out[: MAX_SEGMENT - 17] + "~" + digest
    return out


def check_frame_id(frame_id: str) -> str:
    if not _FRAME_ID.fullmatch(frame_id):
        raise ArchiveError(f"invalid frame id {frame_id!r}: use 1-128 of A-Z a-z 0-9 _ -")
    return frame_id


def _s3_options(options: dict[str, Any]) -> dict[str, Any]:
    """Bounded timeouts and retries unless the user set their own; a filesystem of our own."""
    out = dict(options)
    config = {**S3_CONFIG, **dict(out.get("config_kwargs") or {})}
    config["retries"] = {**S3_CONFIG["retries"], **dict(config.get("retries") or {})}
    out["config_kwargs"] = config
    # fsspec caches filesystems by their arguments only; credentials from the environment or
    # ~/.aws could change between two archives with the same arguments
    out.setdefault("skip_instance_cache", True)
    return out


# --- classifying S3 failures -------------------------------------------------------------------

_NOT_FOUND, _NO_BUCKET, _AUTH, _NO_CREDENTIALS, _TRANSIENT, _BAD_OPTION, _OTHER = (
    "not-found",
    "no-bucket",
    "auth",
    "no-credentials",
    "transient",
    "bad-option",
    "other",
)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _client_error(exc: BaseException) -> tuple[str, int, str] | None:
    """(code, HTTP status, message) of the botocore ClientError behind an s3fs exception, if any."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            err = response.get("Error") or {}
            status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            return str(err.get("Code") or status), status, str(err.get("Message") or "")
    return None


def _classify(exc: BaseException) -> str:
    try:
        from botocore import exceptions as bex
    except ImportError:  # pragma: no cover - s3fs depends on botocore
        bex = None
    chain = _chain(exc)
    if bex is not None:
        if any(isinstance(e, bex.NoCredentialsError | bex.PartialCredentialsError) for e in chain):
            return _NO_CREDENTIALS
        if any(isinstance(e, bex.ConnectionError | bex.HTTPClientError) for e in chain):
            return _TRANSIENT
    ce = _client_error(exc)
    if ce is not None:
        code, status, _ = ce
        if code == "NoSuchBucket":
            return _NO_BUCKET
        if code in _AUTH_CODES or status == 403:
            return _AUTH
        if code in {"NoSuchKey", "NotFound", "404"} or status == 404:
            return _NOT_FOUND
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return _TRANSIENT
        return _OTHER
    for e in chain:
        if isinstance(e, ConnectionError | TimeoutError | asyncio.TimeoutError):
            return _TRANSIENT
        if type(e).__name__ in {"FSTimeoutError", "ClientPayloadError", "ServerDisconnectedError"}:
            return _TRANSIENT
        if type(e).__module__.startswith("aiohttp") and "Client" in type(e).__name__:
            return _TRANSIENT
    if isinstance(exc, TypeError):  # an unknown storage option reaches botocore as a TypeError
        return _BAD_OPTION
    if isinstance(exc, FileNotFoundError):
        return _NOT_FOUND
    return _OTHER


class Archive:
    """Write-once image store; `put` is idempotent so a re-processed frame rewrites nothing.

    `storage_options` go to the fsspec filesystem (for S3: endpoint_url, key, secret, client_kwargs,
    config_kwargs, ...) except `retry_seconds`, how long S3 operations retry through an outage.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        protocol, rest = fsspec.core.split_protocol(url)
        self.s3 = protocol in _S3_PROTOCOLS
        if self.s3 and not rest.strip("/"):
            raise ConfigError(f"archive URL {redact_url(url)!r} names no bucket: use s3://bucket/prefix")
        self.url = url.rstrip("/")
        options = dict(storage_options or {})
        try:
            self.retry_seconds = float(options.pop("retry_seconds", RETRY_SECONDS))
        except (TypeError, ValueError):
            raise ConfigError("archive option retry_seconds must be a number of seconds") from None
        if self.s3:
            options = _s3_options(options)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        except ImportError as e:
            if self.s3:
                raise MissingDependency(f"S3 archive {redact_url(url)!r}", "s3", "s3fs") from e
            raise ConfigError(
                f"archive {redact_url(url)!r} needs a package that is not installed: {e}"
            ) from e
        except TypeError as e:
            raise ConfigError(f"invalid archive_options for {redact_url(url)!r}: {e}") from e
        except ValueError as e:
            raise ArchiveError(f"unsupported archive URL {redact_url(url)!r}: {e}") from e
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self._root_prefix = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        if self.local:
            self._tmp_prefix = uuid.uuid4().hex[:12]  # with the pid and a counter: unique temporary names
            self._tmp_seq = itertools.count()
            try:
                self.fs.makedirs(f"{self.root}/{PARTIAL_DIR}", exist_ok=True)
            except OSError as e:
                raise BackendUnavailable(f"cannot create archive directory {self.root}: {e}") from e
            self._sweep_partial()
        elif self.s3:
            self.fs.retries = 1  # s3fs's own retry layer off: botocore's and ours bound the time
            self._share_service_models()
            self.bucket, _, self.prefix = self.root.partition("/")
            if not self.bucket:
                raise ConfigError(f"archive URL {redact_url(url)!r} names no bucket: use s3://bucket/prefix")
            self._check_bucket()

    def _share_service_models(self) -> None:
        """Give s3fs a session that reuses botocore's parsed service models (0.03 s, not 0.2 s, a client).

        The session is the one s3fs would make (same arguments); only the read-only data loader is
        shared, so credentials are still resolved per archive.
        """
        global _LOADER
        if getattr(self.fs, "session", None) is not None:
            return  # the caller passed a session of their own
        from aiobotocore.session import AioSession

        try:
            session = AioSession(**self.fs.kwargs)
        except TypeError as e:
            raise ConfigError(f"invalid archive_options for {redact_url(self.url)}: {e}") from e
        if _LOADER is None:
            _LOADER = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _LOADER)
        self.fs.session = session

    def _sweep_partial(self) -> None:
        """Remove writes a killed process left half done (older than PARTIAL_MAX_AGE: none in flight)."""
        folder = f"{self.root}/{PARTIAL_DIR}"
        cutoff = time.time() - PARTIAL_MAX_AGE
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)

    # -- keys and URIs ---------------------------------------------------------------------------

    def key(self, camera: str, captured_at: datetime, frame_id: str, ext: str = "jpg") -> str:
        """`<camera>/<yyyy>/<mm>/<dd>/<frame id>.<ext>`; the extension names the image's real format."""
        if ext not in ("jpg", "png"):
            raise ArchiveError(f"unsupported image extension {ext!r}: frames are stored as jpg or png")
        t = utc(captured_at)
        return f"{escape_segment(camera)}/{t:%Y}/{t:%m}/{t:%d}/{check_frame_id(frame_id)}.{ext}"

    def uri(self, key: str) -> str:
        """Where a key lives: a plain path for local archives, a full URL (s3://...) otherwise."""
        path = f"{self.root}/{key}"
        return path if self.local else self.fs.unstrip_protocol(path)

    def _path(self, uri: str) -> str:
        root = self._root_prefix
        # a local URI under the root is a plain absolute path already: nothing to strip
        path = uri if self.local and uri.startswith(root) else self.fs._strip_protocol(uri)
        if not path.startswith(root) or "/../" in path or path.endswith("/.."):
            raise ArchiveError(f"{uri!r} is not inside the archive {redact_url(self.url)}")
        return path

    # -- operations ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key` unless the same bytes are there; returns its URI.

        A key names one image for ever: other bytes already under it raise ArchiveConflict instead
        of replacing them, so the catalog row that describes the stored image stays true.
        """
        uri = self.uri(key)
        path = self._path(uri)
        if self.s3:
            return self._retrying("write", uri, lambda budget: self._s3_put(path, data, budget))
        try:
            if self.local:
                self._put_local(uri, path, data)
            elif self.fs.exists(path):
                self._check_same(uri, self.fs.cat_file(path), data)
            else:  # object stores make one write visible at once
                self.fs.pipe_file(path, data)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise ArchiveFull(f"cannot write {uri}: the archive's disk is full ({e.strerror})") from e
            raise ArchiveError(f"cannot write {uri}: {e}") from e
        return uri

    def _put_local(self, uri: str, path: str, data: bytes) -> None:
        """Atomic, and never over another writer's object: write aside, then link into place.

        Five system calls for a new object (create, write, close, link, remove the temporary name), each
        costly on a sandboxed or network file system: the link itself says whether the key is
        taken or its folder is missing, and temporary names need no random bytes.
        """
        tmp = f"{self.root}/{PARTIAL_DIR}/{self._tmp_prefix}-{os.getpid()}-{next(self._tmp_seq)}.tmp"
        try:
            self._write_file(tmp, data)
            self._link(tmp, path)
        except FileExistsError:
            self._check_same(uri, _read(path), data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # also what a failed write left

    @staticmethod
    def _link(tmp: str, path: str) -> None:
        try:
            os.link(tmp, path)
        except FileNotFoundError:  # the key's folder is not there yet (a new camera or day), or was pruned
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.link(tmp, path)

    @staticmethod
    def _write_file(path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # not inherited (PEP 446)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    @staticmethod
    def _check_same(uri: str, stored: bytes, data: bytes) -> None:
        if stored != data:
            raise ArchiveConflict(
                f"{uri} already holds another image ({len(stored)} bytes, sha256 "
                f"{hashlib.sha256(stored).hexdigest()[:12]}; this one {len(data)} bytes, sha256 "
                f"{hashlib.sha256(data).hexdigest()[:12]})"
            )

    def get(self, uri: str) -> bytes:
        path = self._path(uri)
        if self.s3:
            return self._retrying(
                "read", uri, lambda budget: self._s3_call(self.fs._cat_file, path, budget=budget)
            )
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise ArchiveError(f"{uri} is not in the archive") from None
        except OSError as e:
            raise ArchiveError(f"cannot read {uri}: {e}") from e

    def exists(self, uri: str) -> bool:
        path = self._path(uri)
        if self.s3:
            return self._retrying("check", uri, lambda budget: self._s3_head(path, budget)) is not None
        return self.fs.exists(path)

    # -- S3 --------------------------------------------------------------------------------------

    def _s3_call(self, fn: Callable[..., Any], *args: Any, budget: float, **kwargs: Any) -> Any:
        """Run one s3fs coroutine on its event loop, cancelled after `budget` seconds."""
        return fsspec.asyn.sync(self.fs.loop, fn, *args, timeout=max(budget, 0.1), **kwargs)

    def _s3_head(self, path: str, budget: float) -> dict | None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            return self._s3_call(self.fs._call_s3, "head_object", Bucket=bucket, Key=key, budget=budget)
        except Exception as e:
            if _classify(e) == _NOT_FOUND:
                return None
            raise

    def _s3_put(self, path: str, data: bytes, budget: float) -> str:
        start = time.monotonic()
        head = self._s3_head(path, budget)
        uri = self.fs.unstrip_protocol(path)
        if head is None:  # a single PUT makes the object visible at once, whole
            left = budget - (time.monotonic() - start)
            self._s3_call(self.fs._pipe_file, path, data, budget=left, ContentType="image/jpeg")
            return uri
        etag = str(head.get("ETag", "")).strip('"')
        if int(head["ContentLength"]) == len(data) and etag == hashlib.md5(data).hexdigest():
            return uri
        left = budget - (time.monotonic() - start)  # sizes differ or the ETag is no MD5: compare bytes
        stored = self._s3_call(self.fs._cat_file, path, budget=left)
        self._check_same(uri, stored, data)
        return uri

    def _check_bucket(self) -> None:
        """Fail fast and clearly on a missing bucket, refused credentials or an unreachable endpoint."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        self._retrying(
            "open",
            f"s3://{self.root}",
            lambda budget: self._s3_call(
                self.fs._call_s3,
                "list_objects_v2",
                Bucket=self.bucket,
                Prefix=prefix,
                MaxKeys=1,
                budget=budget,
            ),
            seconds=min(self.retry_seconds, CHECK_SECONDS),
        )

    def _retrying(self, op: str, uri: str, call: Callable[[float], T], seconds: float | None = None) -> T:
        """`call(budget)` until it succeeds, a non-transient error, or `seconds` have passed."""
        seconds = self.retry_seconds if seconds is None else seconds
        deadline = time.monotonic() + seconds
        delay, attempt = 0.2, 0
        cause: BaseException | None = None  # the most telling failure: a refusal beats our own timeout
        while True:
            attempt += 1
            try:
                return call(deadline - time.monotonic())
            except ArchiveConflict:
                raise
            except Exception as e:  # noqa: BLE001 - classified below; unknown errors re-raised as ours
                kind = _classify(e)
                if kind != _TRANSIENT:
                    raise self._error(kind, e, op, uri) from e
                if cause is None or type(e).__name__ != "FSTimeoutError":
                    cause = e
                left = deadline - time.monotonic()
                if left <= 0.05:
                    raise BackendUnavailable(
                        f"S3 endpoint {self._endpoint()} did not answer ({op} {uri}) within {seconds:g} s "
                        f"({attempt} attempt{'s' if attempt > 1 else ''}; last error: {_describe(cause)})"
                    ) from e
                pause = min(delay * random.uniform(0.5, 1.0), left)
                log.warning(
                    "S3 %s %s failed (%s); retrying in %.1f s (%.0f s left)",
                    op,
                    uri,
                    _describe(e),
                    pause,
                    left,
                )
                time.sleep(pause)
                delay = min(delay * 2, 5.0)

    def _error(self, kind: str, exc: BaseException, op: str, uri: str) -> Exception:
        endpoint, shown = self._endpoint(), redact_url(self.url)
        if kind == _NO_BUCKET or (kind == _NOT_FOUND and op == "open"):
            return ConfigError(
                f"bucket {self.bucket!r} does not exist at endpoint {endpoint} (archive {shown}): "
                "create it, or fix the archive URL"
            )
        if kind == _NO_CREDENTIALS:
            return ConfigError(
                f"no S3 credentials found for archive {shown} at {endpoint}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, a profile in ~/.aws, or key/secret under [archive_options]"
            )
        if kind == _AUTH:
            ce = _client_error(exc)
            code, message = (ce[0], ce[2]) if ce else ("AccessDenied", "")
            why = f"{code}: {message}" if message and message != code else code
            return ConfigError(
                f"S3 at {endpoint} refused access key id {self._key_id()!r} for bucket {self.bucket!r} "
                f"({why}): check the key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, "
                "or [archive_options] key/secret) and that the key may list, read and write the bucket"
            )
        if kind == _BAD_OPTION:
            return ConfigError(f"invalid archive_options for {shown}: {exc}")
        if kind == _NOT_FOUND:
            return ArchiveError(f"{uri} is not in the archive")
        return ArchiveError(f"cannot {op} {uri}: {_describe(exc)}")

    def _endpoint(self) -> str:
        """The endpoint as messages show it (an endpoint_url may carry credentials)."""
        client = getattr(self.fs, "_s3", None)
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
        endpoint = endpoint or getattr(self.fs, "endpoint_url", None)
        return redact_url(endpoint) if endpoint else "the default AWS endpoint"

    def _key_id(self) -> str:
        """The access key id the requests were signed with (public, unlike the secret)."""
        if getattr(self.fs, "anon", False):
            return "(anonymous)"
        client = getattr(self.fs, "_s3", None)
        creds = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        try:
            key = getattr(creds, "access_key", None)
        except Exception:  # noqa: BLE001 - refreshable credentials may fail to refresh here
            key = None
        return key or getattr(self.fs, "key", None) or os.environ.get("AWS_ACCESS_KEY_ID") or "(none)"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
