"""Generators and discriminator of TCVC, their config, cost measures and checkpoint loading.

Two generators, picked by ``ModelConfig.generator`` (``--generator`` in train.py):

- ``unet`` (default): ``UNetGenerator``, a U-Net with skip connections, about 28% of the
  original generator's FLOPs and fewer parameters (numbers in its docstring).
- ``resnet``: ``ResNetGenerator``, the original TCVC / EdgeConnect ``InpaintGenerator`` with
  exactly its state-dict layout, so the publicly circulating original weights load into it
  (``load_original_checkpoint`` + ``load_state_strict``).

Every generator takes one ``correspond.Sources`` (the line art of frame t, the previous frame
of the chain, a keyframe) and returns a ``Colouring``: RGB (B, 3, H, W) in [0, 1] through
``(tanh(x) + 1) / 2``, and what the discriminator is conditioned on. The original network (and
a U-Net saved before the copy path existed) sees cat(line art, previous colour), 4 channels;
the default U-Net also sees the previous frame and the keyframe aligned onto frame t by its
``correspond.Correspondence``, with their line art and presence (``UNetGenerator``).
``PatchDiscriminator`` is the original's 70x70 PatchGAN with spectral norm; it returns raw
logits (the losses apply the sigmoid inside BCE-with-logits).

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

import correspond
import utils
from correspond import Source, Sources

GENERATORS = ("unet", "resnet")
# Per-generator defaults for the fields left as None in ModelConfig. The resnet values are
# the original's and the only ones its published weights fit.
_DEFAULTS = {"unet": {"ngf": 32, "n_blocks": 2, "copy_path": True, "keyframe_input": True,
                      "correspondence": "flow"},
             "resnet": {"ngf": 64, "n_blocks": 8, "copy_path": False, "keyframe_input": False,
                        "correspondence": "none"}}
# The still window of a new model whose correspondence has a flow: on the study's two folds it lifted
# the select model by 0.10 to 0.38 dB at 4 views (two seeds) and the default flow model by 0.03 and
# 0.89 (README, "Held drawings kept still in the flow"). In pixels, like the patches DIS smooths its
# flow over, whatever the image size.
STILL_WINDOW = 9
# How a new model resamples the keyframe it warps onto frame t (correspond.warp): bicubic (clipped)
# keeps its lines a pixel wide where bilinear averages them at half-pixel shifts. The keyframe is
# resampled once, from a true frame. The previous frame of a chain, resampled again at every frame,
# stays bilinear: resampled bicubic too, the chained warp with no model moved by -0.48 and +0.81 dB
# on the study's two folds, and a model by -0.01 and +0.03. README, "A sharper resampling of the keyframe".
KEYFRAME_RESAMPLE = "bicubic"
# How a new model's copy path shares the copied weight between its aligned sources (``blend_sources``):
# 'even', the network chooses, per pixel, only how much of its generated colour to use, and the rest
# is split equally between the aligned previous frame and keyframe; 'learned', the network also
# chooses the split. A new ``select`` model splits evenly: after the selector's warm-up its U-Net
# gets the study's 46 GAN steps, in which the learned split fell below the plain mean of the two
# sources on both folds and both seeds (the previous frame it learns to trust in training is a true
# or freshly rolled-out frame, not a chain that has drifted for a hundred frames). Every other model
# learns the split: `make demo`'s ``flow`` model, all of whose steps train the U-Net, scored 23.87 dB
# with the even split against 24.30-24.32 with the learned one. README, "An even split between the
# previous frame and the keyframe".
SOURCE_SPLITS = ("learned", "even")
EVEN_SPLIT_CORRESPONDENCES = ("select",)


def check_source_split(split) -> str:
    """``split`` if it is one of SOURCE_SPLITS, else one clear line (``UserError``)."""
    if split not in SOURCE_SPLITS:
        raise utils.UserError(f"unknown source split {split!r} (choose from {', '.join(SOURCE_SPLITS)})")
    return split


# How many times the network resolution a new model's line-art flow is computed at
# (correspond.flow_art): Canny at the network resolution places every line on a whole pixel; an
# edge of the frame enlarged twice lands on a half pixel. README, "A flow computed at twice the resolution".
FLOW_SCALE = 2
# Names the settings had in checkpoints written before they were renamed.
_RENAMED = {"propagate": "copy_path", "reference": "keyframe_input", "warp": "correspondence"}
# A U-Net config saved before the copy path existed has none of these keys: it is the plain
# U-Net fed cat(line art, previous frame), and loads as exactly that network.
_LEGACY = {"copy_path": False, "keyframe_input": False, "correspondence": "none"}
# Per generator: (H and W must be multiples of this, and at least this) for a given depth.
_SIZE_RULES = {"resnet": lambda depth: (4, 16),  # two stride-2 convs; reflection pads of 3
               # instance norm needs more than one pixel at the bottleneck
               "unet": lambda depth: (2 ** depth, 2 ** (depth + 1))}


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
    copy_path: bool | None = None  # unet: output blends generated colour, aligned previous
    #                                frame and aligned keyframe per pixel
    keyframe_input: bool | None = None  # unet: a coloured keyframe (and its line art) at every frame
    correspondence: str | None = None   # how the previous frame and the keyframe are brought onto
    #                                     frame t (correspond.CHOICES): 'flow' | 'none' | 'match'
    still_window: int | None = None  # the line-art flow's still window (correspond.line_flow): zero flow where
    #                                  a W x W neighbourhood holds a line identical in both frames; 0: off;
    #                                  None -> STILL_WINDOW with a flow, 0 without. Checkpoints written
    #                                  before it existed were trained with 0, and read so.
    keyframe_resample: str | None = None  # how the keyframe is resampled when warped (correspond.RESAMPLES);
    #                                       None -> KEYFRAME_RESAMPLE. Checkpoints written before it
    #                                       existed were trained with 'bilinear', and read so.
    flow_scale: int | None = None  # how many times the network resolution the line-art flow is computed at
    #                                (correspond.flow_art, correspond.FLOW_SCALES); None -> FLOW_SCALE with a
    #                                flow, 1 without. Checkpoints written before it existed were trained with 1.
    source_split: str | None = None  # copy path: how the copied weight is shared between the aligned sources
    #                                  (SOURCE_SPLITS, blend_sources); None -> 'even' for the correspondences of
    #                                  EVEN_SPLIT_CORRESPONDENCES, 'learned' for the others. Checkpoints written
    #                                  before it existed were trained with 'learned', and read so.

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise utils.UserError(f"unknown generator {self.generator!r} "
                                  f"(choose from {', '.join(GENERATORS)})")
        for name, value in _DEFAULTS[self.generator].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.correspondence not in correspond.CHOICES:
            raise utils.UserError(f"unknown correspondence {self.correspondence!r} "
                                  f"(choose from {', '.join(correspond.CHOICES)})")
        if self.still_window is None:
            self.still_window = STILL_WINDOW if self.correspondence != "none" else 0
        if self.keyframe_resample is None:
            self.keyframe_resample = KEYFRAME_RESAMPLE
        if self.flow_scale is None:
            self.flow_scale = FLOW_SCALE if self.correspondence != "none" else 1
        if self.source_split is None:
            self.source_split = "even" if self.correspondence in EVEN_SPLIT_CORRESPONDENCES else "learned"
        check_source_split(self.source_split)
        correspond.check_resample(self.keyframe_resample)
        if self.generator == "resnet" and self.extended_inputs:
            raise utils.UserError("the resnet generator is the original network: it takes no keyframe input, "
                                  "no copy path and no correspondence (use --generator unet for those)")
        if self.in_channels is None:
            self.in_channels = self.expected_in_channels
        for name in ("copy_path", "keyframe_input"):
            if not isinstance(getattr(self, name), bool):
                raise utils.UserError(f"model setting {name} must be true or false, got {getattr(self, name)!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("generator", "correspondence", "copy_path", "keyframe_input", "still_window",
                                  "keyframe_resample", "flow_scale", "source_split") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise utils.UserError(f"model setting {field.name} must be a positive "
                                      f"integer, got {value!r}")
        if self.in_channels != self.expected_in_channels:
            raise utils.UserError(f"model setting in_channels is {self.in_channels}, but these inputs "
                                  f"need {self.expected_in_channels}")
        correspond.cpu_half(self.correspondence, self.still_window, self.flow_scale)  # valid, and a flow to keep still

    @property
    def size_rule(self) -> tuple[int, int]:
        """(multiple, smallest): the generator's H and W must be multiples of the first and at
        least the second. The one size rule of the project (``check_size``)."""
        return _SIZE_RULES[self.generator](self.depth)

    def check_size(self, height: int, width: int, what: str) -> None:
        """``UserError`` naming ``what`` unless (height, width) fits the generator."""
        check_size(height, width, self.size_rule, f"{what} ({self.generator} generator)")

    @property
    def extended_inputs(self) -> bool:
        """False: the original input cat(line art, previous colour), 4 channels."""
        return self.copy_path or self.keyframe_input or self.correspondence != "none"

    @property
    def expected_in_channels(self) -> int:
        if not self.extended_inputs:
            return 4
        return 11 if self.keyframe_input else 6

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, d) -> "ModelConfig":
        """Rebuild from ``to_dict()``; unknown keys are a ``UserError`` (never silently lost).
        Settings saved under their earlier names are read under the new ones; a U-Net config
        saved before the copy path existed is the plain U-Net."""
        if not isinstance(d, dict):
            raise utils.UserError(f"the checkpoint's model settings are not a dict (got {type(d).__name__})")
        d = {_RENAMED.get(k, k): v for k, v in d.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise utils.UserError(f"unknown model setting(s) in checkpoint: {', '.join(unknown)}")
        if "copy_path" not in d and d.get("generator", "unet") == "unet":
            d = {**_LEGACY, **d}
        # saved before these settings: trained on the plain flow at network resolution, the keyframe
        # resampled bilinearly, the sources' split learned
        return cls(**{"still_window": 0, "keyframe_resample": "bilinear", "flow_scale": 1, "source_split": "learned",
                      **d})


@dataclass
class Colouring:
    """What a generator returns for frame t."""
    colour: torch.Tensor      # (B, 3, H, W) in [0, 1]
    condition: torch.Tensor   # (B, 4, H, W) line art t and the aligned previous colour: what D judges against
    weights: torch.Tensor | None = None     # copy path: (B, 1 + S, H, W) per-pixel blend weights of the
    #                                         generated colour and the S aligned sources (previous, keyframe)
    candidates: torch.Tensor | None = None  # copy path: (B, 1 + S, 3, H, W) the colours those weights blend
    matches: list | None = None  # ``match`` correspondence: the region matches made (``losses.match_loss``)


def build_generator(cfg: ModelConfig) -> nn.Module:
    if cfg.generator == "resnet":
        return ResNetGenerator(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.n_blocks)
    return UNetGenerator(cfg.in_channels, cfg.out_channels, cfg.ngf, cfg.depth, cfg.n_blocks,
                         copy_path=cfg.copy_path, keyframe_input=cfg.keyframe_input,
                         correspondence=cfg.correspondence, keyframe_resample=cfg.keyframe_resample,
                         source_split=cfg.source_split)


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


def check_size(height: int, width: int, rule: tuple[int, int], what: str) -> None:
    """``UserError`` unless H and W are multiples of ``rule[0]`` and at least ``rule[1]``."""
    multiple, minimum = rule
    if height % multiple or width % multiple or min(height, width) < minimum:
        raise utils.UserError(f"{what} needs H and W divisible by {multiple} and at least "
                              f"{minimum}, got {height}x{width} (resize or pad the frames)")


def original_input(sources: Sources) -> torch.Tensor:
    """cat(line art t, previous colour) (B, 4, H, W): the original network's input; a missing
    previous frame is black."""
    return torch.cat([sources.line.float(), sources.prev.masked().colour], 1)


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
    Input H and W: multiples of 4, at least 16 (``ModelConfig.size_rule``).
    """

    def __init__(self, in_channels=4, out_channels=3, ngf=64, n_blocks=8):
        super().__init__()
        self.in_channels, self.size_rule = in_channels, _SIZE_RULES["resnet"](0)
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

    def forward(self, sources: Sources) -> Colouring:
        check_size(*sources.line.shape[-2:], self.size_rule, "the resnet generator")
        x = original_input(sources)            # (B, 4, H, W)
        h = self.encoder(x)                    # (B, 256, H/4, W/4)
        h = self.middle(h)                     # (B, 256, H/4, W/4)
        h = self.decoder(h)                    # (B, 3, H, W)
        return Colouring((torch.tanh(h) + 1) / 2, condition=x)


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


