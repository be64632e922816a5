"""train.py on tiny generated shots: a short run, exact resume, bad checkpoints, stops."""
import json
import math

import pytest
import torch

import train
import utils
from utils import UserError


def write_shots(root, frame_factory, shots=2, frames=6, size=40):
    for s in range(shots):
        for i in range(frames):
            utils.write_image(root / f"shot{s}" / f"frame_{i:04d}.png",
                              frame_factory(i, size, size, seed=s))
    return root


def tiny_args(data, run_dir, **over):
    argv = ["--data", str(data), "--run_dir", str(run_dir), "--image_size", "32", "--batch_size", "2",
            "--ngf", "8", "--ndf", "8", "--num_workers", "0", "--vgg_weights", "random", "--device", "cpu",
            "--val_frames", "3", "--log_every", "1", "--val_fraction", "0.5"]
    for key, value in over.items():
        argv += [f"--{key}"] + ([] if value is True else [str(value)])
    return train.build_parser().parse_args(argv)


@pytest.fixture
def shots(tmp_path, frame_factory):
    return write_shots(tmp_path / "frames", frame_factory)


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_short_run_writes_checkpoint_and_finite_losses(shots, tmp_path):
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=2)) == 0
    ckpt = torch.load(run_dir / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["format"] == train.CHECKPOINT_FORMAT
    assert set(ckpt) >= {"generator", "discriminator", "opt_g", "opt_d", "model_config", "run_config"}
    steps = [r for r in read_log(run_dir) if "loss_d" in r]
    assert [r["step"] for r in steps] == [1, 2]
    loss_keys = ("loss_d", "g_adv", "l1", "content", "style", "g_total")
    assert all(math.isfinite(r[k]) for r in steps for k in loss_keys)
    assert all(r["vgg"] == "random" for r in steps)  # the log says the VGG weights were random
    val = [r for r in read_log(run_dir) if "val_psnr" in r]
    assert val and (run_dir / "samples").is_dir()
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_resume_is_exact(shots, tmp_path):
    """2 steps, stop, resume for 2 more == 4 steps straight (CPU, same seed)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(tiny_args(shots, straight, max_steps=4, batch_size=1)) == 0
    assert train.main(tiny_args(shots, split, max_steps=2, batch_size=1)) == 0
    assert train.main(tiny_args(shots, split, max_steps=4, batch_size=1, resume="auto")) == 0
    a = torch.load(straight / "checkpoints" / "step_00000004.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "step_00000004.pt", weights_only=True)
    for net in ("generator", "discriminator"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    assert a["opt_g"]["state"][0]["exp_avg_sq"].equal(b["opt_g"]["state"][0]["exp_avg_sq"])


def test_corrupt_checkpoint_is_one_clear_error(shots, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        train.main(tiny_args(shots, tmp_path / "run", max_steps=1, resume=str(bad)))


def test_checkpoint_of_another_architecture_is_refused(shots, tmp_path):
    run_dir = tmp_path / "run"
    train.main(tiny_args(shots, run_dir, max_steps=1))
    with pytest.raises(UserError, match="trained with"):
        train.main(tiny_args(shots, tmp_path / "other", max_steps=2, generator="resnet",
                             resume=str(run_dir / "checkpoints" / "step_00000001.pt")))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(shots, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train.main(tiny_args(shots, run_dir, max_steps=1))
    good = (run_dir / "checkpoints" / "step_00000001.pt").read_bytes()
    real = train.losses.GeneratorLoss.__call__

    def exploding(self, *a, **k):
        total, parts = real(self, *a, **k)
        return total * float("nan"), parts

    monkeypatch.setattr(train.losses.GeneratorLoss, "__call__", exploding)
    with pytest.raises(train.NonFiniteLoss, match="generator loss became nan at step 1"):
        train.main(tiny_args(shots, run_dir, max_steps=3, resume="auto"))
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_00000001.pt"]
    assert (run_dir / "checkpoints" / "step_00000001.pt").read_bytes() == good


def test_ctrl_c_saves_and_exits_cleanly(shots, tmp_path, monkeypatch):
    real, calls = train.gan_step, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "gan_step", interrupted)
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=5)) == 130
    ckpt = torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=True)
    assert ckpt["step"] == 1


def test_seed_readme_flags_still_parse(tmp_path):
    args = train.build_parser().parse_args(
        ["--root", "r", "--dataset", "d", "--batchSize", "3", "--logfile", "l.txt",
         "--checkpoint_path_G", "g.pth", "--checkpoint_path_D", "d.pth"])
    assert (args.batch_size, args.init_generator, args.init_discriminator) == (3, "g.pth", "d.pth")
    assert (args.root, args.dataset, args.logfile) == ("r", "d", "l.txt")


def test_logfile_and_original_layout(tmp_path, frame_factory):
    root = tmp_path / "data"
    write_shots(root / "toy" / "Train", frame_factory, shots=1, frames=4)
    write_shots(root / "toy" / "Test", frame_factory, shots=1, frames=3)
    args = tiny_args(tmp_path / "unused", tmp_path / "run", max_steps=1)
    args.data, args.root, args.dataset, args.logfile = None, str(root), "toy", str(tmp_path / "log.txt")
    assert train.main(args) == 0
    text = (tmp_path / "log.txt").read_text()
    assert "g_total=" in text and "val_psnr=" in text


def test_time_budget_stops_after_the_current_step(shots, tmp_path):
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=50, max_minutes=0)) == 0
    assert [p.name for p in (run_dir / "checkpoints").glob("step_*")] == ["step_00000001.pt"]
    assert (run_dir / "generator.pt").is_file()


def test_persistent_workers_see_each_epoch(shots, tmp_path):
    """The sampler carries the epoch, so a worker that never saw set_epoch still draws the
    epoch's own crops and previous-frame choices."""
    args = tiny_args(shots, tmp_path / "run", num_workers=1)
    ds, sampler, loader = train.build_loader(args, shots, utils.find_shot_dirs(shots), 0, 1, torch.device("cpu"))
    assert loader.persistent_workers
    batches = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches.append({int(i): line for b in loader for i, line in zip(b["index"], b["line"])})
    ds.set_epoch(1)  # the in-process reference for epoch 1
    for index, line in batches[1].items():
        assert torch.equal(line, ds[index]["line"])
    assert any(not torch.equal(batches[0][i], batches[1][i]) for i in batches[0])


def test_validation_logs_the_metrics_of_test_py(shots, tmp_path):
    run_dir = tmp_path / "run"
    train.main(tiny_args(shots, run_dir, max_steps=1))
    val = [r for r in read_log(run_dir) if "val_psnr" in r][-1]
    assert 0 < val["val_psnr"] < 100 and 0 <= val["val_ssim"] <= 1 and val["val_tc_ratio"] > 0
    strip = utils.read_rgb(val["val_sample"])
    assert strip.shape == (3 * 32, 3 * 32, 3)  # 3 validation frames x (line | generated | target)
