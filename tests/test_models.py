"""Generators, discriminator, model config, cost counting and original-checkpoint loading."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import models
import utils

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


def test_unet_output_shape_and_range():
    torch.manual_seed(0)
    net = models.build_generator(models.ModelConfig())
    x = torch.rand(2, 4, 32, 64)
    y = net(x)
    assert y.shape == (2, 3, 32, 64)
    assert 0 <= y.min() and y.max() <= 1 and y.std() > 0


def test_resnet_output_shape_and_range(resnet):
    y = resnet(torch.rand(1, 4, 32, 32))
    assert y.shape == (1, 3, 32, 32)
    assert 0 <= y.min() and y.max() <= 1 and y.std() > 0


def test_generator_rejects_sizes_not_divisible():
    net = models.UNetGenerator(ngf=8, depth=4)
    with pytest.raises(utils.UserError, match="divisible by 16"):
        net(torch.rand(1, 4, 40, 48))
    with pytest.raises(utils.UserError, match="at least 32"):
        net(torch.rand(1, 4, 16, 16))


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
    x = torch.rand(1, 4, 32, 32)
    assert not torch.allclose(fresh(x), resnet(x))
    models.load_state_strict(fresh, sd, "generator")
    torch.testing.assert_close(fresh(x), resnet(x), rtol=0, atol=0)


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
    assert models.gflops_per_frame(conv, 16, in_channels=2) == pytest.approx(expected)


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
