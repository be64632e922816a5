"""Train the TCVC colorization GAN: G(line art t, previous frame, keyframe) -> colour t, judged by
a PatchGAN.

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
The run folder holds ``config.json``, ``log.jsonl``, ``checkpoints/`` and ``samples/``; it,
the checkpoints, the stop signals and the agreement between DDP ranks are ``runs.py``'s, and the
validation shot is coloured by ``colorize.py``, as test.py colours.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import colorize
import correspond
import dataset as data_lib
import losses
import metrics as metrics_lib
import models
import runs
import utils
from correspond import Source, Sources
from runs import unwrap
from utils import UserError

# correspondences with weights of their own, which --match_warmup trains alone first, and how many
# steps it takes by default: the selector needs more than the matcher (at 600 its keyframe alignment
# on the README's study was 21.69 dB, at 1000-2000 22.14)
LEARNED_CORRESPONDENCES = {"match": 200, "select": 2000}


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
    g.add_argument("--keyframe_prob", type=float, default=0.5,
                   help="chance a sample gets a keyframe: another frame of its shot (generators with a keyframe input)")
    g.add_argument("--keyframe_max_distance", type=int, default=1000, help="furthest keyframe from the frame, in frames")
    g.add_argument("--self_reference_prob", type=float, default=0.0,
                   help="of the samples with a keyframe, this share get frame t itself under a random rotation, "
                        "scale and shift as their keyframe (an augmented self-reference)")
    g.add_argument("--rollout_prob", type=float, default=0.5,
                   help="chance a sample's previous frame is the generator's own output for it (extended generators)")
    g.add_argument("--rollout_grad", action="store_true",
                   help="backpropagate through that output too (a 2-frame unroll) instead of detaching it")
    g.add_argument("--rollout_frames", type=int, default=2,
                   help="a rollout starts this many frames back: the generator colours the frames in between "
                        "one after the other, each from its own output for the one before, as a chain does at "
                        "inference (2: the previous frame from the true one before it; each more costs a "
                        "forward pass of the generator a step)")
    g.add_argument("--prev_drift_prob", type=float, default=0.5,
                   help="chance a sample's previous frame (true or the generator's own) is moved, blurred and "
                        "tinted a random amount, as a chain's outputs drift (dataset.apply_drift; extended generators)")
    g.add_argument("--prev_chain_prob", type=float, default=0.0,
                   help="chance the true frame a sample's chain starts from is the frame 1-64 frames further back "
                        "carried to its place along the one-step flows, as a colouring chain carries colours "
                        "(dataset._chained; extended generators with a correspondence that has a flow: flow, match, select)")
    g.add_argument("--reverse_prob", type=float, default=0.5,
                   help="chance a sample's chain runs backward in time (previous frame = frame t+1)")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader workers per process")
    g.add_argument("--no_frame_cache", action="store_true",
                   help="read the image files at every sample instead of the decoded-frame cache (every training "
                        "frame decoded and resized once into one file read by all workers and GPUs)")
    g.add_argument("--no_flow_cache", action="store_true",
                   help="compute the optical flows at every sample instead of keeping every frame's line art and "
                        "its flows to its neighbours and to two keyframes drawn once for it in the frame cache "
                        "(built once, about 6 times the frames' bytes; a sample then computes no flow)")
    g.add_argument("--cache_dir", default=None,
                   help="where the frame cache lives (default: $TCVC_CACHE_DIR, else $XDG_CACHE_HOME/tcvc, else "
                        "~/.cache/tcvc); it can be deleted at any time")
    g = p.add_argument_group("model")
    g.add_argument("--generator", choices=models.GENERATORS, default="unet", help="resnet = the original's network")
    g.add_argument("--ngf", type=int, default=None, help="generator base channels (default: the network's own)")
    g.add_argument("--ndf", type=int, default=64, help="discriminator base channels")
    g.add_argument("--no_copy_path", action="store_true",
                   help="unet: output generated colour only, not a per-pixel blend with the aligned previous frame "
                        "and keyframe")
    g.add_argument("--no_keyframe_input", action="store_true",
                   help="unet: no coloured keyframe input at every frame (a keyframe then only starts a chain)")
    g.add_argument("--correspondence", choices=correspond.CHOICES, default=None,
                   help="unet: how the previous frame and the keyframe are brought onto frame t: flow (line-art "
                        "optical flow, the default), none, match (the flow, then a learned matcher of line-art "
                        "regions: matcher.py) or select (unmoved, warped and matched, blended per pixel by a small "
                        "learned network: selector.py)")
    g.add_argument("--still_window", type=int, default=None,
                   help="zero line-art flow wherever a W x W neighbourhood holds a line that is identical in both "
                        "frames (correspond.still_mask), so a held background stays sharp beside a moving "
                        "character; recorded in the model, used by test.py and the app; 0: off (default: "
                        f"{models.STILL_WINDOW} with a correspondence that has a flow, 0 without)")
    g.add_argument("--flow_scale", type=int, choices=correspond.FLOW_SCALES, default=None,
                   help="compute the line-art flow on Canny line art of the frame enlarged this many times "
                        "(correspond.flow_art), so that lines land on half pixels, and bring it back to the network "
                        "resolution; recorded in the model, used by test.py and the app (default: "
                        f"{models.FLOW_SCALE} with a correspondence that has a flow, 1 without)")
    g.add_argument("--keyframe_resample", choices=correspond.RESAMPLES, default=None,
                   help="how the keyframe is resampled when it is warped onto frame t (bicubic keeps its lines a "
                        "pixel wide; the previous frame is always resampled bilinearly); recorded in the model, used "
                        f"by test.py and the app (default: {models.KEYFRAME_RESAMPLE})")
    g.add_argument("--source_split", choices=models.SOURCE_SPLITS, default=None,
                   help="copy path: how the weight the network gives its aligned sources is shared between the "
                        "previous frame and the keyframe: 'even' (the network chooses only how much of its generated "
                        "colour to use) or 'learned' (it chooses the split too); recorded in the model "
                        "(default: even for --correspondence select, whose U-Net trains only after the selector's "
                        "warm-up; learned for the others)")
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
    g.add_argument("--lr_match", type=float, default=3e-3,
                   help="--correspondence match or select: the learned correspondence's learning rate")
    g.add_argument("--lr_select_schedule", choices=("linear", "constant"), default="linear",
                   help="--correspondence select: its choice's learning rate over the warm-up: linear falls from "
                        "--lr_select to 0 at the warm-up's last step, so that the choice it ends with is not one "
                        "batch's swing; constant keeps --lr_select")
    g.add_argument("--lr_select", type=float, default=1e-3,
                   help="--correspondence select: the learning rate of its choice among the ways (at the region "
                        "matcher's 3e-3 it fixed on one way within the warm-up and learned no more)")
    g.add_argument("--joint_correspondence", action="store_true",
                   help="--correspondence match or select: go on training it after its warm-up, in the GAN steps, "
                        "through the generator's losses (by default it is fixed then: those losses reach it only "
                        "through the blend, and 24 GAN steps took a select model's alignment back to the plain warp)")
    g.add_argument("--match_warmup", type=int, default=None,
                   help="--correspondence match or select: the first N steps train the learned correspondence "
                        "alone, on the region matcher's cross-entropy (and, for select, the aligned colour's squared "
                        "error), at a tenth of a GAN step's cost each or less; they count in --max_steps "
                        "(default: 200 for match, 2000 for select)")
    g.add_argument("--ema_decay", type=float, default=0.0,
                   help="keep an exponential moving average of the generator's weights at this decay (0.999: about "
                        "the last thousand steps; 0: off); validation, best.pt, generator.pt and test.py then use "
                        "the average, training goes on with the weights themselves")
    g.add_argument("--beta1", type=float, default=0.0)
    g.add_argument("--beta2", type=float, default=0.999)
    g.add_argument("--d_every", type=int, default=1, help="update D every N steps (original: 12)")
    g.add_argument("--gan_loss", choices=losses.GAN_KINDS, default="nsgan")
    g.add_argument("--adv_weight", type=float, default=1.0)
    g.add_argument("--l1_weight", type=float, default=10.0)
    g.add_argument("--content_weight", type=float, default=1.0)
    g.add_argument("--style_weight", type=float, default=1000.0)
    g.add_argument("--line_l1_weight", type=float, default=0.0,
                   help="weight of an L1 on frame t's line pixels alone (its line art thickened by one pixel), on "
                        "top of --l1_weight's over all pixels: where most of the error lies (benchmarks/error_split.py)")
    g.add_argument("--own_l1_weight", type=float, default=0.0,
                   help="weight of an L1 on the copy path's own generated colour before it is blended with the "
                        "aligned sources (which start at 99.97%% of the output): the generator's part learnt at full "
                        "strength (U-Net with a copy path)")
    g.add_argument("--l2_weight", type=float, default=0.0,
                   help="weight of a squared error of the output (on top of --l1_weight): the L1 is least at the "
                        "median of what frame t may be, the squared error at the mean, which PSNR scores")
    g.add_argument("--match_weight", type=float, default=1.0,
                   help="--correspondence match: weight of the region matches' cross-entropy (losses.match_loss)")
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
    # the spellings of the previous release, each with a one-line note
    utils.renamed(p, "--ref_prob", "--keyframe_prob", type=float)
    utils.renamed(p, "--ref_max_distance", "--keyframe_max_distance", type=int)
    utils.renamed(p, "--frame_cache", "--no_frame_cache", utils.off_means_true, choices=["on", "off"])
    utils.renamed(p, "--propagate", "--no_copy_path", utils.off_means_true, choices=["on", "off"])
    utils.renamed(p, "--reference", "--no_keyframe_input", utils.off_means_true, choices=["on", "off"])
    utils.renamed(p, "--warp", "--correspondence", choices=correspond.CHOICES)
    return p


@dataclass
class Run:
    """What stays fixed during a run: options, processes, data, model config, loss, precision."""
    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    cfg: models.ModelConfig
    folder: runs.RunFolder
    ds: data_lib.TripletDataset
    sampler: runs.ResumableSampler
    loader: DataLoader
    val_shot: list | None           # frames of the fixed validation shot
    val_root: Path                  # data root of the validation shots (for given line art)
    g_loss: losses.GeneratorLoss
    autocast: object
    vgg_random: bool
    n_train_shots: int
    n_val_shots: int

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
    """A switch given turns the option off; none given leaves the generator's own default."""
    return models.ModelConfig(generator=args.generator, ndf=args.ndf, ngf=args.ngf, correspondence=args.correspondence,
                              copy_path=False if args.no_copy_path else None,
                              keyframe_input=False if args.no_keyframe_input else None,
                              still_window=args.still_window, keyframe_resample=args.keyframe_resample,
                              flow_scale=args.flow_scale, source_split=args.source_split)


