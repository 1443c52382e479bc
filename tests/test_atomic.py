"""midefend.io.atomic: all-or-nothing writes (temp file in the same folder, then rename)."""

from __future__ import annotations

import doctest
import os
import stat

import pytest

from midefend.io import atomic
from midefend.io.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


class TestAtomicWrite:
    def test_success_installs_file_and_leaves_no_temp(self, tmp_path):
        with atomic_write(tmp_path / "out.bin") as tmp:
            assert tmp.parent == tmp_path  # same folder: the rename cannot become a copy
            assert tmp.name != "out.bin"
            assert not (tmp_path / "out.bin").exists()  # nothing under the final name yet
            tmp.write_bytes(b"abc")
        assert (tmp_path / "out.bin").read_bytes() == b"abc"
        assert _names(tmp_path) == ["out.bin"]

    def test_temp_keeps_suffix(self, tmp_path):
        with atomic_write(tmp_path / "grid.png") as tmp:
            assert tmp.suffix == ".png"
            tmp.write_bytes(b"x")

    def test_error_in_body_removes_temp_and_keeps_old_file(self, tmp_path):
        target = tmp_path / "ckpt.safetensors"
        target.write_bytes(b"old")
        with pytest.raises(RuntimeError, match="disk full"):
            with atomic_write(target) as tmp:
                tmp.write_bytes(b"half-writ")
                raise RuntimeError("disk full")
        assert target.read_bytes() == b"old"
        assert _names(tmp_path) == ["ckpt.safetensors"]

    def test_error_without_previous_file_leaves_nothing(self, tmp_path):
        with pytest.raises(OSError, match="No space left"):
            with atomic_write(tmp_path / "report.json") as tmp:
                tmp.write_text("{")
                raise OSError(28, "No space left on device")
        assert _names(tmp_path) == []

    def test_keyboard_interrupt_also_cleans_up(self, tmp_path):
        with pytest.raises(KeyboardInterrupt):
            with atomic_write(tmp_path / "a.txt") as tmp:
                tmp.write_text("partial")
                raise KeyboardInterrupt
        assert _names(tmp_path) == []

    def test_missing_folder_is_named(self, tmp_path):
        missing = tmp_path / "nope"
        with pytest.raises(FileNotFoundError, match=r"output folder '.*nope' does not exist"):
            with atomic_write(missing / "x.txt"):
                pass  # pragma: no cover - never entered

    def test_target_is_folder(self, tmp_path):
        (tmp_path / "d").mkdir()
        with pytest.raises(IsADirectoryError, match=r"output path '.*d' is a folder"):
            with atomic_write(tmp_path / "d"):
                pass  # pragma: no cover

    def test_caller_removed_temp(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="vanished before it could be renamed"):
            with atomic_write(tmp_path / "x.txt") as tmp:
                tmp.unlink()
        assert _names(tmp_path) == []

    def test_new_file_mode_follows_umask(self, tmp_path):
        old = os.umask(0o027)
        try:
            atomic_write_text(tmp_path / "m.txt", "hi")
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / "m.txt").stat().st_mode) == 0o640

    def test_replaced_file_keeps_its_mode(self, tmp_path):
        target = tmp_path / "m.txt"
        target.write_text("old")
        target.chmod(0o604)
        atomic_write_bytes(target, b"new", fsync=False)
        assert stat.S_IMODE(target.stat().st_mode) == 0o604
        assert target.read_bytes() == b"new"

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
    def test_read_only_folder(self, tmp_path):
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(PermissionError):
                atomic_write_text(ro / "x.txt", "hi")
            assert _names(ro) == []
        finally:
            ro.chmod(0o755)

    def test_failed_rename_removes_temp(self, tmp_path, monkeypatch):
        def refuse(src, dst):
            raise PermissionError(13, "Permission denied", str(dst))

        monkeypatch.setattr(atomic.os, "replace", refuse)
        with pytest.raises(PermissionError, match="Permission denied"):
            atomic_write_text(tmp_path / "x.txt", "hi")
        assert _names(tmp_path) == []

    def test_helpers_return_path(self, tmp_path):
        assert atomic_write_text(tmp_path / "t.txt", "é") == tmp_path / "t.txt"
        assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é"
        assert atomic_write_bytes(str(tmp_path / "b.bin"), b"\x00\x01") == tmp_path / "b.bin"
        assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"

    def test_doctest(self):
        result = doctest.testmod(atomic, raise_on_error=False)
        assert result.attempted > 0 and result.failed == 0
