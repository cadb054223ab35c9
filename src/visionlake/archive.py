"""The image archive: JPEG files under one root, on any fsspec filesystem (a directory, S3, ...).

Keys are `<camera>/<yyyy>/<mm>/<dd>/<frame_id>.jpg`. Camera ids are user text, so each is escaped to
one safe path segment: no key can climb out of the archive root whatever the camera is called.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime

import fsspec

from .errors import ArchiveError, BackendUnavailable, MissingDependency
from .frames import utc

_SAFE = re.compile(r"[A-Za-z0-9_\-]")
_FRAME_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


MAX_SEGMENT = 200  # bytes; file systems allow 255


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


class Archive:
    """Write-once image store; `put` is idempotent so a re-processed frame rewrites nothing."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except ImportError as e:
            raise MissingDependency(f"archive {url!r}", "s3", e.name) from e
        except ValueError as e:
            raise ArchiveError(f"unsupported archive URL {url!r}: {e}") from e
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        if self.local:
            try:
                self.fs.makedirs(self.root, exist_ok=True)
            except OSError as e:
                raise BackendUnavailable(f"cannot create archive directory {self.root}: {e}") from e

    def key(self, camera: str, captured_at: datetime, frame_id: str) -> str:
        t = utc(captured_at)
        return f"{escape_segment(camera)}/{t:%Y}/{t:%m}/{t:%d}/{check_frame_id(frame_id)}.jpg"

    def uri(self, key: str) -> str:
        """Where a key lives: a plain path for local archives, a full URL otherwise."""
        path = f"{self.root}/{key}"
        return path if self.local else self.fs.unstrip_protocol(path)

    def _path(self, uri: str) -> str:
        path = self.fs._strip_protocol(uri)
        root = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        if not path.startswith(root) or "/../" in path or path.endswith("/.."):
            raise ArchiveError(f"{uri!r} is not inside the archive {self.url}")
        return path

    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key` unless an object of the same size is there; returns its URI."""
        uri = self.uri(key)
        path = self._path(uri)
        try:
            if self.fs.exists(path) and self.fs.size(path) == len(data):
                return uri
            if self.local:  # atomic: a crash never leaves a half-written JPEG under the final name
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except OSError as e:
            raise ArchiveError(f"cannot write {uri}: {e}") from e
        return uri

    def get(self, uri: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(uri))
        except FileNotFoundError:
            raise ArchiveError(f"{uri} is not in the archive") from None
        except OSError as e:
            raise ArchiveError(f"cannot read {uri}: {e}") from e

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self._path(uri))
