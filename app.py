"""A browser app for the keyframe workflow: open a shot, give keyframes, colour, export.

    python app.py --checkpoint runs/exp1/generator.pt          # http://127.0.0.1:7860
    python app.py                                              # make demo's model, if it is there
    python app.py --checkpoint G.pt --host 0.0.0.0 --auth_file ~/.tcvc-auth --allow_dir /data/shots

1. Open a shot: upload a video (split into shots exactly as FrameExtraction.py splits it), or a
   zip of frames (each folder of numbered frames is a shot, as test.py reads a folder of shot
   folders), or, with ``--allow_dir DIR``, name a frame folder under DIR on the server.
2. Keyframes: pick a frame and upload its coloured version, or (colour input) take the frame's
   own colours; remove one again.
3. Colour: the shot goes through colorize.py with test.py's options (input type, blend, regions,
   views), one job at a time (a queue, the position shown), with a progress bar in frames and frames/s.
4. Export: the MP4 and a zip of the PNG frames, named as test.py names them; with colour input
   the metrics of metrics.json, next to the answers that need no model (copy keyframe, warped
   keyframe, and with two keyframes or more the keyframes warped and joined as the model's chains are).

What it may touch: it reads the checkpoint, what is uploaded, and (only with --allow_dir)
frame folders under that folder, symbolic links resolved and refused when they lead outside.
It writes only inside its own working folder (uploads, results), removed at exit. It listens
on 127.0.0.1 unless --host says otherwise; beyond localhost give --auth or --auth_file (it
warns without). Bad uploads get one message in the page and the app keeps serving.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

import FrameExtraction
import colorize
import correspond
import metrics as metrics_lib
import utils
from utils import UserError

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "demo_data" / "run" / "generator.pt"  # where demo.py leaves it
LOCALHOSTS = ("127.0.0.1", "localhost", "::1")
ZIP_EXTS = (".zip",)
COMPARE_HEIGHT = 256  # the comparison of one frame is enlarged to about this height


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help=f"generator to colour with (default: make demo's, {DEMO_CHECKPOINT})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--auth", help="USER:PASSWORD asked of every visitor")
    p.add_argument("--auth_file", help="a file holding one line USER:PASSWORD (keeps it out of the process list)")
    p.add_argument("--allow_dir", help="let the browser open frame folders on the server, under this folder only")
    d = Limits()
    p.add_argument("--max_upload_mb", type=float, default=d.max_bytes / 2**20,
                   help="largest upload (and unzipped size), in MB")
    p.add_argument("--max_frame_side", type=int, default=d.max_side, help="largest frame width or height, in pixels")
    p.add_argument("--max_frames", type=int, default=d.max_frames, help="most frames one upload may hold")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


@dataclass
class Limits:
    """What one upload may be."""
    max_bytes: int = 500 * 2**20   # the upload itself, and the sum of a zip's unpacked files
    max_side: int = 4096           # frame width or height
    max_frames: int = 3000         # frames held in memory for one upload


# ----------------------------------------------------------------------------- shots
@dataclass
class Shot:
    """One shot as opened: its frames in order, named as test.py names them."""
    key: str                  # test.py's shot folder: "shot_0001" (video), a folder in the zip, "." (flat)
    names: list[str]          # frame file stems, test.py's output names
    frames: list[np.ndarray]  # uint8 RGB (H, W, 3), full resolution
    fps: float = 24.0


@dataclass
class Session:
    """One browser tab: its shots, keyframes and results, in a folder no other tab uses."""
    work: Path                                    # this tab's own folder inside the app's
    shots: list[Shot] = field(default_factory=list)
    current: int = 0                              # the shot on show
    keyframes: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # {shot: {frame index: RGB}}
    result: "Result | None" = None
    jobs: int = 0                                 # colouring runs so far (each gets a folder)

    @property
    def shot(self) -> Shot:
        if not self.shots:
            raise UserError("open a shot first (upload a video or a zip of frames)")
        return self.shots[self.current]

    def shot_keyframes(self) -> dict[int, np.ndarray]:
        return self.keyframes.setdefault(self.current, {})


def new_session(app_work: Path) -> Session:
    return Session(Path(tempfile.mkdtemp(prefix="tab-", dir=app_work)))


def check_frame_size(rgb_shape, what: str, limits: Limits) -> None:
    h, w = rgb_shape[:2]
    if max(h, w) > limits.max_side:
        raise UserError(f"{what} is {w}x{h}: frames may be at most {limits.max_side} pixels on a side "
                        "(shrink them, e.g. FrameExtraction.py --max_size)")


def check_upload_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise UserError(f"{path.name} is {size / 2**20:.0f} MB: uploads may be at most "
                        f"{limits.max_bytes / 2**20:.0f} MB (--max_upload_mb)")


def open_upload(path, limits: Limits, name: str | None = None) -> list[Shot]:
    """An uploaded file -> its shots: a video split as FrameExtraction.py splits it, or a zip of
    frames. ``name``: the file's name as the user knows it (uploads are stored under others)."""
    path = Path(path)
    name = name or path.name
    check_upload_size(path, limits)
    suffix = Path(name).suffix.lower()
    if suffix in utils.VIDEO_EXTS:
        return open_video(path, limits, name)
    if suffix in ZIP_EXTS:
        return open_zip(path, limits, name)
    raise UserError(f"{name} is neither a video ({', '.join(utils.VIDEO_EXTS)}) nor a zip of frames")


