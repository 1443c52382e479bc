"""Write files all-or-nothing: into a temporary file beside the target, then rename.

A reader (or a later ``--resume``) must never find a half-written checkpoint,
report or image: a crash, ``Ctrl-C`` or a full disk in the middle of a write
would otherwise leave a truncated file under the final name. The classic
remedy is used here:

1. create a uniquely named temporary file **in the same folder** as the target
   (same file system, so the rename in step 3 cannot turn into a copy),
2. let the caller write it completely (by any means: ``safetensors``,
   ``torch.save``, ``PIL.Image.save``, ``json.dump`` ...), flush it to disk,
3. ``os.replace(tmp, path)``, which is atomic on POSIX and Windows: readers
   see either the old file or the new one, never a mixture.

If the ``with`` body raises, the temporary file is removed and the target is
left exactly as it was (absent, or the previous version).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_write(folder / "report.json") as tmp:
...     _ = tmp.write_text('{"ok": true}')
>>> (folder / "report.json").read_text()
'{"ok": true}'
>>> sorted(p.name for p in folder.iterdir())  # no temporary file left behind
['report.json']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    Args:
        path: the final file name. Its folder must exist (it is not created, so
            a typo in an output folder is reported instead of silently creating
            a new tree).
        fsync: flush the written data to disk before the rename, so that even a
            power loss right after cannot leave an empty file under ``path``.

    The temporary name ends with the same suffix as ``path`` (``.png``,
    ``.npy`` ...) because some writers choose the format from it. The new file
    gets ordinary permissions (``0o666`` minus the umask, or the mode of the
    file it replaces), not the private ``0o600`` of :func:`tempfile.mkstemp`.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is an existing folder.
        OSError: anything the operating system reports (read-only folder, disk full).
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist (for {str(target)!r})")
    if target.is_dir():
        raise IsADirectoryError(f"output path {str(target)!r} is a folder, expected a file name")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    except OSError as exc:  # read-only folder, disk full: name the file the user asked for
        raise _naming(exc, target, None) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            # The caller removed or renamed the file itself: nothing to install.
            raise FileNotFoundError(f"temporary file {str(tmp)!r} vanished before it could be renamed to {str(target)!r}")
        if fsync:
            _fsync_file(tmp)
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException as exc:
        # BaseException: KeyboardInterrupt mid-write must not leave the temp file either.
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _naming(exc, target, tmp) from exc
        raise
    if fsync:
        _fsync_folder(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`."""
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`."""
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def _naming(exc: OSError, target: Path, tmp: Path | None) -> OSError:
    """``exc`` naming ``target`` when it names no file or the hidden temporary file.

    A writer that hits a full disk raises ``OSError(ENOSPC)`` without a file name,
    and a read-only folder makes ``mkstemp`` name a random temporary name; the
    one-line message a user sees ("[Errno 28] No space left on device: 'out.safetensors'")
    should name the file they asked for.
    """
    if exc.errno is None:  # OSError("message"): its text is the message, a file name would garble it
        return exc
    if exc.filename is None or str(exc.filename) == str(tmp) or (tmp is None and Path(exc.filename).parent == target.parent):
        exc.filename = str(target)
    return exc


def _final_mode(target: Path) -> int:
    # Keep the mode of the file being replaced; otherwise what open() would give.
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # Linux exposes the umask without changing it; os.umask() must set it to read it,
    # which is racy with other threads creating files, so it is only the fallback.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    # Make the rename itself durable; folders cannot be opened this way on Windows.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
