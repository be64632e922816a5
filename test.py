"""Colorize shots and videos with a trained generator, recurrently, and measure the result.

    python test.py --checkpoint runs/exp1/checkpoints/best.pt --input frames/ --output out/
    python test.py --checkpoint best.pt --input EP.mp4 --output out/ --video out.mp4 --side_by_side
    python test.py --checkpoint best.pt --input shot/ --output out/ --reference shot_key.png

``--input`` is a folder of frames, a folder of shot folders, or a video file (split into shots
exactly as FrameExtraction.py splits it). Within a shot every frame is fed the previous
generated frame; a new shot starts a new chain from a black frame, or from a coloured keyframe
(``--reference`` for every shot, ``--reference_dir`` with one keyframe per shot, named after
the shot folder). Colour input is turned into line art with the training function and kept as
ground truth: then ``OUT/metrics.json`` holds PSNR, SSIM, warping error, colour consistency and
the temporal-consistency ratio per shot and overall (see metrics.py).

The output folder is written under a temporary name and renamed when complete: a failed or
interrupted run leaves no folder that looks finished. The original README's flags work too:
    python test.py --root data --dataset dragonball --model G.pth --cuda
"""
from __future__ import annotations

import argparse
import contextlib
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

import FrameExtraction
import dataset as data_lib
import metrics as metrics_lib
import models
import utils
from utils import UserError

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", "--model", dest="checkpoint",
                   help="training checkpoint, generator export, or the original's {'generator': ...} file")
    p.add_argument("--input", help="folder of frames, folder of shot folders, or a video file")
    p.add_argument("--output", help="folder for the colorized frames (must not exist yet, unless --overwrite)")
    p.add_argument("--root", help="original layout: colorize ROOT/DATASET/Test")
    p.add_argument("--dataset", help="original layout, see --root")
    p.add_argument("--input_type", choices=["colour", "lineart", "grey"], default="colour",
                   help="colour frames (line art derived, frames kept as ground truth), artist line art, or grey")
    p.add_argument("--reference", help="coloured keyframe fed as the previous frame of every shot's first frame")
    p.add_argument("--reference_dir", help="one keyframe per shot: REFERENCE_DIR/<shot path>.png")
    p.add_argument("--full_res", action="store_true",
                   help="write at the input's resolution: generated colour on the full-resolution luminance / line art")
    p.add_argument("--video", help="also write an H.264 MP4 at the source frame rate")
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    return p


@dataclass
class Frame:
    """One input frame as it flows through the pipeline."""
    shot: str             # shot key: relative folder of the shot ('.' for a single folder)
    name: str             # output file stem
    rgb: np.ndarray       # full-resolution input, uint8 (H, W, 3)
    line: torch.Tensor    # (1, S, S) network line art in [0, 1]
    target: torch.Tensor | None  # (3, S, S) ground truth, or None


# ----------------------------------------------------------------------------- input
def iter_raw_frames(input_path: Path):
    """Yield ``(shot_key, frame_stem, rgb)`` in order, one frame at a time (never a whole shot)."""
    if input_path.is_file():
        if input_path.suffix.lower() not in VIDEO_EXTS:
            raise UserError(f"{input_path} is neither a folder of frames nor a video file")
        for shot, index, rgb in FrameExtraction.iter_video_shots(input_path):
            yield f"shot_{shot + 1:04d}", f"frame_{index:06d}", rgb
        return
    for shot_dir in utils.find_shot_dirs(input_path):
        key = shot_dir.relative_to(input_path).as_posix()
        for path in utils.list_frames(shot_dir):
            yield key, path.stem, utils.read_rgb(path)


def to_frame(shot, name, rgb, args, line_mode) -> Frame:
    """Network inputs for one frame, with the very function training used for line art."""
    if args.input_type == "colour":
        line, target = data_lib.prepare_frame(rgb, args.image_size, line_mode)
        return Frame(shot, name, rgb, line, target)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (args.image_size, args.image_size), interpolation=cv2.INTER_AREA)
    return Frame(shot, name, rgb, data_lib.to_tensor(small), None)


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


