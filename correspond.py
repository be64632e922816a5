"""How a source frame (the previous frame of a chain, a keyframe) is brought onto frame t.

A generator colours frame t from its line art and from *sources*: coloured frames it may take
colours from. ``Sources`` names them (the one thing a generator takes), and a
``Correspondence`` aligns each source onto frame t's pixel grid before the network sees it.
A correspondence has two halves:
- ``pair_data(line_t, line_s)``: what the CPU computes for a pair of frames, in the data
  loader and in a colouring chain (a dense optical flow for ``flow``; nothing for ``none``);
- ``forward(source, line_t)`` (an ``nn.Module``, part of the generator, so a learned matcher
  keeps its weights in the generator's checkpoint): the source aligned onto frame t.

Choices (``ModelConfig.correspondence``, ``--correspondence`` in train.py):
- ``flow``: DIS optical flow (Kroeger et al., ECCV 2016) between the two line arts, then a
  bilinear backward warp of the source's colour and line art;
- ``none``: the source as it is;
- ``match``: the flow's warp, then each line-art region of frame t takes the colour of the
  source regions a small learned network matches it to (``matcher.RegionMatch``; its weights are
  the generator's, under ``correspond.``);
- ``select``: the source unmoved, warped and matched, blended per pixel by a small learned network
  (``selector.Select``, with the matcher inside it; weights under ``correspond.`` too).

Example:
    >>> import correspond, numpy as np
    >>> line = np.full((64, 64), 255, np.uint8); line[20:40, 30] = 0
    >>> correspond.line_flow(line, np.roll(line, 2, axis=1)).mean(axis=(0, 1)).round()  # ~(2, 0)
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils

CHOICES = ("flow", "none", "match", "select")


# ----------------------------------------------------------------------------- sources
@dataclass
class Source:
    """A coloured frame a generator may take colours from, for every sample of a batch."""
    colour: torch.Tensor               # (B, 3, H, W) float in [0, 1]; zeros where absent
    present: torch.Tensor              # (B,) 1.0 where the frame exists, 0.0 where it does not
    line: torch.Tensor | None = None   # (B, 1, H, W) its line art, black lines (0) on white (1)
    flow: torch.Tensor | None = None   # (B, 2, H, W) from frame t to this frame, pixels (dx, dy)
    match: list | None = None          # ``match`` correspondence: its ``matcher.Match`` per sample, once aligned

    @classmethod
    def absent(cls, like: torch.Tensor, with_line: bool = True) -> "Source":
        """No frame, for a batch shaped like the line art ``like`` (B, 1, H, W)."""
        b, _, h, w = like.shape
        zeros = torch.zeros(b, 3, h, w, device=like.device)
        return cls(zeros, torch.zeros(b, device=like.device), zeros[:, :1] if with_line else None,
                   torch.zeros(b, 2, h, w, device=like.device))

    def masked(self) -> "Source":
        """Colour and line art set to zero where the frame is absent (whatever they held)."""
        keep = self.present.float().view(-1, 1, 1, 1)
        line = None if self.line is None else self.line.float() * keep
        return dataclasses.replace(self, colour=self.colour.float() * keep, line=line)

    def plane(self) -> torch.Tensor:
        """The presence flags as constant planes (B, 1, H, W)."""
        return self.present.float().view(-1, 1, 1, 1).expand(-1, 1, *self.colour.shape[-2:])


@dataclass
class Sources:
    """Everything a generator is given for frame t, by name."""
    line: torch.Tensor                # (B, 1, H, W) line art of frame t
    prev: Source                      # the frame the chain comes from: t-1 forward, t+1 backward
    keyframe: Source | None = None    # a coloured keyframe of the same shot (generators with a keyframe input)

    @staticmethod
    def cat(items: list["Sources"]) -> "Sources":
        """One batch from several, each field concatenated along the batch dimension. A field
        that some hold and others do not (a flow of absent frames) is zeros where missing."""
        def join(values):
            held = [v for v in values if v is not None]
            if not held:
                return None
            if isinstance(held[0], torch.Tensor):
                return torch.cat([torch.zeros_like(held[0]) if v is None else v for v in values])
            return type(held[0])(**{f.name: join([getattr(v, f.name) for v in values])
                                    for f in dataclasses.fields(held[0])})
        return join(items)


# ----------------------------------------------------------------------------- optical flow
# DIS optical flow, OpenCV's MEDIUM preset: 1.4 ms at 128x128 and 5.6 ms at 256x256 on one core
# here. On the shared clips, chaining the first colour frame through it along the line art held
# the colours 1-3 dB better than copying it (the ULTRAFAST and FAST presets gained about half).
FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
# how many times the network resolution the line-art flow is computed at (``flow_art``,
# ``ModelConfig.flow_scale``, train.py --flow_scale): 1, on the network's own line art, or 2
FLOW_SCALES = (1, 2)
# Line art is mostly white: the distance to the nearest line (x 16, clipped to 255) gives the
# flow a texture everywhere (16 held up better than 4 or 64 on the shared clips).
FLOW_DISTANCE_SCALE = 16.0
_dis = threading.local()


def flow_settings(still_window: int = 0, scale: int = 1) -> str:
    """What ``line_flow`` computes with, for caches of its flows (``framecache``): a cache
    made with other settings is rebuilt."""
    plain = f"DIS preset {FLOW_PRESET}, distance scale {FLOW_DISTANCE_SCALE}, cv2 {cv2.__version__}"
    plain = f"{plain}, still window {still_window}" if still_window > 0 else plain
    return f"{plain}, flow art x{scale}, held on the network's line art" if scale > 1 else plain


def flow_art(colour: np.ndarray | None, line: np.ndarray, mode: str = "canny", scale: int = 1) -> np.ndarray:
    """The uint8 image a frame's line-art flow is computed on, ``scale`` times the network
    resolution of its line art ``line`` (H, W): with ``scale`` 1 the line art itself; else
    (H * scale, W * scale, 2): channel 0 what the flow is computed on, channel 1 the line art
    ``line`` itself with each pixel repeated scale x scale (``held_art`` takes it back), on which
    ``line_flow`` tells held drawings. Channel 0: for Canny line art made from a colour frame
    ``colour`` (H, W, 3) at network resolution, Canny line art of that frame enlarged ``scale``
    times (bilinear), and for any other line art (given, grey, or no colour frame) the line art
    enlarged so. Why: Canny at network resolution places every line on a whole pixel, so a
    character that moves by a fraction of a pixel moves its line art by zero or one; an edge found
    in the enlarged frame lands on a half pixel, which the frame's own anti-aliased grey levels
    decide. ``line_flow(..., scale=scale)`` brings the flow back to network resolution
    (``FLOW_SCALE``, ``ModelConfig.flow_scale``)."""
    if scale == 1:
        return line
    size = (line.shape[1] * scale, line.shape[0] * scale)
    if mode == "canny" and colour is not None:
        import dataset  # it builds on this module
        big = cv2.resize(colour, size, interpolation=cv2.INTER_LINEAR)
        fine = dataset.canny_line_art(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY))
    else:
        fine = cv2.resize(line, size, interpolation=cv2.INTER_LINEAR)
    return np.stack([fine, np.repeat(np.repeat(line, scale, 0), scale, 1)], -1)


def flow_arts(lines: list[np.ndarray], mode: str = "canny", scale: int = 1,
              colours: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """``flow_art`` of every frame of line art ``lines``, made from its colour frame ``colours``
    where given (Canny line art), else from the line art alone."""
    return [flow_art(None if colours is None else c, line, mode, scale)
            for c, line in zip(colours or [None] * len(lines), lines)]


def held_art(art: np.ndarray, scale: int) -> np.ndarray:
    """The network-resolution line art inside a ``flow_art`` of ``scale`` > 1 (its channel 1)."""
    return np.ascontiguousarray(art[::scale, ::scale, 1])


def flow_image(line: np.ndarray, mode: str) -> np.ndarray:
    """The uint8 image optical flow is computed on, from uint8 line art (H, W): for sparse line
    art (canny, given) the distance to the nearest line; grey line art is used as it is."""
    if mode == "grey":
        return line
    distance = cv2.distanceTransform((line > 127).astype(np.uint8), cv2.DIST_L2, 3)
    # line art without a single line: distances are huge, clip before scaling
    return (np.minimum(distance, 255.0 / FLOW_DISTANCE_SCALE) * FLOW_DISTANCE_SCALE).astype(np.uint8)


def still_mask(line_t: np.ndarray, line_s: np.ndarray, window: int) -> np.ndarray:
    """Where a drawing is held locally: bool (H, W), True where the ``window`` x ``window``
    neighbourhood holds a line of ``line_t`` (uint8 line art, lines dark) and is identical in
    ``line_s``. What ``line_flow``'s whole-frame rule (identical line art: zero flow) says for a
    part of the frame; flat neighbourhoods with no line are left out, since a flat region that
    moves shows no line there either."""
    same = cv2.boxFilter((line_t != line_s).astype(np.float32), -1, (window, window), normalize=False) == 0
    drawn = cv2.boxFilter((line_t < 128).astype(np.float32), -1, (window, window), normalize=False) > 0
    return same & drawn


def line_flow(line_t: np.ndarray, line_s: np.ndarray, mode: str = "canny", still_window: int = 0,
              scale: int = 1) -> np.ndarray:
    """Optical flow (H, W, 2) float32, (dx, dy) in pixels, from frame t to frame s, computed on
    their uint8 line art: ``warp(s, flow)`` brings frame s onto frame t. Identical line art (a
    held drawing) gets an exact zero flow, so that the copy is exact. With ``still_window`` W > 0
    the same holds locally: zero flow where ``still_mask`` (W x W) is True, where DIS otherwise
    spills the motion of a nearby moving part onto still lines (``ModelConfig.still_window``,
    train.py ``--still_window``; measured by ``benchmarks/still_flow.py``). With ``scale`` S > 1
    ``line_t`` and ``line_s`` are the frames' ``flow_art`` at S times the network resolution: the
    flow is computed there (the still window S x W pixels wide) and returned at network resolution
    (H, W) = their size / S, averaged over each S x S block and divided by S; and held drawings
    are told on the frames' line art at network resolution as well (``held_art``): identical there,
    the flow is zero, and it is zero where the still window finds the drawing held there. Why
    both: Canny of the enlarged frame follows a frame's grey levels closely, so the noise of a
    compressed video changes a held drawing's enlarged line art here and there, and the flow then
    moved still lines by a fraction of a pixel, blurring them at every frame of a chain (on the One
    Piece shot, a TV anime animated on twos and threes with a still background, the enlarged line
    art found 69% of the pixels held from frame to frame, the network's line art 81%)."""
    if scale > 1:
        h, w = line_t.shape[0] // scale, line_t.shape[1] // scale
        for art in (line_t, line_s):
            if art.shape != (h * scale, w * scale, 2):
                raise ValueError(f"flow art of {art.shape} is not a flow_art {scale} times a network size")
        held_t, held_s = held_art(line_t, scale), held_art(line_s, scale)
        if np.array_equal(held_t, held_s):
            return np.zeros((h, w, 2), np.float32)
        fine = line_flow(line_t[..., 0], line_s[..., 0], mode, still_window * scale)
        flow = cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA) / np.float32(scale)
        if still_window > 0:
            flow[still_mask(held_t, held_s, still_window)] = 0
        return flow
    if np.array_equal(line_t, line_s):
        return np.zeros((*line_t.shape, 2), np.float32)
    # one engine per thread (DIS objects are not thread-safe) and per image size: an engine that
    # has computed a flow at another size gives other flows (OpenCV 5.0), which made a sample's
    # flow depend on what its process had computed before
    engines = getattr(_dis, "engines", None)
    if engines is None:
        engines = _dis.engines = {}
    dis = engines.get(line_t.shape)
    if dis is None:
        if len(engines) >= 8:  # a long-lived server meets many sizes: keep a few engines, not all
            engines.clear()
        dis = engines[line_t.shape] = cv2.DISOpticalFlow_create(FLOW_PRESET)
    flow = dis.calc(flow_image(line_t, mode), flow_image(line_s, mode), None)
    if still_window > 0:
        flow[still_mask(line_t, line_s, still_window)] = 0
    return flow


