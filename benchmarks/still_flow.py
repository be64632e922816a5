"""The line-art flow with held drawings kept still locally, against the flow as it is.

DIS smooths its flow over neighbouring patches, so where a character moves next to a still
background, part of its motion spills onto the background's still lines, and warping along that
flow moves and blurs lines that did not move. The still window W (``train.py --still_window``,
``ModelConfig.still_window``, ``correspond.line_flow(..., still_window=W)``) sets the flow to zero
where a W x W neighbourhood holds a line and is identical in both frames (``correspond.still_mask``),
as the whole-frame rule already does for identical line art.

This scores, for each ``--windows`` W (0: the flow as it is), the study's no-model warps
(``warp_keyframe``, ``warp_chain``) and, with ``--checkpoint``, the model's ``tcvc_keyframe``, all on
the same flow (``reproduce.py --still_window W``: test.py is given W whatever the model was
trained on), as the study requires.

``--train_like RUN/config.json`` first trains a model as that run was trained (its config.json's
options, its data, its seed), but with ``train.py --still_window`` ``--train_window`` (the flow
cache keyed apart), into ``OUT/run``, and scores that model.

    python benchmarks/still_flow.py --eval_data study/data/eval --checkpoint study/runs/tcvc/generator.pt \\
        --out still_flow --windows 0 9
    python benchmarks/still_flow.py --eval_data study/data/eval --train_like study/runs/tcvc/config.json \\
        --train_window 9 --out still_flow_trained --windows 9 0

Prints one line per window and setting; ``--out`` gets each window's outputs and ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import reproduce  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from utils import UserError  # noqa: E402

WARPS = ("warp_keyframe", "warp_chain")
KEYS = ("psnr", "changed_psnr", "changed_regions", "psnr_last10")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval_data", required=True, help="evaluation frames: a folder of shot folders")
    p.add_argument("--checkpoint", help="a keyframe model (the study's tcvc) to score as well")
    p.add_argument("--train_like", help="a run's config.json: train a model as it was, on the windowed flow, and score it")
    p.add_argument("--train_window", type=int, default=9, help="the window --train_like trains with")
    p.add_argument("--out", required=True, help="a new folder for the outputs and results.json")
    p.add_argument("--windows", type=int, nargs="+", default=[0, 9], help="still windows, 0 for none")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    reproduce.add_views_argument(p)
    return p


def train_like(config: Path, run_dir: Path, window: int) -> Path:
    """A generator trained with ``config``'s options (a run's config.json) into ``run_dir``, with
    ``--still_window window``; its path."""
    try:
        options = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {config} as a run's config.json: {err}") from None
    args = train.build_parser().parse_args([])
    options.pop("model", None)  # what train.py records of the model it built, not an option
    unknown = sorted(set(options) - set(vars(args)))
    if unknown or not options.get("data"):
        raise UserError(f"{config} is not a train.py run's config.json (no data folder, or options "
                        f"train.py does not know: {', '.join(unknown) or 'none'})")
    vars(args).update(options)
    args.run_dir, args.resume, args.still_window = str(run_dir), None, window
    code = train.main(args)
    if code:
        raise UserError(f"training into {run_dir} failed (exit code {code})")
    return run_dir / "generator.pt"


def score(args, window: int) -> dict:
    """{setting: overall figures and per-shot PSNR} with every line-art flow given ``window``."""
    settings = WARPS + (("tcvc_keyframe",) if args.checkpoint else ())
    checkpoints = {"tcvc": Path(args.checkpoint)} if args.checkpoint else {}
    args.still_window = window  # the warps' flow and test.py --still_window: one flow for every row
    results = reproduce.evaluate(checkpoints, Path(args.eval_data), Path(args.out) / f"window_{window}", args,
                                 settings=settings)
    return {s: {k: r["overall"][k] for k in KEYS} | {"shots": {sh: v["psnr"] for sh, v in r["shots"].items()}}
            for s, r in results.items()}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if any(w < 0 for w in args.windows + [args.train_window]):
        raise UserError(f"windows must be >= 0, got {args.windows} and --train_window {args.train_window}")
    if args.checkpoint and args.train_like:
        raise UserError("give --checkpoint or --train_like, not both")
    if Path(args.out).exists():
        raise UserError(f"{args.out} already exists: give a new folder (nothing was written)")
    if args.train_like:
        args.checkpoint = str(train_like(Path(args.train_like), Path(args.out) / "run", args.train_window))
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
