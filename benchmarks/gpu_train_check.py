"""A short real training run on the GPU whose losses must fall (step 4 of gpu_check.sh).

    python benchmarks/gpu_train_check.py --out OUT --steps 300

Writes 4 shots of generated cartoon frames (flat-coloured shapes with black outlines moving
over a gradient, 640x360), trains the default model on them with bf16, the frame cache,
8 workers and ``--sync_debug`` (a host-device sync inside a training step raises), then
compares the mean L1 and total generator loss of the first and the last quarter of the logged
steps. Exit code 1 unless both fell. Last line: ``l1_first_quarter=A l1_last_quarter=B``.
``--device cpu --steps 4 --image_size 32`` checks the script itself on a CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402
import utils  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the run's log.jsonl is copied here")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="cuda")
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--workers", type=int, default=8)
    return p


def cartoon_frame(shot: int, k: int, width=640, height=360) -> np.ndarray:
    rng = np.random.default_rng(shot)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = np.linspace(60, 200, width, dtype=np.uint8)[None, :, None]
    frame[..., shot % 3] //= 2
    for j in range(6):
        colour = tuple(int(c) for c in rng.integers(30, 230, 3))
        centre = (int(60 + 90 * j + 4 * k) % width, int(80 + 40 * j + 2 * k * (j % 2)) % height)
        cv2.circle(frame, centre, 25 + 6 * j, colour, -1)
        cv2.circle(frame, centre, 25 + 6 * j, (0, 0, 0), 3)
    return frame


def main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_train_check_") as tmp:
        data = Path(tmp) / "frames"
        for shot in range(4):
            for k in range(50):
                utils.write_image(data / f"shot{shot}" / f"frame_{k:04d}.png", cartoon_frame(shot, k))
        argv = ["--data", str(data), "--run_dir", str(Path(tmp) / "run"), "--image_size", str(args.image_size),
                "--batch_size", str(args.batch_size), "--max_steps", str(args.steps), "--vgg_weights", "random",
                "--device", args.device, "--num_workers", str(args.workers), "--log_every",
                str(max(1, args.steps // 12)), "--val_fraction", "0.25", "--val_frames", "8",
                "--save_every", str(args.steps)]
        if args.device.startswith("cuda"):
            argv += ["--amp", "bf16", "--sync_debug"]
        start = time.time()
        if train.main(train.build_parser().parse_args(argv)) != 0:
            raise utils.UserError("the training run was interrupted")
        seconds = time.time() - start
        log = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
        (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    steps = [r for r in log if "l1" in r]
    quarter = max(1, len(steps) // 4)
    first = {k: float(np.mean([r[k] for r in steps[:quarter]])) for k in ("l1", "g_total")}
    last = {k: float(np.mean([r[k] for r in steps[-quarter:]])) for k in ("l1", "g_total")}
    rate = steps[-1]["img_per_s"]
    print(f"{args.steps} steps of batch {args.batch_size} at {args.image_size}^2 in {seconds:.0f} s "
          f"(last logged rate {rate:.1f} img/s, data loading included)")
    print(f"loss l1 {first['l1']:.4f} -> {last['l1']:.4f}; g_total {first['g_total']:.3f} -> {last['g_total']:.3f}")
    fell = last["l1"] < first["l1"] and last["g_total"] < first["g_total"]
    print(f"losses {'fell' if fell else 'DID NOT fall'}")
    print(f"l1_first_quarter={first['l1']:.4f} l1_last_quarter={last['l1']:.4f}")
    return 0 if fell else 1


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
