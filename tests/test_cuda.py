"""The CUDA code paths: run by benchmarks/gpu_check.sh on a machine with an NVIDIA GPU, skipped
elsewhere (the suite's other tests run on the CPU)."""
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


def test_compiled_channels_last_step_matches_eager(tmp_path, frame_factory):
    data = write_shots(tmp_path / "frames", frame_factory, shots=1, frames=4, size=72)
    for name, extra in (("eager", {}), ("compiled", {"compile": True})):
        assert train.main(tiny_args(data, tmp_path / name, max_steps=2, device="cuda", image_size=64,
                                    val_fraction=0, **extra)) == 0
    a, b = (torch.load(tmp_path / n / "generator.pt", weights_only=True)["generator"] for n in ("eager", "compiled"))
    gap = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert gap < 1e-3, gap


def test_gpu_chains_agree_with_the_cpu(frame_factory):
    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8)
    G = models.build_generator(cfg).eval()
    lines = [np.where(frame_factory(i, 32, 32)[..., 0] > 128, 255, 0).astype(np.uint8) for i in range(4)]
    outs = {}
    for device, amp in (("cpu", "off"), ("cuda", "off"), ("cuda", "bf16")):
        chain = colorize.Chain(G.to(device), cfg, device, "canny", utils.autocast_context(torch.device(device), amp))
        chain.start(None)
        outs[device, amp] = torch.cat([chain.step(line).cpu() for line in lines])
    assert (outs["cuda", "off"] - outs["cpu", "off"]).abs().max() < 1e-3
    assert (outs["cuda", "bf16"] - outs["cpu", "off"]).abs().mean() < 0.02
