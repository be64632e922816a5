"""Losses of TCVC: adversarial (nsgan / lsgan / hinge), L1, and VGG19 content and style.

The generator's objective is the original's (weights as its defaults):
    L_G = w_adv * L_adv + 10 * |fake - real|_1 + 1 * L_content + 1000 * L_style
``GeneratorLoss`` combines them. The discriminator returns raw logits; every adversarial
loss here takes logits (the nsgan losses use BCE-with-logits, which equals the original's
sigmoid + BCE and cannot overflow).

VGG19 differs from the original on purpose: its input is normalised with the ImageNet
mean / std that the pretrained weights expect (the original fed raw [0, 1] images), and
the content and style terms share one VGG pass on the fake and one on the real frame (the
original ran four passes per step). ``original_perceptual_loss`` / ``original_style_loss``
keep the original's way for reference and benchmarks.

Example (checks that the ImageNet VGG19 weights are where load_vgg19 looks for them):
    python -c "import losses; print(losses.load_vgg19('imagenet').is_random)"
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import utils

GAN_KINDS = ("nsgan", "lsgan", "hinge")


# ----------------------------------------------------------------------------- adversarial
def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise utils.UserError(f"unknown GAN loss {kind!r} (choose from {', '.join(GAN_KINDS)})")


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nsgan"
           ) -> torch.Tensor:
    """Discriminator loss (L_real + L_fake) / 2 for every kind (the original halves it too);
    r, f are patch logits, means are over all patches of the batch:
      nsgan: L_real = mean(-log sigma(r)),   L_fake = mean(-log(1 - sigma(f)))
      lsgan: L_real = mean((r - 1)^2),       L_fake = mean(f^2)
      hinge: L_real = mean(relu(1 - r)),     L_fake = mean(relu(1 + f))
    """
    _check_kind(kind)
    r, f = real_logits.float(), fake_logits.float()
    if kind == "nsgan":
        real = F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
        fake = F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
    elif kind == "lsgan":
        real, fake = ((r - 1) ** 2).mean(), (f ** 2).mean()
    else:
        real, fake = F.relu(1 - r).mean(), F.relu(1 + f).mean()
    return (real + fake) / 2


def g_adv_loss(fake_logits: torch.Tensor, kind: str = "nsgan") -> torch.Tensor:
    """Generator's adversarial loss on the logits f of its fakes, mean over patches:
      nsgan: mean(-log sigma(f))  (non-saturating, the original)
      lsgan: mean((f - 1)^2)
      hinge: mean(-f)
    """
    _check_kind(kind)
    f = fake_logits.float()
    if kind == "nsgan":
        return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    if kind == "lsgan":
        return ((f - 1) ** 2).mean()
    return -f.mean()


# ----------------------------------------------------------------------------- pixel, gram
def l1_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean |a - b| over every element."""
    return (a.float() - b.float()).abs().mean()


def l2_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean (a - b)^2 over every element: the mean squared error that PSNR is a log of."""
    return (a.float() - b.float()).square().mean()


def aligned_l2(aligned: list, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of aligned sources (``correspond.Source``, each (B, 3, H, W)) against
    frame t's truth ``target``, over the samples where the source is present: how well a learned
    correspondence brought each source onto frame t. 0 when no source is present."""
    total = count = target.new_zeros((), dtype=torch.float32)
    for source in aligned:
        present = source.present.float().view(-1, 1, 1, 1)
        total = total + ((source.colour.float() - target.float()).square() * present).sum()
        count = count + present.sum() * target[0].numel()
    return total / count.clamp(min=1)


def line_pixels(line: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) line art in [0, 1], black lines on white -> (B, 1, H, W) float mask of its line
    pixels thickened by one pixel each side (a 3x3 max): ``regions.segment``'s line pixels."""
    return F.max_pool2d((line < 0.5).float(), 3, stride=1, padding=1)


