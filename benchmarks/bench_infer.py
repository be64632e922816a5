"""test.py end to end against the bare generator, and its memory on long inputs.

    python benchmarks/bench_infer.py                 # default UNet, 640x480 shot, CPU
    python benchmarks/bench_infer.py --frames 60 --device cuda --frame_size 1920x1080 --full_res

1. Overhead: test.py on a PNG shot of ``--frame_size`` (decode, line art, optical flow and
   network, PNG writing; metrics off; ``--full_res`` as test.py's) against the bare recurrent
   chain (``colorize.Chain``: optical flow and generator) on the same frames, already prepared.
   ``pipeline_overhead`` = end-to-end time / chain time - 1. Every end-to-end time is the least
   of ``--repeats`` runs, the variants below taken in turn with it.
2. The region step: test.py ``--regions`` against plain test.py on the same shot
   (``regions_overhead`` = per-frame time with it / without - 1).
   The keyframe's bicubic resampling (the default) against ``--keyframe_resample bilinear``
   (``keyframe_resample_overhead``, the same way); the flow computed at twice the resolution (the
   default) against ``--flow_scale 1`` (``flow_scale_overhead``).
3. Memory: peak resident memory of test.py on a 1000-frame against a 100-frame 640x480 video
   (a small generator, so that the run takes seconds: the question is whether memory grows
   with the length of the input, which the network's size does not change).
The weights are random (speed and memory do not depend on them). The shot's frames come from
``../shared/data/clips/lvcd_sample1.mp4`` when present, else from generated shapes.
Last line: ``pipeline_overhead=X``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import colorize  # noqa: E402
import correspond  # noqa: E402
import dataset as data_lib  # noqa: E402
import FrameExtraction  # noqa: E402
import models  # noqa: E402
import utils  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "clips" / "lvcd_sample1.mp4"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=30, help="frames of the timed 640x480 shot")
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--frame_size", default="640x480", help="WIDTHxHEIGHT of the shot's frames")
    p.add_argument("--full_res", action="store_true", help="test.py --full_res")
    p.add_argument("--skip_memory", action="store_true")
    p.add_argument("--repeats", type=int, default=3,
                   help="end-to-end runs of each test.py variant, taken in turn; the least time of each counts")
    return p


def source_frames(n: int, width=640, height=480):
    """n frames of 640x480: the real clip (looped) when present, else moving shapes."""
    if CLIP.is_file():
        clip = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                for f in FrameExtraction.read_video(CLIP)]
        for i in range(n):
            yield clip[i % len(clip)]
        return
    for i in range(n):
        frame = np.full((height, width, 3), (40 + i) % 255, np.uint8)
        cv2.circle(frame, (100 + 5 * i, 240), 80, (200, 90, 30), -1)
        cv2.rectangle(frame, (400, 100 + 3 * i), (560, 300), (20, 160, 220), 3)
        yield frame


def export(path: Path, cfg: models.ModelConfig, image_size: int) -> None:
    torch.manual_seed(0)
    torch.save(models.generator_export(models.build_generator(cfg), cfg, image_size, "canny"), path)


def bare_forward_seconds(ckpt: Path, shot: Path, image_size: int, device) -> float:
    G, cfg, _ = models.load_generator(ckpt, device)
    small = [utils.resize(utils.read_rgb(p), image_size) for p in utils.list_frames(shot)]
    lines = [data_lib.make_line_art(f, "canny") for f in small]
    arts = correspond.flow_arts(lines, "canny", cfg.flow_scale, small)
    autocast = utils.autocast_context(device, "bf16")
    chain = colorize.Chain(G, cfg, device, "canny", autocast)
    chain.start(None)
    chain.step(lines[0], arts[0])  # warm-up
    chain.start(None)
    start = time.perf_counter()
    for line, art in zip(lines, arts):
        chain.step(line, art)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def pipeline_seconds(ckpt: Path, shot: Path, out: Path, device_name: str, extra=()) -> float:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "test.py"), "--checkpoint", str(ckpt), "--input", str(shot),
                          "--output", str(out), "--device", device_name, "--no_metrics", *extra],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr)
    return time.perf_counter() - start


def interleaved_seconds(ckpt: Path, shot: Path, tmp: Path, device_name: str, variants: dict, repeats: int) -> dict:
    """{variant: the least of ``repeats`` end-to-end times of test.py with its extra flags}, the
    variants run in turn (a, b, c, a, b, c, ...), so that a slow spell of a shared machine falls on
    all of them alike, and the least time is the one least disturbed."""
    times = {name: [] for name in variants}
    for k in range(repeats):
        for name, extra in variants.items():
            times[name].append(pipeline_seconds(ckpt, shot, tmp / f"out_{name}_{k}", device_name, extra))
    return {name: min(values) for name, values in times.items()}


def startup_seconds(ckpt: Path, tmp: Path, device_name: str, size) -> float:
    """test.py on a one-frame shot: the process start, imports and model load to subtract."""
    one = tmp / "one"
    utils.write_image(one / "frame_0.png", next(source_frames(1, *size)))
    return pipeline_seconds(ckpt, one, tmp / "one_out", device_name)


def peak_rss_mib(cmd, log: Path) -> float:
    """Peak resident memory of one child process (its own rusage, from wait4)."""
    with open(log, "wb") as err:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(log.read_text()[-2000:])
    return usage.ru_maxrss / 1024


def write_video(path: Path, n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 24, (640, 480))
    for frame in source_frames(n):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def memory_ratio(tmp: Path) -> tuple[float, float]:
    small = tmp / "small.pt"
    export(small, models.ModelConfig(ngf=8), 64)
    peaks = []
    for n in (100, 1000):
        write_video(tmp / f"v{n}.avi", n)
        peaks.append(peak_rss_mib([sys.executable, str(ROOT / "test.py"), "--checkpoint", str(small),
                                   "--input", str(tmp / f"v{n}.avi"), "--output", str(tmp / f"m{n}"),
                                   "--device", "cpu"], tmp / f"m{n}.log"))
    return peaks[0], peaks[1]


def main(args) -> int:
    device = utils.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt = tmp / "G.pt"
        export(ckpt, models.ModelConfig(), args.image_size)
        size = tuple(int(v) for v in args.frame_size.lower().split("x"))
        shot = tmp / "shot"
        for i, frame in enumerate(source_frames(args.frames, *size)):
            utils.write_image(shot / f"frame_{i:04d}.png", frame)
        forward = bare_forward_seconds(ckpt, shot, args.image_size, device)
        startup = startup_seconds(ckpt, tmp, args.device, size)
        full = ["--full_res"] if args.full_res else []
        timed = interleaved_seconds(ckpt, shot, tmp, args.device,
                                    {"plain": full, "regions": ["--regions"] + full,
                                     "bilinear": ["--keyframe_resample", "bilinear"] + full,
                                     "flow_scale_1": ["--flow_scale", "1"] + full}, args.repeats)
        total = timed["plain"]
        pipeline = total - startup + forward / args.frames  # the start-up run held one frame
        if pipeline < 0.1 * total:  # two noisy wall times of about the same size: no figure in their difference
            print(f"test.py end to end: {total:.2f} s, start-up alone {startup:.2f} s: the frames took too little of "
                  f"it to be timed apart (give more --frames)")
            print("test_py_fps=nan")
            return 0
        overhead = pipeline / forward - 1
        print(f"device {device}; {args.frames} frames of {size[0]}x{size[1]} -> {args.image_size}^2"
              f"{', --full_res' if args.full_res else ''}, default UNet, torch threads {torch.get_num_threads()}")
        print(f"bare recurrent chain (flow + generator): {forward:.2f} s ({args.frames / forward:.2f} fps)")
        print(f"test.py end to end:     {total:.2f} s, of which {startup:.2f} s start-up (imports, model "
              f"load, one frame) -> {pipeline:.2f} s for the frames ({args.frames / pipeline:.2f} fps)")
        print(f"test_py_fps={args.frames / pipeline:.2f}")
        with_regions = timed["regions"]
        regions_cost = (with_regions - startup + forward / args.frames) / pipeline - 1
        print(f"test.py --regions: {with_regions:.2f} s end to end; the region step adds {100 * regions_cost:.1f}% "
              f"per frame (target <= 15%)")
        print(f"regions_overhead={regions_cost:.3f}")
        bilinear = timed["bilinear"]
        resample_cost = pipeline / (bilinear - startup + forward / args.frames) - 1
        print(f"test.py --keyframe_resample bilinear: {bilinear:.2f} s end to end; the default bicubic keyframe "
              f"warp adds {100 * resample_cost:.1f}% per frame")
        print(f"keyframe_resample_overhead={resample_cost:.3f}")
        plain_flow = timed["flow_scale_1"]
        scale_cost = pipeline / (plain_flow - startup + forward / args.frames) - 1
        print(f"test.py --flow_scale 1: {plain_flow:.2f} s end to end; the default flow at twice the resolution "
              f"adds {100 * scale_cost:.1f}% per frame")
        print(f"flow_scale_overhead={scale_cost:.3f}")
        if not args.skip_memory:
            m100, m1000 = memory_ratio(tmp)
            print(f"peak memory: 100 frames {m100:.0f} MiB, 1000 frames {m1000:.0f} MiB, "
                  f"ratio {m1000 / m100:.3f} (target <= 1.1)")
        print(f"pipeline_overhead={overhead:.3f}")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
