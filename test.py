"""Colorize shots and videos with a trained generator, recurrently, and measure the result.

    python test.py --checkpoint runs/exp1/checkpoints/best.pt --input frames/ --output out/
    python test.py --checkpoint best.pt --input EP.mp4 --output out/ --video out.mp4 --side_by_side
    python test.py --checkpoint best.pt --input shot/ --output out/ --first_keyframe shot_key.png
    python test.py --checkpoint best.pt --input frames/ --output out/ --keyframes keys/

``--input`` is a folder of frames, a folder of shot folders, or a video file (split into shots
exactly as FrameExtraction.py splits it). Within a shot every frame is fed the previous
generated frame; a new shot starts a new chain from a black frame, or from a coloured keyframe
(``--first_keyframe`` for every shot, ``--first_keyframe_dir`` with one per shot, named after
the shot folder). ``--keyframes`` takes coloured versions of any frames, named after them.
The colouring itself is ``colorize.py``'s; this script reads and writes the files. Colour input
is turned into line art with the training function and kept as ground truth: then
``OUT/metrics.json`` holds PSNR, SSIM, warping error, colour consistency and the temporal-
consistency ratio per shot and overall (see metrics.py).

The output folder is written under a temporary name and renamed when complete: a failed or
interrupted run leaves no folder that looks finished. The original README's flags work too:
    python test.py --root data --dataset dragonball --model G.pth --cuda
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import re
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import FrameExtraction
import colorize
import correspond
import metrics as metrics_lib
import utils
from colorize import Frame
from utils import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "--model", dest="checkpoint",
                   help="training checkpoint, generator export, or the original's {'generator': ...} file")
    p.add_argument("--input", help="folder of frames, folder of shot folders, or a video file")
    p.add_argument("--output", help="folder for the colorized frames; must not exist yet, unless --overwrite")
    p.add_argument("--root", help="original layout: colorize ROOT/DATASET/Test")
    p.add_argument("--dataset", help="original layout, see --root")
    p.add_argument("--input_type", choices=colorize.INPUT_TYPES, default="colour",
                   help="colour frames (line art derived, frames kept as ground truth), artist line art, or grey")
    p.add_argument("--first_keyframe", help="a coloured keyframe that starts every shot's chain: its first frame is "
                   "coloured from it (and, for a model with a keyframe input, every frame is)")
    p.add_argument("--first_keyframe_dir", help="one such keyframe per shot: FIRST_KEYFRAME_DIR/<shot path>.png")
    p.add_argument("--keyframes", help="coloured keyframes for any frames of any shots, named after the frame they "
                   "colour: KEYFRAMES/<shot path>/<frame file name> (any number per shot; frame folders only)")
    p.add_argument("--blend", choices=colorize.BLENDS, default=colorize.DEFAULT_BLEND,
                   help="frames between two keyframes: blend the chains from both by distance (linear), take "
                        "the nearer keyframe's chain (nearest), or blend by distance and, pixel by pixel, by how well "
                        "each keyframe's line art lands on the frame's once warped onto it (agree, the default)")
    p.add_argument("--regions", action="store_true",
                   help="flat regions: every area enclosed by the line art is won by one candidate in a vote over the "
                        "generated colour, the aligned keyframe and the aligned previous frame, weighted by the model's "
                        "own blend weights, and takes its median colour where that candidate is flat there (shading "
                        "keeps the pixel-wise colour); between two keyframes each area takes one chain's colours, "
                        "never a blend of both; lines keep the blended colour")
    p.add_argument("--views", type=int, choices=sorted(colorize.VIEWS), default=1,
                   help="test-time views: colour every frame also mirrored (2: left-right; 4: and upside down, and "
                        "both), each with its own line-art flow, and average the outputs mirrored back (the average "
                        "is what the chain carries on); N times the time per frame")
    p.add_argument("--still_window", type=int, default=None,
                   help="the line-art flow's still window (train.py --still_window): zero flow where a W x W "
                        "neighbourhood holds a line identical in both frames; default: the model's own (0: off)")
    p.add_argument("--flow_scale", type=int, choices=correspond.FLOW_SCALES, default=None,
                   help="how many times the network resolution the line-art flow is computed at (train.py "
                        "--flow_scale); default: the model's own (models trained before the setting: 1)")
    p.add_argument("--keyframe_resample", choices=correspond.RESAMPLES, default=None,
                   help="how a keyframe is resampled when it is warped onto a frame (train.py --keyframe_resample); "
                        "default: the model's own (models trained before the setting: bilinear)")
    p.add_argument("--source_split", choices=colorize.models.SOURCE_SPLITS, default=None,
                   help="how the copy path shares the weight it copies between the aligned previous frame and the "
                        "keyframe (train.py --source_split): 'even' or 'learned'; by default the model's own (models "
                        "trained before the setting existed: learned)")
    p.add_argument("--batch_chains", type=int, default=1,
                   help="colour up to N independent chains (shots, keyframe segments) at once: faster on a GPU, "
                        "the same result; holds their shots in memory")
    p.add_argument("--full_res", action="store_true",
                   help="write at the input's resolution: generated colour on the full-resolution luminance / line art")
    p.add_argument("--video", help="also write an H.264 MP4 at the source frame rate (a new file, or with "
                   "--overwrite the one an earlier run wrote with the same --output)")
    p.add_argument("--side_by_side", action="store_true",
                   help="also write line art | result | ground truth frames (and use them for --video)")
    p.add_argument("--line_art", choices=["canny", "grey"], default=None,
                   help="line art for colour input (default: the checkpoint's; original-format files: canny)")
    p.add_argument("--frame_by_frame", action="store_true",
                   help="no recurrence: every frame gets a black previous frame (the per-frame baseline)")
    p.add_argument("--image_size", type=int, default=None, help="network resolution (default: the training size)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--cuda", action="store_true", help="the original's flag: same as --device cuda")
    p.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--fps", type=float, default=None, help="frame rate of --video for frame folders (default 24)")
    p.add_argument("--no_metrics", action="store_true", help="skip the metrics even when ground truth is known")
    p.add_argument("--overwrite", action="store_true",
                   help="replace our own earlier output: an --output folder that test.py wrote (it holds "
                        f"{utils.OUTPUT_MARKER}) and the --video it wrote with it; never anything else, never a "
                        "folder holding the input, the checkpoint or a keyframe")
    utils.renamed(p, "--reference", "--first_keyframe")
    utils.renamed(p, "--reference_dir", "--first_keyframe_dir")
    return p


# ----------------------------------------------------------------------------- input
def plan_input(input_path: Path, side_by_side: bool) -> tuple[dict | None, int]:
    """({shot key: frame paths} for a frame folder, None for a video; the number of frames, 0
    when unknown). Listing every shot first finds, before any work, two frames with one
    number, a dangling link, and two shots that would write into one output folder."""
    if input_path.is_file():
        if input_path.suffix.lower() not in utils.VIDEO_EXTS:
            raise UserError(f"{input_path} is neither a folder of frames nor a video file")
        return None, FrameExtraction.video_info(input_path).frame_count
    shots = {d.relative_to(input_path).as_posix(): utils.list_frames(d) for d in utils.find_shot_dirs(input_path)}
    folded: dict = {}
    for key in shots:
        if side_by_side and (key == "side_by_side" or key.startswith("side_by_side/")):
            raise UserError(f"shot '{key}' of {input_path} would be written into the side_by_side/ folder of "
                            "--side_by_side: rename the shot folder, or leave out --side_by_side")
        other = folded.setdefault(key.casefold(), key)
        if other != key:  # one folder on a case-insensitive disk (macOS, Windows, many NAS shares)
            raise UserError(f"shots '{other}' and '{key}' of {input_path} differ only in case: their outputs "
                            "would overwrite each other on a case-insensitive disk; rename one")
    return shots, sum(len(frames) for frames in shots.values())


def iter_raw_frames(input_path: Path, shots: dict | None):
    """Yield ``(shot_key, frame_stem, rgb)`` in order, one frame at a time (never a whole shot)."""
    if shots is None:
        for shot, index, rgb in FrameExtraction.iter_video_shots(input_path):
            yield f"shot_{shot + 1:04d}", f"frame_{index:06d}", rgb
        return
    for key, paths in shots.items():
        for path in paths:
            yield key, path.stem, utils.read_rgb(path)


def prefetch(iterable, depth: int = 8):
    """Run ``iterable`` in a background thread so decoding and line art overlap the network
    (OpenCV and PyTorch release the GIL). Errors are re-raised in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue, let it end
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


