"""The study's reference answers that need no model (benchmarks/reproduce.py), and how every
setting is scored on chosen frames (metrics.score_frames)."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reproduce  # noqa: E402


def flat(value, size=16):
    return np.full((size, size, 3), value, np.uint8)


def db(mse):
    return 10 * math.log10(255 ** 2 / mse)


@pytest.fixture
def truths():
    return {"shot": [flat(100), flat(110), flat(130)]}


def test_copy_keyframe_against_hand_computed_psnr(truths):
    outputs = reproduce.trivial_outputs("copy_keyframe", truths)
    assert all(np.array_equal(f, truths["shot"][0]) for f in outputs["shot"])
    result = reproduce.metrics_lib.score_frames(outputs, truths)
    # frames 1 and 2 only: |110 - 100| = 10 and |130 - 100| = 30 in every pixel and channel
    assert result["per_frame_psnr"]["shot"] == pytest.approx([db(100), db(900)])
    assert result["overall"]["psnr"] == pytest.approx((db(100) + db(900)) / 2)  # 23.36 dB
    assert result["overall"]["frames"] == 2 and result["shots"]["shot"]["scored_frames"] == [1, 2]
    assert result["overall"]["psnr_frame0"] == 100.0  # frame 0 is the keyframe itself (capped)
    assert result["overall"]["warp_error"] == 0.0     # a still output does not flicker


def test_flat_grey_against_hand_computed_psnr(truths):
    result = reproduce.metrics_lib.score_frames(reproduce.trivial_outputs("flat_grey", truths), truths)
    assert result["per_frame_psnr"]["shot"] == pytest.approx([db(18 ** 2), db(2 ** 2)])
    assert result["overall"]["psnr"] == pytest.approx((db(324) + db(4)) / 2)  # 32.57 dB
    assert result["overall"]["psnr_frame0"] == pytest.approx(db(28 ** 2))
    assert result["overall"]["psnr_last10"] == pytest.approx((db(324) + db(4)) / 2)


def test_last10_and_a_wrong_frame_count():
    truth = {"s": [flat(10 * k) for k in range(14)]}
    out = {"s": [flat(10 * k + (0 if k < 4 else 5)) for k in range(14)]}
    result = reproduce.metrics_lib.score_frames(out, truth)
    assert result["overall"]["psnr_last10"] == pytest.approx(db(25))  # frames 4-13 are 5 off
    assert result["overall"]["psnr"] == pytest.approx((3 * 100 + 10 * db(25)) / 13)
    with pytest.raises(reproduce.UserError, match="output frames"):
        reproduce.metrics_lib.score_frames({"s": out["s"][:-1]}, truth)


def test_the_gpu_training_check_runs_on_a_cpu(tmp_path, capsys):
    """benchmarks/gpu_train_check.py can only be run for real on a GPU machine: check here that
    the script itself works, with a tiny run."""
    import gpu_train_check

    args = gpu_train_check.build_parser().parse_args(
        ["--out", str(tmp_path), "--steps", "4", "--device", "cpu", "--image_size", "32", "--batch_size", "2",
         "--workers", "0"])
    code = gpu_train_check.main(args)
    text = capsys.readouterr().out
    assert code in (0, 1) and "l1_first_quarter=" in text and (tmp_path / "train_log.jsonl").is_file()


def test_keyframe_blend_choice_never_trades_steadiness_for_psnr():
    import keyframe_blend
    overall = {"linear": {"psnr": 28.8, "tc_ratio": 0.4}, "nearest": {"psnr": 29.0, "tc_ratio": 1.3}}
    assert keyframe_blend.best_blend(overall) == "linear"
    overall["nearest"]["tc_ratio"] = 0.9
    assert keyframe_blend.best_blend(overall) == "nearest"
    # none steady: PSNR alone decides
    overall = {"linear": {"psnr": 20.0, "tc_ratio": 1.5}, "nearest": {"psnr": 21.0, "tc_ratio": 1.2}}
    assert keyframe_blend.best_blend(overall) == "nearest"


def test_a_finished_run_is_reused_not_retrained(tmp_path, frame_factory, capsys):
    from types import SimpleNamespace
    import utils
    for i in range(6):
        utils.write_image(tmp_path / "data" / "s0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=0))
    args = SimpleNamespace(image_size=32, batch_size=2, seed=1, device="cpu", steps=2, minutes=None,
                           train_args=["--", "--vgg_weights", "random", "--ngf", "8", "--num_workers", "0"])
    for _ in range(2):
        ckpt = reproduce.train_model("m", [], tmp_path / "data", tmp_path / "study", args)
    said = capsys.readouterr().out
    assert ckpt.is_file()
    assert "m: 2 steps (2 steps in" in said and "m: 2 steps (reused, already trained)" in said


def test_the_models_train_at_the_same_time_only_where_their_threads_fit_the_cores(monkeypatch):
    from types import SimpleNamespace
    monkeypatch.delenv("TCVC_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    small = SimpleNamespace(jobs="auto", device="cpu", image_size=128, batch_size=4)  # 1 thread each
    assert reproduce.parallel_threads(small, 2, cores=2) == 1
    assert reproduce.parallel_threads(small, 2, cores=1) is None
    assert reproduce.parallel_threads(small, 1, cores=2) is None       # one model: nothing to share
    assert reproduce.parallel_threads(SimpleNamespace(**{**vars(small), "jobs": "1"}), 2, cores=2) is None
    big = SimpleNamespace(jobs="auto", device="cpu", image_size=256, batch_size=8)    # 2 threads each
    assert reproduce.parallel_threads(big, 2, cores=2) is None
    assert reproduce.parallel_threads(big, 2, cores=4) == 2


def test_models_trained_at_the_same_time_each_get_their_own_run_and_a_failure_is_named(tmp_path, frame_factory,
                                                                                      capsys, monkeypatch):
    from types import SimpleNamespace
    import utils
    monkeypatch.delenv("TCVC_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(reproduce, "parallel_threads", lambda args, n, cores=None: 1)
    for i in range(6):
        utils.write_image(tmp_path / "data" / "s0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=0))
    args = SimpleNamespace(image_size=32, batch_size=2, seed=1, device="cpu", steps=2, minutes=None, jobs="auto",
                           train_args=["--", "--vgg_weights", "random", "--ngf", "8", "--num_workers", "0"])
    study = tmp_path / "study"
    ckpts = reproduce.train_models({"a": [], "b": ["--prev_prob", "0"]}, tmp_path / "data", study, args)
    said = capsys.readouterr().out
    assert set(ckpts) == {"a", "b"} and all(c.is_file() for c in ckpts.values())
    assert "a: 2 steps (2 steps in" in said and "b: 2 steps (2 steps in" in said
    assert reproduce.training_note(study, ["b"]).count("prev_prob 0.0") == 1   # b's own flags reached it
    assert "prev_prob 0.0" not in reproduce.training_note(study, ["a"])
    with pytest.raises(reproduce.UserError, match=r"training of c failed .*c\.log"):
        reproduce.train_models({"a": [], "c": ["--batchSize", "0"]}, tmp_path / "data", study, args)
    assert "batch" in (study / "runs" / "c.log").read_text().lower()


STUDY_SCRIPT = """
import sys
from types import SimpleNamespace
from pathlib import Path
sys.path.insert(0, {bench!r})
import reproduce, utils
reproduce.parallel_threads = lambda args, n, cores=None: 1
args = SimpleNamespace(image_size=32, batch_size=2, seed=1, device="cpu", steps=100000, minutes=None, jobs="auto",
                       train_args=["--vgg_weights", "random", "--ngf", "8", "--num_workers", "0"])
