"""The decoded-frame cache: same samples as the image files, reuse, rebuilds, killed builds."""
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dataset
import utils


def smooth_frame(k, h=120, w=160):
    """A frame with smooth content (gradients and a moving disc), as real frames are at the
    pixel scale: resampling paths differ by interpolation error only."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    frame = np.stack([xs / w * 200 + 20, ys / h * 180 + 30, (xs + ys) / (w + h) * 150 + 50 + 5 * k], -1)
    frame[(xs - 40 - 6 * k) ** 2 + (ys - 60) ** 2 < 400] = (230, 90, 40)
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.fixture
def shots(tmp_path):
    for s in range(2):
        for k in range(4):
            utils.write_image(tmp_path / "data" / f"shot{s}" / f"frame_{k:03d}.png", smooth_frame(k + 3 * s))
    return utils.find_shot_dirs(tmp_path / "data")


def make(shots, cache_dir, **kw):
    kw = {"image_size": 64, "train": True, "prev_prob": 1.0, "seed": 4, **kw}
    return dataset.TripletDataset(shots, frame_cache=True, cache_dir=cache_dir, **kw)


def test_cached_samples_match_the_image_files(shots, tmp_path):
    cached = make(shots, tmp_path / "cache")
    direct = dataset.TripletDataset(shots, image_size=64, train=True, prev_prob=1.0, seed=4)
    gaps = []
    for epoch in range(3):
        cached.set_epoch(epoch), direct.set_epoch(epoch)
        for i in range(len(direct)):
            a, b = cached[i], direct[i]
            gaps.append((a["target"] - b["target"]).abs().mean().item())
            gaps.append((a["prev"]["colour"] - b["prev"]["colour"]).abs().mean().item())
    print(f"mean absolute difference, cached vs files: mean {np.mean(gaps) * 255:.2f}/255, "
          f"largest {max(gaps) * 255:.2f}/255")
    assert max(gaps) < 2 / 255


def test_cache_is_reused_and_rebuilt_when_a_frame_changes(shots, tmp_path, capsys):
    make(shots, tmp_path / "cache")
    assert "building the frame cache" in capsys.readouterr().err
    make(shots, tmp_path / "cache")
    assert "building" not in capsys.readouterr().err  # reused
    changed = utils.list_frames(shots[1])[2]
    utils.write_image(changed, np.full((120, 160, 3), 7, np.uint8))
    ds = make(shots, tmp_path / "cache")
    assert "building the frame cache" in capsys.readouterr().err
    assert ds.cache.colour(1, 2).max() == 7  # the new content, not the old
    assert len([p for p in (tmp_path / "cache").iterdir()]) == 1  # replaced in place, no leftovers


def test_other_load_size_or_line_art_mode_is_another_cache(shots, tmp_path, capsys):
    a = make(shots, tmp_path / "cache")
    b = make(shots, tmp_path / "cache", image_size=32)
    assert a.cache.folder != b.cache.folder and b.cache.colour(0, 0).shape == (36, 36, 3)
    line_root = tmp_path / "lines"
    for shot in shots:
        for f in utils.list_frames(shot):
            utils.write_image(line_root / shot.name / f.name, np.full((120, 160), 200, np.uint8))
    c = make(shots, tmp_path / "cache", line_art="given", line_root=line_root,
             root_for_relpaths=tmp_path / "data")
    assert c.cache.folder not in (a.cache.folder, b.cache.folder) and c.cache.line(0, 0).max() == 200


def test_a_killed_build_is_never_read_and_is_rebuilt(shots, tmp_path, capsys):
    first = make(shots, tmp_path / "cache")
    folder = first.cache.folder
    expected = np.array(first.cache.colour(1, 3))
    # a build killed half-way: the final folder without its index (never written last), and a
    # hidden build folder of a process that no longer exists
    (folder / "index.json").unlink()
    frames = np.load(folder / "frames.npy", mmap_mode="r+")
    frames[:] = 0
    frames.flush()
    del frames
    dead = folder.with_name(f".{folder.name}.building-999999999")
    dead.mkdir()
    (dead / "frames.npy").write_bytes(b"half")
    capsys.readouterr()
    again = make(shots, tmp_path / "cache")
    assert "building the frame cache" in capsys.readouterr().err
    assert np.array_equal(again.cache.colour(1, 3), expected) and not dead.exists()


def test_workers_open_the_cache_rather_than_copy_it(shots, tmp_path):
    ds = make(shots, tmp_path / "cache", uint8=True)
    ds.cache.colour(0, 0)  # opened here
    assert len(pickle.dumps(ds.cache)) < 1000  # what a worker receives: the folder, not the frames
    ds.set_epoch(2)
    batch = next(iter(DataLoader(ds, batch_size=8, num_workers=2, timeout=60)))
    for i in range(8):
        assert torch.equal(batch["target"][i], ds[i]["target"])


def test_two_processes_building_the_same_cache_at_once_both_end_with_it(shots, tmp_path, monkeypatch):
    """The study trains two models on one data folder at the same time: both build the cache.
    A build that finds the same cache published meanwhile drops its own, whether it sees it
    before its rename or only when the rename fails."""
    import framecache
    first = make(shots, tmp_path / "cache")
    folder = first.cache.folder
    index = json.loads((folder / "index.json").read_text())
    expected = np.array(first.cache.colour(1, 3))

    def a_second_build():
        other = folder.with_name(f".{folder.name}.building-{os.getpid()}")
        shutil.copytree(folder, other)
        (other / "index.json").unlink()
        return other

    inode = folder.stat().st_ino
    framecache._publish(a_second_build(), folder, index)       # published before: it is kept as it is
    assert folder.stat().st_ino == inode
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    # published between this build's look and its rename: the rename fails, the look again finds it
    second = a_second_build()
    moved = folder.with_name(folder.name + ".moved")
    os.replace(folder, moved)
    real_replace, calls = os.replace, []

    def racing_replace(src, dst):
        if Path(src).name.startswith(f".{folder.name}.building") and not calls:
            calls.append(src)
            real_replace(moved, folder)                   # the other process wins the race
        return real_replace(src, dst)

    monkeypatch.setattr(framecache.os, "replace", racing_replace)
    framecache._publish(second, folder, index)
    assert calls and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    again = make(shots, tmp_path / "cache")
    assert np.array_equal(again.cache.colour(1, 3), expected)


def test_a_cache_replaced_by_another_process_at_every_try_is_a_clear_error_and_leaves_no_build(
        shots, tmp_path, monkeypatch):
    import framecache
    first = make(shots, tmp_path / "cache")
    folder = first.cache.folder
    index = json.loads((folder / "index.json").read_text())
    building = folder.with_name(f".{folder.name}.building-{os.getpid()}")
    shutil.copytree(folder, building)
    (folder / "index.json").write_text("{}")  # the cache there is out of date: this build replaces it
    real_replace = os.replace

    def always_beaten(src, dst):
        if Path(src) == building:  # another process puts an out-of-date cache there first, every time
            Path(dst).mkdir(exist_ok=True)
            (Path(dst) / "index.json").write_text("{}")
        return real_replace(src, dst)

    monkeypatch.setattr(framecache.os, "replace", always_beaten)
    with pytest.raises(utils.UserError, match="kept being replaced by another process"):
        framecache._publish(building, folder, index)
    assert not building.exists()
