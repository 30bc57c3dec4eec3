"""kubectl-like commands over the CLI's store (I/O): ``apply``, ``delete``, ``get``,
``describe``, ``config``, ``plan``, ``diff``, ``sync``, ``trace``.

Registered in :mod:`svcnet.cli.main` by :func:`register`, which also gives the group its
``--store PATH`` option (default ``$SVCNET_STORE`` or
``~/.local/share/svcnet/store.db``). Every command that changes the state runs
inside :meth:`svcnet.store.Store.modify`: the store is locked from load to save,
and a step that fails (a validation error, a conflict) saves nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click
import yaml

from svcnet import manifests, semantics
from svcnet import plan as plan_mod
from svcnet import probe as probe_mod
from svcnet.cli.views import (
    _endpoints_manifest,
    _get,
    _rows,
    _select,
    _table,
    describe_service,
)
from svcnet.errors import ManifestError, NotFoundError
from svcnet.model import (
    ClusterConfig,
    Kind,
    KubeObject,
    ObjectKey,
    Protocol,
    ServiceType,
)
from svcnet.probe import Probe, ProbeSource
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.store import Store, config_to_json

META_KEY = "svcnet.store"
NONE = "<none>"

RESOURCES = {
    "svc": Kind.SERVICE, "service": Kind.SERVICE, "services": Kind.SERVICE,
    "po": Kind.POD, "pod": Kind.POD, "pods": Kind.POD,
    "no": Kind.NODE, "node": Kind.NODE, "nodes": Kind.NODE,
    "endpointslice": Kind.ENDPOINT_SLICE, "endpointslices": Kind.ENDPOINT_SLICE,
}  # fmt: skip
ENDPOINTS = ("ep", "endpoints")
SHORT = {
    Kind.SERVICE: "service",
    Kind.POD: "pod",
    Kind.NODE: "node",
    Kind.ENDPOINT_SLICE: "endpointslice",
}


def _error(message: str, exit_code: int = 1) -> click.ClickException:
    from svcnet.cli.main import CliError  # late: svcnet.cli.main imports this module

    return CliError(message, exit_code)


def current_store() -> Store:
    """The store chosen by the group's ``--store`` option (or the default)."""
    ctx = click.get_current_context(silent=True)
    path = ctx.meta.get(META_KEY) if ctx is not None else None
    return Store(path)