def run_config(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


def build_loader(args, cfg, train_dir, train_shots, rank, world, device):
    """The training loader. With the frame cache, rank 0 builds it (if needed) while the other
    ranks wait, then every rank opens it."""
    cache = False
    if not args.no_frame_cache:
        cache = True if rank == 0 else "open"
        if world > 1 and rank != 0:
            torch.distributed.barrier()  # rank 0 builds first
    ds = data_lib.TripletDataset(train_shots, image_size=args.image_size, train=True,
                                 frame_cache=cache, cache_dir=args.cache_dir,
                                 line_art=args.line_art, line_root=args.line_root,
                                 root_for_relpaths=train_dir, prev_prob=args.prev_prob, seed=args.seed,
                                 uint8=True, extended=cfg.extended_inputs, correspondence=cfg.correspondence,
                                 keyframe_prob=args.keyframe_prob if cfg.keyframe_input else 0.0,
                                 keyframe_max_distance=args.keyframe_max_distance,
                                 self_reference_prob=args.self_reference_prob,
                                 rollout_prob=args.rollout_prob, reverse_prob=args.reverse_prob,
                                 rollout_frames=args.rollout_frames,
                                 prev_drift_prob=args.prev_drift_prob if cfg.extended_inputs else 0.0,
                                 prev_chain_prob=args.prev_chain_prob, cached_flows=not args.no_flow_cache,
                                 still_window=cfg.still_window, flow_scale=cfg.flow_scale)
    if not args.no_frame_cache and world > 1 and rank == 0:
        torch.distributed.barrier()  # the cache is complete: the others may open it
    sampler = runs.ResumableSampler(ds, world, rank, args.seed)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0,
                        drop_last=False, worker_init_fn=runs.ignore_ctrl_c)
    return ds, sampler, loader


