"""Image features (SIFT, ORB, AKAZE, dense SIFT; a global HOG) as a scikit-learn transformer.

One `FeatureExtractor` serves the local engine, Spark executors and `sklearn.pipeline.Pipeline`: it
holds only its parameters, builds its OpenCV detector lazily and drops it when pickled (OpenCV objects
do not pickle). Every image that decodes gives a `FeatureSet`, also when it has no keypoints (an empty
matrix), so no row is lost between steps; descriptors keep their native dtype (float32 or uint8).

A global HOG (Dalal & Triggs over the whole image, stretched to a square window) is a feature type of
its own (`algo="hog"`: no local descriptors, only the image's HOG) or an addition to local features
(`hog=True`); it travels as the FeatureSet's `image_descriptor`, which the encoders append to their
vectors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..engines.base import Rejected
from ..errors import FrameError, InputError
from .records import FeatureSet, ImageRecord

__all__ = ["ALGORITHMS", "FeatureExtractor", "decode_grey"]

ALGORITHMS = ("sift", "orb", "akaze", "dense-sift", "hog")

#: Descriptor length and stored dtype of each algorithm (OpenCV 4.x). OpenCV's SIFT hands back float32
#: matrices of whole numbers 0-255 (it rounds every value to a byte inside), so they are stored as
#: uint8: exactly the same values in a quarter of the bytes. RootSIFT values are real floats: float32.
_LAYOUT = {
    "sift": (128, "uint8"),
    "dense-sift": (128, "uint8"),
    "orb": (32, "uint8"),
    "akaze": (61, "uint8"),
    "hog": (0, "float32"),  # no local descriptors: the HOG is the image descriptor
}
#: HOG layout: blocks of 2 x 2 cells moved by one cell, 9 unsigned orientation bins (Dalal & Triggs).
HOG_BINS = 9
#: The algorithms with gradient-histogram descriptors, which RootSIFT applies to.
_SIFT_FAMILY = ("sift", "dense-sift")

#: ORB keeps at most `nfeatures`; "all" needs a cap that no real image reaches.
_ORB_ALL = 1 << 20

#: Detectors skip images with a shorter side below this: no feature fits (SIFT's border, ORB's 31 px
#: patch) and OpenCV 4.x's ORB and AKAZE crash, even corrupting memory, on images 1-2 pixels thin.
MIN_SIDE = 16

#: OpenCV's SIFT descriptor spans 4 bins of 3 * size / 2 pixels: a patch of `w` pixels is size w / 6.
_SIFT_PATCH_PER_SIZE = 6.0

Image = bytes | np.ndarray | ImageRecord


def decode_grey(data: bytes) -> np.ndarray | None:
    """The image in `data` as a grey uint8 array (decoded straight to grey: faster), or None."""
    if not data:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def _grey_array(image: np.ndarray) -> np.ndarray:
    """A grey uint8 view/copy of a grey (HxW, HxWx1), BGR (HxWx3) or BGRA (HxWx4) uint8 array."""
    if image.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8, not {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise ValueError(f"an image array must be HxW, HxWx3 or HxWx4, not {image.shape}")


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Local descriptors of images: a list of images in, a list of `FeatureSet` out (one per image).

    algo: one of ALGORITHMS. max_keypoints: keep the N strongest by response (0 = all; not for
    dense-sift, whose grid is fixed). size: resize so the longer side is `size` pixels, up or down
    (0 = keep). dense_step: grid spacing in pixels of dense-sift. dense_sizes: patch widths in pixels
    that dense-sift describes at every grid point (one descriptor per point and size). root: RootSIFT
    (L1-normalise, then square root; float32 descriptors), for sift and dense-sift only.
    hog: also compute a global HOG of each image (`image_descriptor`); implied by algo="hog", which
    computes only that. hog_size: the HOG window, a square of that many pixels the whole image is
    resized to (aspect ratio not kept). hog_cell: HOG cell side in pixels (blocks of 2 x 2 cells,
    stride one cell, 9 bins): (hog_size / hog_cell - 1)² x 36 values, 1,764 for 64 / 8.

    Keypoints are x, y fractions of the image's width and height, so they mean the same place whatever
    `size` did (a spatial pyramid needs that). The extractor learns nothing from data: `fit` checks the
    parameters and records the descriptor layout, and `transform` fits on first use.
    """

    def __init__(
        self,
        algo: str = "sift",
        max_keypoints: int = 0,
        size: int = 0,
        dense_step: int = 8,
        dense_sizes: tuple[int, ...] = (16,),
        root: bool = False,
        hog: bool = False,
        hog_size: int = 64,
        hog_cell: int = 8,
    ) -> None:
        self.algo = algo
        self.max_keypoints = max_keypoints
        self.size = size
        self.dense_step = dense_step
        self.dense_sizes = dense_sizes
        self.root = root
        self.hog = hog
        self.hog_size = hog_size
        self.hog_cell = hog_cell

    # --- scikit-learn -----------------------------------------------------------------------------

    def fit(self, X: Any = None, y: Any = None) -> FeatureExtractor:
        """Check the parameters and set `descriptor_dim_` and `descriptor_dtype_`; `X` is not used."""
        self._check_params()
        self.descriptor_dim_, self.descriptor_dtype_ = _LAYOUT[self.algo]
        if self.root:
            self.descriptor_dtype_ = "float32"
        self.with_hog_ = bool(self.hog) or self.algo == "hog"
        side = self.hog_size // self.hog_cell - 1
        self.image_dim_ = side * side * 4 * HOG_BINS if self.with_hog_ else 0
        self._detector = None
        self._hog = None
        self._grids: dict[tuple[int, int], tuple[cv2.KeyPoint, ...]] = {}
        return self

    def transform(self, X: Iterable[Image]) -> list[FeatureSet]:
        """One FeatureSet per item; InputError names the first item that does not decode.

        Items are encoded image bytes, uint8 arrays (grey or BGR) or ImageRecords. Bytes and arrays
        are keyed by their position in `X`.
        """
        self._ensure_fitted()
        out = []
        for i, item in enumerate(X):
            try:
                out.append(self._extract_item(i, item))
            except FrameError as exc:
                raise InputError(f"image {i} of the input: {exc.reason}") from exc
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # stateless: transform fits on first use
        tags.input_tags.two_d_array = False
        return tags

    def __getstate__(self) -> dict[str, Any]:
        # OpenCV detectors and KeyPoints do not pickle; they are rebuilt on first use.
        state = super().__getstate__()
        state.pop("_detector", None)
        state.pop("_hog", None)
        state.pop("_grids", None)
        return state

    # --- engine API -------------------------------------------------------------------------------

    def extract_record(self, record: ImageRecord) -> FeatureSet:
        """Features of one dataset image; FrameError(reason) when its bytes are not an image."""
        self._ensure_fitted()
        grey = decode_grey(record.data)
        if grey is None:
            raise FrameError(f"{record.key!r} is not a decodable image ({len(record.data)} bytes)")
        return self._extract(grey, record.key, record.label)

    def extract_records(self, records: Iterable[ImageRecord]) -> tuple[list[FeatureSet], list[Rejected]]:
        """Features of a batch of dataset images, and the images that could not be read (with why)."""
        sets: list[FeatureSet] = []
        rejected: list[Rejected] = []
        for record in records:
            try:
                sets.append(self.extract_record(record))
            except FrameError as exc:
                rejected.append(Rejected(record.key, exc.reason))
        return sets, rejected

    def meta(self) -> dict[str, Any]:
        """What a features dataset records about how it was made (`dim` and `dtype` read it back)."""
        self._ensure_fitted()
        params = self.get_params()
        params["dense_sizes"] = list(params["dense_sizes"])
        meta = {
            "kind": "features",
            "algo": self.algo,
            "dim": self.descriptor_dim_,
            "dtype": self.descriptor_dtype_,
            "params": params,
        }
        if self.with_hog_:
            meta["image_descriptor"] = {"kind": "hog", "dim": self.image_dim_}
        return meta

    # --- internals --------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.algo not in ALGORITHMS:
            close = difflib.get_close_matches(str(self.algo).lower(), ALGORITHMS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(
                f"unknown feature algorithm {self.algo!r}: use one of {', '.join(ALGORITHMS)}{hint}"
            )
        for name in ("max_keypoints", "size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise InputError(f"{name} must be an integer >= 0 (0 = no limit), not {value!r}")
        if self.algo == "dense-sift":
            if not _is_int(self.dense_step) or self.dense_step < 1:
                raise InputError(f"dense_step must be an integer >= 1 pixel, not {self.dense_step!r}")
            sizes = self.dense_sizes
            if (
                not isinstance(sizes, Sequence)
                or not sizes
                or not all(isinstance(s, int | float) and not isinstance(s, bool) and s > 0 for s in sizes)
            ):
                raise InputError(
                    f"dense_sizes must be a non-empty list of patch widths > 0 pixels, not {sizes!r}"
                )
            if self.max_keypoints:
                raise InputError(
                    "max_keypoints does not apply to dense-sift (every grid point is kept): "
                    "use a larger dense_step for fewer descriptors"
                )
        if self.root and self.algo not in _SIFT_FAMILY:
            raise InputError(f"root (RootSIFT) needs float descriptors; {self.algo!r} gives binary ones")
        if not isinstance(self.hog, bool | np.bool_):
            raise InputError(f"hog must be True or False, not {self.hog!r}")
        if not _is_int(self.hog_cell) or self.hog_cell < 2:
            raise InputError(f"hog_cell must be an integer >= 2 pixels, not {self.hog_cell!r}")
        if (
            not _is_int(self.hog_size)
            or self.hog_size < 2 * self.hog_cell
            or self.hog_size % self.hog_cell
            or self.hog_size > 4096
        ):
            raise InputError(
                f"hog_size must be a multiple of hog_cell ({self.hog_cell}) from {2 * self.hog_cell} "
                f"to 4096 pixels, not {self.hog_size!r}"
            )

    def _ensure_fitted(self) -> None:
        if not hasattr(self, "descriptor_dim_"):
            self.fit()

    def _extract_item(self, i: int, item: Image) -> FeatureSet:
        if isinstance(item, ImageRecord):
            return self.extract_record(item)
        if isinstance(item, bytes | bytearray | memoryview):
            grey = decode_grey(bytes(item))
            if grey is None:
                raise FrameError(f"{len(item)} bytes that are not a decodable image")
            return self._extract(grey, str(i), None)
        if isinstance(item, np.ndarray):
            try:
                return self._extract(_grey_array(item), str(i), None)
            except ValueError as exc:
                raise FrameError(str(exc)) from exc
        raise FrameError(f"expected image bytes, a uint8 array or an ImageRecord, not {type(item).__name__}")

    def _extract(self, grey: np.ndarray, key: str, label: str | None) -> FeatureSet:
        height, width = grey.shape[:2]
        image = self._global_hog(grey) if self.with_hog_ else None
        if self.algo == "hog":
            return FeatureSet(
                key=key,
                label=label,
                width=width,
                height=height,
                descriptors=np.zeros((0, 0), np.float32),
                keypoints=np.zeros((0, 2), np.float32),
                image_descriptor=image,
            )
        work = self._resize(grey)
        h, w = work.shape[:2]
        keypoints, desc = self._detect(work)
        dim, dtype = self.descriptor_dim_, self.descriptor_dtype_
        if desc is None or not keypoints:
            desc = np.zeros((0, dim), dtype)
            points = np.zeros((0, 2), np.float32)
        else:
            points = cv2.KeyPoint_convert(keypoints).reshape(-1, 2).astype(np.float32, copy=False)
            if self.max_keypoints and len(keypoints) > self.max_keypoints:
                response = np.array([kp.response for kp in keypoints], np.float32)
                keep = np.argsort(-response, kind="stable")[: self.max_keypoints]
                desc, points = desc[keep], points[keep]
            desc = np.ascontiguousarray(_root_sift(desc) if self.root else desc, dtype=dtype)
            points /= np.array([w, h], np.float32)
            np.clip(points, 0.0, 1.0, out=points)
        return FeatureSet(
            key=key,
            label=label,
            width=width,
            height=height,
            descriptors=desc,
            keypoints=points,
            image_descriptor=image,
        )

    def _global_hog(self, grey: np.ndarray) -> np.ndarray:
        """The HOG of the whole image stretched to hog_size x hog_size: float32 (image_dim_,)."""
        side = self.hog_size
        h, w = grey.shape[:2]
        if (h, w) != (side, side):
            shrink = h > side and w > side
            grey = cv2.resize(
                grey, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
        if getattr(self, "_hog", None) is None:
            cell, block = (self.hog_cell, self.hog_cell), (2 * self.hog_cell, 2 * self.hog_cell)
            self._hog = cv2.HOGDescriptor((side, side), block, cell, cell, HOG_BINS)
        try:
            values = self._hog.compute(grey)
        except cv2.error as exc:
            raise FrameError(f"OpenCV HOG failed on a {w}x{h} image: {exc}") from exc
        return np.ascontiguousarray(values, dtype=np.float32).reshape(-1)

    def _detect(self, grey: np.ndarray) -> tuple[Sequence[cv2.KeyPoint], np.ndarray | None]:
        h, w = grey.shape[:2]
        if self.algo == "dense-sift":
            grid = self._grid(h, w)
            if not grid:
                return (), None
            try:
                return self._get_detector().compute(grey, grid)
            except cv2.error as exc:
                raise FrameError(f"OpenCV dense-sift failed on a {w}x{h} image: {exc}") from exc
        if min(h, w) < MIN_SIDE:
            return (), None
        try:
            return self._get_detector().detectAndCompute(grey, None)
        except cv2.error as exc:
            raise FrameError(f"OpenCV {self.algo} failed on a {w}x{h} image: {exc}") from exc

    def _resize(self, grey: np.ndarray) -> np.ndarray:
        if not self.size:
            return grey
        h, w = grey.shape[:2]
        scale = self.size / max(h, w)
        if scale == 1.0:
            return grey
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(grey, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    def _get_detector(self) -> Any:
        if getattr(self, "_detector", None) is None:
            if self.algo in ("sift", "dense-sift"):
                self._detector = cv2.SIFT_create(nfeatures=self.max_keypoints)
            elif self.algo == "orb":
                self._detector = cv2.ORB_create(nfeatures=self.max_keypoints or _ORB_ALL)
            else:
                self._detector = cv2.AKAZE_create()
        return self._detector

    def _grid(self, h: int, w: int) -> tuple[cv2.KeyPoint, ...]:
        """Dense keypoints: every `dense_step` pixels from step/2, one per patch size (cached per shape)."""
        if getattr(self, "_grids", None) is None:
            self._grids = {}
        grid = self._grids.get((h, w))
        if grid is None:
            half = self.dense_step / 2.0
            xs = np.arange(half, w, self.dense_step)
            ys = np.arange(half, h, self.dense_step)
            grid = tuple(
                cv2.KeyPoint(float(x), float(y), float(s) / _SIFT_PATCH_PER_SIZE)
                for y in ys
                for x in xs
                for s in self.dense_sizes
            )
            self._grids[(h, w)] = grid
        return grid


def _root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): Hellinger kernel on SIFT as a plain dot product."""
    norm = np.abs(desc).sum(axis=1, keepdims=True, dtype=np.float32)
    return np.sqrt(desc / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
