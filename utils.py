"""Small helpers shared by every script: frame discovery, image I/O, atomic writes, CLI errors.

This module imports no torch at import time, so that ``FrameExtraction.py`` (which needs no
torch) can use it; the few torch helpers import it inside the function.

Conventions used across the project:
- Images on disk are read as ``uint8`` RGB arrays of shape (H, W, 3) (OpenCV reads BGR; we
  convert once here and nowhere else).
- A *frame* is an image file whose stem ends in a number (``frame7.png``,
  ``ep01_000123.jpg``); frames are ordered by that number, whatever the prefix or padding.
- A *shot* is one folder of numbered frames. Nothing ever pairs frames of two folders.
- ``resize`` / ``resize_to`` is the one resize of the project: training, the frame cache,
  colouring and the benchmarks all shrink frames through it.

Example:
    python -c "import utils; print(utils.find_shot_dirs('frames/'))"
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# The one list of video extensions: FrameExtraction.py and test.py accept the same files.
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
              ".flv", ".ts", ".m2ts")
_TRAILING_NUMBER = re.compile(r"(\d+)$")
# Marker files that say "this folder was written by this project": a test.py output, a
# train.py run folder. Data discovery never reads them as shots, and --overwrite replaces only
# a folder that carries the right one.
OUTPUT_MARKER = ".tcvc-output"
RUN_MARKER = ".tcvc-run"
PARTIAL_MARKER = ".tcvc-partial"
# FrameExtraction.py's output: which video it came from, and every file it wrote (its size), so
# that --overwrite removes only that.
FRAMES_MARKER = ".tcvc-frames"


def file_sizes(folder, skip=()) -> dict:
    """{relative path: size, -1 for a symbolic link} of every file and link under ``folder``
    (links are not followed), but the names in ``skip``: what an output holds, for the
    manifest in its marker and for proving, before an overwrite, that it holds nothing else."""
    folder, found = Path(folder), {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if rel not in skip:
                found[rel] = -1 if path.is_symlink() else path.stat().st_size
    return found


class UserError(Exception):
    """A problem with the user's input: reported as one line, never as a traceback."""

    def __init__(self, *args):
        # A DataLoader worker's error is raised again in the main process as
        # UserError("Caught UserError in DataLoader worker process 0.\nOriginal Traceback ...").
        # Keep only the original message, the traceback's last line, so it still prints as one.
        if len(args) == 1 and str(args[0]).startswith("Caught UserError in DataLoader worker"):
            last = [line for line in str(args[0]).splitlines() if line.strip()][-1]
            args = (last.split("UserError: ", 1)[-1],)
        super().__init__(*args)


def renamed(parser, old: str, new: str, convert=None, **kwargs) -> None:
    """Keep an old flag ``--old`` working for one release as an alias of ``--new``: it stores
    into ``--new``'s destination (through ``convert`` when the old flag took another kind of
    value, e.g. ``on|off`` for what is now a switch) and prints a one-line note with the new
    name. ``kwargs`` are the old flag's own (``choices``, ``nargs``...)."""
    dest = new.lstrip("-").replace("-", "_")

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"note: {option_string} is now {new}; the old name still works for this release",
                  file=sys.stderr)
            setattr(namespace, dest, convert(values) if convert else values)

    parser.add_argument(old, action=Renamed, dest=f"_renamed_{old.lstrip('-')}", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)


def off_means_true(value: str) -> bool:
    """``on|off`` of an old flag -> the value of the ``--no_...`` switch that replaced it."""
    return value == "off"


def run_cli(main, args) -> None:
    """Run ``main(args)``; a ``UserError`` or an operating-system error (a read-only or full
    disk, a missing permission) becomes one line on stderr and exit code 2."""
    try:
        code = main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"error: cannot write or read{where}: {err.strerror or err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


# ----------------------------------------------------------------------------- frame discovery
def frame_number(path) -> int | None:
    """The number at the end of a file's stem (``ep01_000123.jpg`` -> 123), or None."""
    match = _TRAILING_NUMBER.search(Path(path).stem)
    return int(match.group(1)) if match else None