def generator_groups(G, args) -> list[dict]:
    """The generator optimiser's parameter groups, each with its learning rate: ``select``'s
    choice of way learns at --lr_select, the rest of a learned correspondence (the region matcher)
    at --lr_match, the generator at --lr_g."""
    corr = getattr(G, "correspond", None)
    choice = list(corr.net.parameters()) if corr is not None and corr.trains_alignment else []
    chosen = {id(p) for p in choice}
    matcher_params = [p for p in (corr.parameters() if corr is not None else []) if id(p) not in chosen]
    held = {id(p) for p in matcher_params} | chosen
    groups = [{"params": [p for p in G.parameters() if id(p) not in held], "lr": args.lr_g}]
    if matcher_params:
        groups.append({"params": matcher_params, "lr": args.lr_match})
    if choice:
        groups.append({"params": choice, "lr": args.lr_select})
    return groups


def set_hyperparameters(nets: runs.Nets, args) -> None:
    """The optimisers' learning rates and betas from ``args``, after a checkpoint's optimiser
    states (which hold the rates they were saved with) were loaded: a run resumed with another
    --lr_g trains at that rate, as its config.json says. The same flags change nothing."""
    betas = (args.beta1, args.beta2)
    for group, spec in zip(nets.opt_g.param_groups, generator_groups(unwrap(nets.generator), args), strict=True):
        group["lr"], group["betas"] = spec["lr"], betas
    for group in nets.opt_d.param_groups:
        group["lr"], group["betas"] = args.lr_d, betas


def changed_options(saved: dict, now: dict) -> list[str]:
    """'name old -> new' for every training option whose value differs from the checkpoint's
    (where the run goes, how long it runs and the weights it started from excepted)."""
    moving = {"run_dir", "resume", "max_steps", "max_minutes", "epochs", "init_generator", "init_discriminator"}
    return [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(now)
            if k in saved and k not in moving and saved[k] != now[k]]


def build_nets(args, cfg, device) -> runs.Nets:
    G, D = models.build_generator(cfg).to(device), models.build_discriminator(cfg).to(device)
    if args.init_generator:
        models.load_state_strict(G, models.network_weights(args.init_generator, "generator"), "generator")
    if args.init_discriminator:
        models.load_state_strict(D, models.network_weights(args.init_discriminator, "discriminator"), "discriminator")
    fused = device.type == "cuda"
    betas = (args.beta1, args.beta2)
    opt_g = torch.optim.Adam(generator_groups(G, args), betas=betas, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=betas, fused=fused)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and device.type == "cuda" else None
    average = copy.deepcopy(G).requires_grad_(False).eval() if args.ema_decay > 0 else None
    return runs.Nets(G, D, opt_g, opt_d, scaler, average)


