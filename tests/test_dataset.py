"""Tests of dataset.py: shot discovery, previous-frame pairing, line art, crops, errors."""
import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.feature import canny as sk_canny
from torch.utils.data import DataLoader

import correspond
import dataset
import utils
from conftest import tree_equal
from utils import UserError


# ----------------------------------------------------------------------------- helpers
def as_tensor(rgb):
    """Plain reference for to_tensor: uint8 (H, W, 3) -> float (3, H, W) / 255."""
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).double().div(255).float()


def write_shot(folder, names, make, size=32, seed=0):
    """Write frames ``make(i, size, size, seed)`` under the given names; return the arrays."""
    frames = [make(i, size, size, seed) for i in range(len(names))]
    for name, frame in zip(names, frames):
        utils.write_image(folder / name, frame)
    return frames


def edge_f1(ours, ref):
    """F1 of two boolean edge maps, a pixel counting as matched within 1 pixel."""
    grow = np.ones((3, 3), bool)
    precision = (ours & ndi.binary_dilation(ref, grow)).sum() / max(ours.sum(), 1)
    recall = (ref & ndi.binary_dilation(ours, grow)).sum() / max(ref.sum(), 1)
    return 2 * precision * recall / max(precision + recall, 1e-9)


# ------------------------------------------------------------------------ order, previous frame
def test_frames_are_ordered_by_number_whatever_the_padding(tmp_path, frame_factory):
    names = ["frame10.png", "frame2.png", "frame_0009.png", "frame1.png"]
    frames = write_shot(tmp_path, names, frame_factory)
    ds = dataset.TripletDataset([tmp_path], image_size=32, train=False, prev_prob=1.0)
    assert [p.name for p in ds.shot_frames[0]] == ["frame1.png", "frame2.png", "frame_0009.png",
                                                   "frame10.png"]
    # frame10 follows frame_0009 (names[2]); a string sort would put it after frame1
    assert torch.equal(ds[3]["prev"]["colour"], as_tensor(frames[2]))
    assert torch.equal(ds[3]["target"], as_tensor(frames[0]))


def test_previous_frame_is_frame_before_with_zero_padding(tmp_path, frame_factory):
    """The original looked up ``frame{N}.jpg`` unpadded and never found it."""
    names = [f"frame_{k:04d}.png" for k in (8, 9, 10, 11)]
    frames = write_shot(tmp_path, names, frame_factory)
    ds = dataset.TripletDataset([tmp_path], image_size=32, train=False, prev_prob=1.0)
    for i in range(1, 4):
        sample = ds[i]
        assert sample["prev"]["present"].item() == 1.0
        assert torch.equal(sample["prev"]["colour"], as_tensor(frames[i - 1]))
        assert torch.equal(sample["target"], as_tensor(frames[i]))


def test_previous_frame_with_episode_prefix_jpeg(tmp_path, frame_factory):
    names = ["ep01_000125.jpg", "ep01_000123.jpg", "ep01_000124.jpg"]
    write_shot(tmp_path, names, frame_factory)
    ds = dataset.TripletDataset([tmp_path], image_size=32, train=False, prev_prob=1.0)
    decoded = {n: utils.read_rgb(tmp_path / n) for n in names}
    prev = ds[2]["prev"]["colour"]  # target ep01_000125
    assert torch.equal(prev, as_tensor(decoded["ep01_000124.jpg"]))
    assert not torch.allclose(prev, as_tensor(decoded["ep01_000123.jpg"]), atol=0.05)


def test_first_frame_black_and_never_crosses_folders(tmp_path, frame_factory):
    shot_a = write_shot(tmp_path / "a", ["f1.png", "f2.png", "f3.png"], frame_factory, seed=1)
    shot_b = write_shot(tmp_path / "b", ["f1.png", "f2.png", "f3.png"], frame_factory, seed=2)
    ds = dataset.TripletDataset.from_root(tmp_path, image_size=32, train=False, prev_prob=1.0)
    has_prev = [ds[i]["prev"]["present"].item() for i in range(6)]
    assert has_prev == [0, 1, 1, 0, 1, 1]
    assert ds[0]["prev"]["colour"].abs().sum() == 0 and ds[3]["prev"]["colour"].abs().sum() == 0
    assert torch.equal(ds[4]["prev"]["colour"], as_tensor(shot_b[0]))
    assert not torch.equal(ds[3]["target"], as_tensor(shot_a[2]))


def test_prev_prob_zero_one_and_half(tmp_path, frame_factory):
    write_shot(tmp_path, ["f1.png", "f2.png", "f3.png"], frame_factory)
    never = dataset.TripletDataset([tmp_path], image_size=32, prev_prob=0.0)
    always = dataset.TripletDataset([tmp_path], image_size=32, prev_prob=1.0)
    half = dataset.TripletDataset([tmp_path], image_size=32, prev_prob=0.5)
    for i in range(3):
        assert never[i]["prev"]["present"] == 0 and never[i]["prev"]["colour"].abs().sum() == 0
        assert always[i]["prev"]["present"] == (i > 0) and (always[i]["prev"]["colour"].sum() > 0) == (i > 0)
    used = 0
    for epoch in range(100):
        half.set_epoch(epoch)
        used += sum(int(half[i]["prev"]["present"]) for i in (1, 2))
    assert 70 <= used <= 130  # Binomial(200, 0.5): mean 100, sd 7


# ----------------------------------------------------------------------------- line art
def square_image(size=64):
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[16:48, 16:48] = 255
    return rgb


