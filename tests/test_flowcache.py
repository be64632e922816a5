"""Line art and neighbour flows made once into the frame cache: they agree with what a sample
computes on the fly, carry the crop and the flip, and keep samples deterministic."""
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import correspond
import dataset
import utils
from conftest import tree_equal

MOTION = (2.0, 1.0)  # pixels a frame, (dx, dy), of the whole picture in the source frames


def moving_frame(k, h=72, w=96):
    """Dark discs of several sizes on a light gradient, the whole picture moving by MOTION a
    frame: every flow between two frames of the shot is known."""
    canvas = np.zeros((h + 40, w + 40, 3), np.uint8)
    canvas[:] = np.linspace(150, 230, w + 40, dtype=np.uint8)[None, :, None]
    rng = np.random.default_rng(1)
    for _ in range(14):
        centre = (int(rng.integers(0, w + 40)), int(rng.integers(0, h + 40)))
        colour = tuple(int(v) for v in rng.integers(0, 120, 3))
        cv2.circle(canvas, centre, int(rng.integers(4, 12)), colour, -1)
    dx, dy = int(MOTION[0] * k), int(MOTION[1] * k)
    return np.ascontiguousarray(canvas[20 - dy:20 - dy + h, 20 - dx:20 - dx + w])


def datasets(tmp_path, write=True, **kw):
    """(cached, on the fly): the same samples, the second computing line art and flows from
    each sample's crop as it did before the flows were cached."""
    for k in range(6 if write else 0):
        utils.write_image(tmp_path / "data" / "shot0" / f"frame_{k:03d}.png", moving_frame(k))
    kw = {"image_size": 64, "train": True, "prev_prob": 1.0, "seed": 3, "extended": True, "rollout_prob": 1.0,
          "keyframe_prob": 1.0, "reverse_prob": 0.5, "frame_cache": True, "cache_dir": tmp_path / "cache",
          "cached_flows": True, **kw}
    shots = utils.find_shot_dirs(tmp_path / "data")
    cached, fly = dataset.TripletDataset(shots, **kw), dataset.TripletDataset(shots, **kw)
    fly.flows = None
    return cached, fly


def true_flow(distance: int, flip: bool) -> np.ndarray:
    """(dx, dy) from a frame to the one ``distance`` frames later, at the load size (72 from 96
    wide, 72 high), mirrored by a flip."""
    dx, dy = MOTION[0] * 72 / 96 * distance, MOTION[1] * distance
    return np.array([-dx if flip else dx, dy])


def draws(ds, epoch, index) -> dict:
    """The sample's flip, direction and keyframe, drawn as ``TripletDataset`` draws them."""
    rng = np.random.default_rng([ds.seed, epoch, index])
    rng.random(), rng.integers(0, ds.load_size - ds.image_size + 1, size=2)
    flip = bool(rng.random() < 0.5)
    step = 1 if rng.random() < ds.reverse_prob else -1
    rng.random(), rng.random()
    u = rng.random()
    if ds.flows is not None:  # one of the frame's keyframes drawn once into the cache
        keys = ds.flows.keys(0, index)
        key = int(keys[min(int(u * len(keys)), len(keys) - 1)])
    else:
        key = dataset._pick_keyframe(index, len(ds), ds.keyframe_max_distance, u)
    return {"flip": flip, "step": step, "prev": index + step, "key": key}


def test_cached_flows_agree_with_flows_computed_on_the_fly(tmp_path):
    """Tolerance: the median endpoint difference between the cached flow and the one computed
    from the crop is under 1 px (0.09-0.72 px seen here). The cached flow is computed on the
    whole frame, the other on the 64-pixel crop, where DIS lacks context near the edges and now
    and then goes astray over a patch of several pixels; the median looks past that. A wrongly
    signed dx under a flip, or a flow to the wrong neighbour, would differ by 3 px everywhere.
    Both must also find the known motion: median within 0.3 px of it."""
    cached, fly = datasets(tmp_path)
    checked, flips = 0, set()
    for epoch in range(3):
        cached.set_epoch(epoch), fly.set_epoch(epoch)
        for i in range(len(cached)):
            a, b, d = cached[i], fly[i], draws(cached, epoch, i)
            for name in ("prev", "prev2"):
                if a[name]["present"] == 0:
                    continue
                fa, fb = a[name]["flow"].float(), b[name]["flow"].float()
                assert (fa - fb).norm(dim=0).median() < 1.0, (epoch, i, name)
                for flow in (fa, fb):
                    median = flow.flatten(1).median(dim=1).values.numpy()
                    assert np.abs(median - true_flow(d["step"], d["flip"])).max() < 0.3, (epoch, i, name, median)
                # line art: a crop of the whole frame's, equal but for a few pixels at the edges
                assert (a[name]["line"] != b[name]["line"]).float().mean() < 0.02
                checked, flips = checked + 1, flips | {d["flip"]}
    assert checked >= 20 and flips == {True, False}


