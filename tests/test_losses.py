"""Adversarial, L1, Gram, VGG19 content / style losses and VGG weight loading."""
import math

import pytest
import torch

import losses
import utils


def _softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


@pytest.fixture(scope="module")
def vgg():
    return losses.load_vgg19("random")


# Two patches each: real logits (0, 2), fake logits (-1, 3).
REAL, FAKE = torch.tensor([[[[0.0, 2.0]]]]), torch.tensor([[[[-1.0, 3.0]]]])
# -log sigma(x) = softplus(-x); -log(1 - sigma(x)) = softplus(x).
EXPECTED = {
    "nsgan": ((( _softplus(0) + _softplus(-2)) / 2 + (_softplus(-1) + _softplus(3)) / 2) / 2,
              (_softplus(1) + _softplus(-3)) / 2),
    "lsgan": ((((0 - 1) ** 2 + (2 - 1) ** 2) / 2 + ((-1) ** 2 + 3 ** 2) / 2) / 2,
              ((-1 - 1) ** 2 + (3 - 1) ** 2) / 2),
    "hinge": (((1 + 0) / 2 + (0 + 4) / 2) / 2, -(-1 + 3) / 2),
}


@pytest.mark.parametrize("kind", losses.GAN_KINDS)
def test_adversarial_losses_by_hand(kind):
    want_d, want_g = EXPECTED[kind]
    assert losses.d_loss(REAL, FAKE, kind).item() == pytest.approx(want_d, rel=1e-6)
    assert losses.g_adv_loss(FAKE, kind).item() == pytest.approx(want_g, rel=1e-6)


def test_unknown_gan_kind():
    with pytest.raises(utils.UserError, match="unknown GAN loss"):
        losses.g_adv_loss(FAKE, "wgan")


def test_l1_and_gram_by_hand():
    assert losses.l1_loss(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])).item() == 1.5
    feat = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (1, 2, 1, 2): rows (1, 2), (3, 4)
    # F F^T = [[1+4, 3+8], [3+8, 9+16]], divided by C*H*W = 4.
    want = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    torch.testing.assert_close(losses.gram_matrix(feat), want)


def test_vgg_features_are_the_named_relus(vgg):
    x = torch.rand(1, 3, 32, 32)
    feats = vgg(x)
    assert list(feats) == list(losses.VGG_LAYERS)
    normalised = (x - torch.tensor(losses.IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(losses.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(feats["relu1_1"], vgg.features[:2](normalised))
        torch.testing.assert_close(feats["relu3_4"], vgg.features[:18](normalised))
    assert feats["relu5_2"].shape == (1, 512, 2, 2)
    assert vgg.is_random


def test_one_pass_equals_original_separate_passes(vgg):
    torch.manual_seed(0)
    fake, real = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    content, style = losses.perceptual_and_style_losses(vgg, fake, real)
    torch.testing.assert_close(content, losses.original_perceptual_loss(vgg, fake, real),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(style, losses.original_style_loss(vgg, fake, real),
                               rtol=1e-5, atol=1e-5)
    assert content > 0 and style > 0
    zero_c, zero_s = losses.perceptual_and_style_losses(vgg, real, real)
    assert zero_c.item() == 0 and zero_s.item() == 0


def test_gradients_reach_fake_but_not_vgg(vgg):
    fake = torch.rand(1, 3, 32, 32, requires_grad=True)
    content, style = losses.perceptual_and_style_losses(vgg, fake, torch.rand(1, 3, 32, 32))
    (content + style).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())


def test_imagenet_weights_missing_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path))
    with pytest.raises(utils.UserError) as info:
        losses.load_vgg19("imagenet")
    message = str(info.value)
    assert "\n" not in message and losses.VGG19_URL in message and "random" in message
    assert str(tmp_path / "checkpoints") in message


def test_vgg_weights_file_round_trip(tmp_path, vgg):
    x = torch.rand(1, 3, 32, 32)
    # torchvision's full vgg19 keys ("features.N.*", plus a classifier we ignore) ...
    full = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(full, tmp_path / "vgg19.pth")
    # ... and a bare ``features`` state dict.
    torch.save(vgg.features.state_dict(), tmp_path / "features.pth")
    for name in ("vgg19.pth", "features.pth"):
        loaded = losses.load_vgg19(str(tmp_path / name))
        assert not loaded.is_random
        torch.testing.assert_close(loaded(x)["relu5_2"], vgg(x)["relu5_2"], rtol=0, atol=0)


def test_wrong_vgg_file_is_user_error(tmp_path):
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(utils.UserError, match="not a torchvision VGG19 state dict"):
        losses.load_vgg19(str(tmp_path / "wrong.pth"))
    with pytest.raises(utils.UserError, match="does not exist"):
        losses.load_vgg19(str(tmp_path / "absent.pth"))


def test_generator_loss_weighted_sum(vgg):
    fake, real = torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), 0.5)
    logits = torch.zeros(1, 1, 2, 2)
    # Without VGG: log 2 (nsgan at logit 0) + 10 * 0.5.
    total, parts = losses.GeneratorLoss(None, content=0, style=0)(logits, fake, real)
    assert total.item() == pytest.approx(math.log(2) + 5, rel=1e-6)
    assert parts["g_total"].item() == pytest.approx(total.item()) and parts["style"].item() == 0
    fake = torch.rand(1, 3, 32, 32)
    total, parts = losses.GeneratorLoss(vgg, adv=0.5)(logits, fake, real)
    content, style = losses.perceptual_and_style_losses(vgg, fake, real)
    want = 0.5 * math.log(2) + 10 * losses.l1_loss(fake, real) + content + 1000 * style
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    assert parts["content"].item() == pytest.approx(content.item(), rel=1e-6)
    # the parts stay on the device, detached: reading them is left to the log steps
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in parts.values())