def natural_key(text) -> list:
    """Sort key that orders embedded numbers numerically: ``shot2`` before ``shot10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", str(text))]


def is_image(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def list_frames(folder) -> list[Path]:
    """Numbered image files of one folder, ordered by their number (not recursive).

    Two files with one number (``frame_000001.png`` and ``.jpg``, ``frame1`` and ``frame01``)
    would write one output file and pair the wrong frames, and a symbolic link to a missing
    file would silently make the chain jump: each is a ``UserError`` before any work."""
    folder = Path(folder)
    frames = []
    for p in folder.iterdir():
        if not is_image(p) or frame_number(p) is None or p.name.startswith("."):
            continue
        if p.is_symlink() and not p.exists():
            raise UserError(f"frame {p} is a symbolic link to a missing file ({os.readlink(p)})")
        if p.is_file():
            frames.append(p)
    frames.sort(key=lambda p: (frame_number(p), natural_key(p.name)))
    for a, b in zip(frames, frames[1:]):
        if frame_number(a) == frame_number(b):
            raise UserError(f"{folder} holds two frames numbered {frame_number(a)}: {a.name} and {b.name} "
                            "(keep one: each number is one frame of the shot)")
    return frames


def find_shot_dirs(root, report=True) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds numbered frames, in natural order.

    Each real folder is visited once, however symbolic links loop back. Skipped, and named in
    one note on stderr (``report``): hidden folders (``.x``, among them the ``.NAME.partial``
    folders of an interrupted run) and this project's own outputs, a train.py run folder or a
    test.py output folder, with everything inside them. Raises ``UserError`` with a clear
    message when ``root`` is missing, holds no images, or holds only images without a number.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    shots, unnumbered, skipped, seen = [], [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.stat(dirpath)
        if (real.st_dev, real.st_ino) in seen:  # a symlink back to a folder already read
            dirnames[:] = []
            continue
        seen.add((real.st_dev, real.st_ino))
        kept = []
        for name in sorted(dirnames, key=natural_key):
            why = _skip_reason(Path(dirpath) / name)
            if why:
                skipped.append(f"{Path(dirpath, name).relative_to(root)} ({why})")
            else:
                kept.append(name)
        dirnames[:] = kept
        images = [f for f in filenames if is_image(f) and not f.startswith(".")]
        if any(frame_number(f) is not None for f in images):
            shots.append(Path(dirpath))
        elif images:
            unnumbered.append(Path(dirpath))
    if skipped and report:
        print(f"note: skipped {len(skipped)} folder(s) under {root}: {', '.join(skipped[:5])}"
              + (" ..." if len(skipped) > 5 else ""), file=sys.stderr)
    if not shots:
        if unnumbered:
            raise UserError(f"{root} holds images but none is numbered (expected names like "
                            f"frame0001.png), e.g. in {unnumbered[0]}")
        raise UserError(f"{root} holds no image frames")
    return sorted(shots, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def _skip_reason(folder: Path) -> str | None:
    if folder.name.startswith("."):
        return "partial" if folder.name.endswith(".partial") else "hidden"
    if (folder / RUN_MARKER).is_file():
        return "a train.py run folder"
    if (folder / OUTPUT_MARKER).is_file():
        return "a test.py output"
    return None


# ----------------------------------------------------------------------------- resizing
def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """INTER_AREA (each output pixel averages the input pixels it covers: no aliasing) when
    shrinking; bilinear when enlarging both sides. Aspect ratio not kept."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    grow = height > h and width > w
    method = cv2.INTER_LINEAR if grow else cv2.INTER_AREA
    return cv2.resize(image, (width, height), interpolation=method)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to (size, size), as the original's 256x256 resize."""
    return resize_to(image, size, size)


# ----------------------------------------------------------------------------- image I/O
# The largest frame decoded (width x height): 8K is 33 megapixels. A PNG of a few hundred KB can
# announce 40000x40000 (4.8 GB decoded); its header is read first, and such a frame is refused in
# one line instead of running out of memory. TCVC_MAX_PIXELS raises the limit.
MAX_PIXELS = int(os.environ.get("TCVC_MAX_PIXELS", 100_000_000))


