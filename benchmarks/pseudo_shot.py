"""Pseudo-shots made from each shot's keyframe alone, to adapt a model to a shot at test time.

Test-time adaptation asks whether a model trained on other shots colours a shot better after a few
steps of training on what a user gives for that shot: its keyframe (the true first frame) and
nothing else. The keyframe alone makes no shot, so this makes one: ``--frames`` frames of the
keyframe under a smooth random motion, a similarity (rotation within 10 degrees, zoom 1 to 1.25,
shift within 10% of the size) moving linearly from one random pose to another, plus a smooth
elastic field (a 4x4 grid of offsets, cubic-interpolated, of ``--elastic`` times the shorter side)
moving the same way; borders are mirrored. Line art is then made from these frames as from any
other, so ``train.py --data OUT`` trains on them as on real shots (the README's "Nor does adapting
the model to the shot's keyframe" gives the command and what it measured).

Only each shot's first frame is read; the other frames are never opened. ``--out`` must not
exist: this writes a new folder (as ``.OUT.partial`` until its last frame is written) and touches
nothing else.

    python benchmarks/pseudo_shot.py --eval_data study/data/eval --out adapt --frames 24
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import utils  # noqa: E402
from utils import UserError  # noqa: E402

GRID = 4  # the elastic field's control points per side


def motion(rng: np.random.Generator, n: int, height: int, width: int, elastic: float = 0.03):
    """``n`` poses, each (affine (2, 3) taking keyframe pixels to the frame's, offsets (2, H, W)
    added to the frame's sampling positions): both move linearly from one random draw to another."""
    angles, scales = rng.uniform(-10, 10, 2), rng.uniform(1.0, 1.25, 2)
    shifts = rng.uniform(-0.1, 0.1, (2, 2)) * (width, height)
    grids = rng.normal(0, 1, (2, 2, GRID, GRID)) * elastic * min(height, width)
    poses = []
    for i in range(n):
        u = i / max(n - 1, 1)
        affine = cv2.getRotationMatrix2D((width / 2, height / 2), float(angles[0] + (angles[1] - angles[0]) * u),
                                         float(scales[0] + (scales[1] - scales[0]) * u))
        affine[:, 2] += shifts[0] + (shifts[1] - shifts[0]) * u
        grid = (grids[0] + (grids[1] - grids[0]) * u).astype(np.float32)
        offsets = np.stack([cv2.resize(g, (width, height), interpolation=cv2.INTER_CUBIC) for g in grid])
        poses.append((affine, offsets))
    return poses


def render(image: np.ndarray, affine: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``image`` moved by one pose of ``motion``: each output pixel samples the keyframe where the
    affine's inverse takes it, plus the offsets there."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    inverse = cv2.invertAffineTransform(affine)
    map_x = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2] + offsets[0]).astype(np.float32)
    map_y = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2] + offsets[1]).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval_data", required=True, help="a folder of shot folders; only each shot's first frame is read")
    p.add_argument("--out", required=True, help="a new folder for the pseudo-shots (must not exist)")
    p.add_argument("--frames", type=int, default=24, help="frames per pseudo-shot")
    p.add_argument("--elastic", type=float, default=0.03, help="the elastic offsets' scale, of the shorter side")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 2:
        raise UserError(f"--frames must be at least 2, got {args.frames}")
    if args.elastic < 0:
        raise UserError(f"--elastic must be >= 0, got {args.elastic}")
    root, out = Path(args.eval_data), Path(args.out)
    if out.exists():
        raise UserError(f"{out} already exists: give a new folder (nothing was written)")
    partial = out.with_name(f".{out.name}.partial")  # renamed to OUT once every frame is written
    if partial.exists():
        raise UserError(f"{partial} already exists (an interrupted run?): remove it or give another --out")
    shots = utils.find_shot_dirs(root)
    keyframes = {shot: utils.read_rgb(utils.list_frames(shot)[0]) for shot in shots}  # all read before writing
    for shot, image in keyframes.items():
        dest = partial / shot.relative_to(root)
        dest.mkdir(parents=True)
        rng = np.random.default_rng(args.seed)
        for i, (affine, offsets) in enumerate(motion(rng, args.frames, *image.shape[:2], args.elastic)):
            utils.write_image(dest / f"frame_{i:06d}.png", render(image, affine, offsets))
        print(f"{out / shot.relative_to(root)}: {args.frames} frames from {utils.list_frames(shot)[0].name}")
    partial.rename(out)
    return 0


if __name__ == "__main__":
    utils.run_cli(main, sys.argv[1:])
