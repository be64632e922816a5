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
- ``tcvc_keyframe``: model (a) with the true first frame of each shot as its keyframe;
- ``tcvc_2keys``: model (a) with the true first and last frames as keyframes (test.py
  --keyframes: chains from both ends, joined by test.py's default ``--blend``, ``agree``);
- ``copy_nearest_keyframe``: each frame replaced by the nearer of those two keyframes;
- the answers made with the project's own flow and warp and no model (``warp_outputs``), among
  them ``warp_blend`` (the keyframe warp and the chained warp averaged), and the tcvc pipeline with
  its network taken out, ``sources_mean_<flow|match|select>`` (``sources_mean_outputs``).
Every setting is scored on the same frames, 1 to N-1 of each shot (frame 0 is given in the
keyframe settings), except the two-keyframe settings, scored on 1 to N-2 (the frames that are
not keyframes). Frame 0 of each setting is reported on its own (``psnr_frame0``);
``psnr_last10`` is the mean PSNR of each shot's last 10 scored frames, where drift shows, and
``psnr_last_third`` the mean over frames 2N/3 to N-2 of every shot, pooled (the frames where the
second keyframe should help most). A strip of one shot coloured from three keyframes (frames
0, N/2 and N-1) shows keyframes and in-betweens next to the truth.

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
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import FrameExtraction  # noqa: E402
import colorize as colorize_lib  # noqa: E402
import correspond  # noqa: E402
import dataset as data_lib  # noqa: E402
import metrics as metrics_lib  # noqa: E402
import matcher  # noqa: E402
import models  # noqa: E402
import regions  # noqa: E402
import test as colorize_cli  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from utils import UserError  # noqa: E402

SETTINGS = ("copy_keyframe", "flat_grey", "warp_keyframe", "warp_chain", "warp_blend", "warp_regions", "warp_match",
            "sources_mean_flow", "sources_mean_match", "sources_mean_select", "baseline", "tcvc",
            "tcvc_keyframe", "tcvc_keyframe_regions", "copy_nearest_keyframe", "warp_2keys", "warp_2keys_agree",
            "tcvc_2keys", "tcvc_2keys_regions")
PLOTTED = ("copy_keyframe", "warp_keyframe", "warp_chain", "warp_blend", "tcvc_keyframe", "tcvc_keyframe_regions",
           "copy_nearest_keyframe", "warp_2keys", "warp_2keys_agree", "tcvc_2keys")
# scored without their keyframes
TWO_KEYS = ("copy_nearest_keyframe", "warp_2keys", "warp_2keys_agree", "tcvc_2keys", "tcvc_2keys_regions")
NO_MODEL = ("copy_keyframe", "flat_grey", "warp_keyframe", "warp_chain", "warp_blend", "warp_regions", "warp_match",
            "sources_mean_flow", "sources_mean_match", "sources_mean_select", "copy_nearest_keyframe", "warp_2keys",
            "warp_2keys_agree")
COLOURS = {"copy_keyframe": "#787878", "flat_grey": "#bebebe", "warp_keyframe": "#1f9bd6", "warp_chain": "#8fc6e8",
           "warp_blend": "#17becf", "sources_mean_flow": "#7f7f7f", "sources_mean_match": "#bcbd22",
           "sources_mean_select": "#8c564b",
           "warp_regions": "#5d8aa8", "warp_match": "#2b6f99", "baseline": "#c83c3c", "tcvc": "#286edc", "tcvc_keyframe": "#1ea046",
           "tcvc_keyframe_regions": "#0b5d25", "copy_nearest_keyframe": "#c89628", "warp_2keys": "#e07b39",
           "warp_2keys_agree": "#b35806",
           "tcvc_2keys": "#9632aa", "tcvc_2keys_regions": "#5a1a68"}
# train.py flags of each trained model, on top of the shared budget
MODELS = {"tcvc": [],
          "baseline": ["--prev_prob", "0", "--rollout_prob", "0", "--no_keyframe_input", "--keyframe_prob", "0",
                       "--correspondence", "flow"]}  # never given a source: --correspondence is tcvc's
# setting -> (model, extra test.py flags); {keyframes} is the folder of true first frames
MODEL_SETTINGS = {"baseline": ("baseline", ["--frame_by_frame"]), "tcvc": ("tcvc", []),
                  "tcvc_keyframe": ("tcvc", ["--first_keyframe_dir", "{keyframes}"]),
                  "tcvc_keyframe_regions": ("tcvc", ["--first_keyframe_dir", "{keyframes}", "--regions"]),
                  "tcvc_2keys": ("tcvc", ["--keyframes", "{keyframes2}"]),
                  "tcvc_2keys_regions": ("tcvc", ["--keyframes", "{keyframes2}", "--regions"])}
GREY = metrics_lib.FLAT_GREY  # the flat grey frame


def add_views_argument(p: argparse.ArgumentParser) -> None:
    """--views, for this study and the benchmarks that colour as it does."""
    p.add_argument("--views", type=int, choices=sorted(colorize_lib.VIEWS), default=1,
                   help="test.py --views for every model setting, and the same views for the sources_mean rows "
                        "(the pipeline with its network taken out)")


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
    add_views_argument(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", choices=("auto", "1"), default="auto",
                   help="auto: on the CPU, train the models at the same time when each one's thread count "
                        "(utils.choose_threads) times the models fits the cores; 1: one after the other")
    p.add_argument("--keep", nargs="+", choices=sorted(MODELS), default=[],
                   help="use these models as OUT/runs/<name> already holds them, with no more training "
                        "(a study that changes only the other model)")
    p.add_argument("--correspondence", choices=correspond.CHOICES, default=None,
                   help="the tcvc model's (train.py --correspondence; default: train.py's)")
    p.add_argument("--still_window", type=int, default=None,
                   help="train the tcvc model with train.py --still_window W, and score every setting, model and "
                        "no model, on that flow (default: each model on its own, the no-model rows on the models')")
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
def model_flags(args) -> dict:
    """{model: its own train.py flags}: ``MODELS``, with ``--correspondence`` and ``--still_window``
    for tcvc alone."""
    mine = ["--correspondence", args.correspondence] if args.correspondence else []
    if args.still_window is not None:
        mine += ["--still_window", str(args.still_window)]
    return {name: extra + (mine if name == "tcvc" else []) for name, extra in MODELS.items()}


def train_argv(extra: list, data: Path, run_dir: Path, args) -> list:
    """train.py's arguments for one model of the study."""
    argv = ["--data", str(data), "--run_dir", str(run_dir), "--image_size", str(args.image_size),
            "--batch_size", str(args.batch_size), "--seed", str(args.seed),
            "--val_fraction", "0", "--epochs", "100000", "--save_every", "100000", "--device", args.device,
            "--log_every", "10", "--resume", "auto"]
    argv += ["--max_steps", str(args.steps)] if args.steps else ["--max_minutes", str(args.minutes)]
    return argv + [a for a in args.train_args if a != "--"] + extra


def _steps_so_far(run_dir: Path) -> int:
    return log_steps(run_dir) if (run_dir / "log.jsonl").is_file() else 0


def _trained(name: str, run_dir: Path, before: int, start: float) -> Path:
    done = log_steps(run_dir)
    how = "reused, already trained" if done == before else f"{done - before} steps in {(time.time() - start) / 60:.1f} minutes"
    print(f"{name}: {done} steps ({how})", flush=True)
    return run_dir / "generator.pt"


def train_model(name: str, extra: list, data: Path, out: Path, args) -> Path:
    """Train one model into ``out/runs/<name>`` (resuming a run that is already there)."""
    run_dir = out / "runs" / name
    before, start = _steps_so_far(run_dir), time.time()
    if train.main(train.build_parser().parse_args(train_argv(extra, data, run_dir, args))) != 0:
        raise UserError(f"training of {name} was interrupted")
    return _trained(name, run_dir, before, start)


def parallel_threads(args, n_models: int, cores=None):
    """Threads per model when the study's models can train at the same time on this CPU, else
    None: each model takes ``utils.choose_threads`` of one step's pixels, and together they fit the
    cores (two 1-thread models on 2 cores). Never on a GPU, which the models would share."""
    if getattr(args, "jobs", "1") != "auto" or n_models < 2 or utils.resolve_device(args.device).type != "cpu":
        return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = utils.choose_threads(args.image_size * args.image_size * args.batch_size, cores)
    return threads if threads * n_models <= cores else None


def train_models(todo: dict, data: Path, out: Path, args) -> dict:
    """{name: checkpoint} for the models ``todo`` ({name: train.py flags}), trained one after the
    other, or at the same time in child processes (``parallel_threads``), each with its own
    budget; a child's output goes to ``out/runs/<name>.log``. If the study is stopped (Ctrl-C,
    SIGTERM), the children are stopped too, and each saves its resumable checkpoint."""
    threads = parallel_threads(args, len(todo))
    if threads is None:
        return {name: train_model(name, extra, data, out, args) for name, extra in todo.items()}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCVC_THREADS": str(threads)}
    children, start = {}, time.time()

    def stop(signum, frame):  # SIGTERM to the study: the children save their checkpoints too (below)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for name, extra in todo.items():
            run_dir = out / "runs" / name
            before = _steps_so_far(run_dir)
            log = open(out / "runs" / f"{name}.log", "ab")
            with log:
                proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"),
                                         *train_argv(extra, data, run_dir, args)],
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
            children[name] = (proc, run_dir, before)
            print(f"{name}: training in a child process ({threads} thread(s)), log in {out / 'runs' / (name + '.log')}",
                  flush=True)
        failed = [name for name, (proc, _, _) in children.items() if proc.wait() != 0]
    except BaseException:
        for proc, _, _ in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # train.py saves a resumable checkpoint and stops
        for proc, _, _ in children.values():
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failed:
        raise UserError(f"training of {', '.join(failed)} failed or was interrupted: see "
                        + ", ".join(str(out / "runs" / f"{n}.log") for n in failed))
    return {name: _trained(name, run_dir, before, start) for name, (_, run_dir, before) in children.items()}


