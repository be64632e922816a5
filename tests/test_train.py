"""train.py on tiny generated shots: a short run, exact resume, bad checkpoints, stops."""
import contextlib
import copy
import json
import math
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import correspond
import dataset
import models
import runs
import train
import utils
from conftest import tree_equal
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
    assert ckpt["progress"]["step"] == 2 and ckpt["format"] == runs.CHECKPOINT_FORMAT
    assert set(ckpt) >= {"generator", "discriminator", "opt_g", "opt_d", "scaler", "progress",
                         "model_config", "run_config"}
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


def test_a_resumed_run_trains_with_the_learning_rates_given_now_and_names_what_changed(shots, tmp_path, capsys):
    """The optimiser states a checkpoint holds carry the rates they were saved with; resumed with
    another --lr_g / --lr_d / --beta2 (to fine-tune at a lower rate, say), the run trains with
    the new ones, as its config.json then says, and a note names every option that changed. The
    same flags give the same rates (resume stays exact, test_resume_is_exact)."""
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=1, batch_size=1, correspondence="match",
                                match_warmup=0)) == 0
    capsys.readouterr()
    assert train.main(tiny_args(shots, run_dir, max_steps=2, batch_size=1, correspondence="match", match_warmup=0,
                                resume="auto", lr_g=3e-4, lr_d=2e-5, lr_match=1e-3, beta2=0.99)) == 0
    captured = capsys.readouterr()
    note = [line for line in (captured.out + captured.err).splitlines() if "resumed with options changed" in line]
    assert len(note) == 1
    named = note[0].split(".pt: ", 1)[1].split("; ")  # max_steps and resume changed too: not named
    assert named == ["beta2 0.999 -> 0.99", "lr_d 1e-05 -> 2e-05", "lr_g 0.0001 -> 0.0003", "lr_match 0.003 -> 0.001"]
    ckpt = torch.load(run_dir / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert [g["lr"] for g in ckpt["opt_g"]["param_groups"]] == [3e-4, 1e-3]  # the generator's, the matcher's
    assert [g["lr"] for g in ckpt["opt_d"]["param_groups"]] == [2e-5]
    assert all(g["betas"] == (0.0, 0.99) or g["betas"] == [0.0, 0.99]
               for opt in ("opt_g", "opt_d") for g in ckpt[opt]["param_groups"])
    assert json.loads((run_dir / "config.json").read_text())["lr_g"] == 3e-4
    # the same flags again: no note
    assert train.main(tiny_args(shots, run_dir, max_steps=3, batch_size=1, correspondence="match", match_warmup=0,
                                resume="auto", lr_g=3e-4, lr_d=2e-5, lr_match=1e-3, beta2=0.99)) == 0
    captured = capsys.readouterr()
    assert "resumed with options changed" not in captured.out + captured.err


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
    with pytest.raises(runs.NonFiniteLoss, match="generator loss became non-finite .nan or inf. at step 2"):
        train.main(tiny_args(shots, run_dir, max_steps=3, resume="auto"))
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == ["step_00000001.pt"]
    assert (run_dir / "checkpoints" / "step_00000001.pt").read_bytes() == good


def same_training_state(a: dict, b: dict) -> bool:
    """Every tensor of G, D and both optimisers equal, bit for bit."""
    def flat(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for key, value in obj.items():
                yield from flat(value, f"{prefix}.{key}")
    keys = ("generator", "discriminator", "opt_g", "opt_d")
    ta, tb = dict(flat({k: a[k] for k in keys})), dict(flat({k: b[k] for k in keys}))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_inside_a_step_saves_that_step_and_resume_is_exact(shots, tmp_path, monkeypatch, signum, code):
    """The signal lands inside step 2, between D's loss and D's update: the step is finished,
    saved as step 2, and resuming gives, bit for bit, the run that was never interrupted."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(tiny_args(shots, straight, max_steps=4, batch_size=1, num_workers=1)) == 0
    real, calls = train.losses.d_loss, []

    def d_loss_then_signal(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)
        return real(*a, **k)

    monkeypatch.setattr(train.losses, "d_loss", d_loss_then_signal)
    assert train.main(tiny_args(shots, split, max_steps=4, batch_size=1, num_workers=1)) == code
    saved = torch.load(split / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert saved["progress"]["step"] == 2 and len(calls) == 2
    monkeypatch.undo()
    assert train.main(tiny_args(shots, split, max_steps=4, batch_size=1, num_workers=1, resume="auto")) == 0
    a = torch.load(straight / "checkpoints" / "step_00000004.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert same_training_state(a, b)


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
    ds, sampler, loader = train.build_loader(args, train.model_config(args), shots, utils.find_shot_dirs(shots),
                                             0, 1, torch.device("cpu"))
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


# ----------------------------------------------------------------------------- rollouts
class ConstantGenerator(torch.nn.Module):
    """Returns 0.7 everywhere and records what it was fed."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.inputs = []

    def forward(self, sources):
        self.inputs.append(sources)
        colour = torch.full_like(sources.prev.colour, 0.7) * self.scale
        return models.Colouring(colour, models.original_input(sources))


def rollout_batch(shots, seed=0, **kw):
    ds = dataset.TripletDataset(utils.find_shot_dirs(shots), image_size=32, extended=True, prev_prob=1.0,
                                rollout_prob=0.5, keyframe_prob=0.5, seed=seed, uint8=True, **kw)
    ds.set_epoch(1)
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=12, shuffle=False)))


