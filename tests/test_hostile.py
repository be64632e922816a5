"""Hostile cases: what a user gets when they feed the tools something wrong or dangerous.

Every case runs a tool's real command line (``utils.run_cli``) inside a sandbox that holds a
shot of frames, a video, a checkpoint, a keyframe and a file of the user's own. A refused
case must give exit code 2 and exactly one line on stderr containing the expected words, and
must leave every file that was there before exactly as it was. To add a case, add a row to
``REFUSED`` (or a test below for a case that must succeed): the placeholders in the arguments
are the sandbox's paths (see ``sandbox``).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import FrameExtraction
import app
import demo
import models
import train
import utils

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import test as colorize_cli  # noqa: E402

TOOLS = {"app.py": app, "test.py": colorize_cli, "train.py": train, "FrameExtraction.py": FrameExtraction, "demo.py": demo}
# A location nobody may write to, root included (sysfs refuses new entries).
READ_ONLY = "/sys/tcvc-hostile-test"
# tqdm's rate: "12.3frame/s", "?frame/s", or on a slow (busy) machine "1.87s/frame"
PROGRESS_BAR = re.compile(r"(\?|[0-9.]+)(frame|step|it)/s|[0-9.]+s/(frame|step|it)\b")


@dataclass
class Case:
    what: str          # what the user does
    tool: str          # which command
    argv: list         # its arguments; {name} is a sandbox path
    expect: str        # words the one-line error must contain

    def __str__(self):
        return self.what


TRAIN = ["--image_size", "32", "--ngf", "8", "--ndf", "8", "--batch_size", "2", "--max_steps", "1",
         "--vgg_weights", "random", "--device", "cpu", "--num_workers", "0"]
COLOUR = ["--checkpoint", "{ckpt}", "--device", "cpu"]

REFUSED = [
    # ---- test.py: what --overwrite and --video may replace
    Case("--overwrite with --output the parent of --input", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{data}", "--overwrite"], "holds the input"),
    Case("--overwrite with --output the folder holding the --input video", "test.py",
         COLOUR + ["--input", "{clip}", "--output", "{clips}", "--overwrite"], "holds the input"),
    Case("--overwrite with --output the folder holding the checkpoint", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{ckpts}", "--overwrite"], "holds the checkpoint"),
    Case("--overwrite with --output a folder of the user's that test.py did not write", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{mine}", "--overwrite"], "was not written by test.py"),
    Case("--output an existing folder, without --overwrite", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{mine}"], "already exists"),
    Case("--output an existing file", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{note}", "--overwrite"], "existing file"),
    Case("--video the checkpoint", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--video", "{ckpt}", "--overwrite"], "checkpoint"),
    Case("--video an input frame", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--video", "{frame}"], "input"),
    Case("--video an existing file of the user's", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--video", "{note}", "--overwrite"],
         "already exists"),
    Case("--video an existing folder", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--video", "{mine}"], "existing folder"),
    # ---- test.py: impossible numbers and foreign files
    Case("--image_size -64", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--image_size", "-64"],
         "positive"),
    Case("--image_size 0", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--image_size", "0"],
         "positive"),
    Case("--image_size 40 for a generator that needs multiples of 16", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--image_size", "40"], "divisible by 16"),
    Case("--fps -5", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--fps", "-5"], "--fps"),
    Case("--fps nan", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--fps", "nan"], "--fps"),
    Case("--amp bf16 on the CPU", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--amp", "bf16"],
         "CUDA"),
    Case("--checkpoint a folder", "test.py",
         ["--checkpoint", "{ckpts}", "--input", "{shot}", "--output", "{new}"], "is a folder"),
    Case("a checkpoint whose image_size is a string", "test.py",
         ["--checkpoint", "{ckpt_size_str}", "--input", "{shot}", "--output", "{new}"], "impossible image_size"),
    Case("a checkpoint whose model_config is a string", "test.py",
         ["--checkpoint", "{ckpt_cfg_str}", "--input", "{shot}", "--output", "{new}"], "not a dict"),
    Case("--first_keyframe a folder", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--first_keyframe", "{mine}"], "is a folder"),
    Case("a corrupt frame", "test.py", COLOUR + ["--input", "{broken}", "--output", "{new}"], "frame_000002.png"),
    Case("an empty folder", "test.py", COLOUR + ["--input", "{empty}", "--output", "{new}"], "holds no image"),
    Case("a text file named .mp4", "test.py", COLOUR + ["--input", "{fake_mp4}", "--output", "{new}"],
         "fake.mp4"),
    Case("an output folder on a read-only location", "test.py",
         COLOUR + ["--input", "{shot}", "--output", READ_ONLY + "/out"], READ_ONLY),
    # ---- test.py: --overwrite removes only what that earlier run wrote (issue 20)
    Case("--overwrite onto an earlier output that now holds a training run", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{prev_run}", "--overwrite"], "did not write"),
    Case("--overwrite onto an earlier output with a note of the user's put in it", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{prev_note}", "--overwrite"], "did not write"),
    Case("--overwrite onto an earlier output whose frame was replaced by the user", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{prev_edit}", "--overwrite"], "changed since"),
    # ---- test.py: clear errors before any work (issue 20)
    Case("--video without .mp4", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--video",
                                                      "{new2}.avi"], ".mp4"),
    Case("--video without an extension", "test.py", COLOUR + ["--input", "{shot}", "--output", "{new}", "--video",
                                                              "{new2}"], ".mp4"),
    Case("two frames with one number in a shot", "test.py", COLOUR + ["--input", "{dup}", "--output", "{new}"],
         "two frames numbered 1"),
    Case("a frame that is a dangling symbolic link", "test.py",
         COLOUR + ["--input", "{dangling}", "--output", "{new}"], "symbolic link to a missing file"),
    Case("a shot named side_by_side with --side_by_side", "test.py",
         COLOUR + ["--input", "{sbs_data}", "--output", "{new}", "--side_by_side"], "side_by_side"),
    Case("two shots whose names differ only in case", "test.py",
         COLOUR + ["--input", "{case_data}", "--output", "{new}"], "differ only in case"),
    Case("a 40000x40000 PNG of a few bytes", "test.py", COLOUR + ["--input", "{huge}", "--output", "{new}"],
         "40000x40000"),
    Case("a checkpoint whose weights are NaN", "test.py",
         ["--checkpoint", "{ckpt_nan}", "--device", "cpu", "--input", "{shot}", "--output", "{new}"], "non-finite"),
    Case("--image_size too big for the memory", "test.py",
         COLOUR + ["--input", "{shot}", "--output", "{new}", "--image_size", "65536"], "GiB of memory"),
    # ---- train.py
    Case("a run folder that holds a run, without --resume", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{run}"], "already holds a training run"),
    Case("--resume with an --image_size the generator cannot take", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{run}", "--resume", "auto", "--image_size", "100",
                  "--max_steps", "3"], "divisible by 16"),
    Case("--save_every 0", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--save_every", "0"],
         "--save_every"),
    Case("--log_every 0", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--log_every", "0"],
         "--log_every"),
    Case("--val_frames 0", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--val_frames", "0"],
         "--val_frames"),
    Case("--num_workers -1", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--num_workers", "-1"],
         "--num_workers"),
    Case("--lr_g -1", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--lr_g", "-1"], "--lr_g"),
    Case("--lr_match 0", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--lr_match", "0"],
         "--lr_match"),
    Case("--match_warmup -1", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--match_warmup", "-1"], "--match_warmup"),
    Case("--self_reference_prob 2", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--self_reference_prob", "2"], "--self_reference_prob"),
    Case("--prev_drift_prob -0.5", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--prev_drift_prob", "-0.5"], "--prev_drift_prob"),
    Case("--seed -1", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--seed", "-1"], "--seed"),
    Case("--max_steps 0", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--max_steps", "0"],
         "--max_steps"),
    Case("--epochs 0", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--epochs", "0"], "--epochs"),
    Case("--line_root without --line_art given", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--line_root", "{data}"], "--line_art given"),
    Case("a corrupt frame read by 2 DataLoader workers", "train.py",
         TRAIN + ["--data", "{broken}", "--run_dir", "{new}", "--num_workers", "2", "--val_fraction", "0"],
         "frame_000002.png"),
    Case("a run folder on a read-only location", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", READ_ONLY + "/run", "--val_fraction", "0"], READ_ONLY),
    # ---- train.py: never into the user's data (issue 20)
    Case("--run_dir the data folder", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{data}"],
         "training data"),
    Case("--run_dir a shot folder of the data", "train.py", TRAIN + ["--data", "{data}", "--run_dir", "{shot}"],
         "training data"),
    Case("--run_dir inside a shot folder", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{shot}/run"], "training data"),
    Case("--logfile an input frame", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--logfile", "{frame}"], "not a train.py log"),
    Case("--logfile a note of the user's", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--logfile", "{note}"], "not a train.py log"),
    Case("--logfile in a folder that does not exist", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--logfile", "{new2}/log.txt"], "does not exist"),
    Case("--image_size too big for the memory", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--image_size", "65536"], "GiB of memory"),
    Case("--init_generator with NaN weights", "train.py",
         TRAIN + ["--data", "{data}", "--run_dir", "{new}", "--checkpoint_path_G", "{ckpt_nan}"], "non-finite"),
    # ---- FrameExtraction.py
    Case("a video of which no frame is kept", "FrameExtraction.py",
         ["--video_path", "{black_clip}", "--output_path", "{new}", "--drop_blank"], "no frame"),
    Case("a text file named .mp4", "FrameExtraction.py",
         ["--video_path", "{fake_mp4}", "--output_path", "{new}"], "fake.mp4"),
    Case("an output folder on a read-only location", "FrameExtraction.py",
         ["--video_path", "{clip}", "--output_path", READ_ONLY + "/frames"], READ_ONLY),
    Case("a .partial folder beside the output that is not FrameExtraction's", "FrameExtraction.py",
         ["--video_path", "{clip}", "--output_path", "{foreign_partial_dest}"], "was not left by FrameExtraction"),
    # ---- FrameExtraction.py: --overwrite removes only its own earlier frames (issue 20)
    Case("--overwrite where shot_0001/ holds the input video and a note", "FrameExtraction.py",
         ["--video_path", "{fe_video}", "--output_path", "{fe_foreign}", "--overwrite"], "holds the input video"),
    Case("--overwrite where shot_0001/ holds a video and a note, no marker", "FrameExtraction.py",
         ["--video_path", "{clip}", "--output_path", "{fe_foreign}", "--overwrite"], "did not write"),
    Case("--overwrite onto an earlier extraction with a note put in a shot folder", "FrameExtraction.py",
         ["--video_path", "{clip}", "--output_path", "{fe_note}", "--overwrite"], "did not write"),
    # ---- app.py: refused before it listens
    Case("app: --checkpoint a folder", "app.py", ["--checkpoint", "{ckpts}"], "is a folder"),
    Case("app: --checkpoint the user's notes", "app.py", ["--checkpoint", "{note}"], "cannot read checkpoint"),
    Case("app: --auth without a password", "app.py", ["--checkpoint", "{ckpt}", "--auth", "ana"], "USER:PASSWORD"),
    Case("app: --allow_dir a file", "app.py", ["--checkpoint", "{ckpt}", "--allow_dir", "{note}"], "not a folder"),
    Case("app: --max_upload_mb 0", "app.py", ["--checkpoint", "{ckpt}", "--max_upload_mb", "0"], "--max_upload_mb"),
    Case("app: --port 70000", "app.py", ["--checkpoint", "{ckpt}", "--port", "70000"], "--port"),
    # ---- demo.py
    Case("--test_start past the end of the clip", "demo.py",
         ["--video", "{clip}", "--test_start", "104", "--work", "{new}", "--out", "{new2}"], "--test_start 104"),
    Case("--out a folder of the user's", "demo.py",
         ["--video", "{clip}", "--train_end", "4", "--test_start", "6", "--work", "{new}", "--out", "{mine}"],
         "did not write"),
]


# ----------------------------------------------------------------------------- the sandbox
def write_clip(path: Path, n=10, black=False, size=48):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (size, size))
    for i in range(n):
        grey = (40 + 15 * i) % 256
        frame = np.zeros((size, size, 3), np.uint8) if black else np.full((size, size, 3), grey, np.uint8)
        if not black:
            frame[10:30, 5 + 2 * i:25 + 2 * i] = (200, 60, 30)
        writer.write(frame)
    writer.release()
    return path


def save_export(path: Path, **changes):
    cfg = models.ModelConfig(ngf=8)
    export = models.generator_export(models.build_generator(cfg), cfg, 32, "canny") | changes
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(export, path)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The sandbox, built once (it trains a run and colours a shot); each case gets a copy."""
    from conftest import make_frame
    return build_sandbox(tmp_path_factory.mktemp("template"), make_frame)


