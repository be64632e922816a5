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


def test_pngs_decode_the_same_without_pyspng(tmp_path, rgb, monkeypatch):
    """The GPU machine has no pyspng: every PNG then goes through OpenCV, with the same pixels."""
    from PIL import Image
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    Image.fromarray(np.stack([rgb[..., 0], rgb[..., 1]], -1), "LA").save(tmp_path / "grey_alpha.png")
    with_spng = utils.read_rgb(tmp_path / "rgb.png")
    monkeypatch.setattr(utils, "pyspng", None)
    assert np.array_equal(utils.read_rgb(tmp_path / "rgb.png"), with_spng)
    grey = utils.read_rgb(tmp_path / "grey_alpha.png")  # grey + alpha: the grey, on every channel
    assert np.array_equal(grey, np.repeat(rgb[..., :1], 3, 2))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(UserError, match="corrupt or truncated PNG"):
        utils.read_rgb(tmp_path / "bad.png")


def test_frames_with_one_number_and_dangling_links_are_refused(tmp_path, rgb):
    for name in ("frame1.png", "frame2.png"):
        utils.write_image(tmp_path / "a" / name, rgb)
    assert [p.name for p in utils.list_frames(tmp_path / "a")] == ["frame1.png", "frame2.png"]
    utils.write_image(tmp_path / "a" / "frame01.jpg", rgb)
    with pytest.raises(UserError, match="two frames numbered 1: frame01.jpg and frame1.png"):
        utils.list_frames(tmp_path / "a")
    (tmp_path / "a" / "frame01.jpg").unlink()
    (tmp_path / "a" / "frame3.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(UserError, match="frame3.png is a symbolic link to a missing file"):
        utils.list_frames(tmp_path / "a")


def test_threads_follow_the_work_and_the_allowed_cores(monkeypatch):
    monkeypatch.delenv("TCVC_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    step = utils.PIXELS_PER_THREAD
    assert [utils.choose_threads(n, cores=8) for n in (64 * 64, step, 3 * step, 100 * step)] == [1, 1, 3, 8]
    assert utils.choose_threads(100 * step, cores=2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets
    assert utils.choose_threads(100 * step, cores=8) == 1
    monkeypatch.setenv("TCVC_THREADS", "5")  # the user's choice wins
    assert utils.choose_threads(64, cores=2) == 5
    monkeypatch.setenv("TCVC_THREADS", "many")
    with pytest.raises(UserError, match="TCVC_THREADS"):
        utils.choose_threads(64)


def test_a_png_header_announcing_a_huge_frame_is_refused_before_decoding():
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(UserError, match="40000x40000 pixels .* 4.8 GB decoded"):
        utils.decode_rgb(data, "bomb.png")
