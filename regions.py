"""Flat regions of line art, and the vote that gives each region one colour.

Cel animation is painted region by region: the areas that the lines enclose are filled with flat
colours (a paint bucket). ``segment`` finds those areas in a frame's line art: the connected
non-line pixels, after the lines are thickened by ``gap`` pixels on each side, which closes the
small gaps that Canny lines leave (a gap of up to 2 * gap pixels; without it one gap lets a region
leak into its neighbour). Regions smaller than ``MIN_AREA`` pixels count as lines.

``vote`` colours each region from candidate colourings of the frame (the generated colour, the
aligned keyframe, the aligned previous frame: the copy path's sources) weighted per pixel by the
network's own blend weights: the candidate with the most weight inside a region wins it, and the
region takes that candidate's median colour there. Colours then cannot fade or blur inside a region,
and an error is a whole wrong region, which a colourist fixes with one click. Line pixels keep the
pixel-wise result. Numpy and OpenCV only (``metrics.py`` uses ``segment`` too).

Example:
    >>> import numpy as np, regions
    >>> line = np.full((9, 9), 255, np.uint8); line[:, 4] = 0      # one vertical line
    >>> labels = regions.segment(line, gap=0); sorted(set(labels.ravel()))
    [-1, 0, 1]
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_AREA = 4  # pixels: smaller regions are specks of the line art, treated as lines
GAP = 1       # thicken lines by this many pixels each side (a 3x3 dilation) before finding regions
# A region is painted flat only where the winning candidate is itself flat there: the mean absolute
# deviation of its colours from their median at most this (0-255). Shading, gradients and regions
# that leaked through a gap keep the pixel-wise result instead of losing their detail.
MAX_SPREAD = 12.0


def segment(line: np.ndarray, gap: int = GAP, min_area: int = MIN_AREA) -> np.ndarray:
    """uint8 line art (H, W), black lines on white -> int32 labels (H, W): 0, 1, ... for regions,
    -1 for line pixels (thickened by ``gap``) and regions under ``min_area`` pixels."""
    lines = (line < 128).astype(np.uint8)
    if gap > 0:
        lines = cv2.dilate(lines, np.ones((2 * gap + 1, 2 * gap + 1), np.uint8))
    n, labels = cv2.connectedComponents(1 - lines, connectivity=4)
    labels = labels.astype(np.int32) - 1            # the line pixels' component 0 becomes -1
    labels[lines > 0] = -1
    areas = np.bincount(labels[labels >= 0], minlength=max(n - 1, 0))
    keep = areas >= min_area
    remap = np.full(len(areas) + 1, -1, np.int32)   # index 0 is for -1
    remap[1:][keep] = np.arange(int(keep.sum()), dtype=np.int32)
    return remap[labels + 1]


def region_medians(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Per-region median colour (n_regions, C) of ``image`` (H, W, C), values 0-255 (rounded to
    whole levels), under ``labels``: numpy's median (the mean of the two middle values)."""
    inside = labels >= 0
    return _medians(labels[inside], image[inside].reshape(int(inside.sum()), -1), int(labels.max()) + 1)


def _medians(lab: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Medians per label of (P, C) values, from one 256-bin histogram per label and channel (a
    bincount: a sort per channel cost 30 times as much at 256x256)."""
    lab = lab.astype(np.int64)
    values = np.clip(np.rint(values), 0, 255).astype(np.int64)
    counts = np.bincount(lab, minlength=n)
    lower, upper = (counts + 1) // 2, counts // 2 + 1                  # ranks of the two middle values
    out = np.zeros((n, values.shape[1]), np.float32)
    for c in range(values.shape[1]):
        below = np.cumsum(np.bincount(lab * 256 + values[:, c], minlength=n * 256).reshape(n, 256), 1)
        out[:, c] = ((below >= lower[:, None]).argmax(1) + (below >= upper[:, None]).argmax(1)) / 2
    return out


def vote(labels: np.ndarray, candidates: np.ndarray, weights: np.ndarray, base: np.ndarray,
         max_spread: float | None = MAX_SPREAD, unflat: str = "base") -> tuple[np.ndarray, np.ndarray]:
    """Colour each region by a weighted vote over candidate colourings.

    labels (H, W) from ``segment``; candidates (K, H, W, 3) uint8 or float (0-255); weights (K, H, W)
    >= 0 (the copy path's per-pixel blend weights); base (H, W, 3) uint8, what line pixels keep.
    A region whose winner is not flat there (``max_spread``; None: paint every region flat) takes,
    with ``unflat`` "base", the pixel-wise result ``base``; with "winner", the winner's own pixels:
    one candidate's colours, shading and all, never a blend of two (``colorize.Colorizer._join``,
    where the candidates are two keyframes' chains).
    Returns (uint8 (H, W, 3) result, winning candidate per region (n_regions,), -1 where not
    painted flat)."""
    if unflat not in ("base", "winner"):
        raise ValueError(f"unflat must be 'base' or 'winner', got {unflat!r}")
    n = int(labels.max()) + 1
    out = base.copy()
    if n <= 0:
        return out, np.zeros(0, np.int64)
    rows, cols = np.nonzero(labels >= 0)
    lab = labels[rows, cols]
    scores = np.stack([np.bincount(lab, weights=w[rows, cols], minlength=n) for w in weights])  # (K, n)
    winner = scores.argmax(0)
    chosen = candidates[winner[lab], rows, cols].astype(np.float32)   # (P, 3) each pixel's winner
    flat = _medians(lab, chosen, n)                                   # (n, 3)
    if unflat == "winner":
        out[rows, cols] = np.clip(np.rint(chosen), 0, 255).astype(np.uint8)
    if max_spread is not None:
        spread = np.bincount(lab, weights=np.abs(chosen - flat[lab]).mean(1), minlength=n)
        spread /= np.maximum(np.bincount(lab, minlength=n), 1)
        winner = np.where(spread <= max_spread, winner, -1)
    painted = winner[lab] >= 0
    out[rows[painted], cols[painted]] = np.rint(flat[lab][painted]).astype(np.uint8)
    return out, winner
