"""Where a study's error is: on the line pixels, or inside the regions.

    python benchmarks/error_split.py --out study/ [--settings tcvc_keyframe warp_keyframe ...]

Reads a study's evaluation shots (``OUT/data/eval``, at ``--image_size``) and the frames each
setting coloured (``OUT/outputs/<setting>``), and splits every scored frame's squared error
between its *line pixels* (the frame's Canny line art thickened by one pixel each side: the pixels
``regions.segment`` leaves out of every region) and the rest. Frames are scored as the study
scores them: 1 to N-1 of each shot (1 to N-2 for the two-keyframe settings), PSNR per frame,
then the mean. For each setting it prints:
- ``psnr``: the study's PSNR (the check that the frames are the ones it scored);
- ``line_share``: the share of pixels that are line pixels;
- ``line_error_share``: the share of the squared error that lies on them;
- ``psnr_lines`` / ``psnr_regions``: PSNR over the line pixels only, over the region pixels only;
- ``truth_on_lines``: PSNR with the truth pasted onto the line pixels and the output elsewhere
  (what perfect lines would be worth); ``truth_on_ring``: the same on the thickening only (the
  line pixels that are not Canny pixels);
- ``ring_from_regions``: the thickening painted with the colour of the nearest region pixel of
  the output itself (no truth): the cheap guess that a line's surroundings are its regions.
Nothing is written. It trains nothing and needs no model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

import reproduce
from reproduce import UserError, data_lib, metrics_lib, regions, utils

FIGURES = ("psnr", "line_share", "line_error_share", "psnr_lines", "psnr_regions", "truth_on_lines",
           "truth_on_ring", "ring_from_regions")
DEFAULT_SETTINGS = ["tcvc_keyframe", "warp_keyframe", "warp_match", "copy_keyframe"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the study's folder (benchmarks/reproduce.py --out)")
    p.add_argument("--settings", nargs="+", choices=reproduce.SETTINGS, default=DEFAULT_SETTINGS)
    p.add_argument("--image_size", type=int, default=128, help="the study's --image_size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def nearest_outside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with every pixel under ``mask`` replaced by the nearest pixel outside it (L2)."""
    if not mask.any() or mask.all():
        return image.copy()
    _, labels = cv2.distanceTransformWithLabels(mask.astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    colour = np.zeros((labels.max() + 1, 3), image.dtype)
    colour[labels[~mask]] = image[~mask]  # each outside pixel is its own label
    out = image.copy()
    out[mask] = colour[labels[mask]]
    return out


def frame_split(output: np.ndarray, truth: np.ndarray) -> dict:
    """The figures of one frame (uint8 RGB, same shape), its line pixels from the truth's line art."""
    line = data_lib.make_line_art(truth, "canny")
    lines = regions.segment(line) < 0
    ring = lines & (line >= 128)
    psnr = metrics_lib.psnr_of_squared  # of a squared error summed over a count of values
    out, true = output.astype(np.float64), truth.astype(np.float64)
    squared = ((out - true) ** 2).sum(2)  # per pixel, over R, G, B
    total = squared.sum()

    def pasted(mask):
        return psnr(total - squared[mask].sum(), squared.size * 3)

    guess = nearest_outside(output, lines)
    guessed = output.copy()
    guessed[ring] = guess[ring]
    return {"psnr": psnr(total, squared.size * 3), "line_share": float(lines.mean()),
            "line_error_share": float(squared[lines].sum() / total) if total else 0.0,
            "psnr_lines": psnr(squared[lines].sum(), int(lines.sum()) * 3),
            "psnr_regions": psnr(squared[~lines].sum(), int((~lines).sum()) * 3),
            "truth_on_lines": pasted(lines), "truth_on_ring": pasted(ring),
            "ring_from_regions": psnr(((guessed.astype(np.float64) - true) ** 2).sum(), squared.size * 3)}


def split(out: Path, settings, image_size: int) -> dict:
    """{setting: {figure: mean over the scored frames}}."""
    eval_root = out / "data" / "eval"
    if not eval_root.is_dir():
        raise UserError(f"{eval_root} does not exist: --out must be a study folder (benchmarks/reproduce.py --out)")
    truths = reproduce.eval_shots(eval_root, image_size)
    found = {}
    for setting in settings:
        rows = []
        for shot, frames in truths.items():
            folder = out / "outputs" / setting / shot
            paths = utils.list_frames(folder) if folder.is_dir() else []
            if len(paths) != len(frames):
                raise UserError(f"{folder} holds {len(paths)} frames, not the shot's {len(frames)}: "
                                f"the study did not colour {shot} as {setting}")
            last = len(frames) - 1 if setting in reproduce.TWO_KEYS else len(frames)
            for t in range(1, last):
                output = utils.read_rgb(paths[t])
                if output.shape != frames[t].shape:
                    raise UserError(f"{paths[t]} is {output.shape[1]}x{output.shape[0]}, not the study's "
                                    f"{image_size}: give --image_size as the study had it")
                rows.append(frame_split(output, frames[t]))
        # a frame without line pixels has no line PSNR: the means are over the frames that have one
        found[setting] = {k: metrics_lib.mean_defined(r[k] for r in rows) for k in FIGURES}
    return found


def table(found: dict) -> str:
    lines = ["| setting | " + " | ".join(FIGURES) + " |", "|---" * (len(FIGURES) + 1) + "|"]
    for setting, figures in found.items():
        cells = ["-" if figures[k] is None else f"{figures[k]:.0%}" if k.endswith("share") else f"{figures[k]:.2f}"
                 for k in FIGURES]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args) -> int:
    found = split(Path(args.out), args.settings, args.image_size)
    print(json.dumps(found, indent=1) if args.json else table(found))
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_cli(main, build_parser().parse_args()))
