"""Train the TCVC colorization GAN: G(line art t, colour t-1) -> colour t, judged by a PatchGAN.

Single process (CPU or one GPU):
    python train.py --data frames/ --run_dir runs/exp1
Several GPUs on one machine, or several machines (the standard engine, torchrun + DDP):
    torchrun --nproc_per_node 4 train.py --data frames/ --run_dir runs/exp1
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 \
        train.py --data frames/ --run_dir runs/exp1
The original README's flags keep working:
    python train.py --root data --dataset dragonball --batchSize 16 --logfile log.txt

Each step (stylegan2-pytorch's explicit GAN step): D on a detached fake, then G with D frozen.
Losses follow the original: non-saturating GAN, L1 x 10, VGG19 content x 1, style x 1000.
Where our defaults differ from the original code, and why:
- ``--adv_weight 1``: the original declared 0.1 but never applied it, so it trained with 1.
- ``--d_every 1``: the original updated D only when ``iteration == 1 or iteration % 12 == 0``,
  on top of a 10x lower learning rate, so D barely learned; ``--d_every 12`` reproduces it.
- VGG input is ImageNet-normalised (the original fed raw [0, 1] images to ImageNet weights).
The run folder holds ``config.json``, ``log.jsonl``, ``checkpoints/`` and ``samples/``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import chains
import dataset as data_lib
import losses
import metrics as metrics_lib
import models
import utils
from utils import UserError

CHECKPOINT_FORMAT = "tcvc-train-2"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder searched recursively; every folder of numbered frames is a shot")
    g.add_argument("--val_data", help="folder of validation shots (default: --val_fraction of --data's shots)")
    g.add_argument("--root", help="original layout: ROOT/DATASET/Train and ROOT/DATASET/Test")
    g.add_argument("--dataset", help="original layout, see --root")
    g.add_argument("--val_fraction", type=float, default=0.1, help="share of whole shots held out when no --val_data")
    g.add_argument("--image_size", type=int, default=256, help="square training crop (the original: 256)")
    g.add_argument("--line_art", choices=["canny", "grey", "given"], default="canny", help="how line art is made")
    g.add_argument("--line_root", help="with --line_art given: folder mirroring --data with real line art")
    g.add_argument("--prev_prob", type=float, default=0.5, help="chance a sample gets its real previous frame (else black)")
    g.add_argument("--ref_prob", type=float, default=0.5,
                   help="chance a sample gets a keyframe: another frame of its shot (generators with --reference on)")
    g.add_argument("--ref_max_distance", type=int, default=1000, help="furthest keyframe from the frame, in frames")
    g.add_argument("--rollout_prob", type=float, default=0.5,
                   help="chance a sample's previous frame is the generator's own output for it (extended generators)")
    g.add_argument("--rollout_grad", action="store_true",
                   help="backpropagate through that output too (a 2-frame unroll) instead of detaching it")
    g.add_argument("--reverse_prob", type=float, default=0.5,
                   help="chance a sample's chain runs backward in time (previous frame = frame t+1)")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader workers per process")
    g.add_argument("--frame_cache", choices=["on", "off"], default="on",
                   help="decode and resize every training frame once into a memory-mapped cache shared by all "
                        "workers and GPUs, reused across runs (off: read the image files every time)")
    g.add_argument("--cache_dir", default=None,
                   help="where the frame cache lives (default: $TCVC_CACHE_DIR, else $XDG_CACHE_HOME/tcvc, else "
                        "~/.cache/tcvc); it can be deleted at any time")
    g = p.add_argument_group("model")
    g.add_argument("--generator", choices=["unet", "resnet"], default="unet", help="resnet = the original's network")
    g.add_argument("--ngf", type=int, default=None, help="generator base channels (default: the network's own)")
    g.add_argument("--ndf", type=int, default=64, help="discriminator base channels")
    g.add_argument("--propagate", choices=["on", "off"], default=None,
                   help="unet: blend generated colour with the warped previous frame and keyframe per pixel (default on)")
    g.add_argument("--reference", choices=["on", "off"], default=None,
                   help="unet: a coloured keyframe input at every frame (default on)")
    g.add_argument("--warp", choices=["flow", "none"], default=None,
                   help="unet: warp previous frame and keyframe onto frame t by line-art optical flow (default flow)")
    g.add_argument("--checkpoint_path_G", "--init_generator", dest="init_generator",
                   help="start G from these weights (ours or the original's {'generator': ...})")
    g.add_argument("--checkpoint_path_D", "--init_discriminator", dest="init_discriminator",
                   help="start D from these weights (ours or the original's {'discriminator': ...})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch_size", "--batchSize", type=int, default=16, help="per process (per GPU)")
    g.add_argument("--epochs", type=int, default=50)
    g.add_argument("--max_steps", type=int, default=None, help="stop after this many steps in all")
    g.add_argument("--max_minutes", type=float, default=None,
                   help="stop (validate, save) after this much training time; all ranks stop together")
    g.add_argument("--lr_g", type=float, default=1e-4)
    g.add_argument("--lr_d", type=float, default=1e-5)
    g.add_argument("--beta1", type=float, default=0.0)
    g.add_argument("--beta2", type=float, default=0.999)
    g.add_argument("--d_every", type=int, default=1, help="update D every N steps (original: 12)")
    g.add_argument("--gan_loss", choices=["nsgan", "lsgan", "hinge"], default="nsgan")
    g.add_argument("--adv_weight", type=float, default=1.0)
    g.add_argument("--l1_weight", type=float, default=10.0)
    g.add_argument("--content_weight", type=float, default=1.0)
    g.add_argument("--style_weight", type=float, default=1000.0)
    g.add_argument("--vgg_weights", default="imagenet",
                   help="imagenet (torchvision cache) | PATH | random (offline smoke runs only)")
    g = p.add_argument_group("run")
    g.add_argument("--run_dir", default="runs/tcvc",
                   help="checkpoints, samples and logs go here: a new folder, or with --resume the run's own")
    g.add_argument("--resume", default=None,
                   help="auto: the newest checkpoint in --run_dir (a new run if there is none), or PATH; training "
                        "continues exactly and writes only into --run_dir, never over another run")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks (weights stay loadable)")
    g.add_argument("--sync_debug", action="store_true",
                   help="CUDA: raise at any host-device sync inside a training step (torch.cuda.set_sync_debug_mode); "
                        "values are read only at log steps")
    g.add_argument("--seed", type=int, default=123, help="the original's seed")
    g.add_argument("--log_every", type=int, default=20, help="steps between log lines")
    g.add_argument("--save_every", type=int, default=1000, help="steps between checkpoints (and each epoch end)")
    g.add_argument("--val_every", type=int, default=0, help="steps between validations (0: each epoch end)")
    g.add_argument("--val_frames", type=int, default=16, help="frames of the validation shot colorized recurrently")
    g.add_argument("--keep_last", type=int, default=3, help="step checkpoints kept (best.pt is kept apart)")
    g.add_argument("--logfile", help="also append plain-text log lines here (the original's flag)")
    return p


# ----------------------------------------------------------------------------- distributed
def setup_distributed(device_name: str):
    """One process per GPU under torchrun (RANK/WORLD_SIZE set), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = utils.resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def unwrap(module):
    """The bare network under DDP and torch.compile wrappers (what checkpoints hold)."""
    module = module.module if isinstance(module, DDP) else module
    return getattr(module, "_orig_mod", module)


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch can restart part-way: it drops the samples of the epoch's
    permutation already consumed (by any world size) and deals the rest out to the ranks.
    Rank r gets positions r, r+W, ... so W ranks of batch B see exactly the samples that one
    process of batch W*B would."""

    def __init__(self, data, num_replicas, rank, seed):
        super().__init__(data, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.consumed = 0

    def _remaining(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()[self.consumed:]
        order += order[: (-len(order)) % self.num_replicas]  # equal share on every rank
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        # (epoch, index): persistent workers hold a copy of the dataset that never sees
        # set_epoch, so the epoch travels with every index
        return iter([(self.epoch, i) for i in self._remaining()])

    def __len__(self):
        return len(self._remaining())


# ----------------------------------------------------------------------------- run state
@dataclass
class Progress:
    """Where training stands; saved and restored as one unit (``to_dict`` / ``from_dict``)."""
    step: int = 0                   # optimisation steps done
    epoch: int = 0                  # current epoch
    consumed: int = 0               # samples of this epoch's permutation already used, all ranks
    best_psnr: float | None = None  # best validation PSNR so far (best.pt)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, path) -> "Progress":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
            raise UserError(f"{path} holds no valid training progress (expected {sorted(names)})")
        return cls(**d)


@dataclass
class Nets:
    """The networks and optimisers, by the names they have in a checkpoint. Saving and
    restoring walk over these fields, so a field added here can never be left out of either."""
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None

    def items(self):
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def state_dicts(self) -> dict:
        return {name: None if obj is None else unwrap(obj).state_dict() for name, obj in self.items()}

    def load_state_dicts(self, ckpt: dict, path) -> None:
        for name, obj in self.items():
            if name not in ckpt:
                raise UserError(f"{path} lacks '{name}': it is not a complete training checkpoint")
            if obj is None or ckpt[name] is None:
                continue
            if isinstance(obj, torch.nn.Module):
                models.load_state_strict(unwrap(obj), ckpt[name], name)
            else:
                obj.load_state_dict(ckpt[name])


@dataclass
class Run:
    """What stays fixed during a run: options, processes, data, model config, loss, precision."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    cfg: models.ModelConfig
    ds: data_lib.TripletDataset
    sampler: "ResumableSampler"
    loader: DataLoader
    val_shot: list | None           # frames of the fixed validation shot
    val_root: Path                  # data root of the validation shots (for given line art)
    g_loss: losses.GeneratorLoss
    autocast: object
    vgg_random: bool
    n_train_shots: int
    n_val_shots: int
    started: bool = False           # the run folder is set up (start_run_dir)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ----------------------------------------------------------------------------- setup
