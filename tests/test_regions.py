"""Flat regions: line art into regions (gaps closed), the vote, and the changed-region figures."""
import numpy as np
import pytest
import torch

import colorize
import metrics
import models
import regions


def drawing(gap: bool = False) -> np.ndarray:
    """32x32 line art, black on white: a closed square (rows/cols 4-14) and a second square
    (rows/cols 18-28) whose right side has a 1-pixel gap when ``gap``."""
    line = np.full((32, 32), 255, np.uint8)
    for a, b in ((4, 14), (18, 28)):
        line[a, a:b + 1] = line[b, a:b + 1] = 0
        line[a:b + 1, a] = line[a:b + 1, b] = 0
    if gap:
        line[23, 28] = 255
    return line


def test_regions_of_a_drawing_by_hand():
    labels = regions.segment(drawing(), gap=0)
    # outside, inside square 1 (rows/cols 5-13: 9x9), inside square 2 (19-27: 9x9)
    assert labels.max() == 2
    inside1, inside2 = labels[9, 9], labels[23, 23]
    assert inside1 != inside2 and labels[0, 0] not in (inside1, inside2)
    assert (labels == inside1).sum() == 81 and (labels == inside2).sum() == 81
    assert (labels[drawing() < 128] == -1).all()  # lines are never a region


def test_a_one_pixel_gap_leaks_unless_it_is_closed():
    leaky = regions.segment(drawing(gap=True), gap=0)
    assert leaky[23, 23] == leaky[0, 0]  # the inside of square 2 leaks into the outside
    closed = regions.segment(drawing(gap=True), gap=1)
    assert closed[23, 23] != closed[0, 0] and closed[23, 23] >= 0
    # the thickened lines take one pixel each side: the inside of square 2 is 7x7 now
    assert (closed == closed[23, 23]).sum() == 49


def test_vote_picks_the_weighted_majority_and_keeps_lines():
    line = drawing()
    labels = regions.segment(line, gap=0)
    red, blue = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
    red[:] = (200, 0, 0)
    blue[:] = (0, 0, 200)
    weights = np.zeros((2, 32, 32), np.float32)
    weights[0] = 0.6                   # red leads everywhere...
    weights[1, 19:28, 19:28] = 0.9     # ...except inside square 2, where blue has more weight
    base = np.full((32, 32, 3), 77, np.uint8)
    out, winner = regions.vote(labels, np.stack([red, blue]), weights, base)
    assert (out[9, 9] == (200, 0, 0)).all() and (out[23, 23] == (0, 0, 200)).all()
    assert (out[0, 0] == (200, 0, 0)).all()
    assert (out[line < 128] == 77).all()  # line pixels keep the pixel-wise result
    assert sorted(winner.tolist()) == [0, 0, 1]


def test_the_winner_paints_its_median_not_a_blur():
    labels = np.zeros((4, 4), np.int32)
    candidate = np.zeros((1, 4, 4, 3), np.uint8)
    candidate[0, :, :3] = 100          # 12 pixels of 100, 4 of 0: the median is 100, the mean 75
    out, _ = regions.vote(labels, candidate, np.ones((1, 4, 4)), np.zeros((4, 4, 3), np.uint8), max_spread=None)
    assert (out == 100).all()


def test_a_shaded_region_keeps_its_detail():
    """A gradient (shading, a region leaked through a gap) is not flat in the winning candidate:
    it keeps the pixel-wise result; a flat one next to it is painted."""
    labels = np.zeros((8, 8), np.int32)
    labels[:, 4:] = 1
    candidate = np.zeros((1, 8, 8, 3), np.float32)
    candidate[0, :, :4] = np.linspace(0, 200, 8)[:, None, None]   # region 0: a ramp, spread 50
    candidate[0, :, 4:] = 90                                      # region 1: flat
    base = np.full((8, 8, 3), 33, np.uint8)
    out, winner = regions.vote(labels, candidate, np.ones((1, 8, 8)), base)
    assert winner.tolist() == [-1, 0]
    assert (out[:, :4] == 33).all() and (out[:, 4:] == 90).all()


def test_an_unflat_region_can_take_the_winners_own_pixels():
    """With ``unflat="winner"`` a shaded region takes the pixels of the candidate that wins it, not
    the blend: two keyframes' chains never cross-fade there. A flat region is painted as before,
    and line pixels keep the blend."""
    labels = np.zeros((8, 8), np.int32)
    labels[:, 4:] = 1
    labels[:, 3] = -1                                             # a line between the two regions
    ramp = np.zeros((8, 8, 3), np.float32)
    ramp[:] = np.linspace(0, 200, 8)[:, None, None]                # shaded everywhere
    flat = np.full((8, 8, 3), 90.0, np.float32)
    weights = np.zeros((2, 8, 8), np.float32)
    weights[0, :, :4], weights[1, :, :4] = 0.7, 0.3                # region 0: the ramp wins
    weights[0, :, 4:], weights[1, :, 4:] = 0.2, 0.8                # region 1: the flat one wins
    blend = np.rint((weights[..., None] * np.stack([ramp, flat])).sum(0)).astype(np.uint8)
    plain, _ = regions.vote(labels, np.stack([ramp, flat]), weights, blend)
    out, winner = regions.vote(labels, np.stack([ramp, flat]), weights, blend, unflat="winner")
    assert winner.tolist() == [-1, 1]                                  # region 0 is not flat
    assert np.array_equal(plain[:, :3], blend[:, :3])                  # by default: the blend
    assert np.array_equal(out[:, :3], np.rint(ramp[:, :3]).astype(np.uint8))  # now: the ramp itself
    assert (out[:, 4:] == 90).all()
    assert np.array_equal(out[:, 3], blend[:, 3])                      # the line keeps the blend
    with pytest.raises(ValueError):
        regions.vote(labels, np.stack([ramp, flat]), weights, blend, unflat="mean")