def kept_model(name: str, out: Path) -> Path:
    """``--keep``: the model already trained in ``out/runs/<name>``, as it is."""
    path = out / "runs" / name / "generator.pt"
    if not path.is_file():
        raise UserError(f"--keep {name}: there is no trained model at {path}")
    print(f"{name}: {log_steps(path.parent)} steps (kept as it is, --keep)", flush=True)
    return path


def log_steps(run_dir: Path) -> int:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return max((json.loads(line).get("step", 0) for line in lines if line.strip()), default=0)


# ----------------------------------------------------------------------------- evaluation
def truth_image(path: Path, size: int) -> np.ndarray:
    return utils.resize(utils.read_rgb(path), size)  # as test.py's ground truth


def eval_shots(eval_root: Path, size: int) -> dict:
    """{shot: [true frame 0, 1, ...]} at network resolution."""
    return {shot.relative_to(eval_root).as_posix(): [truth_image(p, size) for p in utils.list_frames(shot)]
            for shot in utils.find_shot_dirs(eval_root)}


def keyframes(eval_root: Path, dest: Path) -> Path:
    """The true first frame of every evaluation shot, named as test.py's --first_keyframe_dir expects."""
    for shot in utils.find_shot_dirs(eval_root):
        target = dest / f"{shot.relative_to(eval_root).as_posix()}.png"
        utils.write_image(target, utils.read_rgb(utils.list_frames(shot)[0]))
    return dest