def on_cpu(batch):
    return dataset.to_device({k: v for k, v in batch.items() if k != "index"}, "cpu")


def test_rollout_samples_are_fed_the_generators_own_output(shots):
    args = tiny_args(shots, "unused")
    run = SimpleNamespace(cfg=train.model_config(args), args=args, autocast=contextlib.nullcontext())
    G = ConstantGenerator()
    batch = rollout_batch(shots)
    b = on_cpu(batch)
    sources = train.batch_sources(run, SimpleNamespace(generator=G), b)
    rollout = b["rollout"] > 0
    assert 0 < rollout.sum() < len(rollout)  # both kinds in one batch
    # the generator's own output (0.7 everywhere) replaced the real frame
    assert torch.allclose(sources.prev.colour[rollout], torch.full_like(sources.prev.colour[rollout], 0.7))
    assert torch.equal(sources.prev.colour[~rollout], b["prev"]["colour"][~rollout])
    # that output was made from the frame before: its line art is the previous frame's, its
    # previous frame is prev2, and its keyframe comes with the flow from the previous frame
    earlier = G.inputs[0]
    assert torch.equal(earlier.line, b["prev"]["line"]) and torch.equal(earlier.prev.colour, b["prev2"]["colour"])
    assert torch.equal(earlier.keyframe.flow, b["keyframe_flow2"])
    # and the same seed, epoch and indices give the same batch and the same sources again
    again = rollout_batch(shots)
    assert tree_equal(batch, again)
    assert torch.equal(train.batch_sources(run, SimpleNamespace(generator=G), on_cpu(again)).prev.colour,
                       sources.prev.colour)


class StepGenerator(ConstantGenerator):
    """Returns its call's number / 10 everywhere: which output went where can be read back."""

    def forward(self, sources):
        self.inputs.append(sources)
        colour = torch.full_like(sources.prev.colour, len(self.inputs) / 10) * self.scale
        return models.Colouring(colour, models.original_input(sources))


def test_a_longer_rollout_feeds_each_frame_the_output_for_the_one_before(shots):
    """--rollout_frames 3: the generator colours frame 2 back from frame 3 back (true), then
    frame 1 back from that output, unless the sample's rollout starts at frame 2 back (the shot
    begins there): then from frame 2 back's true colour. Frame t gets the last output."""
    args = tiny_args(shots, "unused", rollout_frames=3)
    run = SimpleNamespace(cfg=train.model_config(args), args=args, autocast=contextlib.nullcontext())
    b = on_cpu(rollout_batch(shots, rollout_frames=3, reverse_prob=0.5))
    G = StepGenerator()
    sources = train.batch_sources(run, SimpleNamespace(generator=G), b)
    assert len(G.inputs) == 2
    first, second = G.inputs
    assert torch.equal(first.line, b["prev2"]["line"]) and torch.equal(first.prev.colour, b["prev3"]["colour"])
    assert torch.equal(first.keyframe.flow, b["keyframe_flow3"])
    assert torch.equal(second.line, b["prev"]["line"]) and torch.equal(second.keyframe.flow, b["keyframe_flow2"])
    from_own = b["rollout_start"] > 2
    assert 0 < from_own.sum() < len(from_own)  # both kinds in one batch
    assert torch.allclose(second.prev.colour[from_own], torch.full_like(second.prev.colour[from_own], 0.1))
    assert torch.equal(second.prev.colour[~from_own], b["prev2"]["colour"][~from_own])
    rollout = b["rollout"] > 0
    assert torch.allclose(sources.prev.colour[rollout], torch.full_like(sources.prev.colour[rollout], 0.2))
    assert torch.equal(sources.prev.colour[~rollout], b["prev"]["colour"][~rollout])
    # under --rollout_grad the gradient reaches through both outputs: with G(x) = s (x / 2) + 0.3
    # frame t gets s/2 (s/2 x3 + 0.3) + 0.3, whose derivative at s = 1 is x3 / 2 + 0.15
    args.rollout_grad = True
    G = HalvingGenerator()
    prev = train.batch_sources(run, SimpleNamespace(generator=G), b).prev.colour
    chosen = rollout & from_own
    prev[chosen].sum().backward()
    expected = (b["prev3"]["colour"][chosen] / 2 + 0.15).sum()
    assert torch.allclose(G.scale.grad, expected, rtol=1e-4)


