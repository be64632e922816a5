"""The learned region matcher (``--correspondence match``, matcher.py) and its loss."""
import math

import cv2
import numpy as np
import pytest
import torch

import correspond
import losses
import matcher
import models
import regions

PALETTE = np.array([[230, 60, 60], [60, 200, 80], [70, 90, 230], [240, 200, 40], [200, 80, 220]], np.uint8)
BACKGROUND = np.array([245, 240, 225], np.uint8)


def draw(shapes, size):
    """Flat shapes (kind 0 square, 1 disc; centre; radius; colour) outlined in black on a flat
    background -> (RGB frame, line art)."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    line = np.full((size, size), 255, np.uint8)
    for kind, (cx, cy), r, colour in shapes:
        if kind == 0:
            cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour.tolist(), -1)
            cv2.rectangle(line, (cx - r, cy - r), (cx + r, cy + r), 0, 1)
        else:
            cv2.circle(img, (cx, cy), r, colour.tolist(), -1)
            cv2.circle(line, (cx, cy), r, 0, 1)
    img[line == 0] = 0
    return img, line


def moved_shapes(rng, size=64, move=16):
    """A keyframe and a frame of one tiny shot: three flat shapes of three sizes, each moved by up
    to ``move`` pixels on each axis (further than the line-art flow follows)."""
    colours = rng.permutation(len(PALETTE))[:3]
    radii, kinds = rng.permutation([5, 8, 11]), rng.integers(0, 2, 3)
    key, frame = [], []
    for j in range(3):
        c = rng.integers(14, size - 14, 2)
        c2 = np.clip(c + rng.integers(-move, move + 1, 2), 14, size - 14)
        key.append((kinds[j], tuple(int(v) for v in c), int(radii[j]), PALETTE[colours[j]]))
        frame.append((kinds[j], tuple(int(v) for v in c2), int(radii[j]), PALETTE[colours[j]]))
    return draw(key, size), draw(frame, size)


def as_batch(pairs):
    """(keyframe as a Source with its flow, frame t's line art, frame t's truth) tensors."""
    def rgb(a):
        return torch.from_numpy(a).permute(2, 0, 1).float() / 255

    def grey(a):
        return torch.from_numpy(a)[None].float() / 255
    key = torch.stack([rgb(k[0]) for k, _ in pairs])
    flows = torch.stack([correspond.flow_tensor(correspond.line_flow(t[1], k[1], "given")) for k, t in pairs])
    source = correspond.Source(key, torch.ones(len(pairs)), torch.stack([grey(k[1]) for k, _ in pairs]), flows)
    return source, torch.stack([grey(t[1]) for _, t in pairs]), torch.stack([rgb(t[0]) for _, t in pairs])


def shapes_right(outputs, pairs):
    """Pixel-weighted share of the shapes' regions (not the background) whose median colour is
    within 20/255 of the truth's."""
    right = total = 0
    for out, (_, (truth, line)) in zip(outputs, pairs):
        labels = regions.segment(line)
        true, got = regions.region_medians(labels, truth), regions.region_medians(labels, out)
        area = np.bincount(labels[labels >= 0], minlength=len(true))
        shape = np.linalg.norm(true - BACKGROUND, axis=1) > 20
        right += area[shape & (np.linalg.norm(got - true, axis=1) <= 20)].sum()
        total += area[shape].sum()
    return right / total