def resolve_data(args):
    train_dir, val_dir = data_lib.resolve_data_dirs(args.data, args.val_data, args.root, args.dataset)
    train_shots = utils.find_shot_dirs(train_dir)
    if val_dir is not None:
        val_shots = utils.find_shot_dirs(val_dir)
    else:
        train_shots, val_shots = data_lib.split_shots(train_shots, args.val_fraction, args.seed)
    return train_dir, train_shots, val_dir or train_dir, val_shots


def model_config(args) -> models.ModelConfig:
    onoff = lambda v: None if v is None else v == "on"  # noqa: E731
    overrides = {"generator": args.generator, "ndf": args.ndf, "ngf": args.ngf, "warp": args.warp,
                 "propagate": onoff(args.propagate), "reference": onoff(args.reference)}
    return models.ModelConfig(**overrides)


def build_loader(args, cfg, train_dir, train_shots, rank, world, device):
    """The training loader. With the frame cache, rank 0 builds it (if needed) while the other
    ranks wait, then every rank opens it."""
    cache = False
    if args.frame_cache == "on":
        cache = True if rank == 0 else "open"
        if world > 1 and rank != 0:
            dist.barrier()  # rank 0 builds first
    ds = data_lib.TripletDataset(train_shots, image_size=args.image_size, train=True,
                                 frame_cache=cache, cache_dir=args.cache_dir,
                                 line_art=args.line_art, line_root=args.line_root,
                                 root_for_relpaths=train_dir, prev_prob=args.prev_prob, seed=args.seed,
                                 uint8=True, extended=cfg.extended_inputs, flows=cfg.warp == "flow",
                                 ref_prob=args.ref_prob if cfg.reference else 0.0,
                                 ref_max_distance=args.ref_max_distance, rollout_prob=args.rollout_prob,
                                 reverse_prob=args.reverse_prob)
    if args.frame_cache == "on" and world > 1 and rank == 0:
        dist.barrier()  # the cache is complete: the others may open it
    sampler = ResumableSampler(ds, world, rank, args.seed)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0,
                        drop_last=False, worker_init_fn=ignore_ctrl_c)
    return ds, sampler, loader