def prepare(args) -> tuple[Run, runs.Nets]:
    """Everything the loop needs: the fixed run context, and the networks with their optimisers."""
    rank, world, device = runs.setup_distributed(args.device)
    train_dir, train_shots, val_dir, val_shots = resolve_data(args)
    runs.check_run_dir_apart(args.run_dir, [train_dir, val_dir, args.line_root], train_shots + val_shots)
    cfg = model_config(args)
    args.match_warmup = warmup_steps(args, cfg)  # the run's config records the steps it takes
    runs.check_training_memory(args.batch_size, args.image_size, cfg.ngf, device)
    threads = utils.set_threads(args.batch_size * args.image_size ** 2)
    if rank == 0:
        runs.tqdm.write(f"note: {threads} thread(s) (set TCVC_THREADS to choose)")
    ds, sampler, loader = build_loader(args, cfg, train_dir, train_shots, rank, world, device)
    nets = build_nets(args, cfg, device)
    vgg = losses.load_vgg19(args.vgg_weights).to(device)
    G, D = nets.generator, nets.discriminator
    if device.type == "cuda":  # channels_last: tensor cores read NHWC without transposes
        G, D, vgg = (m.to(memory_format=torch.channels_last) for m in (G, D, vgg))
        if nets.generator_ema is not None:
            nets.generator_ema = nets.generator_ema.to(memory_format=torch.channels_last)
    if args.compile:
        G, D = torch.compile(G), torch.compile(D)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        # a learned correspondence is averaged by hand where it learns (its warm-up, or every step
        # under --joint_correspondence) and takes no gradient otherwise, which DDP does not allow
        mine = {id(p) for p in correspondence_parameters(G)}
        DDP._set_params_and_buffers_to_ignore_for_model(G, [n for n, p in G.named_parameters() if id(p) in mine])
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    nets.generator, nets.discriminator = G, D
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    g_loss = losses.GeneratorLoss(vgg, args.gan_loss, adv=args.adv_weight, l1=args.l1_weight,
                                  content=args.content_weight, style=args.style_weight,
                                  match=args.match_weight, line_l1=args.line_l1_weight,
                                  own_l1=args.own_l1_weight, l2=args.l2_weight)
    folder = runs.RunFolder(args.run_dir, run_config(args) | {"model": cfg.to_dict()}, enabled=rank == 0)
    run = Run(args=args, rank=rank, world=world, device=device, cfg=cfg, folder=folder, ds=ds, sampler=sampler,
              loader=loader, val_shot=utils.list_frames(val_shots[0]) if val_shots else None,
              val_root=Path(val_dir), g_loss=g_loss, autocast=utils.autocast_context(device, args.amp),
              vgg_random=getattr(vgg, "is_random", False), n_train_shots=len(train_shots),
              n_val_shots=len(val_shots))
    return run, nets


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(run: Run, nets: runs.Nets, progress: runs.Progress, health: runs.Health, name=None) -> Path:
    """Rank 0's checkpoint of the run (``runs.write_checkpoint``), once ``health`` says every loss
    was finite."""
    health.check()
    return runs.write_checkpoint(run.folder, nets, progress, run.cfg.to_dict(), run_config(run.args),
                                 run.args.keep_last, name)


def restore(run: Run, nets: runs.Nets, path) -> runs.Progress:
    """Load a training checkpoint into ``nets``; returns its progress, to continue exactly. The
    options given now rule (learning rates and betas included, which the optimiser states would
    otherwise bring back from the checkpoint); those that differ from the checkpoint's are named."""
    saved = runs.read_training_checkpoint(path)
    saved_cfg = models.ModelConfig.from_dict(saved["model_config"])
    if saved_cfg != run.cfg:
        apart = [f"{f.name} {getattr(saved_cfg, f.name)!r} (asked: {getattr(run.cfg, f.name)!r})"
                 for f in dataclasses.fields(saved_cfg) if getattr(saved_cfg, f.name) != getattr(run.cfg, f.name)]
        raise UserError(f"{path} was trained with other model settings: {'; '.join(apart)}; give train.py the "
                        "run's own (a model from before a setting existed reads as it was trained, e.g. "
                        "--still_window 0 --keyframe_resample bilinear --flow_scale 1 --source_split learned)")
    progress = runs.load_training_checkpoint(path, nets)
    set_hyperparameters(nets, run.args)
    changed = changed_options(saved.get("run_config") or {}, run_config(run.args))
    if changed and run.is_main:
        runs.tqdm.write(f"note: resumed with options changed since {Path(path).name}: {'; '.join(changed)}")
    return progress


# ----------------------------------------------------------------------------- the GAN step
def requires_grad(model, flag: bool) -> None:
    for param in model.parameters():
        param.requires_grad_(flag)


def correspondence_parameters(generator) -> list:
    """The weights of the generator's learned correspondence (``match``, ``select``); none for the
    others."""
    corr = getattr(unwrap(generator), "correspond", None)
    return [] if corr is None else list(corr.parameters())


def average_gradients(params, world: int) -> None:
    """Each parameter's gradient averaged over the ``world`` processes, by hand (for weights DDP
    does not hold); an absent gradient counts as zeros, so that every process takes part."""
    if world <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