@pytest.fixture
def sandbox(template, tmp_path):
    root = tmp_path / "box"
    shutil.copytree(template["root"], root, symlinks=True)
    return {k: root / Path(v).relative_to(template["root"]) for k, v in template.items()}


def build_sandbox(tmp_path, frame_factory):
    p = {"root": tmp_path, "data": tmp_path / "data", "shot": tmp_path / "data" / "shot_a",
         "ckpts": tmp_path / "ckpts", "clips": tmp_path / "clips", "mine": tmp_path / "mine",
         "new": tmp_path / "new", "new2": tmp_path / "new2", "run": tmp_path / "run",
         "broken": tmp_path / "broken", "empty": tmp_path / "empty", "note": tmp_path / "mine" / "notes.txt"}
    for i in range(6):
        utils.write_image(p["shot"] / f"frame_{i:06d}.png", frame_factory(i, 40, 40))
        utils.write_image(p["broken"] / f"frame_{i:06d}.png", frame_factory(i, 40, 40))
    (p["broken"] / "frame_000002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    p["frame"] = p["shot"] / "frame_000001.png"
    p["empty"].mkdir()
    p["mine"].mkdir()
    p["note"].write_text("the user's own notes")
    p["ckpt"] = save_export(p["ckpts"] / "gen.pt")
    p["ckpt_size_str"] = save_export(p["ckpts"] / "size_str.pt", image_size="big")
    p["ckpt_cfg_str"] = save_export(p["ckpts"] / "cfg_str.pt", model_config="unet")
    p["clips"].mkdir()
    p["clip"] = write_clip(p["clips"] / "clip.avi")
    p["black_clip"] = write_clip(p["clips"] / "black.avi", black=True)
    p["fake_mp4"] = p["clips"] / "fake.mp4"
    p["fake_mp4"].write_text("not a video")
    p["foreign_partial_dest"] = tmp_path / "frames_out"
    (tmp_path / ".frames_out.partial").mkdir()
    (tmp_path / ".frames_out.partial" / "keep.txt").write_text("somebody's")
    # a finished training run of one step
    assert train.main(train.build_parser().parse_args(
        TRAIN + ["--data", str(p["data"]), "--run_dir", str(p["run"]), "--val_fraction", "0"])) == 0
    add_issue_20_inputs(p, frame_factory)
    return p


def add_issue_20_inputs(p: dict, frame_factory) -> None:
    """Earlier outputs that hold what their run did not write, and inputs that must be refused."""
    r = p["root"]
    prev = r / "prev"
    assert colorize_cli.main(colorize_cli.build_parser().parse_args(
        ["--checkpoint", str(p["ckpt"]), "--device", "cpu", "--input", str(p["shot"]), "--output", str(prev)])) == 0
    for name in ("prev_run", "prev_note", "prev_edit"):
        p[name] = r / name
        shutil.copytree(prev, p[name])
    shutil.copytree(p["run"], p["prev_run"] / "myrun")  # train.py --run_dir prev/myrun
    (p["prev_note"] / "notes.txt").write_text("the user's notes on this output")
    utils.write_image(p["prev_edit"] / "frame_000002.png", np.zeros((32, 32, 3), np.uint8))  # retouched
    shutil.rmtree(prev)
    p["dup"], p["dangling"] = r / "dup", r / "dangling"
    for folder in (p["dup"], p["dangling"]):
        for i in range(3):
            utils.write_image(folder / f"frame_{i:06d}.png", frame_factory(i, 40, 40))
    utils.write_image(p["dup"] / "frame_000001.jpg", frame_factory(1, 40, 40))
    (p["dangling"] / "frame_000003.png").symlink_to(r / "gone.png")
    p["sbs_data"], p["case_data"] = r / "sbs_data", r / "case_data"
    for shot in (p["sbs_data"] / "side_by_side", p["sbs_data"] / "a", p["case_data"] / "Shot_a",
                 p["case_data"] / "shot_a"):
        for i in range(2):
            utils.write_image(shot / f"frame_{i:06d}.png", frame_factory(i, 40, 40))
    p["huge"] = r / "huge"
    p["huge"].mkdir()
    (p["huge"] / "frame_000000.png").write_bytes(png_header_only(40000, 40000))
    nan = save_export(p["ckpts"] / "nan.pt")
    export = torch.load(nan, weights_only=True)
    next(iter(export["generator"].values())).fill_(float("nan"))
    torch.save(export, nan)
    p["ckpt_nan"] = nan
    # a folder of the user's laid out as FrameExtraction's: shot_0001/ holds a video and a note
    p["fe_foreign"] = r / "fe"
    (p["fe_foreign"] / "shot_0001").mkdir(parents=True)
    p["fe_video"] = p["fe_foreign"] / "shot_0001" / "clip.avi"
    shutil.copy(p["clip"], p["fe_video"])
    (p["fe_foreign"] / "shot_0001" / "notes.txt").write_text("the user's")
    p["fe_note"] = r / "fe_note"
    FrameExtraction.extract_video(p["clip"], p["fe_note"])
    (next(p["fe_note"].glob("shot_*")) / "notes.txt").write_text("the user's")


def png_header_only(width: int, height: int) -> bytes:
    """The first bytes of a PNG that announces width x height (a bomb needs no more)."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def snapshot(root: Path) -> dict:
    return {f: hashlib.sha1(f.read_bytes()).hexdigest() for f in root.rglob("*") if f.is_file()}


def run_tool(tool: str, argv: list, capsys) -> tuple[int, list[str]]:
    module = TOOLS[tool]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(module.main, module.build_parser().parse_args(argv))
    # progress bars (tqdm redraws them in place on a terminal) and notes (skipped folders, a
    # frame cache being built) are not messages; everything else is
    text = capsys.readouterr().err.replace("\r", "\n")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("note: ")
             and not PROGRESS_BAR.search(line)]
    return exit_info.value.code, lines


@pytest.mark.parametrize("case", REFUSED, ids=str)
def test_refused_in_one_line_and_nothing_touched(sandbox, capsys, case):
    before = snapshot(sandbox["root"])
    argv = [a.format(**{k: str(v) for k, v in sandbox.items()}) for a in case.argv]
    code, lines = run_tool(case.tool, argv, capsys)
    assert code == 2, (case.what, lines)
    assert len(lines) == 1 and lines[0].startswith("error: ") and case.expect in lines[0], lines
    after = snapshot(sandbox["root"])
    assert {f: h for f, h in after.items() if f in before} == before  # nothing there before was touched
    assert not (set(after) - set(before)), sorted(set(after) - set(before))  # and nothing was added


# ----------------------------------------------------------------------------- what must work
def colour(argv, capsys, ckpt):
    code, lines = run_tool("test.py", ["--checkpoint", str(ckpt), "--device", "cpu"] + argv, capsys)
    assert code == 0, lines
    return lines


def test_overwrite_replaces_our_own_output_and_video(sandbox, capsys, tmp_path):
    s = {k: str(v) for k, v in sandbox.items()}
    colour(["--input", s["shot"], "--output", s["new"], "--video", s["new2"] + ".mp4", "--side_by_side"], capsys,
           s["ckpt"])
    assert (sandbox["new"] / "side_by_side" / "frame_000005.png").is_file()
    colour(["--input", s["shot"], "--output", s["new"], "--video", s["new2"] + ".mp4", "--overwrite"], capsys,
           s["ckpt"])
    # the first run's side-by-side frames went with it; the new output is complete
    assert not (sandbox["new"] / "side_by_side").exists() and (sandbox["new"] / "frame_000005.png").is_file()
    assert Path(s["new2"] + ".mp4").is_file()
    # another output may not take that video over
    code, lines = run_tool("test.py", ["--checkpoint", s["ckpt"], "--device", "cpu", "--input", s["shot"],
                                       "--output", str(tmp_path / "other"),
                                                "--video", s["new2"] + ".mp4", "--overwrite"], capsys)
    assert code == 2 and "already exists" in lines[0]


def test_video_inside_output_and_on_another_file_system(sandbox, capsys):
    s = {k: str(v) for k, v in sandbox.items()}
    colour(["--input", s["shot"], "--output", s["new"], "--video", s["new"] + "/clip.mp4"], capsys, s["ckpt"])
    assert (sandbox["new"] / "clip.mp4").stat().st_size > 0
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(sandbox["root"]).st_dev:
        pytest.skip("no second file system at /dev/shm")
    video = shm / f"tcvc-test-{os.getpid()}.mp4"
    try:
        colour(["--input", s["shot"], "--output", s["new2"], "--video", str(video)], capsys, s["ckpt"])
        assert video.stat().st_size > 0 and not list(shm.glob(f".tcvc-test-{os.getpid()}*"))
    finally:
        video.unlink(missing_ok=True)


def test_ts_videos_are_accepted_by_both_tools(sandbox, capsys):
    import imageio_ffmpeg
    ts = sandbox["root"] / "ts" / "clip.ts"
    ts.parent.mkdir()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(sandbox["clip"]), "-c:v", "mpeg2video",
                    str(ts)], check=True)
    colour(["--input", str(ts), "--output", str(sandbox["new"])], capsys, sandbox["ckpt"])
    code, lines = run_tool("FrameExtraction.py", ["--video_path", str(ts.parent), "--output_path",
                                                  str(sandbox["new2"])], capsys)
    assert code == 0 and len(list((sandbox["new2"] / "clip").rglob("frame_*.png"))) == 10


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_are_written_with_the_users_umask(sandbox, capsys, umask, mode):
    code = subprocess.run(
        [sys.executable, "-c", f"import os, sys; os.umask({umask}); sys.argv = ['test.py'] + sys.argv[1:]; "
                               "import runpy; runpy.run_path('test.py', run_name='__main__')",
         "--checkpoint", str(sandbox["ckpt"]), "--input", str(sandbox["shot"]), "--output", str(sandbox["new"]),
         "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    # checkpoints are written by atomic_torch_save through atomic_write_bytes: that, without
    # importing torch (most of a fresh process's time)
    saved = subprocess.run(
        [sys.executable, "-c", f"import os; os.umask({umask}); import utils; "
                               f"utils.atomic_write_bytes('{sandbox['new2']}/ckpt.pt', b'weights')"],
        cwd=ROOT, capture_output=True, text=True)
    assert saved.returncode == 0, saved.stderr
    written = [sandbox["new"] / "frame_000000.png", sandbox["new"] / "metrics.json", sandbox["new2"] / "ckpt.pt"]
    assert [oct(p.stat().st_mode & 0o777) for p in written] == [oct(mode)] * 3


def test_stale_temporary_files_of_our_saves_are_removed_and_nothing_else(sandbox):
    ckpts = sandbox["run"] / "checkpoints"
    stale = [ckpts / ".step_00000001.pt.a1b2c3d4.tmp", ckpts / ".best.pt.zz_yy_xx.tmp",
             sandbox["run"] / ".generator.pt.q1w2e3r4.tmp"]
    kept = [ckpts / "notes.tmp", ckpts / ".mine.pt.a1b2c3d4.tmp", sandbox["run"] / "keep.txt"]
    for f in stale + kept:
        f.write_bytes(b"x" * 100)
    argv = TRAIN + ["--data", str(sandbox["data"]), "--run_dir", str(sandbox["run"]), "--resume", "auto",
                    "--max_steps", "2", "--val_fraction", "0"]
    assert train.main(train.build_parser().parse_args(argv)) == 0
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept)


def test_symlink_loops_and_our_own_folders_are_read_once_or_skipped(sandbox, capsys):
    data = sandbox["data"]
    (data / "shot_a" / "up").symlink_to("..", target_is_directory=True)
    (data / ".shot_b.partial").mkdir()
    utils.write_image(data / ".shot_b.partial" / "frame_000001.png", np.zeros((8, 8, 3), np.uint8))
    shutil.copytree(sandbox["run"], data / "run_inside")  # a run folder inside --data, and its samples/
    utils.write_image(data / "run_inside" / "samples" / "val_step_00000001.png", np.zeros((8, 8, 3), np.uint8))
    capsys.readouterr()
    shots = utils.find_shot_dirs(data)
    assert shots == [data / "shot_a"]
    note = capsys.readouterr().err
    assert ".shot_b.partial (partial)" in note and "run_inside (a train.py run folder)" in note


# ----------------------------------------------------------------------------- issue 20: what must work
def test_a_grey_alpha_png_that_pyspng_cannot_read_is_coloured(sandbox, capsys):
    from PIL import Image
    shot = sandbox["root"] / "grey_alpha"
    shot.mkdir()
    for i in range(3):
        grey = np.full((40, 40), 60 + 40 * i, np.uint8)
        Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(shot / f"frame_{i:06d}.png")
    assert utils.read_rgb(shot / "frame_000001.png")[0, 0].tolist() == [100, 100, 100]
    colour(["--input", str(shot), "--output", str(sandbox["new"])], capsys, sandbox["ckpt"])
    assert len(list(sandbox["new"].glob("frame_*.png"))) == 3


def test_a_run_folder_that_saved_nothing_can_be_reused(sandbox, capsys):
    """A run that failed after its checks (a full disk at its first checkpoint) left its marker,
    config and log but no checkpoint: a new run, and --resume auto, may start there."""
    dead = sandbox["root"] / "dead"
    shutil.copytree(sandbox["run"], dead)
    shutil.rmtree(dead / "checkpoints")
    (dead / "generator.pt").unlink()
    for extra in ([], ["--resume", "auto"]):
        if extra:
            shutil.rmtree(dead / "checkpoints")
            (dead / "generator.pt").unlink()
        code, lines = run_tool("train.py", TRAIN + ["--data", str(sandbox["data"]), "--run_dir", str(dead),
                                                    "--val_fraction", "0"] + extra, capsys)
        assert code == 0, lines
        assert (dead / "checkpoints" / "step_00000001.pt").is_file() and (dead / "generator.pt").is_file()


def test_frame_cache_on_a_full_disk_is_one_line_and_leaves_nothing(sandbox, capsys, monkeypatch):
    import framecache
    cache = sandbox["root"] / "cache"
    cache.mkdir()
    real = shutil.disk_usage
    monkeypatch.setattr(framecache.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    before = snapshot(sandbox["root"])
    code, lines = run_tool("train.py", TRAIN + ["--data", str(sandbox["data"]), "--run_dir", str(sandbox["new"]),
                                                "--cache_dir", str(cache)], capsys)
    assert code == 2 and len(lines) == 1 and "free" in lines[0], lines
    assert snapshot(sandbox["root"]) == before and not list(cache.iterdir()) and not sandbox["new"].exists()


def test_flow_cache_on_a_full_disk_is_one_line_naming_the_way_out(sandbox, capsys, monkeypatch):
    """The frames fit but their flows (6 times their bytes) do not: one line that names
    --no_flow_cache, the frame cache kept, no half-built flow folder left."""
    import framecache
    cache = sandbox["root"] / "cache"
    cache.mkdir()
    real, calls = shutil.disk_usage, []

    def disk_usage(path):
        calls.append(path)
        return real(path) if len(calls) == 1 else real(path)._replace(free=1000)  # full after the frames

    monkeypatch.setattr(framecache.shutil, "disk_usage", disk_usage)
    code, lines = run_tool("train.py", TRAIN + ["--data", str(sandbox["data"]), "--run_dir", str(sandbox["new"]),
                                                "--cache_dir", str(cache)], capsys)
    assert code == 2 and len(lines) == 1 and "--no_flow_cache" in lines[0], lines
    assert len(calls) == 2 and [p.suffix for p in cache.iterdir()] == [""]  # the frame cache alone
    assert not sandbox["new"].exists()


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_damaged_frame_cache_is_rebuilt_not_used(sandbox, capsys, damage):
    cache = sandbox["root"] / "cache"
    argv = TRAIN + ["--data", str(sandbox["data"]), "--cache_dir", str(cache), "--val_fraction", "0"]
    code, lines = run_tool("train.py", argv + ["--run_dir", str(sandbox["new"])], capsys)
    assert code == 0, lines
    (frames,) = cache.glob("*/frames.npy")
    size = frames.stat().st_size
    with open(frames, "r+b") as f:
        if damage == "truncated":
            f.truncate(size - 100)
        else:
            f.seek(128)  # past the .npy header: every frame becomes black
            f.write(bytes(size - 128))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(train.main, train.build_parser().parse_args(argv + ["--run_dir", str(sandbox["new2"])]))
    assert exit_info.value.code == 0
    assert "rebuilding the frame cache" in capsys.readouterr().err
    assert frames.stat().st_size == size and np.load(frames).max() > 0


def test_a_cache_truncated_while_in_use_is_one_clear_error(tmp_path, frame_factory):
    import framecache
    for i in range(4):
        utils.write_image(tmp_path / "shot" / f"frame_{i}.png", frame_factory(i, 40, 40))
    cache = framecache.open_or_build([utils.list_frames(tmp_path / "shot")], 36, "canny", cache_dir=tmp_path / "c")
    assert cache.colour(0, 3).shape == (36, 36, 3)
    (frames,) = (tmp_path / "c").glob("*/frames.npy")
    os.truncate(frames, frames.stat().st_size - 10)
    with pytest.raises(utils.UserError, match="truncated while in use"):
        cache.colour(0, 3)


# ----------------------------------------------------------------------------- issue 20: two writers
def start_holding_lock(tool: str, argv: list, lock: Path, env: dict) -> subprocess.Popen:
    """Start a real command and stop it (SIGSTOP) once it holds its lock: the lock file names
    its pid only after flock succeeded. Nothing here depends on how fast the machine is."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, tool] + argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not (lock.is_file() and lock.read_text().startswith(f"pid {proc.pid}")):
        assert proc.poll() is None, f"{tool} ended before it was seen holding {lock}: {proc.stderr.read()}"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGSTOP)
    return proc


