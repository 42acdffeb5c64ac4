"""A seeded synthetic video benchmark written as real mp4 files.

Three flavours, each rewarding a different schedule; the first two mirror the paper's contrast
between Something-Something and Kinetics:

``"temporal"``
    A coloured square wanders over a textured background. Its colour changes twice, once early
    (15-35 % of the video) and once late (65-85 %); the middle colour is random. The class is
    the ordered pair (first colour, last colour): ``red_to_green`` differs from
    ``green_to_red`` only in the order of events far apart in time. A short consecutive clip
    sees one colour change at best; a uniform clip sees the whole story, so uniform sampling
    should win.

``"motion"``
    A patch of horizontal stripes in a class colour drifts slowly over the frame while the
    stripes themselves move up or down by 2 pixels a frame (period 8) in bursts. The class is
    (colour, stripe direction). The direction is only visible between adjacent frames: at a
    stride of 2 frames or more it aliases (a 4-pixel shift is ambiguous, 6 looks reversed, 8
    looks still), so consecutive sampling should win. Corner flashes in random colours and a
    bouncing grey disc are distractors.

``"rhythm"``
    The striped patch of ``"motion"``, but its stripes move half as fast (1 pixel a frame) in a
    slow rhythm: 24 frames of one movement, 24 of another, repeated (from a random offset).
    The movements are up, down or still; the class is (colour, the pair of movements):
    ``red_up_down``, ``red_up_still``, ``red_down_still``. A 16-frame consecutive clip lies
    within one movement over a third of the time, which fits two classes; a strided clip
    (every second frame) spans 31 frames, so it always sees both movements, and a 2-pixel step
    still shows their direction; uniform sampling jitters and aliases the movement as in
    ``"motion"``. So strided sampling should win, where ``"motion"`` wants consecutive clips
    (its 2-pixel steps become an ambiguous 4 pixels at a stride of 2) and ``"temporal"``
    uniform ones. Videos of at least 48 frames show both movements. Corner flashes and the
    disc are distractors here too.

Motion is vertical in every flavour so a horizontal flip never changes a class.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from dataclasses import dataclass
from dataclasses import field
import fcntl
import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

import numpy as np

FLAVOURS = ("temporal", "motion", "rhythm")
# 2: lossless H.264 (qp 0) where version 1 wrote crf 12, whose files x264 now and then
# encoded differently from run to run. 3: "rhythm" moves slower in longer movements (strided
# sampling wins; in version 2, 6-frame movements at 2 pixels a frame, consecutive won as on
# "motion").
GENERATOR_VERSION = 3
_MARKER = "synthetic.json"
_PALETTE = (
    ("red", (230, 40, 40)),
    ("green", (40, 200, 60)),
    ("blue", (50, 90, 240)),
    ("yellow", (235, 220, 40)),
    ("magenta", (220, 50, 220)),
    ("cyan", (40, 220, 230)),
    ("orange", (245, 140, 30)),
    ("white", (245, 245, 245)),
)
# Ordered colour pairs, each pair followed by its reverse, so any class count below 56 keeps
# every order-only contrast (red_to_green next to green_to_red).
_TEMPORAL_PAIRS = tuple(
    pair
    for high in range(1, len(_PALETTE))
    for low in range(high)
    for pair in ((low, high), (high, low))
)
_STRIPE_PERIOD = 8.0
_STRIPE_SPEED = 2.0
# "rhythm": the movements alternated (stripe velocity sign: down +1, up -1, still 0), how
# many frames each lasts and the stripes' speed (pixels a frame).
_RHYTHMS = (("up", "down"), ("up", "still"), ("down", "still"))
_MOVEMENT = {"down": 1.0, "up": -1.0, "still": 0.0}
_RHYTHM_FRAMES = 24
_RHYTHM_SPEED = 1.0


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated benchmark lives.

    Attributes:
        root: The dataset root; list-file paths are relative to it.
        train_list: ``train.txt`` (``train/<class>/<video>.mp4 <label>`` lines).
        test_list: ``test.txt``, same format, disjoint videos.
        class_file: ``classes.txt``, one class name per line.
        classes: The class names.
        settings: The generator settings that produced it.

    Example:
        >>> import tempfile
        >>> data = generate(tempfile.mkdtemp(), flavour="temporal", num_classes=2,
        ...                 videos_per_class=2, num_frames=(16, 16), size=32)
        >>> data.classes
        ('red_to_green', 'green_to_red')
    """

    root: Path
    train_list: Path
    test_list: Path
    class_file: Path
    classes: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


