"""Threads on a busy machine: test.py and a short train.py run, idle and beside a busy process.

    python benchmarks/bench_threads.py
    python benchmarks/bench_threads.py --frames 100 --steps 20 --threads auto 2

Each row runs the real command line in a fresh process (imports included: what a user waits
for) with ``TCVC_THREADS`` set to each of ``--threads`` (``auto``: unset, the choice of
``utils.choose_threads``; a number: that many torch / OpenCV threads, ``2`` on two cores being
torch's own default), first with nothing else started, then beside ``--busy`` processes that
spin on one core each. test.py colours ``--frames`` generated 128x128 frames at 64x64 with a
default U-Net of random weights; train.py is the README's CPU smoke run (64x64, batch 2,
``--steps`` steps, random VGG weights). The machine's 1-minute load average is printed with each
row: other people's jobs count as load too.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import models  # noqa: E402
import utils  # noqa: E402


def make_inputs(folder: Path, frames: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    shot = folder / "frames" / "shot_a"
    for i in range(frames):
        image = np.full((128, 128, 3), 60 + i % 100, np.uint8)
        image[20 + i % 60:60 + i % 60, 30:90] = rng.integers(0, 255, 3)
        utils.write_image(shot / f"frame_{i:06d}.png", image)
    cfg = models.ModelConfig()
    ckpt = folder / "gen.pt"
    torch.save(models.generator_export(models.build_generator(cfg), cfg, 64, "canny"), ckpt)
    return shot, ckpt


def timed(cmd: list, env: dict) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - t0


def busy(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shot, ckpt = make_inputs(tmp, args.frames)
        tools = {
            "test.py": lambda k: [sys.executable, "test.py", "--checkpoint", str(ckpt), "--input", str(shot),
                                  "--output", str(tmp / f"out{k}"), "--device", "cpu", "--no_metrics"],
            "train.py": lambda k: [sys.executable, "train.py", "--data", str(shot.parent), "--run_dir",
                                   str(tmp / f"run{k}"), "--image_size", "64", "--batch_size", "2", "--max_steps",
                                   str(args.steps), "--vgg_weights", "random", "--device", "cpu",
                                   "--val_fraction", "0", "--cache_dir", str(tmp / "cache")],
        }
        print(f"cores this process may use: {len(os.sched_getaffinity(0))}; torch {torch.__version__}")
        print(f"{'tool':9} {'load':>14} {'TCVC_THREADS':>12} {'seconds':>8} {'loadavg':>8}")
        k = 0
        for load in ("none", f"{args.busy} busy"):
            spinners = busy(args.busy) if load != "none" else []
            try:
                time.sleep(1 if spinners else 0)
                for tool, cmd in tools.items():
                    for threads in args.threads:
                        env = {key: v for key, v in os.environ.items() if key not in ("OMP_NUM_THREADS",
                                                                                       "TCVC_THREADS")}
                        if threads != "auto":
                            env["TCVC_THREADS"] = threads
                        k += 1
                        seconds = timed(cmd(k), env)
                        print(f"{tool:9} {load:>14} {threads:>12} {seconds:8.1f} {os.getloadavg()[0]:8.2f}",
                              flush=True)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100, help="frames test.py colours")
    p.add_argument("--steps", type=int, default=20, help="train.py steps")
    p.add_argument("--busy", type=int, default=1, help="spinning processes for the loaded rows")
    p.add_argument("--threads", nargs="+", default=["auto", "2"], help="TCVC_THREADS values to compare")
    return p


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
