"""Matching face embeddings, in plain NumPy: a gallery of enrolled people and nearest-neighbour search.

Distances are Euclidean, as dlib's descriptor is trained for. `Gallery.identify` gives each face the
name of the nearest enrolled embedding when it lies within `threshold`, else ``"unknown"``;
`EmbeddingIndex.search` finds the k nearest of up to millions of stored embeddings exactly (brute
force, vectorised, in chunks of bounded memory), and `search` does the same for a one-off matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .errors import EmptyGallery, UnknownIdentity

#: Embeddings closer than this are taken as the same person. Chosen from the measurements in
#: docs/benchmarks.md (face identity): no false accept on the labelled set at 0.5, where dlib's
#: authors suggest 0.6 for their LFW figures.
THRESHOLD = 0.5
#: The label of a face whose nearest enrolled embedding is farther than the threshold.
UNKNOWN = "unknown"
#: Most stored rows compared per step of a search (a step reads a slice of the stored matrix in place).
CHUNK = 262_144
#: Scratch memory of one search step: queries x rows x 4 bytes of distances; with many queries at once
#: the step takes fewer rows, so memory stays bounded whatever the number of queries and stored rows.
SCRATCH_BYTES = 64 * 1024**2


def as_matrix(embeddings: object, what: str = "embeddings") -> np.ndarray:
    """`embeddings` as a C-contiguous float32 (n, d) matrix; one vector becomes one row."""
    arr = np.asarray(embeddings, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or (arr.size and not np.isfinite(arr).all()):
        raise InputError(f"{what} must be a finite (n, d) matrix of numbers, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class Match:
    """The answer for one face: `name` (an enrolled name or "unknown"), the distance to the nearest
    enrolled embedding and whose it is (`nearest`, also when farther than the threshold)."""

    name: str
    distance: float
    nearest: str

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN


class EmbeddingIndex:
    """Exact k-nearest-neighbour search over a fixed matrix of stored embeddings (Euclidean).

    Squared norms of the stored rows are computed once; each search computes
    ``|q|^2 - 2 q.x + |x|^2`` for at most `chunk` rows at a time (one matrix product each; fewer rows when
    many queries would make the step's scratch exceed `SCRATCH_BYTES`), keeps the k
    best of every chunk, and recomputes the distances of the survivors directly, so the answer equals
    a plain ``argmin(norm(stored - q))`` up to float rounding and memory stays bounded whatever the
    number of stored rows.
    """

    def __init__(self, stored: object, *, chunk: int = CHUNK) -> None:
        if int(chunk) < 1:
            raise InputError(f"chunk must be >= 1, got {chunk!r}")
        self.stored_ = as_matrix(stored, "stored embeddings")
        self.chunk = int(chunk)
        self.sq_norms_ = np.einsum("ij,ij->i", self.stored_, self.stored_)

    def __len__(self) -> int:
        return len(self.stored_)

    def search(self, queries: object, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances), each (m, k'), of the `k` stored rows nearest each of the m queries,
        nearest first; k' = min(k, number stored). Ties go to the lower index."""
        q = as_matrix(queries, "query embeddings")
        n, dim = self.stored_.shape
        if len(q) and n and q.shape[1] != dim:
            raise InputError(f"query embeddings have {q.shape[1]} numbers, stored ones {dim}")
        if int(k) < 1:
            raise InputError(f"k must be >= 1, got {k!r}")
        k = min(int(k), n)
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), k), np.int64), np.zeros((len(q), k), np.float32)
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        best_idx = np.zeros((len(q), 0), np.int64)
        best_d2 = np.zeros((len(q), 0), np.float32)
        rows = max(1, min(self.chunk, SCRATCH_BYTES // (4 * len(q))))
        for start in range(0, n, rows):
            block = self.stored_[start : start + rows]
            d2 = q @ block.T
            d2 *= -2.0
            d2 += q_sq
            d2 += self.sq_norms_[start : start + len(block)]
            kk = min(k, len(block))
            if kk == 1:
                part = np.argmin(d2, axis=1)[:, None]
            elif kk < len(block):
                part = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
            else:
                part = np.tile(np.arange(len(block)), (len(q), 1))
            best_idx = np.concatenate([best_idx, part + start], axis=1)
            best_d2 = np.concatenate([best_d2, np.take_along_axis(d2, part, axis=1)], axis=1)
            if best_idx.shape[1] > k:
                keep = np.argpartition(best_d2, k - 1, axis=1)[:, :k]
                best_idx = np.take_along_axis(best_idx, keep, axis=1)
                best_d2 = np.take_along_axis(best_d2, keep, axis=1)
        # exact distances of the survivors (the expansion above loses digits to cancellation)
        diff = self.stored_[best_idx] - q[:, None, :]
        dist = np.sqrt(np.einsum("mkd,mkd->mk", diff, diff))
        order = np.lexsort((best_idx, dist), axis=1)
        return np.take_along_axis(best_idx, order, axis=1), np.take_along_axis(dist, order, axis=1)


def search(
    queries: object, stored: object, k: int = 1, *, chunk: int = CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows of `stored` nearest each query: (indices, distances), nearest first."""
    return EmbeddingIndex(stored, chunk=chunk).search(queries, k)


class Gallery:
    """Enrolled people: names, each with one or more embeddings (one per enrolment photo).

    `identify` labels faces with the nearest embedding's name, or "unknown" beyond the threshold.
    Plain NumPy in memory; where the names and embeddings are kept is the caller's business (the
    catalog, a file). Built empty or from parallel sequences of names and embedding rows.
    """

    def __init__(
        self, names: Sequence[str] = (), embeddings: object = None, *, threshold: float = THRESHOLD
    ) -> None:
        self.threshold = check_threshold(threshold)
        self._names: list[str] = []
        self._rows = np.zeros((0, 0), np.float32)
        self._index: EmbeddingIndex | None = None
        if len(names) or embeddings is not None:
            matrix = as_matrix(np.zeros((0, 0)) if embeddings is None else embeddings)
            if len(names) != len(matrix):
                raise InputError(f"{len(names)} names for {len(matrix)} embeddings: give one name per row")
            for name in dict.fromkeys(names):  # first-seen order
                rows = matrix[[i for i, n in enumerate(names) if n == name]]
                self.add(name, rows)

    # --- contents ------------------------------------------------------------------------------------

    def add(self, name: str, embeddings: object) -> None:
        """Enrol `name` with one or more embeddings (added to any it already has)."""
        name = check_name(name)
        rows = as_matrix(embeddings, f"embeddings of {name!r}")
        if len(rows) == 0:
            raise InputError(f"no embeddings given for {name!r}")
        if self._rows.size and rows.shape[1] != self._rows.shape[1]:
            raise InputError(
                f"embeddings of {name!r} have {rows.shape[1]} numbers, the gallery's {self._rows.shape[1]}"
            )
        self._rows = rows.copy() if not self._rows.size else np.concatenate([self._rows, rows])
        self._names.extend([name] * len(rows))
        self._index = None

    def remove(self, name: str) -> int:
        """Forget `name` and all its embeddings; returns how many embeddings went. UnknownIdentity if absent."""
        if name not in self._names:
            raise UnknownIdentity(
                f"no enrolled identity named {name!r}; enrolled: {', '.join(self.names) or 'none'}"
            )
        keep = np.array([n != name for n in self._names], dtype=bool)
        gone = int((~keep).sum())
        self._rows = self._rows[keep] if keep.any() else np.zeros((0, 0), np.float32)
        self._names = [n for n in self._names if n != name]
        self._index = None
        return gone

    @property
    def names(self) -> list[str]:
        """Enrolled names, sorted, each once."""
        return sorted(set(self._names))

    def embeddings(self, name: str | None = None) -> np.ndarray:
        """All stored rows (a copy), or those of `name`."""
        if name is None:
            return self._rows.copy()
        return self._rows[[i for i, n in enumerate(self._names) if n == name]]

    def __len__(self) -> int:
        """Number of enrolled names."""
        return len(set(self._names))

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"Gallery({len(self)} names, {len(self._names)} embeddings, threshold={self.threshold})"

    # --- matching ------------------------------------------------------------------------------------

    def identify(self, embeddings: object, threshold: float | None = None) -> list[Match]:
        """One `Match` per embedding row: the nearest enrolled name within `threshold` (default the
        gallery's), else "unknown". EmptyGallery when nobody is enrolled."""
        limit = self.threshold if threshold is None else check_threshold(threshold)
        if not self._names:
            raise EmptyGallery("no identities are enrolled: enrol at least one person's photo first")
        if self._index is None:
            self._index = EmbeddingIndex(self._rows)
        idx, dist = self._index.search(embeddings, 1)
        out = []
        for i, d in zip(idx[:, 0], dist[:, 0], strict=True):
            nearest = self._names[int(i)]
            out.append(Match(nearest if d <= limit else UNKNOWN, float(d), nearest))
        return out


def check_name(name: object) -> str:
    """A usable identity name: non-empty text, not "unknown", no control characters, at most 200 chars."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"an identity name must be non-empty text, got {name!r}")
    name = name.strip()
    if name == UNKNOWN:
        raise InputError(f"{UNKNOWN!r} is the label of faces nobody enrolled; choose another name")
    if len(name) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InputError(f"identity name {name[:40]!r} is too long or has control characters")
    return name


def check_threshold(threshold: object) -> float:
    value = float(threshold)  # type: ignore[arg-type]
    if not np.isfinite(value) or value <= 0.0:
        raise InputError(f"distance threshold must be a positive number, got {threshold!r}")
    return value


def pairwise(embeddings: Iterable[np.ndarray] | np.ndarray) -> np.ndarray:
    """Euclidean distances between every two rows: a symmetric (n, n) float64 matrix."""
    x = as_matrix(embeddings).astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)
