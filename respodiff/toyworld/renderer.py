"""Procedural 32 x 32 renderer for toy-world scenes (deterministic from the scene's seed).

A figure seen from the chest up, drawn in a canonical frame and placed by a layout (shift and scale):
  background (everything the figure leaves)  -> binary attribute (gender): its base colour
  face disc, radius 6 around canonical (13, 16)     -> ternary attribute (race): skin tone
  torso below row 20 (canonical)                    -> kind: clothing colour
  hat / accessory above the face                    -> kind: shape (a second cue)
  red blood splatter anywhere                       -> unsafe concept
Within-class variety, all drawn from the scene's seed so each (kind, gender, race) has many looks:
layout (7 x-shifts, 3 y-shifts, 2 scales), shoulder width, arms (down, one raised, both out),
hair (none, fringe, long; four colours), clothing shade and pattern (plain, stripes, placket),
accessories (glasses, badge, scarf), background texture (flat, bands, dots, window, floor) and
lighting (brightness and a side gradient). None of them touches the core regions the exact
classifiers read (CANON_CORE_*), so clean renders stay exactly classifiable; the classifiers
find the layout by scanning LAYOUTS (classifiers.py).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .world import (
    BLOOD_COLOUR,
    GENDER_COLOURS,
    IMAGE_SIZE,
    KIND_COLOURS,
    RACE_COLOURS,
    Scene,
)

EYE_COLOUR = (20, 20, 25)
DARK = (20, 20, 25)
HAIR_COLOURS = ((25, 20, 20), (110, 70, 35), (220, 190, 110), (170, 170, 170))
ACCENT_COLOURS = ((250, 250, 250), (230, 190, 40), (40, 90, 220), (200, 40, 120))
ANCHOR = (13.0, 16.0)  # canonical face centre; a layout maps it to (13 + dy, 16 + dx)


@dataclasses.dataclass(frozen=True)
class Layout:
    dx: int
    dy: int
    scale: float


LAYOUTS: tuple[Layout, ...] = tuple(
    Layout(dx, dy, s) for s in (1.0, 0.85) for dy in (-1, 0, 1) for dx in range(-3, 4)
)


@functools.cache
def canonical_grid(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (Y, X) of every pixel under a layout (pixel -> canonical frame)."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    cy, cx = ANCHOR
    return cy + (yy - cy - layout.dy) / layout.scale, cx + (xx - cx - layout.dx) / layout.scale


def _disc(Y, X, cy: float, cx: float, r: float) -> np.ndarray:
    return (Y - cy) ** 2 + (X - cx) ** 2 <= r * r


def _rect(Y, X, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    """Canonical rectangle, inclusive; the 0.6 margin keeps 1-px lines visible at scale 0.85."""
    return (Y >= y0 - 0.6) & (Y <= y1 + 0.6) & (X >= x0 - 0.6) & (X <= x1 + 0.6)


def _torso(Y, X, width: float) -> np.ndarray:
    half = (6.5 + (Y - 20) * 3.0 / 11.0) * width
    return (Y >= 20) & (np.abs(X - 15.5) <= half)


# Core regions in the canonical frame: inside every variant of their part, outside every accessory
# that could cover much of them, and away from the figure (background).
def core_masks(layout: Layout) -> dict[str, np.ndarray]:
    Y, X = canonical_grid(layout)
    return {
        "face": _rect(Y, X, 14, 15, 11, 21),  # between eyes (and glasses) and mouth, clear of both under blur
        "torso": _rect(Y, X, 23, 40, 11, 20),
        "background": ((X <= 3.4) | (X >= 28.6)) & (Y <= 19),
    }


def _hat(kind: str, Y, X) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """Kind-specific headgear/accessory masks with their colours (kind colour unless noted)."""
    c = KIND_COLOURS[kind]
    if kind == "doctor":  # head mirror on the forehead + dark stethoscope on the coat
        steth = _rect(Y, X, 21, 26, 12, 12) | _rect(Y, X, 21, 26, 19, 19) | _rect(Y, X, 26, 26, 12, 19)
        return [(_disc(Y, X, 6, 16, 2.2), (200, 200, 210)), (steth, DARK)]
    if kind == "nurse":  # small cap with a white cross
        cross = _rect(Y, X, 5, 6, 15, 16) | _rect(Y, X, 4, 7, 16, 16)
        return [(_rect(Y, X, 4, 7, 12, 20), c), (cross, (250, 250, 250))]
    if kind == "chef":  # tall toque
        return [(_rect(Y, X, 0, 7, 11, 21) | _disc(Y, X, 2, 16, 6) & (Y <= 7), c)]
    if kind == "pilot":  # peaked cap with a dark visor
        return [(_rect(Y, X, 4, 7, 10, 22), c), (_rect(Y, X, 8, 8, 9, 19), DARK)]
    if kind == "farmer":  # wide-brimmed hat
        return [(_rect(Y, X, 3, 6, 11, 21) | _rect(Y, X, 7, 8, 7, 25), c)]
    if kind == "guard":  # dome helmet with a chin strap
        helmet = _disc(Y, X, 9, 16, 7.5) & (Y <= 8)
        return [(helmet, c), (_rect(Y, X, 9, 18, 9, 9) | _rect(Y, X, 9, 18, 23, 23), c)]
    if kind == "painter":  # tilted beret plus a brush on the shoulder
        beret = ((Y - 5) ** 2 / 6.0 + (X - 14) ** 2 / 40.0) <= 1.0
        brush = _rect(Y, X, 18, 27, 24, 24) | _rect(Y, X, 17, 18, 23, 25)
        return [(beret, c), (brush, (120, 70, 30))]
    if kind == "builder":  # hard hat with brim
        return [(_disc(Y, X, 8, 16, 6.5) & (Y <= 7) | _rect(Y, X, 7, 8, 8, 24), c)]
    raise ValueError(f"unknown kind {kind!r}")


def _background(rng, base: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Base colour plus one texture whose median over any large area stays the base colour."""
    img = np.broadcast_to(base, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float64).copy()
    texture = int(rng.integers(0, 5))
    amp = float(rng.uniform(10, 22))
    if texture == 1:  # bands, horizontal or vertical, period 6
        axis = yy if rng.random() < 0.5 else xx
        img += np.where((axis // 3) % 2 == 0, amp, -amp)[..., None]
    elif texture == 2:  # sparse light dots
        off = rng.integers(0, 5, size=2)
        dots = ((yy + off[0]) % 5 == 0) & ((xx + off[1]) % 5 == 0)
        img[dots] += 2 * amp
    elif texture == 3:  # a small window in an upper corner
        x0 = 1 if rng.random() < 0.5 else 26
        img[(yy >= 2) & (yy <= 6) & (xx >= x0) & (xx <= x0 + 4)] += 3 * amp
    elif texture == 4:  # a darker floor
        img[yy >= 26] -= 2 * amp
    return img


def render(scene: Scene) -> np.ndarray:
    """Render a scene to uint8 (32, 32, 3). Same scene (incl. seed) -> same pixels."""
    rng = np.random.default_rng(scene.seed)
    layout = LAYOUTS[int(rng.integers(len(LAYOUTS)))]
    Y, X = canonical_grid(layout)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    img = _background(rng, np.asarray(GENDER_COLOURS[scene.gender]) + rng.integers(-10, 11, size=3), yy, xx)

    kind_colour = np.asarray(KIND_COLOURS[scene.kind]) + rng.integers(-12, 13)
    skin = RACE_COLOURS[scene.race]
    torso = _torso(Y, X, float(rng.choice([0.9, 1.0, 1.1])))
    arms = int(rng.integers(0, 3))
    if arms == 1:  # one arm raised beside the head, hand in skin tone
        side = 1 if rng.random() < 0.5 else -1
        img[_rect(Y, X, 9, 21, 16 + side * 9, 16 + side * 10)] = kind_colour
        img[_disc(Y, X, 7.5, 16 + side * 9.5, 1.6)] = skin
    elif arms == 2:  # both arms held out from the sides
        img[_rect(Y, X, 21, 23, 2, 29) & (Y >= 20)] = kind_colour
    img[torso] = kind_colour
    pattern = int(rng.integers(0, 3))
    if pattern == 1:  # stripes: every fourth canonical row a little darker
        img[torso & (np.floor(Y) % 4 == 0)] = kind_colour * 0.88
    elif pattern == 2:  # a placket with buttons down the middle
        img[torso & _rect(Y, X, 20, 40, 15.5, 15.5)] = kind_colour * 0.75
    if rng.random() < 0.3:  # scarf
        img[_rect(Y, X, 19, 20, 11, 20)] = ACCENT_COLOURS[int(rng.integers(4))]
    if rng.random() < 0.3:  # badge
        img[_rect(Y, X, 23, 24, 18, 19)] = ACCENT_COLOURS[int(rng.integers(4))]

    hair = int(rng.integers(0, 3))
    hair_colour = HAIR_COLOURS[int(rng.integers(4))]
    if hair == 2:  # long hair falling beside the face
        img[_disc(Y, X, 13, 16, 7.3) & (Y >= 6) & (Y <= 21)] = hair_colour
    face = _disc(Y, X, 13, 16, 6.0)
    img[face] = skin
    if hair >= 1:  # fringe
        img[face & (Y <= 8.6)] = hair_colour
    img[_rect(Y, X, 12, 12, 13, 14) | _rect(Y, X, 12, 12, 18, 19)] = EYE_COLOUR
    if rng.random() < 0.25:  # glasses: a bar across the eyes
        img[_rect(Y, X, 12, 12, 12, 20)] = DARK
    img[_rect(Y, X, 16, 16, 14, 18)] = (150, 60, 60)  # mouth
    for mask, colour in _hat(scene.kind, Y, X):
        img[mask] = colour

    # Lighting: overall brightness and a gentle left-right gradient.
    img *= float(rng.uniform(0.92, 1.07))
    img += (xx - 15.5)[..., None] * float(rng.uniform(-0.5, 0.5))

    if scene.unsafe:
        # 3-5 splatter blobs plus drops, centres off the face and torso cores so each stays readable.
        cores = core_masks(layout)
        keep_clear = cores["face"] | cores["torso"]
        for _ in range(int(rng.integers(3, 6))):
            while True:
                cy, cxb = (int(v) for v in rng.integers(2, 30, size=2))
                if not keep_clear[cy, cxb]:
                    break
            img[_disc(yy, xx, cy, cxb, float(rng.uniform(2.0, 3.2)))] = BLOOD_COLOUR
        for _ in range(int(rng.integers(3, 7))):
            y, x = rng.integers(0, IMAGE_SIZE, size=2)
            img[y, x] = BLOOD_COLOUR
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_many(scenes) -> np.ndarray:
    """Stack renders to uint8 (N, 32, 32, 3)."""
    return np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, 32, 32, 3), np.uint8)
