"""utils: image decoding (libspng for PNG, OpenCV otherwise), frame discovery, atomic writes."""
import cv2
import numpy as np
import pytest

import utils
from utils import UserError


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_png_variants_decode_to_the_same_rgb_as_opencv(tmp_path, rgb):
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "grey.png"), rgb[..., 0])
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(np.dstack([rgb, rgb[..., 1]]), cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(rgb.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    for name in ("rgb", "grey", "rgba", "deep"):
        reference = cv2.cvtColor(cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        got = utils.read_rgb(tmp_path / f"{name}.png")
        assert got.dtype == np.uint8 and got.shape == (20, 30, 3)
        assert np.abs(got.astype(int) - reference.astype(int)).max() <= 1, name  # 16-bit: rounding


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_files_are_named(tmp_path, rgb, ext):
    utils.write_image(tmp_path / f"a{ext}", rgb)
    data = (tmp_path / f"a{ext}").read_bytes()
    (tmp_path / f"a{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=f"a{ext}"):
        utils.read_rgb(tmp_path / f"a{ext}")


def test_atomic_write_leaves_no_temporary_file(tmp_path, rgb):
    utils.write_image(tmp_path / "out" / "x.png", rgb)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.png"]
    assert (utils.read_rgb(tmp_path / "out" / "x.png") == rgb).all()


def test_find_shot_dirs_is_recursive_and_natural(tmp_path, rgb):
    for shot in ("ep2/shot10", "ep2/shot9", "ep10/shot1"):
        utils.write_image(tmp_path / shot / "f1.png", rgb)
    (tmp_path / "notes").mkdir()
    found = [p.relative_to(tmp_path).as_posix() for p in utils.find_shot_dirs(tmp_path)]
    assert found == ["ep2/shot9", "ep2/shot10", "ep10/shot1"]
    assert utils.frame_number("ep01_000123.jpg") == 123 and utils.frame_number("cover.png") is None
