"""test.py: recurrent colorization of shots and videos, keyframes, outputs and bad input."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

import dataset
import models
import utils
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import test as colorize_cli  # noqa: E402  (the top-level test.py script)

SIZE = 32


class EchoGenerator(nn.Module):
    """Returns its previous frame brightened by 0.1: frame k of a chain started from black
    comes out as 0.1 * (k + 1), so the outputs reveal what was fed back."""

    def forward(self, sources):
        prev = sources.prev.masked().colour
        return models.Colouring((prev + 0.1).clamp(0, 1), models.original_input(sources))


def write_shot(folder, frame_factory, n, seed=0, size=40):
    for i in range(n):
        utils.write_image(folder / f"frame_{i:03d}.png", frame_factory(i, size, size, seed=seed))


def args_for(inp, out, ckpt="unused.pt", *extra):
    return colorize_cli.build_parser().parse_args(
        ["--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out), "--device", "cpu", *extra])


@pytest.fixture
def echo(monkeypatch):
    cfg = models.ModelConfig()
    monkeypatch.setattr(models, "load_generator",
                        lambda path, device: (EchoGenerator(), cfg, {"image_size": SIZE, "line_art": "canny"}))


def mean_value(path) -> float:
    return utils.read_rgb(path).mean() / 255.0


def test_recurrence_feeds_previous_output_and_new_shot_restarts(tmp_path, frame_factory, echo):
    write_shot(tmp_path / "in" / "a", frame_factory, 4)
    write_shot(tmp_path / "in" / "b", frame_factory, 2, seed=1)
    assert colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out")) == 0
    a = [mean_value(tmp_path / "out" / "a" / f"frame_{i:03d}.png") for i in range(4)]
    b = [mean_value(tmp_path / "out" / "b" / f"frame_{i:03d}.png") for i in range(2)]
    assert a == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.003)
    assert b == pytest.approx([0.1, 0.2], abs=0.003)  # a new shot starts again from black
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(report["shots"]) == {"a", "b"} and report["overall"]["frames"] == 6


def test_frame_by_frame_feeds_black_every_time(tmp_path, frame_factory, echo):
    write_shot(tmp_path / "in", frame_factory, 3)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "x.pt", "--frame_by_frame"))
    got = [mean_value(tmp_path / "out" / f"frame_{i:03d}.png") for i in range(3)]
    assert got == pytest.approx([0.1, 0.1, 0.1], abs=0.003)


def test_first_keyframe_is_the_first_previous_frame(tmp_path, frame_factory, echo):
    write_shot(tmp_path / "in", frame_factory, 3)
    key = np.full((50, 70, 3), 102, np.uint8)  # 0.4 after scaling to [0, 1]
    utils.write_image(tmp_path / "key.png", key)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "x.pt", "--first_keyframe", str(tmp_path / "key.png")))
    got = [mean_value(tmp_path / "out" / f"frame_{i:03d}.png") for i in range(3)]
    assert got == pytest.approx([0.5, 0.6, 0.7], abs=0.003)


def test_first_keyframe_dir_gives_each_shot_its_keyframe(tmp_path, frame_factory, echo):
    for shot in ("s1", "s2"):
        write_shot(tmp_path / "in" / shot, frame_factory, 2)
    utils.write_image(tmp_path / "keys" / "s1.png", np.full((8, 8, 3), 51, np.uint8))  # 0.2
    utils.write_image(tmp_path / "keys" / "s2.png", np.full((8, 8, 3), 153, np.uint8))  # 0.6
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "x.pt", "--first_keyframe_dir", str(tmp_path / "keys")))
    assert mean_value(tmp_path / "out" / "s1" / "frame_000.png") == pytest.approx(0.3, abs=0.003)
    assert mean_value(tmp_path / "out" / "s2" / "frame_001.png") == pytest.approx(0.8, abs=0.003)


def test_full_res_keeps_input_size_and_side_by_side(tmp_path, frame_factory, echo):
    write_shot(tmp_path / "in", frame_factory, 2, size=72)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "x.pt", "--full_res", "--side_by_side"))
    assert utils.read_rgb(tmp_path / "out" / "frame_000.png").shape == (72, 72, 3)
    # the side-by-side frames (and so --video) are at the size of the frames written, their middle
    # panel the very frame written
    panel = utils.read_rgb(tmp_path / "out" / "side_by_side" / "frame_000.png")
    assert panel.shape == (72, 3 * 72, 3)
    assert np.array_equal(panel[:, 72:144], utils.read_rgb(tmp_path / "out" / "frame_000.png"))


def test_full_res_puts_colour_on_input_luminance(tmp_path, echo):
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, 32:] = 200  # a sharp edge the 32x32 network output cannot hold
    utils.write_image(tmp_path / "in" / "f_0.png", frame)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "x.pt", "--full_res"))
    out = utils.read_rgb(tmp_path / "out" / "f_0.png")
    luma = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(int)
    assert abs(luma[:, 31].mean() - 0) < 6 and abs(luma[:, 32].mean() - 200) < 6


def write_video(path, frame_factory, n_a=6, n_b=5, size=64):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (size, size))
    for i in range(n_a + n_b):
        frame = frame_factory(i, size, size, seed=0 if i < n_a else 7)
        if i >= n_a:
            frame = 255 - frame  # a hard cut to very different content
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_input_is_split_into_shots_and_video_written(tmp_path, frame_factory, echo):
    write_video(tmp_path / "clip.avi", frame_factory)
    colorize_cli.main(args_for(tmp_path / "clip.avi", tmp_path / "out", "x.pt",
                               "--video", str(tmp_path / "res.mp4"), "--side_by_side"))
    shots = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("shot_"))
    assert shots == ["shot_0001", "shot_0002"]
    assert len(list((tmp_path / "out" / "shot_0002").glob("*.png"))) == 5
    assert mean_value(tmp_path / "out" / "shot_0002" / "frame_000006.png") == pytest.approx(0.1, abs=0.003)
    cap = cv2.VideoCapture(str(tmp_path / "res.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 11
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12, abs=0.01)
    ok, first = cap.read()
    assert ok and first.shape == (SIZE, 3 * SIZE, 3)


def test_original_checkpoint_format_runs(tmp_path, frame_factory):
    torch.manual_seed(0)
    torch.save({"generator": models.ResNetGenerator().state_dict()}, tmp_path / "G.pth")
    write_shot(tmp_path / "in", frame_factory, 2)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", tmp_path / "G.pth",
                               "--image_size", str(SIZE), "--no_metrics"))
    out = utils.read_rgb(tmp_path / "out" / "frame_001.png")
    assert out.shape == (SIZE, SIZE, 3) and out.std() > 0


def test_training_checkpoint_and_lineart_input(tmp_path, frame_factory):
    cfg = models.ModelConfig(ngf=8)
    G = models.build_generator(cfg)
    torch.save(models.generator_export(G, cfg, SIZE, "canny"), tmp_path / "export.pt")
    write_shot(tmp_path / "in", frame_factory, 2)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", tmp_path / "export.pt", "--input_type", "lineart"))
    assert utils.read_rgb(tmp_path / "out" / "frame_000.png").shape == (SIZE, SIZE, 3)
    assert not (tmp_path / "out" / "metrics.json").exists()  # no ground truth for line art


# ----------------------------------------------------------------------------- bad input
def test_corrupt_frame_leaves_no_output(tmp_path, frame_factory, echo):
    write_shot(tmp_path / "in", frame_factory, 3)
    (tmp_path / "in" / "frame_001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="frame_001.png"):
        colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no partial folder


@pytest.mark.parametrize("case", ["empty", "inside", "exists", "missing_keyframe"])
def test_bad_arguments_are_user_errors(tmp_path, frame_factory, echo, case):
    (tmp_path / "in").mkdir()
    if case != "empty":
        write_shot(tmp_path / "in", frame_factory, 2)
    out, extra = tmp_path / "out", []
    if case == "inside":
        out = tmp_path / "in" / "out"
    if case == "exists":
        out.mkdir()
    if case == "missing_keyframe":
        extra = ["--first_keyframe", str(tmp_path / "nope.png")]
    with pytest.raises(UserError):
        colorize_cli.main(args_for(tmp_path / "in", out, "x.pt", *extra))


def run_cli(*argv):
    """test.py's command line as ``__main__`` runs it (utils.run_cli), in this process: a fresh
    process would spend most of its time importing torch (the real processes are in test_hostile)."""
    import contextlib
    import io
    import types
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        utils.run_cli(colorize_cli.main, colorize_cli.build_parser().parse_args([str(a) for a in argv]))
    return types.SimpleNamespace(returncode=exit_info.value.code, stderr=err.getvalue())


def test_missing_and_foreign_checkpoints_give_one_line(tmp_path, frame_factory):
    write_shot(tmp_path / "in", frame_factory, 1)
    torch.save({"discriminator": models.PatchDiscriminator().state_dict()}, tmp_path / "D.pth")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    for ckpt, message in ((tmp_path / "none.pt", "does not exist"), (tmp_path / "D.pth", "not a generator"),
                          (tmp_path / "other.pt", "not a TCVC checkpoint")):
        res = run_cli("--checkpoint", ckpt, "--input", tmp_path / "in", "--output", tmp_path / "out")
        assert res.returncode == 2 and "Traceback" not in res.stderr
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], res.stderr
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- old and new checkpoints
LEGACY_CONFIG = {"generator": "unet", "in_channels": 4, "out_channels": 3, "ngf": 8, "n_blocks": 2,
                 "depth": 4, "ndf": 64, "d_in_channels": 7}  # as saved before the copy path existed


def test_checkpoint_from_before_propagation_runs_as_it_did(tmp_path, frame_factory):
    torch.manual_seed(0)
    legacy = models.UNetGenerator(in_channels=4, ngf=8).eval()  # the network those files hold
    torch.save({"format": "tcvc-generator-1", "generator": legacy.state_dict(), "model_config": LEGACY_CONFIG,
                "image_size": SIZE, "line_art": "canny"}, tmp_path / "old.pt")
    write_shot(tmp_path / "in", frame_factory, 2)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", tmp_path / "old.pt", "--no_metrics"))
    # frame 0 by hand: cat(line art, black) through the old network's layers
    small = utils.resize(frame_factory(0, 40, 40, 0), SIZE)
    line = dataset.to_tensor(dataset.make_line_art(small, "canny"))[None]
    skips = []
    with torch.no_grad():
        h = legacy.stem(torch.cat([line, torch.zeros(1, 3, SIZE, SIZE)], 1))
        for down in legacy.down:
            skips.append(h)
            h = down(h)
        h = legacy.bottleneck(h)
        for up, skip in zip(legacy.up, reversed(skips)):
            h = up(h, skip)
        expected = dataset.to_uint8(((torch.tanh(legacy.head(h)) + 1) / 2)[0])
    got = utils.read_rgb(tmp_path / "out" / "frame_000.png")
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_new_checkpoint_with_keyframe_and_a_mislabelled_one(tmp_path, frame_factory):
    cfg = models.ModelConfig(ngf=8)
    torch.save(models.generator_export(models.build_generator(cfg), cfg, SIZE, "canny"), tmp_path / "new.pt")
    write_shot(tmp_path / "in", frame_factory, 3)
    utils.write_image(tmp_path / "key.png", frame_factory(0, 40, 40, 0))
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", tmp_path / "new.pt", "--first_keyframe",
                               str(tmp_path / "key.png")))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["overall"]["frames"] == 3
    # weights of the old network under a config that claims the new one: one clear line
    torch.save({"format": "tcvc-generator-1", "generator": models.UNetGenerator(4, ngf=8).state_dict(),
                "model_config": cfg.to_dict(), "image_size": SIZE, "line_art": "canny"}, tmp_path / "bad.pt")
    res = run_cli("--checkpoint", tmp_path / "bad.pt", "--input", tmp_path / "in", "--output", tmp_path / "o2")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "do not fit" in lines[0], res.stderr


# ----------------------------------------------------------------------------- the library
def test_the_library_colours_a_shot_with_no_command_line(tmp_path, frame_factory, monkeypatch):
    """colorize.Colorizer with plain arguments gives test.py's very frames, and no argparse is
    touched on the way (a GUI or a benchmark can call it as it is)."""
    import argparse

    import colorize

    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8)
    torch.save(models.generator_export(models.build_generator(cfg), cfg, SIZE, "canny"), tmp_path / "g.pt")
    frames = [frame_factory(i, 40, 40) for i in range(5)]
    for i, frame in enumerate(frames):
        utils.write_image(tmp_path / "in" / "s" / f"frame_{i:03d}.png", frame)
    key = frame_factory(3, 40, 40, seed=4)
    utils.write_image(tmp_path / "keys" / "s" / "frame_003.png", key)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", tmp_path / "g.pt", "--keyframes",
                               str(tmp_path / "keys"), "--no_metrics"))

    def no_parsing(*a, **k):
        raise AssertionError("the library parsed a command line")
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", no_parsing)
    colorizer = colorize.Colorizer.from_checkpoint(tmp_path / "g.pt", "cpu")
    results = colorizer.colour_shot(frames, keyframes={3: key})
    assert len(results) == 5 and all(r.shape == (SIZE, SIZE, 3) for r in results)
    for i, result in enumerate(results):
        assert np.array_equal(result, utils.read_rgb(tmp_path / "out" / "s" / f"frame_{i:03d}.png")), i
    assert np.array_equal(results[3], utils.resize(key, SIZE))  # a keyframe is output as it is
    with pytest.raises(UserError, match="outside a shot of 5 frames"):
        colorizer.colour_shot(frames, keyframes={5: key})


def test_old_flag_names_still_work_with_a_note(tmp_path, capsys):
    args = colorize_cli.build_parser().parse_args(["--reference", "k.png", "--reference_dir", "d"])
    assert (args.first_keyframe, args.first_keyframe_dir) == ("k.png", "d")
    err = capsys.readouterr().err
    assert "--reference is now --first_keyframe" in err and "--reference_dir is now --first_keyframe_dir" in err


# ----------------------------------------------------------------------------- test-time views
@pytest.mark.parametrize("views", [2, 4])
def test_views_average_the_colourings_of_the_mirrored_shot(frame_factory, views):
    """--views N: frame 0 is the mean of the model's colouring of the shot and of each mirrored
    shot (its own line art and flow, mirrored back), as colouring each mirrored shot on its own
    gives them; the frames after it carry that mean on, so they keep the frame's own size and
    differ from the plain chain."""
    import colorize

    torch.manual_seed(0)
    # no copy path: the output is the network's own colour, which a mirror changes
    cfg = models.ModelConfig(ngf=8, correspondence="flow", copy_path=False)
    G = models.build_generator(cfg).eval()
    # line-art input: Canny of a mirrored frame is not quite the mirrored Canny (16 of 1024 pixels)
    frames = [np.repeat(dataset.make_line_art(frame_factory(i, SIZE, SIZE), "canny")[..., None], 3, 2)
              for i in range(3)]
    key = frame_factory(2, SIZE, SIZE, seed=5)
    axes = {(-1,): (1,), (-2,): (0,), (-2, -1): (0, 1)}

    def shot(n_views, dims=()):
        flip = (lambda a: np.ascontiguousarray(np.flip(a, axis=axes[dims]))) if dims else (lambda a: a)
        c = colorize.Colorizer(G, cfg, "cpu", colorize.Options(SIZE, input_type="lineart", views=n_views))
        return [flip(r) for r in c.colour_shot([flip(f) for f in frames], start=flip(key))]

    plain, together = shot(1), shot(views)
    singles = [plain[0]] + [shot(1, dims)[0] for dims in colorize.VIEWS[views][1:]]
    expected = np.mean([s.astype(np.float32) for s in singles], axis=0)
    assert np.abs(together[0] - expected).max() <= 1  # uint8 rounding of each view's frame
    assert np.abs(plain[0].astype(int) - together[0]).max() > 2  # the views did differ
    assert all(r.shape == (SIZE, SIZE, 3) for r in together) and not np.array_equal(together[2], plain[2])


def test_views_are_checked_and_recorded(tmp_path, frame_factory):
    import colorize

    cfg = models.ModelConfig(ngf=8)
    with pytest.raises(UserError, match="views must be one of 1, 2, 4, got 3"):
        colorize.Colorizer(models.build_generator(cfg), cfg, "cpu", colorize.Options(SIZE, views=3))
    torch.save(models.generator_export(models.build_generator(cfg), cfg, SIZE, "canny"), tmp_path / "g.pt")
    write_shot(tmp_path / "in", frame_factory, 3)
    assert colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", tmp_path / "g.pt", "--views", "2")) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["views"] == 2
    res = run_cli("--checkpoint", tmp_path / "g.pt", "--input", tmp_path / "in", "--output", tmp_path / "o2",
                  "--views", "3")
    assert res.returncode == 2 and "--views: invalid choice" in res.stderr and not (tmp_path / "o2").exists()


class FlowSpy(nn.Module):
    """Passes its previous frame on, and keeps each frame's line art, the previous frame's, and
    the flow between them that the chain computed."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, sources):
        if sources.prev.present.item():
            lines = [(t[0, 0].numpy() * 255).round().astype(np.uint8) for t in (sources.line, sources.prev.line)]
            self.seen.append(lines + [sources.prev.flow[0]])
        return models.Colouring(sources.prev.masked().colour, models.original_input(sources))