def test_line_l1_is_the_mean_error_on_the_thickened_line_pixels():
    """A one-pixel vertical line at column 3 of an 8x8 frame: its line pixels are columns 2-4 (the
    3x3 thickening); an error of 0.6 there and 0.2 elsewhere gives 0.6, whatever lies elsewhere."""
    line = torch.ones(1, 1, 8, 8)
    line[..., 3] = 0.0
    assert losses.line_pixels(line)[0, 0, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    real = torch.zeros(1, 3, 8, 8)
    fake = torch.full((1, 3, 8, 8), 0.2)
    fake[..., 2:5] = 0.6
    assert losses.line_l1_loss(fake, real, line).item() == pytest.approx(0.6)
    assert losses.line_l1_loss(fake, real, torch.ones(1, 1, 8, 8)).item() == 0.0  # no lines: 0
    logits = torch.zeros(1, 1, 2, 2)
    total, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0, line_l1=2)(logits, fake, real, None, line)
    want = losses.l1_loss(fake, real).item() + 2 * 0.6
    assert parts["l1_lines"].item() == pytest.approx(0.6) and total.item() == pytest.approx(want)
    total, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0)(logits, fake, real, None, line)
    assert total.item() == pytest.approx(losses.l1_loss(fake, real).item())  # weight 0: logged only
    assert parts["l1_lines"].item() == pytest.approx(0.6)


def test_own_l1_weighs_the_generated_colour_before_the_blend():
    """own_l1: W x |own - real|_1 on top of the blended output's L1; the gradient reaches the
    generated colour itself only when W > 0 (at 0 it is logged from a detached copy)."""
    real = torch.zeros(1, 3, 4, 4)
    fake = torch.full((1, 3, 4, 4), 0.1)
    own = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)
    logits = torch.zeros(1, 1, 2, 2)
    total, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0, own_l1=3)(
        logits, fake, real, None, None, own)
    assert parts["l1_own"].item() == pytest.approx(0.5) and total.item() == pytest.approx(0.1 + 3 * 0.5)
    total.backward()
    assert own.grad is not None and torch.allclose(own.grad, torch.full_like(own, 3 / own.numel()))
    own.grad = None
    fake.requires_grad_(True)
    total, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0)(logits, fake, real, None, None, own)
    assert total.item() == pytest.approx(0.1) and parts["l1_own"].item() == pytest.approx(0.5)
    total.backward()
    assert fake.grad is not None and own.grad is None  # weight 0: logged only
    _, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0)(logits, fake, real)
    assert parts["l1_own"].item() == 0.0  # no copy path: nothing to weigh


def test_l2_weighs_the_squared_error_and_its_minimum_is_the_mean():
    """l2: W x mean (fake - real)^2 on top of the L1, logged at any weight. Between two equally
    likely truths 0.2 and 0.6 the squared error is least at their mean 0.4, where the L1 is flat
    (any value between them scores the same)."""
    real = torch.zeros(1, 3, 4, 4)
    fake = torch.full((1, 3, 4, 4), 0.3, requires_grad=True)
    logits = torch.zeros(1, 1, 2, 2)
    total, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0, l2=2)(logits, fake, real)
    assert parts["l2"].item() == pytest.approx(0.09) and total.item() == pytest.approx(0.3 + 2 * 0.09)
    total.backward()
    assert torch.allclose(fake.grad, torch.full_like(fake, (1 + 2 * 2 * 0.3) / fake.numel()))
    _, parts = losses.GeneratorLoss(None, adv=0, l1=1, content=0, style=0)(logits, fake.detach(), real)
    assert parts["l2"].item() == pytest.approx(0.09)  # weight 0: logged only

    def expected(loss, x):
        out = torch.full((1, 3, 2, 2), x)
        return (loss(out, torch.full_like(out, 0.2)) + loss(out, torch.full_like(out, 0.6))).item() / 2
    grid = [0.2 + 0.05 * k for k in range(9)]
    squared = [expected(losses.l2_loss, x) for x in grid]
    assert grid[squared.index(min(squared))] == pytest.approx(0.4)
    assert max(expected(losses.l1_loss, x) for x in grid) == pytest.approx(min(expected(losses.l1_loss, x) for x in grid))
