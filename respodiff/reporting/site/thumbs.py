"""Thumbnails for the report site, made once per image content (cached by the image's sha256).

An image no larger than the thumbnail size (the toy world's 32 px renders) is kept as a lossless PNG, so its
thumbnail is also its full-size image and a site can show it without the image store. Larger images become JPEG
thumbnails; the full-size image stays in its store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from respodiff.io import replace_atomically, sha256_file

THUMBS_DIR = "thumbs"


@dataclass(frozen=True)
class Thumb:
    path: str  # relative to the site root
    is_full_size: bool  # the thumbnail holds every pixel of the image
    width: int
    height: int


class Thumbnails:
    """Thumbnails under `<site>/thumbs/`, named by image sha256 and size; remembers which ones a build used."""

    def __init__(self, site_dir: str | os.PathLike, max_px: int = 128, quality: int = 85):
        self.folder = Path(site_dir) / THUMBS_DIR
        self.max_px = int(max_px)
        self.quality = int(quality)
        self.used: set[str] = set()
        self.made = 0

    def get(self, image_path: str | os.PathLike) -> Thumb:
        digest = sha256_file(image_path)
        small = self.folder / f"{digest}.png"
        large = self.folder / f"{digest}-{self.max_px}.jpg"
        for path, full in ((small, True), (large, False)):
            if path.is_file():  # made by an earlier build: the name is the content's hash
                return self._use(path, full)
        with Image.open(image_path) as im:
            im.load()
            if max(im.size) <= self.max_px:
                target, full, image = small, True, im.convert("RGBA" if "A" in im.getbands() else "RGB")
                write = lambda handle: image.save(handle, format="PNG", optimize=True)  # noqa: E731
            else:
                image = im.convert("RGB")
                image.thumbnail((self.max_px, self.max_px), Image.LANCZOS)
                target, full = large, False
                write = lambda handle: image.save(handle, format="JPEG", quality=self.quality)  # noqa: E731
        self.folder.mkdir(parents=True, exist_ok=True)
        replace_atomically(target, write)
        self.made += 1
        return self._use(target, full)

    def _use(self, path: Path, full: bool) -> Thumb:
        rel = f"{THUMBS_DIR}/{path.name}"
        self.used.add(rel)
        with Image.open(path) as im:
            width, height = im.size
        return Thumb(rel, full, width, height)

    def keep(self, rel_paths) -> None:
        """Count thumbnails reused from an earlier build's grids as used (they survive `prune`)."""
        self.used.update(rel_paths)

    def prune(self) -> int:
        """Delete thumbnails no page of this build uses; returns how many."""
        removed = 0
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                if path.is_file() and f"{THUMBS_DIR}/{path.name}" not in self.used:
                    path.unlink()
                    removed += 1
        return removed
