"""A decoded-frame cache: every training frame resized once to the load size, in one file.

Decoding a 640x480 PNG costs about 4 ms, so PNG data loading cannot feed a GPU. The cache
holds every frame of the training shots already decoded and resized to the load size
(``dataset.load_size_for(image_size)``, the frame the random crop is taken from) in one
uint8 array on disk, ``frames.npy`` (N, L, L, 3), read a frame at a time (``NpyFile``):
DataLoader workers and DDP ranks share the operating system's page cache instead of each
decoding. With line-art mode ``given`` the line art is cached too (``lines.npy``).

Where: ``--cache_dir`` (default ``$TCVC_CACHE_DIR``, else ``$XDG_CACHE_HOME/tcvc``, else
``~/.cache/tcvc``), one folder per (frame list, load size, line-art mode, version); it can be
deleted at any time. It is reused across runs and rebuilt when a frame file changes (size or
modification time), or when the load size or the line-art mode changes. A cache is built in a
hidden folder and renamed into place only when complete, so a build that was killed is
never read: the next run builds it again (and removes the killed build's folder).

Nothing lost on a full or failing disk: the free space is checked and the whole file reserved
(``posix_fallocate``) before the first frame is written, so a full disk is one clear line, not
the SIGBUS of a memory map that cannot be backed. Before use, each file's size and a checksum
of a sample of its frames (``SAMPLES`` of them, evenly spaced) are verified; a cache that does
not verify (truncated, zeroed, changed) is rebuilt. Frames are read with ``pread`` instead of a
memory map: a file truncated while training gives a ``UserError`` naming it, not a SIGBUS.

Example:
    python -c "import framecache, utils; print(framecache.default_cache_dir())"
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

import utils

VERSION = 2
SAMPLES = 32  # frames per file whose checksum is verified before every use


def default_cache_dir() -> Path:
    if os.environ.get("TCVC_CACHE_DIR"):
        return Path(os.environ["TCVC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tcvc"


def _stamp(path: Path) -> list:
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


class FrameCache:
    """Decoded frames of a list of shots: ``colour(shot, pos)`` -> uint8 (L, L, 3) and, with
    given line art, ``line(shot, pos)`` -> uint8 (L, L), each valid until the next call of the
    same method (``NpyFile``). Pickles as its folder, so a DataLoader
    worker re-opens the file rather than copying it."""

    def __init__(self, folder: Path, shot_lengths: list[int]):
        self.folder = Path(folder)
        self.starts = np.cumsum([0] + list(shot_lengths)).tolist()
        self._files = {}

    def __getstate__(self):
        return {"folder": self.folder, "starts": self.starts}

    def __setstate__(self, state):
        self.folder, self.starts = state["folder"], state["starts"]
        self._files = {}

    def _read(self, name: str, index: int) -> np.ndarray:
        if name not in self._files:  # opened in each process (DataLoader workers re-open it)
            self._files[name] = NpyFile(self.folder / name)
        return self._files[name].frame(index)

    def colour(self, shot: int, pos: int) -> np.ndarray:
        return self._read("frames.npy", self.starts[shot] + pos)

    def line(self, shot: int, pos: int) -> np.ndarray:
        return self._read("lines.npy", self.starts[shot] + pos)


class NpyFile:
    """One ``.npy`` array of frames read a frame at a time with ``os.preadv`` (through the page
    cache, shared by every process, as a memory map is): a short read is a ``UserError``.
    ``frame`` reads into one buffer that it reuses, as fast as slicing a memory map here (117-133
    against 148-226 us for a 288² frame and its 256² crop; a fresh buffer per frame took 730-830 us
    in page faults): what it returns is valid until its next call, so copy what you keep."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            self.offset = f.tell()
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.frame_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self._local = threading.local()  # one buffer per thread: the builds read from a thread pool
        self.fd = os.open(self.path, os.O_RDONLY)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index``, read-only, valid until this thread's next call."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = np.empty(self.shape[1:], self.dtype)
        buffer.flags.writeable = True
        got = os.preadv(self.fd, [buffer], self.offset + index * self.frame_bytes)
        if got != self.frame_bytes:
            raise utils.UserError(f"the frame cache file {self.path} was truncated while in use (frame {index} of "
                                  f"{self.shape[0]} is missing): the next run rebuilds it; continue with "
                                  "--resume auto")
        buffer.flags.writeable = False
        return buffer

    def expected_size(self) -> int:
        return self.offset + self.shape[0] * self.frame_bytes

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)


