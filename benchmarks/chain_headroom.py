"""What choosing among a model's own candidate colourings could win at best: oracles on its chain.

A keyframe model with the copy path colours frame t as a per-pixel blend of its candidates: its
generated colour, and the previous output and the keyframe, each aligned onto frame t by its
correspondence (for ``select``, each of them aligned three ways: unmoved, warped and matched,
``selector.WAYS``). This colours the evaluation shots from their true first frames, as the study's
``tcvc_keyframe`` does (one view), and at every frame scores, next to the model's output:
- every candidate on its own (``generated``, ``prev``, ``key``; ``prev_<way>``, ``key_<way>``);
- ``sources_mean``: the mean of the aligned previous output and keyframe (what a fresh model
  gives, ``models.COPY_BIAS``);
- ``oracle_region_sources``: each line-art region (``regions.segment``) given whichever of the two
  aligned sources is nearer the truth there: the best a blend of the two sources chosen per region
  could do;
- ``oracle_region_all`` / ``oracle_pixel_all``: each region / each pixel given whichever candidate
  is nearest the truth there (line pixels keep the output in the region oracles);
- ``truth_in_regions`` / ``truth_on_lines``: the output with the truth pasted on every pixel inside a
  region / on every pixel outside them (the thickened lines, ``regions.segment``'s -1): what perfect
  region colours, and perfect lines, would each reach. If ``truth_in_regions`` is under a target, no
  method that colours regions, however it chooses, meets it: the rest is on the lines.
The oracles read the truth, so they are ceilings, not methods; and they are scored open-loop,
along the model's own chain (the previous output is the model's, not the oracle's). If
``oracle_region_all`` is under a target, no way of choosing among these candidates region by region
meets it: what is missing is a better candidate, not a better choice.

    python benchmarks/chain_headroom.py --checkpoint study/runs/tcvc/generator.pt \
        --eval_data study/data/eval --image_size 128

Figures as the study's (``metrics.score_frames``, frames 1 to N-1): PSNR, PSNR on the changed
pixels, changed regions right. Last line: ``oracle_region_all_over_output_db=X``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import colorize  # noqa: E402
import dataset as data_lib  # noqa: E402
import regions  # noqa: E402
import selector  # noqa: E402
import utils  # noqa: E402
from match_study import held_out, print_table, summary  # noqa: E402
from utils import UserError  # noqa: E402

SOURCES = ("prev", "key")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a keyframe model with the copy path (the study's tcvc)")
    p.add_argument("--eval_data", required=True, help="evaluation frames: a folder of shot folders")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the results here as JSON")
    return p


def oracle(candidates: list[np.ndarray], truth: np.ndarray, labels: np.ndarray | None, base: np.ndarray) -> np.ndarray:
    """Each region of ``labels`` (each pixel with ``labels`` None) given the candidate (uint8
    (H, W, 3) each) with the least squared error against ``truth`` there (the first on a tie);
    pixels outside every region (label -1) keep ``base``."""
    stack = np.stack(candidates).astype(np.float64)                               # (C, H, W, 3)
    error = ((stack - truth.astype(np.float64)) ** 2).sum(-1)                       # (C, H, W)
    if labels is None:
        return np.take_along_axis(stack, error.argmin(0)[None, ..., None], 0)[0].astype(np.uint8)
    out = base.copy()
    inside = labels >= 0
    if not inside.any():
        return out
    n = int(labels.max()) + 1
    per_region = np.stack([np.bincount(labels[inside], weights=e[inside], minlength=n) for e in error])  # (C, n)
    choice = per_region.argmin(0)[labels[inside]]                                   # a candidate per pixel
    out[inside] = stack[choice, np.nonzero(inside)[0], np.nonzero(inside)[1]].astype(np.uint8)
    return out


@torch.no_grad()
def candidates_of(colorizer: colorize.Colorizer, chain: colorize.Chain, frame: colorize.Frame
                  ) -> tuple[torch.Tensor, dict]:
    """The model's output for the chain's next frame and its candidates by name; the chain moves
    on to that frame, as test.py's does."""
    line, art = frame.line, colorizer.art(frame)
    sources = chain.sources(line, art=art)
    out = colorizer.G(sources)
    named = {"generated": out.candidates[:, 0], "prev": out.candidates[:, 1], "key": out.candidates[:, 2]}
    ways = getattr(colorizer.G.correspond, "ways", None)
    if ways is not None:  # select: each source aligned each way
        for name, source, resample in zip(SOURCES, (sources.prev, sources.keyframe),
                                          ("bilinear", colorizer.keyframe_resample)):  # as the model aligns them
            colours = ways(source, sources.line, resample)[0]
            named |= {f"{name}_{way}": colours[:, k] for k, way in enumerate(selector.WAYS)}
    colour = out.colour.clamp(0, 1)
    chain.prev = colorize.ChainSource(colour, line, art)
    return colour, named


def headroom(colorizer: colorize.Colorizer, truths: dict, lines: dict) -> dict:
    """{setting: {shot: frames}}: frame 0 the true first frame, then each setting's frames."""
    outputs: dict = {}
    for shot, frames in truths.items():
        per = {}
        chain = colorizer.new_chain()
        chain.start(colorizer.source(frames[0], colorize.Frame(shot, "0", lines[shot][0], frames[0])))
        for t in range(1, len(frames)):
            colour, named = candidates_of(colorizer, chain, colorize.Frame(shot, str(t), lines[shot][t], frames[t]))
            out = data_lib.to_uint8(colour[0])  # as test.py writes a frame
            cands = {name: data_lib.to_uint8(c[0]) for name, c in named.items()}
            mean = data_lib.to_uint8((named["prev"][0].float() + named["key"][0].float()) / 2)
            labels = regions.segment(lines[shot][t])
            on_lines = (labels < 0)[..., None]
            made = {"output": out} | cands | {
                "sources_mean": mean,
                "oracle_region_sources": oracle([cands["prev"], cands["key"]], frames[t], labels, out),
                "oracle_region_all": oracle(list(cands.values()), frames[t], labels, out),
                "oracle_pixel_all": oracle(list(cands.values()), frames[t], None, out),
                "truth_in_regions": np.where(on_lines, out, frames[t]),
                "truth_on_lines": np.where(on_lines, frames[t], out)}
            for name, image in made.items():
                per.setdefault(name, [frames[0]]).append(image)
        for name, shot_frames in per.items():
            outputs.setdefault(name, {})[shot] = shot_frames
    return outputs


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    colorizer = colorize.Colorizer.from_checkpoint(args.checkpoint, device=args.device, image_size=args.image_size)
    cfg = colorizer.cfg
    if not (cfg.copy_path and cfg.keyframe_input):
        raise UserError(f"{args.checkpoint} has no copy path with a keyframe input: it blends no candidates")
    truths, lines, keys = held_out(args.eval_data, args.image_size)
    results = {name: summary(outputs, truths, lines, keys)
               for name, outputs in headroom(colorizer, truths, lines).items()}
    print(f"{args.image_size}x{args.image_size}, frames 1 to N-1 from the true first frame, one view, "
          f"correspondence {cfg.correspondence}")
    print_table(results)
    print(f"oracle_region_all_over_output_db={results['oracle_region_all']['psnr'] - results['output']['psnr']:.2f}")
    if args.out:
        utils.atomic_write_bytes(args.out, json.dumps({"args": vars(args), "results": results}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_cli(main, sys.argv[1:]))
