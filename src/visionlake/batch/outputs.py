"""Where batch steps write: checks on an output path and atomic files (temp file + rename).

Every artefact (dataset, features, vocabulary, model) is written under a temporary name and renamed
when complete, so a crash or Ctrl-C never leaves a half-written file under the name a later step reads.
An output being overwritten is removed only once its replacement is in place: a step that fails keeps it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import InputError

__all__ = [
    "AtomicWriter",
    "atomic_file",
    "check_output",
    "clear_output",
    "replace_output",
    "staged_output",
    "writable_file",
]


def writable_file(path: str | os.PathLike[str], what: str = "") -> str:
    """`path` as str; InputError when its folder is missing or it is a directory."""
    path = os.fspath(path)
    name = f"{what} {path!r}" if what else repr(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {name}: the folder {parent!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"cannot write {name}: it is a directory")
    return path


def check_output(
    path: str | os.PathLike[str], overwrite: bool, src: str | os.PathLike[str] | None = None
) -> str:
    """`path` as str; InputError when it is the source, exists (unless `overwrite`) or has no folder."""
    path = os.fspath(path)
    if src is not None and os.path.exists(path) and os.path.samefile(src, path):
        raise InputError(f"cannot write {os.fspath(src)!r} into itself: choose another OUT")
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{path!r} already exists: pass overwrite (--overwrite) to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {path!r}: the folder {parent!r} does not exist")
    return path


def clear_output(path: str) -> None:
    """Remove an output: a file, or the part directory Spark writes."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def replace_output(new: str, path: str) -> None:
    """Give `new` (a file or a directory) the name `path`, removing what `path` held only afterwards.

    A file replaces a file in one rename. A directory cannot, so the old output is renamed aside first
    and put back if the new one cannot take its place.
    """
    if not (os.path.isdir(new) or os.path.isdir(path)):
        os.replace(new, path)
        return
    old = f"{path}.old-{os.getpid()}"
    clear_output(old)
    had_old = os.path.lexists(path)
    if had_old:
        os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        if had_old:
            os.rename(old, path)
        raise
    if had_old:
        clear_output(old)


@contextmanager
def staged_output(path: str) -> Iterator[str]:
    """Yield a temporary sibling of `path` for a step to write (a file or a part directory).

    On success it replaces `path`; on failure it is removed and `path` is left as it was, so that a
    failed `--overwrite` never costs the previous result.
    """
    tmp = f"{path}.new-{os.getpid()}"
    clear_output(tmp)
    try:
        yield tmp
        replace_output(tmp, path)
    except BaseException:
        clear_output(tmp)
        raise


def _temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


@contextmanager
def atomic_file(path: str | os.PathLike[str], what: str = "") -> Iterator[str]:
    """Yield a temporary path to write; it becomes `path` on success and is removed on failure."""
    path = writable_file(path, what)
    tmp = _temp_name(path)
    try:
        yield tmp
        replace_output(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class AtomicWriter:
    """Base of streaming writers: subclasses open `self._tmp`, implement `_close_stream`."""

    def __init__(self, path: str | os.PathLike[str], what: str = "") -> None:
        self.path = writable_file(path, what)
        self._tmp = _temp_name(self.path)

    def _close_stream(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file and give it its final name."""
        self._close_stream()
        replace_output(self._tmp, self.path)

    def abort(self) -> None:
        """Drop what was written; the final name is left untouched."""
        self._close_stream()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
