"""The engine interface: where the batch steps run (local processes or Spark), one contract for both.

An engine reads and writes the Parquet layouts of `visionlake.batch.records`, so the files one engine
writes are input to the other. Engines agree on the same input: the same descriptors, the same
bags of words and predictions for the same vocabulary and model, and vocabularies of the same quality
(k-means differs between scikit-learn and MLlib, so centres are compared by quantisation error).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..batch.dataset import PackReport
    from ..batch.encode import BowEncoder
    from ..batch.features import FeatureExtractor
    from ..batch.vocabulary import Vocabulary

__all__ = ["EncodeReport", "Engine", "ExtractReport", "Progress", "Rejected"]

# Called with the number of items just finished (images for extract/encode); None = no progress shown.
Progress = Callable[[int], None] | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input item that could not be processed, and why (listed to the user, never dropped silently)."""

    key: str
    reason: str


@dataclass
class ExtractReport:
    out: str
    algo: str
    images: int = 0  # feature rows written (including images with no keypoints)
    empty: int = 0  # images with no keypoints (kept with an empty matrix)
    descriptors: int = 0
    seconds: float = 0.0
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EncodeReport:
    out: str
    images: int = 0
    dim: int = 0
    descriptors: int = 0
    seconds: float = 0.0


class Engine(abc.ABC):
    """Runs the data-parallel batch steps. Use as a context manager; `close` frees workers/sessions."""

    name: ClassVar[str]

    @abc.abstractmethod
    def pack(
        self, src: str, out: str, format: str = "parquet", progress: Progress = None, overwrite: bool = False
    ) -> PackReport:
        """Pack a folder of images (or a SequenceFile/Parquet dataset) into a dataset at `out`.

        Every image is decoded once; undecodable ones are in `report.rejected` with their reason. The
        engines write the same images, keys, labels and hashes (local: one file; Spark: part files).
        """

    @abc.abstractmethod
    def extract(
        self, dataset: str, out: str, extractor: FeatureExtractor, progress: Progress = None
    ) -> ExtractReport:
        """Extract features of every image of `dataset` (Parquet or SequenceFile) into Parquet `out`.

        Unreadable images are in `report.rejected` with their reason; every other image gets a row.
        """

    @abc.abstractmethod
    def train_vocabulary(
        self, features: str, k: int, *, sample: int | None = None, seed: int = 0, max_iter: int = 100
    ) -> Vocabulary:
        """K-means centres of the descriptors in `features` (a random `sample` of them when given)."""

    @abc.abstractmethod
    def encode(self, features: str, encoder: BowEncoder, out: str, progress: Progress = None) -> EncodeReport:
        """Bag-of-words vectors of every row of `features` with a fitted `encoder`, into Parquet `out`."""

    @abc.abstractmethod
    def predict(self, model: Any, bow: str) -> tuple[list[str], list[str | None], list[str]]:
        """(keys, true labels, predicted labels) of every row of the bag-of-words dataset `bow`.

        `model` is a fitted scikit-learn classifier (`predict` on float32 (n, dim) arrays).
        """

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release processes or sessions."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