def decode_rgb(data: bytes, name="image") -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB (H, W, 3); ``UserError`` naming ``name`` if bad.

    OpenCV decodes a truncated JPEG without complaint (grey bottom rows), so a JPEG must end
    with its end-of-image marker.
    """
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise UserError(f"cannot read image {name}: the JPEG file is truncated")
    check_pixels(data, name)
    if data[:8] == _PNG_SIGNATURE:
        return _decode_png(data, name)
    image = _decode_opencv(data)
    if image is None:
        raise UserError(f"cannot read image {name}: not a readable image file")
    return image


def check_pixels(data: bytes, name) -> None:
    """Refuse a frame larger than ``MAX_PIXELS`` from its header, before decoding it."""
    import io

    from PIL import Image

    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":  # the fixed first chunk: no parser needed
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    else:
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Exception:  # not an image Pillow knows: the decoder reports it
            return
    if width * height > MAX_PIXELS:
        raise UserError(f"image {name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels, "
                        f"{width * height * 3 / 1e9:.1f} GB decoded), more than the {MAX_PIXELS / 1e6:.0f} "
                        "megapixels this tool decodes (set TCVC_MAX_PIXELS to allow more)")


def _decode_opencv(data: bytes) -> np.ndarray | None:
    """Any format OpenCV reads, as RGB (a grey or grey+alpha PNG becomes grey RGB), or None."""
    array = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
try:  # optional: libspng decodes PNG twice as fast as OpenCV's libpng; OpenCV reads them all
    import pyspng
except ImportError:
    pyspng = None


def _decode_png(data: bytes, name) -> np.ndarray:
    """PNG through libspng (pyspng): twice as fast as OpenCV's libpng here, the same pixels.
    Data loading is bound by PNG decoding, so this sets the training input rate. A PNG that
    pyspng cannot read (some valid grey+alpha files), or every PNG where pyspng is not
    installed, goes through OpenCV; only a PNG that neither reads is corrupt."""
    try:
        image = pyspng.load(data) if pyspng is not None else None
    except Exception:  # pyspng raises a bare RuntimeError for a broken or unsupported stream
        image = None
    if image is None:
        image = _decode_opencv(data)
        if image is None:
            raise UserError(f"cannot read image {name}: corrupt or truncated PNG file")
        return image
    if image.dtype != np.uint8:  # 16-bit PNG: keep the high byte
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if image.shape[2] == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[..., 0]), cv2.COLOR_GRAY2RGB)
    return image


def read_rgb(path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); ``UserError`` naming the file if unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read image {path}: {err.strerror or err}") from None
    return decode_rgb(data, path)


def read_grey(path) -> np.ndarray:
    """Read an image file as uint8 greyscale (H, W)."""
    return cv2.cvtColor(read_rgb(path), cv2.COLOR_RGB2GRAY)


def encode_image(image: np.ndarray, ext: str = ".png", jpeg_quality: int = 95) -> bytes:
    """Encode a uint8 RGB (H, W, 3) or grey (H, W) array to PNG/JPEG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise UserError(f"cannot encode image as {ext}")
    return buf.tobytes()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which must not race with writer threads.
_FILE_MODE = 0o666 & ~_umask()
TMP_SUFFIX = ".tmp"


def temp_name_pattern(name_regex: str) -> re.Pattern:
    """The names ``atomic_write_bytes`` gives its temporary files for final names matching
    ``name_regex`` (a regular expression; ``re.escape`` a plain name)."""
    return re.compile(rf"\.(?:{name_regex})\.[A-Za-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")


def remove_stale_temp_files(folder, name_regex: str) -> list[Path]:
    """Delete the temporary files that a killed ``atomic_write_bytes`` left in ``folder`` for
    final names matching ``name_regex`` (and only those: nothing else matches). Returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = temp_name_pattern(name_regex)
    stale = [p for p in folder.iterdir() if p.is_file() and pattern.fullmatch(p.name)]
    for p in stale:
        p.unlink()
    return stale


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so that a crash never leaves a half-written file under the final name. The file gets the
    mode any other tool would give it under the user's umask (0644 under umask 022), not the
    0600 of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_image(path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Atomically write a uint8 RGB or grey array; the format follows the file's suffix."""
    atomic_write_bytes(path, encode_image(image, Path(path).suffix, jpeg_quality))


