"""The line-art flow with held drawings kept still locally, against the flow as it is.

DIS smooths its flow over neighbouring patches, so where a character moves next to a still
background, part of its motion spills onto the background's still lines, and warping along that
flow moves and blurs lines that did not move. ``correspond.line_flow(..., still_window=W)`` sets the
flow to zero where a W x W neighbourhood holds a line and is identical in both frames
(``correspond.still_mask``), as the whole-frame rule already does for identical line art.

This scores, for each ``--windows`` W (0: the flow as it is), the study's no-model warps
(``warp_keyframe``, ``warp_chain``) and, with ``--checkpoint``, the model's ``tcvc_keyframe``, all on
the same flow: every use of ``correspond.line_flow`` in this process is given W, so the model's
flows and the warp rows' are the same, as the study requires. The model is used as it was trained
(on the flow without the window); none is trained here.

    python benchmarks/still_flow.py --eval_data study/data/eval --checkpoint study/runs/tcvc/generator.pt \\
        --out still_flow --windows 0 9

Prints one line per window and setting; ``--out`` gets each window's outputs and ``results.json``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import correspond  # noqa: E402
import reproduce  # noqa: E402
import utils  # noqa: E402
from utils import UserError  # noqa: E402

WARPS = ("warp_keyframe", "warp_chain")
KEYS = ("psnr", "changed_psnr", "changed_regions", "psnr_last10")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval_data", required=True, help="evaluation frames: a folder of shot folders")
    p.add_argument("--checkpoint", help="a keyframe model (the study's tcvc) to score as well")
    p.add_argument("--out", required=True, help="a new folder for the outputs and results.json")
    p.add_argument("--windows", type=int, nargs="+", default=[0, 9], help="still windows, 0 for none")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    reproduce.add_views_argument(p)
    return p


def score(args, window: int) -> dict:
    """{setting: overall figures and per-shot PSNR} with every line-art flow given ``window``."""
    settings = WARPS + (("tcvc_keyframe",) if args.checkpoint else ())
    checkpoints = {"tcvc": Path(args.checkpoint)} if args.checkpoint else {}
    flow = functools.partial(correspond.line_flow, still_window=window)
    with mock.patch.object(correspond, "line_flow", flow):
        results = reproduce.evaluate(checkpoints, Path(args.eval_data), Path(args.out) / f"window_{window}", args,
                                     settings=settings)
    return {s: {k: r["overall"][k] for k in KEYS} | {"shots": {sh: v["psnr"] for sh, v in r["shots"].items()}}
            for s, r in results.items()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if any(w < 0 for w in args.windows):
        raise UserError(f"--windows must be >= 0, got {args.windows}")
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists: give a new folder (nothing was written)")
    results = {window: score(args, window) for window in args.windows}
    for window, rows in results.items():
        for setting, r in rows.items():
            shots = ", ".join(f"{sh} {v:.2f}" for sh, v in r["shots"].items())
            print(f"window {window:>2} {setting:<14} PSNR {r['psnr']:.2f}  changed {r['changed_psnr']:.2f}  "
                  f"last 10 {r['psnr_last10']:.2f}  ({shots})")
    utils.atomic_write_bytes(Path(args.out) / "results.json", json.dumps(results, indent=1).encode())
    return 0


if __name__ == "__main__":
    utils.run_cli(main, sys.argv[1:])
