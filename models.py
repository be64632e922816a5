"""Generators and discriminator of TCVC, their config, cost measures and checkpoint loading.

Two generators, picked by ``ModelConfig.generator`` (``--generator`` in train.py):

- ``unet`` (default): ``UNetGenerator``, a U-Net with skip connections, about 28% of the
  original generator's FLOPs and fewer parameters (numbers in its docstring).
- ``resnet``: ``ResNetGenerator``, the original TCVC / EdgeConnect ``InpaintGenerator`` with
  exactly its state-dict layout, so the publicly circulating original weights load into it
  (``load_original_checkpoint`` + ``load_state_strict``).

Both take (B, 4, H, W) = cat(line art, previous colour frame) in [0, 1] and return RGB
(B, 3, H, W) in [0, 1] through ``(tanh(x) + 1) / 2``. ``PatchDiscriminator`` is the
original's 70x70 PatchGAN with spectral norm; it returns raw logits (the losses apply the
sigmoid inside BCE-with-logits).

``ModelConfig`` is stored in every checkpoint (``to_dict``) so that test.py rebuilds the
networks from the checkpoint alone (``from_dict`` + ``build_generator``).

Example (prints parameters and GFLOPs per 256x256 frame of every network):
    python models.py --image_size 256
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import utils

GENERATORS = ("unet", "resnet")
WARP_MODES = ("flow", "none")
# Per-generator defaults for the fields left as None in ModelConfig. The resnet values are
# the original's and the only ones its published weights fit.
_DEFAULTS = {"unet": {"ngf": 32, "n_blocks": 2, "propagate": True, "reference": True, "warp": "flow"},
             "resnet": {"ngf": 64, "n_blocks": 8, "propagate": False, "reference": False, "warp": "none"}}
# A config saved before propagation existed has none of these keys: it is the plain U-Net fed
# cat(line art, previous frame), and loads as exactly that network.
_LEGACY = {"propagate": False, "reference": False, "warp": "none"}

# Channels of the extended generator input (``assemble_input``), in this order:
#   0 line art t | 1-3 previous colour, warped onto t | 4 its line art, warped | 5 previous present
#   6-8 reference colour, warped onto t | 9 its line art, warped | 10 reference present
# The original layout is channels 0-4 only: cat(line art t, previous colour).
PREV, PREV_MASK, REF, REF_MASK = slice(1, 4), slice(5, 6), slice(6, 9), slice(10, 11)
# What the discriminator is conditioned on, in both layouts: line art t and the previous colour.
D_COND = slice(0, 4)


# ----------------------------------------------------------------------------- config
@dataclass
class ModelConfig:
    """Everything needed to rebuild the networks; saved in every checkpoint."""
    generator: str = "unet"       # 'unet' (ours, default) | 'resnet' (the original)
    in_channels: int | None = None  # generator input; None -> derived from the three below
    out_channels: int = 3         # RGB
    ngf: int | None = None        # generator base width; None -> 32 (unet) / 64 (resnet)
    n_blocks: int | None = None   # residual blocks in the bottleneck; None -> 2 / 8
    depth: int = 4                # unet only: downsamplings; H and W must divide by 2**depth
    ndf: int = 64                 # discriminator base width (64 -> 64, 128, 256, 512)
    d_in_channels: int = 7        # discriminator input: line art + previous + real/fake
    propagate: bool | None = None  # unet: output blends generated colour, warped previous
    #                                and warped reference per pixel (the copy path)
    reference: bool | None = None  # unet: a coloured keyframe (and its line art) at every frame
    warp: str | None = None        # 'flow': previous frame and keyframe are warped onto frame t
    #                                by optical flow between line arts; 'none'

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise utils.UserError(f"unknown generator {self.generator!r} "
                                  f"(choose from {', '.join(GENERATORS)})")
        for name, value in _DEFAULTS[self.generator].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.warp not in WARP_MODES:
            raise utils.UserError(f"unknown warp mode {self.warp!r} (choose from {', '.join(WARP_MODES)})")
        if self.generator == "resnet" and self.extended_inputs:
            raise utils.UserError("the resnet generator is the original network: it takes no reference, "
                                  "no propagation and no warping (use --generator unet for those)")
        if self.in_channels is None:
            self.in_channels = self.expected_in_channels
        for name in ("propagate", "reference"):
            if not isinstance(getattr(self, name), bool):
                raise utils.UserError(f"model setting {name} must be true or false, got {getattr(self, name)!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("generator", "warp", "propagate", "reference") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise utils.UserError(f"model setting {field.name} must be a positive "
                                      f"integer, got {value!r}")
        if self.in_channels != self.expected_in_channels:
            raise utils.UserError(f"model setting in_channels is {self.in_channels}, but these inputs "
                                  f"need {self.expected_in_channels}")

    @property
    def size_rule(self) -> tuple[int, int]:
        """(multiple, smallest): the generator's H and W must be multiples of the first and at
        least the second (see each network's docstring)."""
        if self.generator == "resnet":
            return 4, 16
        return 2 ** self.depth, 2 ** (self.depth + 1)

    @property
    def extended_inputs(self) -> bool:
        """False: the original input cat(line art, previous colour), 4 channels."""
        return self.propagate or self.reference or self.warp != "none"

    @property
    def expected_in_channels(self) -> int:
        if not self.extended_inputs:
            return 4
        return 11 if self.reference else 6

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> "ModelConfig":
        """Rebuild from ``to_dict()``; unknown keys are a ``UserError`` (never silently lost).
        A config saved before propagation existed (no ``propagate`` key) is the plain U-Net."""
        if not isinstance(d, dict):
            raise utils.UserError(f"the checkpoint's model settings are not a dict (got {type(d).__name__})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise utils.UserError(f"unknown model setting(s) in checkpoint: {', '.join(unknown)}")
        if "propagate" not in d and d.get("generator", "unet") == "unet":
            d = {**_LEGACY, **d}
        return cls(**d)


def build_generator(cfg: ModelConfig) -> nn.Module:
    if cfg.generator == "resnet":
        return ResNetGenerator(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.n_blocks)
    return UNetGenerator(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.depth, cfg.n_blocks,
                         propagate=cfg.propagate, reference=cfg.reference)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return PatchDiscriminator(cfg.d_in_channels, cfg.ndf)


def init_normal_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Conv / ConvTranspose weights ~ N(0, std), biases 0: the original's ``init_weights``.

    For spectral-normed convs the original's init reached ``weight_orig`` (``weight`` shares
    its storage when the hook is installed), so we write ``weight_orig`` directly.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            weight = getattr(module, "weight_orig", module.weight)
            nn.init.normal_(weight.data, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias.data)
    return model


def check_size(x: torch.Tensor, multiple: int, minimum: int, name: str) -> None:
    """``UserError`` unless H and W are multiples of ``multiple`` and at least ``minimum``."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or min(h, w) < minimum:
        raise utils.UserError(f"{name} needs H and W divisible by {multiple} and at least "
                              f"{minimum}, got {h}x{w} (resize or pad the frames)")


# ----------------------------------------------------------------------------- original generator
class ResidualBlockDilated(nn.Module):
    """x + [pad(d), conv3x3 dil d, IN, ReLU, pad(1), conv3x3, IN](x): the original's block.

    The attribute name ``conv_block`` and the layer order are part of the state-dict layout.
    """

    def __init__(self, dim: int, dilation: int = 2):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(dilation),
            nn.Conv2d(dim, dim, 3, padding=0, dilation=dilation),
            nn.InstanceNorm2d(dim, track_running_stats=False),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, padding=0),
            nn.InstanceNorm2d(dim, track_running_stats=False),
        )

    def forward(self, x):
        return x + self.conv_block(x)  # (B, C, H, W)


class ResNetGenerator(nn.Module):
    """The original TCVC generator (EdgeConnect ``InpaintGenerator``), same state-dict keys.

    encoder: reflect-pad 3, conv7x7 in->64, two conv4x4 stride 2 to 128 and 256;
    middle: 8 dilated residual blocks at 256 channels, H/4 x W/4;
    decoder: two convtranspose4x4 stride 2 back to 128 and 64, reflect-pad 3, conv7x7 -> 3.
    InstanceNorm (no affine) + ReLU after every conv but the last; output (tanh + 1) / 2.
    Defaults: 10,774,595 parameters, about 97 GFLOPs per 256x256 frame.
    Input H and W: multiples of 4, at least 16.
    """

    def __init__(self, in_channels=4, out_channels=3, ngf=64, n_blocks=8):
        super().__init__()
        self.in_channels, self.size_multiple, self.min_size = in_channels, 4, 16
        c1, c2, c3 = ngf, 2 * ngf, 4 * ngf
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c1, 7),
            nn.InstanceNorm2d(c1, track_running_stats=False), nn.ReLU(True),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            nn.InstanceNorm2d(c2, track_running_stats=False), nn.ReLU(True),
            nn.Conv2d(c2, c3, 4, stride=2, padding=1),
            nn.InstanceNorm2d(c3, track_running_stats=False), nn.ReLU(True),
        )
        self.middle = nn.Sequential(*[ResidualBlockDilated(c3, 2) for _ in range(n_blocks)])
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1),
            nn.InstanceNorm2d(c2, track_running_stats=False), nn.ReLU(True),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.InstanceNorm2d(c1, track_running_stats=False), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(c1, out_channels, 7),
        )
        init_normal_(self)

    def forward(self, x):                      # (B, 4, H, W)
        check_size(x, self.size_multiple, self.min_size, "the resnet generator")
        x = self.encoder(x)                    # (B, 256, H/4, W/4)
        x = self.middle(x)                     # (B, 256, H/4, W/4)
        x = self.decoder(x)                    # (B, 3, H, W)
        return (torch.tanh(x) + 1) / 2


# ----------------------------------------------------------------------------- U-Net generator
def conv_in_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 (reflect padding, no bias: InstanceNorm removes it) + InstanceNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="reflect", bias=False),
        nn.InstanceNorm2d(cout), nn.ReLU(True))


class ResidualBlock(nn.Module):
    """x + [conv3x3, IN, ReLU, conv3x3, IN](x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_in_relu(dim, dim),
            nn.Conv2d(dim, dim, 3, padding=1, padding_mode="reflect", bias=False),
            nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.body(x)  # (B, C, H, W)


class UpBlock(nn.Module):
    """Bilinear x2 upsampling + conv (no transposed conv, hence no checkerboard), then the
    encoder's skip features are concatenated and fused by a second conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.reduce = conv_in_relu(cin, cout)
        self.fuse = conv_in_relu(2 * cout, cout)

    def forward(self, x, skip):                                    # (B, Cin, h, w)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.reduce(x)                                         # (B, Cout, 2h, 2w)
        return self.fuse(torch.cat([x, skip], dim=1))              # (B, Cout, 2h, 2w)


class UNetGenerator(nn.Module):
    """U-Net generator (the default): line art + previous colour frame (+ keyframe) -> RGB in [0, 1].

    Channels at level i (resolution H/2^i): ngf * 2^min(i, 3); defaults ngf=32, depth=4:
    32 @ H, 64 @ H/2, 128 @ H/4, 256 @ H/8, 256 @ H/16.
    - stem: two conv3x3 + IN + ReLU at full resolution;
    - down (x depth): conv3x3 stride 2 + conv3x3, each + IN + ReLU;
    - bottleneck: ``n_blocks`` residual blocks at H/2^depth (receptive field covers a
      256x256 frame, so colours can be chosen from the whole frame);
    - up (x depth): bilinear x2 + conv3x3, concat the skip of that level, conv3x3;
    - head: conv3x3 -> 3, then (tanh + 1) / 2.

    ``propagate=True`` (the default) adds the copy path. Instance norm removes every feature
    map's mean, so flat colours of the previous frame cannot cross the network intact; instead
    the head also sees the raw input and returns, per pixel, softmax weights over the sources
    {generated colour, warped previous frame, warped keyframe}: output = w_g * generated +
    w_p * previous + w_r * keyframe (vid2vid's composition, with the keyframe as a third
    source). A source that is absent (its presence channel is 0) gets weight 0. Where the line
    art did not change, the network can pass the previous colours through exactly.

    Cost with the defaults: 7.26 M parameters and 26.8 GFLOPs per 256x256 frame (the
    original generator: 10.77 M and 97.4 GFLOPs), counted by ``gflops_per_frame``; the copy
    path adds a few thousand parameters. Input H and W must be multiples of 2**depth and at
    least 2**(depth + 1) (instance norm needs more than one pixel at the bottleneck).
    """

    def __init__(self, in_channels=4, out_channels=3, ngf=32, depth=4, n_blocks=2,
                 propagate=False, reference=False):
        super().__init__()
        self.in_channels, self.propagate, self.reference = in_channels, propagate, reference
        self.size_multiple, self.min_size = 2 ** depth, 2 ** (depth + 1)
        ch = [ngf * 2 ** min(i, 3) for i in range(depth + 1)]
        self.stem = nn.Sequential(conv_in_relu(in_channels, ch[0]), conv_in_relu(ch[0], ch[0]))
        self.down = nn.ModuleList(
            nn.Sequential(conv_in_relu(ch[i], ch[i + 1], stride=2),
                          conv_in_relu(ch[i + 1], ch[i + 1]))
            for i in range(depth))
        self.bottleneck = nn.Sequential(*[ResidualBlock(ch[depth]) for _ in range(n_blocks)])
        self.up = nn.ModuleList(UpBlock(ch[i + 1], ch[i]) for i in reversed(range(depth)))
        n_sources = 1 + int(reference)  # previous frame (+ keyframe)
        head_in = ch[0] + (in_channels if propagate else 0)
        head_out = out_channels + (1 + n_sources if propagate else 0)
        self.head = nn.Conv2d(head_in, head_out, 3, padding=1, padding_mode="reflect")
        init_normal_(self)

    def forward(self, x):                          # (B, C_in, H, W)
        check_size(x, self.size_multiple, self.min_size, "the unet generator")
        h = self.stem(x)                           # (B, ngf, H, W)
        skips = []
        for down in self.down:
            skips.append(h)
            h = down(h)                            # (B, C_i, H/2^i, W/2^i)
        h = self.bottleneck(h)                     # (B, C_depth, H/2^depth, W/2^depth)
        for up, skip in zip(self.up, reversed(skips)):
            h = up(h, skip)                        # (B, C_{i-1}, H/2^(i-1), W/2^(i-1))
        if not self.propagate:
            return (torch.tanh(self.head(h)) + 1) / 2  # (B, 3, H, W)
        out = self.head(torch.cat([h, x], 1)).float()  # (B, 3 + 1 + n_sources, H, W)
        return blend_sources(out, x.float(), self.reference)


def blend_sources(head_out: torch.Tensor, x: torch.Tensor, reference: bool) -> torch.Tensor:
    """The copy path: (B, 3 + S + 1, H, W) head output -> RGB, a per-pixel convex blend of the
    generated colour (tanh of the first 3 channels) and the S sources found in the input ``x``
    (previous frame, keyframe). Logits of absent sources are pushed to -1e4 (weight 0). fp32."""
    colour = (torch.tanh(head_out[:, :3]) + 1) / 2                    # (B, 3, H, W)
    sources, present = [x[:, PREV]], [x[:, PREV_MASK]]
    if reference:
        sources.append(x[:, REF])
        present.append(x[:, REF_MASK])
    logits = head_out[:, 3:]                                          # (B, 1 + S, H, W)
    absent = torch.cat([torch.zeros_like(present[0])] + [1 - p for p in present], 1)
    weights = torch.softmax(logits - 1e4 * absent, dim=1)             # (B, 1 + S, H, W)
    out = weights[:, :1] * colour
    for k, source in enumerate(sources, start=1):
        out = out + weights[:, k:k + 1] * source
    return out


# ----------------------------------------------------------------------------- inputs
def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """out(x) = image(x + flow(x)), bilinear, borders repeated; (B, C, H, W) and flow
    (B, 2, H, W) in pixels, (dx, dy). With the flow from frame t to frame s, this brings frame s
    onto frame t's pixel grid. fp32; a zero flow returns the image (to ~1e-6)."""
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=torch.float32),
                            torch.arange(w, device=flow.device, dtype=torch.float32), indexing="ij")
    gx = (xs + flow[:, 0].float()) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1].float()) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)                              # (B, H, W, 2)
    return F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


