"""Keyframes anywhere in a shot: the chain plan, backward chains, blending, keyframe errors,
and independent chains batched together (test.py --keyframes, --batch_chains)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import colorize
import models
import utils
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import test as colorize_cli  # noqa: E402

SIZE = 32


# ----------------------------------------------------------------------------- the plan
def test_plan_by_hand():
    # 10 frames, keyframes 2 and 6: 1, 0 backward from 2; 3, 4, 5 forward from 2 and backward
    # from 6; 7, 8, 9 forward from 6
    jobs, weights = colorize.plan(10, [6, 2])
    assert [(j.frames, j.key) for j in jobs] == [([1, 0], 2), ([3, 4, 5], 2), ([5, 4, 3], 6), ([7, 8, 9], 6)]
    assert weights[0] == [(0, 1.0)] and weights[1] == [(0, 1.0)]
    assert weights[3] == [(1, 0.75), (2, 0.25)]  # 1 from key 2, 3 from key 6
    assert weights[4] == [(1, 0.5), (2, 0.5)]    # the midpoint
    assert weights[5] == [(1, 0.25), (2, 0.75)]
    assert all(weights[t] == [(3, 1.0)] for t in (7, 8, 9))
    assert 2 not in weights and 6 not in weights  # keyframes are output as they are
    # the nearer keyframe always weighs more
    for t in (3, 5):
        near = 1 if t - 2 < 6 - t else 2
        assert max(weights[t], key=lambda jw: jw[1])[0] == near


def test_plan_without_and_with_edge_keyframes():
    assert [(j.frames, j.key) for j in colorize.plan(4, [])[0]] == [([0, 1, 2, 3], None)]
    assert [(j.frames, j.key) for j in colorize.plan(4, [0])[0]] == [([1, 2, 3], 0)]
    assert [(j.frames, j.key) for j in colorize.plan(4, [3])[0]] == [([2, 1, 0], 3)]
    jobs, weights = colorize.plan(3, [0, 2])
    assert [(j.frames, j.key) for j in jobs] == [([1], 0), ([1], 2)] and weights[1] == [(0, 0.5), (1, 0.5)]
    assert colorize.plan(2, [0, 1]) == ([], {})
    with pytest.raises(ValueError):
        colorize.plan(3, [3])


# ----------------------------------------------------------------------------- through test.py
class EchoGenerator(nn.Module):
    """Returns its previous frame brightened by 0.1 (see test_colorize.py)."""

    def forward(self, sources):
        prev = sources.prev.masked().colour
        return models.Colouring((prev + 0.1).clamp(0, 1), models.original_input(sources))


@pytest.fixture
def echo(monkeypatch):
    cfg = models.ModelConfig(correspondence="none")  # flat frames: a copy is exactly a copy
    monkeypatch.setattr(models, "load_generator",
                        lambda path, device: (EchoGenerator(), cfg, {"image_size": SIZE, "line_art": "canny"}))


def write_shot(folder, n, size=40, value=lambda i: 30):
    for i in range(n):
        utils.write_image(folder / f"frame_{i:03d}.png", np.full((size, size, 3), value(i), np.uint8))


def args_for(inp, out, *extra):
    return colorize_cli.build_parser().parse_args(
        ["--checkpoint", "x.pt", "--input", str(inp), "--output", str(out), "--device", "cpu", *extra])


def means(folder, n):
    return [utils.read_rgb(folder / f"frame_{i:03d}.png").mean() / 255 for i in range(n)]


def test_backward_chains_receive_frame_t_plus_1_and_in_betweens_blend(tmp_path, echo):
    write_shot(tmp_path / "in" / "s", 8)
    keys = tmp_path / "keys" / "s"
    utils.write_image(keys / "frame_002.png", np.full((40, 40, 3), 51, np.uint8))   # 0.2
    utils.write_image(keys / "frame_006.png", np.full((40, 40, 3), 102, np.uint8))  # 0.4
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "--keyframes", str(tmp_path / "keys")))
    got = means(tmp_path / "out" / "s", 8)
    # frame 1 is the output of frame 2's keyframe + 0.1, frame 0 that of frame 1 + 0.1: the
    # backward chain fed each frame its successor
    assert got[0] == pytest.approx(0.4, abs=0.003) and got[1] == pytest.approx(0.3, abs=0.003)
    assert got[2] == pytest.approx(0.2, abs=0.003) and got[6] == pytest.approx(0.4, abs=0.003)
    # 3, 4, 5: forward from 0.2 gives 0.3, 0.4, 0.5; backward from 0.4 gives 0.7, 0.6, 0.5;
    # blended 3/4-1/4, 1/2-1/2, 1/4-3/4
    assert got[3:6] == pytest.approx([0.75 * 0.3 + 0.25 * 0.7, 0.5, 0.25 * 0.5 + 0.75 * 0.5], abs=0.003)
    assert got[7] == pytest.approx(0.5, abs=0.003)


def test_keyframe_frames_are_output_as_the_keyframe_and_full_res_takes_input_luminance(tmp_path, echo):
    write_shot(tmp_path / "in", 3, size=64, value=lambda i: 200)
    key = np.zeros((64, 64, 3), np.uint8)
    key[:, :32] = (225, 190, 180)  # reddish and bluish, with a luminance 200 can carry
    key[:, 32:] = (180, 195, 235)
    utils.write_image(tmp_path / "keys" / "frame_001.png", key)
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "out", "--keyframes", str(tmp_path / "keys")))
    out = utils.read_rgb(tmp_path / "out" / "frame_001.png")
    assert out.shape == (SIZE, SIZE, 3) and np.array_equal(out, utils.resize(key, SIZE))
    colorize_cli.main(args_for(tmp_path / "in", tmp_path / "full", "--keyframes", str(tmp_path / "keys"),
                               "--full_res"))
    full = utils.read_rgb(tmp_path / "full" / "frame_001.png").astype(int)
    luma = (0.299 * full[..., 0] + 0.587 * full[..., 1] + 0.114 * full[..., 2])
    assert full.shape == (64, 64, 3) and abs(luma.mean() - 200) < 3           # the input's luminance
    assert full[:, :30, 0].mean() > full[:, :30, 2].mean() + 30                # the keyframe's colours
    assert full[:, 34:, 2].mean() > full[:, 34:, 0].mean() + 30


@pytest.mark.parametrize("case, message", [
    ("no_frame", "matches no frame"), ("size", "is 20x20 but its frame"),
    ("folder", "mirrors no shot"), ("video", "needs frame folders"), ("empty", "holds no keyframe")])
def test_keyframe_errors_come_before_any_work(tmp_path, echo, frame_factory, case, message):
    write_shot(tmp_path / "in" / "s", 3)
    keys = tmp_path / "keys"
    keys.mkdir()
    inp = tmp_path / "in"
    if case == "no_frame":
        utils.write_image(keys / "s" / "frame_009.png", np.zeros((40, 40, 3), np.uint8))
    elif case == "size":
        utils.write_image(keys / "s" / "frame_001.png", np.zeros((20, 20, 3), np.uint8))
    elif case == "folder":
        utils.write_image(keys / "t" / "frame_001.png", np.zeros((40, 40, 3), np.uint8))
    elif case == "video":
        inp = tmp_path / "clip.mp4"
        inp.write_bytes(b"not read")
    with pytest.raises(UserError, match=message):
        colorize_cli.main(args_for(inp, tmp_path / "out", "--keyframes", str(keys)))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


# ----------------------------------------------------------------------------- batched chains
class PixelGenerator(nn.Module):
    """A per-pixel function of every input channel: its output for a sample never depends on the
    other samples of a batch, to the last bit, so any difference would be the scheduler's."""

    def forward(self, sources):
        prev, key = sources.prev.masked(), sources.keyframe.masked()
        x = torch.cat([sources.line, prev.colour, prev.line, prev.plane(), key.colour, key.line, key.plane()], 1)
        weights = torch.linspace(-1, 1, x.shape[1]).view(1, -1, 1, 1)
        mix = torch.sigmoid((x * weights).sum(1, keepdim=True) * 3)
        return models.Colouring(0.5 * prev.colour + 0.3 * key.colour + 0.2 * mix, x[:, :4])


