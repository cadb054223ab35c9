"""Grouping unknown faces into people: average-linkage agglomerative clustering at a distance threshold.

Two groups merge while the mean distance between their members is within the threshold, so one odd
frame (a blink, a turned head) neither splits a person nor chains two people together as single
linkage would. SciPy's `linkage` does the work; it needs the n(n-1)/2 pairwise distances, which grows
quickly (measured on 2 cores: 10,000 faces 7 s and 400 MB, 20,000 faces 53 s and 1.6 GB). Above
`max_exact` faces the clustering therefore runs in two stages: faces closer than `threshold / 2` to a
"leader" face join it (one pass, vectorised search), then the leaders' mean embeddings are clustered
as above and every face follows its leader. On our labelled set the two stages give the same purity
as the exact clustering (docs/benchmarks.md, face identity).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .match import THRESHOLD, EmbeddingIndex, as_matrix, check_threshold

#: Most faces clustered exactly (SciPy average linkage over all pairwise distances).
MAX_EXACT = 10_000
#: Faces compared with the leaders per step of the first stage.
LEADER_BATCH = 2_048


def _average_linkage(x: np.ndarray, threshold: float) -> np.ndarray:
    """Flat cluster ids (0-based, arbitrary order) of the rows of `x` at `threshold`."""
    if len(x) == 1:
        return np.zeros(1, np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(x.astype(np.float64), method="average", metric="euclidean")
    return fcluster(tree, t=threshold, criterion="distance").astype(np.int64) - 1


def leaders(x: np.ndarray, radius: float, batch: int = LEADER_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """One pass of leader clustering: (leader id of each row, leader rows' indices).

    A row joins the nearest leader within `radius`; a row with none becomes a leader itself. The
    result depends on the order of the rows (earlier rows lead), not on anything random.
    """
    n = len(x)
    assign = np.full(n, -1, np.int64)
    heads: list[int] = []
    for start in range(0, n, batch):
        block = np.arange(start, min(n, start + batch))
        if heads:
            idx, dist = EmbeddingIndex(x[heads]).search(x[block], 1)
            near = dist[:, 0] <= radius
            assign[block[near]] = idx[near, 0]
        new: list[int] = []  # leaders made within this block, compared one by one
        for i in block[assign[block] < 0]:
            if new:
                d = np.sqrt(((x[new] - x[i]) ** 2).sum(axis=1))
                j = int(np.argmin(d))
                if d[j] <= radius:
                    assign[i] = len(heads) - len(new) + j
                    continue
            heads.append(int(i))
            new.append(int(i))
            assign[i] = len(heads) - 1
    return assign, np.asarray(heads, np.int64)


def cluster_faces(
    embeddings: object,
    threshold: float = THRESHOLD,
    *,
    max_exact: int = MAX_EXACT,
    max_leaders: int = MAX_EXACT,
) -> np.ndarray:
    """A cluster id per embedding row: 0 for the largest group of faces, 1 for the next, and so on
    (ties by first appearance). Rows within `threshold` on average of a group's members join it.

    Up to `max_exact` rows are clustered exactly; beyond, in two stages (module docstring). When even
    the leaders exceed `max_leaders` (faces too varied to summarise), InputError asks for fewer faces.
    """
    x = as_matrix(embeddings)
    limit = check_threshold(threshold)
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    if n <= max_exact:
        raw = _average_linkage(x, limit)
    else:
        assign, heads = leaders(x, limit / 2.0)
        if len(heads) > max_leaders:
            raise InputError(
                f"{n} faces reduce to {len(heads)} distinct ones, more than the {max_leaders} that can be "
                "clustered at once: cluster a shorter time span"
            )
        counts = np.bincount(assign, minlength=len(heads)).astype(np.float64)
        means = np.zeros((len(heads), x.shape[1]), np.float64)
        np.add.at(means, assign, x)
        means /= counts[:, None]
        raw = _average_linkage(means, limit)[assign]
    return _renumber(raw)


def _renumber(raw: np.ndarray) -> np.ndarray:
    """Cluster ids by decreasing size, ties broken by the first row of each cluster."""
    ids, first, counts = np.unique(raw, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(ids.max() + 1, np.int64)
    mapping[ids[order]] = np.arange(len(ids))
    return mapping[raw]


def purity(clusters: object, truth: object) -> float:
    """Cluster purity: the share of items whose cluster's most common true label is their own label."""
    c = np.asarray(clusters)
    t = np.asarray(truth)
    if len(c) != len(t):
        raise InputError(f"{len(c)} cluster ids for {len(t)} true labels")
    if len(c) == 0:
        return 1.0
    hits = 0
    for cid in np.unique(c):
        _, counts = np.unique(t[c == cid], return_counts=True)
        hits += int(counts.max())
    return hits / len(c)
