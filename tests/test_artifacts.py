"""Artifacts are verified on use: a truncated or edited file, or an unreadable
metadata.json, is a one-line error (or, on a build's cache hit, a rebuild), never a boot of
a broken kernel blamed on the kernel."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from orchestrator.kernel.artifacts import Artifact, CorruptArtifact, find


def _fake_artifact(root, key="ab" * 32):
    """An artifact directory as the build writes it (input data for the checks)."""
    d = root / key
    d.mkdir(parents=True)
    files = {"Image": b"\x00" * 4096, "config": b"CONFIG_X=y\n"}
    for name, data in files.items():
        (d / name).write_bytes(data)
    meta = {"key": key, "name": "t", "release": "6.12.0",
            "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
            "sizes": {n: len(b) for n, b in files.items()}}
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_a_whole_artifact_verifies(tmp_path):
    art = Artifact.load(_fake_artifact(tmp_path))
    art.verify(full=True)


def test_a_truncated_image_is_caught_by_size_without_hashing(tmp_path):
    d = _fake_artifact(tmp_path)
    (d / "Image").write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptArtifact, match="Image is 100 bytes, the build wrote 4096"):
        Artifact.load(d).verify(full=False)


def test_an_edited_file_of_the_same_size_is_caught_by_sha256(tmp_path):
    d = _fake_artifact(tmp_path)
    (d / "config").write_bytes(b"CONFIG_Y=y\n")
    Artifact.load(d).verify(full=False)          # same size: only the hash can tell
    with pytest.raises(CorruptArtifact, match="does not match its recorded sha256"):
        Artifact.load(d).verify(full=True)


@pytest.mark.fault('corrupt cache metadata (truncated metadata.json, missing file)', "one-line error naming the artifact; a build's cache hit rebuilds it", '2')
def test_a_missing_file_and_truncated_metadata_are_one_line_errors(tmp_path):
    d = _fake_artifact(tmp_path)
    (d / "Image").unlink()
    with pytest.raises(CorruptArtifact, match="Image is missing") as ei:
        find(str(d))
    assert "\n" not in str(ei.value) and "build again" in ei.value.hint
    d2 = _fake_artifact(tmp_path, key="cd" * 32)
    (d2 / "metadata.json").write_text('{"key": "cdcd')
    with pytest.raises(CorruptArtifact, match="unreadable"):
        find(str(d2))


@pytest.mark.fault('corrupt artifact (truncated Image)', 'size check on use: one-line error before any boot, no --out', '2')
@pytest.mark.kernel
def test_run_refuses_a_truncated_kernel_before_booting(tmp_path, kernel_artifact, monkeypatch):
    """`mmlab run --kernel` on a truncated Image: exit 2 with one line, no boot, no --out."""
    import subprocess
    import sys

    copy = tmp_path / "art"
    shutil.copytree(kernel_artifact.path, copy)
    with open(copy / "Image", "r+b") as fh:
        fh.truncate(1000)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--kernel", str(copy),
                           "--out", str(out), "--repeats", "1", "--entries", "fix_size_p1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Image is 1000 bytes" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_an_artifact_from_before_sizes_is_hashed_once_then_sized(tmp_path):
    d = _fake_artifact(tmp_path)
    meta = json.loads((d / "metadata.json").read_text())
    del meta["sizes"]
    (d / "metadata.json").write_text(json.dumps(meta))
    Artifact.load(d).verify(full=False)             # full check (no sizes yet), sizes written
    assert json.loads((d / "metadata.json").read_text())["sizes"] == {"Image": 4096,
                                                                     "config": 11}
    (d / "Image").write_bytes(b"x")
    with pytest.raises(CorruptArtifact, match="Image is 1 bytes"):
        Artifact.load(d).verify(full=False)