def colour_shots(tmp_path, frame_factory, monkeypatch, G, cfg):
    monkeypatch.setattr(models, "load_generator",
                        lambda path, device: (G, cfg, {"image_size": SIZE, "line_art": "canny"}))
    for s in range(3):
        for i in range(5):
            utils.write_image(tmp_path / "in" / f"s{s}" / f"frame_{i:03d}.png", frame_factory(i, 40, 40, seed=s))
    utils.write_image(tmp_path / "keys" / "s1" / "frame_003.png", frame_factory(9, 40, 40, seed=5))
    outs = {}
    for batch in (1, 4):
        out = tmp_path / f"out{batch}"
        colorize_cli.main(args_for(tmp_path / "in", out, "--keyframes", str(tmp_path / "keys"),
                                   "--batch_chains", str(batch), "--no_metrics"))
        outs[batch] = {p.relative_to(out): utils.read_rgb(p) for p in sorted(out.rglob("*.png"))}
    assert len(outs[1]) == 15 and outs[1].keys() == outs[4].keys()
    return [np.abs(outs[1][k].astype(int) - outs[4][k].astype(int)).max() for k in outs[1]]


def test_batched_chains_equal_one_at_a_time(tmp_path, frame_factory, monkeypatch):
    """3 shots, 1 + 3 + 1 chains (shot s1 has a keyframe inside): --batch_chains 4 writes the
    very frames that one chain at a time writes."""
    diffs = colour_shots(tmp_path, frame_factory, monkeypatch, PixelGenerator(), models.ModelConfig())
    assert max(diffs) == 0, diffs


