"""Host tools: the table, the up-front check the long commands do, and the fetches.

The missing tool here is a FAKE entry added to the table (a command that exists nowhere):
a real missing package cannot be produced on a machine where the suite itself needs them.
"""

from __future__ import annotations

import pytest

from orchestrator import hosttools
from orchestrator.cli.main import main as mmlab_main
from orchestrator.errors import MissingToolError

FAKE = hosttools.Tool("mmlab-fake-tool", "cmd:mmlab-fake-tool-that-does-not-exist",
                      "mmlab-fake-package", ("boot",))


@pytest.fixture
def fake_missing(monkeypatch):
    real = hosttools.tools()
    monkeypatch.setattr(hosttools, "tools", lambda: [*real, FAKE])


def test_table_is_well_formed():
    ts = hosttools.tools()
    assert len({t.name for t in ts}) == len(ts)
    for t in ts:
        assert t.check.split(":")[0] in ("cmd", "file") and t.package and t.stages
    known = {"build", "image", "boot", "plugin", "boards", "report"}
    assert {s for t in ts for s in t.stages} <= known


def test_ensure_names_every_missing_package_in_one_error(fake_missing):
    with pytest.raises(MissingToolError) as exc:
        hosttools.ensure({"boot"}, install=False, why="mmlab compare")
    assert str(exc.value) == "mmlab compare needs mmlab-fake-tool, which is missing"
    assert "mmlab-fake-package" in exc.value.hint and "mmlab doctor --install" in exc.value.hint
    hosttools.ensure({"report"}, install=False, why="x")   # other stages: nothing missing


def test_compare_checks_tools_before_building_anything(fake_missing, monkeypatch, tmp_path,
                                                       capsys):
    import orchestrator.pipeline.compare as compare

    def no_build(spec):
        raise AssertionError("built before the host tools were checked")

    monkeypatch.setattr(compare, "build_all", no_build)
    with pytest.raises(SystemExit) as exc:
        mmlab_main(["compare", "--no-install-missing", "--out", str(tmp_path / "out")])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("mmlab: error: mmlab compare needs mmlab-fake-tool")
    assert "apt-get install mmlab-fake-package" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.network
@pytest.mark.slow
def test_ensure_fetches_what_mmlab_fetches_itself_without_root(monkeypatch, tmp_path):
    """In an empty cache, the image stage's busybox (arm64 .deb, private apt state) is
    fetched by the check itself: no `doctor --install` needed for mmlab's own downloads."""
    from orchestrator.kernel import debpkg

    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingToolError):
        debpkg.ensure_busybox(install=False)
    hosttools.ensure({"image"}, install=False, why="mmlab run")
    deb = debpkg.ensure_busybox(install=False)
    assert deb.is_file() and deb.name.startswith("busybox-static_") and "arm64" in deb.name


@pytest.mark.fault('bad environment (MMLAB_TIMEOUT_SCALE=abc, unusable MMLAB_CACHE)', 'one-line error before any work', '2')
def test_bad_environment_settings_are_one_line_errors(tmp_path):
    """MMLAB_TIMEOUT_SCALE=abc and an unusable MMLAB_CACHE were tracebacks."""
    import os
    import subprocess
    import sys

    for env, match in ((dict(MMLAB_TIMEOUT_SCALE="abc"), "MMLAB_TIMEOUT_SCALE='abc' is not a"),
                       (dict(MMLAB_TIMEOUT_SCALE="-1"), "is not a positive number"),
                       (dict(MMLAB_CACHE=str(tmp_path / "file" / "x")), "cannot use the cache")):
        (tmp_path / "file").write_text("not a directory")
        proc = subprocess.run([sys.executable, "-m", "orchestrator", "trees"],
                              env=os.environ | env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and match in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