class HalvingGenerator(ConstantGenerator):
    def forward(self, sources):
        return models.Colouring(sources.prev.colour / 2 * self.scale + 0.3, models.original_input(sources))


def test_training_with_a_longer_rollout_runs(shots, tmp_path):
    assert train.main(tiny_args(shots, tmp_path / "run", max_steps=2, rollout_prob=1.0, rollout_frames=3,
                                val_fraction=0)) == 0
    with pytest.raises(UserError, match="--rollout_frames"):
        train.check_args(train.build_parser().parse_args(["--data", str(shots), "--rollout_frames", "1"]))


def test_drifted_previous_frames_are_those_the_batch_marks_own_outputs_too(shots):
    """--prev_drift_prob: the samples whose 'prev_drift' is on get ``apply_drift`` of what they
    were given (the real frame, or the generator's own output for a rollout); the others, and
    absent frames, stay as they were."""
    args = tiny_args(shots, "unused", prev_drift_prob=0.5)
    run = SimpleNamespace(cfg=train.model_config(args), args=args, autocast=contextlib.nullcontext())
    b = on_cpu(rollout_batch(shots))
    plain = train.batch_sources(run, SimpleNamespace(generator=ConstantGenerator()), b).prev.colour
    b["prev_drift"] = torch.from_numpy(np.stack([dataset.drift_params(np.random.default_rng(i), 1.0)
                                                 for i in range(len(plain))]))
    b["prev_drift"][::2, 0] = 0                                  # every other sample: off
    drifted = train.batch_sources(run, SimpleNamespace(generator=ConstantGenerator()), b).prev.colour
    on = (b["prev_drift"][:, 0] > 0) & (b["prev"]["present"] > 0) & (b["prev_drift"][:, 1] > 0)
    assert 0 < int(on.sum()) and bool((b["rollout"][on] > 0).any())
    assert torch.equal(drifted[~on], plain[~on])
    assert torch.equal(drifted[on], dataset.apply_drift(plain[on], b["prev_drift"][on], b["prev"]["present"][on]))
    assert not torch.equal(drifted[on], plain[on])


def test_rollout_grad_backpropagates_through_the_own_output(shots):
    args = tiny_args(shots, "unused", rollout_grad=True)
    run = SimpleNamespace(cfg=train.model_config(args), args=args, autocast=contextlib.nullcontext())
    b = on_cpu(rollout_batch(shots))
    G = ConstantGenerator()
    train.batch_sources(run, SimpleNamespace(generator=G), b).prev.colour.sum().backward()
    assert G.scale.grad is not None and G.scale.grad != 0
    args.rollout_grad = False
    G = ConstantGenerator()
    assert not train.batch_sources(run, SimpleNamespace(generator=G), b).prev.colour.requires_grad


def test_training_with_rollout_grad_runs(shots, tmp_path):
    """D's backward must not free the rollout's graph that G's backward still needs."""
    assert train.main(tiny_args(shots, tmp_path / "run", max_steps=3, rollout_prob=1.0, rollout_grad=True,
                                val_fraction=0)) == 0


def test_training_checkpoint_of_the_previous_format_is_refused_for_resume(shots, tmp_path):
    run_dir = tmp_path / "run"
    train.main(tiny_args(shots, run_dir, max_steps=1))
    ckpt = torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=True)
    ckpt["format"] = "tcvc-train-1"
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(UserError, match="earlier version of train.py"):
        train.main(tiny_args(shots, tmp_path / "run2", max_steps=2, resume=str(tmp_path / "old.pt")))


