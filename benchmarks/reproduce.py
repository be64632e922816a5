"""Reproduction study: does conditioning on the previous frame make video more coherent, and
does a keyframe hold its colours over a whole shot, better than simply copying it?

    python benchmarks/reproduce.py --train_clips A.mp4 B.mp4 --eval_clips C.mp4 --out study/ --steps 600

With the same seed, network, data and step (or ``--minutes``) budget it trains
(a) TCVC: a previous frame (the real one with probability 0.5, else black, or the generator's
    own output for it) and, half of the time, a keyframe from the same shot;
(b) the frame-by-frame baseline: never a previous frame, never a keyframe.
It then colours every shot of the evaluation clips (whole shots, never seen in training) as:
- ``copy_keyframe``: the true first frame copied onto every frame (no model);
- ``flat_grey``: a flat grey frame (no model);
- ``baseline``: model (b), each frame on its own;
- ``tcvc``: model (a) fed its own previous output, from a black start (the paper's inference);
- ``tcvc_keyframe``: model (a) with the true first frame of each shot as its keyframe.
Every setting is scored on the same frames, 1 to N-1 of each shot (frame 0 is given in the
keyframe settings). Frame 0 of each setting is reported on its own (``psnr_frame0``), and
``psnr_last10`` is the mean PSNR of each shot's last 10 frames, where drift shows.

``OUT/results.json``: {"meta", "results": {setting: {"overall", "shots"}}, "per_frame_psnr":
{setting: {shot: [PSNR of frame 1, 2, ...]}}}, with PSNR, SSIM, warping error, colour
consistency and the temporal-consistency ratio; ``OUT/results.md`` the same as a table;
``OUT/drift.png`` the per-frame PSNR over each shot; ``OUT/samples_<shot>.png`` strips. Extra
``--`` arguments go to train.py (``-- --vgg_weights random``). ``benchmarks/ablation.py``
reuses this study's models and data.
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

SETTINGS = ("copy_keyframe", "flat_grey", "baseline", "tcvc", "tcvc_keyframe")
PLOTTED = ("copy_keyframe", "baseline", "tcvc", "tcvc_keyframe")
COLOURS = {"copy_keyframe": (120, 120, 120), "flat_grey": (190, 190, 190), "baseline": (200, 60, 60),
           "tcvc": (40, 110, 220), "tcvc_keyframe": (30, 160, 70)}
# train.py flags of each trained model, on top of the shared budget
MODELS = {"tcvc": [],
          "baseline": ["--prev_prob", "0", "--rollout_prob", "0", "--reference", "off", "--ref_prob", "0"]}
# setting -> (model, extra test.py flags); {keyframes} is the folder of true first frames
MODEL_SETTINGS = {"baseline": ("baseline", ["--frame_by_frame"]), "tcvc": ("tcvc", []),
                  "tcvc_keyframe": ("tcvc", ["--reference_dir", "{keyframes}"])}
GREY = 128  # the flat grey frame


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
def train_model(name: str, extra: list, data: Path, out: Path, args) -> Path:
    """Train one model into ``out/runs/<name>`` (resuming a run that is already there)."""
    run_dir = out / "runs" / name
    argv = ["--data", str(data), "--run_dir", str(run_dir), "--image_size", str(args.image_size),
            "--batch_size", str(args.batch_size), "--seed", str(args.seed),
            "--val_fraction", "0", "--epochs", "100000", "--save_every", "100000", "--device", args.device,
            "--log_every", "10", "--resume", "auto"]
    argv += ["--max_steps", str(args.steps)] if args.steps else ["--max_minutes", str(args.minutes)]
    argv += [a for a in args.train_args if a != "--"] + extra
    start = time.time()
    if train.main(train.build_parser().parse_args(argv)) != 0:
        raise UserError(f"training of {name} was interrupted")
    print(f"{name}: {log_steps(run_dir)} steps in {(time.time() - start) / 60:.1f} minutes", flush=True)
    return run_dir / "generator.pt"


def log_steps(run_dir: Path) -> int:
    return max(json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines())


# ----------------------------------------------------------------------------- evaluation
def truth_image(path: Path, size: int) -> np.ndarray:
    return data_lib.resize(utils.read_rgb(path), size)  # as test.py's ground truth


def eval_shots(eval_root: Path, size: int) -> dict:
    """{shot: [true frame 0, 1, ...]} at network resolution."""
    return {shot.relative_to(eval_root).as_posix(): [truth_image(p, size) for p in utils.list_frames(shot)]
            for shot in utils.find_shot_dirs(eval_root)}


def keyframes(eval_root: Path, dest: Path) -> Path:
    """The true first frame of every evaluation shot, named as test.py's --reference_dir expects."""
    for shot in utils.find_shot_dirs(eval_root):
        target = dest / f"{shot.relative_to(eval_root).as_posix()}.png"
        utils.write_image(target, utils.read_rgb(utils.list_frames(shot)[0]))
    return dest