# ----------------------------------------------------------------------------- references
def reference_for(shot: str, args) -> np.ndarray | None:
    """The keyframe of a shot: ``--reference`` for all, or ``--reference_dir/<shot>.<ext>``."""
    if args.reference:
        return utils.read_rgb(args.reference)
    if not args.reference_dir:
        return None
    stem = Path(args.reference_dir) / (Path(args.input).name if shot == "." else shot)
    for ext in utils.IMAGE_EXTS:
        if stem.with_suffix(ext).is_file():
            return utils.read_rgb(stem.with_suffix(ext))
    raise UserError(f"no keyframe for shot '{shot}' in --reference_dir (expected {stem}.png)")


def reference_tensor(rgb, size, device) -> torch.Tensor:
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return data_lib.to_tensor(small)[None].to(device)


# ----------------------------------------------------------------------------- output
def full_resolution(result: np.ndarray, frame: Frame, input_type: str) -> np.ndarray:
    """Put the generated colour onto the input's own full-resolution detail: its luminance for
    colour / grey input (chroma from the network, upsampled), or its lines for line art."""
    h, w = frame.rgb.shape[:2]
    up = cv2.resize(result, (w, h), interpolation=cv2.INTER_CUBIC)
    if input_type == "lineart":
        lines = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        return (up.astype(np.float32) * lines[..., None] + 0.5).astype(np.uint8)
    ycc = cv2.cvtColor(up, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


class Writer:
    """Writes results into the temporary output folder and, optionally, the MP4."""

    def __init__(self, out_tmp: Path, args, fps: float):
        self.out, self.args, self.fps = out_tmp, args, fps
        self.video = None
        self.video_size = None

    def write(self, frame: Frame, result: np.ndarray) -> None:
        image = full_resolution(result, frame, self.args.input_type) if self.args.full_res else result
        utils.write_image(self.out / frame.shot / f"{frame.name}.png", image)
        panel = None
        if self.args.side_by_side:
            panels = [data_lib.to_uint8(frame.line), result]
            panels += [data_lib.to_uint8(frame.target)] if frame.target is not None else []
            panel = np.concatenate(panels, axis=1)
            utils.write_image(self.out / "side_by_side" / frame.shot / f"{frame.name}.png", panel)
        if self.args.video:
            self.add_video_frame(panel if panel is not None else image)

    def add_video_frame(self, image: np.ndarray) -> None:
        if self.video is None:
            h, w = image.shape[:2]
            self.video_size = (w + w % 2, h + h % 2)  # yuv420p needs even sizes
            self.video = open_video_writer(self.video_tmp, self.video_size, self.fps)
        if image.shape[1::-1] != self.video_size:
            image = cv2.resize(image, self.video_size, interpolation=cv2.INTER_AREA)
        self.video.send(np.ascontiguousarray(image))

    @property
    def video_tmp(self) -> Path:
        return self.out / ".video.partial.mp4"

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
class Colorizer:
    """Recurrent colorization: one chain per shot, each frame fed the previous result."""

    def __init__(self, G, device, amp: bool, args):
        self.G, self.device, self.args = G, device, args
        self.ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        self.shot, self.prev = None, None

    @torch.no_grad()
    def __call__(self, frame: Frame) -> torch.Tensor:
        if frame.shot != self.shot:  # a new shot starts a new chain
            self.shot = frame.shot
            ref = reference_for(frame.shot, self.args)
            size = self.args.image_size
            self.prev = (reference_tensor(ref, size, self.device) if ref is not None
                         else torch.zeros(1, 3, size, size, device=self.device))
        line = frame.line[None].to(self.device, non_blocking=True)
        with self.ctx:
            out = self.G(torch.cat([line, self.prev], 1))  # (1, 3, S, S)
        self.prev = out.float().clamp(0, 1)
        result = self.prev[0]
        if self.args.frame_by_frame:
            self.prev = torch.zeros_like(self.prev)
        return result


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

    def __call__(self, frame: Frame, result: np.ndarray) -> None:
        self.writer.write(frame, result)
        if frame.target is not None and self.with_metrics:
            if frame.shot not in self.per_shot:
                self.per_shot[frame.shot] = metrics_lib.VideoMetrics()
            self.per_shot[frame.shot].update(result, data_lib.to_uint8(frame.target))


def run(args, G, line_mode, device, out_tmp: Path) -> dict:
    """Colorize every frame; returns per-shot metrics (empty without ground truth)."""
    input_path = Path(args.input)
    fps = args.fps or (FrameExtraction.video_fps(input_path) if input_path.is_file() else 24.0)
    use_amp = args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda")
    colorize, writer = Colorizer(G, device, use_amp, args), Writer(out_tmp, args, fps)
    sink = Sink(writer, not args.no_metrics)
    output = Background(sink)
    frames = prefetch(to_frame(*raw, args, line_mode) for raw in iter_raw_frames(input_path))
    bar = tqdm(frames, unit="frame", dynamic_ncols=True)
    count, t0 = 0, time.time()
    try:
        for frame in bar:
            output.put(frame, data_lib.to_uint8(colorize(frame)))
            count += 1
            bar.set_postfix(fps=f"{count / max(time.time() - t0, 1e-9):.1f}", shot=frame.shot)
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
    inp, out = Path(args.input).resolve(), Path(args.output).resolve()
    if not inp.exists():
        raise UserError(f"input {args.input} does not exist")
    if inp.is_dir() and (out == inp or inp in out.parents):
        raise UserError(f"the output folder {args.output} lies inside the input {args.input}")
    if out.exists() and not args.overwrite:
        raise UserError(f"{args.output} already exists (pass --overwrite to replace it)")
    if args.reference and args.reference_dir:
        raise UserError("give --reference or --reference_dir, not both")
    if args.frame_by_frame and (args.reference or args.reference_dir):
        raise UserError("--frame_by_frame feeds no previous frame, so it takes no keyframe")
    if args.reference and not Path(args.reference).is_file():
        raise UserError(f"reference keyframe {args.reference} does not exist")


def finish(out_tmp: Path, args, per_shot: dict, note: dict) -> None:
    """Metrics, then the renames that make the output visible only when complete."""
    if per_shot:
        overall = metrics_lib.summarize(per_shot)
        metrics_lib.write_metrics_json(out_tmp / "metrics.json", per_shot, overall, extra=note)
        print(metrics_lib.format_table(per_shot, overall))
    out = Path(args.output)
    if args.video:
        Path(args.video).parent.mkdir(parents=True, exist_ok=True)
        (out_tmp / ".video.partial.mp4").replace(args.video)
    if out.exists():
        shutil.rmtree(out)
    out_tmp.replace(out)


def main(args) -> int:
    resolve_args(args)
    device = utils.resolve_device(args.device)
    G, cfg, meta = models.load_generator(args.checkpoint, device)
    args.image_size = args.image_size or meta.get("image_size") or 256
    line_mode = args.line_art or meta.get("line_art") or "canny"
    if args.input_type == "colour" and line_mode == "given":
        raise UserError("this model was trained on artist line art: pass that line art with --input_type lineart")
    out_tmp = Path(args.output).with_name(f".{Path(args.output).name}.partial")
    shutil.rmtree(out_tmp, ignore_errors=True)
    out_tmp.mkdir(parents=True)
    try:
        per_shot = run(args, G, line_mode, device, out_tmp)
        finish(out_tmp, args, per_shot, {"checkpoint": str(args.checkpoint), "generator": cfg.generator,
                                         "image_size": args.image_size, "line_art": line_mode,
                                         "reference": args.reference or args.reference_dir})
    except BaseException:
        shutil.rmtree(out_tmp, ignore_errors=True)
        raise
    print(f"wrote {args.output}" + (f" and {args.video}" if args.video else ""))
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
