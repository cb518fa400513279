"""Every file the service writes goes through here: whole or not at all, readable by others.

A file is written under a temporary name in its own folder, then renamed over the target,
so a crash, a full disk or a reader never sees half of it. Temporary files are created
with mode 0666 and folders with 0777, both reduced by the process's umask, so results get
the permissions of any other file the user creates (0644 / 0755 on a default system);
`tempfile.mkstemp` and `mkdtemp` would make them 0600 / 0700, unreadable to a web server
or a colleague sharing the results folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"


def write_with(path: str | Path, write: Callable[[IO[bytes]], Any], suffix: str = ".tmp") -> Path:
    """Create `path` by calling `write(binary_handle)` on a temporary file, then renaming
    it over `path`; on any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path, suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    """Indented JSON; NaN stays NaN (Python's json reads it back), numpy scalars are plain."""
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n"
    return write_text(path, text)


def write_csv(path: str | Path, frame: Any) -> Path:
    """A pandas DataFrame as CSV without its index."""
    return write_text(path, frame.to_csv(index=False))


def write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    import numpy as np

    return write_with(path, lambda handle: np.savez_compressed(handle, **arrays), ".npz")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """A new empty folder beside `target` to fill; when the block ends without an error it
    replaces `target` whole, otherwise it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_name(target, suffix="")
    staging.mkdir()  # 0777 less the umask, like any folder the user makes
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