def test_the_chain_computes_the_flow_at_the_models_scale_and_test_py_may_set_another(tmp_path, monkeypatch):
    """A model with flow_scale 2 is given, at test time as in training, the flow computed on each
    frame's flow art (Canny line art of the frame enlarged twice) and brought back to its
    resolution; test.py --flow_scale 1 computes it on the line art itself, and metrics.json says
    which. The flow of a frame and its previous one is the same whichever source it is for."""
    import correspond
    images = []
    for k in range(4):  # an outlined disc that moves by two thirds of a pixel a frame (drawn 6 times larger)
        big = np.full((288, 288, 3), 225, np.uint8)
        cv2.circle(big, (150 + 4 * k, 140), 60, (40, 60, 200), -1)
        cv2.circle(big, (150 + 4 * k, 140), 60, (0, 0, 0), 6)
        images.append(cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA))
        utils.write_image(tmp_path / "in" / f"frame_{k:03d}.png", images[-1])
    lines = [dataset.make_line_art(image) for image in images]
    spy, cfg = FlowSpy(), models.ModelConfig(ngf=8, still_window=5)
    assert cfg.flow_scale == 2
    monkeypatch.setattr(models, "load_generator",
                        lambda path, device: (spy, cfg, {"image_size": 48, "line_art": "canny"}))
    flows = {}
    for flag, scale in (([], 2), (["--flow_scale", "1"], 1)):
        spy.seen.clear()
        out = tmp_path / f"out{scale}"
        assert colorize_cli.main(args_for(tmp_path / "in", out, "g.pt", *flag)) == 0
        assert json.loads((out / "metrics.json").read_text())["flow_scale"] == scale
        assert len(spy.seen) == 3
        for t, (line_t, line_s, flow) in enumerate(spy.seen, start=1):
            assert np.array_equal(line_t, lines[t]) and np.array_equal(line_s, lines[t - 1])
            arts = [correspond.flow_art(images[k], lines[k], "canny", scale) for k in (t, t - 1)]
            assert torch.equal(flow, correspond.flow_tensor(correspond.line_flow(*arts, "canny", 5, scale)))
        flows[scale] = [flow for _, _, flow in spy.seen]
    assert not all(torch.equal(a, b) for a, b in zip(flows[1], flows[2]))
    with pytest.raises(SystemExit):  # argparse: one line naming the choices
        colorize_cli.build_parser().parse_args(["--checkpoint", "g.pt", "--input", "i", "--output", "o",
                                                "--flow_scale", "3"])