def writers(s: dict) -> list:
    """(tool, argv, what it writes) for the three writers, with work enough to watch them."""
    long_shot = s["root"] / "long_shot"
    long_shot.mkdir()
    frame = s["shot"] / "frame_000001.png"
    for i in range(20):
        shutil.copy(frame, long_shot / f"frame_{i:06d}.png")
    long_clip = write_clip(s["clips"] / "long.avi", n=400)
    out = s["root"] / "out"
    return [("test.py", COLOUR[:1] + [str(s["ckpt"]), "--device", "cpu", "--input", str(long_shot), "--output",
                                      str(out)], out),
            ("train.py", TRAIN[:-4] + ["--device", "cpu", "--num_workers", "0", "--max_steps", "6", "--data",
                                        str(s["data"]), "--run_dir", str(out), "--val_fraction", "0"], out),
            ("FrameExtraction.py", ["--video_path", str(long_clip), "--output_path", str(out)], out)]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["test.py", "train.py", "FrameExtraction.py"])
def test_a_second_writer_is_refused_and_the_first_completes(sandbox, which, tmp_path, capsys):
    """The first writer is a process of its own; the second runs the same command line here
    (utils.run_cli, as every row of the table: a second fresh process would mostly import torch)."""
    import signal
    tool, argv, out = writers(sandbox)[which]
    env = dict(os.environ, OMP_NUM_THREADS="1", TCVC_CACHE_DIR=str(tmp_path / "cache"))
    first = start_holding_lock(tool, argv, out.with_name(f".{out.name}.lock"), env)
    try:
        before = snapshot(sandbox["root"])
        code, lines = run_tool(tool, argv, capsys)
        assert code == 2 and len(lines) == 1 and f"another {tool} is writing" in lines[0], lines
        assert snapshot(sandbox["root"]) == before  # the second touched nothing
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    # train.py: 3 steps an epoch, a checkpoint at each epoch end, the newest 3 kept
    expected = {"test.py": ("frame_*.png", 20), "train.py": ("checkpoints/step_*.pt", 2),
                "FrameExtraction.py": ("shot_*/frame_*.png", 400)}[tool]
    assert len(list(out.glob(expected[0]))) == expected[1]
    assert not out.with_name(f".{out.name}.lock").exists()


