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
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import dataset as data_lib
import losses
import metrics as metrics_lib
import models
import utils
from utils import UserError

CHECKPOINT_FORMAT = "tcvc-train-1"


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
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader workers per process")
    g = p.add_argument_group("model")
    g.add_argument("--generator", choices=["unet", "resnet"], default="unet", help="resnet = the original's network")
    g.add_argument("--ngf", type=int, default=None, help="generator base channels (default: the network's own)")
    g.add_argument("--ndf", type=int, default=64, help="discriminator base channels")
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
    g.add_argument("--run_dir", default="runs/tcvc", help="checkpoints, samples and logs go here")
    g.add_argument("--resume", default=None, help="auto (newest checkpoint in --run_dir) or PATH")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="mixed precision on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks (weights stay loadable)")
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


# ----------------------------------------------------------------------------- setup
def resolve_data(args):
    train_dir, val_dir = data_lib.resolve_data_dirs(args.data, args.val_data, args.root, args.dataset)
    train_shots = utils.find_shot_dirs(train_dir)
    if val_dir is not None:
        val_shots = utils.find_shot_dirs(val_dir)
    else:
        train_shots, val_shots = data_lib.split_shots(train_shots, args.val_fraction, args.seed)
    return train_dir, train_shots, val_dir or train_dir, val_shots


def build_loader(args, train_dir, train_shots, rank, world, device):
    ds = data_lib.TripletDataset(train_shots, image_size=args.image_size, train=True,
                                 line_art=args.line_art, line_root=args.line_root,
                                 root_for_relpaths=train_dir, prev_prob=args.prev_prob, seed=args.seed,
                                 uint8=True)
    sampler = ResumableSampler(ds, world, rank, args.seed)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0,
                        drop_last=False)
    return ds, sampler, loader


def build_models(args, device):
    overrides = {"generator": args.generator, "ndf": args.ndf}
    if args.ngf is not None:
        overrides["ngf"] = args.ngf
    cfg = models.ModelConfig(**overrides)
    G, D = models.build_generator(cfg).to(device), models.build_discriminator(cfg).to(device)
    if args.init_generator:
        models.load_state_strict(G, load_weights(args.init_generator, "generator"), "generator")
    if args.init_discriminator:
        models.load_state_strict(D, load_weights(args.init_discriminator, "discriminator"), "discriminator")
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(args.beta1, args.beta2), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(args.beta1, args.beta2), fused=fused)
    return cfg, G, D, opt_g, opt_d


def load_weights(path, key):
    """Weights of one network from our checkpoint or the original's one-network files."""
    ckpt = utils.read_checkpoint(path)
    if key not in ckpt:
        raise UserError(f"{path} holds no {key} weights")
    return ckpt[key]


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(state, args, name=None) -> Path:
    """One dict of plain types, written atomically; the newest ``--keep_last`` step files kept."""
    folder = checkpoint_dir(args.run_dir)
    path = folder / (name or f"step_{state['step']:08d}.pt")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "generator": unwrap(state["G"]).state_dict(),
        "discriminator": unwrap(state["D"]).state_dict(),
        "opt_g": state["opt_g"].state_dict(), "opt_d": state["opt_d"].state_dict(),
        "scaler": state["scaler"].state_dict() if state["scaler"] is not None else None,
        "step": state["step"], "epoch": state["epoch"], "consumed": state["consumed"],
        "best_psnr": state["best_psnr"],
        "model_config": state["cfg"].to_dict(), "run_config": run_config(args),
    }
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


def restore(state, path):
    """Load a training checkpoint into ``state`` so that training continues exactly."""
    ckpt = utils.read_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a TCVC training checkpoint (use --checkpoint_path_G for weights only)")
    saved_cfg = models.ModelConfig.from_dict(ckpt["model_config"])
    if saved_cfg != state["cfg"]:
        raise UserError(f"{path} was trained with {saved_cfg}, not the {state['cfg']} asked for")
    models.load_state_strict(unwrap(state["G"]), ckpt["generator"], "generator")
    models.load_state_strict(unwrap(state["D"]), ckpt["discriminator"], "discriminator")
    state["opt_g"].load_state_dict(ckpt["opt_g"])
    state["opt_d"].load_state_dict(ckpt["opt_d"])
    if state["scaler"] is not None and ckpt.get("scaler"):
        state["scaler"].load_state_dict(ckpt["scaler"])
    for key in ("step", "epoch", "consumed", "best_psnr"):
        state[key] = ckpt[key]


