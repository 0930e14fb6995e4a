"""``mmlab trees``: the kernel sources Debian's archive ships (CLI only; the work is in
``orchestrator.kernel.debian_archive``)."""

from __future__ import annotations

import json

import click

from orchestrator.kernel import debian_archive


@click.command("trees")
@click.option("--refresh", is_flag=True, help="Refresh the private Debian indexes first.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def trees_command(refresh: bool, as_json: bool) -> None:
    """List the kernel trees `--tree debian:X.Y` can fetch (suites in debian_trees.toml).

    Each line: the tree spec, the upstream version, where it comes from (a linux-source .deb
    or an upstream orig tarball from a signed Sources index), its size and whether it is
    already in the cache. `debian:X.Y` takes the newest X.Y; `debian:X.Y.Z` an exact one.
    """
    found = debian_archive.offers(refresh=refresh)
    if as_json:
        click.echo(json.dumps([o.__dict__ | {"series": o.series,
                                             "cached": debian_archive.cached_file(o) is not None}
                               for o in found], indent=2))
        return
    newest: dict[str, debian_archive.Offer] = {}
    for o in found:
        newest[o.series] = o  # sorted oldest first: the last one wins
    for o in found:
        spec = f"debian:{o.upstream}"
        mark = " <- debian:" + o.series if newest[o.series] is o else ""
        cached = "cached" if debian_archive.cached_file(o) else ""
        what = (f"{o.package} {o.debian_version}" if o.kind == "deb"
                else f"{o.local_name}")
        click.echo(f"{spec:<17} {o.kind:<4} {what:<36} {o.suite:<19} {o.size / 1e6:4.0f} MB "
                   f"{cached:<6}{mark}")
    click.echo(f"{len(found)} kernel sources in {', '.join(debian_archive.settings()['suites'])}"
               " (an orig tarball the mirror no longer serves is skipped at download)")