# ----------------------------------------------------------------------------- keyframes
def find_keyframes(args) -> dict:
    """``--keyframes DIR`` -> {shot: {frame stem: keyframe path}}, checked before any work: every
    image under DIR must be named after a frame of the input (DIR/<shot path>/<frame file name>,
    any image extension) and have that frame's size, and every folder must mirror a shot."""
    root, inp = Path(args.keyframes), Path(args.input)
    if not root.is_dir():
        raise UserError(f"--keyframes {root} is not a folder")
    if inp.is_file():
        raise UserError("--keyframes needs frame folders as --input (keyframes are named after frame files): "
                        "split the video with FrameExtraction.py first")
    shots = {d.relative_to(inp).as_posix(): {p.stem: p for p in utils.list_frames(d)}
             for d in utils.find_shot_dirs(inp)}
    found: dict = {}
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if rel != "." and rel not in shots and not any(s.startswith(rel + "/") for s in shots):
            raise UserError(f"keyframe folder {folder} mirrors no shot of {inp} (shots: {', '.join(sorted(shots))})")
        for name in sorted(f for f in files if utils.is_image(f) and not f.startswith(".")):
            key = Path(folder) / name
            frame = shots.get(rel, {}).get(Path(name).stem)
            if frame is None:
                raise UserError(f"keyframe {key} matches no frame: expected the name of a frame of shot "
                                f"'{rel}' in {inp}")
            if Path(name).stem in found.setdefault(rel, {}):
                raise UserError(f"two keyframes for frame {Path(name).stem} of shot '{rel}': "
                                f"{found[rel][Path(name).stem]} and {key}")
            if image_size(key) != image_size(frame):
                raise UserError(f"keyframe {key} is {image_size(key)[0]}x{image_size(key)[1]} but its frame "
                                f"{frame} is {image_size(frame)[0]}x{image_size(frame)[1]}")
            found[rel][Path(name).stem] = key
    if not any(found.values()):
        raise UserError(f"--keyframes {root} holds no keyframe images")
    return found


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image file from its header; a bad file is a one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        raise UserError(f"cannot read image {path}: not a readable image file") from None