def test_changed_regions_and_changed_pixels_by_hand():
    line = drawing()
    key = np.full((32, 32, 3), 50, np.uint8)
    truth = key.copy()
    truth[19:28, 19:28] = (250, 50, 50)   # square 2 changed colour since the keyframe
    out_right, out_copy = truth.copy(), key.copy()
    assert metrics.changed_regions(out_right, truth, key, line) == (49, 49)  # 7x7 after the 1-pixel thickening
    assert metrics.changed_regions(out_copy, truth, key, line) == (0, 49)
    squared, count = metrics.changed_error(out_copy, truth, key)
    assert count == 81 * 3 and squared == 81 * 200 ** 2  # only red changed, by 200
    scored = metrics.score_frames({"s": [key, out_copy]}, {"s": [key, truth]}, keyframes={"s": [key, key]},
                                  lines={"s": [line, line]})["overall"]
    assert scored["changed_regions"] == 0.0
    assert scored["changed_psnr"] == pytest.approx(10 * np.log10(255 ** 2 / (200 ** 2 / 3)))


def test_the_colouring_library_flattens_regions_along_the_chain():
    """A generator whose copy path weighs the keyframe everywhere except where it is noisy: with
    regions on, every region comes out as the keyframe's flat colour, lines keep the blend."""
    class KeyframeGenerator(torch.nn.Module):
        def forward(self, sources):
            key = sources.keyframe.masked().colour
            noisy = (key + 0.2 * torch.rand_like(key)).clamp(0, 1)
            weights = torch.zeros(key.shape[0], 3, *key.shape[-2:])
            weights[:, 0], weights[:, 2] = 0.3, 0.7
            candidates = torch.stack([noisy, sources.prev.masked().colour, key], 1)
            colour = (weights[:, :, None] * candidates).sum(1)
            return models.Colouring(colour, models.original_input(sources), weights, candidates)

    torch.manual_seed(0)
    cfg = models.ModelConfig(correspondence="none")
    key = np.zeros((32, 32, 3), np.uint8)
    key[:] = (40, 90, 200)
    frames = [np.repeat(drawing()[..., None], 3, 2)] * 3  # grey input: its line art is the drawing
    options = dict(image_size=32, input_type="grey")
    plain = colorize.Colorizer(KeyframeGenerator(), cfg, "cpu", colorize.Options(**options))
    flat = colorize.Colorizer(KeyframeGenerator(), cfg, "cpu", colorize.Options(regions=True, **options))
    noisy, flattened = plain.colour_shot(frames, start=key), flat.colour_shot(frames, start=key)
    labels = regions.segment(drawing())
    assert noisy[1][labels >= 0].std() > 1                      # the blend carries the noise
    assert (flattened[1][labels >= 0] == (40, 90, 200)).all()   # every region: the keyframe's flat colour


def test_the_chain_is_fed_its_pixel_wise_colour_not_the_flattened_one():
    """A generator that adds a faint ramp (0 to 10 of 255 across the frame) to its previous frame:
    each step's output, flat enough, is painted flat; the chain is fed the pixel-wise colour, so the
    ramps add up, and once they are steep enough (frame 5: 0 to 50) the regions keep them. Fed the
    flattened frame, every output would stay flat."""
    class RampGenerator(torch.nn.Module):
        def forward(self, sources):
            prev = sources.prev.masked().colour
            ramp = torch.linspace(0, 10 / 255, prev.shape[-1])[None, None, None, :]
            return models.Colouring((prev + ramp).clamp(0, 1), models.original_input(sources))

    cfg = models.ModelConfig(correspondence="none")
    frames = [np.repeat(drawing()[..., None], 3, 2)] * 6
    key = np.full((32, 32, 3), 60, np.uint8)
    options = colorize.Options(image_size=32, input_type="grey", regions=True)
    out = colorize.Colorizer(RampGenerator(), cfg, "cpu", options).colour_shot(frames, start=key)
    plain = colorize.Colorizer(RampGenerator(), cfg, "cpu", colorize.Options(image_size=32, input_type="grey"))
    chain = plain.colour_shot(frames, start=key)
    labels = regions.segment(drawing())
    background = labels == labels[0, 0]
    assert out[0][background].std() == 0                                     # frame 0: one step, flat
    assert np.array_equal(out[5][background], chain[5][background])           # frame 5: the ramps added up
    assert chain[5][background][:, 0].max() - chain[5][background][:, 0].min() >= 45


def test_region_medians_are_numpys_medians():
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 7, (40, 50)).astype(np.int32)
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    expected = np.array([np.median(image[labels == r].reshape(-1, 3), 0) for r in range(labels.max() + 1)])
    assert np.array_equal(regions.region_medians(labels, image), expected)
