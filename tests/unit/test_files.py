import os

import pytest

from seamless_stack.files import private_dir, write_private


def test_private_files_are_owner_only_whole_and_never_through_a_link(tmp_path):
    target = tmp_path / "stacks" / "s.env"
    write_private(target, "secret\n")
    assert target.read_text() == "secret\n" and target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700, "a new folder is owner-only"
    os.umask(old := os.umask(0))  # the umask does not widen it
    try:
        write_private(target, "again\n")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_text() == "again\n"
    elsewhere = tmp_path / "elsewhere"
    planted = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    planted.symlink_to(elsewhere)  # a link where the temporary file goes is removed, never followed
    write_private(target, "third\n")
    assert not elsewhere.exists() and target.read_text() == "third\n"
    assert [p.name for p in target.parent.iterdir()] == ["s.env"], "no temporary file left"


def test_a_private_folder_is_tightened(tmp_path):
    folder = tmp_path / "stacks"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert private_dir(folder).stat().st_mode & 0o777 == 0o700


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = write_private(tmp_path / "record.json", "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_private(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