def _set_store(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    ctx.meta[META_KEY] = value


# -- reading manifests ---------------------------------------------------------------


def _files(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(text, name) of every file: FILE, DIR (its *.yaml/*.yml/*.json) or '-'."""
    for p in paths:
        if p == "-":
            yield sys.stdin.read(), "<stdin>"
            continue
        if os.path.isdir(p):
            names = sorted(
                os.path.join(p, n) for n in os.listdir(p) if n.endswith((".yaml", ".yml", ".json"))
            )
        else:
            names = [p]
        for name in names:
            try:
                with open(name, encoding="utf-8") as f:
                    yield f.read(), name
            except (OSError, UnicodeDecodeError) as e:
                raise ManifestError(f"{name}: cannot read: {e}") from e


def read_objects(paths: Sequence[str]) -> list[KubeObject]:
    """Every object in ``paths``, validated (ManifestError/ValidationError otherwise)."""
    objects: list[KubeObject] = []
    for text, name in _files(paths):
        objects.extend(manifests.load(text, filename=name))
    return objects


def _apply_objects(objects: Sequence[KubeObject]) -> Apply:
    items: Any = tuple(objects)  # attrs types Apply's converter parameter loosely
    return Apply(items)


# -- the store option and registration -----------------------------------------------


def register(group: click.Group) -> None:
    """Add ``--store`` to ``group`` and every command of this module to it."""
    group.params.append(
        click.Option(
            ["--store"],
            metavar="PATH",
            envvar="SVCNET_STORE",
            expose_value=False,
            callback=_set_store,
            help="The state file (default: $SVCNET_STORE or ~/.local/share/svcnet/store.db).",
        )
    )
    for cmd in COMMANDS:
        group.add_command(cmd)


# -- apply / delete ------------------------------------------------------------------

filename_option = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    type=click.Path(exists=True, allow_dash=True),
    help="Manifest file, directory or '-' for stdin (repeatable).",
)


def _ref(obj: KubeObject | ObjectKey) -> str:
    key = obj if isinstance(obj, ObjectKey) else obj.key
    return f"{SHORT[key.kind]}/{key.name}"


@click.command("apply")
@filename_option
def apply_cmd(files: Sequence[str]) -> None:
    """Apply every document of the FILEs at once (all or nothing)."""
    if not files:
        raise click.UsageError("give manifests with -f FILE|DIR|-")
    objects = read_objects(files)
    if not objects:
        raise ManifestError("no objects in " + ", ".join(files))
    with current_store().modify() as session:
        old = session.state
        new = old.step(_apply_objects(objects))
        session.save(new)
    seen: set[ObjectKey] = set()
    for obj in objects:
        if obj.key in seen:
            continue
        seen.add(obj.key)
        before, after = _get(old, obj.key), _get(new, obj.key)
        if before is None:
            verb = "created"
        elif after is not None and manifests.to_manifest(before) == manifests.to_manifest(after):
            verb = "unchanged"
        else:
            verb = "configured"
        click.echo(f"{_ref(obj)} {verb}")


@click.command("delete")
@filename_option
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default="default", show_default=True)
def delete_cmd(
    files: Sequence[str], kind: str | None, names: Sequence[str], namespace: str
) -> None:
    """Delete the objects of FILEs, or KIND (svc, pod, node, endpointslice) NAMEs."""
    if files and kind:
        raise click.UsageError("give either -f FILE or KIND NAME..., not both")
    if files:
        keys = list(dict.fromkeys(o.key for o in read_objects(files)))
    elif kind and names:
        k = RESOURCES.get(kind.lower())
        if k is None:
            raise click.BadParameter(
                f"{kind!r}: expected svc, pod, node or endpointslice", param_hint="KIND"
            )
        keys = [ObjectKey(k, "" if k is Kind.NODE else namespace, n) for n in names]
    else:
        raise click.UsageError("give -f FILE or KIND NAME...")
    with current_store().modify() as session:
        session.save(session.state.step(Delete(tuple(keys))))
    for key in keys:
        click.echo(f'{SHORT[key.kind]} "{key.name}" deleted')


# -- get -----------------------------------------------------------------------------


@click.command("get")
@click.argument("resource")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", "all_ns", is_flag=True, help="Every namespace.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json", "wide"]), default=None)
def get_cmd(
    resource: str, name: str | None, namespace: str, all_ns: bool, output: str | None
) -> None:
    """Show svc, pods, nodes, endpoints or endpointslices (tables like kubectl's)."""
    r = resource.lower()
    state = current_store().load()
    if r in ENDPOINTS:
        items = _select(state, Kind.SERVICE, name, namespace, all_ns)
        items = [s for s in items if s.type is not ServiceType.EXTERNAL_NAME]
        what = "endpoints"
        docs = [_endpoints_manifest(state, s) for s in items]
    elif r in RESOURCES:
        items = _select(state, RESOURCES[r], name, namespace, all_ns)
        what = RESOURCES[r].value
        docs = [manifests.to_manifest(o) for o in items]
    else:
        raise click.BadParameter(
            f"{resource!r}: expected svc, pods, nodes, endpoints or endpointslices",
            param_hint="RESOURCE",
        )
    if output in ("yaml", "json"):
        doc: Any = (
            docs[0] if name is not None else {"apiVersion": "v1", "kind": "List", "items": docs}
        )
        if output == "json":
            click.echo(json.dumps(doc, indent=2))
        else:
            click.echo(yaml.safe_dump(doc, sort_keys=False).rstrip("\n"))
        return
    if not items:
        where = "" if all_ns or what == Kind.NODE.value else f" in {namespace} namespace"
        click.echo(f"No resources found{where}.", err=True)
        return
    rows = _rows(state, what, items, output == "wide")
    if all_ns and what != Kind.NODE.value:
        rows = [["NAMESPACE", *rows[0]]] + [
            [o.namespace, *row] for o, row in zip(items, rows[1:], strict=True)
        ]
    click.echo(_table(rows))


# -- describe ------------------------------------------------------------------------


@click.command("describe")
@click.argument("resource", type=click.Choice(["svc", "service", "services"]))
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
def describe_cmd(resource: str, name: str, namespace: str) -> None:
    """Describe a service: IPs, ports, endpoints per port, policies, affinity."""
    state = current_store().load()
    svc = state.services.get((namespace, name))
    if svc is None:
        raise NotFoundError(f"Service {namespace}/{name}")
    click.echo("\n".join(describe_service(state, svc)))


# -- config --------------------------------------------------------------------------


def _config_text(config: ClusterConfig) -> str:
    return yaml.safe_dump({"config": config_to_json(config)}, sort_keys=False).rstrip("\n")


def _config_from_file(path: str, current: ClusterConfig) -> ClusterConfig:
    from svcnet.scenario.format import _config, _Where  # the scenario format's reader

    text, name = next(_files([path]))
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{name}{line}: {e.problem}") from e
    except yaml.YAMLError as e:
        raise ManifestError(f"{name}: {e}") from e
    if isinstance(doc, dict) and "config" in doc:
        doc = doc["config"]
    if not isinstance(doc, dict):
        raise ManifestError(f"{name}: expected a mapping (a scenario's `config`)")
    merged = {**config_to_json(current), **doc}  # keys not given keep their value
    return _config(_Where(name, "config"), merged)


def _cidrs(value: str, what: str) -> tuple[str, ...]:
    out = []
    for part in value.split(","):
        try:
            out.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError as e:
            raise click.BadParameter(f"{part!r} is not a CIDR", param_hint=what) from e
    return tuple(out)


@click.command("config")
@click.option("--service-cidrs", metavar="CIDR[,CIDR]")
@click.option("--cluster-cidrs", metavar="CIDR[,CIDR]")
@click.option("--node-port-range", metavar="LOW-HIGH")
@click.option("--lb-pool", metavar="CIDR[,CIDR]")
@click.option("--cluster-domain", metavar="DOMAIN")
@click.option("--masquerade-all/--no-masquerade-all", default=None)
@click.option(
    "-f",
    "--filename",
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="A scenario-style `config` document (keys not given keep their value).",
)
def config_cmd(
    service_cidrs: str | None,
    cluster_cidrs: str | None,
    node_port_range: str | None,
    lb_pool: str | None,
    cluster_domain: str | None,
    masquerade_all: bool | None,
    file: str | None,
) -> None:
    """Show the cluster configuration, or change it (refused if allocations conflict)."""
    import attrs

    changes: dict[str, Any] = {}
    if service_cidrs is not None:
        changes["service_cidrs"] = _cidrs(service_cidrs, "--service-cidrs")
    if cluster_cidrs is not None:
        changes["cluster_cidrs"] = _cidrs(cluster_cidrs, "--cluster-cidrs")
    if lb_pool is not None:
        changes["load_balancer_pool"] = _cidrs(lb_pool, "--lb-pool")
    if node_port_range is not None:
        lo, sep, hi = node_port_range.partition("-")
        if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
            raise click.BadParameter("expected LOW-HIGH", param_hint="--node-port-range")
        changes["node_port_range"] = (int(lo), int(hi))
    if cluster_domain is not None:
        changes["cluster_domain"] = cluster_domain.strip(".").lower()
    if masquerade_all is not None:
        changes["masquerade_all"] = masquerade_all
    if not changes and file is None:
        click.echo(_config_text(current_store().load().config))
        return
    with current_store().modify() as session:
        config = session.state.config
        if file is not None:
            config = _config_from_file(file, config)
        config = attrs.evolve(config, **changes)
        session.save(session.state.step(Configure(config)))
    click.echo(_config_text(config))


# -- plan / diff / sync --------------------------------------------------------------

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
def plan_cmd(node: str | None) -> None:
    """Print the rule plan of each node (or one)."""
    state = current_store().load()
    click.echo("\n\n".join(str(plan_mod.compile(state, n)) for n in _nodes(state, node)))


def _target(backend: Any, lab: str | None, host: bool) -> str:
    if lab is not None and host:
        raise click.UsageError("give --lab or --host, not both")
    if host:
        return "host"
    if lab is not None:
        return f"lab/{lab}"
    if backend.capabilities.kernel:
        raise click.UsageError(
            f"backend {backend.name!r} programs a kernel: give --lab LAB or --host"
        )
    return ""


lab_option = click.option("--lab", metavar="LAB", help="Sync into lab LAB's node namespaces.")
host_option = click.option("--host", is_flag=True, help="This host's root namespace (!).")
backend_option = click.option("--backend", "backend_name", required=True, metavar="NAME")


@click.command("diff")
@node_option
@backend_option
@lab_option
@host_option
def diff_cmd(node: str | None, backend_name: str, lab: str | None, host: bool) -> None:
    """What the next `svcnet sync` would change (vs the plan synced last)."""
    from svcnet.cli.main import backend_class

    cls = backend_class(backend_name)
    target = _target(cls, lab, host)
    store = current_store()
    state = store.load()
    blocks = []
    for n in _nodes(state, node):
        before = store.synced(backend_name, target, n)
        previous = None
        if before is not None and n in before.nodes:
            previous = plan_mod.compile(before, n)
        changes = plan_mod.compile(state, n).diff(previous)
        blocks.append(f"node {n}:\n{changes}")
    click.echo("\n".join(blocks))


@click.command("sync")
@node_option
@backend_option
@lab_option
@host_option
@click.option("--yes", is_flag=True, help="Do not ask before programming this host.")
def sync_cmd(node: str | None, backend_name: str, lab: str | None, host: bool, yes: bool) -> None:
    """Install the current plan with a backend (memory, a lab's nodes, or --host)."""
    from svcnet.cli.main import backend_class

    cls = backend_class(backend_name)
    target = _target(cls, lab, host)
    store = current_store()
    if host and node is None:
        raise click.UsageError("--host needs --node NAME (the node this host is)")
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
            netns = None
            if lab is not None:
                from svcnet.lab.topology import node_netns

                netns = node_netns(lab, n)
                if not os.path.exists(os.path.join("/run/netns", netns)):
                    raise _error(f"lab {lab} has no namespace {netns} (svcnet lab up?)")
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
        return str(ipaddress.ip_address(ip)), int(port), protocol
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
        src = str(ipaddress.ip_address(source))
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
        from svcnet.cli.main import backend_class, backend_factory
        from svcnet.scenario import same_outcome

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


COMMANDS = (
    apply_cmd,
    delete_cmd,
    get_cmd,
    describe_cmd,
    config_cmd,
    plan_cmd,
    diff_cmd,
    sync_cmd,
    trace_cmd,
)

__all__ = [
    "COMMANDS",
    "current_store",
    "describe_service",
    "make_probe",
    "read_objects",
    "register",
]
