"""Extract the frames of a video or a folder of videos as numbered images, one folder per shot.

    python FrameExtraction.py --video_path EP.mp4 --output_path frames/
    python FrameExtraction.py --video_path episodes/ --output_path frames/ --max_size 512 \\
        --drop_blank --skip_held

Layout. A single video writes ``OUT/shot_0001/frame_000123.png``; a folder of videos writes
``OUT/<video stem>/shot_0001/...`` for each video. The number in a frame's name is its 0-based
index in the source video, so any frame traces back to the video whatever was skipped. Shot
folders are numbered 1, 2, ... among the shots that received at least one frame.
``--no_shot_split`` puts every frame of a video in one folder. Frames are lossless PNG unless
``--format jpg``.

Shot cuts (``ShotDetector``, an adaptive content detector in the spirit of PySceneDetect's
AdaptiveDetector). Each frame is shrunk to ``ANALYSIS_SIZE`` = 64 px on its longest side and
converted to HSV; its content distance to the previous frame is

    d(t) = mean over pixels and the three channels of |HSV(t) - HSV(t-1)|   (0..255 scale,
           hue difference taken on the hue circle: min(|dh|, 180 - |dh|))

Frame t starts a new shot when

    d(t) >= min_content (15)  and  d(t) >= ratio (3) * max{ d(j) : 0 < |j - t| <= window (4) }

that is, a cut is a big change that is also several times bigger than every other change
within +-4 frames. Held frames (anime is drawn on 2s and 3s) give d = 0 and never set the
maximum, so motion drawn on 3s is compared with its own other steps, not with the zeros
between them (an average over the neighbours, as in PySceneDetect's AdaptiveDetector with its
window of 2, flags such steps: on the shared One Piece clip a pan drawn on 3s scores 6.8 times
its local average but only 1.1 times its largest neighbour). Fast action, a camera shake, or a
flash in and out are not cuts: big changes come in groups there. The price: a cut within
``window`` frames of another change at least a third its size (another cut, a huge motion
step) is missed. ``min_shot_len`` optionally suppresses a cut too soon after the previous one.
The decision for frame t needs d(t + window), so the streaming API answers ``window`` frames
late (``split_shots``).

Other rules:
- ``--drop_blank``: a frame is blank when its mean luma (BT.601 grey) is below
  ``--blank_luma`` (16: black, fades to black, dark title cards) or the standard deviation of
  its luma is below ``--blank_std`` (4: a nearly uniform frame of any colour, e.g. a flash).
- ``--skip_held``: a frame is held when fewer than ``--held_percent`` (0.05) % of its pixels
  differ by more than ``--held_delta`` (24) levels, in any channel, from the previous frame
  kept in the same shot. A mean absolute difference cannot tell codec noise on a held frame
  (about 0.1) from a mouth that moved (about 0.25); counting strongly changed pixels can.
- ``--start`` / ``--end`` are 0-based frame indices, ``--end`` exclusive; ``--every_n N`` keeps
  frames start, start + N, ... The shot detector still sees every frame in between.
- A missing file, a file that is not a video, or a truncated video (fewer frames decoded than
  the container announces) is an error; a video's frames are written under a temporary
  ``.<name>.partial`` folder that is renamed into place only when the whole video succeeded.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

# FFmpeg (inside OpenCV) prints its own errors ("moov atom not found") to stderr; we report a
# damaged video ourselves in one line. Read when the first capture opens; a user's setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import utils  # noqa: E402
from utils import UserError  # noqa: E402

VIDEO_EXTS = utils.VIDEO_EXTS
ANALYSIS_SIZE = 64  # longest side of the frames the cut detector compares
_SHOT_DIR = re.compile(r"shot_\d+")
_FRAME_FILE = re.compile(r"frame_\d+\.(png|jpg)")


# ----------------------------------------------------------------------------- reading video
@dataclass
class VideoInfo:
    fps: float
    frame_count: int  # as announced by the container (0 when unknown)
    width: int
    height: int


def _open_capture(path) -> cv2.VideoCapture:
    path = Path(path)
    if not path.exists():
        raise UserError(f"video {path} does not exist")
    if path.is_dir():
        raise UserError(f"video {path} is a folder, not a video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise UserError(f"cannot open video {path}: not a video file, or damaged/truncated")
    return capture


def video_info(path) -> VideoInfo:
    """fps, announced frame count and size of a video; ``UserError`` if it cannot be opened."""
    capture = _open_capture(path)
    try:
        return VideoInfo(fps=float(capture.get(cv2.CAP_PROP_FPS)) or 0.0,
                         frame_count=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
                         width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        capture.release()


def video_fps(path) -> float:
    """Frames per second of a video (24.0 when the container does not say)."""
    return video_info(path).fps or 24.0


def _check_complete(path, decoded: int, announced: int) -> None:
    """A truncated file decodes fewer frames than its header announces. Some containers only
    estimate the count (duration x fps), so a shortfall of max(2, 0.2 %) frames is tolerated."""
    if decoded == 0:
        raise UserError(f"video {path}: no frame could be decoded")
    if announced > 0 and announced - decoded > max(2, announced // 500):
        raise UserError(f"video {path} is truncated or damaged: decoded {decoded} of the "
                        f"{announced} frames it announces")


def read_video(path, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames ``start <= index < end`` of a video as uint8 RGB (H, W, 3), in order.

    Frames before ``start`` are decoded and discarded (exact, unlike seeking). Raises
    ``UserError`` for a missing, unreadable or truncated video (the last possibly after some
    frames were yielded: consumers must treat what they got as incomplete).
    """
    capture = _open_capture(path)
    announced = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    index, ran_out = 0, False
    try:
        while end is None or index < end:
            if index < start:
                ok = capture.grab()  # decode without the colour conversion
            else:
                ok, frame = capture.read()
                if ok:
                    yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if not ok:
                ran_out = True
                break
            index += 1
    finally:
        capture.release()
    if ran_out:
        _check_complete(path, index, announced)