def test_no_host_reads_of_device_values_between_log_steps(shots, tmp_path, monkeypatch):
    """Reading a tensor's value (.item(), .tolist(), bool(), float()) from our code waits for a
    GPU to finish; the step must leave that to the log steps. Counted here on the CPU, by the
    file that asks: 6 steps with --log_every 3 may read values at steps 3 and 6 only."""
    root = Path(train.__file__).resolve().parent
    ours = {str(root / name) for name in ("train.py", "runs.py", "losses.py", "models.py", "correspond.py",
                                          "colorize.py", "dataset.py")}
    reads, step = [], {"now": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller in ours:
                reads.append((step["now"], _name, caller.rsplit("/", 1)[-1], sys._getframe(1).f_lineno))
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    real_step = train.gan_step

    def counted(batch, run, nets, health, update_d):
        step["now"] += 1
        return real_step(batch, run, nets, health, update_d)
    monkeypatch.setattr(train, "gan_step", counted)
    assert train.main(tiny_args(shots, tmp_path / "run", max_steps=6, log_every=3, val_fraction=0,
                                save_every=100)) == 0
    inside = [r for r in reads if r[0] not in (3, 6) and r[0] > 0 and "evaluate" not in r[2]]
    assert not inside, inside
    assert {r[0] for r in reads if r[0] > 0} <= {3, 6}


def test_old_flag_names_still_work_with_a_note(capsys):
    old = train.build_parser().parse_args(["--propagate", "off", "--reference", "off", "--warp", "none",
                                           "--frame_cache", "off", "--ref_prob", "0.3", "--ref_max_distance", "7"])
    new = train.build_parser().parse_args(["--no_copy_path", "--no_keyframe_input", "--correspondence", "none",
                                           "--no_frame_cache", "--keyframe_prob", "0.3", "--keyframe_max_distance", "7"])
    assert vars(old) == vars(new)
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 6 and all(line.startswith("note: --") and " is now --" in line for line in notes)
    on = train.build_parser().parse_args(["--propagate", "on", "--reference", "on"])
    assert not on.no_copy_path and not on.no_keyframe_input
    assert train.model_config(on) == train.model_config(train.build_parser().parse_args([]))


def test_match_correspondence_warms_up_its_matcher_then_trains_with_the_gan(shots, tmp_path):
    """--correspondence match: the first --match_warmup steps train the matcher alone (only its
    weights move), the rest are GAN steps that log the matcher's loss too; a resume across the
    boundary is exact."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    over = dict(correspondence="match", match_warmup=2, batch_size=1, val_fraction=0)
    assert train.main(tiny_args(shots, straight, max_steps=4, **over)) == 0
    log = read_log(straight)
    assert [sorted(r) for r in log if r["step"] <= 2] == [["epoch", "img_per_s", "match", "step", "time", "vgg"]] * 2
    assert [r["step"] for r in log if "loss_d" in r] == [3, 4]
    assert all("match" in r and math.isfinite(r["match"]) for r in log)
    assert train.main(tiny_args(shots, split, max_steps=1, **over)) == 0
    assert train.main(tiny_args(shots, split, max_steps=2, resume="auto", **over)) == 0
    first, second = (torch.load(split / "checkpoints" / f"step_0000000{n}.pt", weights_only=True)["generator"]
                     for n in (1, 2))
    moved = {k for k in first if not torch.equal(first[k], second[k])}
    assert moved and all(k.startswith("correspond.") for k in moved)
    assert train.main(tiny_args(shots, split, max_steps=4, resume="auto", **over)) == 0
    a = torch.load(straight / "checkpoints" / "step_00000004.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "step_00000004.pt", weights_only=True)
    for key in a["generator"]:
        assert torch.equal(a["generator"][key], b["generator"][key]), key
    assert len(a["opt_g"]["param_groups"]) == 2 and a["opt_g"]["param_groups"][1]["lr"] == 3e-3


class Recorded(torch.nn.Module):
    """A stand-in for torch.compile's wrapper: the same network (``_orig_mod``, as compile
    names it), counting the forwards that go through it."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod, self.calls = module, 0

    def forward(self, *a, **k):
        self.calls += 1
        return self._orig_mod(*a, **k)


def test_compile_reaches_the_rollout_and_ds_call_in_the_generator_step(shots, tmp_path, monkeypatch):
    """Under --compile every forward of a step goes through the compiled networks: G's own and
    its rollout forward, D's in its step and in G's step (not only G's main forward)."""
    wrapped = []

    def fake_compile(module, *a, **k):
        wrapped.append(Recorded(module))
        return wrapped[-1]

    monkeypatch.setattr(train.torch, "compile", fake_compile)
    args = tiny_args(shots, tmp_path / "run", max_steps=2, compile=True, rollout_prob=1.0, val_fraction=0)
    code, run, nets = train.run_training(args)
    assert code == 0
    g, d = wrapped
    assert runs.unwrap(nets.generator) is g._orig_mod and runs.unwrap(nets.discriminator) is d._orig_mod
    assert g.calls == 2 * 2  # per step: the rollout's forward and the main one
    assert d.calls == 2 * 2  # per step: D's own step and G's step