# ----------------------------------------------------------------------------- one writer
class WriterLock:
    """One writer per output: an OS-level lock (``fcntl.flock``) on a hidden lock file beside
    the folder or file being written, ``.NAME.lock``. The kernel drops it when the process
    ends, however it ends, so a killed run never blocks the next; a second writer is refused
    with a ``UserError``. The lock file is removed on release (and re-checked after locking:
    a file removed by the previous holder between our open and our lock is not a lock)."""

    def __init__(self, target, tool: str):
        self.target, self.tool = Path(target).resolve(), tool
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self.fd = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                raise UserError(f"another {self.tool} is writing {self.target} ({holder or 'a running process'}): "
                                "wait for it to end, or choose another output") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)  # the previous holder removed it as we opened it: take the new one
        raise UserError(f"cannot lock {self.path}: it keeps changing")

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: nobody else can be inside
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------- threads
def choose_threads(pixels_per_step: int, cores=None) -> int:
    """Threads for torch and OpenCV: one per ``PIXELS_PER_THREAD`` of work per step (pixels of
    the batch), at most the cores this process may run on (``os.sched_getaffinity``: a
    container's or ``taskset``'s share, not the machine's). Small work gets one thread: OpenMP
    threads that spin-wait for each other are 8 to 30 times slower than one thread when
    another job holds a core. ``TCVC_THREADS`` (or ``OMP_NUM_THREADS``, which torchrun sets to
    1) overrides the choice."""
    for name in ("TCVC_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"{name} must be a whole number of threads, at least 1, got {value!r}")
            return int(value)
    if cores is None:  # macOS has no sched_getaffinity
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, pixels_per_step // PIXELS_PER_THREAD))


# Below this many pixels per step a second thread costs more in synchronisation than it
# saves on two cores (measured: see the README's threads figures).
PIXELS_PER_THREAD = 4 * 256 * 256


def set_threads(pixels_per_step: int) -> int:
    """Apply ``choose_threads`` to torch and OpenCV; returns the count."""
    import torch

    threads = choose_threads(pixels_per_step)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads


# ----------------------------------------------------------------------------- memory
def available_memory(device=None) -> int:
    """Bytes that can still be allocated: free GPU memory on a CUDA device, else the kernel's
    MemAvailable (what can be used without swapping), else no limit."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_memory(needed: int, what: str, device=None) -> None:
    """Refuse work whose estimated memory exceeds what is available, in one line, before it
    starts (instead of an out-of-memory traceback or the kernel's OOM killer)."""
    free = available_memory(device)
    if needed > free:
        raise UserError(f"{what} needs about {needed / 2**30:.1f} GiB of memory, more than the "
                        f"{free / 2**30:.1f} GiB available: use a smaller size")


# ----------------------------------------------------------------------------- torch helpers
def atomic_torch_save(obj, path) -> None:
    """``torch.save`` through a temporary file and a rename (never a half-written checkpoint)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path) -> dict:
    """``torch.load(weights_only=True)`` to the CPU, with one clear line for a missing, corrupt
    or foreign file (torch raises many exception types for those)."""
    import torch

    if Path(path).is_dir():
        raise UserError(f"checkpoint {path} is a folder, not a checkpoint file")
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or it holds "
                        "objects other than tensors and plain types") from None
    except Exception as err:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
        raise UserError(f"cannot read checkpoint {path}: corrupt or truncated file ({first})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} is not a TCVC checkpoint (no dict inside)")
    bad = first_non_finite(ckpt)
    if bad:
        raise UserError(f"checkpoint {path} holds non-finite values (nan or inf) in {bad}: it would colour every "
                        "frame black; use an earlier checkpoint")
    return ckpt


def first_non_finite(tree, name="") -> str | None:
    """The name of the first floating-point tensor in a nested dict/list holding nan or inf."""
    import torch

    if isinstance(tree, torch.Tensor):
        return name or "a tensor" if tree.is_floating_point() and not torch.isfinite(tree).all() else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    for key, value in items:
        found = first_non_finite(value, f"{name}.{key}" if name else str(key))
        if found:
            return found
    return None


def resolve_device(name: str = "auto"):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ``UserError``."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available "
                        "(use --device cpu or auto)")
    return torch.device(name)


def autocast_context(device, amp: str):
    """nanoGPT's single switch for mixed precision, shared by training and inference: bf16 or
    fp16 autocast on CUDA; ``off``, and every CPU run, stay fp32."""
    import contextlib

    import torch

    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
