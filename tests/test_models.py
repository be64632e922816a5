"""Generators, discriminator, model config, cost counting and original-checkpoint loading."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import correspond
import models
import utils
from correspond import Source, Sources

REFERENCE = (Path(__file__).resolve().parents[2] / "shared" / "reference"
             / "original_tcvc_state_dicts.txt")


def _parse_reference(tag: str) -> list:
    """[(key, shape)] of the original's G or D, in file order, from the reference listing."""
    rows = []
    for line in REFERENCE.read_text().splitlines():
        if line.startswith(tag + " "):
            _, key, shape = line.split(" ", 2)
            rows.append((key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())))
    return rows


def _layout(model: nn.Module) -> list:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return models.ResNetGenerator()


def random_sources(b, h, w=None, seed=0, prev_present=None, key_present=None, flow=False) -> Sources:
    """Random line art and sources for a batch of b frames of (h, w)."""
    w = w or h
    gen = torch.Generator().manual_seed(seed)

    def source(present):
        present = torch.ones(b) if present is None else torch.tensor(present, dtype=torch.float32)
        return Source(torch.rand(b, 3, h, w, generator=gen), present, torch.rand(b, 1, h, w, generator=gen),
                      torch.randn(b, 2, h, w, generator=gen) if flow else None)
    return Sources(torch.rand(b, 1, h, w, generator=gen), source(prev_present), source(key_present))


def test_unet_output_shape_and_range():
    torch.manual_seed(0)
    net = models.build_generator(models.ModelConfig())
    out = net(random_sources(2, 32, 64, flow=True))
    assert out.colour.shape == (2, 3, 32, 64) and out.condition.shape == (2, 4, 32, 64)
    assert 0 <= out.colour.min() and out.colour.max() <= 1 and out.colour.std() > 0
    assert out.weights.shape == (2, 3, 32, 64) and torch.allclose(out.weights.sum(1), torch.ones(2, 32, 64))
    # the output is the blend the weights say, of the candidates it reports
    assert torch.allclose((out.weights[:, :, None] * out.candidates).sum(1), out.colour, atol=1e-6)


def test_resnet_output_shape_and_range(resnet):
    sources = random_sources(1, 32)
    out = resnet(sources)
    assert out.colour.shape == (1, 3, 32, 32)
    assert 0 <= out.colour.min() and out.colour.max() <= 1 and out.colour.std() > 0
    assert torch.equal(out.condition, torch.cat([sources.line, sources.prev.colour], 1))


def test_generator_rejects_sizes_not_divisible():
    net = models.UNetGenerator(ngf=8, depth=4)
    with pytest.raises(utils.UserError, match="divisible by 16"):
        net(random_sources(1, 40, 48))
    with pytest.raises(utils.UserError, match="at least 32"):
        net(random_sources(1, 16))
    with pytest.raises(utils.UserError, match="--image_size 40 .unet generator. needs H and W divisible by 16"):
        models.ModelConfig().check_size(40, 40, "--image_size 40")
    models.ModelConfig("resnet").check_size(20, 20, "--image_size 20")  # the original's rule: 4


def test_discriminator_output_shape():
    d = models.build_discriminator(models.ModelConfig())
    # 64 -> 32 -> 16 -> 8 (stride 2 convs) -> 7 -> 6 (4x4 stride 1, padding 1).
    assert d(torch.rand(2, 7, 64, 64)).shape == (2, 1, 6, 6)


@pytest.mark.skipif(not REFERENCE.is_file(), reason="../shared/reference is not present")
def test_state_dict_layouts_equal_the_original(resnet):
    assert _layout(resnet) == _parse_reference("G")
    assert _layout(models.PatchDiscriminator()) == _parse_reference("D")


def test_parameter_counts_equal_the_original(resnet):
    d = models.PatchDiscriminator()
    assert models.count_parameters(resnet) == 10_774_595
    assert models.count_parameters(d) == 2_767_872
    # conv1 and features are one module: same storage under both keys.
    sd = d.state_dict()
    assert sd["conv1.0.weight_orig"].data_ptr() == sd["features.0.weight_orig"].data_ptr()


