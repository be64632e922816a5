"""The CUDA code paths: run by benchmarks/gpu_check.sh on a machine with an NVIDIA GPU, skipped
elsewhere (the suite's other tests run on the CPU)."""
import contextlib
import json

import numpy as np
import pytest
import torch

import colorize
import models
import train
import utils
from test_train import tiny_args, write_shots

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_training_steps_never_wait_for_the_gpu(tmp_path, frame_factory):
    """--sync_debug makes any host-device sync inside a step raise; 6 steps, values read at
    the log steps 3 and 6 only; then resume on the GPU."""
    data = write_shots(tmp_path / "frames", frame_factory, shots=2, frames=6, size=72)
    argv = dict(max_steps=6, log_every=3, device="cuda", amp="bf16", sync_debug=True, image_size=64,
                val_fraction=0, num_workers=2)
    assert train.main(tiny_args(data, tmp_path / "run", **argv)) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "l1" in r] == [3, 6] and all(np.isfinite(r["l1"]) for r in log if "l1" in r)
    argv["max_steps"] = 8
    assert train.main(tiny_args(data, tmp_path / "run", resume="auto", **argv)) == 0


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b - mean(b)||: the error measured against how much ``b`` itself varies, so
    that a constant or garbage ``a`` cannot pass by being close to a small or flat ``b``."""
    a, b = a.double().flatten(), b.double().flatten()
    return ((a - b).norm() / (b - b.mean()).norm()).item()


def last_gradients(run_dir) -> torch.Tensor:
    """The generator's gradient of the run's last step, every parameter in one vector: with
    Adam's beta1 = 0 (train.py's default) its first moment is exactly the last gradient."""
    path = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(path, weights_only=True)["opt_g"]["state"]
    return torch.cat([state[k]["exp_avg"].float().flatten() for k in sorted(state)])


def test_compiled_channels_last_step_matches_eager(tmp_path, frame_factory):
    """The weights cannot tell: after two Adam steps with beta1 = 0 each weight has moved by
    about +-lr a step whatever the gradient, so any two runs end within ~2.4 lr. The gradients
    can: those of the last step, compiled against eager, must agree to 10% of their norm (TF32
    convolutions in both, kernels fused differently; an unrelated gradient is off by ~140%)."""
    data = write_shots(tmp_path / "frames", frame_factory, shots=1, frames=4, size=72)
    for name, extra in (("eager", {}), ("compiled", {"compile": True})):
        assert train.main(tiny_args(data, tmp_path / name, max_steps=2, device="cuda", image_size=64,
                                    val_fraction=0, **extra)) == 0
    eager, compiled = last_gradients(tmp_path / "eager"), last_gradients(tmp_path / "compiled")
    assert eager.norm() > 0 and torch.isfinite(compiled).all()
    gap = ((compiled - eager).norm() / eager.norm()).item()
    assert gap < 0.1, gap


def chain_outputs(G, cfg, device, amp, lines, fed=None) -> torch.Tensor:
    """Frames coloured by one recurrent chain from black, (N, 3, S, S) on the CPU; with ``fed``,
    each step is fed fed's previous frame instead of its own (one step's error, not four)."""
    chain = colorize.Chain(G.to(device), cfg, device, "canny", utils.autocast_context(torch.device(device), amp))
    chain.start(None)
    outs = []
    for k, line in enumerate(lines):
        outs.append(chain.step(line).cpu())
        if fed is not None:
            chain.prev = colorize.ChainSource(fed[k:k + 1].to(device), line)
    return torch.cat(outs)


@contextlib.contextmanager
def tf32(enabled: bool):
    """cuDNN convolutions and CUDA matrix products with TF32 on or off, restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_gpu_chains_agree_with_the_cpu(frame_factory):
    """Against the CPU in fp32, on a random U-Net whose outputs vary little (std ~0.05), which
    magnifies every rounding. fp32 with TF32 off: four recurrent frames, differences from
    summation order only, max 1e-3. TF32 (PyTorch's default for cuDNN convolutions, what test.py
    runs) and bf16 are checked one step at a time, each step fed the CPU's previous frame: the
    chain carries a step's error on and grows it (rounding the convolutions' operands to TF32 on
    the CPU gave 3% of the outputs' variation after one frame, 15-40% after four). Tolerances are
    2.5 times what that CPU emulation (TF32: 2.0-3.4% of the variation, 4 seeds) and CPU bf16
    autocast (15-21%, mean 0.006-0.010) gave; a wrong kernel is off by 140%."""
    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8)
    G = models.build_generator(cfg).eval()
    lines = [np.where(frame_factory(i, 32, 32)[..., 0] > 128, 255, 0).astype(np.uint8) for i in range(4)]
    reference = chain_outputs(G, cfg, "cpu", "off", lines)
    assert reference.std() > 1e-2
    with tf32(False):
        assert (chain_outputs(G, cfg, "cuda", "off", lines) - reference).abs().max() < 1e-3
    with tf32(True):
        assert relative_error(chain_outputs(G, cfg, "cuda", "off", lines, fed=reference), reference) < 0.085
    bf16 = chain_outputs(G, cfg, "cuda", "bf16", lines, fed=reference)
    assert relative_error(bf16, reference) < 0.5 and (bf16 - reference).abs().mean() < 0.025
    assert torch.isfinite(chain_outputs(G, cfg, "cuda", "bf16", lines)).all()
