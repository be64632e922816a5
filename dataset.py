"""Training samples (line art of frame t, colour frame t, the previous frame of the chain and a
keyframe) read from folders of frames, and the one function that turns a colour frame into
line art.

Tensor layout and value range (the convention of the whole project)
-------------------------------------------------------------------
Every image tensor is float32, shape (C, H, W), values in [0, 1] (uint8 / 255):
- line art: 1 channel, black lines (0) on white (1);
- colour frames: RGB, 3 channels; a missing frame is black (all zeros);
- optical flow: 2 channels (dx, dy) in pixels, from frame t to the source frame.
A sample of ``TripletDataset`` is a dict; a source frame is a dict with the fields of
``correspond.Source`` ('colour', 'present', and with ``extended=True`` 'line', 'flow'):
    'line'      (1, H, W)  line art of frame t
    'target'    (3, H, W)  colour frame t (what the generator must produce)
    'prev'      source     the previous frame of the chain: frame t-1, or frame t+1 for a sample
                           whose chain runs backward in time (``reverse_prob``); its 'present'
                           is 0.0 where it is black (no previous frame)
    'index'     ()  int64  the sample's index in the dataset
and with ``extended=True`` (what the default U-Net trains on):
    'keyframe'  source     another frame of the same shot, coloured (``keyframe_prob``)
    'rollout'   ()         1.0 where training feeds frame t the generator's own output for the
                           previous frame, made from:
    'prev2'     source     the frame before the previous one (flow from the previous frame to it)
    'keyframe_flow2' (2, H, W) flow from the previous frame to the keyframe
    'prev3' ... 'prevK', 'keyframe_flow3' ... 'keyframe_flowK', 'rollout_start' ()
                           with ``rollout_frames`` K > 2 only: the frames further back (each with
                           the flow from the frame after it), the flows from the frame after each
                           to the keyframe, and the j of the frame the rollout starts from (its true
                           colour, or black where it is absent); frames beyond it are absent
    'prev_drift' (DRIFT_PARAMS,) with ``prev_drift_prob`` > 0 only: how ``apply_drift`` makes the
                           previous frame look like a chain's own output (on, strength, ...)
A DataLoader batch holds the same keys with a leading batch dimension B; ``correspond.Source
(**batch['prev'])`` is the generator's source by name (train.py's ``batch_sources``).
``TripletDataset(..., uint8=True)``, what train.py uses, keeps images as uint8 (C, H, W) in 0-255
and flows as float16 until ``to_device`` turns them into float32 on the training device: a
quarter of the bytes to pass between processes and to copy to a GPU.

Data on disk
------------
A root folder is searched recursively; every folder holding numbered frames (``frame7.png``,
``frame_0009.png``, ``ep01_000123.jpg``) is one shot, its frames ordered by number. The
previous frame of a frame is the one before it in that order, never from another folder.
The original layout ``ROOT/DATASET/Train`` + ``Test`` (or ``Val``) still works, see
``resolve_data_dirs``.

Line art (``make_line_art``, the same at training and at inference), computed on the frame
already resized to the network resolution:
- ``canny``: OpenCV Canny edges of the grey frame blurred with a Gaussian of sigma 1,
  inverted. Thresholds 25.5 / 51 on the L2 gradient are scikit-image's defaults (10 % / 20 %
  of the [0, 1] range) on the 0-255 scale, so it matches the original's
  ``skimage.feature.canny(rgb2gray(img), sigma=1)``: edge-pixel F1 0.988 (min 0.975) with a
  1-pixel tolerance, 0.93 pixel-exact, over 15 frames of the five shared clips at 256x256.
- ``grey``: the grey frame itself (what the original's last commit fed).
- ``given``: real line art (black lines on white) from a parallel folder,
  ``LINE_ROOT/<shot folder relative to the data root>/<same file name>`` (same stem with
  another image extension also accepted).

Example:
    >>> import dataset
    >>> from torch.utils.data import DataLoader
    >>> ds = dataset.TripletDataset.from_root("frames/Train", image_size=256)
    >>> batch = next(iter(DataLoader(ds, batch_size=4, shuffle=True)))
    >>> batch["line"].shape, batch["prev"]["colour"].shape, batch["prev"]["present"]
    (torch.Size([4, 1, 256, 256]), torch.Size([4, 3, 256, 256]), tensor([0., 1., 1., 0.]))
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

import correspond
import framecache
import utils
from utils import UserError

LINE_ART_MODES = ("canny", "grey", "given")
CANNY_SIGMA = 1.0  # the original's skimage canny(sigma=1)
# skimage's default thresholds are 0.1 / 0.2 of the [0, 1] grey range, on sqrt(gx^2 + gy^2)
# of the same Sobel kernels OpenCV uses: x 255 on uint8 grey.
CANNY_LOW, CANNY_HIGH = 25.5, 51.0
# With the flow cache (``cached_flows``) a frame's keyframe is one of this many frames drawn once
# for it (as a sample would draw one), so that their flows are computed once into the cache too:
# 2 x 4 bytes a pixel of the load size per frame (the cached frame holds 3). Over a shot of n
# frames that is 2n of its n(n-1) pairs, each seen under every crop and flip.
CACHED_KEYFRAMES = 2
CACHED_KEYFRAME_SEED = 7211
LOAD_SCALE = 1.125  # pix2pix "resize and crop": resize to 288, random crop 256


# ----------------------------------------------------------------------------- folders
def _child_dir(folder: Path, names) -> Path | None:
    """The sub-folder of ``folder`` whose name is one of ``names`` (any case), in that order."""
    if not folder.is_dir():
        return None
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    return next((children[n] for n in names if n in children), None)


def resolve_data_dirs(data=None, val_data=None, root=None, dataset=None):
    """(train_dir, val_dir or None) from ``--data [--val_data]`` or the original's
    ``--root R --dataset D``: train = R/D/Train, val = R/D/Val, else R/D/Test (any case).

    Val is preferred to Test when both exist, so that Test stays unseen until test.py.
    """
    if data and (root or dataset):
        raise UserError("give either --data (and --val_data) or --root with --dataset, not both")
    if not data:
        if not (root and dataset):
            raise UserError("give the training frames with --data DIR, or --root R --dataset D "
                            "for the original R/D/Train layout")
        base = Path(root) / dataset
        train = _child_dir(base, ("train",))
        if train is None:
            raise UserError(f"no Train folder in {base} (expected {base / 'Train'})")
        return train, _child_dir(base, ("val", "test"))
    for folder in (data, val_data):
        if folder and not Path(folder).is_dir():
            raise UserError(f"{folder} is not a folder")
    return Path(data), (Path(val_data) if val_data else None)


def split_shots(shot_dirs, val_fraction: float, seed: int):
    """Split whole shots (never the frames of one shot) into (train, val), both kept in the
    input order. Val gets round(n * fraction) shots, at least 1 when fraction > 0, and
    training keeps at least one; with one shot or fraction 0, val is empty."""
    shot_dirs = list(shot_dirs)
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    n = len(shot_dirs)
    n_val = 0 if val_fraction == 0 or n < 2 else min(max(round(n * val_fraction), 1), n - 1)
    chosen = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [s for i, s in enumerate(shot_dirs) if i not in chosen]
    val = [s for i, s in enumerate(shot_dirs) if i in chosen]
    return train, val


def _frames_of(shot_dir) -> list[Path]:
    """Numbered frames of one shot; two frames with one number would make "previous"
    ambiguous (frame9.png and frame09.jpg), so that is an error, not a guess."""
    frames = utils.list_frames(shot_dir)
    if not frames:
        raise UserError(f"{shot_dir} holds no numbered frames")
    numbers = [utils.frame_number(p) for p in frames]
    for a, b, n_a, n_b in zip(frames, frames[1:], numbers, numbers[1:]):
        if n_a == n_b:
            raise UserError(f"{a} and {b.name} have the same frame number {n_a}: "
                            "keep one file per frame in a shot folder")
    return frames


# ----------------------------------------------------------------------------- given line art
def _line_dir(shot_dir, line_root, root) -> Path:
    shot_dir, root = Path(shot_dir).resolve(), Path(root).resolve()
    try:
        rel = shot_dir.relative_to(root)
    except ValueError:
        raise UserError(f"shot folder {shot_dir} is not inside the data root {root}") from None
    return Path(line_root) / rel


def _match_line_file(frame: Path, line_dir: Path, by_stem: dict) -> Path:
    """``line_dir/<frame name>``, else the same stem with another image extension."""
    if (line_dir / frame.name).is_file():
        return line_dir / frame.name
    if frame.stem in by_stem:
        return by_stem[frame.stem]
    raise UserError(f"no line art for {frame}: expected {line_dir / frame.name} "
                    "(same name, any image extension)")


def given_line_paths(frames, shot_dir, line_root, root) -> list[Path]:
    """The given line-art file of every frame of one shot; ``UserError`` naming the first
    missing one. Lists the folder once, so checking 60k frames at start-up is quick."""
    line_dir = _line_dir(shot_dir, line_root, root)
    if not line_dir.is_dir():
        raise UserError(f"no line-art folder for shot {shot_dir}: expected {line_dir}")
    names = sorted(f for f in os.listdir(line_dir) if utils.is_image(f))
    by_stem = {}
    for name in names:
        by_stem.setdefault(Path(name).stem, line_dir / name)
    return [_match_line_file(Path(f), line_dir, by_stem) for f in frames]


def given_line_path(frame_path, line_root, root) -> Path:
    """The given line-art file of one frame (see ``given_line_paths``)."""
    frame_path = Path(frame_path)
    exact = _line_dir(frame_path.parent, line_root, root) / frame_path.name
    if exact.is_file():  # the usual case, without listing a folder of 60k files per frame
        return exact
    return given_line_paths([frame_path], frame_path.parent, line_root, root)[0]


def read_given_line_art(frame_path, line_root, root) -> np.ndarray:
    """The given line art of one frame as uint8 grey (H, W), black lines on white."""
    return utils.read_grey(given_line_path(frame_path, line_root, root))


# ----------------------------------------------------------------------------- images
def canny_line_art(grey: np.ndarray) -> np.ndarray:
    """Canny edges of a uint8 grey image, black lines (0) on white (255)."""
    blurred = cv2.GaussianBlur(grey, (0, 0), CANNY_SIGMA)
    edges = cv2.Canny(blurred, CANNY_LOW, CANNY_HIGH, L2gradient=True)
    return cv2.bitwise_not(edges)


def make_line_art(rgb: np.ndarray, mode: str = "canny", given_grey=None) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 line art (H, W), black lines on white.

    The one line-art function of the project (training, validation and test.py).
    ``given``: ``given_grey`` (grey or RGB uint8) resized to the frame's size.
    """
    if mode == "given":
        if given_grey is None:
            raise UserError("line-art mode 'given' needs the line-art image of the frame")
        grey = given_grey if given_grey.ndim == 2 else cv2.cvtColor(given_grey, cv2.COLOR_RGB2GRAY)
        return utils.resize_to(grey, *rgb.shape[:2])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if mode == "grey":
        return grey
    if mode == "canny":
        return canny_line_art(grey)
    raise _unknown_mode(mode)