def test_original_generator_checkpoint_reproduces_outputs(tmp_path, resnet):
    path = tmp_path / "netG.pth"
    torch.save({"generator": resnet.state_dict()}, path)
    kind, sd = models.load_original_checkpoint(path)
    assert kind == "generator"
    torch.manual_seed(1)
    fresh = models.build_generator(models.ModelConfig("resnet"))
    x = random_sources(1, 32)
    assert not torch.allclose(fresh(x).colour, resnet(x).colour)
    models.load_state_strict(fresh, sd, "generator")
    torch.testing.assert_close(fresh(x).colour, resnet(x).colour, rtol=0, atol=0)


def test_original_discriminator_checkpoint_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    d = models.PatchDiscriminator()
    d(torch.rand(1, 7, 64, 64))  # a training-mode pass moves the power-iteration vectors
    d.eval()
    path = tmp_path / "netD.pth"
    torch.save({"discriminator": d.state_dict()}, path)
    kind, sd = models.load_original_checkpoint(path)
    torch.manual_seed(1)
    fresh = models.PatchDiscriminator().eval()
    models.load_state_strict(fresh, sd, kind)
    x = torch.rand(1, 7, 64, 64)
    torch.testing.assert_close(fresh(x), d(x), rtol=0, atol=0)


def test_convert_state_dict_accepts_bare_and_data_parallel():
    sd = {"module." + k: v for k, v in models.PatchDiscriminator().state_dict().items()}
    kind, out = models.convert_state_dict(sd)
    assert kind == "discriminator" and "conv5.0.weight_orig" in out
    with pytest.raises(utils.UserError, match="not an original TCVC checkpoint"):
        models.convert_state_dict({"optimizer": {}})


def test_unet_weights_into_resnet_is_one_line_user_error(resnet):
    unet_sd = models.UNetGenerator(ngf=8).state_dict()
    with pytest.raises(utils.UserError) as info:
        models.load_state_strict(resnet, unet_sd, "generator")
    message = str(info.value)
    assert "\n" not in message
    assert "ResNetGenerator" in message and "look like UNetGenerator" in message
    assert "missing keys (e.g. encoder.1.weight)" in message


def test_shape_mismatch_is_named():
    small = models.UNetGenerator(ngf=8).state_dict()
    with pytest.raises(utils.UserError, match=r"shape mismatches \(e.g. stem.0.0.weight"):
        models.load_state_strict(models.UNetGenerator(ngf=16), small)


def test_unreadable_checkpoint_is_user_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(utils.UserError, match="cannot read checkpoint"):
        models.load_original_checkpoint(bad)
    with pytest.raises(utils.UserError, match="does not exist"):
        models.load_original_checkpoint(tmp_path / "missing.pth")


def test_model_config_round_trip_and_defaults():
    cfg = models.ModelConfig("resnet")
    assert (cfg.ngf, cfg.n_blocks) == (64, 8)  # the original's, resolved at construction
    assert (models.ModelConfig().ngf, models.ModelConfig().n_blocks) == (32, 2)
    d = json.loads(json.dumps(cfg.to_dict()))  # plain types only
    assert models.ModelConfig.from_dict(d) == cfg
    with pytest.raises(utils.UserError, match="unknown model setting.*bogus"):
        models.ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(utils.UserError, match="unknown generator"):
        models.ModelConfig("vit")
    with pytest.raises(utils.UserError, match="depth"):
        models.ModelConfig(depth=0)


def test_gflops_is_twice_the_multiply_adds():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    # 16x16 outputs, each 3 channels x (2 x 3 x 3) multiply-adds.
    expected = 2 * 16 * 16 * 3 * 2 * 3 * 3 / 1e9
    assert models.gflops_per_frame(conv, 16, example=torch.zeros(1, 2, 16, 16)) == pytest.approx(expected)


def test_unet_costs_at_most_half_the_original(resnet):
    # Fully convolutional nets: the FLOPs ratio does not depend on the frame size.
    unet = models.build_generator(models.ModelConfig())
    ratio = models.gflops_per_frame(unet, 64) / models.gflops_per_frame(resnet, 64)
    assert ratio <= 0.5
    assert models.count_parameters(unet) <= models.count_parameters(resnet)