def first_keyframe(shot: str, args) -> np.ndarray | None:
    """The keyframe that starts a shot: ``--first_keyframe`` for all, or
    ``--first_keyframe_dir/<shot>.<ext>``."""
    if args.first_keyframe:
        return utils.read_rgb(args.first_keyframe)
    if not args.first_keyframe_dir:
        return None
    stem = Path(args.first_keyframe_dir) / (Path(args.input).name if shot == "." else shot)
    for ext in utils.IMAGE_EXTS:
        if stem.with_suffix(ext).is_file():
            return utils.read_rgb(stem.with_suffix(ext))
    raise UserError(f"no keyframe for shot '{shot}' in --first_keyframe_dir (expected {stem}.png)")


def keyframes_reader(args, found: dict | None):
    """``keyframes_of(shot)`` for ``colorize.Colorizer.stream``: reads a shot's keyframes when
    the shot begins."""
    def keyframes_of(shot: str) -> colorize.ShotKeyframes:
        frames = {name: utils.read_rgb(path) for name, path in (found or {}).get(shot, {}).items()}
        return colorize.ShotKeyframes(first_keyframe(shot, args), frames)
    return keyframes_of


# ----------------------------------------------------------------------------- output
class Writer:
    """Writes results into the temporary output folder and, optionally, the MP4."""

    def __init__(self, out_tmp: Path, args, fps: float, video_tmp: Path | None = None):
        self.out, self.args, self.fps, self.video_tmp = out_tmp, args, fps, video_tmp
        self.video = None
        self.video_size = None

    def write(self, frame: Frame, result: np.ndarray, keyframe=None) -> None:
        """``keyframe``: the full-resolution keyframe when this frame is one (for --full_res)."""
        image = (colorize.full_resolution(result, frame, self.args.input_type, keyframe) if self.args.full_res
                 else result)
        utils.write_image(self.out / frame.shot / f"{frame.name}.png", image)
        panel = None
        if self.args.side_by_side:  # at the size of the frames written (--full_res: the input's)
            h, w = image.shape[:2]
            panels = [utils.resize_to(np.repeat(frame.line[..., None], 3, 2), h, w), image]
            panels += [utils.resize_to(frame.target, h, w)] if frame.target is not None else []
            panel = np.concatenate(panels, axis=1)
            utils.write_image(self.out / "side_by_side" / frame.shot / f"{frame.name}.png", panel)
        if self.args.video:
            self.add_video_frame(panel if panel is not None else image)

    def add_video_frame(self, image: np.ndarray) -> None:
        if self.video is None:
            h, w = image.shape[:2]
            self.video_size = (w + w % 2, h + h % 2)  # yuv420p needs even sizes
            self.video_tmp.parent.mkdir(parents=True, exist_ok=True)
            self.video = open_video_writer(self.video_tmp, self.video_size, self.fps)
        if image.shape[1::-1] != self.video_size:
            image = cv2.resize(image, self.video_size, interpolation=cv2.INTER_AREA)
        self.video.send(np.ascontiguousarray(image))

    def close(self) -> None:
        if self.video is not None:
            self.video.close()


