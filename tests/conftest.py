"""Shared test fixtures: tiny generated frames, and the path to the shared real clips."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_CLIPS = ROOT.parent / "shared" / "data" / "clips"


@pytest.fixture(autouse=True, scope="session")
def frame_cache_in_a_temporary_folder(tmp_path_factory):
    """train.py's frame cache goes to $TCVC_CACHE_DIR: the tests' caches stay out of ~/.cache."""
    import os
    os.environ["TCVC_CACHE_DIR"] = str(tmp_path_factory.mktemp("frame_cache"))


@pytest.fixture
def shared_clips():
    """Folder of the shared real clips; the test is skipped where ../shared is absent."""
    if not SHARED_CLIPS.is_dir():
        pytest.skip("../shared/data/clips is not present")
    return SHARED_CLIPS


def make_frame(index: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A uint8 RGB frame whose content identifies ``index``: a square that moves with it,
    on a background whose colour encodes the index (so tests can tell frames apart)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (base + 7 * index) % 256
    y, x = (3 * index) % (height - 12), (5 * index) % (width - 12)
    frame[y:y + 12, x:x + 12] = (255 - frame[0, 0]).astype(np.uint8)
    return frame


@pytest.fixture
def frame_factory():
    return make_frame


def tree_equal(a, b) -> bool:
    """Two samples (tensors, or dicts of them, nested) hold the same keys and equal tensors."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(tree_equal(a[k], b[k]) for k in a)
    import torch
    return torch.equal(a, b)