def test_ema_rate_follows_the_weights_early_and_reaches_the_decay():
    assert runs.ema_rate(0.999, 0) == pytest.approx(0.1)
    assert runs.ema_rate(0.999, 90) == pytest.approx(91 / 100)
    assert runs.ema_rate(0.9, 10_000) == 0.9


def test_update_ema_is_the_weighted_mean_of_the_weights():
    model, average = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
        average.weight.copy_(torch.tensor([[5.0, -1.0]]))
    runs.update_ema(average, model, 0.75)  # 0.75 x average + 0.25 x model
    assert torch.allclose(average.weight, torch.tensor([[4.0, 0.0]]))
    assert model.weight.tolist() == [[1.0, 3.0]]  # the model itself is untouched


def test_ema_run_saves_the_average_and_test_py_loads_it(shots, tmp_path):
    """With --ema_decay the checkpoint holds the average beside the weights, the average is what
    generator.pt exports and load_generator reads, and it equals the rule applied by hand to the
    weights of step 2 (decay 2/11 at the second update: the early ramp of ``ema_rate``)."""
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=2, batch_size=1, save_every=1, keep_last=5,
                                ema_decay=0.999)) == 0
    step1, step2 = (torch.load(run_dir / "checkpoints" / f"step_0000000{n}.pt", weights_only=True) for n in (1, 2))
    expected = {}
    for key, w1 in step1["generator"].items():
        w2 = step2["generator"][key]
        if not w1.is_floating_point():
            continue
        after1 = step1["generator_ema"][key]
        expected[key] = (2 / 11) * after1 + (9 / 11) * w2
    moved = 0
    for key, value in expected.items():
        assert torch.allclose(step2["generator_ema"][key], value, atol=1e-6), key
        moved += not torch.equal(step2["generator_ema"][key], step2["generator"][key])
    assert moved  # the average is not the weights
    export = torch.load(run_dir / "generator.pt", weights_only=True)["generator"]
    assert all(torch.equal(export[k], step2["generator_ema"][k]) for k in export)
    G, _, _ = models.load_generator(run_dir / "checkpoints" / "step_00000002.pt")
    assert all(torch.equal(v, step2["generator_ema"][k]) for k, v in G.state_dict().items())


def test_ema_resume_is_exact_and_a_changed_setting_is_refused(shots, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(tiny_args(shots, straight, max_steps=4, batch_size=1, ema_decay=0.99)) == 0
    assert train.main(tiny_args(shots, split, max_steps=2, batch_size=1, ema_decay=0.99)) == 0
    with pytest.raises(UserError, match="trained with --ema_decay above 0"):
        train.main(tiny_args(shots, split, max_steps=4, batch_size=1, resume="auto"))
    assert train.main(tiny_args(shots, split, max_steps=4, batch_size=1, ema_decay=0.99, resume="auto")) == 0
    a, b = (torch.load(d / "checkpoints" / "step_00000004.pt", weights_only=True) for d in (straight, split))
    assert tree_equal(a["generator_ema"], b["generator_ema"])
    plain = tmp_path / "plain"
    assert train.main(tiny_args(shots, plain, max_steps=1, batch_size=1)) == 0
    assert torch.load(plain / "checkpoints" / "step_00000001.pt", weights_only=True)["generator_ema"] is None
    with pytest.raises(UserError, match="trained with --ema_decay 0"):
        train.main(tiny_args(shots, plain, max_steps=2, batch_size=1, ema_decay=0.99, resume="auto"))


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_impossible_ema_decay_is_refused(shots, tmp_path, value):
    with pytest.raises(UserError, match="--ema_decay must be in"):
        train.main(tiny_args(shots, tmp_path / "run", max_steps=1, ema_decay=value))
    assert not (tmp_path / "run").exists()


def test_own_l1_weight_trains_logs_and_is_refused_without_a_copy_path(shots, tmp_path):
    """The generated colour is scored apart from the blend: l1_own is logged, finite and not the
    blend's l1 (a fresh copy path puts 1-2% of the output on it)."""
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=1, own_l1_weight=10)) == 0
    logged = [r for r in read_log(run_dir) if "l1_own" in r]
    assert len(logged) == 1 and math.isfinite(logged[0]["l1_own"]) and logged[0]["l1_own"] > 0
    assert logged[0]["l1_own"] != pytest.approx(logged[0]["l1"], rel=1e-3)
    with pytest.raises(UserError, match="--own_l1_weight is for a generator with a copy path"):
        train.main(tiny_args(shots, tmp_path / "plain", max_steps=1, own_l1_weight=10, no_copy_path=True))
    assert not (tmp_path / "plain").exists()
    with pytest.raises(UserError, match="--own_l1_weight must be 0 or more"):
        train.main(tiny_args(shots, tmp_path / "neg", max_steps=1, own_l1_weight=-1))