def write_video(
    path: str | os.PathLike[str], frames: np.ndarray, fps: int = 25, *, gop: int = 8
) -> None:
    """Write uint8 RGB frames ``(T, H, W, 3)`` as an H.264 mp4 (MPEG-4 part 2 without libx264).

    Keyframes every ``gop`` frames and no B-frames keep seeking cheap; yuv420p needs even
    ``H`` and ``W``. H.264 is lossless (qp 0): the decoded frames are the written ones after
    conversion to yuv420p, whatever the encoder decides, so the same frames always decode the
    same. With a lossy rate (crf 12, before generator version 2) x264 encoded the same frames
    differently now and then: in 4 of 6 runs of 10 x 40 small videos in one process, against
    none of 6 with qp 0, whose files were at most 13 KB where crf 12's were 8 KB.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/a.mp4"
        >>> write_video(path, np.zeros((4, 16, 16, 3), np.uint8))
        >>> os.path.getsize(path) > 0
        True
    """
    import av

    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(
            "`frames` must be a uint8 array of shape (T, H, W, 3), but got "
            f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}."
        )
    count, height, width, channels = frames.shape
    if count == 0 or channels != 3 or height % 2 or width % 2:
        raise ValueError(
            "`frames` must hold at least one RGB frame with even height and width, but got "
            f"shape={frames.shape}."
        )
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"`fps` must be a positive int, but got fps={fps!r}.")
    if isinstance(gop, bool) or not isinstance(gop, int) or gop <= 0:
        raise ValueError(f"`gop` must be a positive int, but got gop={gop!r}.")
    h264 = "libx264" in av.codecs_available
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264" if h264 else "mpeg4", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        stream.max_b_frames = 0
        if h264:
            # One thread: the frames are tiny, and generation runs one video per process.
            stream.options = {
                "qp": "0",
                "preset": "veryfast",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:threads=1",
            }
        else:
            stream.options = {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def generate(
    root: str | os.PathLike[str],
    *,
    flavour: str,
    num_classes: int = 6,
    videos_per_class: int = 40,
    num_frames: tuple[int, int] = (64, 128),
    size: int = 64,
    seed: int = 0,
    test_fraction: float = 0.25,
    fps: int = 25,
) -> SyntheticDataset:
    """Generate a benchmark into ``root`` (which must be empty or missing).

    Args:
        root: Output folder.
        flavour: ``"temporal"`` (uniform sampling should win), ``"motion"`` (consecutive
            should win) or ``"rhythm"`` (long consecutive clips should win); see the module
            docstring.
        num_classes: 2..56 for ``"temporal"``; an even number in 2..16 for ``"motion"``; a
            multiple of 3 in 3..24 for ``"rhythm"``.
        videos_per_class: Videos per class, train and test together.
        num_frames: Inclusive range of video lengths, drawn per video.
        size: Frame height and width: even, at least 32, and a size decord 0.6 reads back
            (it fails on 48 and 72, say); checked on the first video.
        seed: The frames and list files are a function of the settings, this seed
            included, and so are the decoded frames (H.264 is lossless: see
            :func:`write_video`). Generator version 1's lossy files were not: x264 encoded
            6 of 240 of the demo's files differently between two runs on an idle machine,
            enough to change the demo's plan (``benchmarks/results/demo.md``).
        test_fraction: Share of each class's videos in the test list (at least one each).
        fps: Frame rate written into the files.

    Returns:
        The paths of the generated dataset.
    """
    settings = _check_settings(
        flavour=flavour,
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        seed=seed,
        test_fraction=test_fraction,
        fps=fps,
    )
    out = Path(root)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"`root` must be an empty or missing folder, but {out} is not.")
    out.mkdir(parents=True, exist_ok=True)
    classes = _class_names(flavour, num_classes)
    num_test = min(max(round(test_fraction * videos_per_class), 1), videos_per_class - 1)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for label, name in enumerate(classes):
        for index in range(videos_per_class):
            split = "test" if index < num_test else "train"
            rng = np.random.default_rng([seed, label, index])
            length = int(rng.integers(num_frames[0], num_frames[1] + 1))
            frames = _render(flavour, label, length, size, rng)
            relative = f"{split}/{name}/{name}_{index:04d}.mp4"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            write_video(out / relative, frames, fps)
            if not lines["train"] and not lines["test"]:
                _check_readable(out / relative, size)
            lines[split].append(f"{relative} {label}")
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    for split, split_lines in lines.items():
        (out / f"{split}.txt").write_text("".join(f"{line}\n" for line in split_lines))
    return _describe(out, classes, settings)