utils.run_cli(lambda a: reproduce.train_models({{"a": [], "b": []}}, Path({data!r}), Path({study!r}), a) and 0, args)
"""


def test_sigterm_to_the_study_stops_both_children_each_with_a_resumable_checkpoint(tmp_path, frame_factory):
    import os
    import signal
    import subprocess
    import time
    import utils
    for i in range(6):
        utils.write_image(tmp_path / "data" / "s0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=0))
    study = tmp_path / "study"
    script = STUDY_SCRIPT.format(bench=str(Path(reproduce.__file__).parent), data=str(tmp_path / "data"), study=str(study))
    env = {k: v for k, v in os.environ.items() if k not in ("TCVC_THREADS", "OMP_NUM_THREADS")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    logs = [study / "runs" / name / "log.jsonl" for name in "ab"]
    deadline = time.time() + 300
    while not all(log.is_file() for log in logs) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)   # both children have taken 10 steps: they are training
    assert proc.poll() is None, proc.communicate()[0].decode()
    proc.send_signal(signal.SIGTERM)
    said = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, said
    for name in "ab":
        saved = sorted((study / "runs" / name / "checkpoints").glob("step_*.pt"))
        assert saved, f"{name} saved no checkpoint: {said}"
        assert "SIGTERM" in (study / "runs" / f"{name}.log").read_text()


def test_the_flow_rows_without_a_model_by_hand(truths):
    """Flat frames have no lines, so every line-art flow is exactly zero: each warp is the frame
    itself, and the two-keyframe row is the linear blend, worked out by hand."""
    lines = {"shot": [np.full((16, 16), 255, np.uint8)] * 3}
    for setting in ("warp_keyframe", "warp_chain", "warp_blend", "warp_regions", "warp_match"):
        out = reproduce.trivial_outputs(setting, truths, lines)["shot"]
        assert all(np.array_equal(f, flat(100)) for f in out), setting
    five = {"shot": [flat(0), flat(10), flat(20), flat(30), flat(200)]}
    blended = reproduce.trivial_outputs("warp_2keys", five, {"shot": lines["shot"][:1] * 5})["shot"]
    assert [int(f[0, 0, 0]) for f in blended] == [0, 50, 100, 150, 200]  # (4 - t)/4 * 0 + t/4 * 200
    # line arts that agree everywhere: the agree join is the linear one
    joined = reproduce.trivial_outputs("warp_2keys_agree", five, {"shot": lines["shot"][:1] * 5})["shot"]
    assert all(np.array_equal(a, b) for a, b in zip(joined, blended))
    # changed pixels: frame 2 (130) differs from the keyframe (100) by 30 > 25, frame 1 by 10
    first = {"shot": [flat(100)] * 3}
    result = reproduce.metrics_lib.score_frames(reproduce.trivial_outputs("warp_keyframe", truths, lines), truths,
                                                keyframes=first, lines=lines)
    assert result["overall"]["changed_psnr"] == pytest.approx(db(900))
    assert result["overall"]["changed_regions"] == 0.0  # the one region changed, and stayed the keyframe's


def test_the_agree_join_of_two_warped_keyframes_keeps_the_one_whose_drawing_the_frame_shows():
    """Frames 0 to 3 show a square; the last keyframe also shows a ring that no other frame has.
    ``warp_2keys_agree`` blends the two warped keyframes (flat 0 and 200) by distance far from the
    ring, as ``warp_2keys`` does, and on it keeps the first."""
    from test_keyframes import drawing
    line_art = [drawing(square=(8, 8))] * 4 + [drawing(square=(8, 8), ring=(48, 40))]
    shot = {"shot": [np.full((64, 64, 3), 0, np.uint8)] * 4 + [np.full((64, 64, 3), 200, np.uint8)]}
    linear = reproduce.trivial_outputs("warp_2keys", shot, {"shot": line_art})["shot"]
    agree = reproduce.trivial_outputs("warp_2keys_agree", shot, {"shot": line_art})["shot"]
    assert int(linear[1][40, 48, 0]) == 50 and int(agree[1][40, 48, 0]) <= 1     # t = 1: 3/4 * 0 + 1/4 * 200
    assert abs(int(agree[1][15, 15, 0]) - 50) <= 2 and abs(int(agree[3][15, 15, 0]) - 150) <= 2  # far from the ring


def test_a_moved_square_is_followed_by_the_keyframe_warp():
    """A flat square moved 3 pixels right: the keyframe warped along the line-art flow lands the
    square's colour where it went, which copying the keyframe cannot."""
    import dataset

    def frame(x):
        f = np.full((48, 48, 3), 230, np.uint8)
        f[14:34, x:x + 20] = (200, 40, 40)
        return f
    truths = {"s": [frame(10), frame(13)]}
    lines = {"s": [dataset.make_line_art(f, "canny") for f in truths["s"]]}
    warp = reproduce.trivial_outputs("warp_keyframe", truths, lines)["s"][1]
    copy = reproduce.trivial_outputs("copy_keyframe", truths)["s"][1]
    moved = (slice(16, 32), slice(30, 32))  # inside the square now, background before
    assert np.abs(warp[moved].astype(int) - (200, 40, 40)).max() < 40
    assert np.abs(copy[moved].astype(int) - (230, 230, 230)).max() == 0
    assert reproduce.metrics_lib.psnr(warp, truths["s"][1]) > reproduce.metrics_lib.psnr(copy, truths["s"][1]) + 3
    # the untrained matcher gives the square's region the keyframe square's colour, flat inside
    match = reproduce.trivial_outputs("warp_match", truths, lines)["s"][1]
    inside = (slice(17, 31), slice(16, 31))
    assert np.abs(match[inside].astype(int) - (200, 40, 40)).max() <= 1
    assert reproduce.metrics_lib.psnr(match, truths["s"][1]) >= reproduce.metrics_lib.psnr(warp, truths["s"][1])