def cache_key(files: list[Path], load_size: int, line_art: str) -> str:
    digest = hashlib.sha1(json.dumps([VERSION, load_size, line_art == "given",
                                      [str(Path(f).resolve()) for f in files]]).encode())
    return digest.hexdigest()[:20]


def open_or_build(shot_frames: list[list[Path]], load_size: int, line_art: str, line_paths=None,
                  cache_dir=None, build: bool = True) -> FrameCache:
    """The cache of these shots' frames at ``load_size``: opened when it is complete and current,
    else built (``build=False``: a ``UserError``, for DDP ranks that wait for rank 0's build)."""
    files = [f for shot in shot_frames for f in shot]
    given = [f for shot in line_paths for f in shot] if line_art == "given" else []
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = root / cache_key(files, load_size, line_art)
    index = {"version": VERSION, "load_size": load_size, "line_art": line_art,
             "files": [_stamp(f) for f in files], "lines": [_stamp(f) for f in given]}
    if not _is_current(folder, index):
        if not build:
            raise utils.UserError(f"the frame cache {folder} is missing or out of date")
        _build(folder, files, given, load_size, index)
    return FrameCache(folder, [len(s) for s in shot_frames])


def _is_current(folder: Path, index: dict) -> bool:
    """Built for these very files, complete, and its sample of frames unchanged."""
    try:
        saved = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or {k: v for k, v in saved.items() if k != "checks"} != index:
        return False
    problem = _verify(folder, saved.get("checks"))
    if problem:
        print(f"note: rebuilding the frame cache {folder}: {problem}", file=sys.stderr)
    return problem is None


def _checks(folder: Path) -> dict:
    """{file name: [size in bytes, checksum of its sample of frames]} of a cache's arrays."""
    out = {}
    for name in ("frames.npy", "lines.npy", "flows.npy", "keyflows.npy", "keys.npy"):
        if (folder / name).is_file():
            array = NpyFile(folder / name)
            digest = hashlib.sha1()
            n = array.shape[0]
            for i in sorted({round(k * (n - 1) / max(1, SAMPLES - 1)) for k in range(min(n, SAMPLES))}):
                digest.update(array.frame(i).tobytes())
            out[name] = [(folder / name).stat().st_size, digest.hexdigest()]
    return out


def _verify(folder: Path, checks) -> str | None:
    """None when every file has its size and sample checksum, else what is wrong."""
    if not isinstance(checks, dict) or not checks:
        return "it holds no checksums"
    for name, (size, _) in checks.items():
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            return f"{name} is {actual} bytes, not {size} (truncated or replaced)"
    try:
        if _checks(folder) != checks:
            return "the checksum of its sampled frames changed (its contents were overwritten)"
    except (OSError, ValueError, utils.UserError) as err:
        return f"it cannot be read ({err})"
    return None