def test_batched_chains_with_the_unet_on_the_cpu_are_identical(tmp_path, frame_factory, monkeypatch):
    """The U-Net on the CPU: oneDNN picks other convolution kernels for other batch sizes, so a
    batch would change the last bits, and a chain would carry that on; on the CPU each chain
    therefore runs on its own, and --batch_chains writes the very same frames."""
    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8)
    diffs = colour_shots(tmp_path, frame_factory, monkeypatch, models.build_generator(cfg).eval(), cfg)
    assert max(diffs) == 0, diffs


def test_nearest_blend_by_hand():
    jobs, weights = colorize.plan(9, [2, 6], blend="nearest")
    # 3 from key 2; 4 is the midpoint (half each); 5 from key 6: the forward chain stops at 4
    assert [(j.frames, j.key) for j in jobs] == [([1, 0], 2), ([3, 4], 2), ([5, 4], 6), ([7, 8], 6)]
    assert weights[3] == [(1, 1.0)] and weights[4] == [(1, 0.5), (2, 0.5)] and weights[5] == [(2, 1.0)]


# ----------------------------------------------------------------------------- the agree join
def drawing(size=64, square=None, ring=None):
    """White line art (uint8, size x size) with a square's outline and / or a ring."""
    import cv2
    line = np.full((size, size), 255, np.uint8)
    if square is not None:
        x, y = square
        cv2.rectangle(line, (x, y), (x + 14, y + 14), 0, 1)
    if ring is not None:
        cv2.circle(line, ring, 8, 0, 1)
    return line


def test_disagreement_is_zero_where_a_keyframe_lands_and_the_agreement_pools_it():
    here = drawing(square=(8, 8))
    assert np.array_equal(colorize.disagreement(here, here), np.zeros(here.shape, np.float32))
    # the keyframe (index 4) holds a ring at the right that the frames between lack: its warp
    # disagrees there, and far from it (the square, drawn in both) it agrees
    there = drawing(square=(8, 8), ring=(48, 40))
    apart = colorize.disagreement(here, there)
    assert apart[30:50, 38:58].max() > 0.5 and apart[:20].max() < 0.01
    agreement = colorize.Agreement([here] * 4 + [there])
    a = agreement(2, 4, 0, 4)
    assert a.max() <= 0 and a[40, 48] < -5 and a[36:46, 44:60].mean() < -5  # in the ring: e^-5 of the weight or less
    assert a[15, 15] > -1                                                   # the square, far from it
    assert np.array_equal(agreement(2, 0, 0, 4), np.zeros(here.shape, np.float32))  # keyframe 0: the same drawing


def test_the_agreement_is_averaged_over_the_frames_around_t_between_the_keyframes():
    """Frame 3 of 0..6 differs from keyframe 0; the others are its drawing. The log weight of
    frames 1 to 5 is the pooled disagreement of frame 3 divided by the number of frames within
    ``AGREE_FRAMES`` of them between the keyframes: here all five."""
    here, other = drawing(square=(8, 8)), drawing(square=(8, 8), ring=(48, 40))
    lines = [here, here, here, other, here, here, here]
    agreement = colorize.Agreement(lines)
    alone = colorize.Agreement([other, here])
    single = alone(0, 1, -1, 1)  # frame 0 on its own (the span is frame 0 alone)
    for t in range(1, 6):
        assert np.allclose(agreement(t, 0, 0, 6), single / 5, atol=1e-4), t


def test_agree_weights_sum_to_one_follow_distance_where_both_agree_and_drop_a_chain_that_disagrees():
    zero = np.zeros((4, 4), np.float32)
    w = colorize.agree_weights([0.75, 0.25], [zero, zero])
    assert np.allclose(w[0], 0.75) and np.allclose(w[1], 0.25)
    off = zero.copy()
    off[0, 0] = -50.0                                  # the second chain cannot be brought there
    far = np.full((4, 4), -400.0, np.float32)          # neither can anywhere: no division by zero
    w = colorize.agree_weights([0.25, 0.75], [zero, off])
    assert w[0, 0, 0] > 0.999 and np.allclose(w[:, 1:, 1:], [[[0.25]], [[0.75]]])
    w = colorize.agree_weights([0.5, 0.5], [far, far])
    assert np.all(np.isfinite(w)) and np.allclose(w.sum(0), 1.0) and np.allclose(w, 0.5)


