"""Patch series: parsing every rendering in tests/data/series, loading sources, applying.

The renderings were made from one real git history (tests/data/series/tree + two commits,
exported with git format-patch): a patch directory with a cover letter, a lore-style mbox
(cover letter, a reply, a quoted-printable message), a CRLF copy, a mail wrapped at 72
columns, a format=flowed mail, a reply with review comments between and inside hunks, a
pipermail page of a reply to that reply (diff quoted twice), a plain diff, a patchwork
page, a trimmed reply, a corrupt mbox and a post without a diff. Applying is checked
against git apply itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError, SeriesApplyError
from orchestrator.kernel.series import Series, apply_series, check_series, load_series
from orchestrator.kernel.series_formats import find_diffs, split_subject

DATA = Path(__file__).parent / "data" / "series"
TREE = DATA / "tree"
P1 = "mm/lazy_demo: Batch barriers while in lazy MMU mode"
P2 = "mm/lazy_demo: Support nested lazy MMU sections"
RYAN = "Ryan Roberts <ryan.roberts@arm.com>"
KEVIN = "Kevin Brodsky <kevin.brodsky@arm.com>"


def _git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file: content, inode, mode (to prove a tree was not touched)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st_ = p.stat()
            out[str(p.relative_to(root))] = (p.read_bytes(), st_.st_ino, st_.st_mode)
    return out


def _contents(root: Path) -> dict[str, bytes]:
    return {k: v[0] for k, v in _snapshot(root).items() if not k.startswith(".git/")}


@pytest.fixture
def pristine_and_work(tmp_path: Path) -> tuple[Path, Path]:
    """A pristine tree and a hard-link farm of it (`cp -al`), as the build makes them."""
    pristine = tmp_path / "pristine"
    shutil.copytree(TREE, pristine)
    work = tmp_path / "work"
    subprocess.run(["cp", "-al", str(pristine), str(work)], check=True)
    return pristine, work


@pytest.fixture
def git_applied(tmp_path: Path) -> Path:
    """The tree with the two format-patch files applied by git apply (the reference)."""
    ref = tmp_path / "ref"
    shutil.copytree(TREE, ref)
    for patch in sorted((DATA / "demo_series").glob("000[12]-*.patch")):
        r = subprocess.run(["git", "apply", str(patch)], cwd=ref, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return ref


# ------------------------------------------------------------------------------ parsing

def test_subject_prefixes() -> None:
    assert split_subject("[PATCH v3 11/11] arm64/mm: Batch barriers") == (
        "arm64/mm: Batch barriers", 3, 11, 11, ())
    assert split_subject("[SRU][J:linux-azure][PATCH 3/3] arm64: mm: x") == (
        "arm64: mm: x", None, 3, 3, ("SRU", "J:linux-azure"))
    assert split_subject("[v3,11/11] arm64/mm: x - Patchwork") == ("arm64/mm: x", 3, 11, 11, ())
    assert split_subject("Re: [RFC PATCH v2 0/7] nesting") == ("nesting", 2, 0, 7, ("RFC",))
    assert split_subject("[PATCHv4] foo") == ("foo", 4, None, None, ())
    assert split_subject("[john-cabaj: upstream] text") is None
    assert split_subject("plain words") is None


def test_format_patch_file() -> None:
    s = load_series(DATA / "format_patch_0001.patch")
    (p,) = s.patches
    assert (p.subject, p.author, p.date) == (P1, RYAN, "2025-03-04T14:04:43+00:00")
    assert (p.index, p.total, p.version) == (1, 2, None)
    assert p.paths == ["include/linux/lazy_demo.h", "mm/lazy_demo.c", "mm/lazy_demo_test.c"]
    assert p.hunks_per_file == {
        "include/linux/lazy_demo.h": ["@@ -7,5 +7,7 @@"],
        "mm/lazy_demo.c": ["@@ -15,12 +15,36 @@", "@@ -28,7 +52,7 @@"],
        "mm/lazy_demo_test.c": ["@@ -0,0 +1,16 @@"],
    }
    assert p.files[2].is_new and p.files[2].new_mode == "100644"
    h = p.files[1].hunks[0]
    assert (h.old_start, h.old_count, h.new_start, h.new_count) == (15, 12, 15, 36)
    assert h.section == "static inline void emit_barriers(void)"
    assert p.repairs == ()


def test_extracted_diff_is_what_git_applies(tmp_path: Path) -> None:
    """The canonical diff is a valid patch: git apply gives the same tree as the mail."""
    s = load_series(DATA / "lore_thread.mbox")
    work = tmp_path / "w"
    shutil.copytree(TREE, work)
    for p in s.patches:
        (tmp_path / "p.diff").write_text(p.diff)
        r = subprocess.run(["git", "apply", str(tmp_path / "p.diff")], cwd=work,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    shutil.copytree(TREE, ref)
    for patch in sorted((DATA / "demo_series").glob("000[12]-*.patch")):
        subprocess.run(["git", "apply", str(patch)], cwd=ref, check=True)
    assert _contents(work) == _contents(ref)


@pytest.mark.parametrize("name", ["format_patch_0001.patch", "crlf_0001.patch", "wrapped_0001.eml",
                                  "flowed_0001.eml"])
def test_renderings_of_patch_1_hash_alike(name: str) -> None:
    ref = load_series(DATA / "demo_series").patches[0]
    (p,) = load_series(DATA / name).patches
    assert p.content_hash == ref.content_hash
    assert p.diff == ref.diff
    assert (p.subject, p.author) == (P1, RYAN)


def test_wrapped_lines_are_rejoined_and_reported() -> None:
    (p,) = load_series(DATA / "wrapped_0001.eml").patches
    assert [r.split(": ")[1] for r in p.repairs] == ["rejoined a wrapped line (line 35)",
                                                    "rejoined a wrapped line (line 37)",
                                                    "rejoined a wrapped line (line 88)"]
    assert "+ * While the task is in lazy MMU mode, remember that barriers are owed instead of\n" \
        in p.diff


def test_crlf_file_gives_lf_diff() -> None:
    assert b"\r\n" in (DATA / "crlf_0001.patch").read_bytes()
    (p,) = load_series(DATA / "crlf_0001.patch").patches
    assert "\r" not in p.diff


@pytest.mark.parametrize("name", ["reply_with_comments.eml", "pipermail_nested_reply.txt",
                                  "plain.diff"])
def test_renderings_of_patch_2_hash_alike(name: str) -> None:
    ref = load_series(DATA / "demo_series").patches[1]
    (p,) = load_series(DATA / name).patches
    assert p.content_hash == ref.content_hash
    assert p.diff == ref.diff


def test_reply_with_comments_between_and_inside_hunks() -> None:
    (p,) = load_series(DATA / "reply_with_comments.eml").patches
    assert (p.subject, p.author, p.date) == (P2, KEVIN, "2025-09-08T08:39:27+01:00")
    assert (p.posted_by, p.posted_at) == ("Anshuman Khandual <anshuman.khandual@arm.com>",
                                          "2025-09-10T11:02:13+05:30")
    for comment in ("enum", "CONFIG_DEBUG_VM", "Nit:", "Reviewed-by"):
        assert comment not in p.diff
    assert p.files[-1].is_deleted and p.files[-1].path == "mm/obsolete_demo.c"


def test_reply_to_reply_takes_the_diff_at_its_own_depth() -> None:
    (p,) = load_series(DATA / "pipermail_nested_reply.txt").patches
    assert (p.subject, p.author, p.index, p.total) == (P2, KEVIN, 2, 2)
    assert "enum" not in p.diff and "DEBUG_VM" not in p.diff
    (block,) = find_diffs((DATA / "pipermail_nested_reply.txt").read_text().split("\n"), "x")
    assert block.depth == 2


def test_patchwork_page() -> None:
    (p,) = load_series(DATA / "patchwork_batch_barriers.txt").patches
    assert (p.subject, p.version, p.index, p.total) == (
        "arm64/mm: Batch barriers when updating kernel mappings", 3, 11, 11)
    assert p.author == RYAN
    assert p.date == "2025-03-04T15:04:00"
    assert p.paths == ["arch/arm64/include/asm/pgtable.h", "arch/arm64/include/asm/thread_info.h",
                       "arch/arm64/kernel/process.c"]


def test_mbox_skips_cover_letter_and_reply_and_decodes_mime() -> None:
    s = load_series(DATA / "lore_thread.mbox")
    assert [p.subject for p in s.patches] == [P1, P2]
    assert [p.author for p in s.patches] == [RYAN, KEVIN]  # =?UTF-8?q?...?= decoded
    assert s.cover_subject == "mm/lazy_demo: batch and nest lazy MMU barriers"
    assert s.skipped == ("message 1: cover letter", f"message 3: reply ({P1})")
    # the quoted-printable body decodes to the same diff as the plain one
    assert s.content_hash == load_series(DATA / "demo_series").content_hash


def test_mbox_order_follows_patch_numbers(tmp_path: Path) -> None:
    text = (DATA / "lore_thread.mbox").read_text()
    msgs = text.split("From mboxrd@z Thu Jan  1 00:00:00 1970\n")[1:]
    shuffled = tmp_path / "shuffled.mbox"
    shuffled.write_text("".join("From mboxrd@z Thu Jan  1 00:00:00 1970\n" + m
                                for m in reversed(msgs)))
    s = load_series(shuffled)
    assert [p.index for p in s.patches] == [1, 2]


def test_mbox_with_two_versions_is_refused(tmp_path: Path) -> None:
    text = (DATA / "lore_thread.mbox").read_text()
    v2 = text.replace("[PATCH 2/2]", "[PATCH v2 2/2]")
    (tmp_path / "mixed.mbox").write_text(v2)
    with pytest.raises(InputError, match=r"mixes versions of a series: v1, v2"):
        load_series(tmp_path / "mixed.mbox")


def test_series_hash_is_diff_only() -> None:
    a = load_series(DATA / "demo_series")
    b = load_series(DATA / "lore_thread.mbox")
    assert a.content_hash == b.content_hash
    assert a.name != b.name
    single = load_series(DATA / "format_patch_0001.patch")
    assert single.content_hash != a.content_hash


def test_directory_source_skips_cover_letter() -> None:
    s = load_series(DATA / "demo_series")
    assert s.name == "demo_series"
    assert [p.subject for p in s.patches] == [P1, P2]
    assert s.skipped == (f"{DATA / 'demo_series'}: cover letter",) or s.cover_subject


def test_quilt_series_file_orders_the_directory(tmp_path: Path) -> None:
    d = tmp_path / "patches"
    d.mkdir()
    for p in sorted((DATA / "demo_series").glob("000[12]-*.patch")):
        shutil.copy(p, d / p.name.replace("0001-", "b-").replace("0002-", "a-"))
    names = sorted(x.name for x in d.iterdir())
    assert names[0].startswith("a-")  # name order would put patch 2 first...
    (d / "series").write_text(f"# quilt\n{names[1]}\n{names[0]} -p1\n")
    assert [p.subject for p in load_series(d).patches] == [P1, P2]  # ...the series file does not


def test_git_range(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(TREE, repo)
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "base", cwd=repo)
    _git("tag", "base", cwd=repo)
    for patch in sorted((DATA / "demo_series").glob("000[12]-*.patch")):
        _git("am", "-q", str(patch), cwd=repo)
    s = load_series("base..HEAD", repo=repo)
    assert [p.subject for p in s.patches] == [P1, P2]
    assert [p.author for p in s.patches] == [RYAN, KEVIN]
    assert s.content_hash == load_series(DATA / "demo_series").content_hash
    assert s.name == "base..HEAD"


def test_git_range_errors(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(TREE, repo)
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "base", cwd=repo)
    with pytest.raises(InputError, match=r"unknown revision 'v6.99' in .*range v6.99..HEAD") as e:
        load_series("v6.99..HEAD", repo=repo)
    assert "git log" in e.value.hint
    with pytest.raises(InputError, match=r"the range HEAD..HEAD has no commits"):
        load_series("HEAD..HEAD", repo=repo)
    with pytest.raises(InputError, match=r"is not a git repository"):
        load_series("a..b", repo=tmp_path)


# ---------------------------------------------------------------------------- bad input

def test_missing_path() -> None:
    with pytest.raises(InputError, match=r"^series source not found: /nonexistent/x.mbox$") as e:
        load_series("/nonexistent/x.mbox")
    assert "git range" in e.value.hint


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no \*.patch files in") as e:
        load_series(tmp_path)
    assert "git format-patch -o" in e.value.hint
    (tmp_path / "fix.diff").write_text((DATA / "plain.diff").read_text())
    with pytest.raises(InputError) as e:
        load_series(tmp_path)
    assert "fix.diff" in e.value.hint


def test_post_without_diff() -> None:
    with pytest.raises(InputError, match=r"no_diff.txt: no diff found") as e:
        load_series(DATA / "no_diff.txt")
    assert "lore.kernel.org/r/20250908073931.4159362-1-kevin.brodsky@arm.com" in e.value.hint


def test_corrupt_mbox() -> None:
    with pytest.raises(InputError, match=r"corrupt mbox: the message at line 8 has no mail headers"):
        load_series(DATA / "corrupt.mbox")


def test_binary_file(tmp_path: Path) -> None:
    (tmp_path / "x.patch").write_bytes(b"\x7fELF\0\0\0")
    with pytest.raises(InputError, match=r"x.patch is not a text file \(binary data at byte 4\)"):
        load_series(tmp_path / "x.patch")


def test_trimmed_quote_names_the_hunk() -> None:
    with pytest.raises(InputError) as e:
        load_series(DATA / "trimmed_reply.txt")
    assert str(e.value) == (
        "trimmed_reply.txt: include/linux/lazy_demo.h hunk #1 (@@ -7,7 +7,10 @@, line 11) is "
        "truncated: 2 old and 2 new lines missing after line 21")
    assert "\n" not in str(e.value)


def test_unrecoverable_wrap_is_an_error(tmp_path: Path) -> None:
    text = (DATA / "format_patch_0001.patch").read_text()
    # a wrap whose tail starts with '-' cannot be told from a removed line
    bad = text.replace("+\tif (test_thread_flag(TIF_LAZY_MMU))\n",
                       "+\tif (test_thread_flag(TIF_LAZY_MMU)\n-)\n")
    (tmp_path / "bad.patch").write_text(bad)
    with pytest.raises(InputError, match=r"mm/lazy_demo.c hunk #1 \(@@ -15,12 \+15,36 @@, line "
                       r"\d+\) does not match its header"):
        load_series(tmp_path / "bad.patch")


# ------------------------------------------------------------------------------ applying

def test_apply_to_hard_link_farm(pristine_and_work, git_applied: Path) -> None:
    pristine, work = pristine_and_work
    before = _snapshot(pristine)
    assert (work / "mm/lazy_demo.c").stat().st_nlink == 2
    result = apply_series(load_series(DATA / "lore_thread.mbox"), work)
    assert result.ok and [pc.message for pc in result.patches] == [
        f'patch 1/2 [1/2] "{P1}" applies', f'patch 2/2 [2/2] "{P2}" applies']
    assert _snapshot(pristine) == before  # same bytes, same inodes, same modes
    assert _contents(work) == _contents(git_applied)  # same result as git apply
    assert not (work / "mm/obsolete_demo.c").exists()  # deleted
    assert (work / "mm/lazy_demo_test.c").stat().st_nlink == 1  # created
    assert (work / "mm/lazy_demo.c").stat().st_nlink == 1  # private copy now
    assert (pristine / "mm/lazy_demo.c").stat().st_nlink == 1
    assert (work / "include/linux/lazy_demo.h").stat().st_mode == \
        (pristine / "include/linux/lazy_demo.h").stat().st_mode
    assert not list(work.rglob("*.tmp"))


def test_apply_keeps_executable_mode(pristine_and_work) -> None:
    pristine, work = pristine_and_work
    os.chmod(pristine / "mm/lazy_demo.c", 0o755)  # shared inode: the work tree sees it too
    apply_series(load_series(DATA / "demo_series"), work)
    assert (work / "mm/lazy_demo.c").stat().st_mode & 0o777 == 0o755


def test_failing_patch_leaves_tree_unchanged(pristine_and_work) -> None:
    pristine, work = pristine_and_work
    # a private, edited copy of lazy_demo.c in the work tree: patch 2's hunk cannot match
    src = (work / "mm/lazy_demo.c").read_text()
    (work / "mm/lazy_demo.c").unlink()
    (work / "mm/lazy_demo.c").write_text(src.replace("if (pmd_valid(pmd))", "if (pmd_present(pmd))"))
    before_work, before_pristine = _snapshot(work), _snapshot(pristine)
    with pytest.raises(SeriesApplyError) as e:
        apply_series(load_series(DATA / "demo_series"), work)
    assert str(e.value) == (
        f'patch 1/2 [1/2] "{P1}" does not apply: mm/lazy_demo.c hunk #2 (@@ -28,7 +52,7 @@) failed')
    assert "mmlab series check" in e.value.hint
    assert _snapshot(work) == before_work  # patch 1's other files were not written either
    assert _snapshot(pristine) == before_pristine
    check = e.value.check
    (h1, h2) = check.patches[0].files[1].hunks
    assert h1.ok and not h2.ok
    assert h2.detail == ("best match at line 28 (6/7 lines agree); line 30 is "
                         "'if (pmd_present(pmd))', the patch expects 'if (pmd_valid(pmd))'")
    assert check.patches[1].after_failure


def test_second_patch_failure_is_named(pristine_and_work) -> None:
    _, work = pristine_and_work
    src = (work / "mm/lazy_demo_test.c")
    assert not src.exists()
    s = load_series(DATA / "demo_series")
    only2 = Series("p2", (s.patches[1],), "x")
    with pytest.raises(SeriesApplyError) as e:
        apply_series(Series("both", (s.patches[0], s.patches[1], s.patches[1]), "x"), work)
    assert str(e.value).startswith(f'patch 3/3 [2/2] "{P2}" does not apply: include/linux/'
                                   "lazy_demo.h hunk #1 (@@ -7,7 +7,10 @@) failed")
    assert "failures in all" in str(e.value)
    with pytest.raises(SeriesApplyError, match=r"^patch 1/1 \[2/2\] .* does not apply: "
                       r"include/linux/lazy_demo.h hunk #1 \(@@ -7,7 \+7,10 @@\) failed"):
        apply_series(only2, work)


def test_check_reports_offsets_and_already_applied(pristine_and_work) -> None:
    _, work = pristine_and_work
    s = load_series(DATA / "demo_series")
    path = work / "mm/lazy_demo.c"
    text = path.read_text()
    path.unlink()
    path.write_text("/* three */\n/* new */\n/* lines */\n" + text)
    before = _snapshot(work)
    result = check_series(s, work)
    assert _snapshot(work) == before  # check never writes
    assert result.ok
    hunks = result.patches[0].files[1].hunks
    assert [(h.line, h.offset) for h in hunks] == [(18, 3), (31, 3)]
    apply_series(s, work)
    again = check_series(s, work)
    assert not again.patches[0].ok
    new_file = again.patches[0].files[2]
    assert new_file.problem == "new file already exists in the tree"
    h1, h2 = again.patches[0].files[1].hunks
    assert h1.detail.startswith("best match at line")  # patch 2 changed that part again
    assert h2.detail == "the tree already has its result at line 57 (applied already?)"


def test_missing_file_and_path_escape(tmp_path: Path) -> None:
    s = load_series(DATA / "demo_series")
    with pytest.raises(SeriesApplyError, match=r'does not apply: include/linux/lazy_demo.h: file '
                       r"not in the tree \(2 failures in all; also mm/lazy_demo.c: file not in "):
        apply_series(s, tmp_path)
    evil = (DATA / "plain.diff").read_text().replace("a/mm/Makefile", "a/../../etc/Makefile")
    (tmp_path / "evil.patch").write_text(evil.replace("b/mm/Makefile", "b/../../etc/Makefile"))
    with pytest.raises(InputError, match=r"outside the tree: \.\./\.\./etc/Makefile"):
        check_series(load_series(tmp_path / "evil.patch"), TREE)
    with pytest.raises(InputError, match=r"tree not found"):
        apply_series(s, tmp_path / "nope")


def test_rename_and_no_newline_at_eof(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\nseven\n")
    (repo / "b.txt").write_text("x\ny")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "base", cwd=repo)
    _git("tag", "base", cwd=repo)
    _git("mv", "a.txt", "renamed.txt", cwd=repo)
    (repo / "renamed.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\nSEVEN\n")
    (repo / "b.txt").write_text("x\ny\nz")
    _git("commit", "-qam", "rename and edit", cwd=repo)
    s = load_series("base..HEAD", repo=repo)
    (fa, fb) = sorted(s.patches[0].files, key=lambda f: f.path)
    assert fb.is_rename and fb.old_path == "a.txt" and fb.new_path == "renamed.txt"
    assert fa.hunks[0].lines[-1].newline is False
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\nseven\n")
    (work / "b.txt").write_text("x\ny")
    apply_series(s, work)
    assert sorted(p.name for p in work.iterdir()) == ["b.txt", "renamed.txt"]
    assert (work / "b.txt").read_text() == "x\ny\nz"
    assert (work / "renamed.txt").read_text().endswith("SEVEN\n")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.integers(min_value=0, max_value=36), how=st.sampled_from(["edit", "drop", "dup"]))
def test_verdicts_agree_with_git_apply(tmp_path_factory, line: int, how: str) -> None:
    """Damage one line of the tree; our verdict per patch is git apply --check's."""
    work = tmp_path_factory.mktemp("w")
    shutil.copytree(TREE, work, dirs_exist_ok=True)
    path = work / "mm/lazy_demo.c"
    lines = path.read_text().split("\n")
    if line < len(lines):
        if how == "edit":
            lines[line] = lines[line] + " /* x */"
        elif how == "drop":
            del lines[line]
        else:
            lines.insert(line, lines[line])
    path.write_text("\n".join(lines))
    p1 = load_series(DATA / "format_patch_0001.patch")
    ours = check_series(p1, work).ok
    git = subprocess.run(["git", "apply", "--check", str(DATA / "format_patch_0001.patch")],
                         cwd=work, capture_output=True).returncode == 0
    assert ours == git


