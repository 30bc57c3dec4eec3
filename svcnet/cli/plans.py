"""What the cluster state compiles to, and its data planes (I/O): ``plan``,
``diff``, ``sync``, ``trace``. The state is the CLI's store (``--store PATH``, see
:mod:`svcnet.cli.common`). ``diff`` reads the data plane itself back
(``Backend.observed_plan()``) and compares it with the plan compiled from the
store; ``sync`` installs that plan (and records in the store what it installed
where).
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any

import attrs
import click

from svcnet import plan as plan_mod
from svcnet import probe as probe_mod
from svcnet import semantics
from svcnet.backend import Backend
from svcnet.cli.common import CliError, backend_class, backend_factory, current_store
from svcnet.errors import NotFoundError, SvcnetError
from svcnet.model import Protocol, norm_ip
from svcnet.plan import Plan
from svcnet.probe import Probe, ProbeSource
from svcnet.scenario import same_outcome
from svcnet.state import ClusterState

node_option = click.option("--node", "node", metavar="NAME", help="One node (default: all).")


def _nodes(state: ClusterState, node: str | None) -> list[str]:
    if node is not None:
        if node not in state.nodes:
            raise NotFoundError(f"Node {node}")
        return [node]
    if not state.nodes:
        raise NotFoundError("Node (the state has no nodes; apply some first)")
    return sorted(state.nodes)


@click.command("plan")
@node_option
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json: the plan JSON of docs/reference/plan-json.md (a list of them for all nodes).",
)
def plan_cmd(node: str | None, output: str) -> None:
    """Print the rule plan of each node (or one)."""
    state = current_store().load()
    plans = [plan_mod.compile(state, n) for n in _nodes(state, node)]
    if output == "json":
        data: Any = [plan_mod.to_data(p) for p in plans]
        click.echo(json.dumps(data[0] if node is not None else data, sort_keys=True, indent=2))
        return
    click.echo("\n\n".join(str(p) for p in plans))


def _target(backend: Any, lab: str | None, host: bool, netns: str | None = None) -> str:
    if sum((lab is not None, host, netns is not None)) > 1:
        raise click.UsageError("give one of --lab, --host and --netns")
    if host:
        return "host"
    if lab is not None:
        return f"lab/{lab}"
    if netns is not None:
        return f"netns/{netns}"
    if backend.capabilities.kernel:
        raise click.UsageError(
            f"backend {backend.name!r} programs a kernel: give --lab LAB or --host"
        )
    return ""


lab_option = click.option("--lab", metavar="LAB", help="Sync into lab LAB's node namespaces.")
host_option = click.option("--host", is_flag=True, help="This host's root namespace (!).")
backend_option = click.option("--backend", "backend_name", required=True, metavar="NAME")


def _lab_netns(lab: str, node: str, exit_code: int = 1) -> str:
    """Lab ``lab``'s namespace of ``node``; CliError when it has none."""
    from svcnet.lab.topology import node_netns

    netns = node_netns(lab, node)
    if not os.path.exists(os.path.join("/run/netns", netns)):
        raise CliError(f"lab {lab} has no namespace {netns} (svcnet lab up?)", exit_code)
    return netns


def plan_diff(observed: Plan, planned: Plan, where: str) -> str:
    """A unified diff of the plans' text, from what ``where`` holds to the plan ("" when
    equal). The observed plan is shown with the planned one's revision: a read-back
    has none, and revisions do not compare."""
    shown = attrs.evolve(observed, revision=planned.revision)
    return "\n".join(
        difflib.unified_diff(
            str(shown).splitlines(),
            str(planned).splitlines(),
            f"{where} (now)",
            "the plan (from the store)",
            lineterm="",
        )
    )


def _observe(cls: type[Backend], node: str, netns: str | None) -> Plan:
    backend = cls(node, netns=netns) if netns is not None else cls(node)
    try:
        return backend.observed_plan()
    finally:
        backend.close()


@click.command("diff")
@node_option
@backend_option
@click.option("--lab", metavar="LAB", help="Read lab LAB's node namespaces.")
@click.option("--host", is_flag=True, help="Read this host's root namespace (needs --node).")
@click.option("--netns", metavar="NS", help="Read network namespace NS (needs --node).")
def diff_cmd(
    node: str | None, backend_name: str, lab: str | None, host: bool, netns: str | None
) -> None:
    """What the data plane holds now against the plan compiled from the store, per
    node, in the plan's text (a unified diff; lines with + are what the next sync
    installs). Exit status as diff(1): 0 equal, 1 different, 2 trouble."""
    cls = backend_class(backend_name)
    if cls.capabilities.kernel and lab is None and not host and netns is None:
        raise click.UsageError(
            f"backend {backend_name!r} programs a kernel: give --lab LAB or --host"
            " (or --netns NS) to read"
        )
    _target(cls, lab, host, netns)
    if not cls.capabilities.kernel:
        raise CliError(
            f"backend {backend_name!r} keeps its data plane in the process that installs it:"
            " there is nothing to read back (svcnet diff reads a kernel backend's"
            " --lab, --host or --netns)",
            exit_code=2,
        )
    if (host or netns is not None) and node is None:
        raise click.UsageError("--host and --netns read one node: give --node NAME")
    differ = False
    try:
        state = current_store().load()
        names = _nodes(state, node)
        blocks = []
        for n in names:
            ns = _lab_netns(lab, n, exit_code=2) if lab is not None else netns
            where = f"{backend_name} in {ns}" if ns is not None else f"{backend_name} on this host"
            planned = plan_mod.compile(state, n)
            observed = _observe(cls, n, ns)
            if observed == planned:
                blocks.append(f"node {n}: (no changes)")
            else:
                differ = True
                blocks.append(f"node {n}:\n{plan_diff(observed, planned, where)}")
    except SvcnetError as e:
        raise CliError(str(e), exit_code=2) from e
    click.echo("\n".join(blocks))
    if differ:
        click.get_current_context().exit(1)