def compose_flows(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """The flow from frame a to frame c, from ``first`` (a to b) and ``then`` (b to c), both
    (H, W, 2) float32 in pixels: c's pixel for a's x is then(x + first(x)) away from x + first(x),
    bilinear, borders repeated. 0.7 ms at 256x256 where a DIS flow costs 6-10; on the shared
    clips, keyframes warped onto the previous frame through it came out as close to the truth
    as through the direct flow (PSNR 31.79 against 31.80 dB at 8 frames apart, 26.45 against
    26.43 at 30)."""
    return first.astype(np.float32, copy=False) + warp_array(then, first)


def warp_array(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``warp`` for one (H, W) or (H, W, C) array with OpenCV, where no tensor is at hand (a data
    loader worker): out(x) = image(x + flow(x)), bilinear, borders repeated; float32 out."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    flow = flow.astype(np.float32, copy=False)
    return cv2.remap(np.ascontiguousarray(image, np.float32), xs + flow[..., 0], ys + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_tensor(flow: np.ndarray, half: bool = False) -> torch.Tensor:
    """(H, W, 2) float32 -> (2, H, W), float16 when ``half`` (what uint8 batches carry)."""
    chw = torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))
    return chw.half() if half else chw  # torch's cast: 25 times NumPy's float16 conversion


RESAMPLES = ("bilinear", "bicubic")


def check_resample(resample) -> str:
    """``resample`` if it is one of ``RESAMPLES``, else ``utils.UserError``."""
    if resample not in RESAMPLES:
        raise utils.UserError(f"unknown resampling {resample!r} (choose from {', '.join(RESAMPLES)})")
    return resample


def warp(image: torch.Tensor, flow: torch.Tensor, resample: str = "bilinear") -> torch.Tensor:
    """out(x) = image(x + flow(x)), borders repeated; (B, C, H, W) and flow (B, 2, H, W) in
    pixels, (dx, dy). With the flow from frame t to frame s, this brings frame s onto frame t's
    pixel grid. fp32; a zero flow returns the image (to ~1e-6). ``resample``:
    - ``bilinear``: each value a blend of the 2 x 2 pixels around x + flow(x);
    - ``bicubic``: PyTorch's cubic convolution (a = -0.75) over the 4 x 4 pixels around it, then
      clipped to the range of the 2 x 2 pixels bilinear would blend. The cubic keeps a line a
      pixel wide from being averaged with its neighbours at half-pixel shifts; the clip removes its
      overshoot (ringing) beside sharp edges, so that no value leaves the range of the pixels it
      lies between. The keyframe warped so, with no model, scored -0.29 to +0.62 dB against
      bilinear on the README study's four held-out shots (-0.00 and +0.20 over its two folds), the
      cubic without the clip -0.05 and +0.09."""
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=torch.float32),
                            torch.arange(w, device=flow.device, dtype=torch.float32), indexing="ij")
    px, py = xs + flow[:, 0].float(), ys + flow[:, 1].float()               # (B, H, W) where to sample
    scale_x, scale_y = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    grid = torch.stack([px * scale_x - 1.0, py * scale_y - 1.0], dim=-1)  # (B, H, W, 2)
    image = image.float()
    out = F.grid_sample(image, grid, mode=check_resample(resample), padding_mode="border", align_corners=True)
    if resample == "bilinear":
        return out
    # the range of the 2 x 2 pixels at floor(x + flow(x)) (borders repeated, as grid_sample's)
    padded = F.pad(image, (0, 1, 0, 1), mode="replicate")
    corners = (padded[..., :-1, :-1], padded[..., :-1, 1:], padded[..., 1:, :-1], padded[..., 1:, 1:])
    high = torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))  # (B, C, H, W)
    low = torch.minimum(torch.minimum(corners[0], corners[1]), torch.minimum(corners[2], corners[3]))
    corner = torch.stack([px.clamp(0, w - 1).floor() * scale_x - 1.0, py.clamp(0, h - 1).floor() * scale_y - 1.0], -1)
    high = F.grid_sample(high, corner, mode="nearest", padding_mode="border", align_corners=True)
    low = F.grid_sample(low, corner, mode="nearest", padding_mode="border", align_corners=True)
    return torch.minimum(torch.maximum(out, low), high)