def _plane(flag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) presence flags -> (B, 1, H, W) constant planes shaped like ``like``."""
    return flag.float().view(-1, 1, 1, 1).expand(-1, 1, *like.shape[-2:])


def assemble_input(cfg: ModelConfig, line, prev, has_prev, prev_line=None, flow=None,
                   ref=None, ref_line=None, has_ref=None, ref_flow=None) -> torch.Tensor:
    """The generator input for frame t, all tensors float in [0, 1] on one device:
    line (B, 1, H, W); prev (B, 3, H, W) the previous colour frame and prev_line its line art;
    has_prev (B,) 1 where a previous frame exists (else prev is ignored: black); flow
    (B, 2, H, W) from frame t to the previous frame; ref / ref_line / has_ref / ref_flow the
    same for the keyframe. The original layout is cat(line, prev); the extended one is listed
    at ``PREV`` above, with previous frame and keyframe warped onto frame t when
    ``cfg.warp == 'flow'``. Absent inputs are zeros."""
    prev = prev.float() * has_prev.float().view(-1, 1, 1, 1)
    if not cfg.extended_inputs:
        return torch.cat([line.float(), prev], 1)                    # (B, 4, H, W)
    parts = [line.float()] + _warped(cfg, prev, prev_line, flow, has_prev)
    if cfg.reference:
        if ref is None:
            ref, ref_line = torch.zeros_like(prev), torch.zeros_like(line)
            has_ref = torch.zeros_like(has_prev)
        parts += _warped(cfg, ref.float() * has_ref.float().view(-1, 1, 1, 1), ref_line, ref_flow, has_ref)
    return torch.cat(parts, 1)                                        # (B, 6 or 11, H, W)


def _warped(cfg, colour, line, flow, present) -> list:
    """[colour, line art, presence] of one source, warped onto frame t when there is a flow."""
    line = torch.zeros_like(colour[:, :1]) if line is None else line.float() * present.float().view(-1, 1, 1, 1)
    if cfg.warp == "flow" and flow is not None:
        both = warp(torch.cat([colour, line], 1), flow)
        colour, line = both[:, :3], both[:, 3:]
    return [colour, line, _plane(present, colour)]


# ----------------------------------------------------------------------------- discriminator
def sn_conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
    """4x4 conv, padding 1, no bias, with (classic, hook-based) spectral normalisation."""
    return nn.utils.spectral_norm(nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=False))


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN of the original: convs 64 s2, 128 s2, 256 s2, 512 s1, 1 s1 (4x4),
    spectral norm on each, LeakyReLU 0.2 between. Input (B, 7, H, W) = line art, previous
    frame, real or generated frame; output raw logits (B, 1, H/8 - 2, W/8 - 2).

    ``features`` is the same module as ``conv1`` (as in the original), so the state dict
    holds both ``conv1.0.*`` and ``features.0.*`` while ``parameters()`` counts it once:
    2,767,872 parameters with the defaults.
    """

    def __init__(self, in_channels=7, ndf=64):
        super().__init__()
        self.in_channels = in_channels
        c = [ndf, 2 * ndf, 4 * ndf, 8 * ndf]
        self.conv1 = self.features = nn.Sequential(sn_conv(in_channels, c[0], 2),
                                                   nn.LeakyReLU(0.2, True))
        self.conv2 = nn.Sequential(sn_conv(c[0], c[1], 2), nn.LeakyReLU(0.2, True))
        self.conv3 = nn.Sequential(sn_conv(c[1], c[2], 2), nn.LeakyReLU(0.2, True))
        self.conv4 = nn.Sequential(sn_conv(c[2], c[3], 1), nn.LeakyReLU(0.2, True))
        self.conv5 = nn.Sequential(sn_conv(c[3], 1, 1))
        init_normal_(self)

    def forward(self, x):       # (B, 7, H, W)
        x = self.conv1(x)       # (B, 64, H/2, W/2)
        x = self.conv2(x)       # (B, 128, H/4, W/4)
        x = self.conv3(x)       # (B, 256, H/8, W/8)
        x = self.conv4(x)       # (B, 512, H/8 - 1, W/8 - 1)
        return self.conv5(x)    # (B, 1, H/8 - 2, W/8 - 2) logits


