"""What the region matcher learns on its own, with no generator: the keyframe matched onto every
frame of held-out shots, against the keyframe warped along the same flow.

Trains ``matcher.RegionMatch`` (the ``--correspondence match`` module) alone, by its
cross-entropy (``losses.match_loss``), on pairs of the training shots (frame t and a keyframe of
the same shot at any distance, as train.py draws them, and the previous frame), in each variant:
- ``full``: overlap prior + pair MLP + learned embeddings (what train.py trains);
- ``no_embed``: the embeddings' weight held at 0 (pair features only);
- ``self_ref``: ``full``, with half the keyframes an augmented self-reference (frame t itself
  rotated, scaled and shifted: train.py's ``--self_reference_prob 0.5``);
and scores, on the evaluation shots from their true first frame (frames 1 to N-1, as the study):
- ``warp_keyframe``: the keyframe warped along the line-art DIS flow (no model);
- ``vote``: the untrained matcher, i.e. the flow's own region vote (no model);
- each trained variant.
Figures: PSNR, PSNR on changed pixels, changed regions right (``metrics.score_frames``).

    python benchmarks/match_study.py --train_data study/data/train --eval_data study/data/eval \\
        --steps 300 --out match_study.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import correspond  # noqa: E402
import dataset as data_lib  # noqa: E402
import losses  # noqa: E402
import matcher  # noqa: E402
import metrics as metrics_lib  # noqa: E402
import utils  # noqa: E402
from reproduce import eval_shots, matched_outputs  # noqa: E402

VARIANTS = ("full", "no_embed", "self_ref")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_data", required=True, help="training frames: a folder of shot folders")
    p.add_argument("--eval_data", required=True, help="evaluation frames: a folder of shot folders")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3, help="train.py's --lr_match")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--out", help="write the results here as JSON")
    return p


def train_variant(variant: str, args) -> tuple[matcher.RegionMatch, float]:
    torch.manual_seed(args.seed)
    m = matcher.RegionMatch()
    params = [p for name, p in m.named_parameters() if not (variant == "no_embed" and name == "scale")]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.0, 0.999))  # train.py's betas
    ds = data_lib.TripletDataset(utils.find_shot_dirs(args.train_data), args.image_size, extended=True,
                                 keyframe_prob=1.0, seed=args.seed,
                                 self_reference_prob=0.5 if variant == "self_ref" else 0.0)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    start, step, epoch = time.time(), 0, 0
    while step < args.steps:
        ds.set_epoch(epoch)
        epoch += 1
        for b in loader:
            sources = [correspond.Source(**b["prev"]), correspond.Source(**b["keyframe"])]
            matches = [x for s in sources for x in (m(s, b["line"]).match or [])]
            if not matches:
                continue
            loss = losses.match_loss(matches, b["target"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0:
                print(f"  {variant} step {step}: match loss {loss.item():.4f}", flush=True)
            if step >= args.steps:
                break
    return m, (time.time() - start) / 60


def held_out(eval_data, image_size: int) -> tuple[dict, dict, dict]:
    """The evaluation shots at ``image_size``: ({shot: true frames}, {shot: their Canny line art},
    {shot: the true first frame for every frame, what copying gives})."""
    truths = eval_shots(Path(eval_data), image_size)
    lines = {shot: [data_lib.make_line_art(f, "canny") for f in frames] for shot, frames in truths.items()}
    keys = {shot: [frames[0]] * len(frames) for shot, frames in truths.items()}
    return truths, lines, keys


def summary(outputs: dict, truths: dict, lines: dict, keys: dict) -> dict:
    """PSNR, changed-pixel PSNR, changed regions right (%) overall, and PSNR per shot."""
    r = metrics_lib.score_frames(outputs, truths, keyframes=keys, lines=lines)
    o = r["overall"]
    return {"psnr": round(o["psnr"], 2), "changed_psnr": round(o["changed_psnr"], 2),
            "changed_regions": round(100 * o["changed_regions"], 1),
            "shots": {s: round(v["psnr"], 2) for s, v in r["shots"].items()}}


def print_table(results: dict) -> None:
    width = max(14, *map(len, results))
    print(f"{'setting':<{width}} {'PSNR':>6} {'changed':>8} {'regions %':>9}  per shot")
    for name, r in results.items():
        print(f"{name:<{width}} {r['psnr']:>6.2f} {r['changed_psnr']:>8.2f} {r['changed_regions']:>9.1f}  {r['shots']}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    truths, lines, keys = held_out(args.eval_data, args.image_size)

    def score(outputs):
        return summary(outputs, truths, lines, keys)

    torch.manual_seed(args.seed)
    results = {"warp_keyframe": score(matched_outputs(correspond.FlowWarp(), truths, lines)),
               "vote": score(matched_outputs(matcher.RegionMatch(), truths, lines))}
    for variant in args.variants:
        module, minutes = train_variant(variant, args)
        results[variant] = score(matched_outputs(module, truths, lines)) | {"train_minutes": round(minutes, 1)}
        print(variant, results[variant], flush=True)
    print_table(results)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
