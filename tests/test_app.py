"""app.py: its functions without a browser (open, keyframes, colour, export, bad uploads,
server folders), its server over HTTP, and one end-to-end run in headless Chromium whose
downloaded frames must equal test.py's for the same inputs."""
from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import FrameExtraction
import app
import metrics as metrics_lib
import models
import utils
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import app_browser  # noqa: E402
import test as colorize_cli  # noqa: E402

SIZE = 32


# ----------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny randomly initialised generator, as a generator export at 32x32."""
    torch.manual_seed(0)
    cfg = models.ModelConfig(ngf=8)
    path = tmp_path_factory.mktemp("ckpt") / "generator.pt"
    torch.save(models.generator_export(models.build_generator(cfg), cfg, SIZE, "canny"), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return app.Model.load(checkpoint, "cpu")


def png(rgb) -> bytes:
    return utils.encode_image(rgb)


def write_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_clip(path: Path, frame_factory, n_a=6, n_b=4, size=48) -> Path:
    """Two shots with a hard cut between them, MJPG (OpenCV writes it everywhere)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12, (size, size))
    for i in range(n_a + n_b):
        frame = frame_factory(i, size, size, seed=0 if i < n_a else 7)
        writer.write(cv2.cvtColor(frame if i < n_a else 255 - frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def session_with(tmp_path, shots) -> app.Session:
    session = app.new_session(tmp_path)
    session.shots = shots
    return session


def zip_images(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: utils.decode_rgb(archive.read(name), name) for name in archive.namelist() if name.endswith(".png")}


def run_test_py(args: list) -> dict:
    """test.py run on the same inputs -> {relative png path: image}, and its folder."""
    colorize_cli.main(colorize_cli.build_parser().parse_args(args + ["--device", "cpu"]))
    out = Path(args[args.index("--output") + 1])
    return {p.relative_to(out).as_posix(): utils.read_rgb(p) for p in out.rglob("*.png")}


def assert_same_frames(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert np.abs(ours[name].astype(int) - theirs[name].astype(int)).max() <= 1, name


# ----------------------------------------------------------------------------- opening
def test_zip_shots_are_its_folders_in_natural_order(tmp_path, frame_factory):
    members = {f"ep/shot10/f{i}.png": png(frame_factory(i)) for i in (2, 10, 1)}
    members |= {f"ep/shot2/f{i}.png": png(frame_factory(i, seed=3)) for i in range(2)}
    members |= {"ep/shot2/.f9.png": b"hidden", "__MACOSX/ep/shot2/f1.png": b"metadata", "ep/notes.txt": b"x"}
    shots = app.open_upload(write_zip(tmp_path / "clip.zip", members), app.Limits())
    assert [s.key for s in shots] == ["ep/shot2", "ep/shot10"]
    assert shots[1].names == ["f1", "f2", "f10"]
    assert np.array_equal(shots[1].frames[2], frame_factory(10))


def test_video_is_split_as_frame_extraction_splits_it(tmp_path, frame_factory):
    clip = write_clip(tmp_path / "clip.avi", frame_factory)
    shots = app.open_upload(clip, app.Limits())
    FrameExtraction.main(FrameExtraction.build_parser().parse_args(
        ["--video_path", str(clip), "--output_path", str(tmp_path / "frames")]))
    written = {d.name: utils.list_frames(d) for d in utils.find_shot_dirs(tmp_path / "frames")}
    assert [s.key for s in shots] == list(written) == ["shot_0001", "shot_0002"]
    for shot in shots:
        assert shot.names == [p.stem for p in written[shot.key]]
        assert all(np.array_equal(a, utils.read_rgb(p)) for a, p in zip(shot.frames, written[shot.key]))


# ----------------------------------------------------------------------------- colour and export
def test_colour_equals_test_py_with_the_same_keyframes(tmp_path, frame_factory, model, checkpoint):
    frames = [frame_factory(i) for i in range(7)]
    for i, rgb in enumerate(frames):
        utils.write_image(tmp_path / "in" / f"frame{i:03d}.png", rgb)
    painted = (255 - frames[5]).copy()  # a keyframe painted in the colourist's own tool
    utils.write_image(tmp_path / "keys" / "frame002.png", frames[2])
    utils.write_image(tmp_path / "keys" / "frame005.png", painted)
    session = session_with(tmp_path, app.open_upload(
        write_zip(tmp_path / "clip.zip", {f"frame{i:03d}.png": png(f) for i, f in enumerate(frames)}), app.Limits()))
    app.use_own_colours(session, 2)
    app.add_keyframe(session, 5, png(painted))
    seen = []
    result = app.colour(session, model, progress=lambda done, total, fps: seen.append((done, total)))
    theirs = run_test_py(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--keyframes", str(tmp_path / "keys")])
    assert_same_frames(zip_images(result.zip), theirs)
    assert seen[-1] == (7, 7)
    with zipfile.ZipFile(result.zip) as archive:
        ours_json = json.loads(archive.read("metrics.json"))
    theirs_json = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert ours_json["overall"]["psnr"] == pytest.approx(theirs_json["overall"]["psnr"], abs=0.05)
    assert app.metrics_rows(result.metrics)[1][0][0] == "model"
    # the regions option is test.py's --regions
    flat = app.colour(session, model, regions=True)
    theirs = run_test_py(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output",
                          str(tmp_path / "out_regions"), "--keyframes", str(tmp_path / "keys"), "--regions"])
    assert_same_frames(zip_images(flat.zip), theirs)
    # and the views option is test.py's --views
    viewed = app.colour(session, model, views=2)
    theirs = run_test_py(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output",
                          str(tmp_path / "out_views"), "--keyframes", str(tmp_path / "keys"), "--views", "2"])
    assert_same_frames(zip_images(viewed.zip), theirs)
    assert not all(np.array_equal(a, b) for a, b in zip(viewed.frames, result.frames))
    with zipfile.ZipFile(viewed.zip) as archive:
        assert json.loads(archive.read("metrics.json"))["views"] == 2


def test_video_colour_equals_test_py_on_the_video(tmp_path, frame_factory, model, checkpoint):
    clip = write_clip(tmp_path / "clip.avi", frame_factory)
    session = session_with(tmp_path, app.open_upload(clip, app.Limits()))
    results = {}
    for index in range(len(session.shots)):  # one shot at a time, as the page shows them
        session.current = index
        results |= zip_images(app.colour(session, model).zip)
    theirs = run_test_py(["--checkpoint", str(checkpoint), "--input", str(clip), "--output", str(tmp_path / "out")])
    assert_same_frames(results, theirs)
    cap = cv2.VideoCapture(str(session.result.result_video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(session.shot.frames)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12, abs=0.01)


def test_no_model_rows_of_a_held_drawing_are_exact(tmp_path, frame_factory, model):
    """Every frame the same drawing: the copied and the warped keyframe (zero flow between equal
    line art) are the truth itself, PSNR at its cap. The model's row scores the model's own frames;
    a fresh copy path is the mean of its aligned sources, which here are all the keyframe, so an
    untrained generator hands the held drawing back unchanged."""
    drawing = frame_factory(3)
    session = session_with(tmp_path, [app.Shot(".", [f"f{i}" for i in range(4)], [drawing] * 4)])
    app.use_own_colours(session, 1)
    result = app.colour(session, model)
    table = result.metrics
    assert table["copy keyframe (no model)"]["psnr"] == pytest.approx(100.0)
    assert table["warped keyframe (no model)"]["psnr"] == pytest.approx(100.0)
    own = np.mean([metrics_lib.psnr(out, truth) for out, truth in zip(result.frames, result.truths)])
    assert table["model"]["psnr"] == pytest.approx(own)
    small = utils.resize(drawing, SIZE)
    assert all(np.abs(out.astype(int) - small).max() <= 1 for out in result.frames)


def test_the_warped_keyframe_row_warps_along_the_models_own_flow(tmp_path):
    """A model trained with a still window: the app's no-model row warps the keyframe along that
    windowed flow, the flow the model itself is given, not the plain one."""
    import correspond
    frames = []
    for k in range(3):  # an outlined square that is held, an outlined disc that moves
        image = np.full((SIZE, SIZE, 3), 225, np.uint8)
        cv2.rectangle(image, (2, 3), (13, 18), (200, 60, 40), -1)
        cv2.rectangle(image, (2, 3), (13, 18), (0, 0, 0), 1)
        cv2.circle(image, (19 + 2 * k, 20), 6, (40, 60, 200), -1)
        cv2.circle(image, (19 + 2 * k, 20), 6, (0, 0, 0), 1)
        frames.append(image)
    cfg = models.ModelConfig(ngf=8, still_window=5)
    path = tmp_path / "windowed.pt"
    torch.save(models.generator_export(models.build_generator(cfg), cfg, SIZE, "canny"), path)
    session = session_with(tmp_path, [app.Shot(".", [f"f{i}" for i in range(3)], frames)])
    app.use_own_colours(session, 0)
    result = app.colour(session, app.Model.load(path, "cpu"))

    def row(window, resample="bicubic", scale=2):  # the model's own resampling and flow scale (a new model's)
        video = metrics_lib.VideoMetrics()
        arts = [correspond.flow_art(truth, line, "canny", scale) for line, truth in zip(result.lines, result.truths)]
        for art, truth in zip(arts, result.truths):
            video.update(correspond.warp_frame(result.truths[0], art, arts[0], "canny", window, resample, scale), truth)
        return video.result()["psnr"]

    assert cfg.flow_scale == 2
    assert row(5) != row(0)  # the window changes the warp here
    assert row(5) != row(5, "bilinear")  # and so does the resampling
    assert row(5) != row(5, scale=1)  # and the flow's scale
    assert result.metrics["warped keyframe (no model)"]["psnr"] == pytest.approx(row(5))


def test_two_keyframes_add_the_no_model_row_joined_as_the_model_joins_its_chains(tmp_path, frame_factory, model):
    """Keyframes 0 and 4 of five frames: the app adds the two keyframes warped onto every frame
    and joined with the colorizer's blend, scored as the model's row is; a shot with one keyframe
    has no such row."""
    import colorize
    import correspond
    frames = [frame_factory(i) for i in range(5)]
    session = session_with(tmp_path, [app.Shot(".", [f"f{i}" for i in range(5)], frames)])
    app.use_own_colours(session, 0)
    assert not any("joined" in row for row in app.colour(session, model).metrics)
    app.use_own_colours(session, 4)
    result = app.colour(session, model)
    name = f"keyframes warped, joined {colorize.DEFAULT_BLEND} (no model)"
    small = {k: utils.resize(frames[k], SIZE) for k in (0, 4)}
    video = metrics_lib.VideoMetrics()
    resample = model.cfg.keyframe_resample  # the no-model row resamples the keyframes as the model does
    assert resample == "bicubic"
    scale = model.cfg.flow_scale  # and computes the flow as the model does, on the frames' flow art
    assert scale == 2
    arts = [correspond.flow_art(truth, line, "canny", scale) for line, truth in zip(result.lines, result.truths)]
    for out, truth in zip(colorize.warped_keyframes(result.lines, small, colorize.DEFAULT_BLEND,
                                                    still_window=model.cfg.still_window, resample=resample,
                                                    scale=scale, arts=arts),
                          result.truths):
        video.update(out, truth)
    assert result.metrics[name]["psnr"] == pytest.approx(video.result()["psnr"])
    assert result.metrics[name]["psnr"] != pytest.approx(result.metrics["warped keyframe (no model)"]["psnr"])


def test_removed_keyframe_is_no_longer_used(tmp_path, frame_factory, model):
    frames = [frame_factory(i) for i in range(4)]
    session = session_with(tmp_path, [app.Shot(".", [f"f{i}" for i in range(4)], frames)])
    plain = app.colour(session, model).frames
    app.use_own_colours(session, 0)
    assert np.array_equal(app.colour(session, model).frames[0], utils.resize(frames[0], SIZE))
    app.remove_keyframe(session, 0)
    assert session.shot_keyframes() == {}
    assert all(np.array_equal(a, b) for a, b in zip(app.colour(session, model).frames, plain))
    with pytest.raises(UserError, match="not a keyframe"):
        app.remove_keyframe(session, 0)


def test_two_tabs_never_share_results(tmp_path, frame_factory, model):
    frames = [frame_factory(i) for i in range(4)]
    first, second = (session_with(tmp_path, [app.Shot(".", [f"f{i}" for i in range(4)], frames)]) for _ in "ab")
    app.use_own_colours(first, 0)
    mine = app.colour(first, model)
    before = mine.zip.read_bytes()
    theirs = app.colour(second, model)  # no keyframe: other results
    assert mine.folder != theirs.folder and not mine.folder.is_relative_to(second.work)
    assert mine.zip.read_bytes() == before
    assert zip_images(mine.zip)["f0.png"].tolist() != zip_images(theirs.zip)["f0.png"].tolist()


# ----------------------------------------------------------------------------- bad uploads
def rgba_with_hole(frame):
    rgba = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    rgba[:4, :4, 3] = 0
    return cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes()


@pytest.mark.parametrize("upload, limits, expect", [
    ("fake.mp4", {}, "cannot open video"),
    ("notes.txt", {}, "neither a video"),
    ("corrupt.zip", {}, "f1.png in corrupt.zip"),
    ("broken.zip", {}, "not a readable zip"),
    ("empty.zip", {}, "no numbered image frames"),
    ("climbing.zip", {}, "unsafe name"),
    ("clip.zip", {"max_bytes": 100}, "--max_upload_mb"),
    ("clip.zip", {"max_side": 32}, "at most 32 pixels"),
    ("clip.zip", {"max_frames": 2}, "--max_frames"),
    ("clip.avi", {"max_side": 32}, "at most 32 pixels"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_upload_is_one_readable_message(tmp_path, frame_factory, upload, limits, expect):
    frames = {f"f{i}.png": png(frame_factory(i)) for i in range(3)}
    write_zip(tmp_path / "clip.zip", frames)
    write_zip(tmp_path / "corrupt.zip", frames | {"f1.png": b"\x89PNG\r\n\x1a\n broken"})
    write_zip(tmp_path / "empty.zip", {"readme.txt": b"no frames"})
    write_zip(tmp_path / "climbing.zip", {"../../f1.png": frames["f1.png"]})
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    (tmp_path / "fake.mp4").write_text("not a video")
    (tmp_path / "notes.txt").write_text("hello")
    write_clip(tmp_path / "clip.avi", frame_factory)
    with pytest.raises(UserError, match=expect) as err:
        app.open_upload(tmp_path / upload, app.Limits(**limits))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key, expect", [("small", "is 32x24 but frame 1"), ("alpha", "transparent"),
                                         ("corrupt", "cannot read image"), ("frame 9", "does not exist")])
def test_bad_keyframe_is_refused_and_nothing_changes(tmp_path, frame_factory, key, expect):
    frames = [frame_factory(i) for i in range(3)]
    session = session_with(tmp_path, [app.Shot(".", ["a0", "a1", "a2"], frames)])
    data = {"small": png(cv2.resize(frames[1], (32, 24))), "alpha": rgba_with_hole(frames[1]),
            "corrupt": b"\x89PNG\r\n\x1a\n broken", "frame 9": png(frames[1])}[key]
    with pytest.raises(UserError, match=expect):
        app.add_keyframe(session, 9 if key == "frame 9" else 1, data)
    assert session.shot_keyframes() == {}


def test_opaque_alpha_is_accepted_as_its_colours(tmp_path, frame_factory):
    frame = frame_factory(1)
    rgba = np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    session = session_with(tmp_path, [app.Shot(".", ["a0", "a1"], [frame_factory(0), frame])])
    app.add_keyframe(session, 1, cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))[1].tobytes())
    assert np.array_equal(session.shot_keyframes()[1], frame)


def test_page_errors_become_one_message_and_the_app_goes_on():
    import gradio as gr

    def bad_upload():
        raise UserError("clip.mp4 is not a video")

    def bug():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error, match="clip.mp4 is not a video"):
        app.page_errors(bad_upload)()
    with pytest.raises(gr.Error, match="unexpected error \\(ZeroDivisionError"):
        app.page_errors(bug)()


# ----------------------------------------------------------------------------- server folders
@pytest.fixture
def allowed(tmp_path, frame_factory):
    """allow/ with a shot, a link to a folder outside, a shot whose frame links outside."""
    root, outside = tmp_path / "allow", tmp_path / "outside"
    for i in range(2):
        utils.write_image(root / "shot" / f"f{i}.png", frame_factory(i))
        utils.write_image(outside / f"f{i}.png", frame_factory(i, seed=5))
    (root / "out_link").symlink_to(outside, target_is_directory=True)
    utils.write_image(root / "sneaky" / "f0.png", frame_factory(0))
    (root / "sneaky" / "f1.png").symlink_to(outside / "f1.png")
    return root, outside


def test_server_folder_under_allow_dir_opens(allowed):
    root, _ = allowed
    shots = app.open_server_folder("shot", str(root), app.Limits())
    assert [s.names for s in shots] == [["f0", "f1"]]


@pytest.mark.parametrize("folder", ["../outside", "{outside}", "out_link", "sneaky"])
def test_server_folder_outside_allow_dir_is_refused(allowed, folder):
    root, outside = allowed
    with pytest.raises(UserError, match="outside the folder this app may read"):
        app.open_server_folder(folder.format(outside=outside), str(root), app.Limits())


def test_no_server_folder_without_allow_dir(allowed):
    with pytest.raises(UserError, match="--allow_dir"):
        app.open_server_folder(str(allowed[0] / "shot"), None, app.Limits())


# ----------------------------------------------------------------------------- start-up
def test_without_checkpoint_the_demo_model_or_one_line(tmp_path, monkeypatch, capsys, checkpoint):
    monkeypatch.setattr(app, "DEMO_CHECKPOINT", tmp_path / "demo_data" / "run" / "generator.pt")
    with pytest.raises(UserError, match="make demo"):
        app.resolve_checkpoint(None)
    monkeypatch.setattr(app, "DEMO_CHECKPOINT", checkpoint)
    assert app.resolve_checkpoint(None) == checkpoint
    assert "make demo's model" in capsys.readouterr().out


def test_auth_and_the_warning_beyond_localhost(tmp_path):
    (tmp_path / "auth").write_text("ana:s3cret\n")
    assert app.resolve_auth(None, str(tmp_path / "auth")) == ("ana", "s3cret")
    assert app.resolve_auth("ana:a:b", None) == ("ana", "a:b")
    with pytest.raises(UserError, match="USER:PASSWORD"):
        app.resolve_auth("ana", None)
    assert app.exposure_warning("127.0.0.1", None) is None
    assert app.exposure_warning("0.0.0.0", ("ana", "x")) is None
    assert "without --auth" in app.exposure_warning("0.0.0.0", None)


# ----------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint):
    """The app serving on a free localhost port, with --allow_dir; stopped afterwards."""
    base = tmp_path_factory.mktemp("server")
    allow, outside = base / "allow", base / "outside"
    allow.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the browser")
    (allow / "link").symlink_to(outside, target_is_directory=True)
    args = app.build_parser().parse_args(["--checkpoint", str(checkpoint), "--port", str(app_browser.free_port()),
                                          "--device", "cpu", "--allow_dir", str(allow)])
    work = base / "work"
    work.mkdir()
    blocks, url = app.serve(args, work)
    yield {"url": url, "work": work, "allow": allow, "outside": outside, "blocks": blocks}
    blocks.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_server_listens_on_localhost_only(server):
    assert server["url"].startswith("http://127.0.0.1:")


def test_one_colouring_job_at_a_time(server):
    """Two jobs on two CPU cores would each run at half speed and double the memory: the Colour
    event has a queue of its own that lets one through at a time (the others see their place)."""
    colour = [fn for fn in server["blocks"].fns.values() if fn.name == "on_colour"]
    assert len(colour) == 1 and colour[0].concurrency_limit == 1


def test_server_refuses_files_outside_its_folder(server):
    secret = server["outside"] / "secret.txt"
    for path in (secret, server["allow"] / "link" / "secret.txt", Path.cwd() / "app.py", ROOT / "app.py"):
        assert http_status(f"{server['url']}gradio_api/file={path}") == 403
    assert http_status(server["url"]) == 200


def test_server_with_auth_lets_no_one_in_without_it(checkpoint, tmp_path, monkeypatch):
    # Gradio takes its upload folder from the environment, one per process: give the module's
    # server its own back afterwards, or its uploads are refused as "not uploaded by a user"
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    args = app.build_parser().parse_args(["--checkpoint", str(checkpoint), "--port", str(app_browser.free_port()),
                                          "--device", "cpu", "--auth", "ana:s3cret"])
    blocks, url = app.serve(args, tmp_path)
    try:
        assert http_status(f"{url}config") == 401
        login = urllib.parse.urlencode({"username": "ana", "password": "wrong"}).encode()
        assert http_status_post(f"{url}login", login) in (400, 401)
        login = urllib.parse.urlencode({"username": "ana", "password": "s3cret"}).encode()
        assert http_status_post(f"{url}login", login) == 200
    finally:
        blocks.close()


def http_status_post(url: str, data: bytes) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_server_open_folder_refuses_a_link_outside(server):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    with pytest.raises(Exception, match="outside the folder this app may read"):
        client.predict("link", api_name="/on_folder")


# ----------------------------------------------------------------------------- a real browser
def test_browser_frames_equal_test_py(server, tmp_path, frame_factory, checkpoint):
    """Headless Chromium: upload a tiny clip, click frame 2 in the filmstrip, make its own colours
    its keyframe, colour, download the zip; its frames must be test.py's for the same inputs."""
    if app_browser.browser_paths() is None:
        pytest.skip("no chromium / chromedriver installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    clip = write_clip(tmp_path / "clip.avi", frame_factory, n_a=6, n_b=0)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chrome = app_browser.start_driver(downloads)
    try:
        app_browser.open_shot(chrome, server["url"], clip)
        assert app_browser.outside_requests(chrome, server["url"]) == []  # the page tells no one else
        app_browser.set_own_keyframe(chrome, 2)
        app_browser.colour_and_wait(chrome)
        ours = zip_images(app_browser.download(chrome, "zip_out", downloads, ".zip"))
    finally:
        chrome.quit()
    FrameExtraction.main(FrameExtraction.build_parser().parse_args(
        ["--video_path", str(clip), "--output_path", str(tmp_path / "frames")]))
    utils.write_image(tmp_path / "keys" / "shot_0001" / "frame_000002.png",
                      utils.read_rgb(tmp_path / "frames" / "shot_0001" / "frame_000002.png"))
    theirs = run_test_py(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "frames"),
                             "--output", str(tmp_path / "out"), "--keyframes", str(tmp_path / "keys")])
    assert len(ours) == 6
    assert_same_frames(ours, theirs)