def _moving_disc_shot(tmp_path, half_pixels: int) -> None:
    """tmp_path/in: three frames of an outlined disc that moves ``half_pixels`` / 2 pixels a frame;
    tmp_path/key.png: its first frame, as a keyframe."""
    for k in range(3):
        image = np.full((48, 48, 3), 225, np.uint8)
        cv2.circle(image, (20 + half_pixels * k // 2, 24), 9, (40, 60, 200), -1)
        cv2.circle(image, (20 + half_pixels * k // 2, 24), 9, (0, 0, 0), 1)
        utils.write_image(tmp_path / "in" / f"frame_{k:03d}.png", image)
    utils.write_image(tmp_path / "key.png", utils.read_rgb(tmp_path / "in" / "frame_000.png"))


def _colour_with_setting(tmp_path, monkeypatch, setting: str, saved: str, flag: list, out) -> dict:
    """test.py from the keyframe with a small fresh model whose ModelConfig ``setting`` is ``saved``,
    given ``flag``; -> its metrics.json."""
    cfg = models.ModelConfig(ngf=8, **{setting: saved})
    G = models.build_generator(cfg)
    monkeypatch.setattr(models, "load_generator", lambda path, device: (G, cfg, {"image_size": 48, "line_art": "canny"}))
    assert colorize_cli.main(args_for(tmp_path / "in", out, "g.pt", "--first_keyframe", str(tmp_path / "key.png"),
                                      *flag)) == 0
    return json.loads((out / "metrics.json").read_text())


def test_the_keyframe_is_resampled_as_the_model_was_trained_and_test_py_may_set_another(tmp_path, monkeypatch):
    """A model resamples the keyframe it warps as it records (a new one bicubic, one saved before
    the setting bilinear); test.py --keyframe_resample sets another, the keyframe's warp changes with
    it and the previous frame's does not, and metrics.json says which."""
    import correspond
    _moving_disc_shot(tmp_path, 3)  # a pixel and a half a frame
    resamples = []
    real = correspond.warp
    monkeypatch.setattr(correspond, "warp", lambda image, flow, resample="bilinear":
                        resamples.append((image.shape[1], resample)) or real(image, flow, resample))
    for saved, flag, want in (("bicubic", [], "bicubic"), ("bilinear", [], "bilinear"),
                              ("bicubic", ["--keyframe_resample", "bilinear"], "bilinear"),
                              ("bilinear", ["--keyframe_resample", "bicubic"], "bicubic")):
        resamples.clear()
        note = _colour_with_setting(tmp_path, monkeypatch, "keyframe_resample", saved, flag,
                                    tmp_path / f"out_{saved}_{want}")
        assert note["keyframe_resample"] == want
        # each frame warps the previous frame (bilinear), then the keyframe (as asked): colour and line art at once
        assert resamples == [(4, "bilinear"), (4, want)] * 3
    with pytest.raises(SystemExit):
        args_for(tmp_path / "in", tmp_path / "bad", "g.pt", "--keyframe_resample", "nearest")
    assert not (tmp_path / "bad").exists()


def test_the_sources_are_split_as_the_model_was_trained_and_test_py_may_set_another(tmp_path, monkeypatch):
    """The copy path shares its copied weight between the previous frame and the keyframe as the
    model records (evenly or learned); test.py --source_split sets another, the generator blends
    with it (the split of every blend made) and metrics.json says which."""
    _moving_disc_shot(tmp_path, 2)  # a pixel a frame
    splits = []
    real = models.blend_sources
    monkeypatch.setattr(models, "blend_sources", lambda head, aligned, condition, split="learned":
                        splits.append(split) or real(head, aligned, condition, split))
    for saved, flag, want in (("even", [], "even"), ("learned", [], "learned"),
                              ("even", ["--source_split", "learned"], "learned"),
                              ("learned", ["--source_split", "even"], "even")):
        splits.clear()
        note = _colour_with_setting(tmp_path, monkeypatch, "source_split", saved, flag, tmp_path / f"out_{saved}_{want}")
        assert note["source_split"] == want
        assert splits == [want] * 3
    with pytest.raises(SystemExit):
        args_for(tmp_path / "in", tmp_path / "bad", "g.pt", "--source_split", "mean")
    assert not (tmp_path / "bad").exists()


def test_the_chain_computes_the_models_flow_and_test_py_may_set_another(tmp_path, monkeypatch):
    """A model trained with a still window is given the windowed flow at test time, as in
    training; test.py --still_window scores it on another (0: the plain flow), and metrics.json
    says which. A window a model without a flow cannot use is one line."""
    import correspond
    for k in range(4):  # an outlined square that is held, an outlined disc that moves
        image = np.full((48, 48, 3), 225, np.uint8)
        cv2.rectangle(image, (3, 5), (18, 26), (200, 60, 40), -1)
        cv2.rectangle(image, (3, 5), (18, 26), (0, 0, 0), 1)
        cv2.circle(image, (28 + 2 * k, 30), 8, (40, 60, 200), -1)
        cv2.circle(image, (28 + 2 * k, 30), 8, (0, 0, 0), 1)
        utils.write_image(tmp_path / "in" / f"frame_{k:03d}.png", image)
    spy, cfg = FlowSpy(), models.ModelConfig(ngf=8, still_window=5, flow_scale=1)
    monkeypatch.setattr(models, "load_generator",
                        lambda path, device: (spy, cfg, {"image_size": 48, "line_art": "canny"}))
    changed = 0
    for flag, window in (([], 5), (["--still_window", "0"], 0), (["--still_window", "9"], 9)):
        spy.seen.clear()
        out = tmp_path / f"out{window}"
        assert colorize_cli.main(args_for(tmp_path / "in", out, "g.pt", *flag)) == 0
        assert json.loads((out / "metrics.json").read_text())["still_window"] == window
        assert len(spy.seen) == 3
        for line_t, line_s, flow in spy.seen:
            assert torch.equal(flow, correspond.flow_tensor(correspond.line_flow(line_t, line_s, "canny", window)))
            plain = correspond.flow_tensor(correspond.line_flow(line_t, line_s))
            changed += window == 5 and not torch.equal(flow, plain)
    assert changed  # the window did change some flow
    with pytest.raises(UserError, match="still window must be a whole number"):
        colorize_cli.main(args_for(tmp_path / "in", tmp_path / "bad", "g.pt", "--still_window", "-2"))
    cfg = models.ModelConfig(ngf=8, correspondence="none")
    with pytest.raises(UserError, match="'none' has no flow"):
        colorize_cli.main(args_for(tmp_path / "in", tmp_path / "bad", "g.pt", "--still_window", "3"))
    assert not (tmp_path / "bad").exists()


def test_no_model_warps_without_flow_art_make_it_from_the_line_art_at_any_scale():
    """``correspond.flow_arts`` makes every frame's flow art (from its colour frame where given,
    else from its line art alone), and the answers that need no model, given no flow art, make it
    from the line art: at scale 2 they equal the same answers given that flow art, and differ from
    those given the frames' own (Canny of the enlarged colour frame)."""
    import colorize
    import correspond
    frames = []
    for k in range(4):  # an outlined disc moving by a pixel and a half a frame
        big = np.full((384, 384, 3), 225, np.uint8)
        cv2.circle(big, (160 + 12 * k, 192), 72, (40, 60, 200), -1)
        cv2.circle(big, (160 + 12 * k, 192), 72, (0, 0, 0), 8)
        frames.append(cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA))
    lines = [dataset.make_line_art(f) for f in frames]
    own = correspond.flow_arts(lines, "canny", 2, frames)
    assert all(np.array_equal(a, correspond.flow_art(f, line, "canny", 2)) for a, f, line in zip(own, frames, lines))
    plain = correspond.flow_arts(lines, "canny", 2)
    assert all(np.array_equal(a, correspond.flow_art(None, line, "canny", 2)) for a, line in zip(plain, lines))
    assert correspond.flow_arts(lines, "canny", 1, frames) == lines
    made = correspond.keyframe_warps(frames, lines, still_window=5, scale=2)
    given = correspond.keyframe_warps(frames, lines, still_window=5, scale=2, arts=plain)
    theirs = correspond.keyframe_warps(frames, lines, still_window=5, scale=2, arts=own)
    assert all(np.array_equal(a, b) for a, b in zip(made["warp_chain"], given["warp_chain"]))
    assert not all(np.array_equal(a, b) for a, b in zip(made["warp_keyframe"][1:], theirs["warp_keyframe"][1:]))
    keys = {0: frames[0], 3: frames[3]}
    assert all(np.array_equal(a, b) for a, b in zip(colorize.warped_keyframes(lines, keys, "agree", scale=2),
                                                    colorize.warped_keyframes(lines, keys, "agree", scale=2,
                                                                              arts=plain)))
    assert np.array_equal(colorize.disagreement(lines[2], lines[0], scale=2),
                          colorize.disagreement(lines[2], lines[0], scale=2, art_t=plain[2], art_key=plain[0]))
