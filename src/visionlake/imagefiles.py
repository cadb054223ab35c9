"""Which files in a folder are images: one rule for `ingest images` and `dataset pack`.

By file name only, so walking a folder costs no reads; a file with an image name that does not
decode is then reported as bad, while a `readme.txt` beside the photos is simply not an image.
"""

from __future__ import annotations

import os

#: File extensions taken as images (lower case); other files are counted as ignored.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
)


def is_image_name(name: str) -> bool:
    """Whether a file called `name` is taken as an image (by its extension, any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