# ---------------------------------------------------------------------------------- CLI

def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from orchestrator.cli.main import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_show(capsys) -> None:
    code, out, err = _cli(capsys, "series", "show", str(DATA / "lore_thread.mbox"))
    assert code == 0, err
    assert "series  lore_thread  (2 patches)" in out
    assert f"1/2 [1/2] {P1}" in out and f"author   {KEVIN}" in out
    assert "mm/lazy_demo.c: 2 hunk(s) @@ -15,12 +15,36 @@ @@ -28,7 +52,7 @@" in out
    assert "skipped message 1: cover letter" in out


def test_cli_check_failure_is_one_line(capsys, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(TREE, work)
    (work / "mm/Makefile").write_text("obj-y += other.o\n")
    code, out, err = _cli(capsys, "series", "check", str(DATA / "demo_series"), "--tree", str(work))
    assert code == 2
    assert out.splitlines()[0] == f'OK    patch 1/2 [1/2] "{P1}" applies'
    assert f'FAIL  patch 2/2 [2/2] "{P2}" does not apply: mm/Makefile hunk #1 (@@ -1 +1 @@) ' \
        "failed" in out
    assert "mm/Makefile hunk #1 @@ -1 +1 @@ FAILS: " in out
    lines = err.splitlines()
    assert lines[0] == (f'mmlab: error: patch 2/2 [2/2] "{P2}" does not apply: mm/Makefile hunk #1 '
                        "(@@ -1 +1 @@) failed")
    assert lines[1].startswith("mmlab: hint: ") and len(lines) == 2
    assert "Traceback" not in err


def test_cli_apply_and_bad_source(capsys, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(TREE, work)
    code, out, _ = _cli(capsys, "series", "apply", str(DATA / "demo_series"), "--tree", str(work))
    assert code == 0 and out.count(" applies") == 2
    assert (work / "mm/lazy_demo_test.c").exists()
    code, _, err = _cli(capsys, "series", "show", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("mmlab: error: series source not found:")


def test_patch_fields_json_roundtrip() -> None:
    import json

    d = load_series(DATA / "demo_series").to_dict()
    json.dumps(d)
    assert d["patches"][1]["files"][-1] == {"path": "mm/obsolete_demo.c",
                                            "old_path": "mm/obsolete_demo.c", "new_path": None,
                                            "hunks": ["@@ -1,6 +0,0 @@"]}


def test_partial_patch_via_replace() -> None:
    """Callers can narrow a patch (e.g. to the files a tree has) with dataclasses.replace."""
    p = load_series(DATA / "demo_series").patches[0]
    q = replace(p, files=p.files[:1])
    assert q.paths == ["include/linux/lazy_demo.h"] and q.content_hash != p.content_hash


def test_hunk_longer_than_its_header(tmp_path: Path) -> None:
    (tmp_path / "edited.patch").write_text(
        "--- a/mm/Makefile\n+++ b/mm/Makefile\n@@ -1 +1 @@\n-obj-y += lazy_demo.o obsolete_demo.o\n"
        "+obj-y += lazy_demo.o\n+obj-y += obsolete_demo.o\n")
    with pytest.raises(InputError, match=r"edited.patch: mm/Makefile hunk #1 \(@@ -1 \+1 @@\) has "
                       r"more lines than its header says \(line 6\)"):
        load_series(tmp_path / "edited.patch")


def test_symmetric_range_refused() -> None:
    with pytest.raises(InputError, match=r"symmetric range"):
        load_series("v6.12...v6.13")


def test_pipermail_obfuscation_inside_the_diff_is_undone(tmp_path: Path) -> None:
    page = (
        "[PATCH] MAINTAINERS: add lazy_demo\n\nDev Jain dev.jain at arm.com\n"
        "Fri May 30 02:04:07 PDT 2025\n\n\nSigned-off-by: Dev Jain <dev.jain at arm.com>\n---\n"
        "diff --git a/MAINTAINERS b/MAINTAINERS\n--- a/MAINTAINERS\n+++ b/MAINTAINERS\n"
        "@@ -1,2 +1,4 @@\n LAZY DEMO\n+M:\tDev Jain <dev.jain at arm.com>\n"
        "+F:\tmm/lazy_demo.c /* look at mm.c */\n S:\tMaintained\n-- \n2.30.2\n\n\n\n"
        "More information about the linux-arm-kernel mailing list\n")
    (tmp_path / "page.txt").write_text(page)
    (p,) = load_series(tmp_path / "page.txt").patches
    assert "+M:\tDev Jain <dev.jain@arm.com>\n" in p.diff
    assert "look at mm.c" in p.diff  # not an address: left alone
    assert p.author == "Dev Jain <dev.jain@arm.com>"
    assert p.repairs[0].startswith("undid pipermail's address obfuscation")


def _one_file_patch(path: str, old: str, new: str) -> str:
    return (f"From 1 Mon Sep 17 00:00:00 2001\nFrom: t <t@e.org>\nSubject: [PATCH] t\n\n---\n"
            f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n"
            f"-{old}\n+{new}\n-- \n2\n")


@pytest.mark.fault('hostile patch (symlink out of the tree)', 'refused; nothing outside --tree touched', '2')
@pytest.mark.parametrize("layout", ["dir-link", "file-link-outside"])
def test_a_patch_never_writes_through_a_symlink_out_of_the_tree(tmp_path: Path, layout):
    """A tree holding a symlink to outside (a directory, or a file) must not let a patch
    create, change or delete anything outside --tree (the check used to be on path text)."""
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    outside.mkdir()
    (outside / "victim.c").write_text("secret\n")
    if layout == "dir-link":
        (tree / "lib").symlink_to(outside, target_is_directory=True)
        rel = "lib/victim.c"
    else:
        (tree / "victim.c").symlink_to(outside / "victim.c")
        rel = "victim.c"
    p = tmp_path / "x.patch"
    p.write_text(_one_file_patch(rel, "secret", "owned"))
    with pytest.raises(InputError, match="symlink"):
        apply_series(load_series(str(p)), tree)
    assert (outside / "victim.c").read_text() == "secret\n"


def test_a_symlink_inside_the_tree_is_replaced_not_written_through(tmp_path: Path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "real.c").write_text("a\n")
    (tree / "alias.c").symlink_to("real.c")
    p = tmp_path / "x.patch"
    p.write_text(_one_file_patch("alias.c", "a", "b"))
    apply_series(load_series(str(p)), tree)
    assert (tree / "alias.c").read_text() == "b\n" and not (tree / "alias.c").is_symlink()
    assert (tree / "real.c").read_text() == "a\n"
