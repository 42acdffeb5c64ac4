"""Dataset layouts: mmaction2-style list files with a class file, and a folder per class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple
import warnings

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


class VideoEntry(NamedTuple):
    """One labelled video of a dataset.

    Attributes:
        path: The video's path relative to the dataset root, with ``/`` separators.
        label: The class index.

    Example:
        >>> VideoEntry("cat/a.mp4", 0).label
        0
    """

    path: str
    label: int


def read_class_file(class_file: str | os.PathLike[str]) -> list[str]:
    """Read class names, one per line; a class's index is its line's position among names.

    Blank lines are ignored.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "classes.txt"
        >>> _ = f.write_text("cat\\ndog\\n")
        >>> read_class_file(f)
        ['cat', 'dog']
    """
    path = Path(class_file)
    if not path.is_file():
        raise FileNotFoundError(f"Class file {str(path)!r} does not exist or is not a file.")
    names: list[str] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise ValueError(
                f"{path}:{line_number}: class {name!r} is already named on line {seen[name]}."
            )
        seen[name] = line_number
        names.append(name)
    if not names:
        raise ValueError(f"Class file {str(path)!r} names no class.")
    return names


def read_list_file(
    list_file: str | os.PathLike[str], root: str | os.PathLike[str], classes: list[str]
) -> list[VideoEntry]:
    """Read a list file of ``relative/path.mp4 label`` lines, as mmaction2 writes them.

    The label is a class index into ``classes`` or, failing that, a class name. Paths may hold
    spaces (the label is the last field). Blank lines and ``#`` comments are ignored. A path
    that is absolute or that resolves outside ``root`` (``..``, a symlink out) is rejected, as
    is an unknown label, naming the line. An exact duplicate line is dropped with a warning; the
    same path with two labels is rejected. Missing or unreadable videos are not checked here:
    :meth:`VideoDataset.validate` does that.

    Args:
        list_file: The list file.
        root: The dataset root the paths are relative to.
        classes: Class names, as :func:`read_class_file` returns them.

    Returns:
        The entries in file order.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "train.txt").write_text("a/1.mp4 1\\nb/2.mp4 cat\\n")
        >>> read_list_file(root / "train.txt", root, ["cat", "dog"])
        [VideoEntry(path='a/1.mp4', label=1), VideoEntry(path='b/2.mp4', label=0)]
    """
    path = Path(list_file)
    if not path.is_file():
        raise FileNotFoundError(f"List file {str(path)!r} does not exist or is not a file.")
    root_path = _check_root(root)
    by_name = {name: index for index, name in enumerate(classes)}
    entries: list[VideoEntry] = []
    first_line: dict[str, tuple[int, int]] = {}
    duplicates = 0
    for line_number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{line_number}"
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f"{where}: expected `relative/path label`, but got {raw!r}.")
        video, token = fields
        label = _parse_label(token, classes, by_name, where)
        relative = _relative_inside(root_path, video, where)
        if relative in first_line:
            previous_line, previous_label = first_line[relative]
            if previous_label != label:
                raise ValueError(
                    f"{where}: {relative!r} has label {label} here but {previous_label} on "
                    f"line {previous_line}."
                )
            duplicates += 1
            continue
        first_line[relative] = (line_number, label)
        entries.append(VideoEntry(relative, label))
    if duplicates:
        warnings.warn(
            f"{path}: dropped {duplicates} duplicate entr{'y' if duplicates == 1 else 'ies'}.",
            stacklevel=2,
        )
    if not entries:
        raise ValueError(f"List file {str(path)!r} holds no entries.")
    return entries


def scan_class_folders(
    root: str | os.PathLike[str], extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> tuple[list[VideoEntry], list[str]]:
    """List the videos of a folder-per-class layout (``root/<class>/<video>``).

    Classes are the sorted sub-folder names; videos the files with one of ``extensions`` (any
    case), sorted. Hidden files and folders are ignored; other files are ignored with a warning
    so a misnamed video does not vanish silently. Files resolving outside ``root`` are rejected.

    Returns:
        The entries and the class names.

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "dog").mkdir()
        >>> (root / "dog" / "a.mp4").touch()
        >>> scan_class_folders(root)
        ([VideoEntry(path='dog/a.mp4', label=0)], ['dog'])
    """
    root_path = _check_root(root)
    classes = sorted(
        p.name for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not classes:
        raise ValueError(f"Dataset root {str(root_path)!r} holds no class folder.")
    suffixes = tuple(e.lower() for e in extensions)
    entries: list[VideoEntry] = []
    ignored: list[str] = []
    for label, name in enumerate(classes):
        for file in sorted((root_path / name).iterdir()):
            if file.name.startswith(".") or file.is_dir():
                continue
            relative = f"{name}/{file.name}"
            if not file.name.lower().endswith(suffixes):
                ignored.append(relative)
                continue
            entries.append(VideoEntry(_relative_inside(root_path, relative, relative), label))
    if ignored:
        warnings.warn(
            f"Ignored {len(ignored)} file(s) without a video extension {suffixes} under "
            f"{str(root_path)!r}, e.g. {ignored[:3]}.",
            stacklevel=2,
        )
    if not entries:
        raise ValueError(f"Class folders under {str(root_path)!r} hold no video.")
    return entries, classes


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"Dataset root {str(path)!r} does not exist or is not a folder.")
    return path


def _parse_label(token: str, classes: list[str], by_name: dict[str, int], where: str) -> int:
    try:
        label = int(token)
    except ValueError:
        if token in by_name:
            return by_name[token]
        raise ValueError(
            f"{where}: label {token!r} is neither a class index nor a class name of the class "
            f"file."
        ) from None
    if not 0 <= label < len(classes):
        raise ValueError(
            f"{where}: label {label} is out of range: the class file names {len(classes)} "
            f"classes (0..{len(classes) - 1})."
        )
    return label


def _relative_inside(root: Path, video: str, where: str) -> str:
    candidate = Path(video)
    if candidate.is_absolute() or video.startswith(("/", "\\")):
        raise ValueError(f"{where}: path {video!r} is absolute; paths must be relative to root.")
    resolved_root = root.resolve()
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(resolved_root):
        raise ValueError(
            f"{where}: path {video!r} resolves to {str(resolved)!r}, outside the dataset root "
            f"{str(resolved_root)!r}."
        )
    # Normalise ``a/./b`` and ``a/../a/b`` so duplicates are found, without following links.
    return Path(os.path.normpath(video)).as_posix()