def test_canny_square_black_lines_on_white_like_skimage():
    rgb = square_image()
    line = dataset.make_line_art(rgb, "canny")
    assert line.dtype == np.uint8 and set(np.unique(line)) == {0, 255}
    edges = line == 0
    # lines lie within 2 pixels of the square's border, nowhere else
    border = np.zeros((64, 64), bool)
    border[16:48, 16:48] = True
    near = ndi.binary_dilation(border, iterations=2) & ~ndi.binary_erosion(border, iterations=2)
    assert edges.sum() > 100 and not (edges & ~near).any()
    assert edge_f1(edges, sk_canny(rgb2gray(rgb), sigma=1)) > 0.9


def test_canny_thresholds_match_skimage_on_weak_and_strong_edges():
    """Discs of contrast 6 to 70 grey levels on grey: which of them get edges depends on the
    blur and both thresholds (OpenCV's usual 100/200 finds only the strongest discs)."""
    grey = np.full((96, 96), 100, np.uint8)
    for j, contrast in enumerate((6, 12, 20, 35, 70)):
        cv2.circle(grey, (20 + (j // 3) * 45, 20 + (j % 3) * 30), 10, 100 + contrast, -1)
    rgb = np.repeat(grey[:, :, None], 3, 2)
    ours = dataset.make_line_art(rgb, "canny") == 0
    assert edge_f1(ours, sk_canny(rgb2gray(rgb), sigma=1)) > 0.95  # 1.0 measured


def test_canny_agrees_with_skimage_on_real_frames(shared_clips):
    cap = cv2.VideoCapture(str(shared_clips / "lvcd_sample1.mp4"))
    scores = []
    for _ in range(2):
        ok, bgr = cap.read()
        assert ok
        rgb = utils.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 256)
        ours = dataset.make_line_art(rgb, "canny") == 0
        scores.append(edge_f1(ours, sk_canny(rgb2gray(rgb), sigma=1)))
    assert min(scores) > 0.95  # measured 0.975 to 0.99 on the shared clips


def test_grey_mode_is_the_grey_frame(frame_factory):
    rgb = frame_factory(3, 32, 32)
    assert np.array_equal(dataset.make_line_art(rgb, "grey"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def make_line_tree(tmp_path, frame_factory):
    """root/ep1/shot1/{f1,f2}.png and line/ep1/shot1/{f1.png, f2.bmp} (another extension)."""
    shot = tmp_path / "root" / "ep1" / "shot1"
    write_shot(shot, ["f1.png", "f2.png"], frame_factory)
    rng = np.random.default_rng(0)
    lines = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(2)]
    line_dir = tmp_path / "line" / "ep1" / "shot1"
    utils.write_image(line_dir / "f1.png", lines[0])
    utils.write_image(line_dir / "f2.bmp", lines[1])
    return tmp_path / "root", tmp_path / "line", lines


def test_given_line_art_is_returned(tmp_path, frame_factory):
    root, line_root, lines = make_line_tree(tmp_path, frame_factory)
    ds = dataset.TripletDataset.from_root(root, image_size=32, train=False, line_art="given",
                                          line_root=line_root)
    for i in range(2):
        assert torch.equal(ds[i]["line"], torch.from_numpy(lines[i]).float()[None] / 255)
    frame = root / "ep1" / "shot1" / "f2.png"
    assert np.array_equal(dataset.read_given_line_art(frame, line_root, root), lines[1])


def test_given_line_art_is_resized_to_the_frame():
    given = np.zeros((64, 64), np.uint8)
    given[:, 32:] = 255
    line = dataset.make_line_art(np.zeros((32, 32, 3), np.uint8), "given", given)
    expected = np.zeros((32, 32), np.uint8)
    expected[:, 16:] = 255
    assert np.array_equal(line, expected)


def test_missing_given_line_art_is_named_at_construction(tmp_path, frame_factory):
    root, line_root, _ = make_line_tree(tmp_path, frame_factory)
    (line_root / "ep1" / "shot1" / "f2.bmp").unlink()
    with pytest.raises(UserError, match=str(line_root / "ep1" / "shot1" / "f2.png")):
        dataset.TripletDataset.from_root(root, line_art="given", line_root=line_root)


# ----------------------------------------------------------------------------- crop, flip, tensors
def gradient_frame(k, size=36):
    """R = 7x, G = 7y (position recoverable from any crop), B tells the frame apart."""
    y, x = np.mgrid[:size, :size]
    return np.stack([7 * x, 7 * y, np.full_like(x, 40 * k + 10)], -1).astype(np.uint8)


def recover_crop(target):
    """(top, left, flipped) of a 32x32 crop of ``gradient_frame`` from its pixels."""
    rgb = (target * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    flip = rgb[0, 0, 0] > rgb[0, -1, 0]
    return int(rgb[0, 0, 1]) // 7, int(min(rgb[0, 0, 0], rgb[0, -1, 0])) // 7, bool(flip)


def test_same_crop_and_flip_on_line_target_and_prev(tmp_path):
    frames = [gradient_frame(k) for k in range(4)]
    for k, frame in enumerate(frames):
        utils.write_image(tmp_path / "shot" / f"f{k}.png", frame)
        utils.write_image(tmp_path / "line" / f"f{k}.png", cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    ds = dataset.TripletDataset([tmp_path / "shot"], image_size=32, train=True, line_art="given",
                                line_root=tmp_path / "line", prev_prob=1.0)
    assert ds.load_size == 36  # frames are 36x36: the crop is taken from the unresized frame
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in (1, 2, 3):
            sample = ds[i]
            top, left, flip = recover_crop(sample["target"])
            seen.add((top, left, flip))

            def crop(img):
                part = img[top:top + 32, left:left + 32]
                return np.ascontiguousarray(part[:, ::-1] if flip else part)
            grey = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
            assert torch.equal(sample["target"], as_tensor(crop(frames[i])))
            assert torch.equal(sample["line"][0], torch.from_numpy(crop(grey)).float() / 255)
            assert torch.equal(sample["prev"]["colour"], as_tensor(crop(frames[i - 1])))
    assert {f for _, _, f in seen} == {True, False} and len({(t, l) for t, l, _ in seen}) > 3


def test_eval_resizes_whole_frame_as_colouring_does(tmp_path, frame_factory):
    frame = frame_factory(5, 48, 64)
    utils.write_image(tmp_path / "f1.png", frame)
    small = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.array_equal(utils.resize(frame, 32), small)
    expected_line = torch.from_numpy(dataset.make_line_art(small, "canny")).float() / 255
    sample = dataset.TripletDataset([tmp_path], image_size=32, train=False)[0]
    assert torch.equal(sample["target"], as_tensor(small)) and torch.equal(sample["line"][0], expected_line)
    assert dataset.load_size_for(256) == 288


def test_to_tensor_layout_and_range():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    out = dataset.to_tensor(rgb)
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, as_tensor(rgb))
    assert dataset.to_tensor(rgb[:, :, 0]).shape == (1, 2, 3)
    assert dataset.to_tensor(np.full((1, 1), 255, np.uint8)).item() == 1.0


# ----------------------------------------------------------------------------- determinism
def test_samples_depend_only_on_seed_epoch_index(tmp_path, frame_factory):
    write_shot(tmp_path, [f"f{k}.png" for k in range(6)], frame_factory, size=40)

    def make(seed=0):
        return dataset.TripletDataset([tmp_path], image_size=32, seed=seed)
    ds_a, ds_b = make(), make()
    ds_a.set_epoch(2), ds_b.set_epoch(2)
    first = {i: ds_a[i] for i in (0, 5, 3)}
    again = {i: ds_b[i] for i in (3, 0, 5)}  # another object, another order: the same samples
    assert all(tree_equal(first[i], again[i]) for i in first)
    ds_b.set_epoch(3)
    assert any(not torch.equal(ds_a[i]["target"], ds_b[i]["target"]) for i in range(6))
    other_seed = make(seed=1)
    other_seed.set_epoch(2)
    assert any(not torch.equal(ds_a[i]["target"], other_seed[i]["target"]) for i in range(6))


def test_worker_processes_give_the_same_batch(tmp_path, frame_factory):
    write_shot(tmp_path, [f"f{k}.png" for k in range(4)], frame_factory, size=40)
    ds = dataset.TripletDataset([tmp_path], image_size=32, seed=7)
    ds.set_epoch(1)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=1, timeout=60)))
    assert batch["line"].shape == (4, 1, 32, 32) and batch["prev"]["colour"].shape == (4, 3, 32, 32)
    assert batch["prev"]["present"].dtype == torch.float32 and batch["index"].tolist() == [0, 1, 2, 3]
    for i in range(4):
        assert torch.equal(batch["target"][i], ds[i]["target"])
        assert torch.equal(batch["prev"]["colour"][i], ds[i]["prev"]["colour"])


# ----------------------------------------------------------------------------- splits and folders
def test_split_shots_by_whole_shots():
    shots = [f"shot{i}" for i in range(10)]
    train, val = dataset.split_shots(shots, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7 and sorted(train + val) == sorted(shots)
    assert train == [s for s in shots if s in train]  # input order kept
    assert dataset.split_shots(shots, 0.3, seed=0) == (train, val)
    assert dataset.split_shots(shots, 0.3, seed=1) != (train, val)
    assert dataset.split_shots(shots, 0.0, seed=0) == (shots, [])
    assert dataset.split_shots(["only"], 0.5, seed=0) == (["only"], [])
    assert [len(x) for x in dataset.split_shots(shots[:2], 0.9, seed=0)] == [1, 1]
    assert [len(x) for x in dataset.split_shots(shots[:5], 0.01, seed=0)] == [4, 1]
    with pytest.raises(UserError):
        dataset.split_shots(shots, 1.0, seed=0)


def test_resolve_data_dirs_original_layout(tmp_path):
    base, train = tmp_path / "R" / "D", tmp_path / "R" / "D" / "Train"
    train.mkdir(parents=True)

    def original():
        return dataset.resolve_data_dirs(root=tmp_path / "R", dataset="D")
    assert original() == (train, None)
    (base / "Test").mkdir()
    assert original() == (train, base / "Test")
    (base / "val").mkdir()  # Val wins over Test, any case
    assert original() == (train, base / "val")
    assert dataset.resolve_data_dirs(data=train) == (train, None)
    assert dataset.resolve_data_dirs(train, base / "Test") == (train, base / "Test")
    with pytest.raises(UserError, match="Train"):
        dataset.resolve_data_dirs(root=tmp_path / "R", dataset="missing")
    with pytest.raises(UserError, match="not both"):
        dataset.resolve_data_dirs(data=train, root=tmp_path / "R", dataset="D")
    with pytest.raises(UserError, match="nowhere"):
        dataset.resolve_data_dirs(data=tmp_path / "nowhere")
    with pytest.raises(UserError):
        dataset.resolve_data_dirs()


# ----------------------------------------------------------------------------- bad inputs
def test_corrupt_png_is_named(tmp_path, frame_factory):
    write_shot(tmp_path, ["frame1.png"], frame_factory)
    (tmp_path / "frame2.png").write_bytes(b"this is not a png at all")
    ds = dataset.TripletDataset([tmp_path], image_size=32, train=False)
    with pytest.raises(UserError, match="frame2.png"):
        ds[1]


def test_truncated_jpeg_is_named(tmp_path, frame_factory):
    write_shot(tmp_path, ["frame1.jpg"], frame_factory)
    data = (tmp_path / "frame1.jpg").read_bytes()
    (tmp_path / "frame1.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="frame1.jpg"):
        dataset.TripletDataset([tmp_path], image_size=32)[0]


def test_empty_root_and_unnumbered_images_are_named(tmp_path, frame_factory):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty"):
        dataset.TripletDataset.from_root(empty)
    utils.write_image(tmp_path / "stills" / "cat.png", frame_factory(0))
    with pytest.raises(UserError, match="stills"):
        dataset.TripletDataset.from_root(tmp_path / "stills")


def test_two_files_with_one_frame_number_are_refused(tmp_path, frame_factory):
    write_shot(tmp_path, ["frame9.png", "frame09.jpg"], frame_factory)
    with pytest.raises(UserError, match="frame09.jpg|frame9.png"):
        dataset.TripletDataset([tmp_path])


def test_unknown_line_art_mode(tmp_path, frame_factory):
    write_shot(tmp_path, ["frame1.png"], frame_factory)
    with pytest.raises(UserError, match="canny"):
        dataset.TripletDataset([tmp_path], line_art="sketch")


def test_uint8_samples_become_the_float_samples_on_the_device(tmp_path, frame_factory):
    for i in range(3):
        utils.write_image(tmp_path / "s" / f"f_{i}.png", frame_factory(i, 40, 40))
    kwargs = dict(image_size=32, train=True, prev_prob=1.0, seed=3)
    as_float = dataset.TripletDataset.from_root(tmp_path, **kwargs)
    as_uint8 = dataset.TripletDataset.from_root(tmp_path, uint8=True, **kwargs)
    for index in range(3):
        a, b = as_float[index], as_uint8[index]
        for key in ("line", "target"):
            assert b[key].dtype == torch.uint8
            assert torch.allclose(dataset.to_device(b[key][None], "cpu")[0], a[key], atol=1e-6)
        assert b["prev"]["colour"].dtype == torch.uint8
        assert torch.allclose(dataset.to_device(b["prev"], "cpu")["colour"], a["prev"]["colour"], atol=1e-6)


def test_to_uint8_inverts_to_tensor_and_spreads_line_art_to_rgb(frame_factory):
    rgb = frame_factory(3, 20, 24)
    assert (dataset.to_uint8(dataset.to_tensor(rgb)) == rgb).all()
    grey = rgb[..., 0]
    assert (dataset.to_uint8(dataset.to_tensor(grey)) == np.repeat(grey[..., None], 3, 2)).all()


# ----------------------------------------------------------------------------- extended samples
def extended(tmp_path, frame_factory, n=6, **kwargs):
    frames = write_shot(tmp_path / "shot", [f"f{k}.png" for k in range(n)], frame_factory, size=32)
    kwargs = {"image_size": 32, "train": False, "extended": True, "prev_prob": 1.0, **kwargs}
    return frames, dataset.TripletDataset([tmp_path / "shot"], **kwargs)


def which(frames, image):
    """Index of the frame a (3, S, S) float tensor shows, or None (black)."""
    for k, frame in enumerate(frames):
        if torch.equal(image, as_tensor(frame)):
            return k
    assert image.abs().sum() == 0, "neither a frame of the shot nor black"
    return None


def test_extended_sample_keys_shapes_and_forward_chain(tmp_path, frame_factory):
    frames, ds = extended(tmp_path, frame_factory, rollout_prob=1.0, keyframe_prob=1.0)
    sample = ds[3]
    source = {"colour": (3, 32, 32), "line": (1, 32, 32), "present": (), "flow": (2, 32, 32)}
    for name in ("prev", "prev2", "keyframe"):
        assert {k: tuple(v.shape) for k, v in sample[name].items()} == source, name
    assert sample["line"].shape == (1, 32, 32) and sample["keyframe_flow2"].shape == (2, 32, 32)
    assert which(frames, sample["target"]) == 3
    assert which(frames, sample["prev"]["colour"]) == 2 and which(frames, sample["prev2"]["colour"]) == 1
    assert sample["rollout"] == 1 and sample["prev"]["present"] == 1 and sample["prev2"]["present"] == 1
    key = which(frames, sample["keyframe"]["colour"])
    assert sample["keyframe"]["present"] == 1 and key is not None and key != 3
    line_prev = dataset.make_line_art(frames[2], "canny")
    assert torch.equal(sample["prev"]["line"][0], torch.from_numpy(line_prev).float() / 255)
    expected = correspond.line_flow(dataset.make_line_art(frames[3], "canny"), line_prev, "canny")
    assert torch.allclose(sample["prev"]["flow"], torch.from_numpy(expected).permute(2, 0, 1))
    # the previous frame's flow to the keyframe, for the rollout's own input
    to_key = correspond.line_flow(line_prev, dataset.make_line_art(frames[key], "canny"), "canny")
    assert torch.allclose(sample["keyframe_flow2"], torch.from_numpy(to_key).permute(2, 0, 1))
    # the first frame has no previous frame: no rollout, nothing but zeros in their place
    first = ds[0]
    assert first["rollout"] == 0 and first["prev"]["present"] == 0 and which(frames, first["prev"]["colour"]) is None
    assert first["prev"]["line"].abs().sum() == 0 and first["prev"]["flow"].abs().sum() == 0
    # frame 1 rolls out from frame 0, whose own previous frame does not exist
    assert ds[1]["rollout"] == 1 and ds[1]["prev2"]["present"] == 0 and which(frames, ds[1]["prev"]["colour"]) == 0


def test_a_longer_rollout_reaches_further_back_and_starts_where_the_shot_does(tmp_path, frame_factory):
    """rollout_frames 4: frames 2 to 4 back, each with its flow from the frame after it and that
    frame's flow to the keyframe; the rollout starts at the furthest frame that exists, with its
    true colour (or black without use_prev), and frames beyond it are absent."""
    frames, ds = extended(tmp_path, frame_factory, rollout_prob=1.0, keyframe_prob=1.0, rollout_frames=4)
    lines = [dataset.make_line_art(f, "canny") for f in frames]
    sample = ds[5]
    assert [which(frames, sample[n]["colour"]) for n in ("prev", "prev2", "prev3", "prev4")] == [4, 3, 2, 1]
    assert all(sample[n]["present"] == 1 for n in ("prev2", "prev3", "prev4")) and sample["rollout_start"] == 4
    key = which(frames, sample["keyframe"]["colour"])
    for j in (2, 3, 4):
        after = 5 - (j - 1)
        own = correspond.line_flow(lines[after], lines[after - 1], "canny")  # frame j back from the frame after
        assert torch.allclose(sample[f"prev{j}"]["flow"], torch.from_numpy(own).permute(2, 0, 1)), j
        assert torch.equal(sample[f"prev{j}"]["line"][0], torch.from_numpy(lines[after - 1]).float() / 255), j
        to_key = correspond.line_flow(lines[after], lines[key], "canny")
        assert torch.allclose(sample[f"keyframe_flow{j}"], torch.from_numpy(to_key).permute(2, 0, 1)), j
    # frame 2: the shot begins 2 frames back, so the rollout starts there and 3, 4 back are absent
    near = ds[2]
    assert near["rollout_start"] == 2 and which(frames, near["prev2"]["colour"]) == 0
    assert near["prev3"]["present"] == 0 and near["prev4"]["present"] == 0
    assert near["keyframe_flow3"].abs().sum() == 0 and near["keyframe_flow4"].abs().sum() == 0
    assert ds[3]["rollout_start"] == 3 and ds[3]["prev3"]["present"] == 1 and ds[3]["prev4"]["present"] == 0
    # without use_prev the start frame is black, and the frames after it are still given
    _, black = extended(tmp_path / "b", frame_factory, rollout_prob=1.0, keyframe_prob=1.0, rollout_frames=4,
                        prev_prob=0.0)
    s = black[5]
    assert s["rollout_start"] == 4 and s["prev4"]["present"] == 0 and which(frames, s["prev4"]["colour"]) is None
    assert s["prev3"]["present"] == 1 and which(frames, s["prev3"]["colour"]) == 2
    # the extra frames change no draw: the fields a 2-frame rollout has are the same
    _, short = extended(tmp_path / "c", frame_factory, rollout_prob=0.5, keyframe_prob=0.5, reverse_prob=0.5,
                        rollout_frames=2, train=True, seed=4)
    _, long = extended(tmp_path / "d", frame_factory, rollout_prob=0.5, keyframe_prob=0.5, reverse_prob=0.5,
                       rollout_frames=3, train=True, seed=4)
    for i in range(len(short)):
        a, b = short[i], long[i]
        assert "prev3" not in a and "rollout_start" not in a
        assert tree_equal({k: a[k] for k in a}, {k: b[k] for k in a}), i
    with pytest.raises(UserError, match="rollout_frames"):
        extended(tmp_path / "e", frame_factory, rollout_frames=1)


def test_correspondence_none_computes_no_flow(tmp_path, frame_factory):
    _, ds = extended(tmp_path, frame_factory, rollout_prob=1.0, keyframe_prob=1.0, correspondence="none")
    sample = ds[3]
    assert sample["prev"]["present"] == 1 and sample["keyframe"]["present"] == 1
    assert all(sample[k]["flow"].abs().sum() == 0 for k in ("prev", "prev2", "keyframe"))


def test_reversed_chains_take_frame_t_plus_1_as_previous(tmp_path, frame_factory):
    frames, ds = extended(tmp_path, frame_factory, rollout_prob=1.0, reverse_prob=1.0)
    sample = ds[2]
    assert which(frames, sample["prev"]["colour"]) == 3 and which(frames, sample["prev2"]["colour"]) == 4
    assert ds[5]["prev"]["present"] == 0  # the last frame has no "previous" frame backward in time
    assert which(frames, ds[4]["prev"]["colour"]) == 5 and ds[4]["prev2"]["present"] == 0


def test_keyframes_come_from_the_same_shot_within_the_distance(tmp_path, frame_factory):
    frames, ds = extended(tmp_path, frame_factory, n=10, keyframe_prob=1.0, keyframe_max_distance=2)
    keys = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(10):
            key = which(frames, ds[i]["keyframe"]["colour"])  # eval crops are whole frames: exact identification
            assert key is not None and key != i and abs(key - i) <= 2
            keys.add(key - i)
    assert keys == {-2, -1, 1, 2}
    _, half = extended(tmp_path / "b", frame_factory, n=10, keyframe_prob=0.5)
    present = []
    for epoch in range(12):
        half.set_epoch(epoch)
        for i in range(10):
            sample = half[i]
            present.append(sample["keyframe"]["present"].item())
            if not present[-1]:
                assert sample["keyframe"]["colour"].abs().sum() == 0 and sample["keyframe"]["line"].abs().sum() == 0
    assert 0.3 < np.mean(present) < 0.7


def test_identical_line_art_gets_an_exact_zero_flow():
    line = np.full((16, 16), 255, np.uint8)
    line[4:12, 8] = 0
    assert not correspond.line_flow(line, line).any()
    moved = np.roll(line, 2, axis=1)
    flow = correspond.line_flow(line, moved)  # moved(x) = line(x - 2): frame t's pixel x is at x + 2
    assert abs(np.median(flow[4:12, 6:11, 0]) - 2) < 0.5
    assert correspond.flow_image(np.full((8, 8), 255, np.uint8), "canny").max() == 255  # no line at all


def test_a_locally_held_drawing_gets_a_zero_flow_there_and_the_rest_keeps_its_flow():
    """A still square and a circle that moves 3 pixels: still_mask holds around the still square's
    lines (not in flat white, not around the moving circle), and line_flow with the window is zero
    exactly there and the plain flow everywhere else. (A straight line moving along itself looks
    held, and is: the colour along it is the same.)"""
    line_t = np.full((48, 64), 255, np.uint8)
    cv2.rectangle(line_t, (4, 8), (20, 30), 0, 1)   # still
    line_s = line_t.copy()
    cv2.circle(line_t, (48, 20), 9, 0, 1)  # moves: 3 pixels left in frame s
    cv2.circle(line_s, (45, 20), 9, 0, 1)
    mask = correspond.still_mask(line_t, line_s, 5)
    assert mask[8, 12] and mask[20, 4] and mask[30, 20]  # on and next to the still square's lines
    assert not mask[19, 12]                              # its inside, 6 pixels from any line: flat
    assert not mask[8:33, 33:61].any()                   # around the moving circle
    assert not mask[40:, :].any()                        # flat white below both
    plain = correspond.line_flow(line_t, line_s)
    still = correspond.line_flow(line_t, line_s, still_window=5)
    assert not still[mask].any() and np.array_equal(still[~mask], plain[~mask])
    assert np.abs(plain[mask]).max() > 0.05  # DIS had moved some still lines: the window changes something
    assert np.array_equal(correspond.line_flow(line_t, line_s, still_window=0), plain)


def _subpixel_frame(shift: float) -> np.ndarray:
    """An outlined disc and square drawn 8 times larger, moved right by ``shift`` pixels of the
    64 x 64 frame it is then shrunk to (area averaging: the motion stays in the grey levels)."""
    big = np.full((512, 512, 3), 230, np.uint8)
    dx = int(round(shift * 8))
    cv2.circle(big, (200 + dx, 260), 120, (200, 60, 40), -1)
    cv2.circle(big, (200 + dx, 260), 120, (0, 0, 0), 12)
    cv2.rectangle(big, (60 + dx, 60), (160 + dx, 140), (40, 160, 60), -1)
    cv2.rectangle(big, (60 + dx, 60), (160 + dx, 140), (0, 0, 0), 12)
    return cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("shift", [0.5, 1.5])
def test_a_flow_at_twice_the_resolution_follows_a_fraction_of_a_pixel(shift):
    """A drawing moved by a fraction of a pixel: Canny at the network resolution puts its lines on
    whole pixels; the flow computed on flow art at scale 2 (Canny of the frame enlarged twice) and
    brought back follows the motion closer, near the lines, and the frame warped along it comes
    out closer to the truth. Flow art at scale 1 is the line art itself."""
    f0, f1 = _subpixel_frame(0), _subpixel_frame(shift)
    l0, l1 = dataset.make_line_art(f0), dataset.make_line_art(f1)
    assert correspond.flow_art(f0, l0, "canny", 1) is l0
    near = cv2.dilate((l1 < 128).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    error, psnr = {}, {}
    for scale in (1, 2):
        a0, a1 = correspond.flow_art(f0, l0, "canny", scale), correspond.flow_art(f1, l1, "canny", scale)
        assert a0.shape == ((64, 64) if scale == 1 else (128, 128, 2)) and a0.dtype == np.uint8
        flow = correspond.line_flow(a1, a0, "canny", 0, scale)
        assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
        error[scale] = abs(flow[..., 0][near].mean() + shift)  # frame 0 lies shift pixels to the left
        warped = correspond.warp_frame(f0, a1, a0, "canny", 0, "bilinear", scale)
        psnr[scale] = 10 * np.log10(255 ** 2 / ((warped.astype(float) - f1) ** 2).mean())
    assert error[2] < error[1] / 2 and error[2] < 0.1
    assert psnr[2] > psnr[1] + 1
    # line art given without a colour frame is enlarged as it is; a wrong size is refused
    given = correspond.flow_art(None, l0, "given", 2)
    assert given.shape == (128, 128, 2) and np.array_equal(correspond.held_art(given, 2), l0)
    with pytest.raises(ValueError, match="not a flow_art 2 times"):
        correspond.line_flow(l1[:63], l0[:63], "canny", 0, 2)
    with pytest.raises(ValueError, match="not a flow_art 2 times"):  # the enlarged line art alone
        correspond.line_flow(a1[..., 0], a0[..., 0], "canny", 0, 2)


def _held_and_moved_frame(dx: int) -> np.ndarray:
    """An outlined disc held on the left and a square moved right by ``dx`` / 8 pixels on the
    right of a 64 x 64 frame (drawn 8 times larger and area-averaged)."""
    big = np.full((512, 512, 3), 230, np.uint8)
    cv2.circle(big, (150, 260), 100, (200, 60, 40), -1)
    cv2.circle(big, (150, 260), 100, (0, 0, 0), 12)
    cv2.rectangle(big, (330 + dx, 200), (450 + dx, 320), (40, 160, 60), -1)
    cv2.rectangle(big, (330 + dx, 200), (450 + dx, 320), (0, 0, 0), 12)
    return cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)


def test_a_flow_at_twice_the_resolution_keeps_lines_held_in_the_networks_line_art_still():
    """At flow scale 2 a drawing held in the line art at network resolution gets a zero flow even
    where the enlarged line art the flow is computed on differs, locally (the still window) and
    over the whole frame (as the noise of a compressed
    video makes it differ): here the held disc's enlarged lines are moved by one enlarged pixel.
    The square that moved is still followed; the flow art carries the network's line art."""
    f0, f1 = _held_and_moved_frame(0), _held_and_moved_frame(24)  # the square moves 3 pixels
    l0, l1 = dataset.make_line_art(f0), dataset.make_line_art(f1)
    assert np.array_equal(l0[:, :36], l1[:, :36]) and not np.array_equal(l0, l1)
    a0, a1 = correspond.flow_art(f0, l0, "canny", 2), correspond.flow_art(f1, l1, "canny", 2)
    assert np.array_equal(correspond.held_art(a1, 2), l1)
    fine = a1[..., 0].copy()
    fine[:, :72] = np.roll(fine[:, :72], 1, axis=1)  # the held disc, one enlarged pixel off
    a1[..., 0] = fine
    held = correspond.still_mask(l1, l0, 9)
    assert held[:, :30].sum() > 100
    disc_lines = (l1 < 128) & held
    # computed on the enlarged line art alone, the flow moves the held disc's lines
    alone = cv2.resize(correspond.line_flow(fine, a0[..., 0], "canny", 18), (64, 64), interpolation=cv2.INTER_AREA) / 2
    assert np.abs(alone[disc_lines]).mean() > 0.1
    flow = correspond.line_flow(a1, a0, "canny", 9, 2)
    assert not flow[held].any()                              # exactly zero where the drawing is held
    square = (l1 < 128) & ~held
    square[:, :40] = False
    assert abs(np.median(flow[square][:, 0]) + 3) < 0.5    # the square's 3 pixels, followed
    warped = correspond.warp_frame(f0, a1, a0, "canny", 9, "bicubic", 2)
    assert np.array_equal(warped[held], f0[held])            # held lines copied as they are
    # with no still window nothing is held locally: the enlarged line art alone decides
    assert np.abs(correspond.line_flow(a1, a0, "canny", 0, 2)[disc_lines]).mean() > 0.1
    # the whole drawing held in the network's line art, its enlarged line art not: a zero flow
    # everywhere (flat areas too), with or without a still window, as identical line art gets at scale 1
    b0 = correspond.flow_art(f0, l0, "canny", 2)
    b0[..., 0] = np.roll(b0[..., 0], 1, axis=1)
    assert not np.array_equal(b0, a0) and np.abs(correspond.line_flow(b0[..., 0], a0[..., 0], "canny")).max() > 0.1
    for window in (0, 9):
        assert not correspond.line_flow(b0, a0, "canny", window, 2).any()


def test_a_flow_does_not_depend_on_the_flows_computed_before_it():
    """The same pair gets the same flow whatever the thread computed before, at another size too
    (a reused OpenCV DIS engine did not: a sample's flow then depended on its process's past)."""
    import threading

    rng = np.random.default_rng(4)

    def drawing(h, w):
        line = np.full((h, w), 255, np.uint8)
        for _ in range(6):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.circle(line, (x, y), int(rng.integers(3, 9)), 0, 1)
        return line

    a = drawing(64, 64)
    b = np.roll(a, (1, 3), axis=(0, 1))
    flows = []

    def fresh_thread(before):
        for shape in before:  # other flows first, in this new thread
            c = drawing(*shape)
            correspond.line_flow(c, np.roll(c, 2, axis=0))
        flows.append(correspond.line_flow(a, b))

    for before in ([], [(32, 32)], [(48, 80), (64, 64)]):
        t = threading.Thread(target=fresh_thread, args=(before,))
        t.start(), t.join()
    assert np.abs(flows[0]).max() > 1  # a real flow
    assert all(np.array_equal(f, flows[0]) for f in flows[1:])


def test_extended_samples_are_deterministic_and_uint8_matches(tmp_path, frame_factory):
    kwargs = {"rollout_prob": 0.5, "keyframe_prob": 0.5, "reverse_prob": 0.5, "train": True, "seed": 3}
    frames, ds = extended(tmp_path, frame_factory, **kwargs)
    _, ds_u8 = extended(tmp_path, frame_factory, uint8=True, **kwargs)

    def leaves(sample):
        return {(k, f): v for k, x in sample.items() for f, v in (x.items() if isinstance(x, dict) else [("", x)])}

    for epoch in (0, 1):
        ds.set_epoch(epoch), ds_u8.set_epoch(epoch)
        for i in (5, 0, 3):
            a, b, c = leaves(ds[i]), leaves(ds[i]), leaves(ds_u8[i])
            assert a.keys() == c.keys() and all(torch.equal(a[k], b[k]) for k in a)
            for key in a:
                if c[key].dtype == torch.uint8:
                    assert torch.allclose(dataset.to_device(c[key][None], "cpu")[0], a[key], atol=1e-6)
                elif c[key].dtype == torch.float16:  # flows travel as float16
                    assert torch.allclose(c[key].float(), a[key], atol=0.05)
                else:
                    assert torch.equal(c[key], a[key])


def test_non_finite_generator_output_is_refused_not_written_black():
    image = torch.full((3, 4, 4), 0.5)
    assert dataset.to_uint8(image)[0, 0].tolist() == [128, 128, 128]
    image[1, 2, 3] = float("nan")
    with pytest.raises(UserError, match="non-finite"):
        dataset.to_uint8(image)


def test_self_reference_keyframes_are_frame_t_moved(tmp_path, frame_factory):
    """--self_reference_prob 1: every keyframe is frame t itself under a random similarity (its
    background colour is frame t's, no frame of the shot equals it), with its own line art and the
    flows to it from frame t and from the previous frame; at 0 the samples are the usual ones."""
    frames, ds = extended(tmp_path, frame_factory, rollout_prob=1.0, keyframe_prob=1.0, self_reference_prob=1.0)
    _, plain = extended(tmp_path / "b", frame_factory, rollout_prob=1.0, keyframe_prob=1.0)
    _, zero = extended(tmp_path / "c", frame_factory, rollout_prob=1.0, keyframe_prob=1.0, self_reference_prob=0.0)
    for i in (2, 3, 4):
        sample, key = ds[i], ds[i]["keyframe"]
        assert key["present"] == 1
        colour = (key["colour"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert all(not np.array_equal(colour, f) for f in frames)
        background = np.median(colour.reshape(-1, 3), axis=0)
        assert np.array_equal(background, frames[i][0, 0]), (background, frames[i][0, 0])
        line = dataset.make_line_art(colour, "canny")
        assert torch.equal(key["line"][0], torch.from_numpy(line).float() / 255)
        to_key = correspond.line_flow(dataset.make_line_art(frames[i], "canny"), line, "canny")
        assert torch.allclose(key["flow"], torch.from_numpy(to_key).permute(2, 0, 1))
        from_prev = correspond.line_flow(dataset.make_line_art(frames[i - 1], "canny"), line, "canny")
        assert torch.allclose(sample["keyframe_flow2"], torch.from_numpy(from_prev).permute(2, 0, 1))
        for name in ("prev", "keyframe"):
            for field in ("colour", "line", "flow"):
                assert torch.equal(zero[i][name][field], plain[i][name][field])


def test_prev_drift_draws_only_when_on_and_leaves_every_other_field_as_it_was(tmp_path, frame_factory):
    """--prev_drift_prob: its numbers come after every other draw, so the samples are the same
    with it as without, plus 'prev_drift'; at 0 the key is absent; at 1 every sample is on."""
    _, plain = extended(tmp_path, frame_factory, rollout_prob=0.5, keyframe_prob=1.0)
    _, on = extended(tmp_path / "b", frame_factory, rollout_prob=0.5, keyframe_prob=1.0, prev_drift_prob=1.0)
    _, half = extended(tmp_path / "c", frame_factory, rollout_prob=0.5, keyframe_prob=1.0, prev_drift_prob=0.5)
    for i in range(6):
        assert "prev_drift" not in plain[i]
        assert on[i]["prev_drift"].shape == (dataset.DRIFT_PARAMS,) and on[i]["prev_drift"][0] == 1
        assert 0 <= float(on[i]["prev_drift"][1]) < 1
        for name in ("prev", "prev2", "keyframe"):
            for field, value in plain[i][name].items():
                assert torch.equal(on[i][name][field], value), (i, name, field)
        assert torch.equal(on[i]["target"], plain[i]["target"]) and torch.equal(on[i]["rollout"], plain[i]["rollout"])
        # the same draws at another probability: only the on flag may differ
        assert torch.equal(half[i]["prev_drift"][1:], on[i]["prev_drift"][1:])
        assert float(half[i]["prev_drift"][0]) in (0.0, 1.0)
    with pytest.raises(UserError, match="prev_drift_prob"):
        extended(tmp_path / "d", frame_factory, prev_drift_prob=1.5)


def test_apply_drift_moves_blurs_and_tints_in_proportion_to_strength_and_only_where_asked():
    """Off, strength 0 or an absent previous frame: the very input. On: a smooth, small change
    that grows with the strength (PSNR against the input falls), stays in [0, 1], and is the same
    for the same parameters."""
    import metrics
    rng = np.random.default_rng(3)
    image = np.full((64, 64, 3), 200, np.uint8)
    image[16:40, 20:44] = (30, 90, 220)                  # a flat cel on a flat background
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None].repeat(4, 1, 1, 1) / 255
    params = torch.from_numpy(np.stack([dataset.drift_params(rng, 1.0) for _ in range(4)]))
    params[:, 1] = torch.tensor([0.0, 0.2, 0.5, 1.0])
    present = torch.ones(4)
    out = dataset.apply_drift(x, params, present)
    assert torch.equal(out[0], x[0])                      # strength 0
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    db = [metrics.psnr((o.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), image) for o in out[1:]]
    assert db[0] > db[1] > db[2] and db[0] > 30 > db[2] > 15, db
    assert torch.equal(dataset.apply_drift(x, params, present), out)
    off = params.clone()
    off[:, 0] = 0
    assert torch.equal(dataset.apply_drift(x, off, present), x)
    absent = dataset.apply_drift(x, params, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.equal(absent[1], x[1]) and torch.equal(absent[3], x[3]) and torch.equal(absent[2], out[2])
