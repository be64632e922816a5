"""Colour shots with a trained generator: the library behind test.py, train.py's validation,
demo.py, the benchmarks and app.py. Plain arguments only; nothing here reads a command line.

A *chain* colours the frames of one shot in order: frame t is fed the chain's previous output
(its previous frame) and, for a generator with a keyframe input, the shot's coloured keyframe,
each aligned onto frame t by the generator's correspondence (``correspond.py``). A keyframe
also starts the chain: it is the previous frame of the first frame coloured. Without one, the
first frame gets no previous frame (black, as in the original).

Keyframes of a shot (``ShotKeyframes``):
- ``start``: a coloured keyframe that starts the chain of the whole shot; frame 0 is coloured
  from it (test.py's ``--first_keyframe``);
- ``frames``: coloured versions of any frames of the shot ({frame name: RGB}). Chains run forward
  and backward from every keyframe (``plan``), frames between two keyframes blend both chains
  (``--blend``: by distance, or with ``agree`` by distance and, pixel by pixel, by how well each
  keyframe's line art agrees with the frame's once warped onto it), and a keyframe's own frame is
  output as the keyframe.

Example (a generator checkpoint and the frames of one shot in memory, uint8 RGB):
    colorizer = colorize.Colorizer.from_checkpoint("runs/exp1/generator.pt", "cpu")
    results = colorizer.colour_shot(frames, keyframes={0: key_rgb, 40: key40_rgb})
    # results[t]: uint8 (S, S, 3); results[0] is key_rgb resized to S x S
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

import correspond
import dataset as data_lib
import models
import regions
import selector
import utils
from correspond import Source, Sources
from utils import UserError

INPUT_TYPES = ("colour", "lineart", "grey")
BLENDS = ("linear", "nearest", "agree")
DEFAULT_BLEND = "agree"  # keyframe_blend.py's rule on the training clips of both folds of the README's study
# the ``agree`` join (``Agreement``): how far a keyframe's disagreement with frame t is pooled in
# space (a Gaussian's sigma, as a share of the frame's side: 8 pixels at 128) and in time (frames
# each side), and how much disagreement costs a chain a factor e of its weight (in
# ``selector.line_distance``'s units: 0.02 is 0.16 pixels of distance to the lines, on average over
# the pool). Chosen on the training clips of both folds of the README's study, never on their
# evaluation shots, by keyframe_blend.py's rule (the highest PSNR that keeps the video as steady as
# the truth).
AGREE_SIGMA = 1 / 16
AGREE_FRAMES = 8
AGREE_TAU = 0.02
# test-time views (``Options.views``): the mirror images a frame is also coloured from, as the
# tensor dimensions flipped: 1, the frame itself; 2, and left-right; 4, and upside down, and both
VIEWS = {1: ((),), 2: ((), (-1,)), 4: ((), (-1,), (-2,), (-2, -1))}


@dataclass
class Options:
    """How frames are coloured (every field has test.py's default)."""
    image_size: int                  # network resolution, square
    line_art: str = "canny"          # how colour input becomes line art: canny | grey
    input_type: str = "colour"       # colour (line art derived, frames kept as the truth) | lineart | grey
    blend: str = DEFAULT_BLEND       # frames between two keyframes: linear | nearest | agree (see ``plan``)
    batch_chains: int = 1            # independent chains stepped in one generator call (on a GPU)
    frame_by_frame: bool = False     # no recurrence: every frame gets a black previous frame
    regions: bool = False            # flat regions: each line-art region takes one colour by a vote (regions.py)
    amp: str = "off"                 # mixed precision on CUDA: off | bf16 | fp16 (utils.autocast_context)
    views: int = 1                   # test-time views, 1 | 2 | 4: outputs of the mirrored frame averaged (VIEWS)
    still_window: int | None = None  # the line-art flow's still window (correspond.line_flow); None: the model's own
    flow_scale: int | None = None    # the line-art flow's scale (correspond.flow_art); None: the model's own
    keyframe_resample: str | None = None  # how a keyframe is resampled when warped (correspond.RESAMPLES); None: the model's own
    source_split: str | None = None  # how the copy path shares its copied weight (models.SOURCE_SPLITS); None: the model's own


@dataclass
class Frame:
    """One input frame as it flows through colouring."""
    shot: str                         # its shot (any key; test.py: the shot folder relative to the input)
    name: str                         # its name within the shot (test.py: the file stem)
    line: np.ndarray                  # (S, S) uint8 line art at network resolution
    target: np.ndarray | None = None  # (S, S, 3) uint8 true colours at network resolution, when known
    rgb: np.ndarray | None = None     # the full-resolution input, uint8 (H, W, 3), when kept
    art: np.ndarray | None = None     # what its line-art flow is computed on (correspond.flow_art); None: made
    #                                   from ``target`` and ``line`` when a chain needs it (``Colorizer.art``)


@dataclass
class ShotKeyframes:
    """The coloured keyframes of one shot, uint8 RGB of the input frames' size."""
    start: np.ndarray | None = None                      # starts the shot's chain; frame 0 is coloured from it
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # {frame name: its coloured version}


# ----------------------------------------------------------------------------- one chain
@dataclass
class ChainSource:
    """A coloured frame a chain takes colours from: its previous output or a keyframe."""
    colour: torch.Tensor  # (1, 3, S, S) float32 in [0, 1], on the chain's device
    line: np.ndarray      # (S, S) uint8 line art of the same frame
    art: np.ndarray | None = None  # what the frame's line-art flow is computed on (correspond.flow_art); None: ``line``

    @classmethod
    def of(cls, rgb: np.ndarray, line: np.ndarray, device, art: np.ndarray | None = None) -> "ChainSource":
        """From a uint8 RGB (S, S, 3) frame already at network resolution, its line art and flow art."""
        return cls(data_lib.to_tensor(rgb)[None].to(device), line, art)

    def mirrored(self, dims: tuple) -> "ChainSource":
        """This source flipped along ``dims`` (tensor dimensions -1: left-right, -2: upside down)."""
        if not dims:
            return self
        return ChainSource(mirror(self.colour, dims), mirror_line(self.line, dims),
                           None if self.art is None else mirror_line(self.art, dims))


def check_views(views: int) -> None:
    if views not in VIEWS:
        raise UserError(f"views must be one of {', '.join(map(str, VIEWS))}, got {views}")


def mirror(x: torch.Tensor, dims: tuple) -> torch.Tensor:
    """``x`` (..., H, W) flipped along ``dims`` (-1, -2); its own inverse."""
    return torch.flip(x, dims=dims) if dims else x


def mirror_line(line: np.ndarray, dims: tuple) -> np.ndarray:
    """(H, W) line art flipped as ``mirror`` flips a tensor of it."""
    return np.ascontiguousarray(np.flip(line, axis=tuple(d + 2 for d in dims))) if dims else line


class Chain:
    """One recurrent chain through a shot. ``start`` begins it (from a keyframe or from black);
    ``step`` colours the next frame from its line art and returns the colour frame. With
    ``regions`` each output is flattened region by region (``flat_regions``) before it is
    returned; the chain is fed the pixel-wise colour, as without regions: fed back, flattened
    frames turned a textured background into blotches that grew along the chain (the README's
    "Two keyframes joined where each keyframe's drawing lands")."""

    def __init__(self, G, cfg: models.ModelConfig, device, line_mode: str, autocast=None, regions=False,
                 views: int = 1, still_window: int | None = None, flow_scale: int | None = None):
        check_views(views)
        self.G, self.cfg, self.device, self.line_mode = G, cfg, torch.device(device), line_mode
        self.still_window = cfg.still_window if still_window is None else still_window
        self.flow_scale = cfg.flow_scale if flow_scale is None else flow_scale
        self.correspondence = correspond.cpu_half(cfg.correspondence, self.still_window, self.flow_scale)
        self.autocast = autocast or contextlib.nullcontext()
        self.regions = regions
        self.views = VIEWS[views]
        self.prev: ChainSource | None = None
        self.keyframe: ChainSource | None = None

    def start(self, keyframe: ChainSource | None = None) -> None:
        self.prev = keyframe
        self.keyframe = keyframe if self.cfg.keyframe_input else None

    def flow_art(self, line: np.ndarray, art: np.ndarray | None) -> np.ndarray:
        """What a frame's flow is computed on: ``art`` when given, else its line art as the
        correspondence takes it with no colour frame (``correspond.flow_art``)."""
        return art if art is not None else self.correspondence.flow_art(None, line, self.line_mode)

    def _source(self, source: ChainSource | None, art: np.ndarray, line_t: torch.Tensor) -> Source:
        """One source of the frame of flow art ``art`` (``flow_art``) for the generator, by name."""
        if source is None:
            return Source.absent(line_t)
        data = self.correspondence.pair_data(art, self.flow_art(source.line, source.art), self.line_mode)
        flow = None if data is None else correspond.flow_tensor(data)[None].to(self.device)
        return Source(source.colour, torch.ones(1, device=self.device),
                      data_lib.to_tensor(source.line)[None].to(self.device), flow)

    def sources(self, line: np.ndarray, dims: tuple = (), art: np.ndarray | None = None) -> Sources:
        """What the generator is given for the next frame, from its uint8 line art (S, S) and the
        flow art it was made with (``flow_art``); with ``dims``, for the frame and its sources
        mirrored along them (``mirror``): the line-art flow is then computed on the mirrored line
        art too."""
        art = mirror_line(self.flow_art(line, art), dims)
        line = mirror_line(line, dims)
        line_t = data_lib.to_tensor(line)[None].to(self.device)               # (1, 1, S, S)
        prev, key = (None if s is None else s.mirrored(dims) for s in (self.prev, self.keyframe))
        keyframe = self._source(key, art, line_t) if self.cfg.keyframe_input else None
        return Sources(line_t, self._source(prev, art, line_t), keyframe)

    def step(self, line: np.ndarray, art: np.ndarray | None = None) -> torch.Tensor:
        """Colour the next frame from its uint8 line art (S, S) and flow art -> (1, 3, S, S) in [0, 1]."""
        return step_together([self], [line], [art])[0]


@torch.no_grad()
def step_together(chains: list[Chain], lines: list[np.ndarray], arts: list | None = None) -> list[torch.Tensor]:
    """Step independent chains (other shots, other keyframe segments): one line-art frame each
    (and its flow art, ``Chain.flow_art``; None: made from the line art) -> one (1, 3, S, S)
    colour frame each, in the same order. On a GPU they run as one batch, several
    times faster; every layer works on each sample alone, so the result is that of stepping them
    one at a time up to the kernels' rounding. On the CPU each chain runs on its own: batching
    buys little there, and oneDNN's batch-size-dependent kernels would change the last bits,
    which a recurrent chain carries on (4-5/255 after a few frames)."""
    lead = chains[0]
    arts = [chain.flow_art(line, art) for chain, line, art in zip(chains, lines, arts or [None] * len(chains))]
    # every chain's views (``Chain.views``), one generator input each
    views = [(i, dims) for i, chain in enumerate(chains) for dims in chain.views]
    sources = [chains[i].sources(lines[i], dims, arts[i]) for i, dims in views]
    groups = [Sources.cat(sources)] if lead.device.type == "cuda" else sources
    outs = []
    with lead.autocast:
        for batch in groups:
            out = lead.G(batch)
            for i in range(len(out.colour)):
                outs.append(models.Colouring(*(None if v is None else v[i:i + 1].float() for v in
                                               (out.colour, out.condition, out.weights, out.candidates))))
    outs = [average_views([(dims, out) for (j, dims), out in zip(views, outs) if j == i]) for i in range(len(chains))]
    results = []
    for chain, line, art, out in zip(chains, lines, arts, outs):
        colour = out.colour.clamp(0, 1)                                   # (1, 3, S, S)
        chain.prev = ChainSource(colour, line, art)
        results.append(flat_regions(out, line) if chain.regions else colour)
    return results


def average_views(outs: list[tuple[tuple, models.Colouring]]) -> models.Colouring:
    """One frame's outputs from its views ((mirrored dims, output) each), each mirrored back and
    averaged field by field: a hedge between colourings made along different flows (the DIS flow
    of a mirrored frame is not the mirrored flow), which PSNR rewards where any of them may be
    wrong. One view is returned as it is."""
    if len(outs) == 1:
        return outs[0][1]
    fields = []
    for name in ("colour", "condition", "weights", "candidates"):
        values = [getattr(out, name) for _, out in outs]
        fields.append(None if values[0] is None else
                      sum(mirror(v, dims) for (dims, _), v in zip(outs, values)) / len(values))
    return models.Colouring(*fields)


def flat_regions(out: models.Colouring, line: np.ndarray) -> torch.Tensor:
    """One frame's output with the regions of its line art flat: the vote of ``regions.vote``
    over the copy path's candidates (generated colour, aligned previous frame, aligned keyframe)
    weighted by its blend weights, each region painted with its winner's median where the winner
    is flat there; a generator without a copy path votes with its colour alone (each region's
    median). Line pixels and shaded regions keep the blended colour. -> (1, 3, S, S) in [0, 1]."""
    colour = out.colour.clamp(0, 1)
    if out.candidates is None:
        candidates, weights = colour[:, None], torch.ones_like(colour[:, :1])
    else:
        candidates, weights = out.candidates.clamp(0, 1), out.weights
    flat, _ = regions.vote(regions.segment(line), (candidates[0].permute(0, 2, 3, 1) * 255).cpu().numpy(),
                           weights[0].cpu().numpy(), data_lib.to_uint8(colour[0]))
    return data_lib.to_tensor(flat)[None].to(colour.device)


# ----------------------------------------------------------------------------- keyframe plans
@dataclass
class Job:
    """One chain through part of a shot: the shot's frame indices in the order they are
    coloured, started from the keyframe at index ``key`` (which it also gets as its keyframe
    input), or from black (None)."""
    frames: list[int]
    key: int | None


def blend_weight(t: int, a: int, b: int, blend: str = "linear") -> float:
    """The weight of the chain from keyframe ``a`` at frame t, a < t < b (the chain from ``b``
    gets the rest): ``linear`` (b - t) / (b - a); ``nearest`` 1 for the nearer keyframe, 1/2 each
    at the midpoint; ``agree`` as ``linear``, then reweighted pixel by pixel (``Agreement``)."""
    if blend in ("linear", "agree"):
        return (b - t) / (b - a)
    if blend == "nearest":
        return 1.0 if t - a < b - t else 0.0 if t - a > b - t else 0.5
    raise ValueError(f"unknown blend {blend!r} (choose from {', '.join(BLENDS)})")


def plan(n: int, keys, blend: str = "linear") -> tuple[list[Job], dict[int, list[tuple[int, float]]]]:
    """How a shot of ``n`` frames with keyframes at indices ``keys`` is coloured: each frame from
    its nearest keyframes in time, chains running away from every keyframe.

    - no keyframe: one chain forward from black over the whole shot;
    - before the first keyframe: one chain backward from it (frames k0-1, ..., 0);
    - after the last keyframe: one chain forward from it;
    - between keyframes a < b: a chain forward from a and one backward from b, blended by
      distance (``blend_weight``): with ``linear`` frame t takes (b - t) / (b - a) of the chain
      from a and (t - a) / (b - a) of the chain from b, so the nearer keyframe weighs more (a
      midpoint takes half of each); with ``nearest`` it takes the nearer chain alone. A chain
      whose weight is 0 everywhere is cut short.
    Returns (jobs, weights) where weights[t] = [(job index, weight), ...] for every frame that
    is not a keyframe; the weights of a frame sum to 1. Keyframes are output as they are."""
    keys = sorted(set(keys))
    if any(not 0 <= k < n for k in keys):
        raise ValueError(f"keyframe indices {keys} outside a shot of {n} frames")
    jobs: list[Job] = []
    weights: dict[int, list[tuple[int, float]]] = {}

    def add(frames, key, weight_of):
        if frames:
            jobs.append(Job(frames, key))
            for t in frames:
                weights.setdefault(t, []).append((len(jobs) - 1, weight_of(t)))

    if not keys:
        add(list(range(n)), None, lambda t: 1.0)
        return jobs, weights
    add(list(range(keys[0] - 1, -1, -1)), keys[0], lambda t: 1.0)
    for a, b in zip(keys, keys[1:]):
        forward = [t for t in range(a + 1, b) if blend_weight(t, a, b, blend) > 0]
        backward = [t for t in range(b - 1, a, -1) if blend_weight(t, a, b, blend) < 1]
        add(forward, a, lambda t, a=a, b=b: blend_weight(t, a, b, blend))
        add(backward, b, lambda t, a=a, b=b: 1 - blend_weight(t, a, b, blend))
    add(list(range(keys[-1] + 1, n)), keys[-1], lambda t: 1.0)
    return jobs, weights


def run_jobs(jobs: list, new_chain, batch: int = 1) -> list[list[torch.Tensor]]:
    """Run independent chains, up to ``batch`` of them stepped together. ``jobs``: (line arts in
    the order they are coloured, starting ``ChainSource`` or None[, their flow arts]); ``new_chain()`` makes a
    ``Chain``. A chain that ends hands its place to the next job. Returns, per job, its colour
    frames (1, 3, S, S) on the CPU, in its own order."""
    results: list[list[torch.Tensor]] = [[] for _ in jobs]
    waiting = iter(range(len(jobs)))
    active: dict[int, Chain] = {}

    def refill():
        while len(active) < batch:
            j = next(waiting, None)
            if j is None:
                return
            if jobs[j][0]:
                active[j] = new_chain()
                active[j].start(jobs[j][1])

    refill()
    while active:
        ids = list(active)
        at = [len(results[j]) for j in ids]
        outs = step_together([active[j] for j in ids], [jobs[j][0][k] for j, k in zip(ids, at)],
                             [jobs[j][2][k] if len(jobs[j]) > 2 else None for j, k in zip(ids, at)])
        for j, out in zip(ids, outs):
            results[j].append(out.cpu())
            if len(results[j]) == len(jobs[j][0]):
                del active[j]
        refill()
    return results


def disagreement(line_t: np.ndarray, line_key: np.ndarray, mode: str = "canny", still_window: int = 0,
                 scale: int = 1, art_t: np.ndarray | None = None, art_key: np.ndarray | None = None) -> np.ndarray:
    """How far a keyframe's drawing lands from frame t's, pixel by pixel: (S, S) float32, 0 where
    they agree. The keyframe's line art ``line_key`` is warped onto frame t along the line-art flow
    the chains use (with ``scale`` > 1, computed on the flow arts ``art_t`` and ``art_key``, each made from
    its line art alone where not given: ``correspond.flow_art``), and
    its distance to the lines (``selector.line_distance``) is compared with frame t's. Where a
    character has turned since the keyframe its lines do not land on frame t's; where the drawing
    is held the two agree exactly."""
    art_t = correspond.flow_art(None, line_t, mode, scale) if art_t is None else art_t
    art_key = correspond.flow_art(None, line_key, mode, scale) if art_key is None else art_key
    flow = correspond.line_flow(art_t, art_key, mode, still_window, scale)
    warped = correspond.warp_array(line_key, flow) / 255.0
    return np.abs(selector.line_distance_array(warped) - selector.line_distance_array(line_t))


class Agreement:
    """The ``agree`` join's log weights for the frames of one shot (line art ``lines``): at frame
    t, between keyframes a < t < b, a keyframe's ``disagreement`` averaged over the frames within
    ``AGREE_FRAMES`` of t (and between a and b), pooled in space by a Gaussian (``AGREE_SIGMA``),
    divided by ``AGREE_TAU`` and negated: 0 where the keyframe lands, negative where it does not.
    The average over frames keeps the weights from switching from one frame to the next (without
    it the join flickered: TC ratios of 2.72 and 1.55 on the training clips of the README's two
    folds, more change from frame to frame than the truth has). Frames are asked for in order; the
    disagreements of frames left behind are dropped."""

    def __init__(self, lines: list[np.ndarray], mode: str = "canny", still_window: int = 0, scale: int = 1,
                 arts: list[np.ndarray] | None = None):
        self.lines, self.mode, self.still_window = lines, mode, still_window
        self.scale, self.arts = scale, (correspond.flow_arts(lines, mode, scale) if arts is None else arts)
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def _disagreement(self, t: int, key: int) -> np.ndarray:
        if (t, key) not in self.cache:
            self.cache[(t, key)] = disagreement(self.lines[t], self.lines[key], self.mode, self.still_window,
                                                self.scale, self.arts[t], self.arts[key])
        return self.cache[(t, key)]

    def __call__(self, t: int, key: int, a: int, b: int) -> np.ndarray:
        """(S, S) float32 log weight of the chain from ``key`` (a or b) at frame t, a < t < b."""
        for old in [k for k in self.cache if k[0] < t - AGREE_FRAMES]:
            del self.cache[old]
        span = range(max(a + 1, t - AGREE_FRAMES), min(b - 1, t + AGREE_FRAMES) + 1)
        mean = np.mean([self._disagreement(s, key) for s in span], 0).astype(np.float32)
        size = max(mean.shape)
        return -cv2.GaussianBlur(mean, (0, 0), AGREE_SIGMA * size, borderType=cv2.BORDER_REFLECT) / AGREE_TAU


def join_weights(blend: str, weights: list[float], keys: list[int | None], t: int, agreement: Agreement,
                 shape: tuple[int, int]) -> np.ndarray:
    """The per-pixel weights (K, S, S) of the K chains (or warps) that reach frame t, from
    keyframes ``keys`` with weights by distance ``weights`` (``plan``): with ``agree`` and two
    keyframes, ``agree_weights`` of their ``agreement``; otherwise the weights themselves."""
    if blend == "agree" and len(keys) == 2 and None not in keys:
        a, b = sorted(keys)
        return agree_weights(weights, [agreement(t, key, a, b) for key in keys])
    return np.stack([np.full(shape, w, np.float32) for w in weights])


def warped_keyframes(lines: list[np.ndarray], keys: dict[int, np.ndarray], blend: str = DEFAULT_BLEND,
                     mode: str = "canny", still_window: int = 0, resample: str = "bilinear", scale: int = 1,
                     arts: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The answer that needs no model for a shot of line art ``lines`` with coloured keyframes
    ``keys`` ({index: uint8 (S, S, 3)}, at least one): every frame gets the keyframes whose chains
    reach it (``plan``), each warped onto it along the line-art flow the chains use
    (``correspond.warp_frame``, resampled as ``resample``: the model's keyframe resampling),
    joined as ``blend`` joins chains; keyframes are output as they are (``scale``, ``arts``: the
    flow's scale and the frames' flow arts, ``correspond.flow_art``). -> uint8 (S, S, 3) per
    frame. What a model colouring the shot from the same keyframes must beat."""
    arts = correspond.flow_arts(lines, mode, scale) if arts is None else arts
    jobs, weights = plan(len(lines), keys, blend)
    agreement = Agreement(lines, mode, still_window, scale, arts)
    out = []
    for t, line in enumerate(lines):
        if t in keys:
            out.append(keys[t])
            continue
        parts = [jobs[j].key for j, _ in weights[t]]
        warps = [correspond.warp_frame(keys[k], arts[t], arts[k], mode, still_window, resample, scale)
                 .astype(np.float32) for k in parts]
        maps = join_weights(blend, [w for _, w in weights[t]], parts, t, agreement, line.shape)
        out.append(np.rint(sum(m[..., None] * w for m, w in zip(maps, warps))).astype(np.uint8))
    return out


def agree_weights(weights: list[float], agreements: list[np.ndarray]) -> np.ndarray:
    """Per-pixel weights (K, S, S) of K chains, summing to 1 at every pixel: each chain's weight by
    distance times exp(its ``agreement``), normalised (a softmax of the log weights, so that no
    pixel divides by zero however far both keyframes are)."""
    logits = np.stack([np.log(max(w, 1e-12)) + a for w, a in zip(weights, agreements)])
    logits -= logits.max(0, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------- shots
class Colorizer:
    """Colours shots, in input order (``stream``), or one shot held in memory (``colour_shot``).

    A shot without keyframes inside it is one chain streamed frame by frame, started from its
    ``start`` keyframe or from black. A shot with keyframes inside it is planned by ``plan``;
    its frames are held in memory until it is done. With ``batch_chains`` N up to N chains of
    consecutive shots run together."""

    def __init__(self, G, cfg: models.ModelConfig, device, options: Options):
        if options.input_type not in INPUT_TYPES:
            raise UserError(f"unknown input type {options.input_type!r} (choose from {', '.join(INPUT_TYPES)})")
        if options.blend not in BLENDS:
            raise UserError(f"unknown blend {options.blend!r} (choose from {', '.join(BLENDS)})")
        if options.batch_chains < 1:
            raise UserError(f"batch_chains must be at least 1, got {options.batch_chains}")
        check_views(options.views)
        cfg.check_size(options.image_size, options.image_size, f"image size {options.image_size}")
        self.G, self.cfg, self.device, self.options = G, cfg, torch.device(device), options
        self.autocast = utils.autocast_context(self.device, options.amp)
        # the flow every chain computes (and the no-model warps beside it): the model's, unless the options say
        self.still_window = cfg.still_window if options.still_window is None else options.still_window
        self.flow_scale = cfg.flow_scale if options.flow_scale is None else options.flow_scale
        # a UserError now, not at the first frame
        self.correspondence = correspond.cpu_half(cfg.correspondence, self.still_window, self.flow_scale)
        # how the keyframe's warp resamples it (and the no-model warps beside it): the model's, unless the options say
        self.keyframe_resample = correspond.check_resample(
            cfg.keyframe_resample if options.keyframe_resample is None else options.keyframe_resample)
        if hasattr(G, "keyframe_resample"):
            G.keyframe_resample = self.keyframe_resample
        # how the copy path shares what it copies between the aligned sources: the model's, unless the options say
        self.source_split = models.check_source_split(
            cfg.source_split if options.source_split is None else options.source_split)
        if hasattr(G, "source_split"):
            G.source_split = self.source_split

    @classmethod
    def from_checkpoint(cls, path, device="auto", image_size: int | None = None, line_art: str | None = None,
                        **options) -> "Colorizer":
        """A colorizer for a training checkpoint, a generator export or an original file; the
        image size and line art default to the ones it was trained with."""
        device = utils.resolve_device(device)
        G, cfg, meta = models.load_generator(path, device)
        line_mode = line_art or meta.get("line_art") or "canny"
        if options.get("input_type", "colour") == "colour" and line_mode == "given":
            raise UserError("this model was trained on artist line art: pass that line art as the input "
                            "(input type lineart)")
        size = image_size or meta.get("image_size") or 256
        return cls(G, cfg, device, Options(size, line_mode, **options))

    # ------------------------------------------------------------------ inputs
    def frame(self, rgb: np.ndarray, shot: str = ".", name: str = "0", keep_rgb: bool = False) -> Frame:
        """Network inputs of one input frame (uint8 RGB of any size), with the very functions
        training used to resize and to make line art."""
        small = utils.resize(rgb, self.options.image_size)
        full = rgb if keep_rgb else None
        if self.options.input_type == "colour":
            frame = Frame(shot, name, data_lib.make_line_art(small, self.options.line_art), small, full)
        else:
            frame = Frame(shot, name, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), None, full)
        frame.art = self.art(frame)
        return frame

    def art(self, frame: Frame) -> np.ndarray:
        """What the frame's line-art flow is computed on (``correspond.flow_art``): its own
        ``art`` if set, else made from its colour frame (``target``, the input at network
        resolution that its Canny line art was made from) and its line art."""
        if frame.art is not None:
            return frame.art
        colour = frame.target if self.options.line_art == "canny" else None
        return self.correspondence.flow_art(colour, frame.line, self.options.line_art)

    def source(self, rgb: np.ndarray, frame: Frame) -> ChainSource:
        """A keyframe (uint8 RGB of any size) as a chain source, for the input frame ``frame``
        (its line art and flow art are the frame's)."""
        return ChainSource.of(utils.resize(rgb, self.options.image_size), frame.line, self.device, self.art(frame))

    def new_chain(self) -> Chain:
        return Chain(self.G, self.cfg, self.device, self.options.line_art, self.autocast, self.options.regions,
                     self.options.views, self.still_window, self.flow_scale)

    # ------------------------------------------------------------------ colouring
    def colour_shot(self, frames: list[np.ndarray], keyframes: dict[int, np.ndarray] | None = None,
                    start: np.ndarray | None = None) -> list[np.ndarray]:
        """Colour one shot held in memory. ``frames``: uint8 RGB (colour input: line art is
        derived) or grey / line-art frames as ``Options.input_type`` says, any size; ``keyframes``:
        {frame index: coloured frame}; ``start``: a keyframe that starts the chain. Returns the
        results, uint8 (S, S, 3), one per frame."""
        keyframes = keyframes or {}
        if any(not 0 <= i < len(frames) for i in keyframes):
            raise UserError(f"keyframe indices {sorted(keyframes)} outside a shot of {len(frames)} frames")
        shot = ShotKeyframes(start, {str(i): key for i, key in keyframes.items()})
        prepared = [self.frame(rgb, name=str(i)) for i, rgb in enumerate(frames)]
        return [result for _, result, _ in self.stream(prepared, lambda _: shot)]

    def stream(self, frames: Iterable[Frame], keyframes_of: Callable[[str], ShotKeyframes] | None = None
               ) -> Iterator[tuple[Frame, np.ndarray, np.ndarray | None]]:
        """Yield (frame, uint8 result (S, S, 3), the full-size keyframe when the frame is one, else
        None) in input order. ``keyframes_of(shot)`` gives each shot's keyframes, asked once when
        the shot's first frame arrives."""
        keyframes_of = keyframes_of or (lambda _: ShotKeyframes())
        pending, n_jobs = [], 0  # shots held for one batch of chains, and about how many chains they give
        for shot, group in itertools.groupby(frames, key=lambda f: f.shot):
            keys = keyframes_of(shot)
            if self.options.frame_by_frame and (keys.start is not None or keys.frames):
                raise UserError("frame by frame colouring feeds no previous frame, so it takes no keyframe")
            if self.options.batch_chains == 1 and not keys.frames:
                yield from self._stream(group, keys.start)
                continue
            held = list(group)
            pending.append((held, keys))
            n_jobs += len(held) if self.options.frame_by_frame else 1 + 2 * len(keys.frames)
            if n_jobs >= self.options.batch_chains:
                yield from self._planned(pending)
                pending, n_jobs = [], 0
        if pending:
            yield from self._planned(pending)

    def _stream(self, group: Iterable[Frame], start: np.ndarray | None):
        chain = self.new_chain()
        for i, frame in enumerate(group):
            if i == 0:
                chain.start(self.source(start, frame) if start is not None else None)
            elif self.options.frame_by_frame:
                chain.start(None)
            yield frame, data_lib.to_uint8(chain.step(frame.line, self.art(frame))[0]), None

    def _planned(self, shots: list[tuple[list[Frame], ShotKeyframes]]):
        """Plan every shot's chains, run them all (``batch_chains`` at a time), blend, yield."""
        jobs, plans = [], []
        for frames, shot_keys in shots:
            keys = {i: shot_keys.frames[f.name] for i, f in enumerate(frames) if f.name in shot_keys.frames}
            if self.options.frame_by_frame:
                shot_jobs = [Job([t], None) for t in range(len(frames))]
                weights = {t: [(t, 1.0)] for t in range(len(frames))}
            else:
                shot_jobs, weights = plan(len(frames), keys, self.options.blend)
            first = len(jobs)
            for job in shot_jobs:
                if job.key is not None:
                    start = self.source(keys[job.key], frames[job.key])
                elif shot_keys.start is not None and not keys:
                    start = self.source(shot_keys.start, frames[0])
                else:
                    start = None
                jobs.append(([frames[t].line for t in job.frames], start, [self.art(frames[t]) for t in job.frames]))
            plans.append((frames, keys, shot_jobs, weights, first))
        results = run_jobs(jobs, self.new_chain, self.options.batch_chains)
        for frames, keys, shot_jobs, weights, first in plans:
            position = [{t: k for k, t in enumerate(job.frames)} for job in shot_jobs]
            agreement = Agreement([f.line for f in frames], self.options.line_art, self.still_window, self.flow_scale,
                                  [self.art(f) for f in frames])
            for t, frame in enumerate(frames):
                if t in keys:
                    yield frame, utils.resize(keys[t], self.options.image_size), keys[t]
                    continue
                parts = [(results[first + j][position[j][t]][0], w, shot_jobs[j].key) for j, w in weights[t]]
                yield frame, self._join(parts, frame.line, t, agreement), None

    def _join(self, parts: list[tuple[torch.Tensor, float, int | None]], line: np.ndarray, t: int,
              agreement: Agreement) -> np.ndarray:
        """Frame t from the chains that reach it ((colour (3, S, S), blend weight, index of its
        keyframe) each): their blend, with ``agree`` weighted pixel by pixel by each keyframe's
        ``agreement``; with ``regions`` each region takes the colour of one chain, the one with the
        most weight there (flat where that chain is flat, its own pixels elsewhere), so two
        keyframes never cross-fade inside a region; line pixels keep the blend."""
        weights = join_weights(self.options.blend, [w for _, w, _ in parts], [key for _, _, key in parts], t,
                               agreement, line.shape)
        blend = data_lib.to_uint8(sum(torch.from_numpy(w)[None] * colour
                                      for (colour, _, _), w in zip(parts, weights)))
        if not self.options.regions or len(parts) == 1:
            return blend
        candidates = np.stack([data_lib.to_uint8(colour) for colour, _, _ in parts]).astype(np.float32)
        return regions.vote(regions.segment(line), candidates, weights, blend, unflat="winner")[0]


# ----------------------------------------------------------------------------- full resolution
def full_resolution(result: np.ndarray, frame: Frame, input_type: str, colour=None) -> np.ndarray:
    """Put the generated colour onto the input's own full-resolution detail: its luminance for
    colour / grey input (chroma from the network, upsampled), or its lines for line art.
    ``colour``: a full-resolution colour to use instead of the upsampled result (a keyframe)."""
    h, w = frame.rgb.shape[:2]
    up = colour if colour is not None else cv2.resize(result, (w, h), interpolation=cv2.INTER_CUBIC)
    if input_type == "lineart":
        lines = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        return (up.astype(np.float32) * lines[..., None] + 0.5).astype(np.uint8)
    ycc = cv2.cvtColor(up, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