# ----------------------------------------------------------------------------- cost
def count_parameters(model: nn.Module) -> int:
    """Number of parameters; a module registered under two names counts once."""
    return sum(p.numel() for p in model.parameters())


def gflops_per_frame(model: nn.Module, image_size: int = 256, in_channels: int | None = None
                     ) -> float:
    """GFLOPs of one forward pass on a (1, C, S, S) input, FLOPs = 2 * multiply-adds, counted
    by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls only; norms
    and activations are not counted). Run in eval mode so that spectral norm's power
    iteration is neither counted nor allowed to update its vectors."""
    from torch.utils.flop_counter import FlopCounterMode

    channels = in_channels or model.in_channels
    param = next(model.parameters())
    x = torch.zeros(1, channels, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------------- checkpoints
def guess_architecture(state_dict: dict) -> str:
    """Which of our networks a state dict looks like, from a few telltale keys."""
    keys = set(state_dict)
    if any(k.startswith("middle.") and ".conv_block." in k for k in keys):
        return "ResNetGenerator (the original TCVC generator)"
    if any(k.startswith("bottleneck.") for k in keys) or any(k.startswith("stem.") for k in keys):
        return "UNetGenerator"
    if any(k.startswith("conv5.") for k in keys):
        return "PatchDiscriminator"
    return "no known network"


def _strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` adds to every key."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def convert_state_dict(obj) -> tuple[str, dict]:
    """Recognise an original TCVC file's content and return ``(kind, state_dict)``.

    ``kind`` is 'generator' or 'discriminator'. Accepted: ``{"generator": sd}``,
    ``{"discriminator": sd}`` (how the original saved them) or a bare state dict.
    """
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("generator",
                                                                        "discriminator"):
        kind, sd = next(iter(obj.items()))
        if isinstance(sd, dict):
            return kind, _strip_prefix(sd)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = _strip_prefix(obj)
        guess = guess_architecture(sd)
        if guess.startswith("ResNet") or guess.startswith("UNet"):
            return "generator", sd
        if guess.startswith("Patch"):
            return "discriminator", sd
    raise utils.UserError("not an original TCVC checkpoint: expected {'generator': state_dict} "
                          "or {'discriminator': state_dict}")


def load_original_checkpoint(path) -> tuple[str, dict]:
    """Load an original TCVC ``.pth`` (``weights_only=True``) -> ``(kind, state_dict)``."""
    return convert_state_dict(utils.read_checkpoint(path))


GENERATOR_EXPORT = "tcvc-generator-1"


def generator_export(G: nn.Module, cfg: ModelConfig, image_size: int, line_art: str) -> dict:
    """A generator-only checkpoint: the weights plus what is needed to use them."""
    return {"format": GENERATOR_EXPORT, "generator": G.state_dict(), "model_config": cfg.to_dict(),
            "image_size": image_size, "line_art": line_art}


def load_generator(path, device="cpu") -> tuple[nn.Module, ModelConfig, dict]:
    """-> (generator in eval mode, its config, {'image_size', 'line_art'}) from a training
    checkpoint, a generator export, or the original's ``{"generator": state_dict}`` file.
    The architecture always comes from the file, never from flags."""
    ckpt = utils.read_checkpoint(path)
    if "model_config" in ckpt and "generator" in ckpt:
        cfg = ModelConfig.from_dict(ckpt["model_config"])
        run = ckpt.get("run_config") or ckpt
        if not isinstance(run, dict):
            raise utils.UserError(f"{path} has a broken run_config ({type(run).__name__}, not a dict)")
        meta = {"image_size": run.get("image_size"), "line_art": run.get("line_art")}
        size = meta["image_size"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise utils.UserError(f"{path} records an impossible image_size {size!r}")
        if meta["line_art"] not in (None, "canny", "grey", "given"):
            raise utils.UserError(f"{path} records an unknown line_art {meta['line_art']!r}")
        state = ckpt["generator"]
    else:
        try:
            kind, state = convert_state_dict(ckpt)
        except utils.UserError:
            raise utils.UserError(f"{path} is not a TCVC checkpoint (no generator weights in it)") from None
        if kind != "generator":
            raise utils.UserError(f"{path} holds {kind} weights, not a generator")
        cfg = ModelConfig(generator="resnet")  # the original's only generator
        meta = {"image_size": 256, "line_art": None}
    G = build_generator(cfg)
    load_state_strict(G, state, f"generator of {path}")
    return G.to(device).eval(), cfg, meta


def load_state_strict(model: nn.Module, state_dict: dict, what: str = "generator") -> None:
    """``model.load_state_dict(state_dict)`` that fails with one clear ``UserError`` line
    (what the state dict looks like, which keys are missing / unexpected / misshapen)."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise utils.UserError(f"the {what} weights are not a state dict of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                 for k, v in expected.items()
                 if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != v.shape]
    if missing or unexpected or misshapen:
        problems = [f"{len(items)} {label} (e.g. {items[0]})" for label, items in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("shape mismatches", misshapen)) if items]
        raise utils.UserError(
            f"the {what} weights do not fit {type(model).__name__}: they look like "
            f"{guess_architecture(state_dict)}; {'; '.join(problems)}")
    model.load_state_dict(state_dict)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_size", type=int, default=256, help="square frame side")
    parser.add_argument("--ngf", type=int, default=None, help="unet base width (default 32)")
    parser.add_argument("--depth", type=int, default=4, help="unet downsamplings")
    return parser


def main(args) -> int:
    unet = ModelConfig("unet", ngf=args.ngf, depth=args.depth)
    nets = {"unet generator": build_generator(unet),
            "resnet generator (original)": build_generator(ModelConfig("resnet")),
            "patch discriminator": build_discriminator(unet)}
    rows = [(name, count_parameters(net), gflops_per_frame(net, args.image_size))
            for name, net in nets.items()]  # all measured first: a bad size prints no header
    print(f"{'network':30s} {'parameters':>12s} {'GFLOPs/frame':>13s}  ({args.image_size}^2)")
    for name, params, flops in rows:
        print(f"{name:30s} {params:12,d} {flops:13.2f}")
    return 0


if __name__ == "__main__":
    utils.run_cli(main, build_parser().parse_args())
