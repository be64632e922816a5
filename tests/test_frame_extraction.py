"""FrameExtraction.py: shot splitting, frame selection, damaged input, and no torch import."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import FrameExtraction as fe
import utils
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64


# ----------------------------------------------------------------------------- synthetic videos
def shot_a(i: int) -> np.ndarray:
    """Blue horizontal gradient, a white square moving 2 px per frame."""
    frame = np.empty((H, W, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 40, (80 + 2 * np.arange(W))[None, :], 200
    frame[10:20, 4 + 2 * i:14 + 2 * i] = 255
    return frame


def shot_b(i: int) -> np.ndarray:
    """Orange vertical gradient, a dark square moving down 1 px per frame."""
    frame = np.empty((H, W, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 220, (100 + 2 * np.arange(H))[:, None], 30
    frame[5 + i:15 + i, 30:40] = 20
    return frame


def two_shots(n_a: int = 20, n_b: int = 15) -> list:
    return [shot_a(i) for i in range(n_a)] + [shot_b(i) for i in range(n_b)]


def write_video(path: Path, frames, fps: float = 24.0) -> Path:
    """MJPG in .avi (each frame coded alone: equal frames decode equal), mp4v in .mp4."""
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def names(folder: Path) -> list[str]:
    """What a user sees in a folder (not the hidden markers)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def frame_ids(folder: Path) -> list[int]:
    return [utils.frame_number(p) for p in utils.list_frames(folder)]


# ----------------------------------------------------------------------------- extraction
def test_two_shots_give_two_folders_named_by_source_index(tmp_path):
    video = write_video(tmp_path / "ep.avi", two_shots(20, 15))
    info = fe.video_info(video)
    assert (info.frame_count, info.fps, info.width, info.height) == (35, 24.0, W, H)
    summary = fe.extract_video(video, tmp_path / "out")
    out = tmp_path / "out"
    assert names(out) == ["shot_0001", "shot_0002"]
    assert names(out / "shot_0001") == [f"frame_{i:06d}.png" for i in range(20)]
    assert frame_ids(out / "shot_0002") == list(range(20, 35))
    decoded = list(fe.read_video(video))
    assert np.array_equal(utils.read_rgb(out / "shot_0002" / "frame_000027.png"), decoded[27])
    assert (summary["frames_written"], summary["shots"], summary["frames_read"]) == (35, 2, 35)
    assert not list(tmp_path.glob(".*partial"))


def test_no_shot_split_puts_all_frames_in_one_folder(tmp_path):
    video = write_video(tmp_path / "ep.avi", two_shots(20, 15))
    fe.extract_video(video, tmp_path / "out", fe.ExtractOptions(shot_split=False))
    assert names(tmp_path / "out") == [f"frame_{i:06d}.png" for i in range(35)]


def test_start_end_every_n_keep_source_numbers(tmp_path):
    video = write_video(tmp_path / "ep.avi", two_shots(20, 15))
    options = fe.ExtractOptions(start=5, end=30, every_n=4)
    summary = fe.extract_video(video, tmp_path / "out", options)
    # frames 5, 9, ..., 29; the cut at 20 still splits them although 20 itself is skipped
    assert frame_ids(tmp_path / "out" / "shot_0001") == [5, 9, 13, 17]
    assert frame_ids(tmp_path / "out" / "shot_0002") == [21, 25, 29]
    assert summary["frames_read"] == 25 and summary["dropped"]["every_n"] == 25 - 7


def test_max_size_and_jpeg(tmp_path):
    video = write_video(tmp_path / "ep.avi", two_shots(4, 3))
    options = fe.ExtractOptions(max_size=32, image_format="jpg", shot_split=False)
    fe.extract_video(video, tmp_path / "out", options)
    files = utils.list_frames(tmp_path / "out")
    assert [p.name for p in files][:2] == ["frame_000000.jpg", "frame_000001.jpg"]
    assert utils.read_rgb(files[0]).shape == (24, 32, 3)


def test_resize_longest_only_shrinks():
    assert fe.resize_longest(np.zeros((48, 64, 3), np.uint8), 32).shape == (24, 32, 3)
    assert fe.resize_longest(np.zeros((64, 48, 3), np.uint8), 32).shape == (32, 24, 3)
    assert fe.resize_longest(np.zeros((48, 64, 3), np.uint8), 100).shape == (48, 64, 3)