@pytest.mark.parametrize("back, seed, epochs", [(2, 5, 3), (3, 6, 6)])
def test_keyframe_flow_of_an_earlier_frame_is_composed_correctly(tmp_path, back, seed, epochs):
    """keyframe_flow2 (previous frame -> keyframe) is frame t's flow to the keyframe carried
    back through the cached neighbour flow, and with --rollout_frames 3 keyframe_flow3 (the
    frame 2 back -> keyframe) is carried back once more: each must find the motion over the
    frames between that frame and the keyframe (median within 0.5 px), as the direct flow does."""
    cached, fly = datasets(tmp_path, seed=seed, rollout_frames=back)
    checked = 0
    for epoch in range(epochs):
        cached.set_epoch(epoch), fly.set_epoch(epoch)
        for i in range(len(cached)):
            for ds in (cached, fly):
                d = draws(ds, epoch, i)
                source = i + (back - 1) * d["step"]
                if not 0 <= source < len(ds):
                    continue
                sample = ds[i]
                if back > 2:
                    if sample["rollout_start"] < back:
                        continue
                    assert sample[f"prev{back}"]["present"] == 1
                median = sample[f"keyframe_flow{back}"].float().flatten(1).median(dim=1).values.numpy()
                assert np.abs(median - true_flow(d["key"] - source, d["flip"])).max() < 0.5, (epoch, i, median)
                checked += ds is cached and abs(d["key"] - source) > 1
    assert checked >= 5


def test_cached_samples_are_deterministic_in_workers_and_the_cache_follows_the_frames(tmp_path, capsys):
    cached, _ = datasets(tmp_path)
    cached.set_epoch(2)
    again = pickle.loads(pickle.dumps(cached))  # what a DataLoader worker gets
    again.set_epoch(2)
    assert all(tree_equal(cached[i], again[i]) for i in range(len(cached)))
    before = np.array(cached.flows.flow(0, 2, -1))
    assert np.abs(before).max() > 0.5  # a real flow, not zeros
    capsys.readouterr()
    utils.write_image(tmp_path / "data" / "shot0" / "frame_002.png", moving_frame(0))  # frame 2 now = frame 0
    rebuilt, _ = datasets(tmp_path, write=False)
    assert "optical flows between neighbouring frames" in capsys.readouterr().err
    assert rebuilt.flows.folder == cached.flows.folder
    after = np.array(rebuilt.flows.flow(0, 2, -1))  # frame 2 (= 0) to frame 1: the motion forward now
    assert np.abs(np.median(after[0]) - 1.5) < 0.3 and np.median(before[0]) < -1.0
    assert torch.is_tensor(rebuilt[3]["prev"]["flow"])


def test_a_built_flow_cache_is_opened_as_it_is_and_checked(tmp_path, capsys):
    """A second dataset over unchanged frames opens the flow cache without computing it again,
    and so does a DDP rank that may only open it (``frame_cache="open"``); flows overwritten
    behind its back are found by the sampled checksum and computed again."""
    cached, _ = datasets(tmp_path)
    assert "optical flows between neighbouring frames" in capsys.readouterr().err
    again, _ = datasets(tmp_path, write=False)
    opened, _ = datasets(tmp_path, write=False, frame_cache="open")
    assert "optical flows between neighbouring frames" not in capsys.readouterr().err
    assert opened.flows.folder == again.flows.folder == cached.flows.folder
    cached.set_epoch(1), opened.set_epoch(1)
    assert all(tree_equal(cached[i], opened[i]) for i in range(len(cached)))

    flows = np.load(cached.flows.folder / "flows.npy", mmap_mode="r+")
    flows[0] = 7.0  # the first frame is among the sampled ones
    flows.flush()
    del flows
    with pytest.raises(utils.UserError, match="flow cache .* missing or out of date"):
        datasets(tmp_path, write=False, frame_cache="open")
    rebuilt, _ = datasets(tmp_path, write=False)
    assert "optical flows between neighbouring frames" in capsys.readouterr().err
    assert not (np.array(rebuilt.flows.flow(0, 0, 1)) == 7.0).all()


