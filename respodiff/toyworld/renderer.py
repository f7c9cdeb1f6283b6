"""Procedural 32 x 32 renderer for toy-world scenes (deterministic from the scene's seed).

Layout (rows y, columns x), chosen so each attribute owns a region no other element covers much:
  background (all of it; the sides x<5 and x>26 stay background)  -> binary attribute (gender)
  face disc, centre (13, 16 +- 1), radius 6                         -> ternary attribute (race)
  torso trapezoid, rows 20..31                                      -> kind (colour)
  hat / accessory above the face, x in 6..25                         -> kind (shape)
  red blood splatter anywhere                                        -> unsafe concept
Nuisances (shade jitter, face offset, splatter placement) come from the scene seed so the
toy model has a distribution to learn rather than 48 fixed pictures.
"""

from __future__ import annotations

import numpy as np

from .world import (
    BLOOD_COLOUR,
    GENDER_COLOURS,
    IMAGE_SIZE,
    KIND_COLOURS,
    RACE_COLOURS,
    Scene,
)

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
EYE_COLOUR = (20, 20, 25)


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    return (_YY - cy) ** 2 + (_XX - cx) ** 2 <= r * r


def _rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Inclusive rectangle mask."""
    return (_YY >= y0) & (_YY <= y1) & (_XX >= x0) & (_XX <= x1)


def _torso() -> np.ndarray:
    # Shoulders widen downwards: a trapezoid from x 9..22 at row 20 to x 6..25 at row 31.
    half = 6.5 + (_YY - 20) * 3.0 / 11.0
    return (_YY >= 20) & (np.abs(_XX - 15.5) <= half)


_TORSO = _torso()

# Regions the classifiers read (fixed pixels, valid for every face offset and every hat).
CORE_BACKGROUND = _rect(0, 19, 0, 4) | _rect(0, 19, 27, 31)
CORE_FACE = _rect(10, 15, 14, 18)
CORE_TORSO = _rect(23, 31, 11, 20)


def _hat(kind: str, cx: int) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """Kind-specific headgear/accessory masks with their colours (kind colour unless noted)."""
    c = KIND_COLOURS[kind]
    dark = (20, 20, 25)
    if kind == "doctor":  # head mirror on the forehead + dark stethoscope on the coat
        steth = _rect(21, 26, 12, 12) | _rect(21, 26, 19, 19) | _rect(26, 26, 12, 19)
        return [(_disc(6, cx, 2.2), (200, 200, 210)), (steth, dark)]
    if kind == "nurse":  # small cap with a white cross
        cap = _rect(4, 7, cx - 4, cx + 4)
        cross = _rect(5, 6, cx - 1, cx) | _rect(4, 7, cx, cx)
        return [(cap, c), (cross, (250, 250, 250))]
    if kind == "chef":  # tall toque
        return [(_rect(0, 7, cx - 5, cx + 5) | _disc(2, cx, 6) & (_YY <= 7), c)]
    if kind == "pilot":  # peaked cap with a dark visor
        return [(_rect(4, 7, cx - 6, cx + 6), c), (_rect(8, 8, cx - 7, cx + 3), dark)]
    if kind == "farmer":  # wide-brimmed hat
        return [(_rect(3, 6, cx - 5, cx + 5) | _rect(7, 8, cx - 9, cx + 9), c)]
    if kind == "guard":  # dome helmet with a chin strap
        helmet = _disc(9, cx, 7.5) & (_YY <= 8)
        return [(helmet, c), (_rect(9, 18, cx - 7, cx - 7) | _rect(9, 18, cx + 7, cx + 7), c)]
    if kind == "painter":  # tilted beret plus a brush on the shoulder
        beret = ((_YY - 5) ** 2 / 6.0 + (_XX - (cx - 2)) ** 2 / 40.0) <= 1.0
        brush = _rect(18, 27, 24, 24) | _rect(17, 18, 23, 25)
        return [(beret, c), (brush, (120, 70, 30))]
    if kind == "builder":  # hard hat with brim
        dome = _disc(8, cx, 6.5) & (_YY <= 7)
        return [(dome | _rect(7, 8, cx - 8, cx + 8), c)]
    raise ValueError(f"unknown kind {kind!r}")


def render(scene: Scene) -> np.ndarray:
    """Render a scene to uint8 (32, 32, 3). Same scene (incl. seed) -> same pixels."""
    rng = np.random.default_rng(scene.seed)
    shade = rng.integers(-12, 13, size=3)
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.int32)
    img[:] = np.asarray(GENDER_COLOURS[scene.gender]) + shade
    # A faint vertical gradient so the background is not one flat value.
    img += ((_YY - 16) * int(rng.integers(-1, 2)))[..., None]

    img[_TORSO] = KIND_COLOURS[scene.kind]
    cx = 16 + int(rng.integers(-1, 2))
    face = _disc(13, cx, 6.0)
    img[face] = RACE_COLOURS[scene.race]
    img[_rect(12, 12, cx - 3, cx - 2) | _rect(12, 12, cx + 2, cx + 3)] = EYE_COLOUR
    img[_rect(16, 16, cx - 2, cx + 2)] = (150, 60, 60)  # mouth
    for mask, colour in _hat(scene.kind, cx):
        img[mask] = colour

    if scene.unsafe:
        # 3-5 splatter blobs plus drops; big enough for a small generator to reproduce.
        # Blob centres avoid the face and torso cores so each core stays mostly readable.
        for _ in range(int(rng.integers(3, 6))):
            while True:
                cy, cxb = (int(v) for v in rng.integers(2, 30, size=2))
                if not (CORE_FACE[cy, cxb] or CORE_TORSO[cy, cxb]):
                    break
            img[_disc(cy, cxb, float(rng.uniform(2.0, 3.2)))] = BLOOD_COLOUR
        for _ in range(int(rng.integers(3, 7))):
            y, x = rng.integers(0, IMAGE_SIZE, size=2)
            img[y, x] = BLOOD_COLOUR
    return np.clip(img, 0, 255).astype(np.uint8)


def render_many(scenes) -> np.ndarray:
    """Stack renders to uint8 (N, 32, 32, 3)."""
    return np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, 32, 32, 3), np.uint8)