def _build(folder: Path, files, given, load_size: int, index: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_killed_builds(folder)
    building = folder.with_name(f".{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    size_gb = len(files) * load_size * load_size * (3 + bool(given)) / 1e9
    free = shutil.disk_usage(folder.parent).free
    if free < size_gb * 1e9 + 64 * 2**20:  # and a margin for the file system's own needs
        shutil.rmtree(building, ignore_errors=True)
        raise utils.UserError(f"the frame cache needs {size_gb:.2f} GB but only {free / 1e9:.2f} GB are free in "
                              f"{folder.parent}: free space, choose another --cache_dir, or pass --no_frame_cache")
    print(f"note: building the frame cache: {len(files)} frames at {load_size}x{load_size}, {size_gb:.2f} GB, "
          f"in {folder} (once; --no_frame_cache reads the image files instead)", file=sys.stderr)
    try:
        jobs = [("frames.npy", files, utils.read_rgb, (load_size, load_size, 3))]
        if given:
            jobs.append(("lines.npy", given, utils.read_grey, (load_size, load_size)))
        for name, paths, read, shape in jobs:
            array = np.lib.format.open_memmap(building / name, mode="w+", dtype=np.uint8,
                                              shape=(len(paths), *shape))
            with open(building / name, "r+b") as f:  # reserve every block: ENOSPC here, never SIGBUS later
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)

            def fill(i, paths=paths, read=read, array=array):
                array[i] = utils.resize(read(paths[i]), load_size)

            with ThreadPoolExecutor(max_workers=min(8, len(os.sched_getaffinity(0)))) as pool:
                list(tqdm(pool.map(fill, range(len(paths))), total=len(paths), unit="frame",
                          desc=f"frame cache ({name})", leave=False))
            array.flush()
            del array
        index = index | {"checks": _checks(building)}
        _publish(building, folder, index)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _publish(building: Path, folder: Path, index: dict) -> None:
    """A finished build into place: its index last (what makes it complete), then the rename; an
    out-of-date cache is set aside and removed (open files stay valid). Another process may
    build the same cache at the same time (the study's two models on one data folder): when a
    current cache has appeared in the meantime, this build is dropped and that one is used."""
    utils.atomic_write_bytes(building / "index.json", json.dumps(index).encode())
    wanted = {k: v for k, v in index.items() if k != "checks"}
    for _ in range(3):
        if folder.exists():
            if _is_current(folder, wanted):  # published by another process meanwhile: the same cache
                shutil.rmtree(building, ignore_errors=True)
                return
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            try:
                os.replace(folder, old)
            except FileNotFoundError:  # set aside by another process meanwhile
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(building, folder)
            return
        except OSError as err:  # a folder appeared there since the check: look at it again
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    shutil.rmtree(building, ignore_errors=True)
    raise utils.UserError(f"the cache {folder} kept being replaced by another process while this one published "
                          "its own: run one training per data folder at a time, or give each its own --cache_dir")


def _remove_killed_builds(folder: Path) -> None:
    """Hidden build folders of this cache whose process is gone: a build that was killed."""
    for stale in folder.parent.glob(f".{folder.name}.building-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- line art and neighbour flows
class FlowCache:
    """Each cached frame's line art and optical flows, at the load size: ``line(shot, pos)`` ->
    uint8 (L, L); ``flow(shot, pos, step)`` -> float16 (2, L, L), (dx, dy) in pixels, from frame
    ``pos`` to frame ``pos + step`` (step -1: the frame before, +1: the frame after), zeros where
    that frame is outside the shot; ``keys(shot, pos)`` -> the positions in the shot of the
    frame's pre-drawn keyframes (-1: none), and ``key_flow(shot, pos, slot)`` its flow to the
    keyframe in that slot. Pickles as its folder, as ``FrameCache`` does."""

    def __init__(self, folder: Path, starts: list[int]):
        self.folder, self.starts = Path(folder), list(starts)
        self._lines = self._flows = self._keys = self._key_flows = None

    def __getstate__(self):
        return {"folder": self.folder, "starts": self.starts}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["starts"])

    def _open(self):
        if self._flows is None:
            self._lines = np.load(self.folder / "lines.npy", mmap_mode="r")
            self._keys = np.load(self.folder / "keys.npy")
            self._key_flows = np.load(self.folder / "keyflows.npy", mmap_mode="r")
            self._flows = np.load(self.folder / "flows.npy", mmap_mode="r")

    def line(self, shot: int, pos: int) -> np.ndarray:
        self._open()
        return self._lines[self.starts[shot] + pos]

    def flow(self, shot: int, pos: int, step: int) -> np.ndarray:
        self._open()
        return self._flows[self.starts[shot] + pos, (step + 1) // 2]

    def keys(self, shot: int, pos: int) -> np.ndarray:
        self._open()
        return self._keys[self.starts[shot] + pos]

    def key_flow(self, shot: int, pos: int, slot: int) -> np.ndarray:
        self._open()
        return self._key_flows[self.starts[shot] + pos, slot]


def open_or_build_flows(frames: FrameCache, line_of, pair_flow, keys, tag: str, build: bool = True,
                        variant: str = "", art_of=None) -> FlowCache:
    """The line art and flows of a complete frame cache, in a folder beside it (``lines.npy``
    (N, L, L) uint8; ``flows.npy`` (N, 2, 2, L, L) float16, to the frames before and after;
    ``keys.npy`` (N, K) int32 and ``keyflows.npy`` (N, K, 2, L, L) float16, to K keyframes of
    the same shot: 3 + 4K / 3 times the frames' bytes), built once in a hidden folder renamed
    into place when complete, and rebuilt when the frame cache or ``tag`` (how line art, flows
    and keyframes are made) changes. ``line_of(colour, shot, pos)`` gives a frame's uint8 line
    art from its cached colour frame, ``art_of(colour, line)`` what its flow is computed on (None:
    the line art; ``correspond.flow_art``), ``pair_flow(art_t, art_s)`` the float32 (L, L, 2) flow
    from frame t to frame s, ``keys(shot, pos, n)`` the K keyframe positions of frame ``pos`` of
    a shot of ``n`` frames (-1: none). ``variant`` names flows of another kind (a still window) that
    live beside the plain ones in a folder of their own, so that runs of both kinds at once do not
    rebuild each other's."""
    index = {"version": VERSION, "tag": tag,
             "frames": hashlib.sha1((frames.folder / "index.json").read_bytes()).hexdigest()}
    folder = frames.folder.with_name(frames.folder.name + ".flows" + (f"-{variant}" if variant else ""))
    if not _is_current(folder, index):
        if not build:
            raise utils.UserError(f"the line-art and flow cache {folder} is missing or out of date")
        _build_flows(folder, frames, line_of, pair_flow, keys, index, art_of)
    return FlowCache(folder, frames.starts)


def _build_flows(folder: Path, frames: FrameCache, line_of, pair_flow, keys, index: dict, art_of=None) -> None:
    _remove_killed_builds(folder)
    building = folder.with_name(f".{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    starts = frames.starts
    jobs = [(s, p) for s in range(len(starts) - 1) for p in range(starts[s + 1] - starts[s])]
    key_pos = np.array([keys(s, p, starts[s + 1] - starts[s]) for s, p in jobs], np.int32)  # (N, K)
    n_keys = key_pos.shape[1]
    size = frames.colour(0, 0).shape[0]
    need = len(jobs) * size * size * (9 + 4 * n_keys)
    free = shutil.disk_usage(folder.parent).free
    if free < need + 64 * 2**20:  # and a margin for the file system's own needs
        shutil.rmtree(building, ignore_errors=True)
        raise utils.UserError(f"the line-art and flow cache needs {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB "
                              f"are free in {folder.parent}: free space, choose another --cache_dir, or pass "
                              f"--no_flow_cache")
    print(f"note: computing line art and the optical flows between neighbouring frames and to {n_keys} keyframes "
          f"a frame into the cache: {len(jobs)} frames, {need / 1e9:.2f} GB, in {folder} (once)", file=sys.stderr)
    try:
        np.save(building / "keys.npy", key_pos)
        lines = np.lib.format.open_memmap(building / "lines.npy", mode="w+", dtype=np.uint8,
                                          shape=(len(jobs), size, size))
        flows = np.lib.format.open_memmap(building / "flows.npy", mode="w+", dtype=np.float16,
                                          shape=(len(jobs), 2, 2, size, size))
        key_flows = np.lib.format.open_memmap(building / "keyflows.npy", mode="w+", dtype=np.float16,
                                              shape=(len(jobs), n_keys, 2, size, size))
        for name in ("lines.npy", "flows.npy", "keyflows.npy"):  # reserve every block: ENOSPC here, never SIGBUS later
            with open(building / name, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)

        def fill_line(job, lines=lines):
            lines[starts[job[0]] + job[1]] = line_of(np.array(frames.colour(*job)), *job)

        def fill_flows(job, lines=lines, flows=flows, key_flows=key_flows):
            shot, pos = job
            i, n = starts[shot] + pos, starts[shot + 1] - starts[shot]

            def art(p):  # frame p of the shot, as its flows are computed on (made again where needed: cheap)
                line = lines[starts[shot] + p]
                return line if art_of is None else art_of(np.array(frames.colour(shot, p)), np.array(line))

            here = art(pos)
            for j, step in enumerate((-1, 1)):
                if 0 <= pos + step < n:  # (L, L, 2) -> (2, L, L): a crop is then rows of one channel
                    flows[i, j] = pair_flow(here, art(pos + step)).transpose(2, 0, 1)
                else:
                    flows[i, j] = 0
            for j, key in enumerate(key_pos[i]):
                key_flows[i, j] = 0 if key < 0 else pair_flow(here, art(int(key))).transpose(2, 0, 1)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(fill_line, jobs))
            list(tqdm(pool.map(fill_flows, jobs), total=len(jobs), unit="frame", desc="flows",
                      leave=False))
        for array in (lines, flows, key_flows):
            array.flush()
        del lines, flows, key_flows
        _publish(building, folder, index | {"checks": _checks(building)})
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