def test_line_l1_weight_trains_logs_and_is_refused_without_line_art(shots, tmp_path):
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=1, line_l1_weight=5)) == 0
    assert [math.isfinite(r["l1_lines"]) for r in read_log(run_dir) if "l1_lines" in r] == [True]
    with pytest.raises(UserError, match="--line_l1_weight needs line art"):
        train.main(tiny_args(shots, tmp_path / "grey", max_steps=1, line_l1_weight=5, line_art="grey"))
    grey = tmp_path / "grey_plain"  # greyscale frames as line art have no line pixels: 0 logged
    assert train.main(tiny_args(shots, grey, max_steps=1, line_art="grey")) == 0
    assert [r["l1_lines"] for r in read_log(grey) if "l1_lines" in r] == [0.0]
    with pytest.raises(UserError, match="--line_l1_weight must be 0 or more"):
        train.main(tiny_args(shots, tmp_path / "neg", max_steps=1, line_l1_weight=-1))


def test_l2_weight_trains_logs_and_a_negative_weight_is_refused(shots, tmp_path):
    """The squared error is logged at any weight; it is below the L1 (every error is under 1) and
    above the L1's square (Jensen: the mean of squares is at least the square of the mean)."""
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=1, l2_weight=50)) == 0
    logged = [r for r in read_log(run_dir) if "l2" in r]
    assert len(logged) == 1 and logged[0]["l1"] ** 2 <= logged[0]["l2"] < logged[0]["l1"]
    with pytest.raises(UserError, match="--l2_weight must be 0 or more"):
        train.main(tiny_args(shots, tmp_path / "neg", max_steps=1, l2_weight=-1))
    assert not (tmp_path / "neg").exists()