def test_main_prints_every_network(capsys):
    assert models.main(models.build_parser().parse_args(["--image_size", "32"])) == 0
    out = capsys.readouterr().out
    assert "10,774,595" in out and "2,767,872" in out and "unet generator" in out


# ----------------------------------------------------------------------------- the copy path
def test_config_defaults_and_legacy_configs():
    unet, resnet = models.ModelConfig(), models.ModelConfig("resnet")
    assert (unet.copy_path, unet.keyframe_input, unet.correspondence, unet.in_channels) == (True, True, "flow", 11)
    assert (resnet.copy_path, resnet.keyframe_input, resnet.correspondence, resnet.in_channels) == (
        False, False, "none", 4)
    assert models.ModelConfig(keyframe_input=False).in_channels == 6
    # a config saved before the copy path existed is the plain U-Net fed cat(line art, previous)
    old = {"generator": "unet", "in_channels": 4, "out_channels": 3, "ngf": 8, "n_blocks": 2, "depth": 4,
           "ndf": 64, "d_in_channels": 7}
    legacy = models.ModelConfig.from_dict(old)
    assert (legacy.copy_path, legacy.keyframe_input, legacy.correspondence, legacy.in_channels) == (
        False, False, "none", 4)
    # one saved under the settings' earlier names reads as the same model
    before_renames = {**old, "in_channels": 6, "propagate": True, "reference": False, "warp": "flow"}
    assert models.ModelConfig.from_dict(before_renames) == models.ModelConfig(ngf=8, keyframe_input=False, still_window=0,
                                                                              keyframe_resample="bilinear", flow_scale=1,
                                                                              source_split="learned")
    assert models.ModelConfig.from_dict(unet.to_dict()) == unet
    with pytest.raises(utils.UserError, match="original network"):
        models.ModelConfig("resnet", keyframe_input=True)
    with pytest.raises(utils.UserError, match="not a dict"):
        models.ModelConfig.from_dict("unet")
    with pytest.raises(utils.UserError, match="unknown model setting"):
        models.ModelConfig.from_dict({**unet.to_dict(), "colour_space": "lab"})


def test_the_still_window_is_a_model_setting_that_older_checkpoints_read_as_off():
    """A model records the flow it was trained on: a new model with a flow gets STILL_WINDOW, one
    without gets 0, a config written before the setting existed reads as 0 (off, the flow it was
    trained on), a window round-trips, and a window that is not a whole number >= 0, or one for a
    model without a flow, is one clear line."""
    assert models.ModelConfig().still_window == models.STILL_WINDOW > 0
    assert models.ModelConfig(correspondence="none").still_window == models.ModelConfig("resnet").still_window == 0
    windowed = models.ModelConfig(ngf=8, still_window=9)
    assert models.ModelConfig.from_dict(json.loads(json.dumps(windowed.to_dict()))).still_window == 9
    before = {k: v for k, v in models.ModelConfig(ngf=8).to_dict().items() if k != "still_window"}
    assert models.ModelConfig.from_dict(before).still_window == 0
    for bad in (-1, 2.5, True, "9"):
        with pytest.raises(utils.UserError, match="still window must be a whole number"):
            models.ModelConfig(still_window=bad)
    with pytest.raises(utils.UserError, match="correspondence 'none' has no flow"):
        models.ModelConfig(correspondence="none", still_window=5)
    with pytest.raises(utils.UserError, match="no flow"):
        models.ModelConfig("resnet", still_window=5)


def test_the_keyframe_resampling_is_a_model_setting_that_older_checkpoints_read_as_bilinear():
    """A new model resamples its keyframe as KEYFRAME_RESAMPLE says, a config written before the
    setting existed reads as bilinear (what it was trained with), a choice round-trips, and an
    unknown one is one clear line."""
    assert models.ModelConfig().keyframe_resample == models.KEYFRAME_RESAMPLE == "bicubic"
    chosen = models.ModelConfig(ngf=8, keyframe_resample="bilinear")
    assert models.ModelConfig.from_dict(json.loads(json.dumps(chosen.to_dict()))).keyframe_resample == "bilinear"
    assert models.ModelConfig.from_dict(models.ModelConfig(ngf=8).to_dict()).keyframe_resample == "bicubic"
    before = {k: v for k, v in models.ModelConfig(ngf=8).to_dict().items() if k != "keyframe_resample"}
    assert models.ModelConfig.from_dict(before).keyframe_resample == "bilinear"
    assert models.build_generator(chosen).keyframe_resample == "bilinear"
    for bad in ("nearest", "", "Bicubic", 3):
        with pytest.raises(utils.UserError, match="unknown resampling"):
            models.ModelConfig(keyframe_resample=bad)


