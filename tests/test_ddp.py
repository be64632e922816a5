"""DistributedDataParallel on the CPU: two gloo processes against one process, same samples."""
import os
import socket

import torch
import torch.multiprocessing as mp

import runs
import train
from test_train import write_shots


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, argv, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    args = train.build_parser().parse_args(argv)
    code, run, nets = train.run_training(args)
    torch.save({"code": code, "G": train.unwrap(nets.generator).state_dict(),
                "D": train.unwrap(nets.discriminator).state_dict(), "grads": last_grads(nets)},
               os.path.join(out_dir, f"rank{rank}.pt"))


def last_grads(nets) -> dict:
    """Gradients of the last step (DDP-averaged under DDP), still held in ``.grad``."""
    return {f"{tag}.{name}": p.grad.clone() for tag, net in (("G", nets.generator), ("D", nets.discriminator))
            for name, p in train.unwrap(net).named_parameters() if p.grad is not None}


def argv_for(data, run_dir, steps, batch, resume=None):
    """64 pixels, not 32: at 32 the U-Net's bottleneck is 2x2, and InstanceNorm over 4 values made
    one sample's gradient 22% apart between a batch of one and the same sample twice (float
    rounding amplified, no DDP involved), which hid what this file checks."""
    args = ["--data", str(data), "--run_dir", str(run_dir), "--image_size", "64", "--batch_size", str(batch),
            "--ngf", "8", "--ndf", "8", "--num_workers", "0", "--vgg_weights", "random", "--device", "cpu",
            "--val_frames", "2", "--val_fraction", "0", "--max_steps", str(steps), "--save_every", "1"]
    return args + (["--resume", resume] if resume else [])


def run_single(argv):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(key, None)
    code, run, nets = train.run_training(train.build_parser().parse_args(argv))
    assert code == 0
    return train.unwrap(nets.generator).state_dict(), last_grads(nets)


def relative_gap(a, b) -> float:
    """|a - b| / |b| over a whole tensor (entries that cancel out do not blow it up)."""
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def weights_apart(a, b, grads_a, grads_b, lr=1e-4, eps=1e-8, tol=1e-6):
    """Generator weights apart by more than ``tol`` after one Adam step from the same start: their
    share, the largest difference, and how many of them the two gradients do not explain. Adam's
    first update is lr * g / (|g| + eps): about lr whatever |g| is, so where a gradient entry is
    within float rounding of zero the rounding picks its sign and, near eps, its size; where the
    copy path starts saturated the whole network's gradients are that small. An entry is explained
    when the two gradients predict at least half of the gap they left."""
    apart, total, largest, unexplained = 0, 0, 0.0, 0
    step = lambda g: lr * g / (g.abs() + eps)  # noqa: E731
    for key in a:
        diff = (a[key].float() - b[key].float()).abs()
        moved = diff > tol
        apart, total = apart + int(moved.sum()), total + moved.numel()
        largest = max(largest, diff.max().item())
        ga, gb = grads_a.get(f"G.{key}"), grads_b.get(f"G.{key}")
        if ga is None:  # not a trained weight: must not move at all
            unexplained += int(moved.sum())
            continue
        predicted = (step(ga.float()) - step(gb.float())).abs()
        unexplained += int((moved & (predicted < diff / 2)).sum())
    return apart / total, largest, unexplained