def keyframe_folder(eval_root: Path, dest: Path, picks) -> Path:
    """Coloured keyframes as test.py's --keyframes expects (DEST/<shot>/<frame file name>): the
    true frames at the indices ``picks(n)`` of every evaluation shot."""
    for shot in utils.find_shot_dirs(eval_root):
        frames = utils.list_frames(shot)
        for i in picks(len(frames)):
            utils.write_image(dest / shot.relative_to(eval_root) / frames[i].name, utils.read_rgb(frames[i]))
    return dest


def first_and_last(n: int) -> list[int]:
    return [0, n - 1]


def nearest_of_two(n: int) -> list[int]:
    """For each frame, the nearer of keyframes 0 and n-1 (the first one on a tie)."""
    return [0 if t <= (n - 1) - t else n - 1 for t in range(n)]


def flow_arts(truths: dict, lines: dict, scale: int = 1) -> dict:
    """{shot: what each frame's line-art flow is computed on} (``correspond.flow_art`` of its true
    frame and Canny line art at ``scale``; the line art itself at scale 1)."""
    return {shot: correspond.flow_arts(lines[shot], "canny", scale, frames)
            for shot, frames in truths.items()}


def warp_outputs(setting: str, truths: dict, lines: dict, still_window: int = 0, resample: str = "bilinear",
                 scale: int = 1) -> dict:
    """The flow answers that need no model: ``warp_keyframe`` (the true first frame warped onto
    every frame), ``warp_chain`` (warped frame to frame, each from the one before), ``warp_blend``
    (the mean of those two: a hedge between the two sources the copy path blends, which PSNR
    rewards where either may be wrong),
    ``warp_regions`` (``warp_keyframe`` with each line-art region filled by its median:
    the region step with the network replaced by no model), ``warp_match`` (the true first frame
    brought onto every frame by the untrained region matcher of ``--correspondence match``, i.e.
    the flow's own region vote: that matcher with no learning), ``warp_2keys`` (the true first and
    last frames each warped onto every frame, blended by distance as ``--blend linear`` blends
    chains), ``warp_2keys_agree`` (the same two warps joined as ``--blend agree`` joins chains:
    weighted pixel by pixel by each keyframe's agreement with the frame). Every flow is
    ``correspond.line_flow`` with ``still_window`` and ``scale``: the models' own; every keyframe is
    resampled as ``resample`` says (the models' ``ModelConfig.keyframe_resample``), a chain of
    warps bilinearly."""
    out, arts = {}, flow_arts(truths, lines, scale)
    for shot, frames in truths.items():
        key, ln, n = frames[0], lines[shot], len(frames)
        flow = {"still_window": still_window, "resample": resample, "scale": scale, "arts": arts[shot]}
        if setting in correspond.KEYFRAME_WARPS:
            shot_out = correspond.keyframe_warps(frames, ln, **flow)[setting]
        elif setting == "warp_regions":
            shot_out = [key] + [regions.vote(regions.segment(ln[t]), f[None].astype(np.float32),
                                             np.ones((1, *ln[t].shape), np.float32), f)[0]
                                for t, f in enumerate(correspond.keyframe_warps(frames, ln, **flow)
                                                      ["warp_keyframe"][1:], start=1)]
        elif setting == "warp_match":
            shot_out = matched_outputs(matcher.RegionMatch(), {shot: frames}, {shot: ln}, still_window, resample,
                                       scale)[shot]
        elif setting in ("warp_2keys", "warp_2keys_agree"):
            shot_out = colorize_lib.warped_keyframes(ln, {0: key, n - 1: frames[-1]},
                                                     "agree" if setting == "warp_2keys_agree" else "linear", **flow)
        else:
            raise ValueError(f"{setting} is not a flow setting without a model")
        out[shot] = shot_out
    return out