def open_video_writer(path: Path, size, fps: float):
    """An H.264 (yuv420p, faststart) writer through imageio-ffmpeg's bundled ffmpeg: OpenCV's
    wheels cannot encode H.264, the codec that browsers and players open."""
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", quality=8, macro_block_size=1,
                                         output_params=["-movflags", "+faststart"], ffmpeg_log_level="error")
    writer.send(None)  # start the ffmpeg process
    return writer


# ----------------------------------------------------------------------------- the loop
class Background:
    """Consumes items in a worker thread (bounded queue), so that writing PNGs, encoding the
    video and computing metrics overlap the network. Errors surface in ``put`` / ``close``."""

    def __init__(self, consume, depth: int = 8):
        self.consume, self.error = consume, None
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.consume(*item)
                except BaseException as err:  # re-raised in the main thread
                    self.error = err

    def put(self, *item) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def close_quietly(self) -> None:
        """Stop the worker after an error elsewhere; its own error, if any, is dropped."""
        self.error = self.error or RuntimeError("stopped")
        self.q.put(None)
        self.thread.join()


class Sink:
    """Everything done with a result: its files, the video, and the metrics of its shot."""

    def __init__(self, writer: Writer, with_metrics: bool):
        self.writer, self.with_metrics = writer, with_metrics
        self.per_shot: dict = {}

    def __call__(self, frame: Frame, result: np.ndarray, keyframe=None) -> None:
        self.writer.write(frame, result, keyframe)
        if frame.target is not None and self.with_metrics:
            if frame.shot not in self.per_shot:
                self.per_shot[frame.shot] = metrics_lib.VideoMetrics()
            self.per_shot[frame.shot].update(result, frame.target)


def run(args, colorizer: colorize.Colorizer, out_tmp: Path, keyframes: dict | None = None,
        video_tmp: Path | None = None, plan: tuple | None = None) -> dict:
    """Colorize every frame; returns per-shot metrics (empty without ground truth)."""
    input_path = Path(args.input)
    shots, total = plan or plan_input(input_path, args.side_by_side)
    fps = args.fps or (FrameExtraction.video_fps(input_path) if input_path.is_file() else 24.0)
    writer = Writer(out_tmp, args, fps, video_tmp)
    sink = Sink(writer, not args.no_metrics)
    output = Background(sink)
    frames = prefetch(colorizer.frame(rgb, shot, name, keep_rgb=args.full_res)
                      for shot, name, rgb in iter_raw_frames(input_path, shots))
    # counts frames coloured, not frames read: a shot with keyframes is read whole before its
    # first frame is coloured, and a bar of frames read would stand at 100 % meanwhile
    bar = tqdm(total=total or None, unit="frame", dynamic_ncols=True)
    count = 0
    try:
        for frame, result, keyframe in colorizer.stream(frames, keyframes_reader(args, keyframes)):
            output.put(frame, result, keyframe)
            count += 1
            bar.update(1)
            bar.set_postfix(shot=frame.shot, refresh=False)
        output.close()
    finally:
        bar.close()
        if output.thread.is_alive():
            output.close_quietly()
        writer.close()
    if count == 0:
        raise UserError(f"{input_path} holds no frames")
    return {shot: m.result() for shot, m in sink.per_shot.items()}


