"""``svcnet audit``: check a node's rules (kube-proxy's or svcnet's) against the
reference, probe by probe (I/O: reads rules from a network namespace or files,
objects from manifests or the store; the audit is :mod:`svcnet.audit`).

Rules: ``--netns NAME`` runs ``iptables-save``, ``ip6tables-save`` and ``nft -j
list ruleset`` inside that namespace; or ``--iptables-save FILE`` (and
``--ip6tables-save FILE``) / ``--nft-json FILE``. The layout is found from the
chain and table names unless ``--layout`` says it. Objects: ``-f FILE`` (as
``svcnet dns``), else the store. Probes: every destination and source the
conformance harness aims at (:class:`svcnet.probes.ProbeSpace`, no Hypothesis: each
frontend, the places next to one and elsewhere, from pods, the node and outside)
handled at ``--node``. Exit status 1 when any disagreement is not by design.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

import click

from svcnet.audit import Report, audit
from svcnet.audit.readers import Layout, LayoutError, detect_layout, reader
from svcnet.cli.common import CliError, current_store
from svcnet.cli.dns import _state_from_files
from svcnet.errors import NotFoundError
from svcnet.model import IPFamily
from svcnet.probes import node_probes
from svcnet.state import ClusterState

__all__ = ["COMMANDS", "audit_cmd", "node_probes", "read_netns", "run_audit"]


def _exec(netns: str, argv: list[str]) -> str | None:
    """``argv``'s output inside ``netns`` (None when the tool is missing or fails)."""
    try:
        p = subprocess.run(
            ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return p.stdout if p.returncode == 0 else None


def _has_rules(text: str | None) -> bool:
    return bool(text) and any(m in (text or "") for m in (":KUBE-", ":SVCNET-"))


def read_netns(netns: str) -> tuple[dict[IPFamily, str], str | None]:
    """The iptables save texts (by family; the nft or the legacy variant, whichever
    holds kube-proxy's or svcnet's chains) and the nft JSON of ``netns``."""
    saves: dict[IPFamily, str] = {}
    for family, base in ((IPFamily.IPv4, "iptables"), (IPFamily.IPv6, "ip6tables")):
        for tool in (f"{base}-save", f"{base}-legacy-save"):
            text = _exec(netns, [tool])
            if _has_rules(text):
                assert text is not None
                saves[family] = text
                break
    return saves, _exec(netns, ["nft", "-j", "list", "ruleset"])


def run_audit(
    state: ClusterState,
    node: str,
    layout: Layout | None,
    iptables: dict[IPFamily, str],
    nft_json: str | None,
) -> Report:
    """The audit of ``node``'s rules (given as read) against ``state``."""
    found = state.nodes.get(node)
    if found is None:
        raise NotFoundError(f"Node {node}")
    if layout is None:
        layout = detect_layout(iptables.values(), nft_json)
    answerer = reader(layout, iptables=iptables, nft_json=nft_json, local=found.addresses)
    return audit(state, node, answerer, node_probes(state, node))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@click.command("audit")
@click.option("--node", "node", required=True, metavar="NAME", help="The node the rules are of.")
@click.option("--netns", metavar="NAME", help="Read the rules live from this network namespace.")
@click.option(
    "--iptables-save",
    "save4",
    type=click.Path(exists=True, dir_okay=False),
    help="iptables-save output (IPv4).",
)
@click.option(
    "--ip6tables-save",
    "save6",
    type=click.Path(exists=True, dir_okay=False),
    help="ip6tables-save output (IPv6).",
)
@click.option(
    "--nft-json",
    "nft_file",
    type=click.Path(exists=True, dir_okay=False),
    help="`nft -j list ruleset` output.",
)
@click.option(
    "--layout",
    type=click.Choice([lay.value for lay in Layout]),
    help="Whose rules these are (default: found from chain and table names).",
)
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="The cluster's objects from these manifests instead of the store (repeatable).",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def audit_cmd(
    node: str,
    netns: str | None,
    save4: str | None,
    save6: str | None,
    nft_file: str | None,
    layout: str | None,
    files: Sequence[str],
    output: str,
) -> None:
    """Check NODE's rules against the reference, probe by probe.

    Exit status 1 on any disagreement that is not a documented difference of
    the layout's mode (``differs by design``).

    Each disagreement is printed with the probe, what the rules do, what the
    reference says and the rules that decided it (docs/how-to/audit-a-node.md).
    """
    if netns is not None and (save4 or save6 or nft_file):
        raise click.UsageError("give --netns or rule files, not both")
    if netns is not None:
        iptables, nft_json = read_netns(netns)
    elif save4 or save6 or nft_file:
        iptables = {}
        if save4:
            iptables[IPFamily.IPv4] = _read(save4)
        if save6:
            iptables[IPFamily.IPv6] = _read(save6)
        nft_json = _read(nft_file) if nft_file else None
    else:
        raise click.UsageError("give --netns NAME, or --iptables-save / --nft-json FILE")
    state = _state_from_files(files) if files else current_store().load()
    try:
        report = run_audit(state, node, Layout(layout) if layout else None, iptables, nft_json)
    except LayoutError as e:
        raise CliError(str(e)) from e
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(report.text())
    if not report.ok:
        raise SystemExit(1)


COMMANDS = [audit_cmd]
