"""The training step: our step against the original's way of computing the same losses, and
its speed, FLOP rate and memory on a GPU.

    python benchmarks/bench_train_step.py --generator resnet        # the original's networks
    python benchmarks/bench_train_step.py --generator unet          # our default generator
    python benchmarks/bench_train_step.py --device cuda --amp bf16 --image_size 256 --batch_size 16 \
        --peak_tflops 989 --no_reference                             # a GPU (H100 dense bf16 peak)

1. Speed-up (unless ``--no_reference``): ``train.gan_step`` against a reference step that
   computes the same losses the way the original TCVC code did (four VGG19 passes a step: two
   for the content loss, two for the style loss; separate D calls for real and fake; fp32),
   same networks, same batch, one process; repetitions alternate, the median ratio is kept.
2. Our step alone: images per second (``--reps`` steps run back to back, one sync), TFLOP/s (FLOPs counted once by
   ``torch.utils.flop_counter``, convolutions and matrix products only) and, with
   ``--peak_tflops``, the share of the card's peak; peak GPU memory.
The batch is the default training sample of the chosen generator (for the default U-Net:
previous frame, flows, keyframe, half the samples rolled out), random values. VGG19 weights are
random (timing does not depend on them). ``--channels_last`` and ``--compile`` as in train.py.
Last line: ``train_step_speedup=X`` (or ``train_step_img_per_s=X`` with ``--no_reference``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dataset  # noqa: E402
import losses  # noqa: E402
import models  # noqa: E402
import runs  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", choices=["unet", "resnet"], default="resnet")
    p.add_argument("--image_size", type=int, default=128, help="128 on the CPU keeps a run to minutes")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, cuDNN autotune)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["off", "bf16"], default="off", help="our step only; the reference is fp32")
    p.add_argument("--channels_last", choices=["auto", "on", "off"], default="auto",
                   help="auto: on for CUDA, as train.py does")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D, as train.py --compile")
    p.add_argument("--no_reference", action="store_true", help="time our step only")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="the device's dense peak for the chosen precision, to report the share achieved")
    return p


def make_batch(cfg, B: int, S: int, device) -> dict:
    """A training batch of random values with every key the generator's sample has (as
    ``dataset.TripletDataset(extended=True)`` lays it out), on ``device``."""
    gen = torch.Generator().manual_seed(0)

    def source():
        return {"colour": torch.rand(B, 3, S, S, generator=gen), "line": torch.rand(B, 1, S, S, generator=gen),
                "present": torch.ones(B), "flow": torch.randn(B, 2, S, S, generator=gen)}
    batch = {"line": torch.rand(B, 1, S, S, generator=gen), "target": torch.rand(B, 3, S, S, generator=gen),
             "prev": source(), "prev2": source(), "keyframe": source(),
             "keyframe_flow2": torch.randn(B, 2, S, S, generator=gen),
             "rollout": (torch.arange(B) % 2).float(), "index": torch.arange(B)}
    return dataset.to_device(batch, device)


def make_step(args, device, fast: bool):
    """(run, nets) for ``train.gan_step``: our layout (channels_last on CUDA, compile) when
    ``fast``, else plain fp32 modules for the reference."""
    torch.manual_seed(0)
    cfg = models.ModelConfig(generator=args.generator)
    G, D = models.build_generator(cfg).to(device), models.build_discriminator(cfg).to(device)
    vgg = losses.load_vgg19("random").to(device)
    channels_last = fast and (args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda"))
    if channels_last:
        G, D, vgg = (m.to(memory_format=torch.channels_last) for m in (G, D, vgg))
    if fast and args.compile:
        G, D = torch.compile(G), torch.compile(D)
    fused = device.type == "cuda"
    nets = runs.Nets(G, D, torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.999), fused=fused),
                      torch.optim.Adam(D.parameters(), 1e-5, betas=(0.0, 0.999), fused=fused))
    run_args = train.build_parser().parse_args([])  # train.py's defaults (nsgan, rollouts of 2 frames, ...)
    run = SimpleNamespace(device=device, cfg=cfg, args=run_args, world=1, g_loss=losses.GeneratorLoss(vgg),
                          autocast=utils.autocast_context(device, args.amp if fast else "off"), vgg=vgg)
    return run, nets


def reference_step(batch, run, nets) -> None:
    """The original's order of work on the same inputs: G once, D on real and on fake in two
    calls, then VGG four times for the content and style losses, everything in fp32."""
    G, D, vgg = nets.generator, nets.discriminator, run.vgg
    out = G(train.batch_sources(run, nets, batch))
    cond, target, fake = out.condition, batch["target"], out.colour
    train.requires_grad(D, True)
    real_logits = D(torch.cat([cond, target], 1))
    fake_logits = D(torch.cat([cond, fake.detach()], 1))
    loss_d = losses.d_loss(real_logits, fake_logits, "nsgan")
    nets.opt_d.zero_grad()
    loss_d.backward()
    nets.opt_d.step()
    train.requires_grad(D, False)
    adv = losses.g_adv_loss(D(torch.cat([cond, fake], 1)), "nsgan")
    total = (adv + 10 * F.l1_loss(fake, target) + losses.original_perceptual_loss(vgg, fake, target)
             + 1000 * losses.original_style_loss(vgg, fake, target))
    nets.opt_g.zero_grad()
    total.backward()
    nets.opt_g.step()


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_flops(batch, run, nets) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train.gan_step(batch, run, nets, runs.Health(run.device), update_d=True)
    return counter.get_total_flops()


def main(args) -> int:
    device = utils.resolve_device(args.device)
    S, B = args.image_size, args.batch_size
    ours = make_step(args, device, fast=True)
    batch = make_batch(ours[0].cfg, B, S, device)
    health = runs.Health(device)
    run_ours = lambda: train.gan_step(batch, *ours, health, update_d=True)  # noqa: E731
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py: cuDNN picks its fastest kernels
    for _ in range(args.warmup):  # warm-up (allocator, cudnn autotune, compilation)
        run_ours()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"generator {args.generator}; batch {B} at {S}x{S}; amp {args.amp}, compile {args.compile}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # All reps back to back between two syncs, as training runs them: a sync after every step
    # would leave the GPU idle while Python queues the next one.
    per_step = timed(lambda: [run_ours() for _ in range(args.reps)], device) / args.reps
    health.check()
    rate = B / per_step
    print(f"our step: mean {per_step * 1e3:.1f} ms over {args.reps} steps run back to back, {rate:.1f} img/s")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB")
    tflops = step_flops(batch, *ours) / per_step / 1e12
    print(f"our step achieves {tflops:.3f} TFLOP/s"
          + (f" = {100 * tflops / args.peak_tflops:.1f}% of the {args.peak_tflops} TFLOP/s peak"
             if args.peak_tflops else ""))
    if args.no_reference:
        print(f"train_step_img_per_s={rate:.1f}")
        return 0
    ref = make_step(args, device, fast=False)
    run_ref = lambda: reference_step(batch, *ref)  # noqa: E731
    run_ref()
    t_pairs = [(timed(run_ref, device), timed(run_ours, device)) for _ in range(args.reps)]
    ratios = [r / o for r, o in t_pairs]
    print(f"reference step (original's way): median {statistics.median(r for r, _ in t_pairs) * 1e3:.1f} ms")
    print(f"per-rep speed-ups: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"train_step_speedup={statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