# ----------------------------------------------------------------------------- main
def resolve_args(args) -> None:
    if args.root and args.dataset and not args.input:
        args.input = str(Path(args.root) / args.dataset / "Test")
    if args.cuda:
        args.device = "cuda"
    for flag in ("checkpoint", "input", "output"):
        if not getattr(args, flag):
            raise UserError(f"--{flag} is required")
    if not Path(args.input).exists():
        raise UserError(f"input {args.input} does not exist")
    if sum(bool(k) for k in (args.first_keyframe, args.first_keyframe_dir, args.keyframes)) > 1:
        raise UserError("give one of --first_keyframe, --first_keyframe_dir and --keyframes")
    if args.frame_by_frame and (args.first_keyframe or args.first_keyframe_dir or args.keyframes):
        raise UserError("--frame_by_frame feeds no previous frame, so it takes no keyframe")
    if args.batch_chains < 1:
        raise UserError(f"--batch_chains must be at least 1, got {args.batch_chains}")
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image_size must be a positive number of pixels, got {args.image_size}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise UserError(f"--fps must be a positive number, got {args.fps}")
    for flag in ("first_keyframe", "first_keyframe_dir", "keyframes"):
        path = getattr(args, flag)
        if path and not Path(path).exists():
            raise UserError(f"--{flag} {path} does not exist")
    if args.first_keyframe and not Path(args.first_keyframe).is_file():
        raise UserError(f"--first_keyframe {args.first_keyframe} is a folder: give one keyframe image "
                        "(or --first_keyframe_dir / --keyframes for a folder)")
    check_output(args)
    if args.video:
        check_video(args)


def protected_paths(args) -> list[tuple[str, Path]]:
    """What test.py reads: an output may never replace or hold any of these."""
    named = [("input", args.input), ("checkpoint", args.checkpoint), ("keyframe", args.first_keyframe),
             ("keyframe folder", args.first_keyframe_dir), ("keyframe folder", args.keyframes)]
    return [(what, Path(p).resolve()) for what, p in named if p]


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(args) -> None:
    """--output is a new folder, or (with --overwrite) a folder test.py wrote before; it never
    contains, nor lies inside, the input, the checkpoint or a keyframe."""
    out = Path(args.output).resolve()
    for what, path in protected_paths(args):
        if _within(path, out):
            raise UserError(f"--output {args.output} holds the {what} {path}: choose an output folder of its own")
        if what == "input" and path.is_dir() and _within(out, path):
            raise UserError(f"the output folder {args.output} lies inside the input {args.input}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {args.output} is an existing file, not a folder")
    if out.exists() and not args.overwrite:
        raise UserError(f"{args.output} already exists (pass --overwrite to replace an earlier output of test.py)")
    if out.exists() and not (out / utils.OUTPUT_MARKER).is_file():
        raise UserError(f"{args.output} was not written by test.py (it lacks {utils.OUTPUT_MARKER}); "
                        "--overwrite replaces only test.py's own outputs: choose another --output")
    if out.exists():
        check_own_output(out)


def output_manifest(folder: Path) -> dict:
    """{relative path: size} of every file and link under ``folder`` but the marker: what a
    finished run wrote, kept in its marker so that --overwrite can prove it removes only that."""
    return utils.file_sizes(folder, skip={utils.OUTPUT_MARKER})