def _check_lab(lab: str, backend_name: str) -> None:
    """Refuse to sync into a lab that follows a store, or with another backend."""
    from svcnet.lab.control import read_record

    record = read_record(lab)
    if "store" in record:
        raise CliError(
            f"lab {lab} follows its store through its agents; use `svcnet apply`"
            f" (store: {record['store']})"
        )
    recorded = record.get("backend")
    if recorded and recorded != backend_name:
        raise CliError(
            f"lab {lab} was set up with backend {recorded!r}: `sync --backend {backend_name}`"
            " would install a second data plane beside it"
        )


@click.command("sync")
@node_option
@backend_option
@lab_option
@host_option
@click.option("--yes", is_flag=True, help="Do not ask before programming this host.")
def sync_cmd(node: str | None, backend_name: str, lab: str | None, host: bool, yes: bool) -> None:
    """Install the current plan with a backend (memory, a lab's nodes, or --host)."""
    cls = backend_class(backend_name)
    target = _target(cls, lab, host)
    store = current_store()
    if host and node is None:
        raise click.UsageError("--host needs --node NAME (the node this host is)")
    if lab is not None:
        _check_lab(lab, backend_name)
    if host and not yes:
        click.confirm(
            f"Program this host's root network namespace with {backend_name} rules "
            f"for node {node}?",
            abort=True,
        )
    with store.modify() as session:
        state = session.state
        names = _nodes(state, node)
        for n in names:
            netns = _lab_netns(lab, n) if lab is not None else None
            plan = plan_mod.compile(state, n)
            backend = cls(n, netns=netns) if netns is not None else cls(n)
            try:
                backend.sync(plan)
            finally:
                backend.close()
            where = f" in {netns}" if netns else " on this host" if host else ""
            click.echo(f"node {n}: synced {len(plan.services)} services ({backend_name}{where})")
        session.record_sync(backend_name, target, names)


# -- trace ---------------------------------------------------------------------------


def _parse_to(text: str) -> tuple[str, int, Protocol]:
    addr, _, proto = text.partition("/")
    try:
        protocol = Protocol(proto.upper()) if proto else Protocol.TCP
    except ValueError as e:
        raise click.BadParameter(f"unknown protocol {proto!r}", param_hint="TO") from e
    if addr.startswith("["):
        ip, _, port = addr[1:].partition("]:")
    else:
        ip, _, port = addr.rpartition(":")
    try:
        return norm_ip(ip), int(port), protocol
    except ValueError as e:
        raise click.BadParameter(f"expected IP:PORT[/PROTO], got {text!r}", param_hint="TO") from e


def make_probe(state: ClusterState, source: str, to: str, node: str | None) -> Probe:
    """A probe from ``pod/NS/NAME``, ``node/NAME`` or an IP, handled at ``node`` (default:
    the pod's or the node's own; required for an IP), by :func:`svcnet.probe.make_probe`."""
    dst, port, protocol = _parse_to(to)
    if source.startswith("pod/"):
        ns, _, name = source[4:].partition("/")
        return probe_mod.make_probe(
            state, ProbeSource(pod=(ns, name), via=node), dst, port, protocol
        )
    if source.startswith("node/"):
        return probe_mod.make_probe(
            state, ProbeSource(node=source[5:], via=node), dst, port, protocol
        )
    try:
        src = norm_ip(source)
    except ValueError as e:
        raise click.BadParameter(
            f"expected pod/NS/NAME, node/NAME or an IP, got {source!r}", param_hint="FROM"
        ) from e
    if node is None:
        raise click.UsageError("a source IP needs --node (the node the packet reaches)")
    return probe_mod.make_probe(state, ProbeSource(address=src, via=node), dst, port, protocol)


@click.command("trace")
@click.argument("source", metavar="FROM")
@click.argument("to", metavar="TO")
@node_option
@click.option("--backend", "backend_name", metavar="NAME", help="Also ask this backend.")
def trace_cmd(source: str, to: str, node: str | None, backend_name: str | None) -> None:
    """What happens to a connection FROM (pod/NS/NAME, node/NAME, IP) TO IP:PORT[/PROTO]."""
    state = current_store().load()
    probe = make_probe(state, source, to, node)
    click.echo(f"probe: {probe}")
    expected = semantics.evaluate(state, probe)
    click.echo(f"semantics: {expected}")
    if backend_name is not None:
        cls = backend_class(backend_name)
        with backend_factory(cls) as make:
            backend = make(probe.node)
            try:
                backend.sync(plan_mod.compile(state, probe.node))
                got = backend.evaluate(probe)
                lines = backend.trace(probe)
            finally:
                backend.close()
        exact = cls.capabilities.exact_probabilities
        agree = same_outcome(expected, got, exact_probabilities=exact)
        click.echo(f"{backend_name}: {got}" + ("" if agree else "   (DISAGREES with semantics)"))
        for line in lines:
            click.echo(f"  {line}")
    click.echo("why:")
    for line in semantics.explain(state, probe):
        click.echo(f"  {line}")


COMMANDS: tuple[click.Command, ...] = (plan_cmd, diff_cmd, sync_cmd, trace_cmd)

__all__ = ["COMMANDS", "make_probe", "plan_diff"]
