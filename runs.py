"""What a training run needs besides the training itself: its folder, its stop signals, and the
agreement between DDP ranks. train.py reads as the training loop; this is the machinery.

- ``RunFolder``: a run folder holds one run (``check``), is set up only when the first file is
  written (``start``), and keeps its newest step checkpoints (``prune``);
- ``StopRequest``: Ctrl-C and SIGTERM end the step in flight, and every rank agrees on it;
- ``setup_distributed``, ``ResumableSampler``, ``out_of_time``: one process per GPU under
  torchrun, an epoch that restarts part-way on any number of ranks, a time budget every rank
  stops at together;
- ``Logger``: JSON lines in the run folder, the original's plain ``--logfile``, TensorBoard.

Example:
    python -c "import runs; print(runs.RunFolder('runs/exp1', {}).existing())"
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler
from tqdm import tqdm

import models
import utils
from utils import UserError

RUN_FILES = ("config.json", "log.jsonl", "generator.pt", "checkpoints", "samples", utils.RUN_MARKER)
STEP_FILE = re.compile(r"step_(\d{8})\.pt")


# ----------------------------------------------------------------------------- the run folder
class RunFolder:
    """One training run's folder: ``config.json``, ``log.jsonl``, ``checkpoints/``, ``samples/``,
    ``generator.pt`` and the ``.tcvc-run`` marker. Only the main process writes (``enabled``)."""

    def __init__(self, path, config: dict, enabled: bool = True):
        self.path, self.config, self.enabled, self.started = Path(path), config, enabled, False

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def existing(self) -> list[str]:
        """The run files already in the folder."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def saved_nothing(self) -> bool:
        """Marked as ours, and no checkpoint or generator was ever saved in it."""
        return ((self.path / utils.RUN_MARKER).is_file() and not (self.path / "generator.pt").exists()
                and not any(self.checkpoints.glob("*.pt")))

    def steps(self) -> list[int]:
        """Step numbers of the step checkpoints in the folder, oldest first."""
        return sorted(int(m.group(1)) for p in self.checkpoints.glob("step_*.pt")
                      if (m := STEP_FILE.fullmatch(p.name)))

    def newest_step_file(self) -> Path | None:
        steps = self.steps()
        return self.checkpoints / f"step_{steps[-1]:08d}.pt" if steps else None

    def check(self, resume, asked_auto: bool) -> None:
        """A run folder holds one run: a new or empty folder starts one; a folder that holds a
        run continues it only with --resume, and only from its newest step (an older one would
        mix two histories and let --keep_last delete the new steps)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--run_dir {self.path} is a file, not a folder")
        existing = self.existing()
        if existing and resume is None and self.saved_nothing():
            # a run that failed after its checks (a full disk at its first checkpoint): nothing in
            # it is worth keeping, so a new run may start here instead of leaving a dead folder
            tqdm.write(f"note: {self.path} holds a run that saved no checkpoint ({', '.join(existing)}): "
                       "starting a new run there")
            return
        if existing and resume is None:
            if asked_auto:
                raise UserError(f"{self.path} holds a run ({', '.join(existing)}) with no checkpoint to resume "
                                "from: choose a new --run_dir")
            raise UserError(f"{self.path} already holds a training run ({', '.join(existing)}): continue it with "
                            "--resume auto, or choose a new --run_dir")
        if resume is None:
            return
        resumed = Path(resume).resolve()
        inside = self.checkpoints.resolve() in resumed.parents
        if existing and not inside:
            raise UserError(f"{self.path} already holds another run: resume {resume} into a new --run_dir")
        m, steps = STEP_FILE.fullmatch(resumed.name), self.steps()
        if inside and m and steps and int(m.group(1)) < steps[-1]:
            raise UserError(f"{resume} is older than the newest checkpoint of {self.path} (step {steps[-1]}): "
                            "resume an older step into a new --run_dir")

    def start(self) -> None:
        """Before the first file of the run is written (so that a run that fails at once leaves
        nothing behind): mark the folder as a train.py run (data discovery skips it), clear the
        temporary files that a save killed mid-write left, write config.json. Once per run."""
        if self.started or not self.enabled:
            return
        self.started = True
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / utils.RUN_MARKER).touch()
        stale = utils.remove_stale_temp_files(self.checkpoints, r"step_\d{8}\.pt|best\.pt")
        stale += utils.remove_stale_temp_files(self.path, r"generator\.pt|config\.json")
        if stale:
            tqdm.write(f"removed {len(stale)} temporary file(s) left by an interrupted save")
        utils.atomic_write_bytes(self.path / "config.json", json.dumps(self.config, indent=2).encode())

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` step checkpoints (never best.pt)."""
        for step in self.steps()[:-keep]:
            (self.checkpoints / f"step_{step:08d}.pt").unlink()