def trivial_outputs(setting: str, truths: dict) -> dict:
    """The answers that need no model, for every frame of every shot."""
    if setting == "copy_keyframe":
        return {shot: [frames[0]] * len(frames) for shot, frames in truths.items()}
    if setting == "flat_grey":
        return {shot: [np.full_like(f, GREY) for f in frames] for shot, frames in truths.items()}
    raise ValueError(f"{setting} is not a setting without a model")


def colorize(ckpt: Path, extra: list, eval_root: Path, dest: Path, args) -> dict:
    """Run test.py on the evaluation shots; -> {shot: [output frame 0, 1, ...]}."""
    argv = ["--checkpoint", str(ckpt), "--input", str(eval_root), "--output", str(dest),
            "--device", args.device, "--overwrite", "--no_metrics"] + extra
    colorize_cli.main(colorize_cli.build_parser().parse_args(argv))
    return {shot.relative_to(eval_root).as_posix():
            [utils.read_rgb(p) for p in utils.list_frames(dest / shot.relative_to(eval_root))]
            for shot in utils.find_shot_dirs(eval_root)}


def evaluate(checkpoints: dict, eval_root: Path, out: Path, args, settings=SETTINGS,
             model_settings=MODEL_SETTINGS) -> dict:
    """{setting: score(...)}; model outputs go to ``out/outputs/<setting>``."""
    truths = eval_shots(eval_root, args.image_size)
    refs = keyframes(eval_root, out / "keyframes")
    results = {}
    for setting in settings:
        if setting in model_settings:
            model, extra = model_settings[setting]
            extra = [e.format(keyframes=refs) for e in extra]
            outputs = colorize(checkpoints[model], extra, eval_root, out / "outputs" / setting, args)
        else:
            outputs = trivial_outputs(setting, truths)
        results[setting] = metrics_lib.score_frames(outputs, truths)
        print(f"{setting}: PSNR {results[setting]['overall']['psnr']:.2f} dB", flush=True)
    return results


# ----------------------------------------------------------------------------- pictures
def drift_plot(curves: dict, path: Path, settings=PLOTTED) -> None:
    """Per-frame PSNR over each evaluated shot, one panel per shot, one line per setting."""
    shots = list(curves[settings[0]])
    w, h, pad = 640, 220, 40
    img = Image.new("RGB", (w, h * len(shots) + 30), "white")
    draw = ImageDraw.Draw(img)
    values = [v for s in settings for shot in shots for v in curves[s][shot]]
    lo, hi = np.floor(min(values)), np.ceil(max(values))
    for k, shot in enumerate(shots):
        top = 30 + k * h
        draw.rectangle([pad, top + 10, w - 10, top + h - pad], outline="black")
        draw.text((pad + 5, top + 12), f"{shot}: PSNR (dB) per frame, {lo:.0f}-{hi:.0f}", fill="black")
        n = len(curves[settings[0]][shot])
        for s in settings:
            pts = [(pad + (w - 10 - pad) * i / max(n - 1, 1),
                    top + h - pad - (h - pad - 10) * (v - lo) / max(hi - lo, 1e-6))
                   for i, v in enumerate(curves[s][shot])]
            draw.line(pts, fill=COLOURS[s], width=2)
        draw.text((pad, top + h - pad + 4), f"frame 1 ... {n}", fill="black")
    for i, s in enumerate(settings):
        draw.text((pad + 130 * i, 8), f"- {s}", fill=COLOURS[s])
    img.save(path)


