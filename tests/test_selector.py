"""The learned choice of alignment (``--correspondence select``, selector.py) and its loss."""
import numpy as np
import pytest
import torch

import correspond
import losses
import models
import selector

SIZE = 32
SHIFT = 3  # pixels: the flow every sample is given moves the source this far to the right


def textured_frame(rng) -> tuple[np.ndarray, np.ndarray]:
    """(RGB frame, line art): a background of vertical strips 4-8 pixels wide, each its own colour
    and separated by drawn lines (as the grain of a painted wooden wall), under two flat shapes
    outlined in black."""
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    line = np.full((SIZE, SIZE), 255, np.uint8)
    x = 0
    while x < SIZE:
        width = int(rng.integers(4, 9))
        img[:, x:x + width] = rng.integers(120, 230, 3)
        line[:, x] = 0
        x += width
    for _ in range(2):
        x, y = rng.integers(6, SIZE - 18, 2)
        w, h = rng.integers(8, 14, 2)
        img[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        line[y:y + h, x:x + w] = 255
        line[y, x:x + w] = line[y + h - 1, x:x + w] = line[y:y + h, x] = line[y:y + h, x + w - 1] = 0
    img[line == 0] = 0
    return img, line


def batch(rng, moved: list[bool]):
    """Sources given a flow that moves them SHIFT pixels right, frame t's line art and its truth:
    where ``moved`` the frame did move so (the flow is right), elsewhere nothing moved (the flow
    moves static pixels: the source as it is is the truth)."""
    def rgb(a):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255

    def grey(a):
        return torch.from_numpy(np.ascontiguousarray(a))[None].float() / 255
    srcs, lines_s, lines_t, truths = [], [], [], []
    for m in moved:
        img, line = textured_frame(rng)
        img_t, line_t = (np.roll(img, SHIFT, 1), np.roll(line, SHIFT, 1)) if m else (img, line)
        srcs.append(rgb(img)), lines_s.append(grey(line)), lines_t.append(grey(line_t)), truths.append(rgb(img_t))
    flow = torch.zeros(len(moved), 2, SIZE, SIZE)
    flow[:, 0] = -SHIFT  # frame t's x comes from the source's x - SHIFT
    source = correspond.Source(torch.stack(srcs), torch.ones(len(moved)), torch.stack(lines_s), flow)
    return source, torch.stack(lines_t), torch.stack(truths)


def test_a_fresh_selector_is_the_mean_of_the_three_ways():
    torch.manual_seed(0)
    sel = selector.Select()
    source, line_t, _ = batch(np.random.default_rng(0), [True, False])
    with torch.no_grad():
        colours, lines, _ = sel.ways(source, line_t)
        out = sel(source, line_t)
    assert colours.shape == (2, 3, 3, SIZE, SIZE)
    assert torch.allclose(colours[:, 0], source.colour)  # unmoved
    assert torch.allclose(colours[:, 1], correspond.warp(source.colour, source.flow))  # warped
    assert torch.allclose(out.colour, colours.mean(1), atol=1e-6)
    assert torch.allclose(out.line, lines.mean(1), atol=1e-6)
    assert out.match  # the matcher's matches, for its cross-entropy


def test_trained_it_keeps_a_still_frame_unmoved_and_follows_a_real_move():
    """Every sample comes with a flow that moves the source 3 pixels: in half of them the frame
    moved so, in the other half nothing moved. Its weighting trained for 200 steps on the blended
    colour's squared error (the three ways made once per batch: the matcher is not what this
    tests), on samples it has not seen it puts most weight on the way that is right, told apart by
    the line art alone, and its error falls far below the fresh mean of the three ways."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sel = selector.Select()
    opt = torch.optim.Adam(sel.net.parameters(), lr=3e-3)

    def made(source, line_t, truth):
        with torch.no_grad():
            colours, lines, _ = sel.ways(source, line_t)
        return colours, lines, line_t, truth
    pool = [made(*batch(rng, [True, False, True, False])) for _ in range(12)]
    for step in range(200):
        colours, lines, line_t, truth = pool[step % len(pool)]
        w = sel.weights(colours, lines, line_t)[:, :, None]
        loss = ((w * colours).sum(1) - truth).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    colours, lines, line_t, truth = made(*batch(np.random.default_rng(99), [True] * 4 + [False] * 4))
    with torch.no_grad():
        w = sel.weights(colours, lines, line_t)
        trained = ((w[:, :, None] * colours).sum(1) - truth).square().mean().item()
    fresh = (colours.mean(1) - truth).square().mean().item()
    w = w.mean((2, 3))                                                              # (8, 3 ways)
    assert w[4:, 0].min() > 0.7, w  # nothing moved: the source as it is
    assert (w[:4, 1] + w[:4, 2]).min() > 0.7, w  # it moved: the warp, or the matched warp
    assert trained < fresh / 4, (trained, fresh)


def test_aligned_l2_by_hand():
    """The squared error of each present source against frame t; an absent one counts nothing."""
    target = torch.zeros(2, 3, 2, 2)
    a = correspond.Source(torch.full((2, 3, 2, 2), 0.5), torch.tensor([1.0, 0.0]))  # the second absent
    b = correspond.Source(torch.full((2, 3, 2, 2), 0.1), torch.tensor([1.0, 1.0]))
    assert losses.aligned_l2([a, b], target).item() == pytest.approx((0.25 * 12 + 0.01 * 24) / 36)
    assert losses.aligned_l2([correspond.Source(a.colour, torch.zeros(2))], target).item() == 0.0


def test_a_select_generator_saves_loads_and_colours_a_shot(tmp_path, frame_factory):
    import colorize
    import utils

    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8, correspondence="select")
    G = models.build_generator(cfg)
    assert any(k.startswith("correspond.net.") for k in G.state_dict())
    assert any(k.startswith("correspond.match.") for k in G.state_dict())
    torch.save(models.generator_export(G, cfg, 32, "canny"), tmp_path / "g.pt")
    G2, cfg2, _ = models.load_generator(tmp_path / "g.pt")
    sources = models.example_sources(2, 32)
    with torch.no_grad():
        assert cfg2.correspondence == "select" and torch.equal(G2(sources).colour, G(sources).colour)
    frames = [frame_factory(i, 40, 40) for i in range(5)]
    key = frame_factory(2, 40, 40, seed=4)
    results = colorize.Colorizer.from_checkpoint(tmp_path / "g.pt", "cpu").colour_shot(frames, keyframes={2: key})
    assert len(results) == 5 and all(r.shape == (32, 32, 3) and r.dtype == np.uint8 for r in results)
    assert np.array_equal(results[2], utils.resize(key, 32))
    assert isinstance(correspond.cpu_half("select"), correspond.FlowWarp)  # its CPU half is the flow


def test_the_array_line_distance_is_the_tensor_one():
    """``line_distance_array`` (OpenCV, for the agree join) gives ``line_distance``'s values, on
    drawn line art and on the grey ink of a warp, borders included."""
    rng = np.random.default_rng(3)
    _, line = textured_frame(rng)
    grey = correspond.warp_array(line, np.full((SIZE, SIZE, 2), 0.4, np.float32))  # half-pixel-ish shift: grey ink
    for art in (line, grey.astype(np.float32) / 255.0):
        tensor = torch.from_numpy(art.astype(np.float32) / (255.0 if art.dtype == np.uint8 else 1.0))[None, None]
        expected = selector.line_distance(tensor)[0, 0].numpy()
        got = selector.line_distance_array(art)
        assert got.dtype == np.float32 and np.allclose(got, expected, atol=1e-6)
    assert selector.line_distance_array(line)[line == 0].max() == 0 and selector.line_distance_array(line).max() <= 1.0
