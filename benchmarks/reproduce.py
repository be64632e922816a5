"""Reproduction study: does conditioning on the previous frame make video more coherent, and
how much does a keyframe reference help against error accumulation?

    python benchmarks/reproduce.py --train_clips A.mp4 B.mp4 --eval_clips C.mp4 --out study/ --steps 600

With the same seed, network, data and step (or ``--minutes``) budget it trains
(a) TCVC as in the paper: the real previous frame with probability 0.5, else black;
(b) the frame-by-frame baseline: the previous frame is always black.
It then colorizes every shot of the evaluation clips (whole shots, never seen in training) as:
- ``baseline``: model (b), each frame on its own;
- ``tcvc``: model (a) fed its own previous output (the paper's inference);
- ``tcvc_keyframe``: model (a) with the ground-truth first frame of each shot as the keyframe.
``OUT/results.json`` and ``OUT/results.md`` hold PSNR, SSIM, warping error, colour consistency
and the temporal-consistency ratio per setting and per shot; ``OUT/drift.png`` the per-frame
PSNR over each shot; ``OUT/samples_<shot>.png`` strips (line art | baseline | tcvc |
tcvc_keyframe | truth). Extra ``--`` arguments go to train.py (``-- --vgg_weights random``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import FrameExtraction  # noqa: E402
import dataset as data_lib  # noqa: E402
import metrics as metrics_lib  # noqa: E402
import test as colorize_cli  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from utils import UserError  # noqa: E402

SETTINGS = ("baseline", "tcvc", "tcvc_keyframe")
COLOURS = {"baseline": (200, 60, 60), "tcvc": (40, 110, 220), "tcvc_keyframe": (30, 160, 70)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_clips", nargs="+", required=True, help="videos or frame folders to train on")
    p.add_argument("--eval_clips", nargs="+", required=True, help="videos or frame folders to evaluate on")
    p.add_argument("--out", required=True)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="training steps per model")
    budget.add_argument("--minutes", type=float, help="training time per model")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_size", type=int, default=320, help="frames are extracted at most this large")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--device", default="auto")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then extra train.py flags")
    return p


# ----------------------------------------------------------------------------- data
def prepare_clips(clips, dest: Path, max_size: int) -> Path:
    """Videos are split into shot folders under ``dest``; frame folders are linked there."""
    dest.mkdir(parents=True, exist_ok=True)
    for clip in map(Path, clips):
        target = dest / clip.stem
        if clip.is_dir():
            if not target.exists():
                target.symlink_to(clip.resolve(), target_is_directory=True)
        elif not target.exists():
            options = FrameExtraction.ExtractOptions(max_size=max_size)
            FrameExtraction.extract_video(clip, target, options)
    return dest


def check_disjoint(train_clips, eval_clips) -> None:
    a = {Path(c).resolve() for c in train_clips} | {Path(c).stem for c in train_clips}
    b = {Path(c).resolve() for c in eval_clips} | {Path(c).stem for c in eval_clips}
    if a & b:
        raise UserError(f"the same clip is in training and evaluation: {sorted(map(str, a & b))}")


# ----------------------------------------------------------------------------- training
def train_model(name: str, prev_prob: float, data: Path, out: Path, args) -> Path:
    run_dir = out / "runs" / name
    argv = ["--data", str(data), "--run_dir", str(run_dir), "--image_size", str(args.image_size),
            "--batch_size", str(args.batch_size), "--prev_prob", str(prev_prob), "--seed", str(args.seed),
            "--val_fraction", "0", "--epochs", "100000", "--save_every", "100000", "--device", args.device,
            "--log_every", "10", "--resume", "auto"]
    argv += ["--max_steps", str(args.steps)] if args.steps else ["--max_minutes", str(args.minutes)]
    argv += [a for a in args.train_args if a != "--"]
    start = time.time()
    if train.main(train.build_parser().parse_args(argv)) != 0:
        raise UserError(f"training of {name} was interrupted")
    steps = max(json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines())
    print(f"{name}: {steps} steps in {(time.time() - start) / 60:.1f} minutes", flush=True)
    return run_dir / "generator.pt"


# ----------------------------------------------------------------------------- evaluation
def keyframes(eval_root: Path, dest: Path) -> Path:
    """The ground-truth first frame of every evaluation shot, named as test.py expects."""
    for shot in utils.find_shot_dirs(eval_root):
        target = dest / f"{shot.relative_to(eval_root).as_posix()}.png"
        utils.write_image(target, utils.read_rgb(utils.list_frames(shot)[0]))
    return dest


def colorize(setting: str, ckpt: Path, eval_root: Path, out: Path, refs: Path, args) -> dict:
    argv = ["--checkpoint", str(ckpt), "--input", str(eval_root), "--output", str(out / setting),
            "--device", args.device, "--overwrite"]
    argv += {"baseline": ["--frame_by_frame"], "tcvc": [], "tcvc_keyframe": ["--reference_dir", str(refs)]}[setting]
    colorize_cli.main(colorize_cli.build_parser().parse_args(argv))
    return json.loads((out / setting / "metrics.json").read_text())


def per_frame_psnr(eval_root: Path, out: Path, image_size: int) -> dict:
    """{setting: {shot: [PSNR of frame 0, 1, ...]}} against the truth at network resolution."""
    curves: dict = {s: {} for s in SETTINGS}
    for shot in utils.find_shot_dirs(eval_root):
        rel = shot.relative_to(eval_root).as_posix()
        truth = [truth_image(p, image_size) for p in utils.list_frames(shot)]
        for setting in SETTINGS:
            frames = utils.list_frames(out / setting / rel)
            curves[setting][rel] = [metrics_lib.psnr(utils.read_rgb(p), t) for p, t in zip(frames, truth)]
    return curves


def truth_image(path: Path, size: int) -> np.ndarray:
    return data_lib.resize(utils.read_rgb(path), size)  # as test.py's ground truth


# ----------------------------------------------------------------------------- pictures
def drift_plot(curves: dict, path: Path) -> None:
    """Per-frame PSNR over each evaluated shot, one panel per shot, one line per setting."""
    shots = list(curves["tcvc"])
    w, h, pad = 640, 220, 40
    img = Image.new("RGB", (w, h * len(shots) + 30), "white")
    draw = ImageDraw.Draw(img)
    values = [v for s in SETTINGS for shot in shots for v in curves[s][shot]]
    lo, hi = np.floor(min(values)), np.ceil(max(values))
    for k, shot in enumerate(shots):
        top = 30 + k * h
        draw.rectangle([pad, top + 10, w - 10, top + h - pad], outline="black")
        draw.text((pad + 5, top + 12), f"{shot}: PSNR (dB) per frame, {lo:.0f}-{hi:.0f}", fill="black")
        n = len(curves["tcvc"][shot])
        for s in SETTINGS:
            pts = [(pad + (w - 10 - pad) * i / max(n - 1, 1),
                    top + h - pad - (h - pad - 10) * (v - lo) / max(hi - lo, 1e-6))
                   for i, v in enumerate(curves[s][shot])]
            draw.line(pts, fill=COLOURS[s], width=2)
        draw.text((pad, top + h - pad + 4), f"frame 0 ... {n - 1}", fill="black")
    for i, s in enumerate(SETTINGS):
        draw.text((pad + 170 * i, 8), f"- {s}", fill=COLOURS[s])
    img.save(path)


def sample_strips(eval_root: Path, out: Path, image_size: int, line_mode: str, dest: Path) -> list[Path]:
    """For each shot: rows at a few frames of (line art | baseline | tcvc | tcvc_keyframe | truth)."""
    written = []
    for shot in utils.find_shot_dirs(eval_root):
        rel = shot.relative_to(eval_root).as_posix()
        frames = utils.list_frames(shot)
        rows = []
        for i in sorted({0, len(frames) // 3, 2 * len(frames) // 3, len(frames) - 1}):
            truth = truth_image(frames[i], image_size)
            line = data_lib.make_line_art(truth, line_mode)
            panels = [np.repeat(line[..., None], 3, 2)]
            panels += [utils.read_rgb(out / s / rel / f"{frames[i].stem}.png") for s in SETTINGS] + [truth]
            rows.append(np.concatenate(panels, 1))
        path = dest / f"samples_{rel.replace('/', '_')}.png"
        utils.write_image(path, np.concatenate(rows, 0))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- report
def markdown(results: dict, meta: dict) -> str:
    keys = [("psnr", "PSNR dB ↑", ".2f"), ("ssim", "SSIM ↑", ".3f"), ("warp_error", "warp err ↓", ".5f"),
            ("cdc", "colour JSD ↓", ".4f"), ("tc_ratio", "TC ratio (1 = as steady as truth)", ".2f")]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| setting | shot | frames | " + " | ".join(k[1] for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for setting in SETTINGS:
        rows = [("**all**", results[setting]["overall"])] + list(results[setting]["shots"].items())
        for shot, r in rows:
            lines.append(f"| {setting} | {shot} | {r['frames']} | "
                         + " | ".join(fmt(r.get(k), spec) for k, _, spec in keys) + " |")
    head = [f"Command: `{meta['command']}`", "",
            f"Machine: {meta['machine']}. Training: {meta['training']}.", ""]
    return "\n".join(head + lines) + "\n"


def main(args) -> int:
    check_disjoint(args.train_clips, args.eval_clips)
    out = Path(args.out)
    t0 = time.time()
    train_root = prepare_clips(args.train_clips, out / "data" / "train", args.max_size)
    eval_root = prepare_clips(args.eval_clips, out / "data" / "eval", args.max_size)
    ckpt_tcvc = train_model("tcvc", 0.5, train_root, out, args)
    ckpt_base = train_model("baseline", 0.0, train_root, out, args)
    refs = keyframes(eval_root, out / "keyframes")
    results = {s: colorize(s, ckpt_base if s == "baseline" else ckpt_tcvc, eval_root, out / "outputs", refs, args)
               for s in SETTINGS}
    curves = per_frame_psnr(eval_root, out / "outputs", args.image_size)
    drift_plot(curves, out / "drift.png")
    strips = sample_strips(eval_root, out / "outputs", args.image_size, "canny", out)
    meta = {"command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:]),
            "machine": meta_machine(), "minutes": round((time.time() - t0) / 60, 1),
            "training": training_note(out)}
    utils.atomic_write_bytes(out / "results.json", json.dumps(
        {"meta": meta, "results": results, "per_frame_psnr": curves}, indent=1).encode())
    utils.atomic_write_bytes(out / "results.md", markdown(results, meta).encode())
    print(markdown(results, meta))
    print(f"study took {meta['minutes']} minutes; wrote {out}/results.md, drift.png and {len(strips)} sample strips")
    return 0


def meta_machine() -> str:
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def training_note(out: Path) -> str:
    notes = []
    for name in ("tcvc", "baseline"):
        cfg = json.loads((out / "runs" / name / "config.json").read_text())
        steps = max(json.loads(line)["step"] for line in (out / "runs" / name / "log.jsonl").read_text().splitlines())
        notes.append(f"{name}: {steps} steps, batch {cfg['batch_size']}, {cfg['image_size']}², prev_prob "
                     f"{cfg['prev_prob']}, {cfg['model']['generator']} generator, VGG {cfg['vgg_weights']}")
    return "; ".join(notes)


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
