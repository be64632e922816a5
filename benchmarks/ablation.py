"""Ablation of what makes colour hold over a shot: each change switched off in turn, same budget.

    python benchmarks/ablation.py --train_clips A.mp4 B.mp4 --eval_clips C.mp4 --out study/ --steps 700

Trains, with the data, seed and step budget of ``benchmarks/reproduce.py`` (and in the same
``--out`` folder, so the study's full model is reused rather than trained again):
- ``full``: the default model (the study's ``tcvc``);
- ``no_copy_path``: ``--no_copy_path``: the output is generated colour only;
- ``no_keyframe_input``: ``--no_keyframe_input``, the keyframe only starts the chain;
- ``no_rollout``: ``--rollout_prob 0``, never trained on its own outputs;
- ``rollout_grad``: the rollout with gradient through the own output (a 2-frame unroll)
  instead of detached;
- ``no_warp``: ``--correspondence none``, previous frame and keyframe are not moved by optical flow.
Each is scored like the study's ``tcvc_keyframe`` and ``tcvc`` settings, on frames 1 to N-1 of
every evaluation shot, next to ``copy_keyframe``. Writes ``OUT/ablation.json`` and
``OUT/ablation.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import reproduce
from reproduce import utils

VARIANTS = {"full": [], "no_copy_path": ["--no_copy_path"], "no_keyframe_input": ["--no_keyframe_input"],
            "no_rollout": ["--rollout_prob", "0"], "rollout_grad": ["--rollout_grad"],
            "no_warp": ["--correspondence", "none"]}
RUN_NAME = {"full": "tcvc"}  # the study's own full model


def build_parser() -> argparse.ArgumentParser:
    p = reproduce.build_parser()
    p.description = __doc__
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    return p


def main(args) -> int:
    reproduce.check_disjoint(args.train_clips, args.eval_clips)
    out = Path(args.out)
    t0 = time.time()
    train_root = reproduce.prepare_clips(args.train_clips, out / "data" / "train", args.max_size)
    eval_root = reproduce.prepare_clips(args.eval_clips, out / "data" / "eval", args.max_size)
    results = {}
    for variant in args.variants:
        name = RUN_NAME.get(variant, variant)
        ckpt = reproduce.train_model(name, reproduce.MODELS["tcvc"] + VARIANTS[variant], train_root, out, args)
        settings = {f"{variant}/keyframe": (variant, ["--first_keyframe_dir", "{keyframes}"]),
                    f"{variant}/no_keyframe": (variant, [])}
        results |= reproduce.evaluate({variant: ckpt}, eval_root, out / "ablation", args,
                                      settings=list(settings), model_settings=settings)
    results |= reproduce.evaluate({}, eval_root, out / "ablation", args, settings=["copy_keyframe"])
    names = [RUN_NAME.get(v, v) for v in args.variants]
    meta = {"command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
            "machine": reproduce.meta_machine(), "minutes": round((time.time() - t0) / 60, 1),
            "training": reproduce.training_note(out, names)}
    reproduce.write_report(out, results, meta, name="ablation")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