def moving_square_shot(xs):
    """One shot "s" of 48x48 frames, a red 20x16 square whose left edge is at each x of ``xs``:
    ({"s": frames}, {"s": their Canny line art})."""
    import dataset

    def frame(x):
        f = np.full((48, 48, 3), 230, np.uint8)
        f[14:34, x:x + 16] = (200, 40, 40)
        return f
    truths = {"s": [frame(x) for x in xs]}
    return truths, {"s": [dataset.make_line_art(f, "canny") for f in truths["s"]]}


def test_warp_blend_is_the_mean_of_the_keyframe_warp_and_the_chain():
    """A square moving 2 pixels right each frame: ``warp_blend`` is, pixel for pixel, the rounded
    mean of ``warp_keyframe`` and ``warp_chain`` (each worked out by the project's warp), frame 0
    the keyframe; on a frame where the two disagree it lies between them."""
    truths, lines = moving_square_shot([10, 12, 14, 16])
    key, chain, blend = (reproduce.trivial_outputs(s, truths, lines)["s"]
                         for s in ("warp_keyframe", "warp_chain", "warp_blend"))
    assert np.array_equal(blend[0], truths["s"][0])
    for t in range(1, 4):
        mean = (key[t].astype(np.float32) + chain[t].astype(np.float32)) / 2
        assert np.abs(blend[t].astype(np.float32) - mean).max() <= 0.5
    differ = key[3] != chain[3]
    assert differ.any()  # the chain has resampled three times, the keyframe warp once
    low, high = np.minimum(key[3], chain[3]), np.maximum(key[3], chain[3])
    assert ((blend[3] >= low) & (blend[3] <= high)).all()