def test_select_correspondence_warms_up_on_the_aligned_colour_then_trains_with_the_gan(shots, tmp_path):
    """--correspondence select: the warm-up steps log the aligned colour's squared error beside the
    matcher's cross-entropy and move only the correspondence's weights (the selector's and the
    matcher's); the GAN steps after them train the rest."""
    run_dir = tmp_path / "run"
    over = dict(correspondence="select", match_warmup=2, batch_size=1, val_fraction=0, save_every=1)
    assert train.main(tiny_args(shots, run_dir, max_steps=3, **over)) == 0
    log = read_log(run_dir)
    warm = [r for r in log if r["step"] <= 2]
    assert len(warm) == 2 and all(math.isfinite(r["aligned_l2"]) and r["aligned_l2"] > 0 for r in warm)
    assert [r["step"] for r in log if "loss_d" in r] == [3]
    fresh = models.build_generator(models.ModelConfig(ngf=8, correspondence="select"))
    ckpt = torch.load(run_dir / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert ckpt["model_config"]["correspondence"] == "select"
    # the selector's last layer starts at zero: after the warm-up it has moved, the generator's head has not
    assert ckpt["generator"]["correspond.net.8.weight"].abs().sum() > 0
    assert torch.equal(ckpt["generator"]["head.bias"], fresh.state_dict()["head.bias"])
    # the GAN step after it trains the generator and leaves the correspondence as its warm-up left it,
    # unless --joint_correspondence
    after = torch.load(run_dir / "checkpoints" / "step_00000003.pt", weights_only=True)["generator"]
    assert not torch.equal(after["head.weight"], ckpt["generator"]["head.weight"])
    assert all(torch.equal(after[k], v) for k, v in ckpt["generator"].items() if k.startswith("correspond."))
    joint = tmp_path / "joint"
    assert train.main(tiny_args(shots, joint, max_steps=3, joint_correspondence=True, **over)) == 0
    warm, gan = (torch.load(joint / "checkpoints" / f"step_0000000{n}.pt", weights_only=True)["generator"]
                 for n in (2, 3))
    assert torch.equal(warm["correspond.net.8.weight"], ckpt["generator"]["correspond.net.8.weight"])
    assert any(not torch.equal(gan[k], warm[k]) for k in warm if k.startswith("correspond."))


def test_a_fixed_correspondence_takes_no_gradient_and_changes_nothing_else(shots, tmp_path):
    """After the warm-up a learned correspondence is fixed: the GAN step computes no gradient for
    it (neither the backward's work nor, under DDP, an all-reduce), and every other weight moves
    exactly as in the same step with its gradient computed but its learning rate zero; under
    --joint_correspondence it learns."""
    args = tiny_args(shots, tmp_path / "run", correspondence="select", batch_size=2, val_fraction=0, rollout_prob=1.0)
    train.check_args(args)
    run, nets = train.prepare(args)
    batch = next(iter(run.loader))
    corr = train.correspondence_parameters(nets.generator)
    assert corr and all(p.requires_grad for p in corr)
    with_grad = copy.deepcopy(nets)  # networks and optimisers together, so that each still holds its own
    start = copy.deepcopy(nets.generator.state_dict())

    train.gan_step(batch, run, nets, runs.Health(run.device), update_d=True)
    assert all(p.grad is None and not p.requires_grad for p in corr)
    after = nets.generator.state_dict()
    names = {n for n, _ in nets.generator.named_parameters() if n.startswith("correspond.")}
    assert names and all(torch.equal(after[n], start[n]) for n in names)
    assert not torch.equal(after["head.weight"], start["head.weight"])

    mine = {id(p) for p in train.correspondence_parameters(with_grad.generator)}
    for group in with_grad.opt_g.param_groups:
        if any(id(p) in mine for p in group["params"]):
            assert all(id(p) in mine for p in group["params"])
            group["lr"] = 0.0
    run.args.joint_correspondence = True
    train.gan_step(batch, run, with_grad, runs.Health(run.device), update_d=True)
    grads = [p.grad for p in train.correspondence_parameters(with_grad.generator)]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    joint = with_grad.generator.state_dict()
    for name, value in after.items():  # the same step for everything else, bit for bit
        assert torch.equal(value, joint[name]), name
    for name, value in nets.discriminator.state_dict().items():
        assert torch.equal(value, with_grad.discriminator.state_dict()[name]), name


def test_prev_chain_prob_trains_and_is_refused_without_a_flow(shots, tmp_path):
    assert train.main(tiny_args(shots, tmp_path / "run", max_steps=1, prev_chain_prob=1.0)) == 0
    with pytest.raises(UserError, match="--prev_chain_prob carries frames along the line-art flow"):
        train.main(tiny_args(shots, tmp_path / "none", max_steps=1, prev_chain_prob=0.5, correspondence="none"))
    assert not (tmp_path / "none").exists()
    with pytest.raises(UserError, match="--prev_chain_prob must be between 0 and 1"):
        train.main(tiny_args(shots, tmp_path / "big", max_steps=1, prev_chain_prob=1.5))


def test_the_warm_up_defaults_to_what_each_learned_correspondence_needs():
    def steps(correspondence, given=None):
        return train.warmup_steps(SimpleNamespace(match_warmup=given), models.ModelConfig(correspondence=correspondence))
    assert (steps("match"), steps("select"), steps("flow"), steps("none")) == (200, 2000, 0, 0)
    assert (steps("match", 7), steps("select", 0), steps("flow", 50)) == (7, 0, 0)  # nothing to warm up without weights


def test_the_select_choice_learning_rate_falls_to_zero_over_the_warm_up(shots, tmp_path):
    """--lr_select_schedule linear: --lr_select at the first of W warm-up steps, falling in equal
    steps to lr / W at the last; after the warm-up the base rate again (which only
    --joint_correspondence uses); constant keeps it. select_group finds the group of the
    selector's weights alone, by its parameters, in a fresh optimiser and in one loaded from a
    checkpoint (which replaces the groups)."""
    args = tiny_args(shots, tmp_path / "run", correspondence="select", lr_select=1e-3)
    assert [train.select_lr(args, s, 4) for s in range(6)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 1e-3, 1e-3])
    args.lr_select_schedule = "constant"
    assert [train.select_lr(args, s, 4) for s in range(3)] == [1e-3] * 3
    cfg = models.ModelConfig(ngf=8, correspondence="select")
    nets = train.build_nets(args, cfg, torch.device("cpu"))
    selector = {id(p) for p in nets.generator.correspond.net.parameters()}
    group = train.select_group(nets.opt_g, nets.generator)
    assert {id(p) for p in group["params"]} == selector
    assert sum(g is group for g in nets.opt_g.param_groups) == 1
    nets.opt_g.load_state_dict(nets.opt_g.state_dict())  # as a resumed run's optimiser: new groups
    again = train.select_group(nets.opt_g, nets.generator)
    assert again is not group and {id(p) for p in again["params"]} == selector
    assert any(g is again for g in nets.opt_g.param_groups)
    flow = train.build_nets(args, models.ModelConfig(ngf=8), torch.device("cpu"))
    assert train.select_group(flow.opt_g, flow.generator) is None  # no selector