def batch_sources(run: Run, nets: runs.Nets, b: dict) -> Sources:
    """What the generator is given for frame t of every sample of the batch ``b`` (on the device).

    For rollout samples the previous frame is the generator's own output for it, made from the
    frame before (detached, or with gradient under ``--rollout_grad``), so that the model learns
    to correct its own drift as at inference; with ``--rollout_frames`` K > 2 that frame is itself
    the end of a chain of K - 1 outputs, each made from the one before."""
    cfg = run.cfg
    prev = Source(**b["prev"])
    keyframe = Source(**b["keyframe"]) if cfg.keyframe_input else None
    if cfg.extended_inputs and run.args.rollout_prob > 0:
        frames = run.args.rollout_frames
        # a sample's rollout starts from frame ``start`` back (true colour, or black): frames
        # nearer to t come from the generator (with rollout_frames 2 it is always frame 2)
        start = b["rollout_start"].view(-1, 1, 1, 1) if "rollout_start" in b else None
        lines = {1: prev.line} | {j: b[f"prev{j}"]["line"] for j in range(2, frames)}
        own = None  # the generator's output for frame j back, from the frames before it
        # the whole batch, not only its rollout samples: picking them would need their count on
        # the host (a sync every step) and give the generator a batch of changing size
        with torch.set_grad_enabled(run.args.rollout_grad), run.autocast:
            for j in range(frames, 1, -1):  # colour frame j - 1 back from frame j back
                earlier_prev = Source(**b[f"prev{j}"])
                if own is not None:  # frame j back is the generator's, unless the rollout starts there
                    earlier_prev = dataclasses.replace(earlier_prev,
                                                       colour=torch.where(start > j, own, earlier_prev.colour))
                earlier_key = None if keyframe is None else dataclasses.replace(keyframe, flow=b[f"keyframe_flow{j}"])
                # G without DDP (which allows one forward per backward), compiled under --compile
                own = runs.undistributed(nets.generator)(Sources(lines[j - 1], earlier_prev, earlier_key)).colour.float()
        prev = dataclasses.replace(prev, colour=torch.where(b["rollout"].view(-1, 1, 1, 1) > 0, own, prev.colour))
    if "prev_drift" in b:  # --prev_drift_prob: some previous frames look like a long chain's
        prev = dataclasses.replace(prev, colour=data_lib.apply_drift(prev.colour, b["prev_drift"], prev.present))
    return Sources(b["line"], prev, keyframe)


def gan_step(batch, run: Run, nets: runs.Nets, health: runs.Health, update_d: bool) -> dict:
    """One D step on a detached fake (when ``update_d``), then one G step with D frozen. Nothing
    here waits for the device: the losses come back as device tensors, and a non-finite loss is
    only recorded in ``health``, which is read at log steps and before every save."""
    G, D = nets.generator, nets.discriminator
    # a learned correspondence is fixed after its warm-up unless --joint_correspondence: then no
    # gradient is computed for it at all (the gradient still flows through the colours it aligns,
    # to a rollout's outputs under --rollout_grad)
    corr, joint = correspondence_parameters(G), run.args.joint_correspondence
    for p in corr:
        p.requires_grad_(joint)
    b = data_lib.to_device({k: v for k, v in batch.items() if k != "index"}, run.device)
    sources, target = batch_sources(run, nets, b), b["target"]
    with run.autocast:
        out = G(sources)
    fake = out.colour  # (B, 3, H, W) in [0, 1]
    # line art + aligned previous frame: what D is conditioned on; detached, so that D's
    # backward never reaches into a rollout's graph (--rollout_grad), which G's backward needs
    cond = out.condition.detach()
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
        # D without DDP: no gradient reaches its weights here, so DDP must not wait for them
        fake_logits = runs.undistributed(D)(torch.cat([cond, fake], 1)).float()
        # VGG's convolutions under autocast too (half the step's FLOPs); Gram matrices and L1 stay fp32
        # a greyscale frame as line art has no line pixels: no l1_lines then (check_args refuses its weight)
        line = None if run.args.line_art == "grey" else sources.line.float()
        own = None if out.candidates is None else out.candidates[:, 0].float()  # the generated colour
        total, parts = run.g_loss(fake_logits, fake.float(), target, out.matches, line, own)
    backward_step(total, nets.opt_g, nets.scaler, corr if joint else (), run.world)
    health.record("generator", total)
    logs.update(parts)
    return logs


def match_step(batch, run: Run, nets: runs.Nets, health: runs.Health) -> dict:
    """A warm-up step of a learned correspondence alone (``--match_warmup``): the true previous
    frame and the keyframe aligned onto frame t, ``losses.match_loss`` of the region matches, plus,
    for a correspondence that learns the alignment itself (``select``), the squared error of the
    aligned colours against frame t (``losses.aligned_l2``); one Adam step of its weights
    (averaged over processes by hand: the correspondence runs outside DDP here)."""
    b = data_lib.to_device({k: v for k, v in batch.items() if k != "index"}, run.device)
    module = unwrap(nets.generator).correspond
    requires_grad(module, True)
    keyframe = Source(**b["keyframe"]) if run.cfg.keyframe_input else None
    aligned = unwrap(nets.generator).aligned_sources(Sources(b["line"], Source(**b["prev"]), keyframe))
    logs = {"match": losses.match_loss([m for s in aligned for m in (s.match or [])], b["target"].float())}
    if module.trains_alignment:
        logs["aligned_l2"] = losses.aligned_l2(aligned, b["target"])
    # + 0 x the weights: a backward (and the processes' averaging) even when no sample had a source
    loss = sum(logs.values()) + 0.0 * sum(p.sum() for p in module.parameters())
    nets.opt_g.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(module.parameters(), run.world)
    nets.opt_g.step()
    health.record("matcher", loss)
    return {name: value.detach() for name, value in logs.items()}