# (train.py takes the same utils.WriterLock; its killed run is resumed in test_train)
@pytest.mark.parametrize("which", [0, 2], ids=["test.py", "FrameExtraction.py"])
def test_a_killed_writer_never_blocks_the_next(sandbox, which, tmp_path, capsys):
    import signal
    tool, argv, out = writers(sandbox)[which]
    env = dict(os.environ, OMP_NUM_THREADS="1", TCVC_CACHE_DIR=str(tmp_path / "cache"))
    first = start_holding_lock(tool, argv, out.with_name(f".{out.name}.lock"), env)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    code, lines = run_tool(tool, argv, capsys)
    assert code == 0, lines
    assert out.is_dir() and not out.with_name(f".{out.name}.partial").exists()


def test_a_partial_output_killed_while_writing_its_marker_is_ours(tmp_path):
    """The marker is written through a temporary file: a kill between the folder's mkdir and the
    marker's rename leaves only that file, which proves the folder ours; anything else refuses."""
    out_tmp = tmp_path / ".out.partial"
    out_tmp.mkdir()
    (out_tmp / f".{utils.OUTPUT_MARKER}.abcd1234{utils.TMP_SUFFIX}").write_bytes(b"{")
    assert colorize_cli.killed_before_its_marker(out_tmp)
    (out_tmp / "notes.txt").write_text("somebody's")
    assert not colorize_cli.killed_before_its_marker(out_tmp)