def test_the_agree_join_keeps_the_keyframe_whose_drawing_the_frame_shows():
    """Five frames, keyframes 0 (grey 51) and 4 (grey 153); frames 0 to 3 show a square, the last
    keyframe shows the same square and a ring that no other frame has. The echo generator passes
    each chain's previous frame on, + 0.1. ``linear`` blends the chains by distance everywhere;
    ``agree`` does so far from the ring, and on it keeps the chain from keyframe 0, whose drawing
    frame t shows."""
    size = 64
    lines = [drawing(size, square=(8, 8))] * 4 + [drawing(size, square=(8, 8), ring=(48, 40))]
    frames = [np.repeat(line[..., None], 3, 2) for line in lines]
    keys = {0: np.full((size, size, 3), 51, np.uint8), 4: np.full((size, size, 3), 153, np.uint8)}
    cfg = models.ModelConfig(correspondence="none")
    out = {}
    for blend in ("linear", "agree"):
        colorizer = colorize.Colorizer(EchoGenerator(), cfg, "cpu", colorize.Options(size, input_type="lineart",
                                                                                      blend=blend))
        out[blend] = colorizer.colour_shot(frames, keys)
    # frame 1: forward 0.3 (1 step from 0.2), backward 0.9 (3 steps from 0.6), weights 3/4 and 1/4
    forward, backward = 0.3, 0.9
    assert out["linear"][1][40, 48, 0] / 255 == pytest.approx(0.75 * forward + 0.25 * backward, abs=0.005)
    assert out["agree"][1][40, 48, 0] / 255 == pytest.approx(forward, abs=0.01)       # on the ring
    assert out["agree"][1][15, 15, 0] / 255 == pytest.approx(out["linear"][1][15, 15, 0] / 255, abs=0.01)
    assert np.array_equal(out["agree"][0], out["linear"][0])                       # keyframes as they are


def test_regions_between_two_keyframes_take_one_chain_each_never_a_cross_fade():
    """The shot of the test above with shaded keyframes (horizontal ramps). With ``regions`` and
    ``agree`` each region of an in-between takes the colours of one chain, the one with the most
    weight there (frame 1: the chain from keyframe 0, frame 3: from keyframe 4): the shaded
    background its pixels, the small square, flat enough, its median; the join alone blends the
    two chains. Line pixels keep the blend."""
    import regions

    size = 64
    lines = [drawing(size, square=(8, 8))] * 4 + [drawing(size, square=(8, 8), ring=(48, 40))]
    frames = [np.repeat(line[..., None], 3, 2) for line in lines]
    ramp = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
    first, last = (np.broadcast_to(np.rint(255 * (lo + 0.5 * ramp)), (size, size, 3)).astype(np.uint8)
                   for lo in (0.0, 0.4))
    cfg = models.ModelConfig(correspondence="none")
    out = {}
    for flat in (False, True):
        options = colorize.Options(size, input_type="lineart", blend="agree", regions=flat)
        out[flat] = colorize.Colorizer(EchoGenerator(), cfg, "cpu", options).colour_shot(frames, {0: first, 4: last})
    labels = regions.segment(lines[1])
    background, square = labels == labels[2, 2], labels == labels[15, 15]
    assert background.sum() > 3000 and 50 < square.sum() < 200
    for t, key in ((1, first), (3, last)):
        chain = (key.astype(np.float32) / 255 + 0.1) * 255                  # the winning chain, one step on
        assert np.abs(out[True][t][background] - chain[background]).max() <= 1, t        # its own pixels
        assert np.abs(out[False][t][background] - chain[background]).max() > 10, t       # blended
        assert np.abs(out[True][t][square] - np.median(chain[square], 0)).max() <= 1, t  # flat: its median
        lines_apart = out[True][t][labels < 0].astype(int) - out[False][t][labels < 0]  # the lines: the blend,
        assert np.abs(lines_apart).max() <= 1, t         # of chain outputs that the region step rounds to uint8


def test_warped_keyframes_follow_the_plan_by_hand():
    """No lines, so every flow is zero and each warp is its keyframe (0 at frame 1, 200 at frame 5):
    frame 0 takes keyframe 1 (the chain backward from it), frame 6 keyframe 5, frames 2 to 4 both
    by distance (``linear``, and ``agree``, whose line arts all agree), or the nearer one
    (``nearest``, half of each at the midpoint); keyframes come out as they are."""
    lines = [np.full((16, 16), 255, np.uint8)] * 7
    keys = {1: np.full((16, 16, 3), 0, np.uint8), 5: np.full((16, 16, 3), 200, np.uint8)}
    expected = {"linear": [0, 0, 50, 100, 150, 200, 200], "agree": [0, 0, 50, 100, 150, 200, 200],
                "nearest": [0, 0, 0, 100, 200, 200, 200]}
    for blend in colorize.BLENDS:
        out = colorize.warped_keyframes(lines, keys, blend)
        assert [int(f[0, 0, 0]) for f in out] == expected[blend], blend
        assert out[1] is keys[1] and out[5] is keys[5]
