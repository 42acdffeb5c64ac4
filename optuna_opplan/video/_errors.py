"""The error raised for a video that cannot be read."""

from __future__ import annotations


class VideoReadError(RuntimeError):
    """A video of a dataset is missing, unreadable, empty or not a video.

    The message names the file and the reason, so a failure deep inside a DataLoader worker
    still says which file to fix.

    Example:
        >>> str(VideoReadError("a.mp4: missing"))
        'a.mp4: missing'
    """