def build_nets(args, cfg, device) -> Nets:
    G, D = models.build_generator(cfg).to(device), models.build_discriminator(cfg).to(device)
    if args.init_generator:
        models.load_state_strict(G, load_weights(args.init_generator, "generator"), "generator")
    if args.init_discriminator:
        models.load_state_strict(D, load_weights(args.init_discriminator, "discriminator"), "discriminator")
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(args.beta1, args.beta2), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2), fused=fused)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and device.type == "cuda" else None
    return Nets(G, D, opt_g, opt_d, scaler)


def load_weights(path, key):
    """Weights of one network from our checkpoint or the original's one-network files."""
    ckpt = utils.read_checkpoint(path)
    if key not in ckpt:
        raise UserError(f"{path} holds no {key} weights")
    return ckpt[key]


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run: Run, nets: Nets, progress: Progress, health: "Health", name=None) -> Path:
    """One dict of plain types, written atomically once ``health`` says every loss was finite;
    the newest ``--keep_last`` step files are kept."""
    health.check()
    start_run_dir(run)
    args = run.args
    folder = checkpoint_dir(args.run_dir)
    path = folder / (name or f"step_{progress.step:08d}.pt")
    ckpt = {"format": CHECKPOINT_FORMAT, **nets.state_dicts(), "progress": progress.to_dict(),
            "model_config": run.cfg.to_dict(), "run_config": run_config(args)}
    utils.atomic_torch_save(ckpt, path)
    if name is None:
        for old in sorted(folder.glob("step_*.pt"))[:-args.keep_last]:
            old.unlink()
    return path