def test_cached_keyframes_come_with_their_flows_and_a_sample_computes_none(tmp_path, monkeypatch):
    """With the flow cache a sample's keyframe is one of its frame's CACHED_KEYFRAMES, drawn once
    within keyframe_max_distance, and its flow comes from the cache: it finds the known motion
    (median within 0.3 px), and no sample calls the optical flow at all."""
    cached, _ = datasets(tmp_path, keyframe_max_distance=3, seed=11)
    calls = []
    real = dataset.correspond.line_flow

    def counted(line_t, line_s, *a):  # identical line art (the previous frame as keyframe) costs nothing
        calls.extend([] if np.array_equal(line_t, line_s) else [1])
        return real(line_t, line_s, *a)

    monkeypatch.setattr(dataset.correspond, "line_flow", counted)
    used, checked = set(), 0
    for epoch in range(6):
        cached.set_epoch(epoch)
        for i in range(len(cached)):
            sample, d = cached[i], draws(cached, epoch, i)
            keys = [int(k) for k in cached.flows.keys(0, i)]
            assert len(keys) == dataset.CACHED_KEYFRAMES and all(0 < abs(k - i) <= 3 for k in keys)
            assert sample["keyframe"]["present"] == 1 and d["key"] in keys
            used.add((i, d["key"]))
            median = sample["keyframe"]["flow"].float().flatten(1).median(dim=1).values.numpy()
            assert np.abs(median - true_flow(d["key"] - i, d["flip"])).max() < 0.3, (epoch, i, median)
            checked += 1
    assert calls == [] and checked == 36
    assert len(used) > len(cached)  # both slots are drawn, not one keyframe per frame


def test_one_flow_cache_serves_runs_with_and_without_keyframes(tmp_path, capsys):
    """A run without keyframes builds the same cache (keyframe flows included) that a run with
    them then opens as it is: a cache without them would silently give that run no keyframes."""
    without, _ = datasets(tmp_path, keyframe_prob=0.0)
    assert "optical flows between neighbouring frames" in capsys.readouterr().err
    assert all(without[i]["keyframe"]["present"] == 0 for i in range(len(without)))
    with_keys, _ = datasets(tmp_path, write=False)
    assert "optical flows between neighbouring frames" not in capsys.readouterr().err
    assert all(with_keys[i]["keyframe"]["present"] == 1 for i in range(len(with_keys)))


def test_a_chained_first_frame_is_the_far_frame_carried_along_the_one_step_flows(tmp_path):
    """--prev_chain_prob 1: the true frame a sample's chain starts from (the previous frame, or
    a rollout's first frame) is a frame 1 or more further back carried to its place along the
    one-step flows. The picture moves by a known amount a frame, so carried along right flows it
    comes close to the true frame it stands for, far closer than the far frame as it is; its line
    art, its flow and every other field stay as they were; cached and on-the-fly flows agree."""
    plain, _ = datasets(tmp_path, rollout_prob=0.5)
    chained, fly = datasets(tmp_path, write=False, rollout_prob=0.5, prev_chain_prob=1.0)
    from dataset import PREV_CHAIN_MAX
    from metrics import psnr
    checked = 0
    for index in range(6):
        a, b, c = plain[index], chained[index], fly[index]
        name = "prev2" if float(a["rollout"]) else "prev"
        for key in ("target", "line", "rollout"):
            assert torch.equal(a[key], b[key])
        for src in ("prev", "prev2", "keyframe"):
            for field in ("line", "flow", "present"):
                assert torch.equal(a[src][field], b[src][field]), (index, src, field)
            if src != name:
                assert torch.equal(a[src]["colour"], b[src]["colour"]), (index, src)
        if float(a[name]["present"]) == 0:
            continue
        # which frame it stands for, how far it came from (the last two draws of the sample)
        d = draws(plain, 0, index)
        at = index + (2 if name == "prev2" else 1) * d["step"]
        rng = np.random.default_rng([plain.seed, 0, index])
        rng.random()
        top, left = rng.integers(0, plain.load_size - plain.image_size + 1, size=2).tolist()
        flip = bool(rng.random() < 0.5)
        rng.random(), rng.random(), rng.random(), rng.random(), rng.random()  # direction, rollout, keyframe x 2, on
        u = rng.random()
        room = 5 - at if d["step"] > 0 else at
        if room < 1:  # nothing further back: the true frame stays
            assert torch.equal(a[name]["colour"], b[name]["colour"])
            continue
        far = at + d["step"] * (1 + min(int(u * min(room, PREV_CHAIN_MAX)), min(room, PREV_CHAIN_MAX) - 1))
        true, carried = dataset.to_uint8(a[name]["colour"]), dataset.to_uint8(b[name]["colour"])
        inner = (slice(8, -8), slice(8, -8))  # away from the crop's edges, where a chain repeats the border
        as_it_is = plain._view(0, far, (top, left, flip))[0]
        assert not np.array_equal(carried, true)
        assert psnr(carried[inner], true[inner]) > psnr(as_it_is[inner], true[inner]) + 8
        assert np.abs(carried.astype(int) - dataset.to_uint8(c[name]["colour"])).mean() < 2
        checked += 1
    assert checked >= 2