def warp_frame(image: np.ndarray, line_to: np.ndarray, line_from: np.ndarray, mode: str = "canny",
               still_window: int = 0, resample: str = "bilinear", scale: int = 1) -> np.ndarray:
    """A uint8 RGB frame (that of line art ``line_from``) warped onto the frame of line art
    ``line_to`` along ``line_flow``: the answer that needs no model, made with the very flow and
    warp the model is given (the study's and the demo's ``warp_keyframe``; ``still_window``: the
    model's ``ModelConfig.still_window``; ``resample``: ``warp``'s, for a keyframe the model's
    ``ModelConfig.keyframe_resample``; ``scale``: the model's ``ModelConfig.flow_scale``, and
    then ``line_to`` and ``line_from`` are the frames' ``flow_art``)."""
    flow = flow_tensor(line_flow(line_to, line_from, mode, still_window, scale))[None]
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0
    out = warp(tensor, flow, resample)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return (out * 255 + 0.5).astype(np.uint8)


KEYFRAME_WARPS = ("warp_keyframe", "warp_chain", "warp_blend")


def keyframe_warps(frames: list[np.ndarray], lines: list[np.ndarray], mode: str = "canny",
                   still_window: int = 0, resample: str = "bilinear", scale: int = 1,
                   arts: list[np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """The answers that need no model, made with the very flow and warp the model is given, for a
    shot whose frame 0 is the coloured keyframe: ``frames`` uint8 RGB (only frame 0 is read),
    ``lines`` the uint8 line art of every frame, ``still_window`` the model's flow setting,
    ``resample`` the model's keyframe resampling (``warp_keyframe`` only: a chain of warps is
    resampled bilinearly, as a model resamples its previous frame), ``scale`` the model's flow
    scale and ``arts`` the frames' ``flow_art`` (None: made from the line art alone, ``flow_arts``).
    -> {name: [frame 0 .. N-1]}, frame 0 the keyframe:
    - ``warp_keyframe``: the keyframe warped onto every frame (``warp_frame``);
    - ``warp_chain``: warped frame to frame, each from the one before;
    - ``warp_blend``: the mean of those two, rounded: the two sources the copy path blends (the
      aligned keyframe and the aligned chain), averaged with no model. Where either may be wrong
      the mean is a hedge, which PSNR rewards over a confident pick."""
    key = frames[0]
    arts = flow_arts(lines, mode, scale) if arts is None else arts
    direct, chain = [key], [key]
    for t in range(1, len(lines)):
        direct.append(warp_frame(key, arts[t], arts[0], mode, still_window, resample, scale))
        chain.append(warp_frame(chain[-1], arts[t], arts[t - 1], mode, still_window, scale=scale))
    blend = [key] + [np.rint((a.astype(np.float32) + b) / 2).astype(np.uint8) for a, b in zip(direct[1:], chain[1:])]
    return {"warp_keyframe": direct, "warp_chain": chain, "warp_blend": blend}


# ----------------------------------------------------------------------------- the choices
class Correspondence(nn.Module):
    """Brings a source onto frame t. Subclasses set ``name`` and override what they change."""
    name = ""
    trains_alignment = False  # True: train.py's warm-up also scores the aligned colour against frame t

    def pair_data(self, line_t: np.ndarray, line_s: np.ndarray, mode: str) -> np.ndarray | None:
        """What the CPU computes for frame t and a source frame s from their uint8 line art (or,
        for a flow at a scale above 1, their ``flow_art``): here nothing (None)."""
        return None

    def flow_art(self, colour: np.ndarray | None, line: np.ndarray, mode: str) -> np.ndarray:  # noqa: ARG002
        """What ``pair_data`` takes for a frame of line art ``line`` (uint8 (S, S)) made from the
        colour frame ``colour`` (uint8 (S, S, 3), or None when the input is line art): here the
        line art itself."""
        return line

    def forward(self, source: Source, line_t: torch.Tensor, resample: str = "bilinear") -> Source:  # noqa: ARG002
        """``source`` aligned onto frame t (line art ``line_t`` (B, 1, H, W)); absent frames
        stay zeros. ``resample``: how a warp samples the source (``warp``)."""
        return source.masked()


class FlowWarp(Correspondence):
    """DIS optical flow between the line arts (``line_flow``, with ``still_window`` and
    ``flow_scale``: the model's ``ModelConfig.still_window`` and ``flow_scale``, which only the CPU
    half uses), then ``warp``. With a flow scale above 1, ``pair_data`` takes the frames'
    ``flow_art`` (``self.flow_art``), not their line art."""
    name = "flow"

    def __init__(self, still_window: int = 0, flow_scale: int = 1):
        super().__init__()
        self.still_window = check_still_window(still_window)
        self.flow_scale = check_flow_scale(flow_scale)

    def flow_art(self, colour, line, mode):
        return flow_art(colour, line, mode, self.flow_scale)

    def pair_data(self, line_t, line_s, mode):
        return line_flow(line_t, line_s, mode, self.still_window, self.flow_scale)

    def forward(self, source: Source, line_t: torch.Tensor, resample: str = "bilinear") -> Source:
        source = source.masked()
        if source.flow is None:
            return source
        line = source.line if source.line is not None else torch.zeros_like(source.colour[:, :1])
        both = warp(torch.cat([source.colour, line], 1), source.flow, resample)  # (B, 4, H, W)
        return dataclasses.replace(source, colour=both[:, :3], line=both[:, 3:])


def build(name: str) -> Correspondence:
    if name not in CHOICES:
        raise ValueError(f"unknown correspondence {name!r} (choose from {', '.join(CHOICES)})")
    if name == "match":
        import matcher  # it builds on this module
        return matcher.RegionMatch()
    if name == "select":
        import selector  # it builds on this module and on matcher
        return selector.Select()
    return {"flow": FlowWarp, "none": Correspondence}[name]()


def check_still_window(still_window) -> int:
    """``still_window`` if it is a whole number >= 0 (0: off), else ``utils.UserError``."""
    if not isinstance(still_window, int) or isinstance(still_window, bool) or still_window < 0:
        raise utils.UserError(f"the still window must be a whole number of pixels >= 0 (0: off), got {still_window!r}")
    return still_window


def check_flow_scale(flow_scale) -> int:
    """``flow_scale`` if it is one of ``FLOW_SCALES``, else ``utils.UserError``."""
    if isinstance(flow_scale, bool) or flow_scale not in FLOW_SCALES:
        raise utils.UserError(f"the flow scale must be one of {', '.join(map(str, FLOW_SCALES))}, got {flow_scale!r}")
    return flow_scale


def cpu_half(name: str, still_window: int = 0, flow_scale: int = 1) -> Correspondence:
    """A correspondence for its ``pair_data`` only (the data loader, a colouring chain): no
    weights are made (a ``match`` matcher's are the generator's), and no random numbers drawn.
    ``still_window`` > 0 and ``flow_scale`` > 1 (``line_flow``) need a correspondence with a flow."""
    if name not in CHOICES:
        raise ValueError(f"unknown correspondence {name!r} (choose from {', '.join(CHOICES)})")
    if name == "none":
        if check_still_window(still_window):
            raise utils.UserError("a still window keeps parts of the line-art flow still: "
                                  "correspondence 'none' has no flow")
        if check_flow_scale(flow_scale) != 1:
            raise utils.UserError("a flow scale sets where the line-art flow is computed: "
                                  "correspondence 'none' has no flow")
        return Correspondence()
    return FlowWarp(still_window, flow_scale)
