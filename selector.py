"""A learned per-pixel choice of how a source reaches frame t: the ``select`` correspondence.

A source frame (the previous frame of a chain, a keyframe) can be brought onto frame t in three
ways, and each is the right one somewhere:
- *unmoved*: where nothing moved (a held background, a still character) the source as it is is
  exact, while a flow estimated on line art moves static pixels a little: on the One Piece shot
  of the README's second fold, the keyframe copied scores 36.79 dB and warped along the flow 33.87;
- *warped* along the line-art DIS flow (``correspond.FlowWarp``): where things moved and the
  flow followed them;
- *matched* region by region (``matcher.RegionMatch``): where the flow smeared a flat cel.
``Select`` makes all three and blends them with per-pixel softmax weights from a small
convolutional network that sees frame t's line art and, for each way, its colour, its line art
and how far its lines lie from frame t's (the distance to the lines of each, ``line_distance``,
and their difference). Its weights are the generator's (under ``correspond.``), as the matcher's are.

It learns from a squared error of the aligned source against frame t (``losses.aligned_l2``, in
the warm-up steps of train.py's ``--match_warmup``, with the matcher's cross-entropy), at a
learning rate that falls to zero over them (``--lr_select_schedule``: at a constant rate its choice
swung from one checkpoint to the next, and where the warm-up stopped decided the result). After
the warm-up it is fixed (``--joint_correspondence`` trains it on through the generator's losses,
which made it collapse to the warp within 46 steps in the README's study). A squared error makes
the weights hedge where the ways disagree and the network cannot tell which is right, which is
what PSNR rewards. At initialisation the last layer is zero: the mean of the three ways.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import correspond
import matcher

WAYS = ("unmoved", "warped", "matched")
REACH = 8  # pixels: distances to the lines are measured up to this far
_WAY_FEATURES = 3 + 1 + 1 + 1  # colour, line art, distance to its lines, how far that is from frame t's


def line_distance(line: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) line art, black lines (0) on white (1) -> (B, 1, H, W) the chessboard distance
    to the nearest line pixel, clipped at ``REACH`` and divided by it: the number of 3x3 dilations
    of the ink that reach the pixel (a distance transform that runs on the device; grey ink from a
    warp counts in proportion). Where two line arts agree their distances agree at every pixel
    nearby, not only on the lines."""
    ink = (1.0 - line.float()).clamp(0, 1)
    far = 1.0 - ink
    for _ in range(REACH - 1):
        ink = F.max_pool2d(ink, 3, 1, 1)
        far = far + (1.0 - ink)
    return far / REACH


def line_distance_array(line: np.ndarray) -> np.ndarray:
    """``line_distance`` of one (H, W) line art array (uint8 0-255 or float 0-1 scale given by its
    dtype: uint8 / 255, float as it is) with OpenCV, where no tensor is wanted: (H, W) float32, the
    same values (a 3x3 dilation is the 3x3 max pool, borders ignored), at a tenth of the time on the CPU."""
    scale = 255.0 if line.dtype == np.uint8 else 1.0
    ink = np.clip(1.0 - line.astype(np.float32) / scale, 0, 1)
    far = 1.0 - ink
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(REACH - 1):
        ink = cv2.dilate(ink, kernel)
        far += 1.0 - ink
    return far / REACH


class Select(correspond.FlowWarp):
    """The ``select`` correspondence (see the module's docstring). Its CPU half is the DIS flow."""
    name = "select"
    trains_alignment = True  # train.py's warm-up scores the aligned colour against frame t

    def __init__(self, width: int = 24):
        super().__init__()
        self.match = matcher.RegionMatch()
        n = len(WAYS)
        self.net = nn.Sequential(
            nn.Conv2d(2 + n * _WAY_FEATURES, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, n, 1))
        nn.init.zeros_(self.net[-1].weight)  # the mean of the three ways, until it learns
        nn.init.zeros_(self.net[-1].bias)

    def ways(self, source: correspond.Source, line_t: torch.Tensor,
             resample: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor, correspond.Source]:
        """((B, 3 ways, 3, H, W) colours, (B, 3 ways, 1, H, W) line arts, the source matched region
        by region: the warped source with the matched colour and the matcher's matches)."""
        unmoved = source.masked()
        warped = correspond.FlowWarp.forward(self, source, line_t, resample)  # colour and line art, warped once
        matched = self.match.match_warped(source, warped, line_t)   # the warp with the matched colour
        colours = torch.stack([unmoved.colour.float(), warped.colour.float(), matched.colour.float()], 1)
        lines = torch.stack([unmoved.line.float(), warped.line.float(), matched.line.float()], 1)  # matched: the warp's
        return colours, lines, matched

    def weights(self, colours: torch.Tensor, lines: torch.Tensor, line_t: torch.Tensor) -> torch.Tensor:
        """(B, 3 ways, H, W) softmax weights of the ways at every pixel."""
        b, n, _, h, w = colours.shape
        distance_t = line_distance(line_t)                                           # (B, 1, H, W)
        distance = line_distance(lines.flatten(0, 1)).view(b, n, 1, h, w)
        apart = (distance - distance_t[:, None]).abs()
        x = torch.cat([line_t.float(), distance_t, colours.flatten(1, 2), lines.flatten(1, 2),
                       distance.flatten(1, 2), apart.flatten(1, 2)], 1)             # (B, 2 + 3 * 6, H, W)
        return torch.softmax(self.net(x).float(), 1)

    def forward(self, source: correspond.Source, line_t: torch.Tensor, resample: str = "bilinear") -> correspond.Source:
        if source.flow is None or source.line is None:
            return correspond.FlowWarp.forward(self, source, line_t, resample)
        colours, lines, matched = self.ways(source, line_t, resample)
        w = self.weights(colours, lines, line_t)[:, :, None]                          # (B, 3, 1, H, W)
        return dataclasses.replace(matched, colour=(w * colours).sum(1), line=(w * lines).sum(1))
