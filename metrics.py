"""Video colourisation metrics: per-frame fidelity and temporal consistency, computed streaming.

Works on uint8 RGB frames (H, W, 3) and imports no torch, so that ``test.py`` (long videos)
and the validation of ``train.py`` share one implementation. Memory does not grow with the
length of a shot: ``VideoMetrics`` keeps running sums, the previous output/target frame (for
flow warping) and the colour histograms of the last 4 outputs (for the d = 1, 2, 4 pairs).

Measures (each function's docstring gives the source and the formula):
- PSNR, SSIM per frame (scikit-image), averaged over frames;
- warping error E_warp (Lai et al., ECCV 2018) of the output and of the ground truth, with
  Farneback flow computed on the ground truth and a forward-backward occlusion mask;
- temporal-consistency ratio (LVCD, SIGGRAPH Asia 2024) = E_warp(output) / E_warp(GT);
- colour distribution consistency CDC (Liu et al. 2021): Jensen-Shannon divergence of the
  per-channel colour histograms of output frames t and t+d, d in {1, 2, 4}.
Lower is better for everything except PSNR and SSIM.

Example:
    python -c "import metrics, numpy as np; m = metrics.VideoMetrics(); \
f = np.zeros((64, 64, 3), np.uint8); m.update(f, f); m.update(f, f); print(m.result())"
"""
from __future__ import annotations

import json
from collections import deque
from pathlib import PurePath

import cv2
import numpy as np

import utils

# Identical frames have an infinite PSNR, which neither a mean nor JSON can hold. Every
# per-frame PSNR is therefore clipped to this value (a single grey level of difference in
# one pixel of a 256x256 frame already gives ~101 dB, so the clip is monotone and harmless).
PSNR_CAP_DB = 100.0

# Farneback parameters (OpenCV's documented example values): a 3-level pyramid halving
# the size each level, a 15x15 averaging window, 3 iterations per level, polynomial
# expansion over 5x5 neighbourhoods with Gaussian sigma 1.2. Good for the few-pixel
# motions of 256x256 frames at ~17 ms per call there on one CPU core.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5,
                 poly_sigma=1.2, flags=0)

CDC_DILATIONS = (1, 2, 4)  # frame distances d of the colour distribution consistency
HIST_BINS = 256            # one bin per uint8 level, as in Liu et al.'s evaluation code
# A ground-truth warping error at or below this (values in [0, 1]) counts as a static
# ground truth: the ratio output/GT is then undefined and reported as None.
RATIO_MIN_DENOMINATOR = 1e-10