def select_lr(args, step: int, warmup: int) -> float:
    """The learning rate of ``select``'s choice of way at ``step`` (0-based): in the warm-up,
    --lr_select falling linearly to 0 at its last step (--lr_select_schedule linear) or kept; after
    it --lr_select (which only --joint_correspondence uses)."""
    if args.lr_select_schedule == "linear" and step < warmup:
        return args.lr_select * (1.0 - step / warmup)
    return args.lr_select


def select_group(optimizer, generator) -> dict | None:
    """The optimiser's group that holds ``select``'s choice of way (found by its parameters, so
    that a resumed optimiser's is found too: look it up after loading a checkpoint, which replaces
    the groups); None without one."""
    corr = getattr(unwrap(generator), "correspond", None)
    if corr is None or not corr.trains_alignment:
        return None
    mine = {id(p) for p in corr.net.parameters()}
    return next((group for group in optimizer.param_groups if any(id(p) in mine for p in group["params"])), None)


def warmup_steps(args, cfg: models.ModelConfig) -> int:
    """The steps that train a learned correspondence alone: --match_warmup, or its own default."""
    default = LEARNED_CORRESPONDENCES.get(cfg.correspondence, 0)
    return default if args.match_warmup is None else args.match_warmup if default else 0


def backward_step(loss, optimizer, scaler, by_hand=(), world: int = 1) -> None:
    """One optimiser step on ``loss``; the gradients of ``by_hand`` (weights DDP does not hold)
    averaged over the ``world`` processes first. A parameter without a gradient (one that does not
    require it) keeps its value: Adam skips it."""
    optimizer.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    average_gradients(by_hand, world)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


# ----------------------------------------------------------------------------- validation
def inference_generator(nets: runs.Nets) -> torch.nn.Module:
    """The generator that validation, best.pt's score and generator.pt use: the average of its
    weights under --ema_decay, else the weights being trained."""
    return nets.generator_ema if nets.generator_ema is not None else unwrap(nets.generator)


@torch.no_grad()
def validate(run: Run, nets: runs.Nets, progress: runs.Progress) -> dict:
    """Colorize the fixed validation shot recurrently, as at inference (the colouring library):
    each frame is fed the previous output, and a generator with a keyframe input gets the shot's
    true first frame as its keyframe. Logs L1 and test.py's metrics, saves a strip (line art |
    generated | target)."""
    args, G = run.args, inference_generator(nets)
    was_training = G.training
    G.eval()
    colorizer = colorize.Colorizer(G, run.cfg, run.device, colorize.Options(args.image_size, args.line_art,
                                                                            amp=args.amp))
    frames = []
    for i, path in enumerate(run.val_shot[:args.val_frames]):
        given = data_lib.read_given_line_art(path, args.line_root, run.val_root) if args.line_art == "given" else None
        small = utils.resize(utils.read_rgb(path), args.image_size)
        frames.append(colorize.Frame("val", str(i), data_lib.make_line_art(small, args.line_art, given), small))
    keys = colorize.ShotKeyframes(start=frames[0].target if run.cfg.keyframe_input else None)
    l1s, rows, video = [], [], metrics_lib.VideoMetrics()
    for frame, result, _ in colorizer.stream(frames, lambda _: keys):
        l1s.append(np.abs(result.astype(np.float32) - frame.target.astype(np.float32)).mean() / 255.0)
        video.update(result, frame.target)
        if len(rows) < 6:
            rows.append(np.concatenate([np.repeat(frame.line[..., None], 3, 2), result, frame.target], 1))
    G.train(was_training)
    run.folder.start()
    sample = run.folder.path / "samples" / f"val_step_{progress.step:08d}.png"
    utils.write_image(sample, np.concatenate(rows, 0))
    result = video.result()
    return {"val_l1": float(np.mean(l1s)), "val_psnr": result["psnr"], "val_ssim": result["ssim"],
            "val_tc_ratio": result["tc_ratio"], "val_sample": str(sample)}


# ----------------------------------------------------------------------------- the loop
def total_steps(run: Run) -> int:
    args = run.args
    per_epoch = math.ceil(len(run.ds) / (args.batch_size * run.world))
    steps = per_epoch * args.epochs
    return min(steps, args.max_steps) if args.max_steps is not None else steps


def announce(run: Run, nets: runs.Nets, total: int) -> None:
    args, cfg = run.args, run.cfg
    G = unwrap(nets.generator)
    lines = [f"train: {len(run.ds)} frames in {run.n_train_shots} shot(s); validation: "
             f"{run.n_val_shots} shot(s); {run.world} process(es) on {run.device}",
             f"generator {cfg.generator}: {models.count_parameters(G) / 1e6:.2f} M parameters "
             f"(copy path {cfg.copy_path}, keyframe input {cfg.keyframe_input}, correspondence "
             f"{cfg.correspondence}{f', still window {cfg.still_window}' if cfg.still_window else ''}"
             f"{f', flow at {cfg.flow_scale}x' if cfg.flow_scale > 1 else ''}"
             f"{f', keyframe resampled {cfg.keyframe_resample}' if cfg.keyframe_input else ''}"
             f"{f', sources split {cfg.source_split}' if cfg.copy_path and cfg.keyframe_input else ''}); "
             f"{total} steps of batch {args.batch_size} x {run.world}"]
    if nets.generator_ema is not None:
        lines.append(f"generator weights averaged (--ema_decay {args.ema_decay}): validation, best.pt, generator.pt "
                     "and test.py use the average")
    if not run.n_val_shots:
        lines.append("note: no validation shot (one shot, --val_fraction 0, or too few shots to hold one out): "
                     "no best.pt and no samples/ will be written; give --val_data to have them")
    if run.vgg_random:
        lines.append("WARNING: VGG19 has RANDOM weights (--vgg_weights random): perceptual and style "
                     "losses are not ImageNet features; use this for smoke runs only")
    for line in lines:
        runs.tqdm.write(line)