def ensure_dataset(cache_dir: str | os.PathLike[str], **settings: Any) -> SyntheticDataset:
    """Generate a benchmark once into ``cache_dir/<flavour>`` and reuse it afterwards.

    A marker file records the settings (and the generator version); a cached set whose marker
    differs is regenerated. Generation writes to a temporary folder renamed into place, under a
    lock, so concurrent callers and interrupted runs never see a half-written set.

    Args:
        cache_dir: Cache folder, created when missing.
        settings: Keyword arguments of :func:`generate` (``flavour`` is required).

    Example:
        >>> import tempfile
        >>> cache = tempfile.mkdtemp()
        >>> kwargs = dict(flavour="motion", num_classes=2, videos_per_class=2,
        ...               num_frames=(16, 16), size=32)
        >>> ensure_dataset(cache, **kwargs) == ensure_dataset(cache, **kwargs)
        True
    """
    if "flavour" not in settings:
        raise ValueError(f"`flavour` is required, one of {FLAVOURS}.")
    full = _check_settings(**{**_defaults(), **settings})
    marker = {"generator_version": GENERATOR_VERSION, "settings": full}
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / full["flavour"]
    with _locked(cache / f".{full['flavour']}.lock"):
        if _read_marker(root) == marker:
            return _describe(root, tuple(_class_names(full["flavour"], full["num_classes"])), full)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{full['flavour']}-new-"))
        try:
            data = generate(staging, **full)
            (staging / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
            if root.exists():
                stale = Path(tempfile.mkdtemp(dir=cache, prefix=f".{full['flavour']}-old-"))
                root.rename(stale / "data")
                shutil.rmtree(stale)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _describe(root, data.classes, full)


def _check_readable(path: Path, size: int) -> None:
    import decord

    try:
        decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1).get_batch([0])
    except decord.DECORDError as error:
        # decord 0.6 mis-sizes its frame buffer for some widths (48 and 72 among them).
        raise ValueError(
            f"decord cannot read back {size} x {size} videos ({str(error).splitlines()[0]}); "
            "choose another `size`, e.g. 64."
        ) from error


def _defaults() -> dict[str, Any]:
    return {
        "num_classes": 6,
        "videos_per_class": 40,
        "num_frames": (64, 128),
        "size": 64,
        "seed": 0,
        "test_fraction": 0.25,
        "fps": 25,
    }


