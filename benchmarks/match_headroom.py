"""How much a region matcher could win at best: oracle answers on held-out shots, no training.

Every region of frame t (``regions.segment`` of its line art, as the matcher and the
changed-regions figure cut it) is painted flat, line pixels keep the keyframe warped along the
line-art DIS flow (as the matcher's output keeps them), and the region's colour is chosen by:
- ``warp_keyframe``: nothing (the plain warp, the answer to beat);
- ``vote``: the keyframe region the flow carries most of the region's pixels into (no model:
  the untrained matcher's choice), its median colour;
- ``oracle_keyframe``: the keyframe region whose median colour is nearest the truth's median
  colour under the region (a perfect matcher that can only choose among the keyframe's regions);
- ``oracle_keyframe_shaded``: the same choice, but the region keeps the warp's shading: the warp
  inside it shifted by the chosen colour minus the warp's median there (a matcher that keeps
  texture, as ``matcher`` does for textured source regions);
- ``oracle_keyframe_either``: per region the better of those two (a matcher that also knows
  when to paint flat and when to keep the shading): the ceiling of choosing among the keyframe's
  regions;
- ``oracle_truth``: the truth's own median colour under the region (a perfect flat fill: the
  ceiling of painting regions flat, whatever the matcher);
- ``truth_on_regions``: the truth itself inside the regions, the warp on the lines (what is left
  to the line pixels alone).
Figures as the study's and ``match_study.py``'s (``metrics.score_frames``: frames 1 to N-1 from
the true first frame):
PSNR, PSNR on the changed pixels, changed regions right. The margin of ``oracle_keyframe`` over
``warp_keyframe`` is what any matcher of regions to the keyframe can add, on these shots, at
this size, with this segmentation.

    python benchmarks/match_headroom.py --eval_data study/data/eval --image_size 128
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import correspond  # noqa: E402
import regions  # noqa: E402
from match_study import held_out, print_table, summary  # noqa: E402

SETTINGS = ("warp_keyframe", "vote", "oracle_keyframe", "oracle_keyframe_shaded",
            "oracle_keyframe_either", "oracle_truth", "truth_on_regions")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval_data", required=True, help="evaluation frames: a folder of shot folders")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--out", help="write the results here as JSON")
    return p


def landing_votes(labels_t: np.ndarray, labels_k: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """(regions of t, regions of the keyframe) pixel counts: where the flow carries each pixel of
    a region of t (nearest pixel), as ``matcher`` counts its overlap share."""
    h, w = labels_t.shape
    ys, xs = np.mgrid[0:h, 0:w]
    tx = np.clip(np.rint(xs + flow[..., 0]), 0, w - 1).astype(np.int64)
    ty = np.clip(np.rint(ys + flow[..., 1]), 0, h - 1).astype(np.int64)
    lands = labels_k[ty, tx]
    n_t, n_k = labels_t.max() + 1, labels_k.max() + 1
    both = (labels_t >= 0) & (lands >= 0)
    return np.bincount(labels_t[both] * n_k + lands[both], minlength=n_t * n_k).reshape(n_t, n_k)


def painted(setting: str, truth: np.ndarray, key: np.ndarray, line_t: np.ndarray, line_k: np.ndarray) -> np.ndarray:
    """Frame t under ``setting`` (see the module's docstring), uint8 RGB."""
    warp = correspond.warp_frame(key, line_t, line_k)
    labels = regions.segment(line_t)
    if setting == "warp_keyframe" or labels.max() < 0:
        return warp
    inside = labels >= 0
    out = warp.copy()
    if setting == "truth_on_regions":
        out[inside] = truth[inside]
        return out
    true_medians = regions.region_medians(labels, truth)
    if setting == "oracle_truth":
        colours = true_medians
    else:
        labels_k = regions.segment(line_k)
        if labels_k.max() < 0:
            return warp
        key_medians = regions.region_medians(labels_k, key)
        if setting == "vote":
            votes = landing_votes(labels, labels_k, correspond.line_flow(line_t, line_k))
            choice = votes.argmax(1)
            colours = np.where(votes.max(1)[:, None] > 0, key_medians[choice], regions.region_medians(labels, warp))
        elif setting.startswith("oracle_keyframe"):
            distance = np.linalg.norm(true_medians[:, None, :] - key_medians[None], axis=2)
            colours = key_medians[distance.argmin(1)]
        else:
            raise ValueError(setting)
    flat = np.rint(colours[labels[inside]])
    shift = colours - regions.region_medians(labels, warp)
    shaded = np.clip(np.rint(warp[inside] + shift[labels[inside]]), 0, 255)
    if setting == "oracle_keyframe_either":  # per region, whichever is nearer the truth
        true_inside = truth[inside].astype(np.float64)
        n = int(labels.max()) + 1
        errors = [np.bincount(labels[inside], weights=((x - true_inside) ** 2).sum(1), minlength=n) for x in (flat, shaded)]
        use_shaded = (errors[1] < errors[0])[labels[inside]]
        flat = np.where(use_shaded[:, None], shaded, flat)
    out[inside] = (shaded if setting == "oracle_keyframe_shaded" else flat).astype(np.uint8)
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    truths, lines, keys = held_out(args.eval_data, args.image_size)
    results = {}
    for setting in SETTINGS:
        outputs = {shot: [frames[0]] + [painted(setting, frames[t], frames[0], lines[shot][t], lines[shot][0])
                                        for t in range(1, len(frames))]
                   for shot, frames in truths.items()}
        results[setting] = summary(outputs, truths, lines, keys)
    print(f"{args.image_size}x{args.image_size}, frames 1 to N-1 from the true first frame")
    print_table(results)
    best = max(results[k]["psnr"] for k in ("oracle_keyframe", "oracle_keyframe_shaded", "oracle_keyframe_either")) - results["warp_keyframe"]["psnr"]
    print(f"oracle_keyframe_over_warp_db={best:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