def test_drop_blank_counts_black_and_uniform_frames(tmp_path):
    frames = two_shots(20, 15)
    frames[8] = frames[9] = np.zeros((H, W, 3), np.uint8)   # a short fade to black
    frames[27] = np.full((H, W, 3), 128, np.uint8)           # a flat grey flash
    video = write_video(tmp_path / "ep.avi", frames)
    summary = fe.extract_video(video, tmp_path / "out", fe.ExtractOptions(drop_blank=True))
    kept = frame_ids(tmp_path / "out" / "shot_0001") + frame_ids(tmp_path / "out" / "shot_0002")
    assert kept == [i for i in range(35) if i not in (8, 9, 27)]
    assert summary["dropped"] == {"every_n": 0, "blank": 3, "held": 0}
    # a blank flash inside a shot (in and out within the window) is not a cut
    assert summary["shots"] == 2


def test_is_blank_rule():
    assert fe.is_blank(np.zeros((H, W, 3), np.uint8))
    assert fe.is_blank(np.full((H, W, 3), (200, 30, 30), np.uint8))   # uniform: std 0
    half = np.zeros((H, W, 3), np.uint8)
    half[:, W // 2:] = 255                                          # mean 127.5, std 127.5
    assert not fe.is_blank(half)
    card = np.zeros((40, 100, 3), np.uint8)
    card[:, :5] = 255            # 5 % white text: mean luma 12.75 < 16
    assert fe.is_blank(card)
    card[:, :10] = 255           # 10 %: mean 25.5, std 76.5
    assert not fe.is_blank(card)


def test_is_held_rule():
    frame = shot_a(3)
    other = frame.copy()
    assert fe.is_held(other, frame) and not fe.is_held(frame, None)
    other[0, 0] = frame[0, 0] // 2 + 100 * (frame[0, 0] < 128)   # 1 of 3072 px = 0.033 %
    assert fe.is_held(other, frame)
    other[0, 1, 0] = (int(frame[0, 1, 0]) + 128) % 256            # 2 px = 0.065 % > 0.05 %
    assert not fe.is_held(other, frame)
    small_noise = np.clip(frame.astype(int) + 20, 0, 255).astype(np.uint8)  # all below delta
    assert fe.is_held(small_noise, frame)


def test_skip_held_keeps_one_frame_per_drawing(tmp_path):
    # shot A drawn on 3s (frames 0-17), shot B on 2s (frames 18-29)
    frames = [shot_a(i // 3) for i in range(18)] + [shot_b(2 * (i // 2)) for i in range(12)]
    video = write_video(tmp_path / "ep.avi", frames)
    summary = fe.extract_video(video, tmp_path / "out", fe.ExtractOptions(skip_held=True))
    assert frame_ids(tmp_path / "out" / "shot_0001") == list(range(0, 18, 3))
    assert frame_ids(tmp_path / "out" / "shot_0002") == list(range(18, 30, 2))
    assert summary["dropped"]["held"] == 30 - 12


def test_refuses_existing_frames_unless_overwrite(tmp_path):
    video = write_video(tmp_path / "ep.avi", two_shots(5, 4))
    out = tmp_path / "out"
    fe.extract_video(video, out, fe.ExtractOptions(image_format="jpg"))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite"):
        fe.extract_video(video, out)
    fe.extract_video(video, out, fe.ExtractOptions(overwrite=True))
    assert names(out) == ["notes.txt", "shot_0001", "shot_0002"]
    assert names(out / "shot_0002") == [f"frame_{i:06d}.png" for i in range(5, 9)]


def test_folder_of_videos_and_one_bad_file(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "ep2.avi", two_shots(6, 4))
    write_video(videos / "ep10.avi", [shot_b(i) for i in range(5)])
    args = fe.build_parser().parse_args(["--video_path", str(videos),
                                         "--output_path", str(tmp_path / "out")])
    assert fe.main(args) == 0
    assert names(tmp_path / "out") == ["ep10", "ep2"]
    assert names(tmp_path / "out" / "ep2") == ["shot_0001", "shot_0002"]
    assert frame_ids(tmp_path / "out" / "ep10" / "shot_0001") == [0, 1, 2, 3, 4]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ep2.avi: wrote 10 frames in 2 shots")   # natural order
    assert lines[2].startswith("total: wrote 15 frames in 3 shots from 2 of 2 videos")
    (videos / "ep3.mp4").write_text("not a video")
    args.output_path = str(tmp_path / "out2")
    with pytest.raises(UserError, match="1 of 3 videos failed: ep3.mp4"):
        fe.main(args)
    assert names(tmp_path / "out2") == ["ep10", "ep2"]   # the good ones are complete


def _bad_input(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "nothing.mp4"
    if kind == "text":
        path = tmp_path / "notes.mp4"
        path.write_text("this is not a video\n" * 50)
        return path
    full = write_video(tmp_path / f"full.{kind}", two_shots(20, 20))
    path = tmp_path / f"half.{kind}"
    data = full.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    full.unlink()
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "avi", "mp4"])
def test_bad_video_fails_in_one_line_and_leaves_nothing(tmp_path, kind):
    video = _bad_input(tmp_path, kind)
    before = set(tmp_path.iterdir())
    out = tmp_path / "frames"
    proc = subprocess.run([sys.executable, str(ROOT / "FrameExtraction.py"), "--video_path",
                           str(video), "--output_path", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and video.name in lines[0]
    assert "Traceback" not in proc.stderr
    assert set(tmp_path.iterdir()) == before   # no frames/, no .frames.partial


def test_truncated_avi_is_detected_after_some_frames(tmp_path):
    video = _bad_input(tmp_path, "avi")
    frames = []
    with pytest.raises(UserError, match="truncated"):
        for frame in fe.read_video(video):
            frames.append(frame)
    assert 0 < len(frames) < 40


def test_importing_does_not_import_torch():
    code = "import sys, FrameExtraction; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


# ----------------------------------------------------------------------------- cut detector
def _texture(seed: int, size=(96, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def test_motion_on_threes_is_not_a_cut_but_a_new_picture_is():
    """A pan drawn on 3s: every third frame jumps 8 px, the frames between are held. Each jump
    is a big distance, but it is compared with the other jumps around it, not with the zeros
    between them (with a window of 1 only zeros are seen and the jumps do look like cuts)."""
    pan = _texture(1)
    frames = [pan[:H, 8 * (i // 3):8 * (i // 3) + W] for i in range(18)]   # jumps at 3..15
    frames += [frames[-1]] * 6                                              # held, 18..23
    other = _texture(2)[:H, :W, ::-1] // 2 + 100
    frames += [other] * 8                                                   # new shot at 24
    hsv = [fe._analysis_hsv(f) for f in frames]
    assert fe.content_distance(hsv[3], hsv[2]) > 15   # the jumps pass the absolute test
    assert fe.find_cuts(frames) == [24]
    assert 3 in fe.find_cuts(frames, fe.ShotDetector(window=1))


def test_split_shots_streams_with_bounded_delay():
    frames = two_shots(12, 10)
    consumed = []

    def source():
        for frame in frames:
            consumed.append(1)
            yield frame

    out = []
    for shot, index, frame in fe.split_shots(source(), fe.ShotDetector(window=4)):
        assert len(consumed) - index <= 5   # at most window + 1 frames held back
        out.append((shot, index, frame))
    assert [i for _, i, _ in out] == list(range(22))
    assert [s for s, _, _ in out] == [0] * 12 + [1] * 10
    assert all(f is frames[i] for _, i, f in out)


def test_shared_clips_cuts(shared_clips):
    """The montage has one hard cut (LVCD shot of 75 frames, One Piece shot of 100); every other
    clip is one shot (held frames, a subtitle change, a camera pan, a fast eye opening)."""
    clips = sorted(shared_clips.glob("*.mp4"))
    assert len(clips) >= 6
    for clip in clips:
        expected = [75] if clip.name == "montage_lvcd1_onepiece1.mp4" else []
        assert fe.find_cuts(fe.read_video(clip)) == expected, clip.name