def run_config(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


# ----------------------------------------------------------------------------- the GAN step
def requires_grad(model, flag: bool) -> None:
    for param in model.parameters():
        param.requires_grad_(flag)


def autocast_context(device, amp: str):
    """nanoGPT's single switch for mixed precision (CUDA only; CPU runs stay fp32)."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def gan_step(batch, state, args, update_d: bool) -> dict:
    """One D step on a detached fake (when ``update_d``), then one G step with D frozen."""
    G, D, device = state["G"], state["D"], state["device"]
    line, prev, target = (data_lib.to_device(batch[k], device) for k in ("line", "prev", "target"))
    cond = torch.cat([line, prev], dim=1)  # (B, 4, H, W)
    with state["autocast"]:
        fake = G(cond)  # (B, 3, H, W) in [0, 1]
    logs = {}
    if update_d:
        requires_grad(D, True)
        with state["autocast"]:
            # real and fake in one D call: one DDP forward per backward
            logits = D(torch.cat([torch.cat([cond, target], 1), torch.cat([cond, fake.detach()], 1)]))
            real_logits, fake_logits = logits.float().chunk(2)
            loss_d = losses.d_loss(real_logits, fake_logits, args.gan_loss)
        backward_step(loss_d, state["opt_d"], state["scaler"], "discriminator", state)
        logs["loss_d"] = loss_d.detach()
    requires_grad(D, False)
    with state["autocast"]:
        # the bare D: no gradient reaches its weights here, so DDP must not wait for them
        fake_logits = unwrap(D)(torch.cat([cond, fake], 1)).float()
    total, parts = state["g_loss"](fake_logits, fake.float(), target)
    backward_step(total, state["opt_g"], state["scaler"], "generator", state)
    logs.update(parts)
    return logs


def backward_step(loss, optimizer, scaler, what, state) -> None:
    if not torch.isfinite(loss.detach()):
        raise NonFiniteLoss(f"the {what} loss became {loss.item()} at step {state['step']}; "
                            f"training stopped, the last checkpoint is intact (try a lower learning rate "
                            f"or --amp bf16 instead of fp16)")
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


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(state, args, val_shot) -> dict:
    """Colorize the fixed validation shot recurrently (each frame fed the previous output),
    as at inference; log L1 and test.py's metrics, save a strip (line art | generated | target)."""
    G, device = unwrap(state["G"]), state["device"]
    G.eval()
    prev, l1s, rows, video = None, [], [], metrics_lib.VideoMetrics()
    for i, path in enumerate(val_shot[:args.val_frames]):
        line, target = data_lib.prepare_frame(utils.read_rgb(path), args.image_size, args.line_art,
                                              given=given_line_art(args, path))
        line, target = line[None].to(device), target[None].to(device)
        prev = torch.zeros_like(target) if prev is None else prev
        with state["autocast"]:
            prev = G(torch.cat([line, prev], 1)).float().clamp(0, 1)
        l1s.append(F.l1_loss(prev, target).item())
        video.update(data_lib.to_uint8(prev[0]), data_lib.to_uint8(target[0]))
        if i < 6:
            rows.append(np.concatenate([data_lib.to_uint8(t[0]) for t in (line, prev, target)], 1))
    G.train()
    sample = Path(args.run_dir) / "samples" / f"val_step_{state['step']:08d}.png"
    utils.write_image(sample, np.concatenate(rows, 0))
    result = video.result()
    return {"val_l1": float(np.mean(l1s)), "val_psnr": result["psnr"], "val_ssim": result["ssim"],
            "val_tc_ratio": result["tc_ratio"], "val_sample": str(sample)}


def given_line_art(args, frame_path):
    if args.line_art != "given":
        return None
    return data_lib.read_given_line_art(frame_path, args.line_root, args.val_root)


# ----------------------------------------------------------------------------- logging
class Logger:
    """JSON lines in the run folder, the original's plain ``--logfile``, TensorBoard if present."""

    def __init__(self, args, enabled: bool):
        self.enabled, self.logfile = enabled, args.logfile
        self.path = Path(args.run_dir) / "log.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(args.run_dir) / "tb"))
            except ImportError:
                pass

    def log(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 2), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.logfile:
            with open(self.logfile, "a") as f:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["time"]))
                f.write(stamp + " " + " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in record.items() if k != "time") + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.tb.add_scalar(key, value, step)


# ----------------------------------------------------------------------------- main loop
def prepare(args):
    """Everything the loop needs, in one dict: data, networks, optimisers, VGG, counters."""
    rank, world, device = setup_distributed(args.device)
    train_dir, train_shots, val_dir, val_shots = resolve_data(args)
    args.val_root = str(val_dir)
    ds, sampler, loader = build_loader(args, train_dir, train_shots, rank, world, device)
    cfg, G, D, opt_g, opt_d = build_models(args, device)
    vgg = losses.load_vgg19(args.vgg_weights).to(device)
    if device.type == "cuda":  # channels_last: tensor cores read NHWC without transposes
        G, D, vgg = (m.to(memory_format=torch.channels_last) for m in (G, D, vgg))
    if args.compile:
        G, D = torch.compile(G), torch.compile(D)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    g_loss = losses.GeneratorLoss(vgg, args.gan_loss, adv=args.adv_weight, l1=args.l1_weight,
                                  content=args.content_weight, style=args.style_weight)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and device.type == "cuda" else None
    return {"rank": rank, "world": world, "device": device, "ds": ds, "sampler": sampler,
            "loader": loader, "val_shot": utils.list_frames(val_shots[0]) if val_shots else None,
            "cfg": cfg, "G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d, "vgg": vgg, "scaler": scaler,
            "g_loss": g_loss, "autocast": autocast_context(device, args.amp),
            "step": 0, "epoch": 0, "consumed": 0, "best_psnr": None,
            "n_train_shots": len(train_shots), "n_val_shots": len(val_shots)}


def total_steps(args, state) -> int:
    per_epoch = math.ceil(len(state["ds"]) / (args.batch_size * state["world"]))
    steps = per_epoch * args.epochs
    return min(steps, args.max_steps) if args.max_steps is not None else steps


def announce(args, state, total):
    G = unwrap(state["G"])
    lines = [f"train: {len(state['ds'])} frames in {state['n_train_shots']} shot(s); validation: "
             f"{state['n_val_shots']} shot(s); {state['world']} process(es) on {state['device']}",
             f"generator {state['cfg'].generator}: {models.count_parameters(G) / 1e6:.2f} M parameters; "
             f"{total} steps of batch {args.batch_size} x {state['world']}"]
    if getattr(state["vgg"], "is_random", False):
        lines.append("WARNING: VGG19 has RANDOM weights (--vgg_weights random): perceptual and style "
                     "losses are not ImageNet features; use this for smoke runs only")
    for line in lines:
        tqdm.write(line)


def train(args, state) -> int:
    total, is_main = total_steps(args, state), state["rank"] == 0
    logger = Logger(args, is_main)
    vgg_note = "random" if getattr(state["vgg"], "is_random", False) else args.vgg_weights
    if is_main:
        announce(args, state, total)
    bar = tqdm(total=total, initial=state["step"], disable=not is_main, dynamic_ncols=True, unit="step")
    seen, t0, end_of_run = 0, time.time(), False
    try:
        while state["step"] < total and not end_of_run:
            state["sampler"].set_epoch(state["epoch"])
            state["sampler"].consumed = state["consumed"]
            state["ds"].set_epoch(state["epoch"])
            for batch in state["loader"]:
                update_d = state["step"] % args.d_every == 0
                logs = gan_step(batch, state, args, update_d)
                state["step"] += 1
                state["consumed"] += len(batch["index"]) * state["world"]
                seen += len(batch["index"]) * state["world"]
                rate = seen / max(time.time() - t0, 1e-9)
                end_of_run = state["step"] >= total or out_of_time(args, t0, state)
                if state["step"] % args.log_every == 0 or end_of_run:
                    record = {k: float(v) for k, v in logs.items()}
                    bar.set_postfix({k.replace("loss_", ""): f"{v:.3g}" for k, v in record.items()}
                                    | {"img/s": f"{rate:.1f}"})
                    logger.log(state["step"], record | {"epoch": state["epoch"], "img_per_s": rate,
                                                         "vgg": vgg_note})
                bar.update(1)
                if args.val_every and state["step"] % args.val_every == 0 and not end_of_run:
                    evaluate_and_save(args, state, logger, best_only=True)
                if state["step"] % args.save_every == 0 and not end_of_run and is_main:
                    save_checkpoint(state, args)
                if end_of_run:
                    break
            else:
                state["epoch"], state["consumed"] = state["epoch"] + 1, 0
                if state["step"] < total:
                    evaluate_and_save(args, state, logger)
        evaluate_and_save(args, state, logger)
        if is_main:
            export = Path(args.run_dir) / "generator.pt"
            utils.atomic_torch_save(models.generator_export(unwrap(state["G"]), state["cfg"], args.image_size,
                                                            args.line_art), export)
            tqdm.write(f"done: {export} (generator only; test.py --checkpoint {export})")
    except KeyboardInterrupt:
        if is_main:
            path = save_checkpoint(state, args)
            tqdm.write(f"interrupted: saved {path}; continue with --resume auto")
        return 130
    finally:
        bar.close()
    return 0


def out_of_time(args, t0: float, state) -> bool:
    """``--max_minutes`` spent? Rank 0's clock decides, so every rank stops at the same step."""
    if args.max_minutes is None:
        return False
    flag = torch.tensor([float(time.time() - t0 > 60 * args.max_minutes)], device=state["device"])
    if state["world"] > 1:
        dist.broadcast(flag, 0)
    return bool(flag.item())


def evaluate_and_save(args, state, logger, best_only=False) -> None:
    """Rank 0 validates, keeps best.pt by validation PSNR and writes a step checkpoint."""
    if state["rank"] != 0:
        return
    if state["val_shot"]:
        record = validate(state, args, state["val_shot"])
        logger.log(state["step"], record | {"epoch": state["epoch"]})
        tqdm.write(f"step {state['step']}: validation L1 {record['val_l1']:.4f}  "
                   f"PSNR {record['val_psnr']:.2f} dB  ({record['val_sample']})")
        if state["best_psnr"] is None or record["val_psnr"] > state["best_psnr"]:
            state["best_psnr"] = record["val_psnr"]
            save_checkpoint(state, args, name="best.pt")
    if not best_only:
        save_checkpoint(state, args)


def check_args(args) -> None:
    if not (args.data or (args.root and args.dataset)):
        raise UserError("give the training frames with --data DIR (or the original's --root and --dataset)")
    if args.line_art == "given" and not args.line_root:
        raise UserError("--line_art given needs --line_root, the folder of real line art")
    if not 0.0 <= args.prev_prob <= 1.0:
        raise UserError("--prev_prob must be between 0 and 1")
    if args.d_every < 1 or args.batch_size < 1 or args.keep_last < 1:
        raise UserError("--d_every, --batch_size and --keep_last must be at least 1")


def run_training(args) -> tuple[int, dict]:
    """Train as ``main`` does and also return the final state (tests read every rank's weights)."""
    check_args(args)
    utils.seed_everything(args.seed)
    state = prepare(args)
    resume = find_resume(args)
    if resume is not None:
        restore(state, resume)
        if state["rank"] == 0:
            tqdm.write(f"resumed from {resume} at step {state['step']} (epoch {state['epoch']})")
    if state["rank"] == 0:
        Path(args.run_dir).mkdir(parents=True, exist_ok=True)
        utils.atomic_write_bytes(Path(args.run_dir) / "config.json",
                                 json.dumps(run_config(args) | {"model": state["cfg"].to_dict()},
                                            indent=2).encode())
    try:
        return train(args, state), state
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(args) -> int:
    return run_training(args)[0]


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
