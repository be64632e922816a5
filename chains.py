"""Recurrent colorization of a shot: the chain step shared by test.py and train.py's validation.

A chain colours the frames of one shot in order. Frame t is fed the chain's previous output
(its "previous frame") and, for a generator with a reference input, the shot's coloured
keyframe. A keyframe also starts the chain: it is the previous frame of the first frame.
Without one, the first frame gets no previous frame (black, as in the original). With
``cfg.warp == 'flow'`` both are first warped onto frame t along the optical flow between the
line arts (``dataset.line_flow``), as in training.

Example (a trained generator, a list of uint8 line-art frames and a coloured keyframe):
    chain = chains.Chain(G, cfg, "cpu", "canny")
    chain.start(chains.Source.of(key_rgb, key_line, "cpu"))
    colours = [chain.step(line) for line in lines]   # each (1, 3, S, S) in [0, 1]
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

import dataset as data_lib
import models


@dataclass
class Source:
    """A coloured frame a chain can take colours from: the previous output or a keyframe."""
    colour: torch.Tensor  # (1, 3, S, S) float32 in [0, 1], on the chain's device
    line: np.ndarray      # (S, S) uint8 line art of the same frame

    @classmethod
    def of(cls, rgb: np.ndarray, line: np.ndarray, device) -> "Source":
        """From a uint8 RGB (S, S, 3) frame already at network resolution and its line art."""
        return cls(data_lib.to_tensor(rgb)[None].to(device), line)


class Chain:
    """One recurrent chain through a shot. ``start`` begins it (from a keyframe or from black);
    ``step`` colours the next frame from its line art and returns the colour frame.
    ``step_together`` steps several independent chains in one batch (see its docstring)."""

    def __init__(self, G, cfg: models.ModelConfig, device, line_mode: str, autocast=None):
        self.G, self.cfg, self.device, self.line_mode = G, cfg, torch.device(device), line_mode
        self.autocast = autocast or contextlib.nullcontext()
        self.prev: Source | None = None
        self.ref: Source | None = None

    def start(self, keyframe: Source | None = None) -> None:
        self.prev = keyframe
        self.ref = keyframe if self.cfg.reference else None

    def _source_inputs(self, source: Source | None, line: np.ndarray, like: torch.Tensor):
        """(colour, line art, presence, flow) tensors of one source for frame ``line``."""
        if source is None:
            zeros = torch.zeros(1, 3, *like.shape[-2:], device=self.device)
            return zeros, zeros[:, :1], torch.zeros(1, device=self.device), None
        flow = None
        if self.cfg.warp == "flow":
            flow = data_lib.flow_tensor(data_lib.line_flow(line, source.line, self.line_mode))[None]
            flow = flow.to(self.device)
        src_line = data_lib.to_tensor(source.line)[None].to(self.device)
        return source.colour, src_line, torch.ones(1, device=self.device), flow

    def next_input(self, line: np.ndarray) -> torch.Tensor:
        """The generator input (1, C, S, S) for the next frame, from its uint8 line art."""
        line_t = data_lib.to_tensor(line)[None].to(self.device)
        prev, prev_line, has_prev, flow = self._source_inputs(self.prev, line, line_t)
        ref, ref_line, has_ref, ref_flow = self._source_inputs(self.ref, line, line_t)
        return models.assemble_input(self.cfg, line_t, prev, has_prev, prev_line, flow,
                                     ref, ref_line, has_ref, ref_flow)

    def step(self, line: np.ndarray) -> torch.Tensor:
        """Colour the next frame from its uint8 line art (S, S) -> (1, 3, S, S) in [0, 1]."""
        return step_together([self], [line])[0]


@torch.no_grad()
def step_together(chains: list[Chain], lines: list[np.ndarray]) -> list[torch.Tensor]:
    """Step independent chains (other shots, other keyframe segments) in one generator call:
    one line-art frame each -> one (1, 3, S, S) colour frame each, in the same order. Every
    layer of the generators works on each sample alone (instance norm, convolutions), so the
    result is that of stepping them one at a time; on a GPU it is several times faster."""
    lead = chains[0]
    x = torch.cat([chain.next_input(line) for chain, line in zip(chains, lines)])
    with lead.autocast:
        out = lead.G(x).float().clamp(0, 1)                   # (B, 3, S, S)
    results = list(out.split(1))
    for chain, line, result in zip(chains, lines, results):
        chain.prev = Source(result, line)
    return results


# ----------------------------------------------------------------------------- keyframes
@dataclass
class Job:
    """One chain through part of a shot: the shot's frame indices in the order they are
    coloured, started from the keyframe at index ``key`` (which it also gets as its reference),
    or from black (None)."""
    frames: list[int]
    key: int | None


BLENDS = ("linear", "nearest")


def blend_weight(t: int, a: int, b: int, blend: str = "linear") -> float:
    """The weight of the chain from keyframe ``a`` at frame t, a < t < b (the chain from ``b``
    gets the rest): ``linear`` (b - t) / (b - a); ``nearest`` 1 for the nearer keyframe, 1/2 each
    at the midpoint."""
    if blend == "linear":
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
    the order they are coloured, starting ``Source`` or None) pairs; ``new_chain()`` makes a
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
        outs = step_together([active[j] for j in ids], [jobs[j][0][len(results[j])] for j in ids])
        for j, out in zip(ids, outs):
            results[j].append(out.cpu())
            if len(results[j]) == len(jobs[j][0]):
                del active[j]
        refill()
    return results
