"""A learned region matcher: the ``match`` correspondence.

The flow alone smears: where a character moves further than DIS can follow, or changes shape (a
mouth opens), the warped keyframe puts the wrong colour into a region, or a blend of two. Cel
animation is painted region by region, so the question a colourist asks is which region of the
keyframe a region of frame t is, and that is what this module learns (the idea of paint-bucket
colourisation: BasicPBC, DACoN; trained here from scratch, its weights part of the generator's).

For a source frame s (the keyframe, the previous frame) and frame t:
1. both line arts are cut into regions (``regions.segment``: connected non-line areas after a
   1-pixel thickening of the lines);
2. a small convolutional encoder per side gives every pixel a feature: frame t's from its line art
   and the source warped along the DIS flow (colour and line art), the source's from its own line
   art and colour (at half resolution); features are mean-pooled per region and joined with the region's geometry
   (centroid, log area, mean flow) into a unit embedding;
3. every pair (region r of t, region q of s) gets a score: ``prior`` x log(share of r's pixels
   that the flow carries into q) + a small MLP of pair features (that share, the distance between
   the colour the warp brings into r and q's colour, the log area ratio, the distance between
   r's centroid moved by its mean flow and q's centroid) + ``scale`` x cos(embedding r,
   embedding q). The K best-scored pairs by the flow's share and centroid distance alone are kept
   per r, and a softmax over them gives the match probabilities;
4. region r takes the mean colour of its best match q (straight-through: the probabilities carry
   the gradient), plus as much of the warp's own variation inside r as q's spread accounts for
   (``_shading``): a warp that carries q's shading faithfully keeps all of it, so a still
   frame passes through exactly; one that smears other colours into a flat cel comes out flat.
   Line pixels keep the warp.

At initialisation the MLP's last layer and ``scale`` are zero, so the matcher starts as the flow's
own region vote and learning can only add to it. It is trained with the generator: through
the L1/perceptual losses on the blended output, and by ``losses.match_loss``, a cross-entropy
whose positives for region r are the source regions within ``REGION_LEVEL`` of the truth's mean
colour of r (several regions may share a colour; regions with no such source region count
nothing).

The per-region work is a Python loop over the batch, with segmentation in NumPy on the CPU (a
device-host copy of the line art per call on CUDA).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import correspond
import regions

K = 32                   # candidate source regions kept per region of frame t
REGION_LEVEL = 20.0 / 255.0  # a source region's colour is "the truth's" within this RGB distance
# (metrics.REGION_LEVEL, the changed-regions figure's tolerance)
N_PAIR = 5               # pair features (see ``_pair_features``)
SPREAD_FLOOR = 1.0 / 255.0  # ``_shading``: added to both spreads and to the reach (a flat region is
# never exactly flat after 8-bit rounding and resizing)


@dataclass
class Match:
    """One sample's match of frame t's regions to a source's, kept for ``losses.match_loss``."""
    sample: int               # index in the batch
    labels: torch.Tensor      # (H*W,) long: frame t's region of each pixel, -1 on lines
    candidates: torch.Tensor  # (R_t, K') long: source regions considered for each region of t
    log_prob: torch.Tensor    # (R_t, K') log match probabilities over them (with gradient)
    colours: torch.Tensor     # (R_s, 3) the source regions' mean colours


def _encoder(cin: int, width: int, dim: int) -> nn.Sequential:
    """Full resolution in, features at 1/2 resolution with a receptive field of about 30 pixels."""
    return nn.Sequential(
        nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
        nn.Conv2d(2 * width, dim, 3, padding=4, dilation=4))