def check_own_output(out: Path) -> None:
    """--overwrite removes ``out`` only when it holds exactly what the test.py run that wrote it
    listed in its marker: a training run, a checkpoint, a note or a frame put there since (or a
    file of ours changed since) stops it."""
    listed = read_marker(out).get("files")
    if not isinstance(listed, dict):
        raise UserError(f"{out} has a {utils.OUTPUT_MARKER} without the list of the files test.py wrote (an "
                        "unfinished or older output): remove it yourself, or choose another --output")
    for rel, size in output_manifest(out).items():
        if listed.get(rel) != size:
            raise UserError(f"--overwrite would delete {out / rel}, which the test.py run that wrote {out} did not "
                            "write (or which changed since): move it away, or choose another --output")


def check_video(args) -> None:
    """--video is a new file, or (with --overwrite) the video an earlier run wrote with the same
    --output; never a folder, never the input, the checkpoint or a keyframe, never in the input."""
    video, out = Path(args.video).resolve(), Path(args.output).resolve()
    if video.is_dir():
        raise UserError(f"--video {args.video} is an existing folder, not a video file")
    for what, path in protected_paths(args):
        if _within(video, path):
            raise UserError(f"--video {args.video} would overwrite or go inside the {what} {path}")
    if video.exists() and not _within(video, out):
        earlier = read_marker(out).get("video") if args.overwrite else None
        if earlier != str(video):
            raise UserError(f"--video {args.video} already exists and is not the video test.py wrote with "
                            f"--output {args.output}: choose a new file name")
    if video.suffix.lower() != ".mp4":  # else ffmpeg fails after the colouring, with its own dump
        raise UserError(f"--video {args.video}: the video is written as H.264 MP4, so its name must end in .mp4")