def uint8(images):
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def test_match_loss_by_hand():
    # frame t: two regions (left 2 columns region 0, right 2 columns region 1), a line column between
    labels = torch.tensor([[0, 0, -1, 1, 1]] * 2).view(-1)
    target = torch.zeros(1, 3, 2, 5)
    target[0, 0, :, :2] = 1.0          # region 0 is red
    target[0, 2, :, 3:] = 1.0          # region 1 is blue
    colours = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 0.02, 0]])  # source regions: red, blue, red
    candidates = torch.tensor([[0, 1, 2], [0, 1, 2]])
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])
    m = matcher.Match(0, labels, candidates, probs.log(), colours)
    # region 0: right = {0, 2} -> -log 0.7; region 1: right = {1} -> -log 0.1; both 4 pixels: sqrt 2 each
    expected = (-math.log(0.7) - math.log(0.1)) / 2
    assert losses.match_loss([m], target).item() == pytest.approx(expected, rel=1e-5)
    # a region whose colour no source region has counts nothing
    target[0, 1, :, 3:] = 1.0          # region 1 becomes (0, 1, 1): no source region is within 20/255
    logits = probs.log().requires_grad_()
    loss = losses.match_loss([matcher.Match(0, labels, candidates, torch.log_softmax(logits, 1), colours)], target)
    assert loss.item() == pytest.approx(-math.log(0.7), rel=1e-5)
    loss.backward()                    # the region that counts nothing gets no gradient, and no NaN
    assert torch.isfinite(logits.grad).all() and logits.grad[1].abs().max() == 0
    assert losses.match_loss([], target).item() == 0.0


def test_an_unmoved_frame_is_its_own_source_and_texture_is_kept():
    """Same line art, zero flow: each region matches itself; flat regions come out flat, a shaded
    one keeps its gradient, lines keep the warp (here the source itself)."""
    torch.manual_seed(0)
    (img, line), _ = moved_shapes(np.random.default_rng(3), move=0)
    img = img.astype(np.float32)
    ramp = np.linspace(0, 120, img.shape[1], dtype=np.float32)[None, :, None]
    labels = regions.segment(line)
    background = labels == labels[0, 0]
    img[background] = (img - ramp)[background]     # the background is shaded (far from flat)
    img = img.astype(np.uint8)
    source, line_t, _ = as_batch([((img, line), (img, line))])
    m = matcher.RegionMatch()
    with torch.no_grad():
        out = m(source, line_t)
    assert torch.allclose(out.colour, source.colour, atol=1e-5)
    assert len(out.match) == 1 and out.match[0].log_prob.shape[0] == labels.max() + 1


def test_mild_shading_on_a_still_frame_passes_through_and_a_moved_one_stays_shaded():
    """Every region shaded by a gentle ramp (32 levels across the frame: inside a region a mean
    deviation of at most 8 levels, a flat-looking cel with a soft gradient). Unmoved, the matcher gives the
    source back exactly; moved by 3 pixels with its line art (a translation the flow follows), each
    shape keeps its gradient: the output's left-right difference inside a shape is the ramp's."""
    torch.manual_seed(0)
    (img, line), _ = moved_shapes(np.random.default_rng(5), move=0)
    ramp = np.linspace(0, 32, img.shape[1], dtype=np.float32)[None, :, None]
    img = np.where(line[..., None] == 0, img, np.clip(img.astype(np.float32) - ramp, 0, 255)).astype(np.uint8)
    source, line_t, _ = as_batch([((img, line), (img, line))])
    with torch.no_grad():
        out = matcher.RegionMatch()(source, line_t)
    assert torch.allclose(out.colour, source.colour, atol=1e-5)

    shift = 3
    moved, moved_line = np.roll(img, shift, axis=1), np.roll(line, shift, axis=1)
    source, line_t, _ = as_batch([((img, line), (moved, moved_line))])
    with torch.no_grad():
        got = uint8(matcher.RegionMatch()(source, line_t).colour)[0].astype(np.float32)
    labels = regions.segment(moved_line)
    background = labels[0, 0]
    for r in set(labels.ravel()) - {-1, background}:
        ys, xs = np.nonzero(labels == r)
        left, right = xs <= np.percentile(xs, 25), xs >= np.percentile(xs, 75)
        truth = moved.astype(np.float32)
        want = truth[ys[right], xs[right]].mean() - truth[ys[left], xs[left]].mean()
        have = got[ys[right], xs[right]].mean() - got[ys[left], xs[left]].mean()
        assert want <= -1.0 and abs(have - want) <= 1.0, (r, want, have)