# ----------------------------------------------------------------------------- per frame
def psnr(output: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels, clipped at 100 dB.

    PSNR = 10 log10(255^2 / MSE), MSE = mean((O - G)^2) (scikit-image's
    ``peak_signal_noise_ratio`` with ``data_range=255``). MSE = 0 gives ``PSNR_CAP_DB``.
    """
    if np.array_equal(output, target):  # skimage would divide by zero and warn
        return PSNR_CAP_DB
    from skimage.metrics import peak_signal_noise_ratio  # here: it imports scipy.stats, a third of a start-up

    value = peak_signal_noise_ratio(target, output, data_range=255)
    return float(min(value, PSNR_CAP_DB))


def ssim(output: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity (Wang et al., IEEE TIP 2004), mean over the RGB channels.

    scikit-image's ``structural_similarity(channel_axis=2, data_range=255)`` with its
    defaults: 7x7 uniform window, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, averaged over
    windows: SSIM = (2 mu_o mu_g + C1)(2 sigma_og + C2) / ((mu_o^2 + mu_g^2 + C1)
    (sigma_o^2 + sigma_g^2 + C2)). About 40 ms for a 256x256 frame: the dominant cost.
    """
    from skimage.metrics import structural_similarity

    return float(structural_similarity(target, output, channel_axis=2, data_range=255))


# ----------------------------------------------------------------------------- flow warping
def farneback_flow(src_grey: np.ndarray, dst_grey: np.ndarray) -> np.ndarray:
    """Dense flow F (H, W, 2) float32, (dx, dy), from ``src`` to ``dst``, with
    src(y, x) ~= dst(y + F[y, x, 1], x + F[y, x, 0]) (Farneback, SCIA 2003; ``FARNEBACK``).

    Identical frames (held drawings are common in animation) get an exact zero flow, which
    Farneback only approximates (~0.1 px), so that a static ground truth has E_warp = 0.
    """
    if np.array_equal(src_grey, dst_grey):
        return np.zeros((*src_grey.shape, 2), np.float32)
    return cv2.calcOpticalFlowFarneback(src_grey, dst_grey, None, **FARNEBACK)


def warp_backward(image: np.ndarray, flow: np.ndarray, grid=None) -> np.ndarray:
    """W(image)(x) = image(x + flow(x)): bilinear ``cv2.remap``, border replicated.

    With ``flow`` the flow from frame t to frame t-1, this brings frame t-1 onto frame t's
    pixel grid. ``grid`` = (xs, ys) float32 pixel coordinates, cached by the caller.
    """
    xs, ys = grid if grid is not None else pixel_grid(flow.shape[:2])
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def pixel_grid(shape) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def non_occlusion_mask(flow_back: np.ndarray, flow_fwd: np.ndarray, grid=None) -> np.ndarray:
    """Boolean mask M_t (H, W) of frame t's pixels that are visible in frame t-1.

    Forward-backward consistency check (Sundaram et al., ECCV 2010; Ruder et al., GCPR 2016;
    as in Lai et al.'s code, without its motion-boundary term): with F_b the flow t -> t-1
    and F_f^w = W(F_f) the flow t-1 -> t warped onto frame t, a pixel is occluded where
    |F_b + F_f^w|^2 > 0.01 (|F_b|^2 + |F_f^w|^2) + 0.5.
    """
    fwd_warped = warp_backward(flow_fwd, flow_back, grid)
    mismatch = np.square(flow_back + fwd_warped).sum(axis=2)
    bound = 0.01 * (np.square(flow_back).sum(axis=2) + np.square(fwd_warped).sum(axis=2)) + 0.5
    return mismatch <= bound


def masked_warping_error(current: np.ndarray, warped_prev: np.ndarray, mask: np.ndarray):
    """E_warp(V_t, V_{t-1}) = 1 / (3 sum_i M_t(i)) * sum_i M_t(i) ||V_t(i) - W(V_{t-1})(i)||^2.

    Lai et al., "Learning blind video temporal consistency", ECCV 2018, Eq. 7, on values in
    [0, 1]. The 1/3 (mean over the RGB channels) follows their released evaluation code
    (``evaluate_WarpError.py`` counts mask entries over 3 channels), so figures compare with
    published ones. None when the mask is empty (every pixel occluded).
    """
    count = int(mask.sum())
    if count == 0:
        return None
    diff = current.astype(np.float32) / 255.0 - warped_prev
    return float(np.square(diff[mask]).sum(dtype=np.float64) / (3 * count))


# ----------------------------------------------------------------------------- colour histograms
def colour_histograms(frame: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Per-channel histograms of a uint8 RGB frame, each normalised to sum 1: (3, bins)."""
    levels = frame.reshape(-1, 3).astype(np.int64) * bins // 256
    counts = np.bincount((levels + np.arange(3) * bins).ravel(), minlength=3 * bins)
    return counts.reshape(3, bins) / (frame.shape[0] * frame.shape[1])


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence along the last axis, natural log (so 0 <= JSD <= ln 2):

    JSD(P || Q) = 1/2 KL(P || M) + 1/2 KL(Q || M), M = (P + Q) / 2,
    KL(P || M) = sum_k P_k ln(P_k / M_k), with 0 ln 0 = 0. The natural log matches
    ``scipy.stats.entropy`` used by Liu et al.'s evaluation code.
    """
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = (p + q) / 2
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def _kl(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    # m > 0 wherever p > 0, so only the p > 0 terms are evaluated
    terms = np.zeros_like(p)
    np.multiply(p, np.log(np.divide(p, m, out=np.ones_like(p), where=p > 0)), out=terms,
                where=p > 0)
    return terms.sum(axis=-1)


def colour_consistency(hist_a: np.ndarray, hist_b: np.ndarray) -> float:
    """Mean over the 3 channels of JSD(hist_a[c], hist_b[c]): one pair's term of
    CDC_d = 1/(N-d) sum_{t=1}^{N-d} 1/3 sum_c JSD(P_c(O_t), P_c(O_{t+d}))
    (Liu et al., "Temporally consistent video colorization with deep feature propagation
    and self-regularization learning", 2021)."""
    return float(js_divergence(hist_a, hist_b).mean())


# ----------------------------------------------------------------------------- one shot
class VideoMetrics:
    """Streaming metrics of one shot: call ``update(output, target)`` once per frame, in
    order, then ``result()``. Holds the previous output and target frames, the previous
    target's grey image and the colour histograms of the last 4 outputs; nothing else grows.

    Warping errors: for each consecutive pair (t-1, t), the flows F_b (t -> t-1) and F_f
    (t-1 -> t) are computed once, on the ground-truth grey frames; the same warp and mask
    give E_warp of the output and of the ground truth. A shot's figure is the mean over its
    pairs (pairs whose mask is empty are skipped and not counted in ``warp_pairs``).
    """

    def __init__(self):
        self.frames = 0
        self._sums = {"psnr": 0.0, "ssim": 0.0, "warp_error": 0.0, "warp_error_gt": 0.0}
        self._warp_pairs = 0
        self._cdc_sums = {d: 0.0 for d in CDC_DILATIONS}
        self._prev_output = self._prev_target = self._prev_grey = None
        self._grid = None
        self._out_hists = deque(maxlen=max(CDC_DILATIONS))  # [-d] = histograms of frame t-d

    def update(self, output: np.ndarray, target: np.ndarray) -> dict:
        """Add frame t (uint8 RGB, same shape); returns this frame's ``psnr`` and ``ssim``
        and, from the second frame on, this pair's ``warp_error`` / ``warp_error_gt``."""
        self._check(output, target)
        frame = {"psnr": psnr(output, target), "ssim": ssim(output, target)}
        grey = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
        if self.frames > 0:
            frame.update(self._warp_pair(output, target, grey))
        self._add_histograms(colour_histograms(output))
        for key, value in frame.items():
            if value is not None:
                self._sums[key] += value
        self._prev_output, self._prev_target, self._prev_grey = output.copy(), target.copy(), grey
        self.frames += 1
        return frame

    def _check(self, output, target) -> None:
        for name, image in (("output", output), ("target", target)):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"{name} must be uint8 RGB (H, W, 3), got {image.dtype} "
                                 f"{image.shape}")
        if output.shape != target.shape:
            raise ValueError(f"output {output.shape} and target {target.shape} differ in shape")
        if self._prev_target is not None and target.shape != self._prev_target.shape:
            raise ValueError(f"frame size changed within a shot: {self._prev_target.shape} "
                             f"-> {target.shape}")

    def _warp_pair(self, output, target, grey) -> dict:
        """E_warp of the output and of the ground truth for the pair (t-1, t)."""
        if self._grid is None:
            self._grid = pixel_grid(grey.shape)
        flow_back = farneback_flow(grey, self._prev_grey)  # t -> t-1
        flow_fwd = farneback_flow(self._prev_grey, grey)   # t-1 -> t
        mask = non_occlusion_mask(flow_back, flow_fwd, self._grid)
        errors = {}
        for key, current, prev in (("warp_error", output, self._prev_output),
                                   ("warp_error_gt", target, self._prev_target)):
            warped = warp_backward(prev.astype(np.float32) / 255.0, flow_back, self._grid)
            errors[key] = masked_warping_error(current, warped, mask)
        if errors["warp_error"] is not None:
            self._warp_pairs += 1
        return errors

    def _add_histograms(self, hists: np.ndarray) -> None:
        for d in CDC_DILATIONS:
            if len(self._out_hists) >= d:
                self._cdc_sums[d] += colour_consistency(self._out_hists[-d], hists)
        self._out_hists.append(hists)

    def result(self) -> dict:
        """Per-shot figures: ``frames``, ``psnr``, ``ssim`` (means over frames), ``warp_pairs``,
        ``warp_error``, ``warp_error_gt`` (means over pairs), ``tc_ratio``, ``cdc_d1``,
        ``cdc_d2``, ``cdc_d4`` (means over the N - d pairs) and ``cdc`` (mean of the defined
        cdc_d). A figure that has no frame or pair to average over is None (never 0)."""
        n = self.frames
        out = {"frames": n,
               "psnr": self._sums["psnr"] / n if n else None,
               "ssim": self._sums["ssim"] / n if n else None,
               "warp_pairs": self._warp_pairs}
        for key in ("warp_error", "warp_error_gt"):
            out[key] = self._sums[key] / self._warp_pairs if self._warp_pairs else None
        out["tc_ratio"] = tc_ratio(out["warp_error"], out["warp_error_gt"])
        for d in CDC_DILATIONS:
            out[f"cdc_d{d}"] = self._cdc_sums[d] / (n - d) if n > d else None
        out["cdc"] = mean_defined(out[f"cdc_d{d}"] for d in CDC_DILATIONS)
        return out


def tc_ratio(warp_output, warp_gt):
    """Temporal-consistency ratio (LVCD, SIGGRAPH Asia 2024): E_warp(output) / E_warp(GT).

    1 means as steady as the real video, > 1 flicker the video does not have. None when
    either is undefined or the ground truth is static (E_warp(GT) <= RATIO_MIN_DENOMINATOR),
    where the ratio would be a division by zero.
    """
    if warp_output is None or warp_gt is None or warp_gt <= RATIO_MIN_DENOMINATOR:
        return None
    return warp_output / warp_gt


def mean_defined(values):
    """The mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- many shots
def summarize(per_shot: dict) -> dict:
    """Combine per-shot ``VideoMetrics.result()`` dicts into overall figures, each weighted
    by the number of terms it averages, so the result equals one average over all of them:
    PSNR/SSIM by ``frames``, warping errors by ``warp_pairs``, cdc_d by ``frames - d``.
    ``tc_ratio`` = overall E_warp(output) / overall E_warp(GT) (not a mean of ratios);
    ``cdc`` = mean of the defined overall cdc_d. Also ``shots`` = the number of shots."""
    shots = list(per_shot.values())
    overall = {"shots": len(shots), "frames": sum(s["frames"] for s in shots),
               "warp_pairs": sum(s["warp_pairs"] for s in shots)}
    for key in ("psnr", "ssim"):
        overall[key] = _weighted_mean(shots, key, lambda s: s["frames"])
    for key in ("warp_error", "warp_error_gt"):
        overall[key] = _weighted_mean(shots, key, lambda s: s["warp_pairs"])
    overall["tc_ratio"] = tc_ratio(overall["warp_error"], overall["warp_error_gt"])
    for d in CDC_DILATIONS:
        overall[f"cdc_d{d}"] = _weighted_mean(shots, f"cdc_d{d}",
                                              lambda s, d=d: max(s["frames"] - d, 0))
    overall["cdc"] = mean_defined(overall[f"cdc_d{d}"] for d in CDC_DILATIONS)
    return overall


def _weighted_mean(shots, key, weight):
    pairs = [(s[key], weight(s)) for s in shots if s[key] is not None and weight(s) > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


LAST_FRAMES = 10  # psnr_last10: the end of a shot, where drift shows
FLAT_GREY = 128   # the flat grey frame, one of the answers that need no model
# A pixel has changed since the keyframe when its true colour differs from the keyframe's by more
# than this (mean of |R|, |G|, |B| differences, 0-255): where copying is wrong by construction.
CHANGED_LEVEL = 25.0
# A line-art region has changed when the keyframe's median colour under it is more than this far
# (RGB distance, 0-255) from the truth's median there; it is right when the output's median is
# within this distance of the truth's.
REGION_LEVEL = 20.0


def changed_error(output: np.ndarray, truth: np.ndarray, keyframe: np.ndarray) -> tuple[float, int]:
    """(sum of squared errors, number of values) on the pixels that changed since ``keyframe``
    (``CHANGED_LEVEL``): pooled over frames, they give the changed-pixel PSNR."""
    changed = np.abs(truth.astype(np.float32) - keyframe.astype(np.float32)).mean(2) > CHANGED_LEVEL
    diff = output[changed].astype(np.float64) - truth[changed].astype(np.float64)
    return float((diff ** 2).sum()), int(changed.sum()) * truth.shape[2]


def changed_regions(output: np.ndarray, truth: np.ndarray, keyframe: np.ndarray, line: np.ndarray
                    ) -> tuple[int, int]:
    """(pixels of changed regions the output got right, pixels of changed regions) of one frame.
    Regions are ``regions.segment`` of the frame's own line art (lines thickened by 1 pixel,
    at least 4 pixels); see ``REGION_LEVEL`` for changed and right. Pooled over frames, their
    ratio is the share of changed regions right, weighted by area: where copying would be wrong,
    did the paint land right?"""
    import regions

    labels = regions.segment(line)
    if labels.max() < 0:
        return 0, 0
    true, key, out = (regions.region_medians(labels, image) for image in (truth, keyframe, output))
    area = np.bincount(labels[labels >= 0], minlength=len(true))
    changed = np.linalg.norm(key - true, axis=1) > REGION_LEVEL
    right = changed & (np.linalg.norm(out - true, axis=1) <= REGION_LEVEL)
    return int(area[right].sum()), int(area[changed].sum())


def psnr_of_squared(squared: float, count: int) -> float | None:
    """PSNR (dB) of a squared error summed over ``count`` values (``psnr``'s cap); None for none."""
    if count == 0:
        return None
    return PSNR_CAP_DB if squared == 0 else float(min(10 * np.log10(255.0 ** 2 * count / squared), PSNR_CAP_DB))


def score_frames(outputs: dict, truths: dict, scored: dict | None = None, keyframes: dict | None = None,
                 lines: dict | None = None) -> dict:
    """Metrics of whole shots held in memory, on chosen frames (how the study and the demo
    compare a model with the answers that need none). ``outputs`` and ``truths``: {shot: [uint8
    RGB frames 0 .. N-1]}; ``scored``: {shot: [frame indices]}, default 1 to N-1 (frame 0 is
    given where a keyframe starts the shot). With ``keyframes`` ({shot: [the keyframe copying would
    give each frame]}) also ``changed_psnr`` (PSNR on the pixels that changed since it, pooled) and,
    with ``lines`` ({shot: [line art of each frame]}), ``changed_regions`` (share of the changed
    regions' area whose colour is right). Returns {"overall": ``summarize`` + psnr_last10 and
    psnr_frame0 (means over shots) + the pooled changed figures, "shots": {shot:
    ``VideoMetrics.result()`` + psnr_last10 (mean PSNR of its last 10 scored frames), psnr_frame0,
    scored_frames, changed figures}, "per_frame_psnr": {shot: [PSNR of each scored frame]}}. Warping
    errors pair consecutive scored frames."""
    shots, curves, pooled = {}, {}, np.zeros(4)
    for shot, truth in truths.items():
        out = outputs[shot]
        if len(out) != len(truth):
            raise utils.UserError(f"{shot}: {len(out)} output frames for {len(truth)} true frames")
        keep = list(scored[shot]) if scored is not None else list(range(1, len(truth)))
        video = VideoMetrics()
        curves[shot] = [video.update(out[i], truth[i])["psnr"] for i in keep]
        shots[shot] = video.result() | {"psnr_last10": float(np.mean(curves[shot][-LAST_FRAMES:])),
                                        "psnr_frame0": psnr(out[0], truth[0]), "scored_frames": keep}
        if keyframes is not None:
            sums = np.zeros(4)
            for i in keep:
                sums[:2] += changed_error(out[i], truth[i], keyframes[shot][i])
                if lines is not None:
                    sums[2:] += changed_regions(out[i], truth[i], keyframes[shot][i], lines[shot][i])
            shots[shot] |= _changed_figures(sums, lines is not None)
            pooled += sums
    overall = summarize(shots)
    for key in ("psnr_last10", "psnr_frame0"):
        overall[key] = float(np.mean([r[key] for r in shots.values()]))
    if keyframes is not None:
        overall |= _changed_figures(pooled, lines is not None)
    return {"overall": overall, "shots": shots, "per_frame_psnr": curves}


def _changed_figures(sums: np.ndarray, with_regions: bool) -> dict:
    figures = {"changed_psnr": psnr_of_squared(sums[0], int(sums[1]))}
    if with_regions:
        figures["changed_regions"] = float(sums[2] / sums[3]) if sums[3] else None
    return figures


# ----------------------------------------------------------------------------- reporting
_COLUMNS = (("frames", "frames", "{:d}"), ("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
            ("warp_error", "Ewarp", "{:.5f}"), ("warp_error_gt", "Ewarp_GT", "{:.5f}"),
            ("tc_ratio", "ratio", "{:.3f}"), ("cdc", "CDC", "{:.5f}"))


def format_table(per_shot: dict, overall: dict) -> str:
    """A plain text table, one row per shot and a last ``overall`` row; None prints as -."""
    rows = [(name, result) for name, result in per_shot.items()] + [("overall", overall)]
    name_width = max(len("shot"), *(len(str(name)) for name, _ in rows))
    cells = [[str(name)] + [fmt.format(r[key]) if r.get(key) is not None else "-"
                            for key, _, fmt in _COLUMNS] for name, r in rows]
    header = ["shot"] + [title for _, title, _ in _COLUMNS]
    widths = [name_width] + [max(len(title), *(len(c[i + 1]) for c in cells))
                             for i, (_, title, _) in enumerate(_COLUMNS)]
    lines = [_row(header, widths), "  ".join("-" * w for w in widths)]
    lines += [_row(c, widths) for c in cells[:-1]]
    lines += ["  ".join("-" * w for w in widths), _row(cells[-1], widths)]
    return "\n".join(lines)


def _row(cells, widths) -> str:
    return "  ".join([cells[0].ljust(widths[0])] +
                     [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])


def write_metrics_json(path, per_shot: dict, overall: dict, extra: dict | None = None) -> None:
    """Atomically write {**extra, "overall": overall, "shots": per_shot} as JSON.

    None is written as null; a NaN or infinity anywhere is a ``ValueError`` (invalid JSON),
    which cannot come from this module since PSNR is clipped at ``PSNR_CAP_DB``.
    """
    payload = dict(extra or {})
    if {"overall", "shots"} & payload.keys():
        raise ValueError("extra must not hold the keys 'overall' or 'shots'")
    payload.update(overall=overall, shots=per_shot)
    text = json.dumps(payload, indent=2, allow_nan=False, default=_json_default)
    utils.atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _json_default(value):
    # numpy scalars and paths reach here from callers' extra dicts; anything else is a bug
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