def _check_settings(**settings: Any) -> dict[str, Any]:
    unknown = set(settings) - set(_defaults()) - {"flavour"}
    if unknown:
        raise TypeError(f"Unknown generator settings {sorted(unknown)}.")
    flavour = settings["flavour"]
    if flavour not in FLAVOURS:
        raise ValueError(f"`flavour` must be one of {FLAVOURS}, but got flavour={flavour!r}.")
    num_classes = settings["num_classes"]
    low, limit, step = {"temporal": (2, 56, 1), "motion": (2, 16, 2), "rhythm": (3, 24, 3)}[
        flavour
    ]
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or not low <= num_classes <= limit
        or num_classes % step
    ):
        expected = {
            "temporal": "an int in 2..56",
            "motion": "an even int in 2..16",
            "rhythm": "a multiple of 3 in 3..24",
        }[flavour]
        raise ValueError(
            f"`num_classes` must be {expected} for flavour={flavour!r}, but got "
            f"num_classes={num_classes!r}."
        )
    for name, low in (("videos_per_class", 2), ("size", 32), ("fps", 1)):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, but got {name}={value!r}.")
    if settings["size"] % 2:
        raise ValueError(f"`size` must be even (yuv420p), but got size={settings['size']}.")
    frames = (
        tuple(settings["num_frames"]) if isinstance(settings["num_frames"], (list, tuple)) else ()
    )
    if (
        len(frames) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in frames)
        or not 1 <= frames[0] <= frames[1]
    ):
        raise ValueError(
            "`num_frames` must be a (shortest, longest) pair of positive ints, but got "
            f"num_frames={settings['num_frames']!r}."
        )
    fraction = settings["test_fraction"]
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction < 1
    ):
        raise ValueError(
            f"`test_fraction` must be a float in (0, 1), but got test_fraction={fraction!r}."
        )
    if isinstance(settings["seed"], bool) or not isinstance(settings["seed"], int):
        raise ValueError(f"`seed` must be an int, but got seed={settings['seed']!r}.")
    # JSON-shaped, so the cache marker compares equal after a round trip.
    return {**settings, "num_frames": list(frames), "test_fraction": float(fraction)}


def _class_names(flavour: str, num_classes: int) -> list[str]:
    names = [name for name, _ in _PALETTE]
    if flavour == "motion":
        return [f"{names[c // 2]}_{('down', 'up')[c % 2]}" for c in range(num_classes)]
    if flavour == "rhythm":
        return [f"{names[c // 3]}_{'_'.join(_RHYTHMS[c % 3])}" for c in range(num_classes)]
    return [f"{names[a]}_to_{names[b]}" for a, b in _TEMPORAL_PAIRS[:num_classes]]


def _describe(root: Path, classes: Any, settings: dict[str, Any]) -> SyntheticDataset:
    return SyntheticDataset(
        root=root,
        train_list=root / "train.txt",
        test_list=root / "test.txt",
        class_file=root / "classes.txt",
        classes=tuple(classes),
        settings=dict(settings),
    )


