"""How a record refers to a picture or video: a path, a URL, or bytes embedded in the data.

Hub datasets ship pictures inside Parquet/Arrow rows (``{"bytes": ..., "path": ...}`` structs or the
``datasets.Image`` feature). Such a picture becomes an :class:`EmbeddedMedia`: a ``str`` that names
where it came from (``"train-00003.parquet: row 1712: image"``), so every place that lists, keys, logs
or shows a media path keeps working, plus ``data``, the encoded bytes, decoded only when a batch
needs the pixels. Paths and URLs stay plain strings. One idea for the validator, training, preview,
side by side and model lab: open any of them through :func:`media_source`.
"""

from __future__ import annotations

import io
import os
from typing import Union


class EmbeddedMedia(str):
    """A picture or video stored in the data itself; ``str(self)`` says where, ``data`` holds the bytes."""

    data: bytes

    def __new__(cls, label: str, data: Union[bytes, bytearray, memoryview]) -> "EmbeddedMedia":
        obj = super().__new__(cls, label)
        obj.data = bytes(data)
        return obj

    def __reduce__(self):  # pickled to data-loader workers and deep-copied with its bytes
        return (EmbeddedMedia, (str(self), self.data))

    @staticmethod
    def label(shard: str, row: int, column: str, index: int | None = None) -> str:
        """``"train-00003.parquet: row 1712: images[0]"``: the shard's name, the 0-based row, the column."""
        where = column if index is None else f"{column}[{index}]"
        return f"{os.path.basename(shard) or shard}: row {row}: {where}"


def is_embedded(ref) -> bool:
    return isinstance(ref, EmbeddedMedia)


def media_source(ref: Union[str, os.PathLike]) -> Union[str, io.BytesIO]:
    """What ``PIL.Image.open`` or PyAV take for ``ref``: its bytes for embedded media, else the
    local path with ``~`` expanded (remote URLs go through ``nbtools.images.remote_filesystem``)."""
    if isinstance(ref, EmbeddedMedia):
        return io.BytesIO(ref.data)
    return os.path.expanduser(os.fspath(ref))
