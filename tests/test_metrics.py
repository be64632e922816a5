"""Tests of metrics.py against hand-computed values and plain numpy reference computations."""
import json
import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

import metrics

H, W, SPEED = 64, 64, 2  # frames are 64x64; the pan moves content 2 px left per frame


def texture(height=H, width=W + 40, seed=0) -> np.ndarray:
    """Smooth random RGB texture with values in [10, 235] (room for a +-20 shift)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.round(10 + 225 * smooth).astype(np.uint8)


def pan_video(n=8, seed=0) -> list:
    """Frame t = a 64x64 window of a texture, shifted SPEED px right each frame, so that
    frame_t(x) = frame_{t-1}(x + SPEED): the flow t -> t-1 is (+SPEED, 0) everywhere."""
    big = texture(seed=seed)
    return [big[:, SPEED * t:SPEED * t + W].copy() for t in range(n)]


def run(outputs, targets) -> dict:
    vm = metrics.VideoMetrics()
    for out, tgt in zip(outputs, targets):
        vm.update(out, tgt)
    return vm.result()


def shift(frame, amount):
    return (frame.astype(np.int16) + amount).astype(np.uint8)


# ----------------------------------------------------------------------------- per-frame
def test_psnr_matches_numpy_mse_formula_and_ssim_matches_skimage():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2))
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)
    expected = structural_similarity(b, a, channel_axis=2, data_range=255)
    assert metrics.ssim(a, b) == pytest.approx(expected, rel=1e-12)


def test_identical_static_video_scores_perfectly():
    frames = [texture(width=W)] * 5
    result = run(frames, frames)
    assert result["frames"] == 5 and result["warp_pairs"] == 4
    assert result["psnr"] == metrics.PSNR_CAP_DB
    assert result["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert result["warp_error"] == 0.0 and result["warp_error_gt"] == 0.0
    assert result["tc_ratio"] is None  # static ground truth: division by zero
    assert result["cdc_d1"] == result["cdc_d4"] == result["cdc"] == 0.0


def test_brightness_shift_gives_hand_computed_psnr_and_leaves_consistency_unchanged():
    gt = pan_video()
    shifted = run([shift(f, 10) for f in gt], gt)
    # every pixel differs by exactly 10: MSE = 100, PSNR = 20 log10(255 / 10) = 28.1308 dB
    assert shifted["psnr"] == pytest.approx(20 * math.log10(255 / 10), rel=1e-12)
    same = run(gt, gt)
    # a constant shift only relabels histogram bins and cancels in O_t - W(O_{t-1})
    for key in ("cdc_d1", "cdc_d2", "cdc_d4", "warp_error"):
        assert shifted[key] == pytest.approx(same[key], rel=1e-6, abs=1e-12), key
    assert shifted["tc_ratio"] == pytest.approx(1.0, rel=1e-4)


def test_single_frame_shot_has_no_temporal_figures():
    frame = texture(width=W)
    result = run([frame], [frame])
    assert result["frames"] == 1 and result["psnr"] == metrics.PSNR_CAP_DB
    for key in ("warp_error", "warp_error_gt", "tc_ratio", "cdc_d1", "cdc_d2", "cdc_d4", "cdc"):
        assert result[key] is None, key


# ----------------------------------------------------------------------------- warping
def test_warp_direction_matches_numpy_roll_reference():
    gt = pan_video(n=2)
    rng = np.random.default_rng(2)
    out_prev, out_cur = (rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2))
    known_flow = np.zeros((H, W, 2), np.float32)
    known_flow[..., 0] = SPEED  # flow t -> t-1 of the pan
    warped = metrics.warp_backward(out_prev.astype(np.float32) / 255, known_flow)
    rolled = np.roll(out_prev, -SPEED, axis=1).astype(np.float32) / 255  # prev(x + 2)
    inner = np.s_[:, :W - SPEED]
    np.testing.assert_allclose(warped[inner], rolled[inner], atol=1e-6)
    # E_warp with a mask of the interior = mean over pixels and channels of the squared diff
    mask = np.zeros((H, W), bool)
    mask[inner] = True
    reference = np.mean((out_cur[inner].astype(np.float64) / 255 - rolled[inner]) ** 2)
    assert metrics.masked_warping_error(out_cur, warped, mask) == pytest.approx(reference,
                                                                               rel=1e-5)
    # the Farneback flow of the ground truth (t -> t-1) recovers the known motion
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in gt]
    flow = metrics.farneback_flow(grey[1], grey[0])
    np.testing.assert_allclose(np.median(flow[8:-8, 8:-8], axis=(0, 1)), [SPEED, 0], atol=0.1)


def test_warping_error_of_translating_video_is_near_zero_and_sign_matters():
    gt = pan_video()
    result = run(gt, gt)
    assert result["warp_pairs"] == len(gt) - 1
    wrong_sign = np.mean([np.mean((gt[t][:, SPEED:-SPEED] / 255
                                   - np.roll(gt[t - 1], SPEED, axis=1)[:, SPEED:-SPEED] / 255)
                                  ** 2) for t in range(1, len(gt))])
    assert result["warp_error"] < 2e-4
    assert result["warp_error"] < 0.02 * wrong_sign
    assert result["tc_ratio"] == pytest.approx(1.0)  # output == GT


def test_flicker_scores_worse_than_steady_output():
    gt = pan_video()
    flicker = [shift(f, 20) if t % 2 else f for t, f in enumerate(gt)]
    steady, flick = run(gt, gt), run(flicker, gt)
    # the +20 step alone gives (20/255)^2 = 6.2e-3 on every visible pixel
    assert flick["warp_error"] > 10 * steady["warp_error"]
    assert flick["warp_error"] == pytest.approx((20 / 255) ** 2, rel=0.1)
    assert flick["tc_ratio"] > 10 and steady["tc_ratio"] == pytest.approx(1.0)
    assert flick["cdc_d1"] > 5 * steady["cdc_d1"] and flick["cdc"] > 2 * steady["cdc"]
    # frames t and t+2 (or t+4) are both bright or both dark: no flicker seen at even d
    for key in ("cdc_d2", "cdc_d4"):
        assert flick[key] == pytest.approx(steady[key], rel=1e-9), key


# ----------------------------------------------------------------------------- colour histograms
def test_js_divergence_of_tiny_histograms_matches_hand_values():
    # disjoint supports: M = [1/2, 1/2], each KL = ln 2, JSD = ln 2
    assert metrics.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(math.log(2))
    # P = [1/2, 1/2], Q = [1, 0], M = [3/4, 1/4]: KL(P||M) = 1/2 ln(2/3) + 1/2 ln 2
    # = 1/2 ln(4/3), KL(Q||M) = ln(4/3), JSD = 3/4 ln(4/3) = 0.215762
    assert metrics.js_divergence([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.75 * math.log(4 / 3))
    assert metrics.js_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_colour_histograms_are_normalised_per_channel():
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[0, 0] = (255, 7, 0)
    hists = metrics.colour_histograms(frame)
    assert hists.shape == (3, 256)
    np.testing.assert_allclose(hists.sum(axis=1), 1.0)
    assert hists[0, 0] == 0.75 and hists[0, 255] == 0.25 and hists[1, 7] == 0.25
    assert hists[2, 0] == 1.0


# ----------------------------------------------------------------------------- many shots
def shot(frames, psnr, warp, warp_gt, cdc1, cdc2, cdc4):
    return {"frames": frames, "psnr": psnr, "ssim": psnr / 100, "warp_pairs": frames - 1,
            "warp_error": warp, "warp_error_gt": warp_gt,
            "tc_ratio": metrics.tc_ratio(warp, warp_gt),
            "cdc_d1": cdc1, "cdc_d2": cdc2, "cdc_d4": cdc4, "cdc": None}


def test_summarize_weights_by_frames_and_pairs():
    per_shot = {"a": shot(3, 30.0, 0.01, 0.01, 0.1, 0.2, None),
                "b": shot(6, 40.0, 0.04, 0.01, 0.4, 0.5, 0.6)}
    overall = metrics.summarize(per_shot)
    assert overall["shots"] == 2 and overall["frames"] == 9 and overall["warp_pairs"] == 7
    assert overall["psnr"] == pytest.approx((3 * 30 + 6 * 40) / 9)          # 36.667
    assert overall["ssim"] == pytest.approx((3 * 0.30 + 6 * 0.40) / 9)
    assert overall["warp_error"] == pytest.approx((2 * 0.01 + 5 * 0.04) / 7)  # 0.031429
    assert overall["warp_error_gt"] == pytest.approx(0.01)
    # ratio of the overall errors (3.1429), not the mean of the shots' ratios (2.5)
    assert overall["tc_ratio"] == pytest.approx(0.22 / 7 / 0.01)
    assert overall["cdc_d1"] == pytest.approx((2 * 0.1 + 5 * 0.4) / 7)
    assert overall["cdc_d2"] == pytest.approx((1 * 0.2 + 4 * 0.5) / 5)
    assert overall["cdc_d4"] == pytest.approx(0.6)  # shot a has no pair 4 frames apart
    assert overall["cdc"] == pytest.approx((2.2 / 7 + 2.2 / 5 + 0.6) / 3)


def test_summarize_equals_streaming_over_all_pairs():
    gt = pan_video(n=7)
    flicker = [shift(f, 20) if t % 2 else f for t, f in enumerate(gt)]
    per_shot = {"one": run(flicker[:3], gt[:3]), "two": run(flicker[3:], gt[3:])}
    overall = metrics.summarize(per_shot)
    # pair-weighted mean of the shots = mean over the 2 + 3 pairs they hold
    pair_errors = []
    for lo, hi in ((0, 3), (3, 7)):
        vm = metrics.VideoMetrics()
        pair_errors += [vm.update(o, g).get("warp_error")
                        for o, g in zip(flicker[lo:hi], gt[lo:hi])][1:]
    assert overall["warp_error"] == pytest.approx(np.mean(pair_errors), rel=1e-9)


def test_streaming_state_is_bounded():
    frames = [texture(height=32, width=32, seed=s) for s in range(20)]
    vm = metrics.VideoMetrics()
    held = []
    for frame in frames:
        vm.update(frame, frames[0])
        held.append(_array_bytes(vars(vm)))
    assert len(vm._out_hists) == 4 and vm.frames == 20
    assert held[-1] == held[5] == max(held)  # nothing grows after the first 4 histograms


def _array_bytes(obj) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_array_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "deque":
        return sum(_array_bytes(v) for v in obj)
    return 0


def test_update_rejects_mismatched_frames():
    vm = metrics.VideoMetrics()
    with pytest.raises(ValueError, match="differ in shape"):
        vm.update(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        vm.update(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8))


# ----------------------------------------------------------------------------- reporting
def test_table_and_json_report_every_shot_and_none_as_missing(tmp_path):
    per_shot = {"shot_long_name": shot(6, 40.0, 0.04, 0.01, 0.4, 0.5, 0.6),
                "s2": shot(1, 30.0, None, None, None, None, None)}
    overall = metrics.summarize(per_shot)
    table = metrics.format_table(per_shot, overall).splitlines()
    assert table[0].split() == ["shot", "frames", "PSNR", "SSIM", "Ewarp", "Ewarp_GT",
                                "ratio", "CDC"]
    assert table[3].split()[:3] == ["s2", "1", "30.00"] and table[3].split()[-1] == "-"
    assert table[-1].split()[:3] == ["overall", "7", "38.57"]
    path = tmp_path / "sub" / "metrics.json"
    extra = {"epoch": np.int64(3), "checkpoint": tmp_path / "g.pt"}
    metrics.write_metrics_json(path, per_shot, overall, extra=extra)
    data = json.loads(path.read_text())
    assert data["epoch"] == 3 and data["checkpoint"] == str(tmp_path / "g.pt")
    assert data["shots"]["s2"]["warp_error"] is None
    assert data["overall"]["psnr"] == pytest.approx((6 * 40 + 30) / 7)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left