def check_run_dir_apart(run_dir, data_roots, shots) -> None:
    """The run folder is never the data: not a data root, not a shot folder or inside one, and
    no data inside it (training would write checkpoints among the frames, and the next data
    discovery would skip that shot as a run folder)."""
    resolved = Path(run_dir).resolve()
    for folder in [Path(d).resolve() for d in data_roots if d] + [Path(s).resolve() for s in shots]:
        if resolved == folder or folder in resolved.parents or resolved in folder.parents:
            raise UserError(f"--run_dir {run_dir} is, holds or lies inside the training data {folder}: "
                            "choose a run folder outside the data")


# Peak memory of a training step, in bytes per pixel of the batch per generator base channel
# (ngf): measured 265 (train.py, default U-Net, 256², batch 2, CPU: 1060 MiB more than at 32²,
# batch 1), with a margin of 1.5. Only sizes that cannot fit are refused.
TRAIN_BYTES_PER_PIXEL_CHANNEL = 400


def check_training_memory(batch_size: int, image_size: int, ngf: int, device) -> None:
    """A batch that cannot fit is refused in one line before the data is read."""
    needed = batch_size * image_size ** 2 * ngf * TRAIN_BYTES_PER_PIXEL_CHANNEL
    utils.check_memory(needed, f"training at --image_size {image_size} with --batch_size {batch_size}", device)


def find_resume(resume: str | None, folder: RunFolder):
    """--resume: None / 'none' (a new run), 'auto' (the newest step checkpoint, or a new run), or a path."""
    if resume in (None, "", "none"):
        return None
    if resume != "auto":
        return resume
    return folder.newest_step_file()


# ----------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "tcvc-train-2"


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
    generator_ema: torch.nn.Module | None = None  # --ema_decay: the average of the generator's weights

    def items(self):
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def state_dicts(self) -> dict:
        return {name: None if obj is None else unwrap(obj).state_dict() for name, obj in self.items()}

    def load_state_dicts(self, ckpt: dict, path) -> None:
        for name, obj in self.items():
            if name == "generator_ema" and (obj is None) != (ckpt.get(name) is None):
                raise UserError(f"{path} was trained with --ema_decay {'0' if obj is not None else 'above 0'}: "
                                "resume it as it was trained, or start a new run from its weights "
                                "with --checkpoint_path_G")
            if name not in ckpt and name != "generator_ema":  # checkpoints from before --ema_decay lack it
                raise UserError(f"{path} lacks '{name}': it is not a complete training checkpoint")
            if obj is None or ckpt[name] is None:
                continue
            if isinstance(obj, torch.nn.Module):
                models.load_state_strict(unwrap(obj), ckpt[name], name)
            else:
                obj.load_state_dict(ckpt[name])


def write_checkpoint(folder: RunFolder, nets: Nets, progress: Progress, model_config: dict, run_config: dict,
                     keep_last: int, name: str | None = None) -> Path:
    """One dict of plain types, written atomically: ``checkpoints/step_<step>.pt`` (the newest
    ``keep_last`` are kept), or ``checkpoints/<name>`` (best.pt)."""
    folder.start()
    path = folder.checkpoints / (name or f"step_{progress.step:08d}.pt")
    ckpt = {"format": CHECKPOINT_FORMAT, **nets.state_dicts(), "progress": progress.to_dict(),
            "model_config": model_config, "run_config": run_config}
    utils.atomic_torch_save(ckpt, path)
    if name is None:
        folder.prune(keep_last)
    return path


def read_training_checkpoint(path) -> dict:
    """A training checkpoint of this format, or one clear line saying what it is instead."""
    ckpt = utils.read_checkpoint(path)
    if ckpt.get("format") == "tcvc-train-1":
        raise UserError(f"{path} was written by an earlier version of train.py and cannot be resumed; "
                        "start a new run from its weights with --checkpoint_path_G / --checkpoint_path_D")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a TCVC training checkpoint (use --checkpoint_path_G for weights only)")
    return ckpt