def read_marker(out: Path) -> dict:
    try:
        marker = json.loads((out / utils.OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def video_paths(args, out_tmp: Path) -> tuple[Path | None, Path | None]:
    """(where the video is written while the run lasts, where it goes when complete). A video
    inside --output is written inside the temporary output and moves with it; any other is
    written beside its final name, so that the last rename never crosses file systems."""
    if not args.video:
        return None, None
    video, out = Path(args.video).resolve(), Path(args.output).resolve()
    if _within(video, out):
        return out_tmp / video.relative_to(out), None
    return partial_video(video), video


def partial_video(video: Path) -> Path:
    """Where ``video`` is written until complete: hidden, beside it, with its extension (ffmpeg
    picks the container from it)."""
    return video.with_name(f".{video.stem}.partial{video.suffix}")


def killed_before_its_marker(out_tmp: Path) -> bool:
    """A partial folder that holds nothing but, at most, our marker's temporary file: a run of
    ours killed between its mkdir and the marker's rename (nothing of anyone else's is in it)."""
    pattern = utils.temp_name_pattern(re.escape(utils.OUTPUT_MARKER))
    return out_tmp.is_dir() and all(p.is_file() and pattern.fullmatch(p.name) for p in out_tmp.iterdir())


def start_output(args) -> Path:
    """The temporary output folder, with our marker; a stale one of ours (from a killed run) is
    removed first, one that is not ours is refused."""
    out = Path(args.output).resolve()
    out_tmp = out.with_name(f".{out.name}.partial")
    if killed_before_its_marker(out_tmp):
        shutil.rmtree(out_tmp)
    if out_tmp.exists():
        if not (out_tmp / utils.OUTPUT_MARKER).is_file():
            raise UserError(f"{out_tmp} exists and was not left by test.py: move it away first")
        shutil.rmtree(out_tmp)
    out_tmp.mkdir(parents=True)
    video = str(Path(args.video).resolve()) if args.video else None
    utils.atomic_write_bytes(out_tmp / utils.OUTPUT_MARKER,
                             json.dumps({"tool": "test.py", "video": video}).encode())
    return out_tmp


def finish(out_tmp: Path, args, per_shot: dict, note: dict, video_final: Path | None) -> None:
    """Metrics, then the renames that make the output visible only when complete. An earlier
    output of ours is set aside first and removed only once the new one is in place."""
    if per_shot:
        # a single frame folder is shot "." inside: the table and the JSON say its name
        per_shot = {(Path(args.input).resolve().name if shot == "." else shot): m for shot, m in per_shot.items()}
        overall = metrics_lib.summarize(per_shot)
        metrics_lib.write_metrics_json(out_tmp / "metrics.json", per_shot, overall, extra=note)
        print(metrics_lib.format_table(per_shot, overall))
    marker = read_marker(out_tmp) | {"files": output_manifest(out_tmp)}  # last: the output is complete
    utils.atomic_write_bytes(out_tmp / utils.OUTPUT_MARKER, json.dumps(marker).encode())
    if video_final is not None:
        os.replace(partial_video(video_final), video_final)
    out = Path(args.output).resolve()
    old = None
    if out.exists():  # checked at start: our own output, and --overwrite was given
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    os.replace(out_tmp, out)
    if old is not None:
        shutil.rmtree(old)


def main(args) -> int:
    resolve_args(args)
    keyframes = find_keyframes(args) if args.keyframes else None
    device = utils.resolve_device(args.device)
    if args.amp == "bf16" and device.type != "cuda":
        raise UserError("--amp bf16 is for CUDA GPUs; on the CPU use --amp off (or auto)")
    amp = "bf16" if args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda") else "off"
    colorizer = colorize.Colorizer.from_checkpoint(
        args.checkpoint, device, args.image_size, args.line_art, input_type=args.input_type, blend=args.blend,
        batch_chains=args.batch_chains, frame_by_frame=args.frame_by_frame, amp=amp, regions=args.regions,
        views=args.views, still_window=args.still_window, keyframe_resample=args.keyframe_resample,
        flow_scale=args.flow_scale, source_split=args.source_split)
    options = colorizer.options
    plan = plan_input(Path(args.input), args.side_by_side)
    check_network_memory(colorizer, device)
    utils.set_threads(options.image_size ** 2 * args.batch_chains)
    with contextlib.ExitStack() as locks:
        # one writer per output and per video; what was checked before the lock is checked again
        locks.enter_context(utils.WriterLock(args.output, "test.py"))
        if args.video and not _within(Path(args.video).resolve(), Path(args.output).resolve()):
            locks.enter_context(utils.WriterLock(args.video, "test.py"))  # inside: the output's lock covers it
        check_output(args)
        if args.video:
            check_video(args)
        write_output(args, colorizer, keyframes, plan)
    print(f"wrote {args.output}" + (f" and {args.video}" if args.video else ""))
    return 0


def write_output(args, colorizer: colorize.Colorizer, keyframes, plan) -> None:
    """Colour into the temporary output, then put it in place; nothing is left on failure."""
    options = colorizer.options
    out_tmp = start_output(args)
    video_tmp, video_final = video_paths(args, out_tmp)
    try:
        per_shot = run(args, colorizer, out_tmp, keyframes, video_tmp, plan)
        keyframes_given = args.first_keyframe or args.first_keyframe_dir or args.keyframes
        finish(out_tmp, args, per_shot, {"checkpoint": str(args.checkpoint), "generator": colorizer.cfg.generator,
                                         "image_size": options.image_size, "line_art": options.line_art,
                                         "keyframes": keyframes_given, "regions": args.regions,
                                         "views": args.views, "still_window": colorizer.still_window,
                                         "keyframe_resample": colorizer.keyframe_resample,
                                         "flow_scale": colorizer.flow_scale,
                                         "source_split": colorizer.source_split},
               video_final)
    except BaseException:
        shutil.rmtree(out_tmp, ignore_errors=True)
        if video_final is not None:
            partial_video(video_final).unlink(missing_ok=True)
        raise


# Peak memory of colouring, in bytes per pixel per generator base channel (ngf): measured 58 (the
# default U-Net at 512², fp32, CPU: 461 MiB over the idle process), with a margin of 1.5.
ACTIVATION_BYTES_PER_PIXEL_CHANNEL = 90


def check_network_memory(colorizer: colorize.Colorizer, device) -> None:
    """A huge --image_size is refused in one line before any frame is read, not by an
    out-of-memory traceback part-way."""
    size, ngf = colorizer.options.image_size, colorizer.cfg.ngf or 64
    # on a GPU every chain's views run as one batch
    chains = (getattr(colorizer.options, "batch_chains", 1) or 1) * getattr(colorizer.options, "views", 1)
    needed = size * size * ngf * ACTIVATION_BYTES_PER_PIXEL_CHANNEL * chains
    utils.check_memory(needed, f"colouring at --image_size {size}", device)


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