def _read_marker(root: Path) -> Any:
    try:
        return json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _render(
    flavour: str, label: int, length: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    frame = _background(length, size, rng)
    _draw_disc(frame, rng)
    if flavour == "temporal":
        _draw_colour_story(frame, label, rng)
    else:
        _draw_stripes(frame, label, rng, rhythm=flavour == "rhythm")
        _draw_corner_flashes(frame, rng)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _background(length: int, size: int, rng: np.random.Generator) -> np.ndarray:
    # A static blocky texture: something to look past, cheap to encode.
    cells = rng.normal(0, 12, (size // 8 + 1, size // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
    still = rng.uniform(60, 100) + cells[:size, :size]
    return np.broadcast_to(still, (length, size, size, 3)).astype(np.float32)


def _bounce(start: float, velocity: float, span: float, length: int) -> np.ndarray:
    # Position of a point bouncing between 0 and span, for every frame.
    if span <= 0:
        return np.zeros(length)
    travelled = np.mod(start + velocity * np.arange(length), 2 * span)
    return span - np.abs(travelled - span)


def _draw_disc(frame: np.ndarray, rng: np.random.Generator) -> None:
    length, size = frame.shape[:2]
    radius = max(2.0, size * 0.08)
    span = size - 2 * radius
    centre_y = radius + _bounce(rng.uniform(0, span), rng.uniform(-1.5, 1.5), span, length)
    centre_x = radius + _bounce(rng.uniform(0, span), rng.uniform(-1.5, 1.5), span, length)
    ys = np.arange(size)[None, :, None]
    xs = np.arange(size)[None, None, :]
    inside = (ys - centre_y[:, None, None]) ** 2 + (xs - centre_x[:, None, None]) ** 2 < radius**2
    frame[inside] = rng.uniform(120, 200)


def _draw_colour_story(frame: np.ndarray, label: int, rng: np.random.Generator) -> None:
    length, size = frame.shape[:2]
    first, last = _TEMPORAL_PAIRS[label]
    middle = int(rng.choice([c for c in range(len(_PALETTE)) if c not in (first, last)]))
    early = int(round(rng.uniform(0.15, 0.35) * length))
    late = int(round(rng.uniform(0.65, 0.85) * length))
    colours = np.empty(length, dtype=np.int64)
    colours[:early], colours[early:late], colours[late:] = first, middle, last
    side = max(4, int(size * 0.28))
    span = size - side
    top = _bounce(rng.uniform(0, span), rng.uniform(-1.0, 1.0), span, length)
    left = _bounce(rng.uniform(0, span), rng.uniform(-1.0, 1.0), span, length)
    rgb = np.array([colour for _, colour in _PALETTE], dtype=np.float32)[colours]
    for t, (y, x) in enumerate(zip(np.round(top).astype(int), np.round(left).astype(int))):
        frame[t, y : y + side, x : x + side] = rgb[t]


def _draw_stripes(
    frame: np.ndarray, label: int, rng: np.random.Generator, *, rhythm: bool = False
) -> None:
    length, size = frame.shape[:2]
    if rhythm:
        colour = np.array(_PALETTE[label // 3][1], dtype=np.float32)
        first, second = (_MOVEMENT[m] for m in _RHYTHMS[label % 3])
        offset = int(rng.integers(0, 2 * _RHYTHM_FRAMES))
        in_first = (np.arange(length) + offset) // _RHYTHM_FRAMES % 2 == 0
        velocity = np.where(in_first, first, second)
    else:
        colour = np.array(_PALETTE[label // 2][1], dtype=np.float32)
        direction = 1.0 if label % 2 == 0 else -1.0
        # Bursts of drift and stillness, so a short clip may see no motion and longer clips
        # help.
        moving = np.zeros(length, dtype=bool)
        state, start = bool(rng.integers(2)), 0
        while start < length:
            run = int(rng.integers(6, 15))
            moving[start : start + run] = state
            state, start = not state, start + run
        if not moving.any():
            moving[: length // 2] = True
        velocity = direction * moving
    speed = _RHYTHM_SPEED if rhythm else _STRIPE_SPEED
    phase = rng.uniform(0, _STRIPE_PERIOD) + speed * np.cumsum(velocity)
    side = max(8, int(size * 0.4))
    span = size - side
    # The patch drifts far slower than its stripes move (an eighth of "motion"'s 2 pixels a
    # frame, a tenth of "rhythm"'s 1), so its rounded position seldom adds a pixel to a step.
    drift = 0.1 if rhythm else 0.25
    top = _bounce(rng.uniform(0, span), rng.uniform(-drift, drift), span, length)
    left = _bounce(rng.uniform(0, span), rng.uniform(-drift, drift), span, length)
    rows = np.arange(side)
    for t, (y, x) in enumerate(zip(np.round(top).astype(int), np.round(left).astype(int))):
        # Stripes are anchored to the patch: only the phase drift moves them within it.
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (rows - phase[t]) / _STRIPE_PERIOD)
        frame[t, y : y + side, x : x + side] = wave[:, None, None] * colour


def _draw_corner_flashes(frame: np.ndarray, rng: np.random.Generator) -> None:
    length, size = frame.shape[:2]
    side = max(3, size // 8)
    for _ in range(2):
        start = int(rng.integers(0, length))
        stop = min(length, start + int(rng.integers(4, 12)))
        colour = np.array(_PALETTE[int(rng.integers(len(_PALETTE)))][1], dtype=np.float32)
        frame[start:stop, :side, size - side :] = colour