# The copy path's initial logit of each aligned source over the generated colour. The weights of the
# blend logits start at zero, so a fresh model blends the same way at every pixel: e^8 / (1 + 2 e^8)
# = 49.99% aligned previous frame + 49.99% aligned keyframe + 0.02% generated colour (with one
# source present: 99.97% the source), i.e. the answer its pipeline gives with the network taken out
# (the study's sources_mean_<correspondence>), and it learns from there what to change. With +4 and
# random logit weights (the release before), the untrained generated colour kept 0.9% of every pixel,
# which a study's training never taught it to drop, and the chain fed it back: with the same trained
# select correspondence, 34.87 dB on the README's second fold against 35.52 at +8 with zero weights
# (21.77 against 21.90 on the first). With a zero bias an untrained model is a third grey noise.
# Adam moves the logits through their weights, whose inputs are the head's features, so the
# generated colour still gains weight where it is needed.
COPY_BIAS = 8.0


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

    Input (``input_tensor``): with every option off, cat(line art t, previous colour), 4
    channels (what U-Nets saved before these options were). Otherwise each source (the previous
    frame, and the keyframe with ``keyframe_input``) is aligned onto frame t by
    ``self.correspond`` (``correspond.build(correspondence)``) and enters as its colour, its line
    art and its presence plane: line art t | previous colour, line, presence | keyframe colour,
    line, presence = 6 or 11 channels. An absent source is zeros.

    ``copy_path=True`` (the default). Instance norm removes every feature map's mean, so flat
    colours of the previous frame cannot cross the network intact; instead the head also sees
    the raw input and returns, per pixel, softmax weights over {generated colour, aligned
    previous frame, aligned keyframe}: output = w_g * generated + w_p * previous + w_k *
    keyframe (vid2vid's composition, with the keyframe as a third source). A source that is
    absent gets weight 0. Where the line art did not change, the network can pass the previous
    colours through exactly. With ``source_split='even'`` (a new ``select`` model's) the network sets only
    w_g, and w_p = w_k = (1 - w_g) / 2 (``blend_sources``).

    Defaults: 7.26 M parameters, 26.8 GFLOPs per 256x256 frame (``gflops_per_frame``; the
    original: 10.77 M, 97.4). H and W: multiples of 2**depth, at least 2**(depth + 1).
    """

    def __init__(self, in_channels=4, out_channels=3, ngf=32, depth=4, n_blocks=2,
                 copy_path=False, keyframe_input=False, correspondence="none", keyframe_resample="bilinear",
                 source_split="learned"):
        super().__init__()
        self.source_split = check_source_split(source_split)  # test.py may set another
        self.in_channels, self.copy_path, self.keyframe_input = in_channels, copy_path, keyframe_input
        self.keyframe_resample = correspond.check_resample(keyframe_resample)  # test.py may set another
        self.extended = copy_path or keyframe_input or correspondence != "none"
        self.size_rule = _SIZE_RULES["unet"](depth)
        self.correspond = correspond.build(correspondence)  # weights only for 'match'
        ch = [ngf * 2 ** min(i, 3) for i in range(depth + 1)]
        self.stem = nn.Sequential(conv_in_relu(in_channels, ch[0]), conv_in_relu(ch[0], ch[0]))
        self.down = nn.ModuleList(
            nn.Sequential(conv_in_relu(ch[i], ch[i + 1], stride=2),
                          conv_in_relu(ch[i + 1], ch[i + 1]))
            for i in range(depth))
        self.bottleneck = nn.Sequential(*[ResidualBlock(ch[depth]) for _ in range(n_blocks)])
        self.up = nn.ModuleList(UpBlock(ch[i + 1], ch[i]) for i in reversed(range(depth)))
        n_sources = 1 + int(keyframe_input)  # previous frame (+ keyframe)
        head_in = ch[0] + (in_channels if copy_path else 0)
        head_out = out_channels + (1 + n_sources if copy_path else 0)
        self.head = nn.Conv2d(head_in, head_out, 3, padding=1, padding_mode="reflect")
        init_normal_(self)
        if copy_path:  # start as the mean of the aligned sources, everywhere (see COPY_BIAS)
            nn.init.zeros_(self.head.weight.data[out_channels:])
            nn.init.constant_(self.head.bias.data[out_channels + 1:], COPY_BIAS)

    def aligned_sources(self, sources: Sources) -> list[Source]:
        """The previous frame (and the keyframe) aligned onto frame t; absent ones are zeros. The
        keyframe's warp resamples it as ``keyframe_resample`` says, the previous frame's bilinearly."""
        aligned = [self.correspond(sources.prev, sources.line)]
        if self.keyframe_input:
            key = sources.keyframe if sources.keyframe is not None else Source.absent(sources.line)
            aligned.append(self.correspond(key, sources.line, resample=self.keyframe_resample))
        return aligned

    def input_tensor(self, sources: Sources) -> tuple[torch.Tensor, list[Source]]:
        """(network input (B, 4 | 6 | 11, H, W), the aligned sources it holds)."""
        if not self.extended:
            return original_input(sources), [sources.prev.masked()]
        aligned = self.aligned_sources(sources)
        parts = [sources.line.float()]
        for source in aligned:
            line = source.line if source.line is not None else torch.zeros_like(source.colour[:, :1])
            parts += [source.colour, line, source.plane()]
        return torch.cat(parts, 1), aligned

    def forward(self, sources: Sources) -> Colouring:
        check_size(*sources.line.shape[-2:], self.size_rule, "the unet generator")
        x, aligned = self.input_tensor(sources)        # (B, C_in, H, W)
        condition = torch.cat([sources.line.float(), aligned[0].colour], 1)  # (B, 4, H, W)
        h = self.stem(x)                               # (B, ngf, H, W)
        skips = []
        for down in self.down:
            skips.append(h)
            h = down(h)                                # (B, C_i, H/2^i, W/2^i)
        h = self.bottleneck(h)                         # (B, C_depth, H/2^depth, W/2^depth)
        for up, skip in zip(self.up, reversed(skips)):
            h = up(h, skip)                            # (B, C_{i-1}, H/2^(i-1), W/2^(i-1))
        matches = [m for s in aligned for m in (s.match or [])] or None
        if not self.copy_path:
            return Colouring((torch.tanh(self.head(h)) + 1) / 2, condition, matches=matches)  # (B, 3, H, W)
        out = self.head(torch.cat([h, x], 1)).float()  # (B, 3 + 1 + n_sources, H, W)
        return dataclasses.replace(blend_sources(out, aligned, condition, self.source_split), matches=matches)


def blend_sources(head_out: torch.Tensor, aligned: list[Source], condition: torch.Tensor,
                  split: str = "learned") -> Colouring:
    """The copy path: (B, 3 + 1 + S, H, W) head output -> a per-pixel convex blend of the
    generated colour (tanh of the first 3 channels) and the S aligned sources. Logits of absent
    sources are pushed to -1e4 (weight 0). ``split`` (``SOURCE_SPLITS``): 'learned', the softmax
    of the 1 + S logits is the blend; 'even', the generated colour keeps its softmax weight g and
    the present sources share 1 - g equally (the sources' logits then only set g). fp32."""
    colour = (torch.tanh(head_out[:, :3]) + 1) / 2                    # (B, 3, H, W)
    logits = head_out[:, 3:]                                          # (B, 1 + S, H, W)
    present = torch.cat([s.plane() for s in aligned], 1)              # (B, S, H, W)
    absent = torch.cat([torch.zeros_like(logits[:, :1]), 1 - present], 1)
    weights = torch.softmax(logits - 1e4 * absent, dim=1)             # (B, 1 + S, H, W)
    if split == "even":
        generated = weights[:, :1]
        weights = torch.cat([generated, (1 - generated) * present / present.sum(1, keepdim=True).clamp(min=1)], 1)
    elif split != "learned":
        raise ValueError(f"unknown source split {split!r}")
    out = weights[:, :1] * colour
    for k, source in enumerate(aligned, start=1):
        out = out + weights[:, k:k + 1] * source.colour
    candidates = torch.stack([colour] + [s.colour for s in aligned], 1)  # (B, 1 + S, 3, H, W)
    return Colouring(out, condition, weights, candidates)


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


def example_sources(batch: int, size: int, device="cpu") -> Sources:
    """Sources of ``batch`` grey frames of (size, size), every source present, zero flow."""
    line = torch.ones(batch, 1, size, size, device=device)

    def grey():
        return Source(torch.full((batch, 3, size, size), 0.5, device=device), torch.ones(batch, device=device),
                      line.clone(), torch.zeros(batch, 2, size, size, device=device))
    return Sources(line, grey(), grey())


def gflops_per_frame(model: nn.Module, image_size: int = 256, example=None) -> float:
    """GFLOPs of one forward pass on one (S, S) frame (``example``, else a generator's
    ``example_sources`` or the discriminator's (1, C, S, S) zeros), FLOPs = 2 * multiply-adds, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls only; norms, warps and
    activations are not counted). Run in eval mode so that spectral norm's power iteration is
    neither counted nor allowed to update its vectors."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    if example is not None:
        x = example
    elif isinstance(model, PatchDiscriminator):
        x = torch.zeros(1, model.in_channels, image_size, image_size, device=param.device, dtype=param.dtype)
    else:
        x = example_sources(1, image_size, param.device)
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
    checkpoint (the average of its weights where it was trained with ``--ema_decay``), a
    generator export, or the original's ``{"generator": state_dict}`` file. The architecture
    always comes from the file, never from flags."""
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
        # a training checkpoint of a run with --ema_decay: the average of the weights, as validated
        state = ckpt["generator"] if ckpt.get("generator_ema") is None else ckpt["generator_ema"]
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


def network_weights(path, key: str) -> dict:
    """The state dict of one network (``key``: 'generator' or 'discriminator') from our checkpoint
    or the original's one-network files."""
    ckpt = utils.read_checkpoint(path)
    if key not in ckpt:
        raise utils.UserError(f"{path} holds no {key} weights")
    return ckpt[key]


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