def train(run: Run, nets: runs.Nets, progress: runs.Progress) -> int:
    total = total_steps(run)
    logger = runs.Logger(run.folder, run.args.logfile)
    health = runs.Health(run.device)
    if run.is_main:
        announce(run, nets, total)
    # under --max_minutes the time budget, not the step count, usually ends the run: a bar of
    # steps would promise 139 hours for a 4-minute demo, so it shows steps and the time left
    budgeted = run.args.max_minutes is not None
    bar = runs.tqdm(total=None if budgeted else total, initial=progress.step, disable=not run.is_main,
                    dynamic_ncols=True, unit="step")
    try:
        with runs.StopRequest() as stop:
            return loop(run, nets, progress, health, logger, bar, stop, total)
    except KeyboardInterrupt:  # a second Ctrl-C, inside a step: nothing consistent to save
        runs.tqdm.write(f"interrupted inside step {progress.step + 1}: nothing saved (continue from the last "
                        "checkpoint with --resume auto)")
        return 130
    finally:
        bar.close()


def loop(run, nets, progress, health, logger, bar, stop, total) -> int:
    args = run.args
    vgg_note = "random" if run.vgg_random else args.vgg_weights
    seen, t0, end_of_run = 0, time.time(), False
    warmup = args.match_warmup  # resolved by prepare (warmup_steps)
    select = select_group(nets.opt_g, nets.generator)  # after restore, which replaced the groups
    while progress.step < total and not end_of_run:
        run.sampler.set_epoch(progress.epoch)
        run.sampler.consumed = progress.consumed
        run.ds.set_epoch(progress.epoch)
        for batch in runs.batches(run.loader, stop):
            health.step = progress.step + 1
            with runs.sync_debug(args.sync_debug, run.device):
                if select is not None:
                    select["lr"] = select_lr(args, progress.step, warmup)
                if progress.step < warmup:
                    logs = match_step(batch, run, nets, health)
                else:
                    logs = gan_step(batch, run, nets, health, update_d=progress.step % args.d_every == 0)
                if nets.generator_ema is not None:
                    runs.update_ema(nets.generator_ema, unwrap(nets.generator),
                                    runs.ema_rate(args.ema_decay, progress.step))
            progress.step += 1
            progress.consumed += len(batch["index"]) * run.world
            seen += len(batch["index"]) * run.world
            end_of_run = progress.step >= total or runs.out_of_time(args.max_minutes, t0, run.world, run.device)
            if progress.step % args.log_every == 0 or end_of_run:
                health.check()
                record = dict(zip(logs, torch.stack(list(logs.values())).tolist()))  # the one sync
                rate = seen / max(time.time() - t0, 1e-9)  # honest: the device has caught up
                left = {"min_left": f"{max(0.0, args.max_minutes - (time.time() - t0) / 60):.1f}"} \
                    if args.max_minutes is not None else {}
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3g}" for k, v in record.items()}
                                | {"img/s": f"{rate:.1f}"} | left)
                logger.log(progress.step, record | {"epoch": progress.epoch, "img_per_s": rate,
                                                    "vgg": vgg_note})
            bar.update(1)
            signum = stop.agreed(run.world, run.device)
            if signum is not None:
                return stopped(run, nets, progress, health, signum)
            if args.val_every and progress.step % args.val_every == 0 and not end_of_run:
                evaluate_and_save(run, nets, progress, health, logger, best_only=True)
            if progress.step % args.save_every == 0 and not end_of_run and run.is_main:
                save_checkpoint(run, nets, progress, health)
            if end_of_run:
                break
        else:
            signum = stop.agreed(run.world, run.device)
            if signum is not None:  # the signal ended the workers before the epoch did
                return stopped(run, nets, progress, health, signum)
            progress.epoch, progress.consumed = progress.epoch + 1, 0
            if progress.step < total:
                evaluate_and_save(run, nets, progress, health, logger)
    evaluate_and_save(run, nets, progress, health, logger)
    if run.is_main:
        export = run.folder.path / "generator.pt"
        health.check()
        utils.atomic_torch_save(models.generator_export(inference_generator(nets), run.cfg, args.image_size,
                                                        args.line_art), export)
        runs.tqdm.write(f"done: {export} (generator only; test.py --checkpoint {export})")
    return 0