def test_the_untrained_matcher_is_the_flows_region_vote():
    """At initialisation each region of frame t takes the colour of the source region that the
    flow carries most of its pixels into."""
    torch.manual_seed(0)
    pairs = [moved_shapes(np.random.default_rng(s), move=6) for s in range(4)]
    source, line_t, _ = as_batch(pairs)
    with torch.no_grad():
        out = matcher.RegionMatch()(source, line_t)
    h, w = line_t.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w]
    for i, ((key, key_line), (_, line)) in enumerate(pairs):
        lab_t, lab_s = regions.segment(line), regions.segment(key_line)
        flow = source.flow[i].numpy()
        lands = lab_s[np.clip(np.rint(ys + flow[1]), 0, h - 1).astype(int), np.clip(np.rint(xs + flow[0]), 0, w - 1).astype(int)]
        got = uint8(out.colour[i:i + 1])[0]
        for r in range(lab_t.max() + 1):
            inside = lab_t == r
            hits = np.bincount(lands[inside & (lands >= 0)], minlength=lab_s.max() + 1)
            best = hits.argmax()
            expected = key[lab_s == best].astype(np.float32).mean(0)
            assert np.abs(got[inside].astype(np.float32) - expected).max() <= 1.0


def test_briefly_trained_it_colours_moved_shapes_better_than_the_warp():
    """Trained for 150 steps on tiny shots of moving flat shapes (by its cross-entropy alone), on
    24 shots it has not seen it gives the moved shapes their keyframe colours more often than the
    keyframe warped along the line-art flow does."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = matcher.RegionMatch()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        source, line_t, target = as_batch([moved_shapes(rng) for _ in range(4)])
        loss = losses.match_loss(m(source, line_t).match, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = [moved_shapes(np.random.default_rng(1000 + i)) for i in range(24)]
    source, line_t, _ = as_batch(held_out)
    with torch.no_grad():
        warp = shapes_right(uint8(correspond.FlowWarp()(source, line_t).colour), held_out)
        learned = shapes_right(uint8(m(source, line_t).colour), held_out)
    assert warp < 0.85                 # the shots are hard for the flow
    assert learned >= warp + 0.05, (learned, warp)


def test_a_match_generator_saves_loads_and_returns_its_matches(tmp_path):
    cfg = models.ModelConfig(correspondence="match")
    torch.manual_seed(0)
    G = models.build_generator(cfg)
    assert any(k.startswith("correspond.") for k in G.state_dict())
    sources = models.example_sources(2, 32)
    with torch.no_grad():
        out = G(sources)
    assert out.matches and all(isinstance(m, matcher.Match) for m in out.matches)
    path = tmp_path / "g.pt"
    torch.save(models.generator_export(G, cfg, 32, "canny"), path)
    G2, cfg2, _ = models.load_generator(path)
    assert cfg2.correspondence == "match"
    with torch.no_grad():
        assert torch.equal(G2(sources).colour, out.colour)
    # the CPU half of the data loader and the chains makes no weights (and draws no random numbers)
    state = torch.random.get_rng_state()
    assert isinstance(correspond.cpu_half("match"), correspond.FlowWarp)
    assert torch.equal(state, torch.random.get_rng_state())


def test_a_match_checkpoint_colours_a_shot_through_the_library(tmp_path, frame_factory):
    import colorize
    import utils

    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8, correspondence="match")
    torch.save(models.generator_export(models.build_generator(cfg), cfg, 32, "canny"), tmp_path / "g.pt")
    frames = [frame_factory(i, 40, 40) for i in range(5)]
    key = frame_factory(2, 40, 40, seed=4)
    for regions_step in (False, True):
        colorizer = colorize.Colorizer.from_checkpoint(tmp_path / "g.pt", "cpu", regions=regions_step)
        results = colorizer.colour_shot(frames, keyframes={2: key})
        assert len(results) == 5 and all(r.shape == (32, 32, 3) and r.dtype == np.uint8 for r in results)
        assert np.array_equal(results[2], utils.resize(key, 32))