# ----------------------------------------------------------------------------- shot detection
def _analysis_hsv(frame_rgb: np.ndarray) -> np.ndarray:
    """The frame shrunk to ANALYSIS_SIZE on its longest side (INTER_AREA), as float32 HSV."""
    h, w = frame_rgb.shape[:2]
    scale = min(1.0, ANALYSIS_SIZE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else frame_rgb
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32)


def content_distance(hsv_a: np.ndarray, hsv_b: np.ndarray) -> float:
    """Mean |HSV difference| over pixels and channels; OpenCV hue is 0..179 on a circle."""
    diff = np.abs(hsv_a - hsv_b)
    diff[..., 0] = np.minimum(diff[..., 0], 180.0 - diff[..., 0])
    return float(diff.mean())


class ShotDetector:
    """Streaming adaptive cut detector (rule in the module docstring).

    Feed frames in order with ``push``; it returns ``(frame_index, is_cut)`` for each frame
    whose decision became final (one per call once ``window`` frames have been seen), and
    ``flush`` returns the last ones. Memory: one small frame and 2 * window + 1 distances.
    ``is_cut`` is True for a frame that starts a new shot (never for frame 0).
    """

    def __init__(self, ratio: float = 3.0, min_content: float = 15.0, window: int = 4,
                 min_shot_len: int = 1):
        if window < 1 or ratio <= 0 or min_shot_len < 1:
            raise UserError("cut detector: window and min_shot_len must be >= 1, ratio > 0")
        self.ratio, self.min_content = ratio, min_content
        self.window, self.min_shot_len = window, min_shot_len
        self._prev_hsv = None
        self._dists: deque = deque(maxlen=2 * window + 1)  # (index, d), frames 1.. only
        self._seen = 0      # frames pushed
        self._decided = 0   # frames whose decision was returned
        self._last_cut = 0

    def push(self, frame_rgb: np.ndarray) -> list[tuple[int, bool]]:
        hsv = _analysis_hsv(frame_rgb)
        if self._prev_hsv is not None:
            if self._prev_hsv.shape != hsv.shape:  # a size change is a new video, hence a cut
                dist = float("inf")
            else:
                dist = content_distance(hsv, self._prev_hsv)
            self._dists.append((self._seen, dist))
        self._prev_hsv = hsv
        self._seen += 1
        return self._decide_up_to(self._seen - 1 - self.window)

    def flush(self) -> list[tuple[int, bool]]:
        """Decide the frames still waiting for look-ahead (call once, after the last frame)."""
        return self._decide_up_to(self._seen - 1)

    def _decide_up_to(self, last: int) -> list[tuple[int, bool]]:
        out = []
        while self._decided <= last:
            t = self._decided
            cut = t > 0 and self._is_cut(t)
            if cut:
                self._last_cut = t
            out.append((t, cut))
            self._decided += 1
        return out

    def _is_cut(self, t: int) -> bool:
        dists = dict(self._dists)
        d = dists[t]
        if d < self.min_content or t - self._last_cut < self.min_shot_len:
            return False
        others = [v for j, v in dists.items() if j != t and abs(j - t) <= self.window]
        return d >= self.ratio * max(others, default=0.0)