def stopped(run: Run, nets: runs.Nets, progress: runs.Progress, health: runs.Health, signum: int) -> int:
    """Save where every rank stopped (rank 0 writes) and return the signal's exit code."""
    name = signal.Signals(signum).name
    if run.is_main:
        path = save_checkpoint(run, nets, progress, health)
        runs.tqdm.write(f"{name}: stopped after step {progress.step} and saved {path}; continue with --resume auto")
    if run.world > 1:
        torch.distributed.barrier()
    return runs.StopRequest.EXIT_CODES[signum]


def evaluate_and_save(run: Run, nets: runs.Nets, progress: runs.Progress, health: runs.Health, logger,
                      best_only=False) -> None:
    """Rank 0 validates, keeps best.pt by validation PSNR and writes a step checkpoint."""
    if not run.is_main:
        return
    health.check()
    if run.val_shot:
        record = validate(run, nets, progress)
        logger.log(progress.step, record | {"epoch": progress.epoch})
        runs.tqdm.write(f"step {progress.step}: validation L1 {record['val_l1']:.4f}  "
                        f"PSNR {record['val_psnr']:.2f} dB  ({record['val_sample']})")
        if progress.best_psnr is None or record["val_psnr"] > progress.best_psnr:
            progress.best_psnr = record["val_psnr"]
            save_checkpoint(run, nets, progress, health, name="best.pt")
    if not best_only:
        save_checkpoint(run, nets, progress, health)


# ----------------------------------------------------------------------------- main
def check_args(args) -> None:
    """Every option that cannot work is refused here, before anything is read or written."""
    if not (args.data or (args.root and args.dataset)):
        raise UserError("give the training frames with --data DIR (or the original's --root and --dataset)")
    if args.line_art == "given" and not args.line_root:
        raise UserError("--line_art given needs --line_root, the folder of real line art")
    if args.line_root and args.line_art != "given":
        raise UserError("--line_root is only read with --line_art given")
    for name in ("prev_prob", "keyframe_prob", "rollout_prob", "reverse_prob", "self_reference_prob",
                 "prev_drift_prob", "prev_chain_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UserError(f"--{name} must be between 0 and 1, got {getattr(args, name)}")
    at_least = {"d_every": 1, "batch_size": 1, "keep_last": 1, "save_every": 1, "log_every": 1,
                "val_frames": 1, "epochs": 1, "image_size": 8, "keyframe_max_distance": 1, "num_workers": 0,
                "seed": 0, "val_every": 0, "ndf": 1, "match_warmup": 0,
                "rollout_frames": 2}
    for name, low in at_least.items():
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise UserError(f"--{name} must be at least {low}, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max_steps must be at least 1, got {args.max_steps} (nothing would be trained)")
    if args.max_minutes is not None and not args.max_minutes >= 0:
        raise UserError(f"--max_minutes must be 0 or more, got {args.max_minutes}")
    for name in ("lr_g", "lr_d", "lr_match", "lr_select"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise UserError(f"--{name} must be a positive number, got {getattr(args, name)}")
    for name in ("adv_weight", "l1_weight", "content_weight", "style_weight", "match_weight", "line_l1_weight",
                 "own_l1_weight", "l2_weight"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            raise UserError(f"--{name} must be 0 or more, got {getattr(args, name)}")
    if args.line_l1_weight and args.line_art == "grey":
        raise UserError("--line_l1_weight needs line art (--line_art canny or given): a greyscale frame has no "
                        "line pixels")
    if not (0 <= args.ema_decay < 1):
        raise UserError(f"--ema_decay must be in [0, 1) (0: no average), got {args.ema_decay}")
    if not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        raise UserError(f"--beta1 and --beta2 must be in [0, 1), got {args.beta1}, {args.beta2}")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val_fraction must be in [0, 1), got {args.val_fraction}")
    runs.check_logfile(args.logfile)
    cfg = model_config(args)
    cfg.check_size(args.image_size, args.image_size, f"--image_size {args.image_size}")
    if args.prev_chain_prob and not (cfg.extended_inputs and cfg.correspondence != "none"):
        raise UserError("--prev_chain_prob carries frames along the line-art flow: it needs the U-Net's sources "
                        "aligned by a correspondence with a flow (--correspondence flow, match or select)")
    if args.own_l1_weight and not cfg.copy_path:
        raise UserError("--own_l1_weight is for a generator with a copy path (the U-Net without --no_copy_path): "
                        "without one the generated colour is the output, which --l1_weight already weighs")


def run_training(args) -> tuple[int, Run, runs.Nets]:
    """Train as ``main`` does and also return the run and the networks (tests read every
    rank's weights). Nothing is written before every check has passed."""
    check_args(args)
    # one train.py per run folder (rank 0 holds the lock: only it writes); checked under the lock
    lock = utils.WriterLock(args.run_dir, "train.py") if os.environ.get("RANK", "0") == "0" else None
    with lock or contextlib.nullcontext():
        folder = runs.RunFolder(args.run_dir, {})
        resume = runs.find_resume(args.resume, folder)
        folder.check(resume, asked_auto=args.resume == "auto")
        utils.seed_everything(args.seed)
        run, nets = prepare(args)
        try:
            progress = runs.Progress()
            if resume is not None:
                progress = restore(run, nets, resume)
                if run.is_main:
                    runs.tqdm.write(f"resumed from {resume} at step {progress.step} (epoch {progress.epoch})")
            return train(run, nets, progress), run, nets
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def main(args) -> int:
    return run_training(args)[0]


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