def _unknown_mode(mode) -> UserError:
    return UserError(f"unknown line-art mode '{mode}' (choose from {', '.join(LINE_ART_MODES)})")


def to_uint8_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> uint8 (C, H, W), values unchanged."""
    chw = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(chw.transpose(2, 0, 1)))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """The inverse of ``to_tensor``: float (C, H, W) in [0, 1] -> uint8 (H, W, 3), rounded;
    one-channel line art is repeated to RGB. NaN would become black and inf white, silently
    (a broken generator's frames would read as perfectly steady): non-finite values are a
    ``UserError``. The check is on the host copy, which the conversion makes anyway."""
    array = image.detach().float().expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
    if not np.isfinite(array).all():
        raise UserError("the generator produced non-finite values (nan or inf): its weights or its input are "
                        "broken; nothing was written")
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def to_device(batch, device):
    """A batch (a tensor, or a dict of them as the dataset gives, nested) on ``device``: uint8
    images become float32 in [0, 1] there; other tensors keep their type (float16 flows too)."""
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    batch = batch.to(device, non_blocking=True)
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> float32 (C, H, W) = image / 255, in [0, 1]."""
    if image.dtype != np.uint8:
        raise TypeError(f"to_tensor expects uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    chw = image.transpose(2, 0, 1)
    # NumPy, not torch: torch's multi-threaded cast is 100x slower on busy shared cores.
    out = np.empty(chw.shape, np.float32)
    np.divide(chw, np.float32(255.0), out=out)
    return torch.from_numpy(out)


def load_size_for(image_size: int) -> int:
    """Side of the resized frame that the training crop is taken from."""
    return round(image_size * LOAD_SCALE)


def crop_in_source(image: np.ndarray, load_size: int, top: int, left: int, size: int) -> np.ndarray:
    """The (size, size) crop at (top, left) of ``image`` resized to (load_size, load_size),
    made by resizing only the source region under the crop: the same picture as resize-then-
    crop up to sub-pixel rounding, a third cheaper (it was the second cost of a triple)."""
    h, w = image.shape[:2]
    sy, sx = h / load_size, w / load_size
    region = image[round(top * sy):round((top + size) * sy), round(left * sx):round((left + size) * sx)]
    return utils.resize_to(region, size, size)


# ----------------------------------------------------------------------------- drift
# How far ``apply_drift`` moves a previous frame at full strength: a smooth displacement of up to
# about this many pixels (at 128 px; scaled with the frame), a blur of this sigma, a tint of this
# much per channel. A chain's own outputs 15 frames after a still keyframe are 37-42 dB from the
# truth; these make 30-45 dB on flat cels.
DRIFT_SHIFT_PX = 1.5
DRIFT_BLUR_SIGMA = 1.0
DRIFT_TINT = 0.02
DRIFT_GRID = 3          # the displacement is bicubic between DRIFT_GRID x DRIFT_GRID random vectors
DRIFT_PARAMS = 2 + 2 * DRIFT_GRID * DRIFT_GRID + 3
# ``prev_chain_prob``: a chained previous frame comes from at most this many frames further back
# (uniformly 1 .. this, as far as the shot goes): the length of a shot a keyframe colours.
PREV_CHAIN_MAX = 64


def drift_params(rng: np.random.Generator, prob: float) -> np.ndarray:
    """(DRIFT_PARAMS,) float32 for ``apply_drift``: [on, strength in [0, 1), the displacement's
    grid (2 x DRIFT_GRID x DRIFT_GRID, standard normal), the tint (3, standard normal)]; every
    number is drawn whether or not it is on, so that the draws stay tied to the sample."""
    on = rng.random() < prob
    strength = rng.random()
    rest = rng.standard_normal(DRIFT_PARAMS - 2)
    return np.concatenate([[float(on), strength], rest]).astype(np.float32)


def apply_drift(colour: torch.Tensor, params: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """A previous frame (B, 3, H, W) in [0, 1] made to look like a colouring chain's own output
    where ``params`` (B, DRIFT_PARAMS) says so (and the frame is ``present``): moved by a smooth
    random displacement, blurred, tinted, each in proportion to the sample's strength.

    Why: in training the previous frame is the true one or the generator's output from the true
    frame before it, so it is never worse than the keyframe where both line arts agree, and the
    blend learns to trust it (94% against 6% after 667 steps in the README's study); a chain's
    previous frame has drifted for many frames, so on a still shot the keyframe is the better
    source. A previous frame that sometimes looks drifted teaches the blend to tell them apart,
    at no extra forward pass (GameNGen's noise augmentation of past frames, for the same
    exposure bias)."""
    b, _, h, w = colour.shape
    params = params.to(colour.device, torch.float32)
    strength = params[:, 1] * params[:, 0] * (present.reshape(-1) > 0).float()       # (B,)
    g = DRIFT_GRID
    grid = params[:, 2:2 + 2 * g * g].view(b, 2, g, g)
    shift = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)       # (B, 2, H, W) ~N(0, 1)
    shift = shift * (strength * DRIFT_SHIFT_PX * max(h, w) / 128.0).view(b, 1, 1, 1)  # pixels
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=colour.device),
                            torch.linspace(-1, 1, w, device=colour.device), indexing="ij")
    base = torch.stack([xs, ys], -1)[None]                                             # (1, H, W, 2)
    offset = torch.stack([shift[:, 0] * 2 / max(w - 1, 1), shift[:, 1] * 2 / max(h - 1, 1)], -1)
    moved = F.grid_sample(colour.float(), base + offset, mode="bilinear", padding_mode="border",
                          align_corners=True)
    sigma = (strength * DRIFT_BLUR_SIGMA).clamp(min=1e-3)                              # (B,)
    taps = torch.arange(-2, 3, device=colour.device, dtype=torch.float32)
    kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)           # (3B, 5)
    flat = moved.reshape(1, b * 3, h, w)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kernel.view(b * 3, 1, 1, 5), groups=b * 3)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), kernel.view(b * 3, 1, 5, 1), groups=b * 3)
    tint = params[:, -3:] * (strength * DRIFT_TINT)[:, None]                           # (B, 3)
    drifted = (flat.view(b, 3, h, w) + tint[:, :, None, None]).clamp(0, 1)
    return torch.where((strength > 0).view(b, 1, 1, 1), drifted.to(colour.dtype), colour)