def test_two_gloo_ranks_match_each_other_and_one_process(tmp_path, frame_factory):
    data = write_shots(tmp_path / "frames", frame_factory, shots=2, frames=6)
    ddp_run = tmp_path / "ddp"
    mp.start_processes(_worker, args=(2, free_port(), argv_for(data, ddp_run, 1, 1), str(tmp_path)),
                       nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["code"] == r1["code"] == 0
    for net in ("G", "D"):
        for key in r0[net]:
            assert torch.equal(r0[net][key], r1[net][key]), (net, key)  # ranks never drift apart

    # One process with twice the batch sees exactly the union of the two ranks' batches, so its
    # gradient equals DDP's average up to float rounding, and the weights after the step differ
    # only where those gradients say they may (see weights_apart), never by more than 2 lr.
    g_single, grads_single = run_single(argv_for(data, tmp_path / "single", 1, 2))
    same = max(relative_gap(g, grads_single[k]) for k, g in r0["grads"].items())
    print("largest relative gradient gap, same samples:", same)
    share, largest, unexplained = weights_apart(r0["G"], g_single, r0["grads"], grads_single)
    print("weights apart after the step:", share, "largest gap:", largest, "unexplained:", unexplained)
    assert unexplained == 0 and largest <= 2 * 1e-4 + 1e-6, (share, largest, unexplained)

    # negative control: other inputs (grey frames instead of Canny line art) give other gradients
    _, grads_other = run_single(argv_for(data, tmp_path / "other", 1, 2) + ["--line_art", "grey"])
    other = max(relative_gap(g, grads_other[k]) for k, g in r0["grads"].items())
    print("largest relative gradient gap, other inputs:", other)
    assert same < 1e-2 and other > 0.1

    # resume across a changed world size: the 2-rank checkpoint continues on one process
    g_resumed, _ = run_single(argv_for(data, tmp_path / "resumed", 3, 2,
                                       resume=str(ddp_run / "checkpoints" / "step_00000001.pt")))
    ckpt = torch.load(tmp_path / "resumed" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert ckpt["progress"]["step"] == 3 and ckpt["progress"]["consumed"] == 2 + 2 * 2


def test_two_gloo_ranks_agree_on_a_learned_correspondence_fixed_and_trained_on(tmp_path, frame_factory):
    """--correspondence select under DDP: its weights are outside DDP (a GAN step computes no
    gradient for them once they are fixed, which DDP alone does not allow) and averaged by hand
    where they learn: in the warm-up, and in the GAN steps under --joint_correspondence. Both ranks
    end with the same weights, bit for bit; fixed, the GAN step leaves the correspondence as the
    warm-up left it, trained on it moves."""
    data = write_shots(tmp_path / "frames", frame_factory, shots=2, frames=6)
    for joint in (False, True):
        run_dir, out = tmp_path / f"run_{joint}", tmp_path / f"out_{joint}"
        out.mkdir()
        argv = argv_for(data, run_dir, 2, 1) + ["--correspondence", "select", "--match_warmup", "1"]
        argv += ["--joint_correspondence"] if joint else []
        mp.start_processes(_worker, args=(2, free_port(), argv, str(out)), nprocs=2, start_method="spawn")
        r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        assert r0["code"] == r1["code"] == 0
        for net in ("G", "D"):
            for key in r0[net]:
                assert torch.equal(r0[net][key], r1[net][key]), (joint, net, key)
        warm = torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=True)["generator"]
        fresh = [k for k in warm if k.startswith("correspond.") and not torch.equal(warm[k], r0["G"][k])]
        assert bool(fresh) == joint, (joint, fresh)
        assert not torch.equal(warm["head.weight"], r0["G"]["head.weight"])  # the GAN step trained the rest
        assert any(k.startswith("G.correspond.") for k in r0["grads"]) == joint


def test_resumable_sampler_continues_across_world_sizes():
    """2 ranks consume 2 batches of 2, then one process takes the rest of the epoch: every
    sample of the epoch is seen exactly once."""
    data = list(range(21))
    ranks = [runs.ResumableSampler(data, 2, r, seed=5) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(3)
    indices = lambda sampler: [i for epoch, i in sampler if epoch == 3]  # noqa: E731
    seen = [i for s in ranks for i in indices(s)[:4]]
    single = runs.ResumableSampler(data, 1, 0, seed=5)
    single.set_epoch(3)
    single.consumed = len(seen)
    rest = indices(single)
    assert sorted(seen + rest) == data
    full = runs.ResumableSampler(data, 1, 0, seed=5)
    full.set_epoch(3)
    assert set(indices(full)[:8]) == set(seen) and indices(full)[8:] == rest


def _sigterm_worker(rank, world, port, argv, out_dir):
    """Rank 1 alone receives SIGTERM inside step 2 (as from a scheduler that preempts one node)."""
    import signal

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    real, calls = train.losses.d_loss, []

    def d_loss(*a, **k):
        calls.append(1)
        if rank == 1 and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    train.losses.d_loss = d_loss
    code, run, nets = train.run_training(train.build_parser().parse_args(argv))
    torch.save({"code": code, "steps": len(calls)}, os.path.join(out_dir, f"term{rank}.pt"))


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, frame_factory):
    data = write_shots(tmp_path / "frames", frame_factory, shots=2, frames=6)
    run_dir = tmp_path / "ddp"
    argv = argv_for(data, run_dir, 5, 1)
    argv[argv.index("--save_every") + 1] = "100"
    mp.start_processes(_sigterm_worker, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, start_method="spawn")
    results = [torch.load(tmp_path / f"term{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["code"] for r in results] == [143, 143] and [r["steps"] for r in results] == [2, 2]
    saved = torch.load(run_dir / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert saved["progress"]["step"] == 2 and saved["progress"]["consumed"] == 2 * 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000002.pt"]