def sample_strips(eval_root: Path, out: Path, image_size: int, line_mode: str, dest: Path,
                  settings=PLOTTED) -> list[Path]:
    """For each shot, rows at a few frames: line art | each setting | truth."""
    written = []
    for shot in utils.find_shot_dirs(eval_root):
        rel = shot.relative_to(eval_root).as_posix()
        frames = utils.list_frames(shot)
        rows = []
        for i in sorted({1, len(frames) // 3, 2 * len(frames) // 3, len(frames) - 1}):
            truth = truth_image(frames[i], image_size)
            panels = [np.repeat(data_lib.make_line_art(truth, line_mode)[..., None], 3, 2)]
            for s in settings:
                panels.append(truth_image(frames[0], image_size) if s == "copy_keyframe"
                              else utils.read_rgb(out / s / rel / f"{frames[i].stem}.png"))
            rows.append(np.concatenate(panels + [truth], 1))
        path = dest / f"samples_{rel.replace('/', '_')}.png"
        utils.write_image(path, np.concatenate(rows, 0))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- report
def markdown(results: dict, meta: dict) -> str:
    keys = [("psnr", "PSNR dB ↑", ".2f"), ("psnr_last10", "last 10 PSNR ↑", ".2f"), ("ssim", "SSIM ↑", ".3f"),
            ("warp_error", "warp err ↓", ".5f"), ("cdc", "colour JSD ↓", ".4f"),
            ("tc_ratio", "TC ratio (1 = as steady as truth)", ".2f"), ("psnr_frame0", "frame 0 PSNR", ".2f")]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| setting | shot | frames | " + " | ".join(k[1] for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for setting in results:
        rows = [("**all**", results[setting]["overall"])] + list(results[setting]["shots"].items())
        for shot, r in rows:
            lines.append(f"| {setting} | {shot} | {r['frames']} | "
                         + " | ".join(fmt(r.get(k), spec) for k, _, spec in keys) + " |")
    head = [f"Command: `{meta['command']}`", "",
            f"Machine: {meta['machine']}. Time: {meta['minutes']} minutes. Training: {meta['training']}.", "",
            "Scored on frames 1 to N-1 of every shot; frame 0 PSNR in its own column.", ""]
    return "\n".join(head + lines) + "\n"


def write_report(out: Path, results: dict, meta: dict, name: str = "results") -> None:
    """``OUT/<name>.json`` ({"meta", "results", "per_frame_psnr"}) and ``OUT/<name>.md``."""
    curves = {s: r["per_frame_psnr"] for s, r in results.items()}
    table = {s: {k: v for k, v in r.items() if k != "per_frame_psnr"} for s, r in results.items()}
    utils.atomic_write_bytes(out / f"{name}.json", json.dumps(
        {"meta": meta, "results": table, "per_frame_psnr": curves}, indent=1).encode())
    text = markdown(table, meta)
    utils.atomic_write_bytes(out / f"{name}.md", text.encode())
    print(text)


def meta_machine() -> str:
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def training_note(out: Path, names) -> str:
    notes = []
    for name in names:
        cfg = json.loads((out / "runs" / name / "config.json").read_text())
        model = cfg["model"]
        notes.append(f"{name}: {log_steps(out / 'runs' / name)} steps, batch {cfg['batch_size']}, "
                     f"{cfg['image_size']}², prev_prob {cfg['prev_prob']}, ref_prob {cfg['ref_prob']}, "
                     f"rollout_prob {cfg['rollout_prob']}, {model['generator']} generator (propagate "
                     f"{model['propagate']}, reference {model['reference']}, warp {model['warp']}), "
                     f"VGG {cfg['vgg_weights']}")
    return "; ".join(notes)


def main(args) -> int:
    check_disjoint(args.train_clips, args.eval_clips)
    out = Path(args.out)
    t0 = time.time()
    train_root = prepare_clips(args.train_clips, out / "data" / "train", args.max_size)
    eval_root = prepare_clips(args.eval_clips, out / "data" / "eval", args.max_size)
    checkpoints = {name: train_model(name, extra, train_root, out, args) for name, extra in MODELS.items()}
    results = evaluate(checkpoints, eval_root, out, args)
    drift_plot({s: r["per_frame_psnr"] for s, r in results.items()}, out / "drift.png")
    strips = sample_strips(eval_root, out / "outputs", args.image_size, "canny", out)
    meta = {"command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:]),
            "machine": meta_machine(), "minutes": round((time.time() - t0) / 60, 1),
            "training": training_note(out, MODELS)}
    write_report(out, results, meta)
    print(f"study took {meta['minutes']} minutes; wrote {out}/results.md, drift.png and {len(strips)} sample strips")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
