"""The most discovery reads of any one configuration file (reader.conf,
Info.plist): real ones are a few KiB, so a larger file is a mistake and is
skipped before it is read into memory."""

from __future__ import annotations

import os

__all__ = ["MAX_CONFIG_BYTES", "ConfigTooLargeError", "read_bounded"]

#: Bytes a reader.conf file or Info.plist may have (1 MiB).
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigTooLargeError(ValueError):
    """A configuration file is larger than :data:`MAX_CONFIG_BYTES`."""


def read_bounded(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of *path*; ConfigTooLargeError when it has more than
    *limit* (checked by reading at most limit + 1 bytes, so a file that
    grows or lies about its size cannot get past it either)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ConfigTooLargeError(f"{path} is {size} bytes, more than the "
                                      f"{limit} bytes a configuration file may have")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigTooLargeError(f"{path} has more than the {limit} bytes a "
                                  "configuration file may have")
    return data