def test_keyframe_resample_trains_the_warm_up_and_the_generator_with_it_and_is_recorded(shots, tmp_path, monkeypatch):
    """--keyframe_resample: in the selector's warm-up and in the generator's steps alike, the
    keyframe is warped with it and the previous frame bilinearly; the model records it (test.py then
    uses it), and a resume that would change it is refused."""
    calls = []
    real = correspond.warp
    monkeypatch.setattr(correspond, "warp", lambda image, flow, resample="bilinear":
                        calls.append(resample) or real(image, flow, resample))
    for resample in ("bilinear", "bicubic"):
        calls.clear()
        run_dir = tmp_path / resample
        assert train.main(tiny_args(shots, run_dir, max_steps=3, correspondence="select", match_warmup=1,
                                    batch_size=1, val_fraction=0, rollout_prob=0, keyframe_resample=resample)) == 0
        # every generator call and warm-up step warps the previous frame, then the keyframe
        assert calls and calls[0::2] == ["bilinear"] * (len(calls) // 2) and calls[1::2] == [resample] * (len(calls) // 2)
        ckpt = torch.load(run_dir / "checkpoints" / "step_00000003.pt", weights_only=True)
        assert ckpt["model_config"]["keyframe_resample"] == resample
        assert models.load_generator(run_dir / "generator.pt")[1].keyframe_resample == resample
    with pytest.raises(UserError, match=r"trained with other model settings: keyframe_resample 'bilinear' "
                                        r"\(asked: 'bicubic'\); give train.py the run's own"):
        train.main(tiny_args(shots, tmp_path / "other", max_steps=4, correspondence="select", match_warmup=1,
                             batch_size=1, val_fraction=0, resume=str(tmp_path / "bilinear" / "checkpoints" /
                                                                     "step_00000003.pt")))


def test_still_window_trains_on_the_windowed_flow_is_recorded_and_kept_on_resume(shots, tmp_path, monkeypatch):
    """--still_window W: every flow of training and validation is computed with W, the model
    records it (test.py then uses it), a resume that would change it is refused, and a model
    without a flow refuses it before anything is written."""
    windows = []
    real = correspond.still_mask
    monkeypatch.setattr(correspond, "still_mask", lambda a, b, w: windows.append(w) or real(a, b, w))
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=1, still_window=5)) == 0
    assert windows and set(windows) == {5 * models.FLOW_SCALE, 5}  # on flow art at the flow's scale, and held lines
    ckpt = torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=True)
    assert ckpt["model_config"]["still_window"] == 5
    assert models.load_generator(run_dir / "generator.pt")[1].still_window == 5
    with pytest.raises(UserError, match="trained with"):
        train.main(tiny_args(shots, tmp_path / "other", max_steps=2,
                             resume=str(run_dir / "checkpoints" / "step_00000001.pt")))
    with pytest.raises(UserError, match="'none' has no flow"):
        train.main(tiny_args(shots, tmp_path / "none", max_steps=1, still_window=3, correspondence="none"))
    assert not (tmp_path / "none").exists()


def test_flow_scale_trains_on_the_enlarged_flow_art_is_recorded_and_kept_on_resume(shots, tmp_path, monkeypatch):
    """--flow_scale S: every flow of training and validation is computed on flow art S times the
    image size, the model records S (test.py then uses it), a resume that would change it is
    refused, and a model without a flow refuses S > 1 before anything is written."""
    sizes = set()
    real = correspond.line_flow

    def spy(line_t, line_s, mode="canny", still_window=0, scale=1):
        if scale > 1:
            sizes.add((line_t.shape, scale))
        return real(line_t, line_s, mode, still_window, scale)

    monkeypatch.setattr(correspond, "line_flow", spy)
    run_dir = tmp_path / "run"
    assert train.main(tiny_args(shots, run_dir, max_steps=1, no_flow_cache=True)) == 0  # the default: 2
    assert sizes == {((64, 64, 2), 2)}  # the 32 x 32 crops' flow art (and their line art inside), and the validation frames'
    assert models.load_generator(run_dir / "generator.pt")[1].flow_scale == 2
    sizes.clear()
    assert train.main(tiny_args(shots, tmp_path / "plain", max_steps=1, flow_scale=1, no_flow_cache=True)) == 0
    assert not sizes and models.load_generator(tmp_path / "plain" / "generator.pt")[1].flow_scale == 1
    with pytest.raises(UserError, match="trained with"):
        train.main(tiny_args(shots, tmp_path / "other", max_steps=2, flow_scale=1,
                             resume=str(run_dir / "checkpoints" / "step_00000001.pt")))
    with pytest.raises(UserError, match="'none' has no flow"):
        train.main(tiny_args(shots, tmp_path / "none", max_steps=1, flow_scale=2, correspondence="none"))
    assert not (tmp_path / "none").exists()
