"""Learning curve of a study's model: each of its step checkpoints scored as the study scores.

    python benchmarks/learning_curve.py --out study/ [--run tcvc] [--settings tcvc_keyframe tcvc_2keys] [--views 4]

Does the model get better with more steps? A study scores only the model it ends with. Train
the study's model keeping checkpoints along the way (``benchmarks/reproduce.py ... -- --save_every
25 --keep_last 20``); this colours the study's evaluation shots (``OUT/data/eval``) from every
``OUT/runs/<run>/checkpoints/step_*.pt`` as the study's settings do, scores them on the same
frames, and scores next to them the answers that need no model (``--no_model``: by default
``warp_keyframe``, ``warp_chain``, ``warp_blend`` and ``warp_match``). For the ``match`` correspondence the first
``--match_warmup`` steps train the matcher alone, so the checkpoint at the end of the warm-up is the
trained matcher with a generator that has not learned yet.

Writes ``OUT/curve.json`` and ``OUT/curve.md`` (rows ``<setting>@<step>``; per-frame PSNR in the
JSON) and the coloured frames under ``OUT/curve/`` (``step_<N>/`` a checkpoint), a folder of its
own. It trains nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import reproduce
from reproduce import UserError, utils

import runs  # noqa: E402  (the repository root is on sys.path once reproduce is imported)

CHECKPOINT_SETTINGS = [s for s, (model, _) in reproduce.MODEL_SETTINGS.items() if model == "tcvc"]
NO_MODEL = ["warp_keyframe", "warp_chain", "warp_blend", "warp_match"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the study's folder (benchmarks/reproduce.py --out)")
    p.add_argument("--run", default="tcvc", help="the run under OUT/runs whose checkpoints are scored")
    p.add_argument("--settings", nargs="+", choices=CHECKPOINT_SETTINGS, default=["tcvc_keyframe"])
    p.add_argument("--no_model", nargs="*", choices=[s for s in reproduce.SETTINGS
                                                     if s not in reproduce.MODEL_SETTINGS], default=NO_MODEL)
    p.add_argument("--steps", nargs="+", type=int, help="score only the checkpoints of these steps (default: all)")
    p.add_argument("--image_size", type=int, default=128, help="the study's --image_size")
    reproduce.add_views_argument(p)
    p.add_argument("--device", default="cpu")
    return p


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """[(step, checkpoint)] of a run, by step; a ``UserError`` when it holds none."""
    folder = runs.RunFolder(run_dir, {}, enabled=False)
    found = [(step, folder.checkpoints / f"step_{step:08d}.pt") for step in folder.steps()]
    if not found:
        raise UserError(f"{folder.checkpoints} holds no step checkpoints: train the study's model with "
                        "'-- --save_every N --keep_last K' to keep some")
    return found


def main(args) -> int:
    out = Path(args.out)
    eval_root = out / "data" / "eval"
    if not eval_root.is_dir():
        raise UserError(f"{eval_root} does not exist: --out must be a study folder (benchmarks/reproduce.py --out)")
    t0 = time.time()
    checkpoints = step_checkpoints(out / "runs" / args.run)
    if args.steps:
        missing = sorted(set(args.steps) - {step for step, _ in checkpoints})
        if missing:
            raise UserError(f"{out / 'runs' / args.run / 'checkpoints'} has no checkpoint of step "
                            f"{', '.join(map(str, missing))} (it has {', '.join(str(s) for s, _ in checkpoints)})")
        checkpoints = [(step, path) for step, path in checkpoints if step in args.steps]
    curve = out / "curve"
    # the no-model rows on the run's own flow and keyframe resampling (reproduce.models_setting reads them)
    latest = {"tcvc": checkpoints[-1][1]} if checkpoints else {}
    results = reproduce.evaluate(latest, eval_root, curve, args, settings=args.no_model) if args.no_model else {}
    for step, path in checkpoints:  # each step in a folder of its own, under the study's setting names
        scored = reproduce.evaluate({"tcvc": path}, eval_root, curve / f"step_{step}", args, settings=args.settings)
        results |= {f"{setting}@{step}": result for setting, result in scored.items()}
    meta = {"command": "python benchmarks/learning_curve.py " + " ".join(sys.argv[1:]),
            "machine": reproduce.meta_machine(), "minutes": round((time.time() - t0) / 60, 1),
            "training": reproduce.training_note(out, [args.run]),
            "checkpoints": {step: str(path) for step, path in checkpoints}}
    reproduce.write_report(out, results, meta, name="curve")
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_cli(main, build_parser().parse_args()))
