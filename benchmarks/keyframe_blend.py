"""How to join the chains from two keyframes: measured, on clips of your choice.

    python benchmarks/keyframe_blend.py --checkpoint study/runs/tcvc/generator.pt \
        --clips A.mp4 B.mp4 --out blend/

Every shot of the clips is coloured from its true first and last frames as keyframes
(test.py --keyframes), once per ``--blend`` of test.py (``linear``: both chains weighted by
distance; ``nearest``: the nearer keyframe's chain alone; ``agree``: weighted by distance and, pixel
by pixel, by how well each keyframe's line art lands on the frame's, ``colorize.Agreement``), and
scored on the frames that are not keyframes, next to ``copy_nearest_keyframe``. The study chose
test.py's default this way, on its training clips, so that the choice never looked at its
evaluation shots.

The rule: the highest PSNR among the blends that keep the video at least as steady as the truth
(TC ratio at most 1); a blend that adds flicker at the hand-over between chains is not eligible,
whatever its PSNR. Last line: ``best_blend=NAME``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import reproduce
from reproduce import metrics_lib, utils

import colorize  # noqa: E402  (reproduce puts the repository on sys.path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--clips", nargs="+", required=True, help="videos or frame folders")
    p.add_argument("--out", required=True)
    p.add_argument("--image_size", type=int, default=128, help="as the checkpoint was trained")
    p.add_argument("--max_size", type=int, default=320)
    reproduce.add_views_argument(p)
    p.add_argument("--device", default="auto")
    return p


def best_blend(overall: dict) -> str:
    """The highest PSNR among the blends with a TC ratio of at most 1 (all of them if none is)."""
    steady = [b for b, o in overall.items() if o["tc_ratio"] <= 1.0] or list(overall)
    return max(steady, key=lambda b: overall[b]["psnr"])


def main(args) -> int:
    out = Path(args.out)
    root = reproduce.prepare_clips(args.clips, out / "data", args.max_size)
    truths = reproduce.eval_shots(root, args.image_size)
    keys = reproduce.keyframe_folder(root, out / "keyframes2", reproduce.first_and_last)
    inner = {shot: range(1, len(frames) - 1) for shot, frames in truths.items()}
    rows = {}
    for blend in colorize.BLENDS:
        outputs = reproduce.colorize(Path(args.checkpoint), ["--keyframes", str(keys), "--blend", blend], root,
                                     out / "outputs" / blend, args)
        rows[blend] = metrics_lib.score_frames(outputs, truths, inner)
    rows["copy_nearest_keyframe"] = metrics_lib.score_frames(
        reproduce.trivial_outputs("copy_nearest_keyframe", truths), truths, inner)
    print(f"{'':24s} {'PSNR':>7s} {'SSIM':>6s} {'warp err':>9s} {'TC ratio':>8s} {'last third':>10s}  per shot PSNR")
    for name, result in rows.items():
        last = reproduce.last_third(result, truths)
        o = result["overall"]
        shots = "  ".join(f"{s.split('/')[0]} {r['psnr']:.2f}" for s, r in result["shots"].items())
        print(f"{name:24s} {o['psnr']:7.2f} {o['ssim']:6.3f} {o['warp_error']:9.5f} {o['tc_ratio']:8.2f} "
              f"{last:10.2f}  {shots}")
    print(f"best_blend={best_blend({b: rows[b]['overall'] for b in colorize.BLENDS})}")
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_cli(main, build_parser().parse_args()))
