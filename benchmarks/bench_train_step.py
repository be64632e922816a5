"""Our training step against a reference step that computes the same losses the way the
original TCVC code did (four VGG19 passes a step: two for the content loss, two for the style
loss; separate D calls for real and fake; fp32), with the same networks and the same batch,
in one process. Repetitions alternate between the two; the median ratio is reported.

    python benchmarks/bench_train_step.py --generator resnet        # the original's networks
    python benchmarks/bench_train_step.py --generator unet          # our default generator
    python benchmarks/bench_train_step.py --device cuda --amp bf16  # on a GPU

VGG19 weights are random here (timing does not depend on their values; nothing is learnt).
Last line: ``train_step_speedup=X``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import losses  # noqa: E402
import models  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", choices=["unet", "resnet"], default="resnet")
    p.add_argument("--image_size", type=int, default=128, help="128 on the CPU keeps a run to minutes")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["off", "bf16"], default="off", help="our step only; the reference is fp32")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="the device's dense peak for the chosen precision, to report the share achieved")
    return p


def make_state(args, device, channels_last: bool):
    torch.manual_seed(0)
    cfg = models.ModelConfig(generator=args.generator)
    G, D = models.build_generator(cfg).to(device), models.build_discriminator(cfg).to(device)
    vgg = losses.load_vgg19("random").to(device)
    if channels_last:
        G, D, vgg = (m.to(memory_format=torch.channels_last) for m in (G, D, vgg))
    fused = device.type == "cuda"
    return {"G": G, "D": D, "device": device, "vgg": vgg, "step": 0, "scaler": None,
            "opt_g": torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.999), fused=fused),
            "opt_d": torch.optim.Adam(D.parameters(), 1e-5, betas=(0.0, 0.999), fused=fused),
            "g_loss": losses.GeneratorLoss(vgg), "autocast": train.autocast_context(device, args.amp)}


def reference_step(batch, s) -> None:
    """The original's order of work: G once, D on real and on fake in two calls, then VGG four
    times for the content and style losses, everything in fp32."""
    G, D, vgg = s["G"], s["D"], s["vgg"]
    cond = torch.cat([batch["line"], batch["prev"]], 1)
    target = batch["target"]
    fake = G(cond)
    train.requires_grad(D, True)
    real_logits = D(torch.cat([cond, target], 1))
    fake_logits = D(torch.cat([cond, fake.detach()], 1))
    loss_d = losses.d_loss(real_logits, fake_logits, "nsgan")
    s["opt_d"].zero_grad()
    loss_d.backward()
    s["opt_d"].step()
    train.requires_grad(D, False)
    adv = losses.g_adv_loss(D(torch.cat([cond, fake], 1)), "nsgan")
    total = (adv + 10 * F.l1_loss(fake, target) + losses.original_perceptual_loss(vgg, fake, target)
             + 1000 * losses.original_style_loss(vgg, fake, target))
    s["opt_g"].zero_grad()
    total.backward()
    s["opt_g"].step()


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_flops(batch, s, args) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train.gan_step(batch, s, args, update_d=True)
    return counter.get_total_flops()


def main(args) -> int:
    device = utils.resolve_device(args.device)
    S, B = args.image_size, args.batch_size
    gen = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(B, c, S, S, generator=gen).to(device)
             for k, c in (("line", 1), ("prev", 3), ("target", 3))}
    args.gan_loss = "nsgan"
    ours = make_state(args, device, channels_last=device.type == "cuda")
    ref = make_state(args, device, channels_last=False)
    run_ours = lambda: train.gan_step(batch, ours, args, update_d=True)  # noqa: E731
    run_ref = lambda: reference_step(batch, ref)  # noqa: E731
    run_ours(), run_ref()  # warm-up (allocator, cudnn autotune)
    t_ours, t_ref = [], []
    for _ in range(args.reps):
        t_ours.append(timed(run_ours, device))
        t_ref.append(timed(run_ref, device))
    ratios = [r / o for r, o in zip(t_ref, t_ours)]
    speedup = statistics.median(ratios)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch threads {torch.get_num_threads()}; generator {args.generator}; batch {B} at {S}x{S}; "
          f"ours amp={args.amp}")
    print(f"reference step (original's way): median {statistics.median(t_ref) * 1e3:.0f} ms")
    print(f"our step:                        median {statistics.median(t_ours) * 1e3:.0f} ms")
    print(f"per-rep speed-ups: {', '.join(f'{r:.2f}' for r in ratios)}")
    tflops = step_flops(batch, ours, args) / statistics.median(t_ours) / 1e12
    print(f"our step achieves {tflops:.3f} TFLOP/s"
          + (f" = {100 * tflops / args.peak_tflops:.1f}% of the {args.peak_tflops} TFLOP/s peak"
             if args.peak_tflops else ""))
    print(f"train_step_speedup={speedup:.2f}")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