def test_legacy_unet_state_dict_is_unchanged():
    """The legacy config builds the very network older checkpoints hold: same keys and shapes."""
    legacy = models.build_generator(models.ModelConfig(copy_path=False, keyframe_input=False, correspondence="none",
                                                       ngf=8))
    new = models.build_generator(models.ModelConfig(ngf=8))
    assert legacy.head.weight.shape == (3, 8, 3, 3) and legacy.stem[0][0].weight.shape[1] == 4
    assert new.head.weight.shape == (3 + 3, 8 + 11, 3, 3)  # colour + 3 logits; features + raw input
    assert _layout(legacy)[:-2] != _layout(new)[:-2]
    assert not any(k.startswith("correspond.") for k in new.state_dict())  # the flow has no weights


def test_warp_zero_flow_is_identity_and_shift_moves_pixels():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 8, 10)
    zero = torch.zeros(1, 2, 8, 10)
    assert torch.allclose(correspond.warp(image, zero), image, atol=1e-5)
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 2.0  # out(x) = image(x + 2)
    assert torch.allclose(correspond.warp(image, flow)[..., :8], image[..., 2:], atol=1e-5)
    assert torch.allclose(correspond.warp(image, flow)[..., 9], image[..., 9], atol=1e-5)  # border repeated


def test_generator_input_by_name_and_absent_sources():
    net = models.build_generator(models.ModelConfig(ngf=8, depth=2, correspondence="none"))
    s = random_sources(2, 16, prev_present=[1.0, 0.0], key_present=[0.0, 1.0])
    x, aligned = net.input_tensor(s)
    assert x.shape == (2, 11, 16, 16)
    prev, key = aligned
    assert torch.equal(prev.colour[0], s.prev.colour[0]) and prev.colour[1].abs().sum() == 0
    assert torch.equal(prev.line[0], s.prev.line[0]) and prev.line[1].abs().sum() == 0
    assert key.colour[0].abs().sum() == 0 and torch.equal(key.colour[1], s.keyframe.colour[1])
    # the input holds them in the documented order: line | prev colour, line, presence | keyframe ...
    assert torch.equal(x[:, 0:1], s.line) and torch.equal(x[:, 1:4], prev.colour)
    assert x[:, 5].flatten(1).mean(1).tolist() == [1.0, 0.0] and x[:, 10].flatten(1).mean(1).tolist() == [0.0, 1.0]
    # no keyframe at all: zeros in its place, same layout
    x2, _ = net.input_tensor(Sources(s.line, s.prev))
    assert x2.shape == (2, 11, 16, 16) and x2[:, 6:].abs().sum() == 0
    legacy = models.build_generator(models.ModelConfig(ngf=8, copy_path=False, keyframe_input=False,
                                                       correspondence="none"))
    assert legacy.input_tensor(s)[0].shape == (2, 4, 16, 16)
    assert net(s).colour.shape == (2, 3, 16, 16)


def test_flow_correspondence_warps_each_source_along_its_own_flow():
    """Each source along its own flow: the previous frame resampled bilinearly, the keyframe as
    the model's keyframe_resample says (bicubic for a new model; a model may be told otherwise)."""
    net = models.build_generator(models.ModelConfig(ngf=8, depth=2))
    s = random_sources(1, 16, flow=True)
    prev, key = net.aligned_sources(s)
    assert torch.allclose(prev.colour, correspond.warp(s.prev.colour, s.prev.flow))
    assert torch.allclose(key.colour, correspond.warp(s.keyframe.colour, s.keyframe.flow, "bicubic"))
    assert torch.allclose(key.line, correspond.warp(s.keyframe.line, s.keyframe.flow, "bicubic"))
    assert not torch.allclose(key.colour, correspond.warp(s.keyframe.colour, s.keyframe.flow), atol=1e-3)
    assert torch.allclose(net(s).condition[:, 1:], prev.colour)  # D is conditioned on the aligned frame
    net.keyframe_resample = "bilinear"
    assert torch.allclose(net.aligned_sources(s)[1].colour, correspond.warp(s.keyframe.colour, s.keyframe.flow))