def _aligned(module, colour: torch.Tensor, line_s: np.ndarray, line_t: np.ndarray,
             still_window: int = 0, resample: str = "bilinear", scale: int = 1,
             art_s: np.ndarray | None = None, art_t: np.ndarray | None = None) -> torch.Tensor:
    """(1, 3, S, S) ``colour`` (the frame of line art ``line_s``) brought onto the frame of line art
    ``line_t`` by the correspondence ``module``, along the project's line-art flow (computed on
    their flow arts ``art_s`` and ``art_t`` at ``scale`` > 1), its warp resampling as ``resample`` says."""
    flow = correspond.flow_tensor(correspond.line_flow(line_t if art_t is None else art_t,
                                                       line_s if art_s is None else art_s,
                                                       still_window=still_window, scale=scale))[None]
    source = correspond.Source(colour, torch.ones(1), torch.from_numpy(line_s)[None, None].float() / 255, flow)
    return module(source, torch.from_numpy(line_t)[None, None].float() / 255, resample=resample).colour.clamp(0, 1)


def _uint8(colour: torch.Tensor) -> np.ndarray:
    return (colour[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def matched_outputs(module, truths: dict, lines: dict, still_window: int = 0, resample: str = "bilinear",
                    scale: int = 1) -> dict:
    """{shot: [frame 0, then the true frame 0 brought onto every frame by ``module``]}."""
    out, arts = {}, flow_arts(truths, lines, scale)
    for shot, frames in truths.items():
        ln, art = lines[shot], arts[shot]
        key = torch.from_numpy(frames[0]).permute(2, 0, 1).float()[None] / 255
        out[shot] = [frames[0]] + [_uint8(_aligned(module, key, ln[0], ln[t], still_window, resample, scale,
                                                   art[0], art[t]))
                                   for t in range(1, len(frames))]
    return out


@torch.no_grad()
def sources_mean_outputs(correspondence: str, truths: dict, lines: dict, views: int = 1,
                         still_window: int = 0, resample: str = "bilinear", scale: int = 1) -> dict:
    """{shot: frames}: the tcvc pipeline with its network taken out. A tcvc model's copy path
    blends two sources, the keyframe and the chain's own previous output, each aligned onto frame t
    by its correspondence, and a fresh one starts from their mean (``models.COPY_BIAS``). Here every
    frame is that mean, the correspondence untrained (``correspond.build``: for ``match`` the
    flow's own region vote), and it is fed back as the next frame's previous one, as test.py
    feeds a model's output. With ``views`` (test.py's --views) each frame is made from the frame
    and its mirror images, each along its own flow, mirrored back and averaged, as a model is."""
    module = correspond.build(correspondence).eval()
    out, arts = {}, flow_arts(truths, lines, scale)
    for shot, frames in truths.items():
        ln = lines[shot]
        key = torch.from_numpy(frames[0]).permute(2, 0, 1).float()[None] / 255
        prev, shot_out = key, [frames[0]]
        for t in range(1, len(frames)):
            means = []
            for dims in colorize_lib.VIEWS[views]:
                m_key, m_prev = colorize_lib.mirror(key, dims), colorize_lib.mirror(prev, dims)
                m_ln = [colorize_lib.mirror_line(ln[i], dims) for i in (0, t - 1, t)]
                m_art = [colorize_lib.mirror_line(arts[shot][i], dims) for i in (0, t - 1, t)]
                mean = (_aligned(module, m_key, m_ln[0], m_ln[2], still_window, resample, scale, m_art[0], m_art[2])
                        + _aligned(module, m_prev, m_ln[1], m_ln[2], still_window, "bilinear", scale, m_art[1],
                                   m_art[2])) / 2
                means.append(colorize_lib.mirror(mean, dims))
            prev = sum(means) / len(means)
            shot_out.append(_uint8(prev))
        out[shot] = shot_out
    return out


def trivial_outputs(setting: str, truths: dict, lines: dict | None = None, views: int = 1,
                    still_window: int = 0, resample: str = "bilinear", scale: int = 1) -> dict:
    """The answers that need no model, for every frame of every shot (``views``: the test-time
    views of the ``sources_mean_*`` rows, as a model is given them; ``still_window`` and ``scale``:
    the flow's, and ``resample``: the keyframe's resampling, as the model is given them)."""
    if setting.startswith("warp_"):
        return warp_outputs(setting, truths, lines, still_window, resample, scale)
    if setting.startswith("sources_mean_"):
        return sources_mean_outputs(setting[len("sources_mean_"):], truths, lines, views, still_window, resample,
                                    scale)
    if setting == "copy_keyframe":
        return {shot: [frames[0]] * len(frames) for shot, frames in truths.items()}
    if setting == "flat_grey":
        return {shot: [np.full_like(f, GREY) for f in frames] for shot, frames in truths.items()}
    if setting == "copy_nearest_keyframe":
        return {shot: [frames[k] for k in nearest_of_two(len(frames))] for shot, frames in truths.items()}
    raise ValueError(f"{setting} is not a setting without a model")


def colorize(ckpt: Path, extra: list, eval_root: Path, dest: Path, args) -> dict:
    """Run test.py on the evaluation shots; -> {shot: [output frame 0, 1, ...]}."""
    argv = ["--checkpoint", str(ckpt), "--input", str(eval_root), "--output", str(dest),
            "--device", args.device, "--overwrite", "--no_metrics", "--views", str(args.views)] + extra
    if getattr(args, "still_window", None) is not None:
        argv += ["--still_window", str(args.still_window)]
    colorize_cli.main(colorize_cli.build_parser().parse_args(argv))
    return {shot.relative_to(eval_root).as_posix():
            [utils.read_rgb(p) for p in utils.list_frames(dest / shot.relative_to(eval_root))]
            for shot in utils.find_shot_dirs(eval_root)}


def models_setting(checkpoints: dict, field: str) -> dict:
    """{model: its ``ModelConfig.<field>``} for the models whose flow settings the answers that need
    no model follow: the tcvc model where it is scored (the frame-by-frame baseline is never given a
    source), else every model given."""
    pool = {"tcvc": checkpoints["tcvc"]} if "tcvc" in checkpoints else checkpoints
    return {name: getattr(models.load_generator(path)[1], field) for name, path in pool.items()}


def agreed_setting(checkpoints: dict, field: str, default, apart: str):
    """The ``ModelConfig.<field>`` of the models the answers that need no model follow
    (``models_setting``), ``default`` without a model; models that differ in it are a ``UserError``
    (``apart`` with {} for each model's value): no single no-model row fits them all."""
    values = models_setting(checkpoints, field)
    if len(set(values.values())) > 1:
        raise UserError(apart.format(values))
    return next(iter(values.values()), default)


def flow_window(checkpoints: dict, args) -> int:
    """The still window of the flow every setting is scored on: ``args.still_window`` where given
    (test.py is then given it too), else the models' own (``models_setting``), so that the answers
    that need no model warp along the very flow the model is given; 0 without a model. Models
    trained on different flows are a ``UserError``: no single no-model row fits both."""
    given = getattr(args, "still_window", None)
    if given is not None:
        return correspond.check_still_window(given)
    return agreed_setting(checkpoints, "still_window", 0,
                          "these models were trained on different flows (still windows {}): score them apart, "
                          "or give --still_window to score all of them on one")


def keyframe_resample(checkpoints: dict) -> str:
    """How the answers that need no model resample a keyframe they warp: as the models do, so that
    they warp with the very sampling the model is given; bilinear without a model."""
    return agreed_setting(checkpoints, "keyframe_resample", "bilinear",
                          "these models resample their keyframes apart ({}): score them apart")


def flow_scale(checkpoints: dict) -> int:
    """The scale of the flow the answers that need no model warp along: the models' own; 1 without
    a model."""
    return agreed_setting(checkpoints, "flow_scale", 1,
                          "these models compute their flows at different scales ({}): score them apart")


def evaluate(checkpoints: dict, eval_root: Path, out: Path, args, settings=SETTINGS,
             model_settings=MODEL_SETTINGS) -> dict:
    """{setting: score(...)}; model outputs go to ``out/outputs/<setting>``, and the answers that
    need no model to ``out/outputs/<setting>`` too (for the sample strips), on the models' flow
    (``flow_window``)."""
    truths = eval_shots(eval_root, args.image_size)
    lines = {shot: [data_lib.make_line_art(f, "canny") for f in frames] for shot, frames in truths.items()}
    folders = {"keyframes": keyframes(eval_root, out / "keyframes"),
               "keyframes2": keyframe_folder(eval_root, out / "keyframes2", first_and_last)}
    inner = {shot: range(1, len(frames) - 1) for shot, frames in truths.items()}
    # the keyframe copying would give each frame: what "changed" is measured against
    first = {shot: [frames[0]] * len(frames) for shot, frames in truths.items()}
    nearest = {shot: [frames[k] for k in nearest_of_two(len(frames))] for shot, frames in truths.items()}
    window, resample, scale = flow_window(checkpoints, args), keyframe_resample(checkpoints), flow_scale(checkpoints)
    if window:
        print(f"every flow with still window {window}", flush=True)
    if scale > 1:
        print(f"every flow computed at {scale} times the network resolution", flush=True)
    print(f"every keyframe warp resampled {resample}", flush=True)
    results = {}
    for setting in settings:
        if setting in model_settings:
            model, extra = model_settings[setting]
            extra = [e.format(**folders) for e in extra]
            outputs = colorize(checkpoints[model], extra, eval_root, out / "outputs" / setting, args)
        else:
            outputs = trivial_outputs(setting, truths, lines, args.views, window, resample, scale)
            save_outputs(outputs, eval_root, out / "outputs" / setting)
        two = setting in TWO_KEYS
        results[setting] = metrics_lib.score_frames(outputs, truths, inner if two else None,
                                                    nearest if two else first, lines)
        results[setting]["overall"]["psnr_last_third"] = last_third(results[setting], truths)
        o = results[setting]["overall"]
        print(f"{setting}: PSNR {o['psnr']:.2f} dB, changed pixels {o['changed_psnr']:.2f} dB, changed regions "
              f"right {100 * (o['changed_regions'] or 0):.1f}%", flush=True)
    return results


def save_outputs(outputs: dict, eval_root: Path, dest: Path) -> None:
    """Frames of an answer that needs no model, named as test.py names its outputs."""
    for shot, frames in outputs.items():
        for path, frame in zip(utils.list_frames(eval_root / shot), frames):
            utils.write_image(dest / shot / f"{path.stem}.png", frame)


def last_third(result: dict, truths: dict) -> float:
    """Mean PSNR over frames 2N/3 .. N-2 of every shot, pooled: the same frames in every setting."""
    values = []
    for shot, frames in truths.items():
        n = len(frames)
        values += [p for t, p in zip(result["shots"][shot]["scored_frames"], result["per_frame_psnr"][shot])
                   if 3 * t >= 2 * n and t <= n - 2]
    return float(np.mean(values))


# ----------------------------------------------------------------------------- pictures
def drift_plot(results: dict, path: Path, settings=PLOTTED) -> None:
    """Per-frame PSNR over each evaluated shot: one panel per shot, one line per setting, each
    point at its frame's index; axes, ticks and a legend (matplotlib, benchmarks only)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in settings if s in results]
    shots = list(results[settings[0]]["shots"])
    fig, axes = plt.subplots(len(shots), 1, figsize=(8, 3.2 * len(shots)), squeeze=False)
    for ax, shot in zip(axes[:, 0], shots):
        for s in settings:
            style = "--" if s in NO_MODEL else "-"
            ax.plot(results[s]["shots"][shot]["scored_frames"], results[s]["per_frame_psnr"][shot], style,
                    color=COLOURS[s], label=s + (" (no model)" if s in NO_MODEL else ""), linewidth=1.6)
        ax.set_title(f"{shot}: PSNR of each frame")
        ax.set_xlabel("frame index")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


STRIP = ("copy_keyframe", "warp_keyframe", "baseline", "tcvc_keyframe", "tcvc_keyframe_regions", "tcvc_2keys")


def labelled(panels: list[np.ndarray], names: list[str]) -> np.ndarray:
    """Panels side by side under a header row naming each column."""
    row = np.concatenate(panels, 1)
    width = panels[0].shape[1]
    header = Image.new("RGB", (row.shape[1], 14), "white")
    draw = ImageDraw.Draw(header)
    for k, name in enumerate(names):
        draw.text((k * width + 2, 1), name[:width // 6], fill="black")
    return np.concatenate([np.asarray(header), row], 0)


def sample_strips(eval_root: Path, out: Path, image_size: int, line_mode: str, dest: Path,
                  settings=STRIP) -> list[Path]:
    """For each shot, rows at a few frames: line art | each setting | truth, columns named."""
    written = []
    for shot in utils.find_shot_dirs(eval_root):
        rel = shot.relative_to(eval_root).as_posix()
        frames = utils.list_frames(shot)
        rows = []
        for i in sorted({1, len(frames) // 3, 2 * len(frames) // 3, len(frames) - 2}):
            truth = truth_image(frames[i], image_size)
            panels = [np.repeat(data_lib.make_line_art(truth, line_mode)[..., None], 3, 2)]
            panels += [utils.read_rgb(out / s / rel / f"{frames[i].stem}.png") for s in settings]
            rows.append(np.concatenate(panels + [truth], 1))
        names = ["line art", *[s.replace("tcvc_keyframe_regions", "tcvc_key+regions") for s in settings], "truth"]
        path = dest / f"samples_{rel.replace('/', '_')}.png"
        utils.write_image(path, labelled([np.concatenate(rows, 0)[:, k * image_size:(k + 1) * image_size]
                                          for k in range(len(names))], names))
        written.append(path)
    return written


def three_keyframes_strip(ckpt: Path, eval_root: Path, out: Path, args) -> Path:
    """The first evaluation shot coloured from 3 keyframes (frames 0, N/2, N-1): rows of
    keyframes and in-betweens, line art | result | truth, each row labelled."""
    shot = utils.find_shot_dirs(eval_root)[0]
    rel = shot.relative_to(eval_root)
    only_first = eval_root.parent / "three_keys_input"
    if not only_first.exists():
        (only_first / rel.parent).mkdir(parents=True, exist_ok=True)
        (only_first / rel).symlink_to(shot.resolve(), target_is_directory=True)
    keys = keyframe_folder(only_first, out / "keyframes3", lambda n: [0, n // 2, n - 1])
    frames = utils.list_frames(shot)
    n = len(frames)
    colorize(ckpt, ["--keyframes", str(keys)], only_first, out / "outputs" / "three_keys", args)
    rows = []
    for i in sorted({0, n // 4, n // 2, n // 2 + n // 8, 3 * n // 4, n - 1}):
        truth = truth_image(frames[i], args.image_size)
        result = utils.read_rgb(out / "outputs" / "three_keys" / rel / f"{frames[i].stem}.png")
        row = np.concatenate([np.repeat(data_lib.make_line_art(truth, "canny")[..., None], 3, 2), result, truth], 1)
        label = Image.fromarray(row)
        ImageDraw.Draw(label).text((4, 4), f"frame {i}" + (" KEYFRAME" if i in (0, n // 2, n - 1) else ""),
                                   fill=(255, 0, 0))
        rows.append(np.asarray(label))
    path = out / f"samples_3keys_{rel.as_posix().replace('/', '_')}.png"
    utils.write_image(path, np.concatenate(rows, 0))
    return path


# ----------------------------------------------------------------------------- report
def markdown(results: dict, meta: dict) -> str:
    keys = [("psnr", "PSNR dB ↑", ".2f"), ("changed_psnr", "changed-pixel PSNR ↑", ".2f"),
            ("changed_regions", "changed regions right ↑", ".1%"), ("psnr_last10", "last 10 PSNR ↑", ".2f"),
            ("psnr_last_third", "last third PSNR ↑", ".2f"), ("ssim", "SSIM ↑", ".3f"),
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
            "Scored on frames 1 to N-1 of every shot (two-keyframe settings: 1 to N-2); frame 0 PSNR in its "
            "own column; last third: frames 2N/3 to N-2, pooled.", ""]
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
                     f"{cfg['image_size']}², prev_prob {cfg['prev_prob']}, keyframe_prob {cfg['keyframe_prob']}, "
                     f"rollout_prob {cfg['rollout_prob']}, {model['generator']} generator (copy path "
                     f"{model['copy_path']}, keyframe input {model['keyframe_input']}, correspondence "
                     f"{model['correspondence']}"
                     f"{', still window %d' % model['still_window'] if model.get('still_window') else ''}), "
                     f"VGG {cfg['vgg_weights']}")
    return "; ".join(notes)


def main(args) -> int:
    check_disjoint(args.train_clips, args.eval_clips)
    out = Path(args.out)
    t0 = time.time()
    train_root = prepare_clips(args.train_clips, out / "data" / "train", args.max_size)
    eval_root = prepare_clips(args.eval_clips, out / "data" / "eval", args.max_size)
    flags = model_flags(args)
    trained = train_models({name: extra for name, extra in flags.items() if name not in args.keep}, train_root, out, args)
    checkpoints = {name: kept_model(name, out) if name in args.keep else trained[name] for name in flags}
    results = evaluate(checkpoints, eval_root, out, args)
    drift_plot(results, out / "drift.png")
    strips = sample_strips(eval_root, out / "outputs", args.image_size, "canny", out)
    strips.append(three_keyframes_strip(checkpoints["tcvc"], eval_root, out, args))
    meta = {"command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:]),
            "machine": meta_machine(), "minutes": round((time.time() - t0) / 60, 1),
            "training": training_note(out, MODELS)}
    write_report(out, results, meta)
    print(f"study took {meta['minutes']} minutes; wrote {out}/results.md, drift.png and {len(strips)} sample strips")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