def _uint8_line(line: torch.Tensor) -> np.ndarray:
    """(1, H, W) float line art in [0, 1] -> uint8 (H, W) for ``regions.segment``."""
    return (line[0].detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _pool_features(feats: torch.Tensor, labels: torch.Tensor, n: int, size: tuple[int, int]) -> torch.Tensor:
    """Mean per region of features at a lower resolution (C, h', w'), each pixel of the region
    (labels (H*W,) at ``size`` (H, W)) taking the feature of the cell it lies in: one (n, h'w')
    matrix of shares times the features (cheaper than upsampling them to (C, H, W) first)."""
    (h, w), (c, fh, fw) = size, feats.shape
    dev = feats.device
    cell = ((torch.arange(h, device=dev) * fh // h)[:, None] * fw + (torch.arange(w, device=dev) * fw // w)[None])
    keep = labels >= 0
    lab, cell = labels[keep], cell.reshape(-1)[keep]
    share = torch.bincount(lab * (fh * fw) + cell, minlength=n * fh * fw).view(n, fh * fw).to(feats.dtype)
    share = share / share.sum(1, keepdim=True).clamp(min=1)
    return share @ feats.reshape(c, fh * fw).t()                                    # (n, C)


def _pool(values: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, P) values, (P,) labels in -1..n-1 -> ((n, C) means per label, (n,) counts)."""
    keep = labels >= 0
    lab, vals = labels[keep], values[:, keep].t()
    sums = torch.zeros(n, values.shape[0], device=values.device, dtype=vals.dtype).index_add_(0, lab, vals)
    counts = torch.bincount(lab, minlength=n).to(vals.dtype)
    return sums / counts.clamp(min=1)[:, None], counts


def _shading(prob, cand, colour_s, col_s, lab_s, n_s, colour_w, warp_mean, lab_t, li, n_t) -> torch.Tensor:
    """(3, H*W) the part of the warp's own variation inside each region r of t that is kept on
    top of r's matched colour: the warp's deviation from its mean in r, scaled by the matched
    source region q's spread (mean absolute deviation from its mean) over the warp's spread in r
    (at most 1), then clipped per channel to the largest deviation that q itself holds. A warp
    that carries q's shading faithfully (a still frame, a shaded cel that moves) keeps all of it;
    one that smears other colours into a flat cel comes out flat, its stray pixels too. ``li``:
    ``lab_t`` with line pixels (-1) set to region 0, for gathering (the caller masks them)."""
    dev_s = colour_s.reshape(3, -1) - col_s[lab_s.clamp(min=0)].t()                   # (3, P)
    spread_s, _ = _pool(dev_s.abs().mean(0, keepdim=True), lab_s, n_s)                  # (n_s, 1)
    keep = lab_s >= 0
    reach_s = torch.zeros(n_s, 3, device=dev_s.device, dtype=dev_s.dtype).scatter_reduce_(
        0, lab_s[keep][:, None].expand(-1, 3), dev_s[:, keep].abs().t(), "amax")       # (n_s, 3)
    dev_w = colour_w - warp_mean[li].t()                                                # (3, P)
    spread_w, _ = _pool(dev_w.abs().mean(0, keepdim=True), lab_t, n_t)                  # (n_t, 1)
    spread_q = (prob * spread_s[cand, 0]).sum(1)           # the matched region's (through the probabilities)
    reach_q = (prob[..., None] * reach_s[cand]).sum(1)     # (n_t, 3)
    ratio = ((spread_q + SPREAD_FLOOR) / (spread_w[:, 0] + SPREAD_FLOOR)).clamp(max=1)   # (n_t,)
    reach = reach_q[li].t() + SPREAD_FLOOR                                              # (3, P)
    return torch.maximum(torch.minimum(ratio[li][None] * dev_w, reach), -reach)


class RegionMatch(correspond.FlowWarp):
    """The ``match`` correspondence (see the module's docstring). Its CPU half is the DIS flow."""
    name = "match"

    def __init__(self, width: int = 16, dim: int = 32, k: int = K):
        super().__init__()
        self.k = k
        self.encode_t = _encoder(5, width, dim)   # line art t, warped colour, warped line art
        self.encode_s = _encoder(4, width, dim)   # the source's line art and colour
        self.head_t = nn.Linear(dim + 5, dim)     # + centroid (2), log area, mean flow (2)
        self.head_s = nn.Linear(dim + 3, dim)
        self.pair = nn.Sequential(nn.Linear(N_PAIR, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))
        nn.init.zeros_(self.pair[-1].weight)
        nn.init.zeros_(self.pair[-1].bias)
        self.prior = nn.Parameter(torch.tensor(1.0))   # weight of log(flow share + 0.01)
        self.scale = nn.Parameter(torch.tensor(0.0))   # weight of the embeddings' cosine

    def forward(self, source: correspond.Source, line_t: torch.Tensor, resample: str = "bilinear") -> correspond.Source:
        warped = super().forward(source, line_t, resample)            # masked, then warped
        if source.flow is None or source.line is None:
            return warped
        return self.match_warped(source, warped, line_t)

    def match_warped(self, source: correspond.Source, warped: correspond.Source,
                     line_t: torch.Tensor) -> correspond.Source:
        """``forward`` given the source's warp (``FlowWarp.forward``), made once by a caller that
        needs it too (``selector.Select``): the warp with the matched colour and the matches."""
        source = source.masked()
        h, w = line_t.shape[-2:]
        colour_w, line_w = warped.colour.float(), warped.line.float()
        # the encoders may run under autocast; everything per region is fp32
        feats_t = self.encode_t(torch.cat([line_t.float(), colour_w, line_w], 1)).float()
        feats_s = self.encode_s(torch.cat([source.line.float(), source.colour.float()], 1)).float()
        present = source.present.detach().cpu().numpy() > 0
        out, matches = [], []
        for i in range(line_t.shape[0]):
            if not present[i]:
                out.append(colour_w[i])
                continue
            colour, match = self._match_one(i, line_t[i], source.line[i], source.colour[i].float(),
                                            colour_w[i], source.flow[i].float(), feats_t[i], feats_s[i])
            out.append(colour)
            if match is not None:
                matches.append(match)
        return dataclasses.replace(warped, colour=torch.stack(out), match=(warped.match or []) + matches)

    def _match_one(self, i, line_t, line_s, colour_s, colour_w, flow, feats_t, feats_s):
        h, w = line_t.shape[-2:]
        dev = colour_w.device
        lab_t = torch.from_numpy(regions.segment(_uint8_line(line_t)).astype(np.int64)).to(dev).view(-1)
        lab_s = torch.from_numpy(regions.segment(_uint8_line(line_s)).astype(np.int64)).to(dev).view(-1)
        n_t, n_s = int(lab_t.max()) + 1, int(lab_s.max()) + 1
        if n_t <= 0 or n_s <= 0:
            return colour_w, None
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                                torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
        side = float(max(h, w))                                                # positions in frame widths
        coords = torch.stack([xs.reshape(-1), ys.reshape(-1)]) / side           # (2, P)
        flow_n = flow.reshape(2, -1) / side                                     # (2, P)
        geo_t, area_t = _pool(torch.cat([coords, flow_n]), lab_t, n_t)          # (n_t, 4): cx, cy, fx, fy
        geo_s, area_s = _pool(coords, lab_s, n_s)                               # (n_s, 2)
        warp_mean, _ = _pool(colour_w.reshape(3, -1), lab_t, n_t)               # (n_t, 3)
        col_s, _ = _pool(colour_s.reshape(3, -1), lab_s, n_s)                   # (n_s, 3)

        # where the flow carries each pixel of t: the source region it lands in (nearest pixel)
        tx = (xs.reshape(-1) + flow[0].reshape(-1)).round().clamp(0, w - 1).long()
        ty = (ys.reshape(-1) + flow[1].reshape(-1)).round().clamp(0, h - 1).long()
        lands = lab_s[ty * w + tx]
        both = (lab_t >= 0) & (lands >= 0)
        share = torch.bincount(lab_t[both] * n_s + lands[both], minlength=n_t * n_s).view(n_t, n_s).float()
        share = share / area_t.clamp(min=1)[:, None]                            # (n_t, n_s)
        moved = geo_t[:, :2] + geo_t[:, 2:]                                     # centroid carried by the flow
        dist = torch.cdist(moved, geo_s)                                        # (n_t, n_s), frame widths
        log_share = torch.log(share + 0.01)  # -4.6 (none) .. 0 (all): a learned term can outvote it
        k = min(self.k, n_s)
        cand = torch.topk(log_share - 10.0 * dist, k, dim=1).indices            # (n_t, k)

        pair = torch.stack([
            log_share.gather(1, cand),
            (warp_mean[:, None, :] - col_s[cand]).norm(dim=-1) * 4.0,
            torch.log(area_t.clamp(min=1)[:, None] / area_s.clamp(min=1)[cand]),
            dist.gather(1, cand) * 10.0,
            torch.cdist(geo_t[:, :2], geo_s).gather(1, cand) * 10.0], -1)       # (n_t, k, N_PAIR)
        emb_t = F.normalize(self.head_t(torch.cat([_pool_features(feats_t, lab_t, n_t, (h, w)),
                                                   geo_t, torch.log(area_t.clamp(min=1))[:, None] / 10.0], 1)), dim=1)
        emb_s = F.normalize(self.head_s(torch.cat([_pool_features(feats_s, lab_s, n_s, (h, w)),
                                                   geo_s, torch.log(area_s.clamp(min=1))[:, None] / 10.0], 1)), dim=1)
        cosine = (emb_t[:, None, :] * emb_s[cand]).sum(-1)                     # (n_t, k)
        logits = self.prior * pair[..., 0] + self.pair(pair)[..., 0] + 10.0 * self.scale * cosine
        log_prob = torch.log_softmax(logits, dim=1)
        prob = log_prob.exp()
        # each region takes its best match's colour (a blend of two regions' colours is no cel
        # colour: right for neither); gradients pass through the probabilities (straight-through)
        best = F.one_hot(prob.argmax(1), prob.shape[1]).to(prob.dtype)
        prob = best + prob - prob.detach()
        region_colour = (prob[..., None] * col_s[cand]).sum(1)                 # (n_t, 3)
        flat = colour_w.reshape(3, -1)
        inside = lab_t >= 0
        li = lab_t.clamp(min=0)
        shading = _shading(prob, cand, colour_s, col_s, lab_s, n_s, flat, warp_mean, lab_t, li, n_t)  # (3, P)
        painted = region_colour[li].t() + shading
        result = torch.where(inside[None], painted, flat).clamp(0, 1).view(3, h, w)
        return result, Match(i, lab_t, cand, log_prob, col_s.detach())
