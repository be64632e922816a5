"""demo.py end to end on a tiny generated clip: frames, one training step, colorization, files."""
import cv2
from PIL import Image

import demo


def test_demo_runs_end_to_end_and_is_honest_about_vgg(tmp_path, frame_factory, monkeypatch):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 12, (64, 48))
    for i in range(16):
        writer.write(cv2.cvtColor(frame_factory(i, 48, 64), cv2.COLOR_RGB2BGR))
    writer.release()
    monkeypatch.setattr(demo, "vgg_choice", lambda: "random")  # as on a machine without the weights
    args = demo.build_parser().parse_args(
        ["--video", str(clip), "--minutes", "0", "--image_size", "32", "--train_end", "8", "--test_start", "10",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert demo.main(args) == 0
    out = tmp_path / "out"
    summary = (out / "SUMMARY.md").read_text()
    assert "RANDOM VGG" in summary
    # frames 10..15 were coloured from the first frame of each shot as its keyframe; the frames
    # after it are scored, next to the copied keyframe
    n_shots = len(list((out / "frames").glob("shot_*")))
    scored = 6 - n_shots
    assert f"| model (from the keyframe) | {scored} |" in summary
    assert f"| copy_keyframe (no model) | {scored} |" in summary
    assert f"| flat_grey (no model) | {scored} |" in summary
    assert f"| warp_keyframe (no model: the keyframe along the model's own flow) | {scored} |" in summary
    assert f"| warp_chain (no model: warped frame to frame) | {scored} |" in summary
    assert f"| warp_blend (no model: the mean of the two warps) | {scored} |" in summary
    assert "the best answer that needs no model" in summary
    assert Image.open(out / "side_by_side.gif").n_frames == 6
    assert cv2.VideoCapture(str(out / "side_by_side.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 6