def test_bicubic_warp_interpolates_a_subpixel_shift_better_and_never_leaves_its_neighbours_range():
    """A smooth image shifted by a fraction of a pixel: bicubic resampling is nearer the exactly
    shifted image than bilinear (it fits a cubic through four pixels, bilinear a line through two);
    a whole-pixel shift and a zero flow return the pixels themselves; and every value lies within
    the range of the 2 x 2 pixels bilinear blends there (found here pixel by pixel), where the cubic
    alone overshoots beside a sharp edge."""
    h, w = 16, 40
    xs = torch.arange(w, dtype=torch.float32)
    wave = lambda shift: (0.5 + 0.4 * torch.sin(2 * math.pi * (xs + shift) / 9.0)).expand(1, 3, h, w)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 0.37
    inner = (..., slice(3, w - 3))  # away from the repeated borders
    err = {mode: (correspond.warp(wave(0.0), flow, mode) - wave(0.37))[inner].abs().max().item()
           for mode in correspond.RESAMPLES}
    assert err["bicubic"] < err["bilinear"] / 2  # 0.010 against 0.022 here
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, h, w, generator=gen)
    assert torch.allclose(correspond.warp(image, torch.zeros_like(flow), "bicubic"), image, atol=1e-5)
    flow[:, 0] = 2.0
    assert torch.allclose(correspond.warp(image, flow, "bicubic")[..., :w - 2], image[..., 2:], atol=1e-5)
    edge = torch.zeros(1, 1, h, w)
    edge[..., w // 2:] = 1.0
    flow[:, 0] = 0.5
    gy, gx = torch.meshgrid(torch.linspace(-1, 1, h), (torch.arange(w) + 0.5) * 2 / (w - 1) - 1, indexing="ij")
    cubic = torch.nn.functional.grid_sample(edge, torch.stack([gx, gy], -1)[None], mode="bicubic", align_corners=True)
    assert cubic.min() < -0.05  # the cubic alone, sampled half a pixel to the right, rings beside the edge
    out = correspond.warp(edge, flow, "bicubic")
    assert out.min() >= 0 and out.max() <= 1 and ((out > 0) & (out < 1)).any()
    flow = 3 * torch.randn(1, 2, h, w, generator=gen)
    out = correspond.warp(image, flow, "bicubic")
    for y, x in [(0, 0), (5, 7), (9, 20), (15, 39), (3, 33), (12, 2)]:
        sx = min(max(x + flow[0, 0, y, x].item(), 0), w - 1)
        sy = min(max(y + flow[0, 1, y, x].item(), 0), h - 1)
        x0, y0 = int(math.floor(sx)), int(math.floor(sy))
        block = image[0, :, y0:min(y0 + 2, h), x0:min(x0 + 2, w)].flatten(1)
        assert (out[0, :, y, x] >= block.min(1).values - 1e-6).all() and (out[0, :, y, x] <= block.max(1).values + 1e-6).all()
    assert not torch.allclose(out, correspond.warp(image, flow), atol=1e-3)  # and it is not bilinear
    with pytest.raises(utils.UserError, match="unknown resampling"):
        correspond.warp(image, flow, "lanczos")


def test_absent_source_gets_no_weight():
    """A blend can never copy a source marked absent, whatever the logits say."""
    ones = torch.ones(1, 3, 4, 4)
    aligned = [Source(ones, torch.zeros(1)),           # a white previous frame, marked absent
               Source(0.5 * ones, torch.ones(1))]      # a grey keyframe, present
    head = torch.zeros(1, 6, 4, 4)
    head[:, :3] = -20.0              # generated colour ~0
    head[:, 4] = 50.0                # logits strongly favour the absent previous frame
    out = models.blend_sources(head, aligned, torch.zeros(1, 4, 4, 4))
    assert torch.allclose(out.colour, torch.full_like(out.colour, 0.25), atol=1e-4)  # half black, half keyframe
    assert out.weights[:, 1].max() < 1e-6


def test_an_even_split_shares_the_copied_weight_equally_between_the_present_sources():
    """With split 'even' the generated colour keeps its softmax weight and the present sources share
    the rest equally, whatever their own logits say; an absent source still gets nothing; with
    'learned' the logits set the split. The sources' logits still reach the generated weight."""
    white, grey = torch.ones(1, 3, 4, 4), 0.5 * torch.ones(1, 3, 4, 4)
    both = [Source(white, torch.ones(1)), Source(grey, torch.ones(1))]
    head = torch.zeros(1, 6, 4, 4)
    head[:, :3] = -20.0                  # generated colour ~0 (black)
    head[:, 3] = 1.0                     # generated logit
    head[:, 4], head[:, 5] = 4.0, 1.0    # the previous frame's logit far above the keyframe's
    learned = models.blend_sources(head, both, torch.zeros(1, 4, 4, 4), "learned")
    even = models.blend_sources(head, both, torch.zeros(1, 4, 4, 4), "even")
    soft = torch.softmax(torch.tensor([1.0, 4.0, 1.0]), 0)
    assert torch.allclose(learned.weights[0, :, 0, 0], soft, atol=1e-6)
    g = soft[0]
    assert torch.allclose(even.weights[0, :, 0, 0], torch.stack([g, (1 - g) / 2, (1 - g) / 2]), atol=1e-6)
    assert torch.allclose(even.colour, (1 - g) * (white + grey) / 2, atol=1e-4)      # not the learned 0.87 white
    assert not torch.allclose(learned.colour, even.colour, atol=1e-2)
    assert torch.allclose(even.weights.sum(1), torch.ones(1, 4, 4))
    # an absent previous frame: the keyframe takes all that the generated colour leaves
    absent = [Source(white, torch.zeros(1)), Source(grey, torch.ones(1))]
    one = models.blend_sources(head, absent, torch.zeros(1, 4, 4, 4), "even")
    g1 = torch.softmax(torch.tensor([1.0, 1.0]), 0)[0]
    assert one.weights[:, 1].max() < 1e-6
    assert torch.allclose(one.weights[0, :, 0, 0], torch.stack([g1, torch.tensor(0.0), 1 - g1]), atol=1e-6)
    # the sources' logits move the generated weight, so the network still learns how much to copy
    head.requires_grad_(True)
    models.blend_sources(head, both, torch.zeros(1, 4, 4, 4), "even").weights[:, 0].sum().backward()
    assert head.grad[:, 4].abs().sum() > 0 and head.grad[:, 3].abs().sum() > 0
    with pytest.raises(ValueError, match="unknown source split"):
        models.blend_sources(head, both, torch.zeros(1, 4, 4, 4), "mean")


def test_the_source_split_is_a_model_setting_that_older_checkpoints_read_as_learned():
    """A new select model splits evenly, a new model of any other correspondence learns the split,
    one saved before the setting existed reads as 'learned' (how it was trained), a choice
    round-trips and reaches the generator, and an unknown one is one clear line."""
    assert models.EVEN_SPLIT_CORRESPONDENCES == ("select",)
    assert models.ModelConfig(correspondence="select").source_split == "even"
    for other in ("flow", "match", "none"):
        assert models.ModelConfig(correspondence=other).source_split == "learned"
    assert models.ModelConfig().source_split == "learned"  # the default correspondence, flow
    chosen = models.ModelConfig(ngf=8, source_split="even")
    assert models.ModelConfig.from_dict(json.loads(json.dumps(chosen.to_dict()))).source_split == "even"
    assert models.build_generator(chosen).source_split == "even"
    assert models.build_generator(models.ModelConfig(ngf=8)).source_split == "learned"
    select = models.ModelConfig(ngf=8, correspondence="select")
    assert models.ModelConfig.from_dict(select.to_dict()).source_split == "even"
    before = {k: v for k, v in select.to_dict().items() if k != "source_split"}
    assert models.ModelConfig.from_dict(before).source_split == "learned"
    for bad in ("mean", "", "Even", 1):
        with pytest.raises(utils.UserError, match="unknown source split"):
            models.ModelConfig(source_split=bad)


def _flat_colour_images(n, size, seed):
    """Images of a few flat-coloured rectangles: colours that only a copy can reproduce exactly."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        images[i] = torch.rand(3, 1, 1, generator=gen)
        for _ in range(3):
            y, x = torch.randint(0, size - 8, (2,), generator=gen).tolist()
            images[i, :, y:y + 8, x:x + 8] = torch.rand(3, 1, 1, generator=gen)
    return images


def _train_copy(propagate: bool) -> float:
    """Train a tiny generator for 40 steps on (line art, prev = target) and return its L1 error
    on unseen images with the same setup."""
    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8, depth=2, n_blocks=1, copy_path=propagate, keyframe_input=False,
                             correspondence="none")
    G = models.build_generator(cfg)
    opt = torch.optim.Adam(G.parameters(), lr=2e-3)

    def inputs(images):
        line = images.mean(1, keepdim=True)  # a stand-in for line art: the same for prev and target
        return Sources(line, Source(images, torch.ones(len(images)), line))

    for step in range(40):
        images = _flat_colour_images(8, 16, seed=step)
        loss = (G(inputs(images)).colour - images).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _flat_colour_images(8, 16, seed=999)
    with torch.no_grad():
        return (G(inputs(test)).colour - test).abs().mean().item()


def test_copy_path_reproduces_an_unchanged_previous_frame():
    with_path, without = _train_copy(True), _train_copy(False)
    print(f"L1 with the copy path {with_path:.4f}, without {without:.4f}")
    assert with_path < 0.5 * without and with_path < 0.03


def test_a_fresh_copy_path_starts_from_its_aligned_sources():
    """models.COPY_BIAS = b: untrained, the default U-Net gives the aligned previous frame and
    keyframe together 2 e^b / (1 + 2 e^b) of every pixel's weight, the same at every pixel (the
    blend logits' weights start at zero), the generated colour the rest, and one source alone
    e^b / (1 + e^b): its output is the mean of the two aligned sources, to a thousandth."""
    torch.manual_seed(0)
    G = models.build_generator(models.ModelConfig())
    sources = models.example_sources(2, 32)
    with torch.no_grad():
        out = G(sources)
    share = out.weights[:, 1:].sum(1)
    b = models.COPY_BIAS
    expected = 2 * math.exp(b) / (1 + 2 * math.exp(b))
    assert 0.999 < expected < 1
    assert torch.allclose(share, torch.full_like(share, expected), atol=1e-6)
    apart = dataclasses.replace(sources, prev=dataclasses.replace(sources.prev, colour=sources.prev.colour * 0 + 0.2),
                                keyframe=dataclasses.replace(sources.keyframe, colour=sources.keyframe.colour * 0 + 0.9))
    with torch.no_grad():
        assert torch.allclose(G(apart).colour, torch.full_like(out.colour, 0.55), atol=1e-3)
    no_key = dataclasses.replace(sources, keyframe=correspond.Source.absent(sources.line))
    with torch.no_grad():
        share = G(no_key).weights[:, 1].mean().item()
    assert abs(share - math.exp(b) / (1 + math.exp(b))) < 1e-6


def test_the_flow_scale_is_a_model_setting_that_older_checkpoints_read_as_1():
    """A new model with a flow computes it at FLOW_SCALE (2) times its resolution; one without a
    flow at 1; a checkpoint saved before the setting existed was trained at 1 and reads so. Other
    scales, and a scale for a model without a flow, are one clear line."""
    assert models.ModelConfig().flow_scale == models.FLOW_SCALE == 2
    assert models.ModelConfig(correspondence="none").flow_scale == models.ModelConfig("resnet").flow_scale == 1
    plain = models.ModelConfig(ngf=8, flow_scale=1)
    assert models.ModelConfig.from_dict(json.loads(json.dumps(plain.to_dict()))).flow_scale == 1
    before = {k: v for k, v in models.ModelConfig(ngf=8).to_dict().items() if k != "flow_scale"}
    assert models.ModelConfig.from_dict(before).flow_scale == 1
    for bad in (0, 3, 1.5, True, "2"):
        with pytest.raises(utils.UserError, match="flow scale must be one of 1, 2"):
            models.ModelConfig(flow_scale=bad)
    with pytest.raises(utils.UserError, match="'none' has no flow"):
        models.ModelConfig(correspondence="none", flow_scale=2)