def test_sources_mean_is_the_copy_path_start_fed_back_with_no_network():
    """``sources_mean_<correspondence>``: frame t is the mean of the keyframe and the previous
    output, each aligned onto t, and that mean is the next frame's previous output. Against a
    reference made with the project's flow and warp, in float as a chain carries it; at frame 1
    the previous output is the keyframe itself, so the match row equals ``warp_match`` there."""
    import torch

    import correspond

    truths, lines = moving_square_shot([10, 12, 15, 19])
    ln = lines["s"]

    def warp(colour, t, s):
        return correspond.warp(colour, correspond.flow_tensor(correspond.line_flow(ln[t], ln[s]))[None]).clamp(0, 1)
    key = torch.from_numpy(truths["s"][0]).permute(2, 0, 1).float()[None] / 255
    out1 = (warp(key, 1, 0) + warp(key, 1, 0)) / 2
    out2 = (warp(key, 2, 0) + warp(out1, 2, 1)) / 2
    out3 = (warp(key, 3, 0) + warp(out2, 3, 2)) / 2
    got = reproduce.trivial_outputs("sources_mean_flow", truths, lines)["s"]
    assert np.array_equal(got[0], truths["s"][0])
    for mine, ref in ((got[1], out1), (got[2], out2), (got[3], out3)):
        assert np.abs(mine.astype(int) - (ref[0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1
    # from frame 3 on the previous output is itself a mean, not the plain chained warp of warp_blend
    not_recursive = reproduce.trivial_outputs("warp_blend", truths, lines)["s"][3]
    assert np.abs(got[3].astype(int) - not_recursive.astype(int)).max() > 1
    match = reproduce.trivial_outputs("sources_mean_match", truths, lines)["s"]
    assert np.abs(match[1].astype(int) - reproduce.trivial_outputs("warp_match", truths, lines)["s"][1]).max() <= 1


def test_sources_mean_with_views_averages_the_mirrored_pipelines():
    """--views 2 (as a model is given it): frame 1 is the mean of the row made on the shot and the
    row made on the left-right mirrored shot (its own flow), mirrored back; frame 2 and on carry
    that mean, so it is not the mean of the two rows there."""
    truths, lines = moving_square_shot([10, 12, 15, 19])
    flip = {"s": [np.ascontiguousarray(f[:, ::-1]) for f in truths["s"]]}
    flip_lines = {"s": [np.ascontiguousarray(f[:, ::-1]) for f in lines["s"]]}
    plain = reproduce.trivial_outputs("sources_mean_flow", truths, lines)["s"]
    mirrored = [f[:, ::-1] for f in reproduce.trivial_outputs("sources_mean_flow", flip, flip_lines)["s"]]
    two = reproduce.trivial_outputs("sources_mean_flow", truths, lines, views=2)["s"]
    assert np.array_equal(two[0], truths["s"][0])
    mean1 = (plain[1].astype(np.float32) + mirrored[1]) / 2
    assert np.abs(two[1] - mean1).max() <= 1
    assert np.abs(plain[1].astype(int) - mirrored[1]).max() > 2  # the two flows did differ


def test_the_correspondence_choice_and_the_still_window_go_to_tcvc_alone():
    args = reproduce.build_parser().parse_args(["--train_clips", "a", "--eval_clips", "b", "--out", "o",
                                                "--steps", "1", "--correspondence", "match", "--still_window", "9"])
    flags = reproduce.model_flags(args)
    assert flags["tcvc"][-4:] == ["--correspondence", "match", "--still_window", "9"]
    assert flags["baseline"][-2:] == ["--correspondence", "flow"]  # never given a source either way
    plain = reproduce.model_flags(reproduce.build_parser().parse_args(
        ["--train_clips", "a", "--eval_clips", "b", "--out", "o", "--steps", "1"]))
    assert plain["tcvc"] == reproduce.MODELS["tcvc"]


def test_keep_uses_a_trained_model_as_it_is_or_says_it_is_missing(tmp_path, capsys):
    with pytest.raises(reproduce.UserError, match="--keep baseline: there is no trained model"):
        reproduce.kept_model("baseline", tmp_path)
    run = tmp_path / "runs" / "baseline"
    run.mkdir(parents=True)
    (run / "generator.pt").write_bytes(b"weights")
    (run / "log.jsonl").write_text('{"step": 7}\n')
    assert reproduce.kept_model("baseline", tmp_path) == run / "generator.pt"
    assert "baseline: 7 steps (kept as it is, --keep)" in capsys.readouterr().out


def test_match_headroom_oracles_by_hand():
    """Two flat halves split by a line; in frame t their colours are swapped and a shaded band
    is added on the left. The plain warp (no motion) keeps the keyframe's colours, and so does
    the vote; the keyframe oracle finds each half's colour in the other half of the keyframe;
    its shaded form keeps the band; the truth oracles give the truth inside the regions."""
    import match_headroom

    size = 24
    key = np.zeros((size, size, 3), np.uint8)
    key[:, :12], key[:, 12:] = (200, 40, 40), (40, 40, 200)
    line = np.full((size, size), 255, np.uint8)
    line[:, 12] = 0
    truth = key[:, ::-1].copy()                  # swapped: blue left, red right
    truth[:, :12][4:8] = (60, 60, 220)             # a band of another shade inside the left half
    paint = {s: match_headroom.painted(s, truth, key, line, line) for s in match_headroom.SETTINGS}
    labels = match_headroom.regions.segment(line)
    left, right = labels == labels[0, 0], labels == labels[0, -1]
    assert np.array_equal(paint["warp_keyframe"], key)  # identical line art: a zero flow, the copy
    assert (paint["vote"][left] == (200, 40, 40)).all() and (paint["vote"][right] == (40, 40, 200)).all()
    assert (paint["oracle_keyframe"][left] == (40, 40, 200)).all()
    assert (paint["oracle_keyframe"][right] == (200, 40, 40)).all()
    # shaded: the warp inside the region (flat red) shifted to blue: flat too, the band is lost
    assert np.array_equal(paint["oracle_keyframe_shaded"], paint["oracle_keyframe"])
    assert (paint["oracle_truth"][left] == (40, 40, 200)).all()  # the left half's median: blue
    assert np.array_equal(paint["truth_on_regions"][labels >= 0], truth[labels >= 0])
    lines_kept = labels < 0
    for name in match_headroom.SETTINGS:
        assert np.array_equal(paint[name][lines_kept], key[lines_kept]), name


def test_the_learning_curve_scores_every_checkpoint_as_the_study_scores_the_model(tmp_path, frame_factory):
    from types import SimpleNamespace
    import learning_curve
    import utils
    study = tmp_path / "study"
    for i in range(6):
        utils.write_image(study / "data" / "train" / "s0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=0))
    for i in range(7):
        utils.write_image(study / "data" / "eval" / "e0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=3))
    with pytest.raises(reproduce.UserError, match="holds no step checkpoints"):
        learning_curve.step_checkpoints(study / "runs" / "tcvc")
    args = SimpleNamespace(image_size=32, batch_size=2, seed=1, device="cpu", steps=2, minutes=None,
                           train_args=["--", "--vgg_weights", "random", "--ngf", "8", "--num_workers", "0",
                                       "--save_every", "1", "--keep_last", "5"])
    final = reproduce.train_model("tcvc", [], study / "data" / "train", study, args)
    assert [s for s, _ in learning_curve.step_checkpoints(study / "runs" / "tcvc")] == [1, 2]
    curve_args = learning_curve.build_parser().parse_args(
        ["--out", str(study), "--image_size", "32", "--settings", "tcvc_keyframe", "tcvc_2keys",
         "--no_model", "warp_keyframe"])
    assert learning_curve.main(curve_args) == 0
    rows = json.loads((study / "curve.json").read_text())["results"]
    assert set(rows) == {"warp_keyframe", "tcvc_keyframe@1", "tcvc_keyframe@2", "tcvc_2keys@1", "tcvc_2keys@2"}
    assert rows["tcvc_keyframe@2"]["overall"]["frames"] == 6       # frames 1 to N-1
    assert rows["tcvc_2keys@2"]["overall"]["frames"] == 5          # frames 1 to N-2: the keyframes left out
    # the last checkpoint is the model the study ends with: the same figures as the study's own scoring
    study_args = SimpleNamespace(image_size=32, device="cpu", views=1)
    direct = reproduce.evaluate({"tcvc": final}, study / "data" / "eval", tmp_path / "direct", study_args,
                                settings=["tcvc_keyframe", "tcvc_2keys"])
    for setting in ("tcvc_keyframe", "tcvc_2keys"):
        assert rows[f"{setting}@2"]["overall"]["psnr"] == pytest.approx(direct[setting]["overall"]["psnr"], abs=1e-9)
    assert rows["tcvc_keyframe@1"]["overall"]["psnr"] != rows["tcvc_keyframe@2"]["overall"]["psnr"]
    # --views as the study's: the same figures as the study's scoring with those views, other than one view's
    views = learning_curve.build_parser().parse_args(["--out", str(study), "--image_size", "32", "--steps", "2",
                                                      "--no_model", "--views", "2"])
    assert learning_curve.main(views) == 0
    two = json.loads((study / "curve.json").read_text())["results"]["tcvc_keyframe@2"]["overall"]["psnr"]
    direct = reproduce.evaluate({"tcvc": final}, study / "data" / "eval", tmp_path / "direct2",
                                SimpleNamespace(image_size=32, device="cpu", views=2), settings=["tcvc_keyframe"])
    assert two == pytest.approx(direct["tcvc_keyframe"]["overall"]["psnr"], abs=1e-9)
    assert two != rows["tcvc_keyframe@2"]["overall"]["psnr"]
    only = learning_curve.build_parser().parse_args(["--out", str(study), "--image_size", "32", "--steps", "2",
                                                     "--no_model"])
    assert learning_curve.main(only) == 0
    assert set(json.loads((study / "curve.json").read_text())["results"]) == {"tcvc_keyframe@2"}
    with pytest.raises(reproduce.UserError, match=r"no checkpoint of step 3 \(it has 1, 2\)"):
        learning_curve.main(learning_curve.build_parser().parse_args(["--out", str(study), "--steps", "3"]))


def test_error_split_by_hand(tmp_path):
    """Red and blue halves with a drawn black line between them; an output that is the truth
    except 10 levels off on every line pixel has all its error on the lines, PSNR 28.13 dB
    there (10 log10(255^2 / 100)) and 100 (the cap) inside the regions and with the lines pasted."""
    import error_split
    truth = np.zeros((24, 24, 3), np.uint8)
    truth[:, :11], truth[:, 13:] = (200, 40, 40), (40, 40, 200)   # columns 11-12: the drawn line
    lines = error_split.regions.segment(error_split.data_lib.make_line_art(truth, "canny")) < 0
    assert 0 < lines.mean() < 0.5 and lines[:, 11:13].all() and not lines[:, 0].any()
    output = truth.copy()
    output[lines] += 10
    got = error_split.frame_split(output, truth)
    assert got["line_share"] == pytest.approx(lines.mean())
    assert got["line_error_share"] == pytest.approx(1.0)
    assert got["psnr_lines"] == pytest.approx(10 * np.log10(255 ** 2 / 100))
    assert got["psnr_regions"] == 100.0 and got["truth_on_lines"] == 100.0
    assert got["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / (100 * lines.mean())))


def test_error_split_nearest_outside_and_a_missing_setting(tmp_path):
    import error_split
    image = np.zeros((1, 5, 3), np.uint8)
    image[0, 0], image[0, 4] = (10, 10, 10), (90, 90, 90)
    mask = np.array([[False, True, True, True, False]])
    filled = error_split.nearest_outside(image, mask)
    assert filled[0, 1].tolist() == [10] * 3 and filled[0, 3].tolist() == [90] * 3
    assert filled[0, 2].tolist() in ([10] * 3, [90] * 3)  # the middle is as near to either end
    for i in range(3):
        reproduce.utils.write_image(tmp_path / "data" / "eval" / "s" / f"frame_{i:03d}.png", np.full((8, 8, 3), 99, np.uint8))
    with pytest.raises(reproduce.UserError, match="the study did not colour s as tcvc_keyframe"):
        error_split.split(tmp_path, ["tcvc_keyframe"], 8)


def test_error_split_frames_without_lines_and_a_study_of_another_size(tmp_path):
    """A flat frame has no line pixels: no line PSNR for it, and the means (and the table's "-")
    are over the frames that have one. Outputs at another size than --image_size are refused."""
    import error_split
    flat = np.full((8, 8, 3), 99, np.uint8)
    got = error_split.frame_split(flat, flat)
    assert got["psnr_lines"] is None and got["line_share"] == 0.0 and got["psnr"] == 100.0
    for i in range(3):
        reproduce.utils.write_image(tmp_path / "data" / "eval" / "s" / f"frame_{i:03d}.png", flat)
        reproduce.utils.write_image(tmp_path / "outputs" / "warp_keyframe" / "s" / f"frame_{i:03d}.png", flat)
    found = error_split.split(tmp_path, ["warp_keyframe"], 8)
    assert found["warp_keyframe"]["psnr_lines"] is None and found["warp_keyframe"]["psnr_regions"] == 100.0
    assert "| warp_keyframe | 100.00 | 0% | 0% | - |" in error_split.table(found)
    with pytest.raises(reproduce.UserError, match="give --image_size as the study had it"):
        error_split.split(tmp_path, ["warp_keyframe"], 16)


def test_chain_headroom_oracles_by_hand():
    """Two candidates, two regions and a line between them: each region takes the candidate
    nearer the truth over the region, the line keeps the base; per pixel, the nearer one."""
    import chain_headroom
    truth = np.zeros((4, 5, 3), np.uint8)
    truth[:, 3:] = 255
    truth[0, 0] = 255  # one pixel of the left region is nearer the other candidate
    labels = np.array([[0, 0, -1, 1, 1]] * 4)
    a, b, base = (np.full((4, 5, 3), v, np.uint8) for v in (10, 200, 77))
    region = chain_headroom.oracle([a, b], truth, labels, base)
    assert (region[:, :2] == 10).all() and (region[:, 2] == 77).all() and (region[:, 3:] == 200).all()
    pixel = chain_headroom.oracle([a, b], truth, None, base)
    assert pixel[0, 0, 0] == 200 and (pixel[1:, :3] == 10).all() and (pixel[:, 3:] == 200).all()
    assert (chain_headroom.oracle([a, b], truth, np.full((4, 5), -1), base) == 77).all()  # no region: the base


def test_chain_headroom_scores_the_study_s_output_and_bounds_its_candidates(tmp_path, frame_factory):
    """On a shot coloured by a select model: the output row is the study's tcvc_keyframe (one
    view), the pixel oracle is at least as near the truth as every candidate at every frame, the
    region oracle over all candidates at least as near as the one over the two sources, and a
    model that blends no keyframe is refused in one line."""
    from types import SimpleNamespace
    import chain_headroom
    import models
    import torch
    import utils
    from metrics import psnr
    eval_root = tmp_path / "eval"
    for i in range(6):
        utils.write_image(eval_root / "e0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=3))
    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8, correspondence="select")
    ckpt = tmp_path / "g.pt"
    torch.save(models.generator_export(models.build_generator(cfg), cfg, 32, "canny"), ckpt)
    out = tmp_path / "headroom.json"
    assert chain_headroom.main(["--checkpoint", str(ckpt), "--eval_data", str(eval_root), "--image_size", "32",
                                "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    direct = reproduce.evaluate({"tcvc": ckpt}, eval_root, tmp_path / "direct",
                                SimpleNamespace(image_size=32, device="cpu", views=1), settings=["tcvc_keyframe"])
    assert results["output"]["psnr"] == round(direct["tcvc_keyframe"]["overall"]["psnr"], 2)
    assert {"prev_unmoved", "prev_warped", "prev_matched", "key_matched", "generated"} <= set(results)

    colorizer = chain_headroom.colorize.Colorizer.from_checkpoint(ckpt, device="cpu", image_size=32)
    truths, lines, _ = chain_headroom.held_out(eval_root, 32)
    made = {k: v["e0"] for k, v in chain_headroom.headroom(colorizer, truths, lines).items()}
    candidates = [k for k in made if k not in ("output", "sources_mean") and not k.startswith(("oracle", "truth"))]
    frames = truths["e0"]
    for t in range(1, len(frames)):
        best = max(psnr(made[k][t], frames[t]) for k in candidates)
        assert psnr(made["oracle_pixel_all"][t], frames[t]) >= best - 1e-9
        assert psnr(made["oracle_region_all"][t], frames[t]) >= psnr(made["oracle_region_sources"][t], frames[t]) - 1e-9
    mean = (made["prev"][3].astype(int) + made["key"][3]) / 2
    assert np.abs(made["sources_mean"][3] - mean).max() <= 1
    import correspond  # the keyframe's ways are resampled as the model resamples its keyframe (bicubic)
    arts = [correspond.flow_art(f, line, "canny", cfg.flow_scale) for f, line in zip(frames, lines["e0"])]
    for t in (2, 4):  # along the model's flow, on the frames' flow art at its scale
        want = {r: correspond.warp_frame(frames[0], arts[t], arts[0], still_window=cfg.still_window,
                                         resample=r, scale=cfg.flow_scale).astype(int) for r in correspond.RESAMPLES}
        assert np.abs(made["key_warped"][t] - want["bicubic"]).max() <= 1
        assert np.abs(made["key_warped"][t] - want["bilinear"]).max() > 1
    on_lines = chain_headroom.regions.segment(lines["e0"][3]) < 0
    assert 0 < on_lines.mean() < 1
    assert (made["truth_in_regions"][3][on_lines] == made["output"][3][on_lines]).all()
    assert (made["truth_in_regions"][3][~on_lines] == frames[3][~on_lines]).all()
    assert (made["truth_on_lines"][3][on_lines] == frames[3][on_lines]).all()
    assert (made["truth_on_lines"][3][~on_lines] == made["output"][3][~on_lines]).all()

    flat = models.ModelConfig(ngf=8, keyframe_input=False)
    torch.save(models.generator_export(models.build_generator(flat), flat, 32, "canny"), tmp_path / "flat.pt")
    with pytest.raises(reproduce.UserError, match="no copy path with a keyframe input"):
        chain_headroom.main(["--checkpoint", str(tmp_path / "flat.pt"), "--eval_data", str(eval_root),
                             "--image_size", "32"])


def test_pseudo_shot_moves_the_keyframe_as_its_poses_say():
    import pseudo_shot
    image = np.zeros((40, 56, 3), np.uint8)
    image[19:22, 29:32] = 255  # a 3x3 dot centred on (x 30, y 20)
    rng = np.random.default_rng(3)
    poses = pseudo_shot.motion(rng, 5, 40, 56, elastic=0.0)
    assert not np.allclose(poses[0][0], poses[-1][0])  # it moves
    for affine, offsets in poses:
        assert not offsets.any()
        frame = pseudo_shot.render(image, affine, offsets).astype(float).sum(-1)
        ys, xs = np.mgrid[0:40, 0:56]
        found = np.array([(xs * frame).sum(), (ys * frame).sum()]) / frame.sum()  # the dot's centroid
        assert np.abs(found - affine @ [30, 20, 1]).max() < 0.5
    bent = pseudo_shot.motion(np.random.default_rng(3), 5, 40, 56, elastic=0.03)
    assert np.abs(bent[2][1]).max() > 0.1  # the elastic field is drawn and applied
    assert not np.array_equal(pseudo_shot.render(image, *bent[2]), pseudo_shot.render(image, *poses[2]))


def test_pseudo_shot_reads_only_each_keyframe_and_writes_only_a_new_folder(tmp_path, capsys):
    import pseudo_shot
    root = tmp_path / "eval"
    for shot in ("a/shot_0001", "b/shot_0001"):
        (root / shot).mkdir(parents=True)
        reproduce.utils.write_image(root / shot / "frame_000000.png", np.full((24, 32, 3), 90, np.uint8))
        (root / shot / "frame_000001.png").write_bytes(b"not a png")  # read, it would fail
    before = sorted((p, p.read_bytes()) for p in root.rglob("*") if p.is_file())
    assert pseudo_shot.main(["--eval_data", str(root), "--out", str(tmp_path / "adapt"), "--frames", "3"]) == 0
    written = sorted(p.relative_to(tmp_path / "adapt").as_posix() for p in (tmp_path / "adapt").rglob("*.png"))
    assert written == [f"{s}/shot_0001/frame_00000{i}.png" for s in "ab" for i in range(3)]
    assert (reproduce.utils.read_rgb(tmp_path / "adapt/a/shot_0001/frame_000002.png") == 90).all()  # flat stays flat
    assert not (tmp_path / ".adapt.partial").exists()
    assert sorted((p, p.read_bytes()) for p in root.rglob("*") if p.is_file()) == before
    with pytest.raises(reproduce.utils.UserError, match="already exists"):
        pseudo_shot.main(["--eval_data", str(root), "--out", str(tmp_path / "adapt")])
    (tmp_path / ".again.partial").mkdir()
    with pytest.raises(reproduce.utils.UserError, match="interrupted"):
        pseudo_shot.main(["--eval_data", str(root), "--out", str(tmp_path / "again")])
    assert not (tmp_path / "again").exists()


def still_and_moving_shot(root, frames=4, size=48):
    """A filled square that stays and a filled circle that moves 2 pixels a frame, outlined in black."""
    import cv2
    import utils
    for i in range(frames):
        image = np.full((size, size, 3), 230, np.uint8)
        cv2.rectangle(image, (4, 6), (18, 26), (200, 40, 40), -1)
        cv2.rectangle(image, (4, 6), (18, 26), (0, 0, 0), 1)
        cv2.circle(image, (30 + 2 * i, 30), 8, (40, 40, 200), -1)
        cv2.circle(image, (30 + 2 * i, 30), 8, (0, 0, 0), 1)
        utils.write_image(root / "s0" / f"frame_{i:03d}.png", image)


def test_still_flow_scores_warps_and_the_model_on_the_windowed_flow(tmp_path):
    """Window 0 gives the study's own rows (the model's too); with a window, the warp rows are the
    frames warped along line_flow(still_window=W), made here by hand, and the model is coloured
    on that flow as well (its output changes where the flow does)."""
    from types import SimpleNamespace
    import still_flow
    import models
    import torch
    import correspond
    import utils
    eval_root = tmp_path / "eval"
    still_and_moving_shot(eval_root)
    torch.manual_seed(0)
    # trained on the plain flow and resampling the keyframe bilinearly, as the stored study models were
    cfg = models.ModelConfig(ngf=8, still_window=0, keyframe_resample="bilinear", flow_scale=1)
    ckpt = tmp_path / "g.pt"
    torch.save(models.generator_export(models.build_generator(cfg), cfg, 48, "canny"), ckpt)
    out = tmp_path / "still"
    assert still_flow.main(["--eval_data", str(eval_root), "--checkpoint", str(ckpt), "--out", str(out),
                            "--windows", "0", "5", "--image_size", "48"]) == 0
    results = json.loads((out / "results.json").read_text())
    direct = reproduce.evaluate({"tcvc": ckpt}, eval_root, tmp_path / "direct",
                                SimpleNamespace(image_size=48, device="cpu", views=1),
                                settings=["warp_keyframe", "warp_chain", "tcvc_keyframe"])
    for setting, r in direct.items():
        assert results["0"][setting]["psnr"] == r["overall"]["psnr"]
    truths = reproduce.eval_shots(eval_root, 48)["s0"]
    lines = [reproduce.data_lib.make_line_art(f, "canny") for f in truths]
    assert correspond.still_mask(lines[2], lines[0], 5).any()  # the window has something to change
    flow = correspond.flow_tensor(correspond.line_flow(lines[2], lines[0], still_window=5))[None]
    colour = torch.from_numpy(truths[0].transpose(2, 0, 1).copy()).float()[None] / 255
    by_hand = (correspond.warp(colour, flow)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    made = utils.read_rgb(utils.list_frames(out / "window_5/outputs/warp_keyframe/s0")[2])
    assert np.array_equal(made, by_hand)
    plain = utils.read_rgb(utils.list_frames(out / "window_0/outputs/warp_keyframe/s0")[2])
    assert not np.array_equal(made, plain)
    model = [utils.read_rgb(utils.list_frames(out / f"window_{w}/outputs/tcvc_keyframe/s0")[2]) for w in (0, 5)]
    assert not np.array_equal(*model)
    with pytest.raises(reproduce.UserError, match="already exists"):
        still_flow.main(["--eval_data", str(eval_root), "--out", str(out)])


def test_still_flow_trains_like_a_run_on_the_windowed_flow_and_scores_it(tmp_path, frame_factory, monkeypatch):
    """--train_like trains with the run's options into OUT/run, every flow of its training given the
    window (still_mask is consulted, and only with it: scoring here is at window 0), and scores the
    model it made; bad configs get one line."""
    import still_flow
    import correspond
    import train
    import utils
    data = tmp_path / "frames"
    for i in range(5):
        utils.write_image(data / "shot0" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=2))
    still_and_moving_shot(tmp_path / "eval")
    options = vars(train.build_parser().parse_args(
        ["--data", str(data), "--run_dir", str(tmp_path / "elsewhere"), "--image_size", "32", "--batch_size", "2",
         "--ngf", "8", "--ndf", "8", "--num_workers", "0", "--vgg_weights", "random", "--device", "cpu",
         "--val_fraction", "0", "--max_steps", "2", "--keyframe_prob", "1"]))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(options | {"model": {"ngf": 8}}))
    windows = []
    real = correspond.still_mask

    def spy(line_t, line_s, window):
        windows.append(window)
        return real(line_t, line_s, window)

    monkeypatch.setattr(correspond, "still_mask", spy)
    out = tmp_path / "trained"
    assert still_flow.main(["--eval_data", str(tmp_path / "eval"), "--train_like", str(config), "--train_window", "7",
                            "--out", str(out), "--windows", "0", "--image_size", "32"]) == 0
    assert (out / "run" / "generator.pt").is_file() and not (tmp_path / "elsewhere").exists()
    # scored at window 0: every call was the training's, on flow art at the flow's scale (7 pixels of
    # the network's resolution are 14 of the enlarged art) and on the network's line art inside it
    # (7: where a drawing is held)
    assert windows and set(windows) == {7 * reproduce.models.FLOW_SCALE, 7}
    assert reproduce.models.load_generator(out / "run" / "generator.pt")[1].still_window == 7
    assert "tcvc_keyframe" in json.loads((out / "results.json").read_text())["0"]
    config.write_text(json.dumps({"no_such_option": 1, "data": str(data)}))
    with pytest.raises(reproduce.UserError, match="no_such_option"):
        still_flow.main(["--eval_data", str(tmp_path / "eval"), "--train_like", str(config), "--out", str(tmp_path / "x")])
    with pytest.raises(reproduce.UserError, match="not both"):
        still_flow.main(["--eval_data", str(tmp_path / "eval"), "--train_like", str(config), "--checkpoint", "g.pt",
                         "--out", str(tmp_path / "y")])


@pytest.mark.parametrize("argv, message", [
    (["--frames", "1"], "--frames must be at least 2"),
    (["--elastic", "-0.1"], "--elastic must be >= 0"),
])
def test_pseudo_shot_refuses_bad_numbers_in_one_line(tmp_path, argv, message):
    import pseudo_shot
    with pytest.raises(reproduce.UserError, match=message):
        pseudo_shot.main(["--eval_data", str(tmp_path), "--out", str(tmp_path / "out")] + argv)
    assert not (tmp_path / "out").exists()


def test_still_flow_refuses_a_negative_window_and_an_unreadable_config(tmp_path):
    import still_flow
    still_and_moving_shot(tmp_path / "eval")
    with pytest.raises(reproduce.UserError, match="windows must be >= 0"):
        still_flow.main(["--eval_data", str(tmp_path / "eval"), "--out", str(tmp_path / "a"), "--windows", "-1"])
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(reproduce.UserError, match="cannot read"):
        still_flow.main(["--eval_data", str(tmp_path / "eval"), "--out", str(tmp_path / "b"),
                         "--train_like", str(tmp_path / "config.json")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_no_model_rows_warp_along_the_models_own_flow(tmp_path):
    """reproduce.evaluate warps the keyframe along the flow the tcvc model is given: its recorded
    still window, or --still_window for every row; models trained on different flows, scored
    together without it, are one clear line."""
    from types import SimpleNamespace
    import models
    import torch
    import utils
    eval_root = tmp_path / "eval"
    still_and_moving_shot(eval_root)
    paths = {}
    for window in (0, 5):
        cfg = models.ModelConfig(ngf=8, still_window=window, keyframe_resample="bilinear", flow_scale=1)
        paths[window] = tmp_path / f"g{window}.pt"
        torch.save(models.generator_export(models.build_generator(cfg), cfg, 48, "canny"), paths[window])

    def warped(checkpoints, name, **over):
        args = SimpleNamespace(image_size=48, device="cpu", views=1, **over)
        reproduce.evaluate(checkpoints, eval_root, tmp_path / name, args, settings=["warp_keyframe"])
        return utils.read_rgb(utils.list_frames(tmp_path / name / "outputs/warp_keyframe/s0")[2])

    truths = reproduce.eval_shots(eval_root, 48)["s0"]
    lines = [reproduce.data_lib.make_line_art(f, "canny") for f in truths]
    by_window = {w: reproduce.correspond.warp_frame(truths[0], lines[2], lines[0], still_window=w) for w in (0, 5)}
    assert not np.array_equal(by_window[0], by_window[5])
    assert np.array_equal(warped({"tcvc": paths[5]}, "model5"), by_window[5])
    assert np.array_equal(warped({"tcvc": paths[0]}, "model0"), by_window[0])
    assert np.array_equal(warped({}, "none"), by_window[0])
    assert np.array_equal(warped({"tcvc": paths[0]}, "given", still_window=5), by_window[5])
    assert np.array_equal(warped({"tcvc": paths[5], "baseline": paths[0]}, "with_baseline"), by_window[5])
    with pytest.raises(reproduce.UserError, match="different flows"):
        warped({"a": paths[5], "b": paths[0]}, "mixed")


def test_the_no_model_rows_resample_the_keyframe_as_the_model_does(tmp_path):
    """reproduce.evaluate resamples the keyframe of every no-model row as the tcvc model resamples
    its own (ModelConfig.keyframe_resample): warp_keyframe is the keyframe warped bicubic for a model
    that warps it so, bilinear for one that does not and without a model; the chained warp is
    bilinear either way (a chain resamples its previous frame bilinearly); models that resample apart
    are one clear line."""
    from types import SimpleNamespace
    import models
    import torch
    import utils
    eval_root = tmp_path / "eval"
    still_and_moving_shot(eval_root)
    paths = {}
    for resample in ("bilinear", "bicubic"):
        cfg = models.ModelConfig(ngf=8, keyframe_resample=resample, flow_scale=1)
        paths[resample] = tmp_path / f"g{resample}.pt"
        torch.save(models.generator_export(models.build_generator(cfg), cfg, 48, "canny"), paths[resample])

    def warped(checkpoints, name, setting="warp_keyframe"):
        args = SimpleNamespace(image_size=48, device="cpu", views=1)
        reproduce.evaluate(checkpoints, eval_root, tmp_path / name, args, settings=[setting])
        return utils.read_rgb(utils.list_frames(tmp_path / name / f"outputs/{setting}/s0")[2])

    truths = reproduce.eval_shots(eval_root, 48)["s0"]
    lines = [reproduce.data_lib.make_line_art(f, "canny") for f in truths]
    window = models.STILL_WINDOW
    by_way = {r: reproduce.correspond.warp_frame(truths[0], lines[2], lines[0], still_window=window, resample=r)
              for r in ("bilinear", "bicubic")}
    assert not np.array_equal(by_way["bilinear"], by_way["bicubic"])
    assert np.array_equal(warped({"tcvc": paths["bicubic"]}, "cubic"), by_way["bicubic"])
    assert np.array_equal(warped({"tcvc": paths["bilinear"]}, "linear"), by_way["bilinear"])
    assert np.array_equal(warped({}, "none"), reproduce.correspond.warp_frame(truths[0], lines[2], lines[0]))
    chain = reproduce.correspond.keyframe_warps(truths, lines, still_window=window)["warp_chain"][2]
    assert np.array_equal(warped({"tcvc": paths["bicubic"]}, "chain", "warp_chain"), chain)
    with pytest.raises(reproduce.UserError, match="resample their keyframes apart"):
        warped({"a": paths["bicubic"], "b": paths["bilinear"]}, "mixed")


def test_bench_infer_runs_the_variants_in_turn_and_keeps_each_ones_least_time(tmp_path, monkeypatch):
    """bench_infer.interleaved_seconds runs test.py's variants one after the other, round after
    round (a, b, a, b, ...), each with its own flags and output folder, and keeps the least time of
    each: a slow spell falls on all of them, and the least disturbed run counts."""
    import bench_infer
    runs, times = [], iter([5.0, 9.0, 3.0, 8.0, 4.0, 7.5])
    monkeypatch.setattr(bench_infer, "pipeline_seconds", lambda ckpt, shot, out, device, extra:
                        runs.append((out.name, tuple(extra))) or next(times))
    got = bench_infer.interleaved_seconds(Path("g.pt"), Path("shot"), tmp_path, "cpu",
                                          {"plain": [], "bilinear": ["--keyframe_resample", "bilinear"]}, 3)
    assert got == {"plain": 3.0, "bilinear": 7.5}
    assert runs == [("out_plain_0", ()), ("out_bilinear_0", ("--keyframe_resample", "bilinear")),
                    ("out_plain_1", ()), ("out_bilinear_1", ("--keyframe_resample", "bilinear")),
                    ("out_plain_2", ()), ("out_bilinear_2", ("--keyframe_resample", "bilinear"))]


def test_the_no_model_rows_compute_the_flow_at_the_models_scale(tmp_path):
    """reproduce.evaluate warps every no-model row along the flow the tcvc model computes: on the
    frames' flow art at its ModelConfig.flow_scale (2 for a new model, 1 for one saved before the
    setting); models whose scales differ are one clear line."""
    from types import SimpleNamespace
    import models
    import torch
    import utils
    eval_root = tmp_path / "eval"
    still_and_moving_shot(eval_root)
    paths = {}
    for scale in (1, 2):
        cfg = models.ModelConfig(ngf=8, flow_scale=scale)
        paths[scale] = tmp_path / f"g{scale}.pt"
        torch.save(models.generator_export(models.build_generator(cfg), cfg, 48, "canny"), paths[scale])

    def warped(checkpoints, name, setting="warp_keyframe"):
        reproduce.evaluate(checkpoints, eval_root, tmp_path / name, SimpleNamespace(image_size=48, device="cpu", views=1),
                           settings=[setting])
        return utils.read_rgb(utils.list_frames(tmp_path / name / f"outputs/{setting}/s0")[2])

    truths = reproduce.eval_shots(eval_root, 48)["s0"]
    lines = [reproduce.data_lib.make_line_art(f, "canny") for f in truths]
    by_scale = {}
    for scale in (1, 2):
        arts = [reproduce.correspond.flow_art(f, line, "canny", scale) for f, line in zip(truths, lines)]
        assert arts[0].shape == ((48, 48) if scale == 1 else (96, 96, 2))
        by_scale[scale] = reproduce.correspond.warp_frame(truths[0], arts[2], arts[0], still_window=models.STILL_WINDOW,
                                                          resample="bicubic", scale=scale)
    assert not np.array_equal(by_scale[1], by_scale[2])
    assert np.array_equal(warped({"tcvc": paths[2]}, "two"), by_scale[2])
    assert np.array_equal(warped({"tcvc": paths[1]}, "one"), by_scale[1])
    with pytest.raises(reproduce.UserError, match="flows at different scales"):
        warped({"a": paths[1], "b": paths[2]}, "mixed")