# ----------------------------------------------------------------------------- dataset
class TripletDataset(Dataset):
    """All frames of the given shots as samples (line art t, colour t, previous frame), laid out
    as the module docstring says.

    train=True: resize to load_size_for(image_size), then the same random crop and
    horizontal flip on every image of a sample. train=False: plain resize to image_size.
    The previous frame is real with probability ``prev_prob`` (the original's 0.5), else
    black; a shot's first frame always gets black. Every random choice comes from
    ``np.random.default_rng([seed, epoch, index])``, so a sample depends only on those three
    numbers, not on DataLoader workers or order (call ``set_epoch`` before each epoch's
    iterator is made; persistent workers would keep the old epoch).

    ``extended=True`` (what the default U-Net trains on) adds, with the same crop:
    - the previous frame's line art, and what ``correspondence`` computes on the CPU between
      frame t and it (``correspond.Correspondence.pair_data``: the DIS flow for 'flow', with the
      model's ``still_window``, computed on the frames' ``correspond.flow_art`` at the model's
      ``flow_scale``; zeros for 'none');
    - a keyframe with probability ``keyframe_prob``: another frame of the same shot at a random
      distance of at most ``keyframe_max_distance``, or, with probability ``self_reference_prob``
      of those, frame t itself under a random rotation, scale and shift (an augmented
      self-reference: large motions whose every correspondence is known);
    - with probability ``rollout_prob`` a rollout (frame t has a previous frame): 'rollout' = 1,
      and the frame before the previous one ('prev2'), with the flows from the previous frame
      to it and to the keyframe. Training then feeds frame t the generator's own output for the
      previous frame, made from these. With ``rollout_frames`` K > 2 the rollout starts K frames
      back (or at the shot's end, whichever is nearer): the generator colours K - 1 frames in a
      row, each from its own output for the one before, as a chain does at inference;
    - with probability ``reverse_prob`` the chain runs backward in time: "previous" is frame
      t+1 (and t+2), as when colouring toward an earlier keyframe;
    - with probability ``prev_drift_prob`` a previous frame that training makes look drifted
      (``apply_drift``; its parameters in 'prev_drift');
    - with probability ``prev_chain_prob`` the true frame a chain starts from (the previous frame,
      or a rollout's first frame) is a chained one (``_chained``): the true frame d further back
      (d uniform in 1 .. ``PREV_CHAIN_MAX``, as far as the shot goes) carried to its place frame by
      frame along the one-step flows, as a colouring chain carries colours. Its line art and its
      flow to the next frame stay those of its own frame.
    Absent images are zeros and their 'present' 0.

    ``frame_cache=True`` reads frames from a decoded-frame cache (``framecache.py``), built
    first if needed in ``cache_dir``; ``frame_cache="open"`` only opens one (DDP ranks other
    than 0, which wait for rank 0's build). ``cached_flows=True`` (with ``extended=True`` and
    the ``flow`` correspondence) adds every frame's line art and its flows to the frames before
    and after, and to ``CACHED_KEYFRAMES`` keyframes drawn once per frame, to the cache
    (``_neighbour_flows``), so that a sample computes no optical flow (but for an augmented
    self-reference): train.py's default, ``--no_flow_cache`` turns it off.

    No ``cv2.setNumThreads`` in DataLoader workers: with OpenCV 5.0 it deadlocked a forked
    worker in one run of two once the parent had used OpenCV's thread pool.
    """

    def __init__(self, shot_dirs, image_size: int = 256, train: bool = True,
                 line_art: str = "canny", line_root=None, root_for_relpaths=None,
                 prev_prob: float = 0.5, seed: int = 0, uint8: bool = False,
                 extended: bool = False, correspondence: str = "flow", keyframe_prob: float = 0.0,
                 keyframe_max_distance: int = 1000, rollout_prob: float = 0.0, reverse_prob: float = 0.0,
                 frame_cache=False, cache_dir=None, cached_flows: bool = False, self_reference_prob: float = 0.0,
                 prev_drift_prob: float = 0.0, rollout_frames: int = 2, prev_chain_prob: float = 0.0,
                 still_window: int = 0, flow_scale: int = 1):
        if line_art not in LINE_ART_MODES:
            raise _unknown_mode(line_art)
        for name, value in (("prev_prob", prev_prob), ("keyframe_prob", keyframe_prob),
                            ("self_reference_prob", self_reference_prob), ("prev_drift_prob", prev_drift_prob),
                            ("prev_chain_prob", prev_chain_prob),
                            ("rollout_prob", rollout_prob), ("reverse_prob", reverse_prob)):
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {value}")
        if image_size < 8:
            raise UserError(f"image_size must be at least 8, got {image_size}")
        if seed < 0:
            raise UserError(f"seed must be >= 0 (it seeds numpy's generator), got {seed}")
        if keyframe_max_distance < 1:
            raise UserError(f"keyframe_max_distance must be at least 1, got {keyframe_max_distance}")
        if rollout_frames < 2:
            raise UserError(f"rollout_frames must be at least 2, got {rollout_frames}")
        self.shot_dirs = [Path(s) for s in shot_dirs]
        if not self.shot_dirs:
            raise UserError("no shot folders to read frames from")
        self.image_size, self.train, self.line_art = image_size, train, line_art
        self.load_size = load_size_for(image_size) if train else image_size
        self.prev_prob, self.seed, self.epoch = prev_prob, seed, 0
        self.extended, self.keyframe_prob = extended, keyframe_prob
        self.correspondence = correspond.cpu_half(correspondence, still_window, flow_scale)
        self.still_window, self.flow_scale = still_window, flow_scale
        self.keyframe_max_distance, self.rollout_prob = keyframe_max_distance, rollout_prob
        self.rollout_frames = rollout_frames
        self.reverse_prob, self.uint8 = reverse_prob, uint8
        self.self_reference_prob, self.prev_drift_prob = self_reference_prob, prev_drift_prob
        self.prev_chain_prob = prev_chain_prob
        if prev_chain_prob > 0 and not (extended and isinstance(self.correspondence, correspond.FlowWarp)):
            raise UserError("prev_chain_prob carries frames along the line-art flow: it needs an extended "
                            "generator with a correspondence that has one (flow, match or select)")
        self.convert = to_uint8_tensor if uint8 else to_tensor
        self.shot_frames = [_frames_of(s) for s in self.shot_dirs]
        self._starts = np.cumsum([0] + [len(f) for f in self.shot_frames]).tolist()
        self.line_paths = self._given_paths(line_root, root_for_relpaths)
        self.cache = None
        if frame_cache:
            if not train:
                raise UserError("the frame cache holds training frames at the load size: train=True only")
            self.cache = framecache.open_or_build(self.shot_frames, self.load_size, line_art, self.line_paths,
                                                  cache_dir, build=frame_cache != "open")
        self.flows = None
        if self.cache is not None and extended and cached_flows and isinstance(self.correspondence, correspond.FlowWarp):
            self.flows = self._neighbour_flows(build=frame_cache != "open")

    @classmethod
    def from_root(cls, root, **kwargs) -> "TripletDataset":
        """Every shot under ``root`` (see ``utils.find_shot_dirs``)."""
        kwargs.setdefault("root_for_relpaths", root)
        return cls(utils.find_shot_dirs(root), **kwargs)

    def _given_paths(self, line_root, root):
        if self.line_art != "given":
            return None
        if line_root is None:
            raise UserError("line-art mode 'given' needs --line_root (the folder of line art)")
        if root is None:  # one shot: its own folder; several: their common parent
            root = os.path.commonpath([str(s.resolve()) for s in self.shot_dirs])
        return [given_line_paths(f, s, line_root, root)
                for s, f in zip(self.shot_dirs, self.shot_frames)]

    def _neighbour_flows(self, build: bool) -> framecache.FlowCache:
        """Every cached frame's line art, and the flows computed from it to the neighbouring
        frames and to the frame's CACHED_KEYFRAMES keyframes, made once into the frame cache at
        the load size; a sample crops and flips them (``_view``, ``_cached_flow``), so that its
        previous frame, the frame before and its keyframe cost no line art and no optical flow.
        The line art of the whole frame, as test.py makes it,
        differs from that of the crop only within a few pixels of the crop's edges."""
        def line_of(colour, shot, pos):
            given = self.cache.line(shot, pos) if self.line_paths else None
            return make_line_art(colour, self.line_art, given)

        def keys(shot, pos, n):
            """The frame's CACHED_KEYFRAMES keyframes, drawn once as a sample draws one (any
            frame of the shot within keyframe_max_distance), tied to the frame's place alone."""
            rng = np.random.default_rng([CACHED_KEYFRAME_SEED, shot, pos])
            picks = [_pick_keyframe(pos, n, self.keyframe_max_distance, u) for u in rng.random(CACHED_KEYFRAMES)]
            return [-1 if k is None else k for k in picks]

        def art_of(colour, line):
            return self._art((colour, line))

        tag = (f"{self.line_art}:{CANNY_SIGMA}:{CANNY_LOW}:{CANNY_HIGH}:"
               f"{correspond.flow_settings(self.still_window, self.flow_scale)}:"
               f"keyframes {CACHED_KEYFRAMES} within {self.keyframe_max_distance}, seed {CACHED_KEYFRAME_SEED}")
        # keyframes drawn whatever keyframe_prob: one cache serves runs with and without them
        return framecache.open_or_build_flows(self.cache, line_of,
                                              lambda a, b: self.correspondence.pair_data(a, b, self.line_art),
                                              keys, tag, build,
                                              variant="".join([f"still{self.still_window}" if self.still_window else "",
                                                               f"x{self.flow_scale}" if self.flow_scale > 1 else ""]),
                                              art_of=art_of if self.flow_scale > 1 else None)

    def _cached_flow(self, shot: int, pos: int, step, crop, slot=None) -> torch.Tensor:
        """The cached flow from frame ``pos`` to ``pos + step`` (or to its cached keyframe in
        ``slot``) under the sample's crop and flip, (2, S, S): float16 for uint8 batches, else
        float32. Flipping the images mirrors the flow field and negates its dx."""
        top, left, flip = crop
        size = self.image_size
        whole = self.flows.flow(shot, pos, step) if slot is None else self.flows.key_flow(shot, pos, slot)
        chw = whole[:, top:top + size, left:left + size]
        if flip:
            chw = chw[:, :, ::-1]
        out = torch.from_numpy(np.array(chw))  # float16 (torch casts 5-25 times faster than NumPy)
        out = out if self.uint8 else out.float()
        if flip:
            out[0] *= -1
        return out

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(shot, position in shot) of a sample index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        shot = bisect.bisect_right(self._starts, index) - 1
        return shot, index - self._starts[shot]

    def _read(self, shot: int, pos: int, top: int, left: int, flip: bool, given=False) -> np.ndarray:
        """One frame (or its given line art) cropped, resized and flipped as the sample asks:
        from the frame cache when there is one (already resized), else from the image file."""
        size = self.image_size
        if self.cache is not None:
            image = self.cache.line(shot, pos) if given else self.cache.colour(shot, pos)
            crop = image[top:top + size, left:left + size].copy()  # the cache reuses its buffer
        else:
            paths = self.line_paths if given else self.shot_frames
            image = (utils.read_grey if given else utils.read_rgb)(paths[shot][pos])
            crop = crop_in_source(image, self.load_size, top, left, size)
        return crop[:, ::-1] if flip else crop

    def _art(self, view) -> np.ndarray:
        """What a view's (colour, line art) flow is computed on (``correspond.flow_art``): its
        line art at flow scale 1; Canny line art of its colour enlarged, or its given line art
        enlarged, above."""
        colour, line = view
        return self.correspondence.flow_art(colour if self.line_art == "canny" else None, line, self.line_art)

    def _view(self, shot, pos, crop) -> tuple[np.ndarray, np.ndarray]:
        """(colour (S, S, 3), line art (S, S)) of one frame, uint8, under the sample's crop."""
        colour = self._read(shot, pos, *crop)
        if self.flows is not None:  # made once into the cache (``_neighbour_flows``)
            top, left, flip = crop
            line = self.flows.line(shot, pos)[top:top + self.image_size, left:left + self.image_size]
            return colour, np.ascontiguousarray(line[:, ::-1] if flip else line)  # DIS takes no views
        given = self._read(shot, pos, *crop, given=True) if self.line_paths else None
        return colour, make_line_art(colour, self.line_art, given)

    def __getitem__(self, index) -> dict:
        """``index`` or ``(epoch, index)``: a sampler may carry the epoch with the index, for
        persistent DataLoader workers whose copy of the dataset never sees ``set_epoch``."""
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        shot, pos = self.locate(int(index))
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        # Always draw all three numbers, in this order, so each stays tied to (seed, epoch, index).
        use_prev = rng.random() < self.prev_prob
        top, left = rng.integers(0, self.load_size - self.image_size + 1, size=2).tolist()
        flip = bool(rng.random() < 0.5) and self.train
        crop = (top, left, flip)
        if self.extended:
            return self._extended(shot, pos, int(index), use_prev, crop, rng)
        has_prev = use_prev and pos > 0
        target, line = self._view(shot, pos, crop)
        prev = self._read(shot, pos - 1, *crop) if has_prev else np.zeros_like(target)
        return {"line": self.convert(line), "target": self.convert(target),
                "prev": {"colour": self.convert(prev), "present": torch.tensor(float(has_prev))},
                "index": torch.tensor(int(index), dtype=torch.long)}

    def _extended(self, shot: int, pos: int, index: int, use_prev: bool, crop, rng) -> dict:
        n = len(self.shot_frames[shot])
        # further draws, always all of them and in this order (see __getitem__)
        step = 1 if rng.random() < self.reverse_prob else -1  # where "previous" lies
        rollout = rng.random() < self.rollout_prob
        use_key = rng.random() < self.keyframe_prob
        key_draw = rng.random()
        chain = [pos + j * step for j in range(self.rollout_frames + 1)]  # chain[j]: frame j back
        p1, p2 = chain[1], chain[2]
        exists = lambda p: 0 <= p < n  # noqa: E731
        rollout = rollout and exists(p1)
        # the frame the rollout starts from: the furthest of frames 2..K back that exists (2 when
        # none does: the generator then colours the previous frame from nothing)
        start = max([j for j in range(2, self.rollout_frames + 1) if exists(chain[j])], default=2)
        if rollout:  # frame t always gets a previous frame: the generator's own output
            has_prev = True
            # frames between t and the start are coloured by the generator; the start is the
            # true frame, or black (as a chain that starts from nothing) when not use_prev
            has = {j: (j < start and exists(chain[j])) or (j == start and use_prev and exists(chain[j]))
                   for j in range(2, self.rollout_frames + 1)}
        else:
            has_prev, has = use_prev and exists(p1), dict.fromkeys(range(2, self.rollout_frames + 1), False)
        key_slot = None  # with the flow cache: which of the frame's cached keyframes
        if use_key and self.flows is not None:
            cached = self.flows.keys(shot, pos)  # CACHED_KEYFRAMES of them, -1 where the shot has no other frame
            key_slot = min(int(key_draw * len(cached)), len(cached) - 1)
            key = None if cached[key_slot] < 0 else int(cached[key_slot])
        else:
            key = _pick_keyframe(pos, n, self.keyframe_max_distance, key_draw) if use_key else None
        key_view, self_ref = None, False  # an augmented self-reference: frame t itself, moved
        if self.self_reference_prob > 0:  # drawn only then: runs without it keep their draws
            self_ref = rng.random() < self.self_reference_prob and key is not None
            affine = _random_affine(rng, self.image_size)
            key = pos if self_ref else key
        drift = None  # the previous frame made to look like a chain's (``drift_params``); drawn only when on
        if self.prev_drift_prob > 0:
            drift = drift_params(rng, self.prev_drift_prob)
        chained = None  # how much further back a chained first frame starts (``_chained``); drawn only when on
        if self.prev_chain_prob > 0:
            on, u = rng.random() < self.prev_chain_prob, rng.random()  # both drawn either way
            chained = u if on else None

        views, arts = {}, {}

        def view(p):
            if p not in views:
                views[p] = self._view(shot, p, crop)
            return views[p]

        def art(p):
            if p not in arts:
                arts[p] = self._art(view(p))
            return arts[p]

        def source(p, towards, present):
            """Frame p as a source for frame ``towards`` (zeros when not ``present``)."""
            if not present:
                return self._source(None, None)
            if key_view is not None and p == key:  # the self-reference: no cached flow is its
                return self._source(key_view, self.correspondence.pair_data(art(towards), self._art(key_view),
                                                                            self.line_art))
            if self.flows is not None and abs(p - towards) == 1:
                return self._source(view(p), self._cached_flow(shot, towards, p - towards, crop))
            if key_slot is not None and p == key and towards == pos:
                return self._source(view(p), self._cached_flow(shot, pos, None, crop, slot=key_slot))
            return self._source(view(p), self.correspondence.pair_data(art(towards), art(p), self.line_art))

        target, line = view(pos)
        if self_ref:
            key_view = self._moved(target, line, affine)
        sample = {"line": self.convert(line), "target": self.convert(target),
                  "index": torch.tensor(index, dtype=torch.long), "rollout": torch.tensor(float(rollout)),
                  "prev": source(p1, pos, has_prev)}
        for j in range(2, self.rollout_frames + 1):
            sample[f"prev{j}"] = source(chain[j], chain[j - 1], has[j])
        sample["keyframe"] = source(key, pos, key is not None)
        if drift is not None:
            sample["prev_drift"] = torch.from_numpy(drift)
        first = start if rollout else 1  # the true frame the chain of this sample starts from
        name = "prev" if first == 1 else f"prev{first}"
        if chained is not None and sample[name]["present"] > 0:
            colour = self._chained(shot, chain[first], step, chained, crop, view, art)
            if colour is not None:
                sample[name]["colour"] = self.convert(colour)
        to_key = sample["keyframe"]["flow"]  # from frame j - 2 back (t, then the previous frame, ...)
        for j in range(2, self.rollout_frames + 1):
            after = chain[j - 1]  # the frame the generator colours from frame j back
            # only frames the rollout colours need it: 1 .. start - 1 back
            needed = key is not None and rollout and j <= start
            if needed and self.flows is not None and key_view is None and abs(key - after) > 1:
                # the flow to the keyframe of the frame after, carried back one frame: as good
                # as its own DIS flow, at a tenth of the cost (``correspond.compose_flows``)
                to_after = self._cached_flow(shot, after, chain[j - 2] - after, crop)
                flow = correspond.compose_flows(_hwc(to_after), _hwc(to_key))
                to_key = correspond.flow_tensor(flow, half=self.uint8)
            else:
                to_key = source(key, after, needed)["flow"]
            sample[f"keyframe_flow{j}"] = to_key
        if self.rollout_frames > 2:
            sample["rollout_start"] = torch.tensor(float(start))
        return sample

    def _chained(self, shot: int, at: int, step: int, u: float, crop, view, art) -> np.ndarray | None:
        """Frame ``at`` as a colouring chain would bring it: the true frame d frames further along
        ``step`` (d = 1 .. PREV_CHAIN_MAX from ``u`` in [0, 1), as far as the shot goes), warped frame
        by frame back to ``at`` along the one-step line-art flows (cached, or DIS), uint8 (S, S, 3)
        under the sample's crop; None when the shot has no frame beyond ``at``.

        Why: in training the previous frame is true, or the generator's output from the true frame
        before it, so the blend learns to trust it (86% against 14% for the keyframe after 246 steps
        of the README's fold-2 study); at inference it has been carried for tens of frames, smeared
        wherever a flow failed. ``apply_drift``'s small smooth moves and blurs do not make that; the
        chain's own flows do."""
        room = len(self.shot_frames[shot]) - 1 - at if step > 0 else at
        reach = min(room, PREV_CHAIN_MAX)
        if reach < 1:
            return None
        d = 1 + min(int(u * reach), reach - 1)
        colour = view(at + d * step)[0].astype(np.float32)
        for j in range(d - 1, -1, -1):  # onto frame at + j * step from the one after it
            here = at + j * step
            if self.flows is not None:
                flow = _hwc(self._cached_flow(shot, here, step, crop))
            else:
                flow = self.correspondence.pair_data(art(here), art(here + step), self.line_art)
            colour = correspond.warp_array(colour, flow)
        return np.clip(np.rint(colour), 0, 255).astype(np.uint8)

    def _moved(self, colour: np.ndarray, line: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame t as its own keyframe under the affine map ``affine`` (2, 3): the colour moved
        (borders repeated), its line art made again from it (given line art is moved with it)."""
        size = (colour.shape[1], colour.shape[0])
        moved = cv2.warpAffine(colour, affine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.line_paths:
            return moved, cv2.warpAffine(line, affine, size, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=255)
        return moved, make_line_art(moved, self.line_art)

    def _source(self, view, flow) -> dict:
        """A source frame's fields (``correspond.Source``): zeros when ``view`` is None."""
        size = self.image_size
        if view is None:
            colour, line = np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint8)
        else:
            colour, line = view
        if flow is None:
            flow = torch.zeros(2, size, size, dtype=torch.float16 if self.uint8 else torch.float32)
        elif not isinstance(flow, torch.Tensor):  # a cached flow comes ready (``_cached_flow``)
            flow = correspond.flow_tensor(flow, half=self.uint8)
        return {"colour": self.convert(colour), "line": self.convert(line),
                "present": torch.tensor(float(view is not None)), "flow": flow}


def _hwc(flow: torch.Tensor) -> np.ndarray:
    """A (2, H, W) flow tensor as float32 (H, W, 2), the layout OpenCV works in."""
    return flow.float().numpy().transpose(1, 2, 0)


def _random_affine(rng, size: int) -> np.ndarray:
    """A random similarity (2, 3) about the centre of a (size, size) image, SCFT's augmented
    self-reference: rotation within 15 degrees, scale 0.85 to 1.15, shift within 15% of the size."""
    angle, scale = rng.uniform(-15, 15), rng.uniform(0.85, 1.15)
    dx, dy = rng.uniform(-0.15, 0.15, size=2) * size
    affine = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    affine[:, 2] += (dx, dy)
    return affine


def _pick_keyframe(pos: int, n: int, max_distance: int, u: float) -> int | None:
    """A frame of the shot other than ``pos``, uniformly among those within ``max_distance``
    (either direction), from one uniform number ``u`` in [0, 1); None for a one-frame shot."""
    lo, hi = max(0, pos - max_distance), min(n - 1, pos + max_distance)
    choices = hi - lo  # frames in [lo, hi] except pos
    if choices < 1:
        return None
    k = lo + min(int(u * choices), choices - 1)
    return k + 1 if k >= pos else k