def open_video(path: Path, limits: Limits, name: str) -> list[Shot]:
    info = FrameExtraction.video_info(path)
    check_frame_size((info.height, info.width), f"video {name}", limits)
    shots: dict[int, Shot] = {}
    for shot, index, rgb in FrameExtraction.iter_video_shots(path):
        if sum(len(s.frames) for s in shots.values()) >= limits.max_frames:
            raise UserError(f"{name} holds more than {limits.max_frames} frames (--max_frames): cut it shorter")
        if shot not in shots:  # test.py's names for a video's shots and frames
            shots[shot] = Shot(f"shot_{shot + 1:04d}", [], [], info.fps or 24.0)
        shots[shot].names.append(f"frame_{index:06d}")
        shots[shot].frames.append(rgb)
    return list(shots.values())


def open_zip(path: Path, limits: Limits, name: str) -> list[Shot]:
    """Frames of a zip, read in memory (nothing unpacked to disk): every folder of numbered
    frames is a shot, as test.py reads a folder of shot folders."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise UserError(f"{name} is not a readable zip file") from None
    with archive:
        members = [m for m in archive.infolist() if zip_frame_member(m)]
        if not members:
            raise UserError(f"{name} holds no numbered image frames (expected names like frame0001.png)")
        if len(members) > limits.max_frames:
            raise UserError(f"{name} holds {len(members)} frames: at most {limits.max_frames} (--max_frames)")
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise UserError(f"{name} unpacks to more than {limits.max_bytes / 2**20:.0f} MB (--max_upload_mb)")
        by_folder: dict[str, list[zipfile.ZipInfo]] = {}
        for m in members:
            by_folder.setdefault(str(PurePosixPath(m.filename).parent), []).append(m)
        return [zip_shot(archive, folder, by_folder[folder], limits, name)
                for folder in sorted(by_folder, key=utils.natural_key)]


def zip_frame_member(member: zipfile.ZipInfo) -> bool:
    """A numbered image of the zip, not hidden and not macOS metadata; a name that climbs out
    ('..') or is absolute is refused (it would become an output path)."""
    parts = PurePosixPath(member.filename).parts
    if member.filename.startswith("/") or ".." in parts:
        raise UserError(f"the zip holds an unsafe name {member.filename!r}")
    if member.is_dir() or not utils.is_image(member.filename):
        return False
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return utils.frame_number(member.filename) is not None


def zip_shot(archive: zipfile.ZipFile, folder: str, members: list, limits: Limits, name: str) -> Shot:
    members = sorted(members, key=lambda m: (utils.frame_number(m.filename), utils.natural_key(m.filename)))
    frames = []
    for m in members:
        rgb = decode_upload(archive.read(m), f"{m.filename} in {name}")
        check_frame_size(rgb.shape, f"frame {m.filename}", limits)
        frames.append(rgb)
    return Shot(folder, [PurePosixPath(m.filename).stem for m in members], frames)


def decode_upload(data: bytes, what: str) -> np.ndarray:
    """Encoded image bytes -> uint8 RGB; an image with transparency is refused rather than
    flattened onto black (a keyframe's transparent paint would become black colour)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            if alpha and image.convert("RGBA").getextrema()[3][0] < 255:
                raise UserError(f"{what} has transparent pixels (an alpha channel): export it without "
                                "transparency, flattened onto its background")
    except (OSError, UnidentifiedImageError, ValueError):
        pass  # decode_rgb gives the one-line reason
    return utils.decode_rgb(data, what)


def open_server_folder(folder: str, allow_dir: str | None, limits: Limits) -> list[Shot]:
    """A frame folder on the server (a shot, or a folder of shot folders), only under
    ``allow_dir``: every folder and frame is resolved, symbolic links included, and refused when
    it leads outside."""
    if not allow_dir:
        raise UserError("this app opens no server folders (start it with --allow_dir DIR to allow some)")
    root = Path(allow_dir).resolve()
    wanted = (root / folder).resolve() if not Path(folder).is_absolute() else Path(folder).resolve()
    if not within(wanted, root):
        raise UserError(f"{folder} is outside the folder this app may read ({root})")
    if not wanted.is_dir():
        raise UserError(f"{folder} is not a folder under {root}")
    shots = []
    for shot_dir in utils.find_shot_dirs(wanted, report=False):
        frames = utils.list_frames(shot_dir)
        outside = [p for p in [shot_dir, *frames] if not within(p.resolve(), root)]
        if outside:
            raise UserError(f"{outside[0]} leads outside the folder this app may read ({root})")
        if sum(len(s.frames) for s in shots) + len(frames) > limits.max_frames:
            raise UserError(f"{folder} holds more than {limits.max_frames} frames (--max_frames)")
        rgbs = [decode_upload(p.read_bytes(), str(p.relative_to(wanted))) for p in frames]
        for p, rgb in zip(frames, rgbs):
            check_frame_size(rgb.shape, f"frame {p.name}", limits)
        shots.append(Shot(shot_dir.relative_to(wanted).as_posix(), [p.stem for p in frames], rgbs))
    return shots


def within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# ----------------------------------------------------------------------------- keyframes
def add_keyframe(session: Session, index: int, data: bytes, what: str = "the keyframe") -> None:
    """Frame ``index`` of the shot on show gets a coloured version (encoded image bytes) of its
    own size."""
    shot = session.shot
    check_index(shot, index)
    key = decode_upload(data, what)
    frame = shot.frames[index]
    if key.shape != frame.shape:
        raise UserError(f"{what} is {key.shape[1]}x{key.shape[0]} but frame {index} ({shot.names[index]}) is "
                        f"{frame.shape[1]}x{frame.shape[0]}: a keyframe is a coloured version of its frame")
    session.shot_keyframes()[index] = key
    session.result = None


def use_own_colours(session: Session, index: int) -> None:
    """Colour input (a test clip): the frame itself becomes its keyframe."""
    check_index(session.shot, index)
    session.shot_keyframes()[index] = session.shot.frames[index].copy()
    session.result = None


def remove_keyframe(session: Session, index: int) -> None:
    if session.shot_keyframes().pop(index, None) is None:
        raise UserError(f"frame {index} is not a keyframe")
    session.result = None


def check_index(shot: Shot, index) -> None:
    if index is None or not float(index).is_integer() or not 0 <= int(index) < len(shot.frames):
        raise UserError(f"frame {index} does not exist: the shot has frames 0 to {len(shot.frames) - 1}")


# ----------------------------------------------------------------------------- colouring
@dataclass
class Model:
    """The generator, loaded once; every job gets a Colorizer with its own options."""
    G: torch.nn.Module
    cfg: object
    device: torch.device
    options: colorize.Options      # the checkpoint's image size and line art, test.py's defaults
    checkpoint: str                # where it came from (metrics.json says)

    @classmethod
    def load(cls, checkpoint, device="auto") -> "Model":
        c = colorize.Colorizer.from_checkpoint(checkpoint, device)
        return cls(c.G, c.cfg, c.device, c.options, str(checkpoint))

    def colorizer(self, input_type: str = "colour", blend: str = colorize.DEFAULT_BLEND, regions: bool = False,
                  views: int = 1) -> colorize.Colorizer:
        options = dataclasses.replace(self.options, input_type=input_type, blend=blend, regions=regions,
                                      views=int(views))
        return colorize.Colorizer(self.G, self.cfg, self.device, options)


@dataclass
class Result:
    """One colouring run of one shot, its files in the tab's folder."""
    folder: Path
    frames: list[np.ndarray]          # uint8 (S, S, 3), what test.py writes
    lines: list[np.ndarray]           # uint8 (S, S) line art the network saw
    truths: list[np.ndarray] | None   # uint8 (S, S, 3), colour input only
    video: Path                       # line art | result (| truth), H.264
    result_video: Path                # the result alone, H.264
    zip: Path                         # PNGs named as test.py names them (and metrics.json)
    metrics: dict | None              # {row name: summarize(...)}: model, copy keyframe, warped keyframe
    fps: float                        # colouring speed


def colour(session: Session, model: Model, input_type: str = "colour", blend: str = colorize.DEFAULT_BLEND,
           progress=None, regions: bool = False, views: int = 1) -> Result:
    """Colour the shot on show through the library as test.py does; ``progress(done, total,
    fps)`` after each frame."""
    shot, keys = session.shot, session.shot_keyframes()
    colorizer = model.colorizer(input_type, blend, regions, views)
    frames = [colorizer.frame(rgb, shot.key, name) for rgb, name in zip(shot.frames, shot.names)]
    keyframes = colorize.ShotKeyframes(None, {shot.names[i]: rgb for i, rgb in keys.items()})
    results, t0 = [], time.perf_counter()
    for _, result, _ in colorizer.stream(frames, lambda _: keyframes):
        results.append(result)
        if progress is not None:
            progress(len(results), len(frames), len(results) / max(time.perf_counter() - t0, 1e-9))
    speed = len(results) / max(time.perf_counter() - t0, 1e-9)
    session.jobs += 1
    folder = session.work / f"job_{session.jobs:03d}"
    folder.mkdir(parents=True)
    truths = [f.target for f in frames] if input_type == "colour" else None
    table = (shot_metrics(results, frames, keys, colorizer.options.line_art, colorizer.still_window,
                          colorizer.options.blend, colorizer.keyframe_resample, colorizer.flow_scale)
             if truths else None)
    if table:
        write_metrics(folder / "metrics.json", shot, table["model"], model.checkpoint, colorizer, keys)
    result = write_result(folder, shot, results, [f.line for f in frames], truths, speed)
    result.metrics = table
    session.result = result
    return result


def write_result(folder: Path, shot: Shot, results, lines, truths, speed: float) -> Result:
    """The run's files: PNGs zipped as test.py names them (with metrics.json, when written), the
    result MP4, the comparison MP4."""
    import test as colorize_cli

    zip_path = folder / "frames.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for name, image in zip(shot.names, results):
            archive.writestr((PurePosixPath(shot.key) / f"{name}.png").as_posix(), utils.encode_image(image))
        if (folder / "metrics.json").is_file():
            archive.write(folder / "metrics.json", "metrics.json")
    panels = [np.concatenate([np.repeat(line[..., None], 3, 2), r] + ([t] if truths else []), axis=1)
              for line, r, t in zip(lines, results, truths or results)]
    videos = {}
    for what, images in (("side_by_side.mp4", panels), ("result.mp4", results)):
        h, w = images[0].shape[:2]
        writer = colorize_cli.open_video_writer(folder / what, (w + w % 2, h + h % 2), shot.fps)
        for image in images:
            writer.send(np.ascontiguousarray(np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")))
        writer.close()
        videos[what] = folder / what
    return Result(folder, results, lines, truths, videos["side_by_side.mp4"], videos["result.mp4"], zip_path,
                  None, speed)


def shot_metrics(results, frames, keys: dict, line_mode: str, still_window: int = 0,
                 blend: str = colorize.DEFAULT_BLEND, resample: str = "bilinear", scale: int = 1) -> dict:
    """metrics.json's summary of the shot for the model and, with keyframes, the answers that
    need no model: each frame's nearest keyframe copied, and warped onto it by the line-art flow
    (with ``still_window`` and ``scale``: the model's flow, computed on the frames' flow arts when
    ``scale`` > 1, and ``resample``: its keyframe resampling); with two
    keyframes or more, also the keyframes
    warped onto the frames their chains reach and joined as the model's chains are (``blend``,
    ``colorize.warped_keyframes``)."""
    rows = {"model": results}
    if keys:
        size = results[0].shape[0]
        small = {k: utils.resize(rgb, size) for k, rgb in keys.items()}
        nearest = [min(small, key=lambda k: (abs(k - t), k)) for t in range(len(frames))]
        rows["copy keyframe (no model)"] = [small[k] for k in nearest]
        arts = [f.art for f in frames]  # made with each frame (colorize.Colorizer.frame)
        rows["warped keyframe (no model)"] = [warp_keyframe(small[k], arts[k], arts[t], line_mode, still_window,
                                                            resample, scale) for t, k in enumerate(nearest)]
        if len(keys) > 1:
            rows[f"keyframes warped, joined {blend} (no model)"] = colorize.warped_keyframes(
                [f.line for f in frames], small, blend, line_mode, still_window, resample, scale, arts)
    table = {}
    for row, outputs in rows.items():
        video = metrics_lib.VideoMetrics()
        for out, frame in zip(outputs, frames):
            video.update(out, frame.target)
        table[row] = video.result()
    return table


def warp_keyframe(key: np.ndarray, key_line: np.ndarray, line: np.ndarray, line_mode: str,
                  still_window: int = 0, resample: str = "bilinear", scale: int = 1) -> np.ndarray:
    """The keyframe (uint8 (S, S, 3)) brought onto a frame by the flow between their line arts
    (their flow arts, ``correspond.flow_art``, when ``scale`` > 1)."""
    return correspond.warp_frame(key, line, key_line, line_mode, still_window, resample, scale)


def write_metrics(path: Path, shot: Shot, model_row: dict, checkpoint: str, colorizer, keys: dict) -> None:
    """metrics.json as test.py writes it, for this one shot."""
    per_shot = {shot.key: model_row}
    note = {"checkpoint": checkpoint, "generator": colorizer.cfg.generator, "image_size": colorizer.options.image_size,
            "line_art": colorizer.options.line_art, "keyframes": [shot.names[i] for i in sorted(keys)],
            "regions": colorizer.options.regions, "views": colorizer.options.views,
            "still_window": colorizer.still_window, "keyframe_resample": colorizer.keyframe_resample,
            "flow_scale": colorizer.flow_scale, "source_split": colorizer.source_split}
    metrics_lib.write_metrics_json(path, per_shot, metrics_lib.summarize(per_shot), extra=note)


def metrics_rows(table: dict) -> tuple[list[str], list[list]]:
    """(headers, rows) of the metrics table shown in the page, in format_table's columns."""
    headers = ["", *(title for _, title, _ in metrics_lib._COLUMNS)]
    rows = [[name] + [fmt.format(r[key]) if r.get(key) is not None else "-" for key, _, fmt in metrics_lib._COLUMNS]
            for name, r in table.items()]
    return headers, rows


# ----------------------------------------------------------------------------- the page
@dataclass
class Context:
    """What every callback of the page shares: the model and the app's rules."""
    model: Model
    work: Path                 # the app's working folder (each tab gets a folder inside)
    limits: Limits
    allow_dir: str | None


def page_errors(fn):
    """A callback's UserError or OSError becomes one message in the page; anything else one line
    too (its traceback goes to the server's log only). The app keeps serving either way."""
    import functools
    import traceback

    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from None
        except OSError as err:
            raise gr.Error(f"cannot read or write: {err.strerror or err}", print_exception=False) from None
        except gr.Error:
            raise
        except Exception as err:
            traceback.print_exc()
            raise gr.Error(f"unexpected error ({type(err).__name__}: {str(err)[:200]}); the app keeps serving",
                           print_exception=False) from None
    return wrapper


def filmstrip(session: Session) -> list[tuple[np.ndarray, str]]:
    """Thumbnails of the shot on show, captioned with their numbers; a keyframe shows its colours."""
    keys = session.shot_keyframes()
    return [(FrameExtraction.resize_longest(keys.get(i, rgb), 160), f"{i}: {name}" + (" · keyframe" if i in keys else ""))
            for i, (rgb, name) in enumerate(zip(session.shot.frames, session.shot.names))]


def status_text(session: Session) -> str:
    shot, keys = session.shot, session.shot_keyframes()
    h, w = shot.frames[0].shape[:2]
    named = ", ".join(f"{i} ({shot.names[i]})" for i in sorted(keys)) or "none"
    return (f"Shot **{shot.key}** ({session.current + 1} of {len(session.shots)}): {len(shot.frames)} frames, "
            f"{w}x{h}. Keyframes: {named}.")


def compare_panel(result: Result, index) -> np.ndarray | None:
    """Line art | result | truth (when known) of one frame."""
    if result is None:
        return None
    i = min(max(int(index or 0), 0), len(result.frames) - 1)
    panels = [np.repeat(result.lines[i][..., None], 3, 2), result.frames[i]]
    panel = np.concatenate(panels + ([result.truths[i]] if result.truths else []), axis=1)
    zoom = max(1, COMPARE_HEIGHT // panel.shape[0])  # whole pixels, so that nothing is smoothed away
    return np.repeat(np.repeat(panel, zoom, 0), zoom, 1)


def build_page(model: Model, work: Path, limits: Limits, allow_dir: str | None, checkpoint: Path):
    """The Gradio Blocks page; every callback is one of the functions above, wrapped."""
    import gradio as gr

    ctx = Context(model, work, limits, allow_dir)
    with gr.Blocks(title="TCVC colouring") as blocks:
        gr.Markdown(f"## TCVC: colour a shot from keyframes\nModel: `{checkpoint.name}` at "
                    f"{model.options.image_size}x{model.options.image_size}. Uploads stay on this server, "
                    "in a folder removed when the app stops.")
        state = gr.State(None, delete_callback=lambda s: s and shutil.rmtree(s.work, ignore_errors=True))
        ui = page_inputs(gr, allow_dir)
        out = page_outputs(gr)
        wire(gr, ctx, state, ui, out)
    return blocks


def page_inputs(gr, allow_dir) -> dict:
    ui = {}
    with gr.Row():
        ui["upload"] = gr.File(label="1. Open a shot: a video or a zip of frames", elem_id="upload",
                               file_types=[*utils.VIDEO_EXTS, *ZIP_EXTS])
        with gr.Column(visible=bool(allow_dir)):
            ui["folder"] = gr.Textbox(label=f"or a frame folder under {allow_dir}", elem_id="folder")
            ui["open_folder"] = gr.Button("Open folder", elem_id="open_folder")
    ui["shot"] = gr.Dropdown(label="Shot", choices=[], elem_id="shot", interactive=True)
    ui["status"] = gr.Markdown("Open a shot to begin.", elem_id="status")
    ui["strip"] = gr.Gallery(label="Frames (click one to pick it)", columns=10, height=230, allow_preview=False,
                             elem_id="filmstrip", format="png")
    with gr.Row():
        ui["frame"] = gr.Number(label="2. Keyframes: frame", value=0, precision=0, minimum=0, elem_id="frame")
        ui["key_file"] = gr.File(label="its coloured version (PNG, no transparency)", elem_id="key_file",
                                 file_types=list(utils.IMAGE_EXTS))
        with gr.Column():
            ui["add_key"] = gr.Button("Use the uploaded colours", elem_id="add_key")
            ui["own"] = gr.Button("Use this frame's own colours", elem_id="own_colours")
            ui["remove"] = gr.Button("Remove this keyframe", elem_id="remove_key")
    with gr.Row():
        ui["input_type"] = gr.Radio(list(colorize.INPUT_TYPES), value="colour", label="Input (as test.py --input_type)")
        ui["blend"] = gr.Radio(list(colorize.BLENDS), value=colorize.DEFAULT_BLEND,
                                label="Between keyframes (test.py --blend)")
        ui["regions"] = gr.Checkbox(False, label="Flat regions: one colour per line-art region (test.py --regions)")
        ui["views"] = gr.Radio(sorted(colorize.VIEWS), value=1, elem_id="views",
                               label="Views: also colour the mirrored frames and average "
                                     "(test.py --views; N times the time)")
        ui["colour"] = gr.Button("3. Colour", variant="primary", elem_id="colour")
    return ui


def page_outputs(gr) -> dict:
    out = {}
    with gr.Row():
        out["video"] = gr.Video(label="line art | result | truth", elem_id="result_video", interactive=False)
        with gr.Column():
            out["slider"] = gr.Slider(0, 1, value=0, step=1, label="Compare frame", elem_id="compare_slider")
            out["compare"] = gr.Image(label="line art | result | truth", elem_id="compare", interactive=False)
    out["speed"] = gr.Markdown("", elem_id="speed")
    with gr.Row():
        out["zip"] = gr.File(label="4. Export: PNG frames (named as test.py names them)", elem_id="zip_out")
        out["mp4"] = gr.File(label="MP4", elem_id="mp4_out")
    out["metrics"] = gr.Dataframe(label="Metrics (metrics.json), next to the answers that need no model",
                                  elem_id="metrics", interactive=False)
    return out


def wire(gr, ctx: Context, state, ui: dict, out: dict) -> None:
    """The page's events. Colouring runs one job at a time (a queue shows each tab its place)."""
    view = [state, ui["shot"], ui["strip"], ui["status"], ui["frame"]]
    cleared = [out["video"], out["compare"], out["zip"], out["mp4"], out["metrics"], out["speed"]]

    def shown(session, frame=0):
        choices = [(f"{s.key} ({len(s.frames)} frames)", i) for i, s in enumerate(session.shots)]
        return (session, gr.update(choices=choices, value=session.current), filmstrip(session),
                status_text(session), gr.update(value=frame, maximum=len(session.shot.frames) - 1))

    def opened(session, shots):
        session = session or new_session(ctx.work)
        session.shots, session.current, session.keyframes, session.result = shots, 0, {}, None
        return (*shown(session), None, None, None, None, None, "")

    @page_errors
    def on_upload(session, path):
        if not path:
            raise UserError("no file arrived: upload again")
        return opened(session, open_upload(path, ctx.limits))

    @page_errors
    def on_folder(session, folder):
        return opened(session, open_server_folder(folder, ctx.allow_dir, ctx.limits))

    @page_errors
    def on_shot(session, index):
        session.current, session.result = int(index), None
        return (*shown(session), None, None, None, None, None, "")

    def on_select(evt):
        return evt.index
    on_select.__annotations__ = {"evt": gr.SelectData}  # a real class: Gradio reads it to pass the click

    @page_errors
    def on_key(session, frame, path, input_type, action):
        if session is None:
            raise UserError("open a shot first (upload a video or a zip of frames)")
        if action == "add":
            if not path:
                raise UserError("upload the frame's coloured version first")
            check_upload_size(Path(path), ctx.limits)
            add_keyframe(session, int(frame), Path(path).read_bytes(), f"keyframe {Path(path).name}")
        elif action == "own":
            if input_type != "colour":
                raise UserError(f"the input is {input_type}, not colour: upload the frame's coloured version")
            use_own_colours(session, frame)
        else:
            remove_keyframe(session, int(frame))
        return shown(session, frame)

    @page_errors
    def on_colour(session, input_type, blend, regions, views, progress=gr.Progress()):
        if session is None:
            raise UserError("open a shot first (upload a video or a zip of frames)")
        tell = lambda done, total, fps: progress((done, total), desc=f"{fps:.1f} frames/s", unit="frames")  # noqa: E731
        result = colour(session, ctx.model, input_type, blend, tell, regions, views)
        table = gr.update(value=None)
        if result.metrics:
            headers, rows = metrics_rows(result.metrics)
            table = gr.update(value=rows, headers=headers)
        return (str(result.video), gr.update(maximum=len(result.frames) - 1, value=0), compare_panel(result, 0),
                str(result.zip), str(result.result_video), table,
                f"Coloured {len(result.frames)} frames at {result.fps:.1f} frames/s.")

    @page_errors
    def on_slide(session, index):
        return compare_panel(session.result if session else None, index)

    ui["upload"].upload(on_upload, [state, ui["upload"]], view + cleared, concurrency_limit=2)
    ui["open_folder"].click(on_folder, [state, ui["folder"]], view + cleared, concurrency_limit=2)
    ui["shot"].input(on_shot, [state, ui["shot"]], view + cleared)
    ui["strip"].select(on_select, None, ui["frame"])
    for action, button in (("add", ui["add_key"]), ("own", ui["own"]), ("remove", ui["remove"])):
        button.click(lambda s, f, p, t, a=action: on_key(s, f, p, t, a),
                     [state, ui["frame"], ui["key_file"], ui["input_type"]], view)
    ui["colour"].click(on_colour, [state, ui["input_type"], ui["blend"], ui["regions"], ui["views"]],
                       [out["video"], out["slider"], out["compare"], out["zip"], out["mp4"], out["metrics"],
                        out["speed"]], concurrency_limit=1, concurrency_id="colour")
    out["slider"].change(on_slide, [state, out["slider"]], out["compare"])


def launch(blocks, host: str, port: int, auth, limits: Limits, work: Path) -> str:
    """Serve without blocking -> the local address. System fonts only: the page fetches nothing
    from the internet."""
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(server_name=host, server_port=port, auth=auth, max_file_size=limits.max_bytes,
                  prevent_thread_lock=True, quiet=True, share=False, inbrowser=False, ssr_mode=False,
                  theme=theme, footer_links=[])
    return blocks.local_url


# ----------------------------------------------------------------------------- start-up
def resolve_checkpoint(checkpoint: str | None) -> Path:
    """--checkpoint, else make demo's model (said on stdout), else one line on how to get one."""
    if checkpoint:
        return Path(checkpoint)
    if DEMO_CHECKPOINT.is_file():
        print(f"no --checkpoint given: using make demo's model {DEMO_CHECKPOINT}")
        return DEMO_CHECKPOINT
    raise UserError("no --checkpoint given and no demo model: train one (python train.py ..., it writes "
                    "RUN/generator.pt) or run `make demo`, then python app.py --checkpoint RUN/generator.pt")


def resolve_auth(auth: str | None, auth_file: str | None) -> tuple[str, str] | None:
    if auth and auth_file:
        raise UserError("give --auth or --auth_file, not both")
    if auth_file:
        try:
            auth = Path(auth_file).read_text().strip()
        except OSError as err:
            raise UserError(f"cannot read --auth_file {auth_file}: {err.strerror or err}") from None
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth needs USER:PASSWORD, both non-empty")
    return user, password


def exposure_warning(host: str, auth) -> str | None:
    """A warning when anyone on the network could use the app (and read what others upload)."""
    if host in LOCALHOSTS or auth is not None:
        return None
    return (f"warning: listening on {host} without --auth: anyone who can reach this port can use the app; "
            "give --auth_file, or keep the default 127.0.0.1 and use an SSH tunnel (see README)")


def limits_from_args(args) -> Limits:
    for flag in ("max_upload_mb", "max_frame_side", "max_frames"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag} must be positive, got {getattr(args, flag)}")
    return Limits(int(args.max_upload_mb * 2**20), args.max_frame_side, args.max_frames)


def check_allow_dir(allow_dir: str | None) -> None:
    if allow_dir and not Path(allow_dir).is_dir():
        raise UserError(f"--allow_dir {allow_dir} is not a folder")


def start(args, work: Path):
    """Load the model, build the page and start serving (without blocking) -> (blocks, url)."""
    checkpoint = resolve_checkpoint(args.checkpoint)
    auth = resolve_auth(args.auth, args.auth_file)
    limits = limits_from_args(args)
    check_allow_dir(args.allow_dir)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1 to 65535, got {args.port}")
    model = Model.load(checkpoint, args.device)
    warning = exposure_warning(args.host, auth)
    if warning:
        print(warning, file=sys.stderr)
    blocks = build_page(model, work, limits, args.allow_dir, checkpoint)
    url = launch(blocks, args.host, args.port, auth, limits, work)
    return blocks, url


def serve(args, work: Path):
    """Start the app with ``work`` as its working folder -> (blocks, local address). One app per
    process: Gradio reads its upload folder from the environment."""
    os.environ["GRADIO_TEMP_DIR"] = str(work / "uploads")  # Gradio stores uploads here, inside our folder
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"       # and reports nothing to anyone
    return start(args, work)


def interrupt(*_):
    raise KeyboardInterrupt


def main(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="tcvc-app-"))
    previous = signal.signal(signal.SIGTERM, interrupt)  # `kill` stops it as Ctrl-C does: folder removed
    blocks = None
    try:
        blocks, url = serve(args, work)
        print(f"TCVC app on {url} (working folder {work}, removed at exit); Ctrl-C stops it", flush=True)
        blocks.block_thread()
    finally:
        if blocks is not None:
            blocks.close()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
