"""base-commit trailers (b4) -> the release tree, with warnings for a mismatch."""

from __future__ import annotations

from orchestrator.kernel import releases


def _series(tmp_path, base: str):
    d = tmp_path / "s"
    d.mkdir()
    (d / "0000-cover-letter.patch").write_text(
        "Subject: [PATCH 0/1] x\n\nblah\n\nbase-commit: " + base + "\n-- \n2.47.0\n")
    (d / "0001-x.patch").write_text("Subject: [PATCH 1/1] x\n---\n a | 1 +\n")
    return str(d)


def test_a_series_on_a_release_gets_that_release_tree(tmp_path):
    spec = _series(tmp_path, "7d0a66e4bb9081d75c82ec4957c50034cb0ea449")
    tree, notes = releases.tree_for_series(spec, None)
    assert tree == "debian:6.18" and "based on v6.18" in notes[0]


def test_a_different_tree_is_a_warning(tmp_path):
    spec = _series(tmp_path, "adc218676eef25575469234709c2d87185ca223a")
    tree, notes = releases.tree_for_series(spec, "debian:7.3")
    assert tree == "debian:7.3" and "based on v6.12" in notes[0] and "debian:7.3" in notes[0]
    assert releases.tree_for_series(spec, "debian:6.12") == ("debian:6.12", [])


def test_an_unknown_base_is_said_not_guessed(tmp_path):
    spec = _series(tmp_path, "0123456789abcdef0123456789abcdef01234567")
    tree, notes = releases.tree_for_series(spec, None)
    assert tree is None and "not a release mmlab knows" in notes[0]


def test_quoted_base_commit_in_a_reply_is_read(tmp_path):
    f = tmp_path / "reply.mbox"
    f.write_text("> ---\n> base-commit: 038d61fd642278bab63ee8ef722c50d10ab01e8f\n")
    assert releases.series_base(str(f)) == {"038d61fd642278bab63ee8ef722c50d10ab01e8f"}
    assert releases.release_of("038d61fd6422") == "v6.16"


def test_release_ids_are_full_and_unique():
    ids = list(releases.releases().values())
    assert all(len(i) == 40 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == len(ids)


def test_the_seeds_carry_no_base_commit_so_the_default_stays():
    from pathlib import Path

    seeds = Path(__file__).parent / "data" / "seeds"
    assert releases.series_base(str(seeds)) == set()