def test_chained_first_frames_need_a_flow():
    with pytest.raises(dataset.UserError, match="prev_chain_prob"):
        dataset.TripletDataset([Path("/nonexistent")], extended=True, correspondence="none", prev_chain_prob=0.5)


def held_and_moving_frame(k, h=72, w=96):
    """An outlined square that is held and an outlined disc that moves 3 pixels a frame."""
    image = np.full((h, w, 3), 225, np.uint8)
    cv2.rectangle(image, (6, 10), (34, 50), (200, 60, 40), -1)
    cv2.rectangle(image, (6, 10), (34, 50), (0, 0, 0), 2)
    cv2.circle(image, (52 + 3 * k, 36), 12, (40, 60, 200), -1)
    cv2.circle(image, (52 + 3 * k, 36), 12, (0, 0, 0), 2)
    return image


def test_a_still_window_reaches_every_flow_a_sample_gets_and_is_cached_apart(tmp_path, capsys):
    """With still_window W every flow of a sample, computed on its crop or taken from the cache, is
    line_flow(..., still_window=W) of the two line arts; the windowed flows live in a cache of their
    own beside the plain one, so that runs of both kinds at once do not rebuild each other's."""
    for k in range(5):
        utils.write_image(tmp_path / "data" / "shot0" / f"frame_{k:03d}.png", held_and_moving_frame(k))
    plain, _ = datasets(tmp_path, write=False)
    still, fly = datasets(tmp_path, write=False, still_window=5)
    assert still.flows.folder != plain.flows.folder and plain.flows.folder.is_dir()
    capsys.readouterr()
    again, _ = datasets(tmp_path, write=False, still_window=5)
    assert "optical flows" not in capsys.readouterr().err and again.flows.folder == still.flows.folder
    changed = 0
    for pos in range(1, 5):  # the cache: whole frames at the load size
        line_t, line_s = still.flows.line(0, pos), still.flows.line(0, pos - 1)
        want = correspond.line_flow(line_t, line_s, "canny", still_window=5)
        assert np.array_equal(np.array(still.flows.flow(0, pos, -1)), want.transpose(2, 0, 1).astype(np.float16))
        mask = correspond.still_mask(line_t, line_s, 5)
        changed += int(np.abs(np.array(plain.flows.flow(0, pos, -1)).transpose(1, 2, 0)[mask]).max() > 0.05)
    assert changed  # DIS moved held lines somewhere: the window changes something
    checked = 0
    for i in range(len(fly)):  # on the fly: each sample's crop
        sample = fly[i]
        if sample["prev"]["present"] == 0:
            continue
        line_t = (sample["line"][0].numpy() * 255).round().astype(np.uint8)
        line_s = (sample["prev"]["line"][0].numpy() * 255).round().astype(np.uint8)
        want = correspond.flow_tensor(correspond.line_flow(line_t, line_s, "canny", still_window=5))
        assert torch.equal(sample["prev"]["flow"], want), i
        checked += 1
    assert checked >= 3


def test_a_flow_scale_reaches_every_flow_a_sample_gets_and_is_cached_apart(tmp_path):
    """With flow_scale 2 every flow of a sample, computed on its crop or taken from the cache, is
    line_flow(..., scale=2) of the two frames' flow art (Canny of the colour frame enlarged
    twice), brought back to the sample's resolution; those flows live in a cache of their own."""
    plain, _ = datasets(tmp_path)
    fine, fly = datasets(tmp_path, write=False, flow_scale=2)
    assert fine.flows.folder != plain.flows.folder and plain.flows.folder.is_dir()
    for pos in range(1, 6):  # the cache: whole frames at the load size
        arts = [correspond.flow_art(np.array(fine.cache.colour(0, p)), np.array(fine.flows.line(0, p)), "canny", 2)
                for p in (pos, pos - 1)]
        want = correspond.line_flow(*arts, "canny", 0, 2)
        assert want.shape[:2] == fine.flows.line(0, pos).shape
        assert np.array_equal(np.array(fine.flows.flow(0, pos, -1)), want.transpose(2, 0, 1).astype(np.float16))
    checked = 0
    for i in range(len(fly)):  # on the fly: each sample's crop
        sample = fly[i]
        if sample["prev"]["present"] == 0:
            continue
        arts = [correspond.flow_art((part["colour"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                                    (part["line"][0].numpy() * 255).round().astype(np.uint8), "canny", 2)
                for part in ({"colour": sample["target"], "line": sample["line"]}, sample["prev"])]
        want = correspond.flow_tensor(correspond.line_flow(*arts, "canny", 0, 2))
        assert torch.equal(sample["prev"]["flow"], want), i
        checked += 1
    assert checked >= 3