def find_resume(args):
    if args.resume in (None, "", "none"):
        return None
    if args.resume != "auto":
        return args.resume
    found = sorted(checkpoint_dir(args.run_dir).glob("step_*.pt"))
    return found[-1] if found else None


def restore(run: Run, nets: Nets, path) -> Progress:
    """Load a training checkpoint into ``nets``; returns its progress, to continue exactly."""
    ckpt = utils.read_checkpoint(path)
    if ckpt.get("format") == "tcvc-train-1":
        raise UserError(f"{path} was written by an earlier version of train.py and cannot be resumed; "
                        "start a new run from its weights with --checkpoint_path_G / --checkpoint_path_D")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a TCVC training checkpoint (use --checkpoint_path_G for weights only)")
    saved_cfg = models.ModelConfig.from_dict(ckpt["model_config"])
    if saved_cfg != run.cfg:
        raise UserError(f"{path} was trained with {saved_cfg}, not the {run.cfg} asked for")
    nets.load_state_dicts(ckpt, path)
    return Progress.from_dict(ckpt.get("progress"), path)


def run_config(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


# ----------------------------------------------------------------------------- the GAN step
def requires_grad(model, flag: bool) -> None:
    for param in model.parameters():
        param.requires_grad_(flag)


def generator_input(run: Run, nets: Nets, b: dict) -> torch.Tensor:
    """The generator input for frame t of every sample of the batch ``b`` (on the device).

    For rollout samples the previous frame is the generator's own output for it, made from the
    frame before (detached, or with gradient under ``--rollout_grad``), so that the model learns
    to correct its own drift as at inference."""
    cfg = run.cfg
    if not cfg.extended_inputs:
        return models.assemble_input(cfg, b["line"], b["prev"], b["has_prev"])
    ref = (b.get("ref"), b.get("ref_line"), b["has_ref"])
    prev = b["prev"]
    if run.args.rollout_prob > 0:
        x_prev = models.assemble_input(cfg, b["prev_line"], b["prev2"], b["has_prev2"], b["prev2_line"],
                                       b["flow2"], *ref, b["ref_flow2"])
        # the whole batch, not only its rollout samples: picking them would need their count on
        # the host (a sync every step) and give the generator a batch of changing size
        with torch.set_grad_enabled(run.args.rollout_grad), run.autocast:
            # the bare G: DDP allows one forward per backward
            own = unwrap(nets.generator)(x_prev).float()
        prev = torch.where(b["rollout"].view(-1, 1, 1, 1) > 0, own, prev)
    return models.assemble_input(cfg, b["line"], prev, b["has_prev"], b["prev_line"], b["flow"],
                                 *ref, b["ref_flow"])


def gan_step(batch, run: Run, nets: Nets, health: "Health", update_d: bool) -> dict:
    """One D step on a detached fake (when ``update_d``), then one G step with D frozen. Nothing
    here waits for the device: the losses come back as device tensors, and a non-finite loss is
    only recorded in ``health``, which is read at log steps and before every save."""
    G, D = nets.generator, nets.discriminator
    b = {k: data_lib.to_device(v, run.device) for k, v in batch.items() if k != "index"}
    x = generator_input(run, nets, b)
    target = b["target"]
    # line art + (warped) previous frame: what D is conditioned on; detached, so that D's
    # backward never reaches into a rollout's graph (--rollout_grad), which G's backward needs
    cond = x[:, models.D_COND].detach()
    with run.autocast:
        fake = G(x)  # (B, 3, H, W) in [0, 1]
    logs = {}
    if update_d:
        requires_grad(D, True)
        with run.autocast:
            # real and fake in one D call: one DDP forward per backward
            logits = D(torch.cat([torch.cat([cond, target], 1), torch.cat([cond, fake.detach()], 1)]))
            real_logits, fake_logits = logits.float().chunk(2)
            loss_d = losses.d_loss(real_logits, fake_logits, run.args.gan_loss)
        backward_step(loss_d, nets.opt_d, nets.scaler)
        health.record("discriminator", loss_d)
        logs["loss_d"] = loss_d.detach()
    requires_grad(D, False)
    with run.autocast:
        # the bare D: no gradient reaches its weights here, so DDP must not wait for them
        fake_logits = unwrap(D)(torch.cat([cond, fake], 1)).float()
    total, parts = run.g_loss(fake_logits, fake.float(), target)
    backward_step(total, nets.opt_g, nets.scaler)
    health.record("generator", total)
    logs.update(parts)
    return logs


def backward_step(loss, optimizer, scaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


class NonFiniteLoss(UserError):
    """A loss turned NaN or infinite: training stops without saving."""


class Health:
    """Whether every loss so far was finite, kept on the device so that the training step never
    waits for it. ``check`` reads it (one sync) at log steps and before every save, so that a
    non-finite loss never reaches a checkpoint; it names the first step that went wrong."""

    def __init__(self, device):
        self.first_bad = {what: torch.full((), -1, dtype=torch.long, device=device)
                          for what in ("discriminator", "generator")}
        self.step = 0  # the step being computed, 1-based, set by the loop

    def record(self, what: str, loss: torch.Tensor) -> None:
        first = self.first_bad[what]
        bad = ~torch.isfinite(loss.detach()) & (first < 0)
        self.first_bad[what] = torch.where(bad, torch.full_like(first, self.step), first)

    def check(self) -> None:
        steps = torch.stack(list(self.first_bad.values())).tolist()
        bad = [(step, what) for what, step in zip(self.first_bad, steps) if step >= 0]
        if bad:
            step, what = min(bad)
            raise NonFiniteLoss(f"the {what} loss became non-finite (nan or inf) at step {step}; training "
                                "stopped and saved nothing, the last checkpoint is intact (try a lower learning "
                                "rate, or --amp bf16 instead of fp16)")


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(run: Run, nets: Nets, progress: Progress) -> dict:
    """Colorize the fixed validation shot recurrently, as at inference: each frame is fed the
    previous output, and a generator with a reference input gets the shot's true first frame as
    its keyframe. Logs L1 and test.py's metrics, saves a strip (line art | generated | target)."""
    args, G = run.args, unwrap(nets.generator)
    G.eval()
    chain = chains.Chain(G, run.cfg, run.device, args.line_art, run.autocast)
    l1s, rows, video = [], [], metrics_lib.VideoMetrics()
    for i, path in enumerate(run.val_shot[:args.val_frames]):
        given = given_line_art(args, run.val_root, path)
        small = data_lib.resize(utils.read_rgb(path), args.image_size)
        line = data_lib.make_line_art(small, args.line_art, given)
        target = data_lib.to_tensor(small)[None].to(run.device)
        if i == 0:
            chain.start(chains.Source.of(small, line, run.device) if run.cfg.reference else None)
        out = chain.step(line)
        l1s.append(F.l1_loss(out, target).item())
        video.update(data_lib.to_uint8(out[0]), small)
        if i < 6:
            rows.append(np.concatenate([np.repeat(line[..., None], 3, 2), data_lib.to_uint8(out[0]), small], 1))
    G.train()
    start_run_dir(run)
    sample = Path(args.run_dir) / "samples" / f"val_step_{progress.step:08d}.png"
    utils.write_image(sample, np.concatenate(rows, 0))
    result = video.result()
    return {"val_l1": float(np.mean(l1s)), "val_psnr": result["psnr"], "val_ssim": result["ssim"],
            "val_tc_ratio": result["tc_ratio"], "val_sample": str(sample)}


def given_line_art(args, val_root, frame_path):
    if args.line_art != "given":
        return None
    return data_lib.read_given_line_art(frame_path, args.line_root, val_root)


# ----------------------------------------------------------------------------- logging
class Logger:
    """JSON lines in the run folder, the original's plain ``--logfile``, TensorBoard if present.
    Nothing is created before the first record (``before_write`` sets up the run folder)."""

    def __init__(self, args, enabled: bool, before_write=lambda: None):
        self.enabled, self.logfile, self.before_write = enabled, args.logfile, before_write
        self.path = Path(args.run_dir) / "log.jsonl"
        self.tb, self.tb_dir = None, Path(args.run_dir) / "tb"

    def log(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        self.before_write()
        record = {"step": step, "time": round(time.time(), 2), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.logfile:
            with open(self.logfile, "a") as f:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["time"]))
                f.write(stamp + " " + " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in record.items() if k != "time") + "\n")
        for key, value in record.items():
            if isinstance(value, float) and self.tensorboard():
                self.tb.add_scalar(key, value, step)

    def tensorboard(self):
        if self.tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tb = False
            else:
                self.tb = SummaryWriter(str(self.tb_dir))
        return self.tb


# ----------------------------------------------------------------------------- main loop
def prepare(args) -> tuple[Run, Nets]:
    """Everything the loop needs: the fixed run context, and the networks with their optimisers."""
    rank, world, device = setup_distributed(args.device)
    train_dir, train_shots, val_dir, val_shots = resolve_data(args)
    cfg = model_config(args)
    ds, sampler, loader = build_loader(args, cfg, train_dir, train_shots, rank, world, device)
    nets = build_nets(args, cfg, device)
    vgg = losses.load_vgg19(args.vgg_weights).to(device)
    G, D = nets.generator, nets.discriminator
    if device.type == "cuda":  # channels_last: tensor cores read NHWC without transposes
        G, D, vgg = (m.to(memory_format=torch.channels_last) for m in (G, D, vgg))
    if args.compile:
        G, D = torch.compile(G), torch.compile(D)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    nets.generator, nets.discriminator = G, D
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    g_loss = losses.GeneratorLoss(vgg, args.gan_loss, adv=args.adv_weight, l1=args.l1_weight,
                                  content=args.content_weight, style=args.style_weight)
    run = Run(args=args, rank=rank, world=world, device=device, cfg=cfg, ds=ds, sampler=sampler,
              loader=loader, val_shot=utils.list_frames(val_shots[0]) if val_shots else None,
              val_root=Path(val_dir), g_loss=g_loss, autocast=utils.autocast_context(device, args.amp),
              vgg_random=getattr(vgg, "is_random", False), n_train_shots=len(train_shots),
              n_val_shots=len(val_shots))
    return run, nets


def total_steps(run: Run) -> int:
    args = run.args
    per_epoch = math.ceil(len(run.ds) / (args.batch_size * run.world))
    steps = per_epoch * args.epochs
    return min(steps, args.max_steps) if args.max_steps is not None else steps


def announce(run: Run, nets: Nets, total: int) -> None:
    args, cfg = run.args, run.cfg
    G = unwrap(nets.generator)
    lines = [f"train: {len(run.ds)} frames in {run.n_train_shots} shot(s); validation: "
             f"{run.n_val_shots} shot(s); {run.world} process(es) on {run.device}",
             f"generator {cfg.generator}: {models.count_parameters(G) / 1e6:.2f} M parameters "
             f"(propagate {cfg.propagate}, reference {cfg.reference}, warp {cfg.warp}); "
             f"{total} steps of batch {args.batch_size} x {run.world}"]
    if run.vgg_random:
        lines.append("WARNING: VGG19 has RANDOM weights (--vgg_weights random): perceptual and style "
                     "losses are not ImageNet features; use this for smoke runs only")
    for line in lines:
        tqdm.write(line)


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM (what SLURM, Kubernetes and torchrun send before they kill a
    job) only set a flag; the loop finishes the step it is in, saves a checkpoint there and exits,
    so that ``--resume auto`` continues exactly. Under DDP the ranks agree on the step to stop at
    (an all-reduce each step). A second Ctrl-C stops at once, saving nothing."""

    EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self):
        self.signum, self._previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def agreed(self, run: Run) -> int | None:
        """The signal every rank stops for, or None to go on."""
        if run.world == 1:
            return self.signum
        flag = torch.tensor([float(self.signum or 0)], device=run.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


def ignore_ctrl_c(_worker_id=None) -> None:
    """DataLoader workers leave Ctrl-C (sent to the whole terminal's process group) to the main
    process, which finishes its step and saves. SIGTERM still ends them (the loader's own
    shutdown relies on it); see ``batches``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def batches(loader, stop: StopRequest):
    """The loader's batches; when a stop signal has also ended the workers, the batches just
    end, at a step boundary, and the loop stops there."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError:
            if stop.signum is None:
                raise
            return
        yield batch


def train(run: Run, nets: Nets, progress: Progress) -> int:
    args = run.args
    total = total_steps(run)
    logger = Logger(args, run.is_main, before_write=lambda: start_run_dir(run))
    health = Health(run.device)
    if run.is_main:
        announce(run, nets, total)
    bar = tqdm(total=total, initial=progress.step, disable=not run.is_main, dynamic_ncols=True, unit="step")
    try:
        with StopRequest() as stop:
            return loop(run, nets, progress, health, logger, bar, stop, total)
    except KeyboardInterrupt:  # a second Ctrl-C, inside a step: nothing consistent to save
        tqdm.write(f"interrupted inside step {progress.step + 1}: nothing saved (continue from the last "
                   "checkpoint with --resume auto)")
        return 130
    finally:
        bar.close()


def loop(run, nets, progress, health, logger, bar, stop, total) -> int:
    args = run.args
    vgg_note = "random" if run.vgg_random else args.vgg_weights
    seen, t0, end_of_run = 0, time.time(), False
    while progress.step < total and not end_of_run:
        run.sampler.set_epoch(progress.epoch)
        run.sampler.consumed = progress.consumed
        run.ds.set_epoch(progress.epoch)
        for batch in batches(run.loader, stop):
            health.step = progress.step + 1
            with sync_debug(run):
                logs = gan_step(batch, run, nets, health, update_d=progress.step % args.d_every == 0)
            progress.step += 1
            progress.consumed += len(batch["index"]) * run.world
            seen += len(batch["index"]) * run.world
            end_of_run = progress.step >= total or out_of_time(run, t0)
            if progress.step % args.log_every == 0 or end_of_run:
                health.check()
                record = dict(zip(logs, torch.stack(list(logs.values())).tolist()))  # the one sync
                rate = seen / max(time.time() - t0, 1e-9)  # honest: the device has caught up
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3g}" for k, v in record.items()}
                                | {"img/s": f"{rate:.1f}"})
                logger.log(progress.step, record | {"epoch": progress.epoch, "img_per_s": rate,
                                                    "vgg": vgg_note})
            bar.update(1)
            signum = stop.agreed(run)
            if signum is not None:
                return stopped(run, nets, progress, health, signum)
            if args.val_every and progress.step % args.val_every == 0 and not end_of_run:
                evaluate_and_save(run, nets, progress, health, logger, best_only=True)
            if progress.step % args.save_every == 0 and not end_of_run and run.is_main:
                save_checkpoint(run, nets, progress, health)
            if end_of_run:
                break
        else:
            signum = stop.agreed(run)
            if signum is not None:  # the signal ended the workers before the epoch did
                return stopped(run, nets, progress, health, signum)
            progress.epoch, progress.consumed = progress.epoch + 1, 0
            if progress.step < total:
                evaluate_and_save(run, nets, progress, health, logger)
    evaluate_and_save(run, nets, progress, health, logger)
    if run.is_main:
        export = Path(args.run_dir) / "generator.pt"
        health.check()
        utils.atomic_torch_save(models.generator_export(unwrap(nets.generator), run.cfg, args.image_size,
                                                        args.line_art), export)
        tqdm.write(f"done: {export} (generator only; test.py --checkpoint {export})")
    return 0


@contextlib.contextmanager
def sync_debug(run: Run):
    """With --sync_debug on CUDA, any host-device synchronisation inside the block raises."""
    if not (run.args.sync_debug and run.device.type == "cuda"):
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def stopped(run: Run, nets: Nets, progress: Progress, health: Health, signum: int) -> int:
    """Save where every rank stopped (rank 0 writes) and return the signal's exit code."""
    name = signal.Signals(signum).name
    if run.is_main:
        path = save_checkpoint(run, nets, progress, health)
        tqdm.write(f"{name}: stopped after step {progress.step} and saved {path}; continue with --resume auto")
    if run.world > 1:
        dist.barrier()
    return StopRequest.EXIT_CODES[signum]


def out_of_time(run: Run, t0: float) -> bool:
    """``--max_minutes`` spent? Rank 0's clock decides, so every rank stops at the same step."""
    if run.args.max_minutes is None:
        return False
    late = time.time() - t0 > 60 * run.args.max_minutes
    if run.world == 1:
        return late
    flag = torch.tensor([float(late)], device=run.device)
    dist.broadcast(flag, 0)
    return bool(flag.item())


def evaluate_and_save(run: Run, nets: Nets, progress: Progress, health: Health, logger,
                      best_only=False) -> None:
    """Rank 0 validates, keeps best.pt by validation PSNR and writes a step checkpoint."""
    if not run.is_main:
        return
    health.check()
    if run.val_shot:
        record = validate(run, nets, progress)
        logger.log(progress.step, record | {"epoch": progress.epoch})
        tqdm.write(f"step {progress.step}: validation L1 {record['val_l1']:.4f}  "
                   f"PSNR {record['val_psnr']:.2f} dB  ({record['val_sample']})")
        if progress.best_psnr is None or record["val_psnr"] > progress.best_psnr:
            progress.best_psnr = record["val_psnr"]
            save_checkpoint(run, nets, progress, health, name="best.pt")
    if not best_only:
        save_checkpoint(run, nets, progress, health)


def check_args(args) -> None:
    """Every option that cannot work is refused here, before anything is read or written."""
    if not (args.data or (args.root and args.dataset)):
        raise UserError("give the training frames with --data DIR (or the original's --root and --dataset)")
    if args.line_art == "given" and not args.line_root:
        raise UserError("--line_art given needs --line_root, the folder of real line art")
    if args.line_root and args.line_art != "given":
        raise UserError("--line_root is only read with --line_art given")
    for name in ("prev_prob", "ref_prob", "rollout_prob", "reverse_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UserError(f"--{name} must be between 0 and 1, got {getattr(args, name)}")
    at_least = {"d_every": 1, "batch_size": 1, "keep_last": 1, "save_every": 1, "log_every": 1,
                "val_frames": 1, "epochs": 1, "image_size": 8, "ref_max_distance": 1, "num_workers": 0,
                "seed": 0, "val_every": 0, "ndf": 1}
    for name, low in at_least.items():
        if getattr(args, name) < low:
            raise UserError(f"--{name} must be at least {low}, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max_steps must be at least 1, got {args.max_steps} (nothing would be trained)")
    if args.max_minutes is not None and not args.max_minutes >= 0:
        raise UserError(f"--max_minutes must be 0 or more, got {args.max_minutes}")
    for name in ("lr_g", "lr_d"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise UserError(f"--{name} must be a positive number, got {getattr(args, name)}")
    for name in ("adv_weight", "l1_weight", "content_weight", "style_weight"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            raise UserError(f"--{name} must be 0 or more, got {getattr(args, name)}")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        raise UserError(f"--beta1 and --beta2 must be in [0, 1), got {args.beta1}, {args.beta2}")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val_fraction must be in [0, 1), got {args.val_fraction}")


def check_image_size(args) -> None:
    multiple, smallest = model_config(args).size_rule
    if args.image_size % multiple or args.image_size < smallest:
        raise UserError(f"--image_size {args.image_size} does not fit the {args.generator} generator: it needs "
                        f"a multiple of {multiple} of at least {smallest}")


RUN_FILES = ("config.json", "log.jsonl", "generator.pt", "checkpoints", "samples", utils.RUN_MARKER)
STEP_FILE = re.compile(r"step_(\d{8})\.pt")


def check_run_dir(args, resume) -> None:
    """A run folder holds one run: a new or empty folder starts one; a folder that holds a run
    continues it only with --resume, and only from its newest step (an older one would mix two
    histories and let --keep_last delete the new steps)."""
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run_dir {run_dir} is a file, not a folder")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and resume is None:
        if args.resume == "auto":
            raise UserError(f"{run_dir} holds a run ({', '.join(existing)}) with no checkpoint to resume from: "
                            "choose a new --run_dir")
        raise UserError(f"{run_dir} already holds a training run ({', '.join(existing)}): continue it with "
                        "--resume auto, or choose a new --run_dir")
    if resume is None:
        return
    steps = sorted(int(m.group(1)) for p in checkpoint_dir(run_dir).glob("step_*.pt")
                   if (m := STEP_FILE.fullmatch(p.name)))
    resumed = Path(resume).resolve()
    inside = checkpoint_dir(run_dir).resolve() in resumed.parents
    if existing and not inside:
        raise UserError(f"{run_dir} already holds another run: resume {resume} into a new --run_dir")
    m = STEP_FILE.fullmatch(resumed.name)
    if inside and m and steps and int(m.group(1)) < steps[-1]:
        raise UserError(f"{resume} is older than the newest checkpoint of {run_dir} (step {steps[-1]}): "
                        "resume an older step into a new --run_dir")


def start_run_dir(run: "Run") -> None:
    """Before the first file of the run is written (so that a run that fails at once leaves
    nothing behind): mark the folder as a train.py run (data discovery skips it), clear the
    temporary files that a save killed mid-write left, write config.json. Once per run."""
    if run.started or not run.is_main:
        return
    run.started = True
    args = run.args
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / utils.RUN_MARKER).touch()
    stale = utils.remove_stale_temp_files(checkpoint_dir(run_dir), r"step_\d{8}\.pt|best\.pt")
    stale += utils.remove_stale_temp_files(run_dir, r"generator\.pt|config\.json")
    if stale:
        tqdm.write(f"removed {len(stale)} temporary file(s) left by an interrupted save")
    utils.atomic_write_bytes(run_dir / "config.json",
                             json.dumps(run_config(args) | {"model": model_config(args).to_dict()},
                                        indent=2).encode())


def run_training(args) -> tuple[int, Run, Nets]:
    """Train as ``main`` does and also return the run and the networks (tests read every
    rank's weights). Nothing is written before every check has passed."""
    check_args(args)
    check_image_size(args)
    resume = find_resume(args)
    check_run_dir(args, resume)
    utils.seed_everything(args.seed)
    run, nets = prepare(args)
    try:
        progress = Progress()
        if resume is not None:
            progress = restore(run, nets, resume)
            if run.is_main:
                tqdm.write(f"resumed from {resume} at step {progress.step} (epoch {progress.epoch})")
        return train(run, nets, progress), run, nets
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(args) -> int:
    return run_training(args)[0]


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