def line_l1_loss(fake: torch.Tensor, real: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
    """Mean |fake - real| over the line pixels of ``line`` (``line_pixels``) and the 3 channels;
    0 for a batch without lines. Where a study's error mostly lies (benchmarks/error_split.py)."""
    mask = line_pixels(line)
    return ((fake - real).abs() * mask).sum() / (3 * mask.sum()).clamp(min=1.0)


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C): G = F F^T / (C * H * W) with F = feat as (B, C, H*W), the
    original's normalisation. Always float32: under fp16 autocast the sums overflow."""
    b, c, h, w = feat.shape
    f = feat.float().reshape(b, c, h * w)
    with torch.autocast(device_type=feat.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


# ----------------------------------------------------------------------------- VGG19
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# Index of each ReLU in torchvision's vgg19().features; nothing after relu5_2 is needed.
VGG_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_4": 17,
              "relu4_1": 20, "relu4_4": 26, "relu5_1": 29, "relu5_2": 31}
CONTENT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLE_LAYERS = ("relu2_2", "relu3_4", "relu4_4", "relu5_2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG19 ``features`` up to relu5_2; ``forward`` maps an RGB batch in [0, 1]
    (B, 3, H, W) to a dict {layer name: activation} for every name in ``VGG_LAYERS``, in one
    pass. The input is normalised with the ImageNet mean / std inside (a deliberate fix: the
    original fed raw [0, 1] input to weights trained on normalised images)."""

    def __init__(self, features: nn.Sequential, is_random: bool = False):
        super().__init__()
        self.features = features
        self.is_random = is_random  # random weights: losses are meaningless, warn on outputs
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self._names = {index: name for name, index in VGG_LAYERS.items()}
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):                                   # (B, 3, H, W) in [0, 1]
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = {}
        for index, layer in enumerate(self.features):
            h = layer(h)                                    # (B, C_i, H / 2^k, W / 2^k)
            if index in self._names:
                out[self._names[index]] = h
        return out


def _vgg19_layers() -> nn.Sequential:
    """torchvision's vgg19 ``features`` truncated after relu5_2 (same indices, same keys).
    Built without the classifier: ``vgg19(weights=None)`` would allocate and initialise
    its 120 M unused classifier parameters."""
    from torchvision.models import vgg

    features = vgg.make_layers(vgg.cfgs["E"], batch_norm=False)[:VGG_LAYERS["relu5_2"] + 1]
    for module in features.modules():
        if isinstance(module, nn.Conv2d):  # torchvision's VGG init (keeps activations O(1))
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def imagenet_vgg19_path() -> Path:
    """Where torchvision's own download would have cached the ImageNet VGG19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_URL).name


def _read_vgg_state(path: Path, features: nn.Sequential) -> dict:
    """State dict for ``features`` from a torchvision vgg19 (or vgg19.features) file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors have many types; all mean "bad file"
        raise utils.UserError(f"cannot load VGG19 weights {path}: {str(err).splitlines()[0]}") \
            from None
    if not isinstance(obj, dict):
        raise utils.UserError(f"{path} is not a VGG19 state dict")
    if any(k.startswith("features.") for k in obj):
        obj = {k[len("features."):]: v for k, v in obj.items() if k.startswith("features.")}
    expected = features.state_dict()
    bad = [k for k, v in expected.items()
           if not isinstance(obj.get(k), torch.Tensor) or obj[k].shape != v.shape]
    if bad:
        raise utils.UserError(f"{path} is not a torchvision VGG19 state dict ({len(bad)} "
                              f"conv tensors missing or misshapen, e.g. {bad[0]})")
    return {k: obj[k] for k in expected}


def load_vgg19(weights: str = "imagenet") -> VGG19Features:
    """Frozen VGG19 feature extractor. ``weights``:
      'imagenet': torchvision's cached file ``<torch.hub.get_dir()>/checkpoints/
                  vgg19-dcbb9e9d.pth`` (never downloaded here: no network is assumed);
      a path:     a .pth state dict of torchvision's vgg19 or of its ``features``;
      'random':   fixed-seed random weights, ``is_random=True`` (offline smoke runs only).
    """
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
            torch.manual_seed(0)
            return VGG19Features(_vgg19_layers(), is_random=True)
    path = imagenet_vgg19_path() if weights == "imagenet" else Path(weights)
    if not path.is_file():
        if weights == "imagenet":
            raise utils.UserError(
                f"ImageNet VGG19 weights not found at {path}: download {VGG19_URL} into "
                f"{path.parent} on a machine with internet, or pass --vgg_weights PATH "
                "(or --vgg_weights random, for offline smoke runs only)")
        raise utils.UserError(f"VGG19 weights file {path} does not exist")
    features = _vgg19_layers()
    features.load_state_dict(_read_vgg_state(path, features))
    return VGG19Features(features, is_random=False)


# ----------------------------------------------------------------------------- content, style
def _content(fake_feats: dict, real_feats: dict) -> torch.Tensor:
    return sum(l1_loss(fake_feats[n], real_feats[n]) for n in CONTENT_LAYERS)


def _style(fake_feats: dict, real_feats: dict) -> torch.Tensor:
    return sum(l1_loss(gram_matrix(fake_feats[n]), gram_matrix(real_feats[n]))
               for n in STYLE_LAYERS)


def perceptual_and_style_losses(vgg: VGG19Features, fake: torch.Tensor, real: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(content, style) from one VGG pass on ``fake`` and one on ``real`` (no graph):
      content = sum_{l in relu1_1, 2_1, 3_1, 4_1, 5_1} mean |phi_l(fake) - phi_l(real)|
      style   = sum_{l in relu2_2, 3_4, 4_4, 5_2} mean |G(phi_l(fake)) - G(phi_l(real))|
    with G the Gram matrix of ``gram_matrix``; all layer weights 1, as the original."""
    fake_feats = vgg(fake)
    with torch.no_grad():
        real_feats = vgg(real)
    return _content(fake_feats, real_feats), _style(fake_feats, real_feats)


def _two_passes_fp32(vgg, fake, real):
    with torch.autocast(device_type=fake.device.type, enabled=False):
        return vgg(fake.float()), vgg(real.float())


def original_perceptual_loss(vgg: VGG19Features, fake, real) -> torch.Tensor:
    """The content term the original way: its own two VGG passes, fp32 (reference only)."""
    return _content(*_two_passes_fp32(vgg, fake, real))


def original_style_loss(vgg: VGG19Features, fake, real) -> torch.Tensor:
    """The style term the original way: its own two VGG passes, fp32 (reference only)."""
    return _style(*_two_passes_fp32(vgg, fake, real))


# ----------------------------------------------------------------------------- generator total
# ----------------------------------------------------------------------------- region matching
def match_loss(matches: list, target: torch.Tensor, level: float = 20.0 / 255.0) -> torch.Tensor:
    """Cross-entropy of the ``match`` correspondence's region matches (``matcher.Match``), pooled
    over every match of the batch and weighted by the square root of region area (the area
    itself lets a frame's few large, easy regions drown its many small ones): for region r of frame t, minus
    the log of the probability given to the source regions whose mean colour lies within
    ``level`` (RGB distance, 0-1 scale) of the truth's mean colour under r. A region no source
    region has the colour of (a new object, a disocclusion) counts nothing. 0 when there is
    nothing to count. ``target``: (B, 3, H, W) in [0, 1]."""
    total = weight = target.new_zeros((), dtype=torch.float32)  # on the device: no host reads here
    for m in matches or []:
        keep = m.labels >= 0
        lab = m.labels[keep]
        n = m.log_prob.shape[0]
        values = target[m.sample].float().reshape(3, -1)[:, keep].t()            # (P, 3)
        area = torch.bincount(lab, minlength=n).float()
        truth = torch.zeros(n, 3, device=values.device).index_add_(0, lab, values) / area.clamp(min=1)[:, None]
        right = (m.colours[m.candidates] - truth[:, None, :]).norm(dim=-1) <= level  # (n, K)
        counted = right.any(1)
        chosen = torch.logsumexp(m.log_prob.masked_fill(~right, float("-inf")), dim=1)  # -inf: counts nothing
        size = torch.where(counted, area.sqrt(), 0.0)  # a small region counts, but less than a large one
        total = total - (size * torch.where(counted, chosen, 0.0)).sum()
        weight = weight + size.sum()
    return total / weight.clamp(min=1e-12)


class GeneratorLoss:
    """L_G = adv * g_adv_loss(D(fake)) + l1 * |fake - real|_1 + content * L_content
    + style * L_style (+ match * ``match_loss`` with the ``match`` correspondence)
    + l2 * mean (fake - real)^2, the squared error (off by default): an L1 is least where the output
    is the median of what frame t may be, a squared error where it is the mean, and where the sources
    disagree the mean (a hedge between them) is what PSNR rewards
    + line_l1 * ``line_l1_loss`` (the L1 of frame t's line pixels, when its line art is given)
    + own_l1 * |own - real|_1, the L1 of the copy path's own generated colour before the blend
    (which starts at 0.02% of the output, so the plain L1 reaches it some 6000 times weakened).
    Defaults are the original's effective weights (it declared an
    adversarial weight of 0.1 but never applied it, so 1). With content = style = 0 no VGG
    is needed (``vgg=None``)."""

    def __init__(self, vgg: VGG19Features | None = None, gan_kind: str = "nsgan",
                 adv: float = 1.0, l1: float = 10.0, content: float = 1.0,
                 style: float = 1000.0, match: float = 1.0, line_l1: float = 0.0, own_l1: float = 0.0,
                 l2: float = 0.0):
        _check_kind(gan_kind)
        if vgg is None and (content or style):
            raise ValueError("content / style losses need a VGG19 (see load_vgg19)")
        self.vgg, self.gan_kind = vgg, gan_kind
        self.weights = {"g_adv": adv, "l1": l1, "content": content, "style": style, "match": match,
                        "l1_lines": line_l1, "l1_own": own_l1, "l2": l2}

    def __call__(self, fake_logits, fake, real, matches=None, line=None, own=None) -> tuple[torch.Tensor, dict]:
        """-> (total loss with graph, {'g_adv', 'l1', 'content', 'style', 'match', 'l1_lines', 'l1_own', 'l2',
        'g_total': detached 0-d tensor}) where the parts are unweighted and ``g_total`` is the weighted sum. The
        parts stay on the device: reading them is a host-device sync, left to the caller's
        log steps."""
        parts = {"g_adv": g_adv_loss(fake_logits, self.gan_kind), "l1": l1_loss(fake, real)}
        if self.weights["content"] or self.weights["style"]:
            parts["content"], parts["style"] = perceptual_and_style_losses(self.vgg, fake, real)
        else:
            parts["content"] = parts["style"] = torch.zeros((), device=fake.device)
        # the ``match`` correspondence's region matches (``match_loss``); 0 for the others
        parts["match"] = match_loss(matches, real) if matches else torch.zeros((), device=fake.device)
        # L1 once more on frame t's line pixels (``line_l1``); logged whenever the line art is given
        # (at weight 0 from a detached output: logged, kept out of the backward)
        if line is None:
            parts["l1_lines"] = torch.zeros((), device=fake.device)
        else:
            parts["l1_lines"] = line_l1_loss(fake if self.weights["l1_lines"] else fake.detach(), real, line)
        # the generator's own colour (``own``: the copy path's first candidate), logged like l1_lines
        if own is None:
            parts["l1_own"] = torch.zeros((), device=fake.device)
        else:
            parts["l1_own"] = l1_loss(own if self.weights["l1_own"] else own.detach(), real)
        # the squared error, logged at any weight (at 0 from a detached output, out of the backward)
        parts["l2"] = l2_loss(fake if self.weights["l2"] else fake.detach(), real)
        total = sum(self.weights[name] * value for name, value in parts.items())
        parts["g_total"] = total
        return total, {name: value.detach().float() for name, value in parts.items()}