def split_shots(frames: Iterable[np.ndarray], detector: ShotDetector | None = None,
                first_index: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(shot_index, frame_index, frame)`` for every frame, in order; shot_index counts
    cuts from 0 and frame_index counts from ``first_index``. At most ``window + 1`` frames
    are held back (the detector's look-ahead)."""
    detector = detector or ShotDetector()
    pending: deque = deque()
    shot = 0
    for frame in frames:
        pending.append(frame)
        for index, cut in detector.push(frame):
            shot += cut
            yield shot, first_index + index, pending.popleft()
    for index, cut in detector.flush():
        shot += cut
        yield shot, first_index + index, pending.popleft()


def find_cuts(frames: Iterable[np.ndarray], detector: ShotDetector | None = None) -> list[int]:
    """Indices (0-based) of the frames that start a new shot."""
    detector = detector or ShotDetector()
    cuts = []
    for frame in frames:
        cuts += [i for i, cut in detector.push(frame) if cut]
    return cuts + [i for i, cut in detector.flush() if cut]


def iter_video_shots(path, detector: ShotDetector | None = None, start: int = 0,
                     end: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(shot_index, frame_index, rgb)`` for a video file, split as FrameExtraction.py does."""
    return split_shots(read_video(path, start, end), detector, first_index=start)


# ----------------------------------------------------------------------------- frame filters
def is_blank(frame_rgb: np.ndarray, max_luma: float = 16.0, min_std: float = 4.0) -> bool:
    """Near black (mean luma < max_luma) or nearly uniform (luma std < min_std)."""
    mean, std = cv2.meanStdDev(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY))
    return float(mean[0, 0]) < max_luma or float(std[0, 0]) < min_std


def is_held(frame_rgb: np.ndarray, previous_rgb: np.ndarray | None, delta: int = 24,
            percent: float = 0.05) -> bool:
    """Fewer than ``percent`` % of pixels changed by more than ``delta`` in any channel."""
    if previous_rgb is None or previous_rgb.shape != frame_rgb.shape:
        return False
    changed = cv2.absdiff(frame_rgb, previous_rgb).max(axis=2) > delta
    return 100.0 * np.count_nonzero(changed) < percent * changed.size


def resize_longest(frame_rgb: np.ndarray, max_size: int | None) -> np.ndarray:
    """Shrink (never enlarge) so that the longest side is at most ``max_size`` (INTER_AREA)."""
    h, w = frame_rgb.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return frame_rgb
    scale = max_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- extraction
@dataclass
class ExtractOptions:
    start: int = 0                # first frame index (0-based)
    end: int | None = None        # stop before this frame index
    every_n: int = 1              # keep frames start, start + n, ...
    max_size: int | None = None   # longest side of the written frames
    image_format: str = "png"     # png (lossless) or jpg
    jpeg_quality: int = 95
    shot_split: bool = True       # one folder per shot
    drop_blank: bool = False
    blank_luma: float = 16.0
    blank_std: float = 4.0
    skip_held: bool = False
    held_delta: int = 24
    held_percent: float = 0.05
    cut_ratio: float = 3.0
    cut_min_content: float = 15.0
    cut_window: int = 4
    min_shot_len: int = 1
    overwrite: bool = False
    progress: bool = True         # tqdm bar (shown only on a terminal)

    def check(self) -> None:
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise UserError(f"need 0 <= --start < --end (got {self.start}, {self.end})")
        if self.every_n < 1 or (self.max_size is not None and self.max_size < 1):
            raise UserError("--every_n and --max_size must be >= 1")
        if self.image_format not in ("png", "jpg") or not 1 <= self.jpeg_quality <= 100:
            raise UserError("--format must be png or jpg and --jpeg_quality within 1..100")

    def make_detector(self) -> ShotDetector:
        return ShotDetector(self.cut_ratio, self.cut_min_content, self.cut_window,
                            self.min_shot_len)


def previous_outputs(dest: Path) -> list[Path]:
    """Shot folders and frame files that an earlier extraction left in ``dest``."""
    if not dest.is_dir():
        return []
    return sorted(p for p in dest.iterdir() if (p.is_dir() and _SHOT_DIR.fullmatch(p.name))
                  or (p.is_file() and _FRAME_FILE.fullmatch(p.name)))


def check_destination(dest: Path, overwrite: bool, video: Path | None = None) -> None:
    if dest.exists() and not dest.is_dir():
        raise UserError(f"output {dest} exists and is not a folder")
    if video is not None and dest in Path(video).resolve().parents and previous_outputs(dest) and overwrite:
        raise UserError(f"--output_path {dest} holds the input video {video}: --overwrite there could delete "
                        "it; choose an output folder of its own")
    if previous_outputs(dest) and not overwrite:
        raise UserError(f"{dest} already holds extracted frames (use --overwrite to replace them)")
    if overwrite:
        check_own_frames(dest)


def read_frames_marker(dest: Path) -> dict:
    try:
        marker = json.loads((dest / utils.FRAMES_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def check_own_frames(dest: Path) -> None:
    """--overwrite deletes the shot folders and frame files of ``dest`` only when the earlier
    FrameExtraction.py run listed every file in them (with its size) in ``dest``'s marker: the
    input video, a note, a training run or a frame put there since stops it."""
    old = previous_outputs(dest)
    if not old:
        return
    listed = read_frames_marker(dest).get("files")
    if not isinstance(listed, dict):
        raise UserError(f"{dest} holds frames that FrameExtraction.py did not write (it lacks "
                        f"{utils.FRAMES_MARKER}): --overwrite replaces only its own output; choose another folder")
    sizes = utils.file_sizes(dest)
    for rel, size in sizes.items():
        if rel.split("/")[0] in {p.name for p in old} and listed.get(rel) != size:
            raise UserError(f"--overwrite would delete {dest / rel}, which FrameExtraction.py did not write (or "
                            "which changed since): move it away, or choose another output folder")


def remove_own_partial(partial: Path) -> None:
    """Remove a ``.NAME.partial`` folder that an interrupted run of ours left; one that lacks our
    marker is somebody else's and is never touched."""
    if not partial.exists():
        return
    if partial.is_dir() and not any(partial.iterdir()):  # killed between its mkdir and its marker
        partial.rmdir()
        return
    if not (partial / utils.PARTIAL_MARKER).is_file():
        raise UserError(f"{partial} exists and was not left by FrameExtraction.py: move it away first")
    shutil.rmtree(partial)


def _move_into_place(partial: Path, dest: Path, overwrite: bool) -> None:
    """Replace earlier outputs (only our shot folders and frame files, proved by our marker)."""
    if overwrite:
        check_own_frames(dest)  # again: minutes may have passed since the first check
        for old in previous_outputs(dest):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    if not dest.exists():
        os.replace(partial, dest)
        return
    for child in sorted(partial.iterdir()):
        os.replace(child, dest / child.name)
    partial.rmdir()


class _FrameWriter:
    """Writes kept frames; a shot folder is created with its first frame, numbered 1, 2, ..."""

    def __init__(self, root: Path, options: ExtractOptions):
        self.root, self.options = root, options
        self.folders: dict[int, Path] = {}

    def write(self, shot: int, index: int, frame: np.ndarray) -> None:
        folder = self.root
        if self.options.shot_split:
            if shot not in self.folders:
                self.folders[shot] = self.root / f"shot_{len(self.folders) + 1:04d}"
            folder = self.folders[shot]
        name = f"frame_{index:06d}.{self.options.image_format}"
        utils.write_image(folder / name, frame, self.options.jpeg_quality)


def _drop_reason(index, frame, held_ref, options: ExtractOptions) -> str | None:
    if (index - options.start) % options.every_n:
        return "every_n"
    if options.drop_blank and is_blank(frame, options.blank_luma, options.blank_std):
        return "blank"
    if options.skip_held and is_held(frame, held_ref, options.held_delta, options.held_percent):
        return "held"
    return None


def _frames_with_shots(video: Path, options: ExtractOptions):
    if options.shot_split:
        return iter_video_shots(video, options.make_detector(), options.start, options.end)
    frames = read_video(video, options.start, options.end)
    return ((0, options.start + i, frame) for i, frame in enumerate(frames))


def _extract_frames(video: Path, out_dir: Path, options: ExtractOptions, total: int) -> Counter:
    counts: Counter = Counter()
    writer = _FrameWriter(out_dir, options)
    current_shot, held_ref = None, None
    with tqdm(total=total or None, unit="frame", desc=video.name, leave=False,
              disable=None if options.progress else True) as bar:
        for shot, index, frame in _frames_with_shots(video, options):
            bar.update(1)
            counts["read"] += 1
            if shot != current_shot:  # held frames are only compared within a shot
                current_shot, held_ref = shot, None
            reason = _drop_reason(index, frame, held_ref, options)
            if reason:
                counts[reason] += 1
                continue
            held_ref = frame
            writer.write(shot, index, resize_longest(frame, options.max_size))
            counts["written"] += 1
    counts["shots"] = len(writer.folders) if options.shot_split else int(counts["written"] > 0)
    return counts


def extract_video(video_path, output_dir, options: ExtractOptions | None = None) -> dict:
    """Extract one video into ``output_dir`` (written as ``.<name>.partial``, renamed when
    complete). Returns a summary dict; raises ``UserError`` leaving no partial output."""
    options = options or ExtractOptions()
    options.check()
    video, dest = Path(video_path), Path(output_dir).resolve()
    info = video_info(video)
    if info.frame_count and options.start >= info.frame_count:
        raise UserError(f"--start {options.start} is past the end of {video} "
                        f"({info.frame_count} frames)")
    check_destination(dest, options.overwrite, video)
    with utils.WriterLock(dest, "FrameExtraction.py"):  # one writer per output folder
        check_destination(dest, options.overwrite, video)
        counts, seconds = _extract_into(video, dest, options, info)
    dropped = {k: counts[k] for k in ("every_n", "blank", "held")}
    return {"video": str(video), "output": str(dest), "frames_read": counts["read"],
            "frames_written": counts["written"], "shots": counts["shots"], "dropped": dropped,
            "seconds": seconds}


def _extract_into(video: Path, dest: Path, options: ExtractOptions, info: VideoInfo) -> tuple[Counter, float]:
    """Frames into ``.NAME.partial`` beside ``dest``, then moved into place with our marker."""
    partial = dest.parent / f".{dest.name}.partial"
    remove_own_partial(partial)  # left over by a killed run of ours
    partial.mkdir(parents=True)
    (partial / utils.PARTIAL_MARKER).write_bytes(b"")
    t0 = time.time()
    total = min(info.frame_count, options.end or info.frame_count) - options.start
    try:
        counts = _extract_frames(video, partial, options, max(0, total))
        if counts["written"] == 0:
            raise UserError(f"no frame of {video} was kept ({counts['read']} read; dropped: every_n "
                            f"{counts['every_n']}, blank {counts['blank']}, held {counts['held']})")
        (partial / utils.PARTIAL_MARKER).unlink()
        files = utils.file_sizes(partial)
        if not options.overwrite:  # frames of an earlier video merged into this folder stay listed
            files = {**read_frames_marker(dest).get("files", {}), **files} if dest.is_dir() else files
        marker = {"tool": "FrameExtraction.py", "video": str(video.resolve()), "files": files}
        utils.atomic_write_bytes(partial / utils.FRAMES_MARKER, json.dumps(marker).encode())
        _move_into_place(partial, dest, options.overwrite)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return counts, time.time() - t0


def format_summary(summary: dict) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items())
    shots = summary["shots"]
    return (f"{Path(summary['video']).name}: wrote {summary['frames_written']} frames in "
            f"{shots} shot{'s' * (shots != 1)} to {summary['output']} "
            f"({summary['frames_read']} read; dropped: {dropped}; {summary['seconds']:.1f} s)")


# ----------------------------------------------------------------------------- command line
def plan_jobs(video_path: Path, output_path: Path) -> list[tuple[Path, Path]]:
    """(video, destination folder) pairs: the video itself, or each video of a folder."""
    if not video_path.is_dir():
        return [(video_path, output_path)]
    videos = sorted((p for p in video_path.iterdir() if p.is_file()
                     and p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".")),
                    key=lambda p: utils.natural_key(p.name))
    if not videos:
        raise UserError(f"{video_path} holds no video file ({', '.join(VIDEO_EXTS)})")
    stems = Counter(p.stem for p in videos)
    clashes = [s for s, n in stems.items() if n > 1]
    if clashes:
        raise UserError(f"{video_path} holds several videos named {clashes[0]}.* "
                        "(each video's frames go to a folder named after its stem)")
    return [(p, output_path / p.stem) for p in videos]


def options_from_args(args) -> ExtractOptions:
    names = {f.name for f in fields(ExtractOptions)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return ExtractOptions(**values, image_format=args.format, shot_split=not args.no_shot_split)


def main(args) -> int:
    options = options_from_args(args)
    options.check()
    jobs = plan_jobs(Path(args.video_path), Path(args.output_path))
    for video, dest in jobs:  # refuse before spending time on any video
        check_destination(dest.resolve(), options.overwrite, video)
    failures, totals = [], Counter()
    for video, dest in jobs:
        try:
            summary = extract_video(video, dest, options)
        except UserError as err:
            if len(jobs) == 1:
                raise
            failures.append(video.name)
            print(f"skipped: {err}", file=sys.stderr)
            continue
        print(format_summary(summary), flush=True)
        totals.update(frames=summary["frames_written"], shots=summary["shots"], videos=1)
    if len(jobs) > 1:
        print(f"total: wrote {totals['frames']} frames in {totals['shots']} shots from "
              f"{totals['videos']} of {len(jobs)} videos to {args.output_path}")
    if failures:
        raise UserError(f"{len(failures)} of {len(jobs)} videos failed: {', '.join(failures)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    d = ExtractOptions()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--video_path", required=True, help="a video file or a folder of videos")
    p.add_argument("--output_path", required=True, help="folder for the frames")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--jpeg_quality", type=int, default=d.jpeg_quality)
    p.add_argument("--no_shot_split", action="store_true", help="all frames in one folder")
    p.add_argument("--start", type=int, default=d.start, help="first frame index (0-based)")
    p.add_argument("--end", type=int, default=None, help="stop before this frame index")
    p.add_argument("--every_n", type=int, default=d.every_n, help="keep every n-th frame")
    p.add_argument("--max_size", type=int, default=None, help="longest side in pixels")
    p.add_argument("--drop_blank", action="store_true", help="drop black / uniform frames")
    p.add_argument("--blank_luma", type=float, default=d.blank_luma, help="blank: mean luma <")
    p.add_argument("--blank_std", type=float, default=d.blank_std, help="blank: luma std <")
    p.add_argument("--skip_held", action="store_true", help="drop frames repeating the last kept")
    p.add_argument("--held_delta", type=int, default=d.held_delta,
                   help="held: a pixel changed when it differs by more than this")
    p.add_argument("--held_percent", type=float, default=d.held_percent,
                   help="held: fewer than this %% of pixels changed")
    p.add_argument("--cut_ratio", type=float, default=d.cut_ratio,
                   help="cut: distance >= ratio x the largest neighbouring distance")
    p.add_argument("--cut_min_content", type=float, default=d.cut_min_content,
                   help="cut: distance (mean |HSV diff|, 0..255) at least this")
    p.add_argument("--cut_window", type=int, default=d.cut_window,
                   help="cut: neighbouring frames compared on each side")
    p.add_argument("--min_shot_len", type=int, default=d.min_shot_len,
                   help="ignore a cut fewer than this many frames after the previous one")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the frames an earlier run of FrameExtraction.py wrote there (proved by its "
                        f"{utils.FRAMES_MARKER} marker); never anything else")
    return p


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