def load_training_checkpoint(path, nets: Nets) -> Progress:
    """Weights and optimiser states into ``nets``; the progress to continue from."""
    ckpt = read_training_checkpoint(path)
    nets.load_state_dicts(ckpt, path)
    return Progress.from_dict(ckpt.get("progress"), path)


class NonFiniteLoss(UserError):
    """A loss turned NaN or infinite: training stops without saving."""


class Health:
    """Whether every loss so far was finite, kept on the device so that the training step never
    waits for it. ``check`` reads it (one sync) at log steps and before every save, so that a
    non-finite loss never reaches a checkpoint; it names the first step that went wrong."""

    def __init__(self, device):
        self.first_bad = {what: torch.full((), -1, dtype=torch.long, device=device)
                          for what in ("discriminator", "generator", "matcher")}
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


@contextlib.contextmanager
def sync_debug(enabled: bool, device):
    """With --sync_debug on CUDA, any host-device synchronisation inside the block raises."""
    if not (enabled and device.type == "cuda"):
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- processes
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


def ema_rate(decay: float, step: int) -> float:
    """The decay of the generator's weight average at the update after ``step`` optimisation steps:
    ``decay``, but at most (1 + step) / (10 + step), so that early on the average follows the
    weights instead of holding their initialisation for ~1 / (1 - decay) steps."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``average`` <- decay x ``average`` + (1 - decay) x ``model``, parameter by parameter, on the
    device and without a sync; buffers are copied (the generator's norms keep no running stats)."""
    for mine, theirs in zip(average.parameters(), model.parameters(), strict=True):
        mine.lerp_(theirs.detach(), 1.0 - decay)
    for mine, theirs in zip(average.buffers(), model.buffers(), strict=True):
        mine.copy_(theirs)


def undistributed(module):
    """The network under DDP's wrapper, still compiled where it was (``torch.compile``): for
    forwards that DDP must not see (one DDP forward per backward)."""
    return module.module if isinstance(module, DDP) else module


def unwrap(module):
    """The bare network under DDP and torch.compile wrappers (what checkpoints hold)."""
    module = undistributed(module)
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


def agree_max(value: float, world: int, device) -> float:
    """The largest of every rank's ``value`` (the value itself in a single process)."""
    if world == 1:
        return value
    flag = torch.tensor([float(value)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item()


def out_of_time(max_minutes: float | None, t0: float, world: int, device) -> bool:
    """``--max_minutes`` spent? Rank 0's clock decides, so every rank stops at the same step."""
    if max_minutes is None:
        return False
    late = time.time() - t0 > 60 * max_minutes
    if world == 1:
        return late
    flag = torch.tensor([float(late)], device=device)
    dist.broadcast(flag, 0)
    return bool(flag.item())


# ----------------------------------------------------------------------------- stop signals
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

    def agreed(self, world: int, device) -> int | None:
        """The signal every rank stops for, or None to go on."""
        return int(agree_max(float(self.signum or 0), world, device)) or None


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


# ----------------------------------------------------------------------------- logging
# A line of the plain --logfile: "2026-12-01 20:31:00 step=20 ..."
LOGFILE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step=\d+")


def check_logfile(logfile) -> None:
    """--logfile appends to a new file or to a log of train.py's (the original appended across
    runs), never to anything else (an input frame, a note); its folder must exist, so that a
    run never fails at its first log line after it has started."""
    if not logfile:
        return
    path = Path(logfile)
    if not path.parent.is_dir():
        raise UserError(f"--logfile {logfile}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"--logfile {logfile} is a folder, not a log file")
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            first = f.readline(200).decode(errors="replace")
        if not LOGFILE_LINE.match(first):
            raise UserError(f"--logfile {logfile} exists and is not a train.py log (its first line is not "
                            "'DATE TIME step=N ...'): choose a new file")


class Logger:
    """JSON lines in the run folder, the original's plain ``--logfile``, TensorBoard if present.
    Nothing is created before the first record (the run folder is started then)."""

    def __init__(self, folder: RunFolder, logfile=None):
        self.folder, self.logfile = folder, logfile
        self.path = folder.path / "log.jsonl"
        self.tb, self.tb_dir = None, folder.path / "tb"

    def log(self, step: int, record: dict) -> None:
        if not self.folder.enabled:
            return
        self.folder.start()
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
