"""The lab's commands: ``svcnet lab up|down|status|metrics|exec``, ``svcnet demo``
(I/O). (``svcnet scenario run --traffic`` is in :mod:`svcnet.cli.scenario`;
kubectl's ``port-forward`` and ``exec`` are in :mod:`svcnet.cli.forward`.)

Registered in :mod:`svcnet.cli.main`. ``lab up`` binds the lab to a store: it applies
its FILEs to the store (as ``svcnet apply -f``), builds the namespaces, starts a
follower (:mod:`svcnet.lab.follow`) and one ``svcnet agent`` per node, and waits until
every agent has programmed the store's current version; from then on ``svcnet apply``
and ``svcnet delete`` change the lab live. The lab's record
(``/run/svcnet/<lab>/lab.json``) keeps the store, the backend and the PIDs; the other
commands read the lab's current state from the file its DNS servers answer from.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import click

from svcnet.cli.common import CliError, backend_class, namespace_option
from svcnet.errors import SvcnetError


def _say(message: str) -> None:
    click.echo(f"  · {message}", err=True)


def _lab_name(value: str) -> str:
    from svcnet.lab.topology import check_lab_name

    try:
        return check_lab_name(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise CliError(f"{what} needs root (it creates network namespaces)")


def _state_of(docs: list[Any]) -> Any:
    from svcnet import manifests
    from svcnet.state import Apply, ClusterState

    objects: Any = manifests.load(docs, filename="manifests")  # attrs' converter typing
    return ClusterState.empty().step(Apply(objects))


def _record(name: str) -> dict[str, Any]:
    from svcnet.lab.control import read_record

    record = read_record(name)
    if not record:
        raise CliError(f"no lab named {name!r} is up (svcnet lab up FILE... --name {name})")
    return record


def _lab_state(name: str) -> Any:
    """The cluster state lab ``name`` was last made to match (its DNS state file)."""
    import pickle

    from svcnet.lab.control import state_pickle

    record = _record(name)
    try:
        with open(state_pickle(name), "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError):
        return _state_of(record.get("manifests", []))


def _topology(name: str) -> Any:
    from svcnet.lab.topology import build

    return build(name, _lab_state(name))


# -- svcnet lab ----------------------------------------------------------------------


@click.group("lab")
def lab_group() -> None:
    """A lab: nodes and pods as network namespaces, services as real rules."""


name_option = click.option(
    "--name",
    "name",
    default="lab",
    show_default=True,
    callback=lambda c, p, v: _lab_name(v),
    help="Lab name (namespaces svcnet-NAME-*).",
)


@lab_group.command("up")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@name_option
@click.option(
    "--backend",
    "backend_name",
    default="iptables",
    show_default=True,
    metavar="NAME",
    help="Kernel backend the node agents program (fixed for the lab's life).",
)
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds to wait for every agent to program the store's current version.",
)
@click.option(
    "--agent-arg",
    "agent_args",
    multiple=True,
    metavar="ARG",
    help="One more `svcnet agent` option for every node's agent "
    "(e.g. --agent-arg=--no-conntrack-cleanup); repeat for several.",
)
@click.pass_context
def lab_up(
    ctx: click.Context,
    paths: Sequence[str],
    name: str,
    backend_name: str,
    timeout: float,
    agent_args: Sequence[str],
) -> None:
    """Apply manifest FILEs or directories to the store and build a lab that
    follows it: one agent per node, plumbing and DNS kept in step with every
    ``svcnet apply`` and ``svcnet delete``."""
    from svcnet.cli.common import current_store
    from svcnet.cli.objects import apply_cmd
    from svcnet.lab.control import Lab

    _need_root("svcnet lab up")
    cls = backend_class(backend_name)
    if not cls.capabilities.kernel:
        raise CliError(f"backend {backend_name!r} programs no kernel; the lab needs one")
    store = current_store()
    store_path = os.path.abspath(store.path)
    click.echo(f"store: {store_path}")
    # from now on the lab reports pod readiness (its kubelet probes the pods): the
    # store schedules pods and runs the controllers but marks no pod ready itself
    store.set_kubelet("lab")
    if paths:
        ctx.invoke(apply_cmd, files=tuple(paths))
    listing = store.list()
    lab = Lab(name, None, progress=_say)
    lab.extra.update(store=store_path, backend=backend_name, agent_args=list(agent_args))
    topo = lab.up(listing.state)
    for why in topo.skipped:
        click.echo(f"skipped {why}")
    _start_follower(name, store_path, backend_name)
    _wait_for_agents(name, store.version(), timeout)
    click.echo(
        f"lab {name} is up: {len(topo.nodes)} nodes, {len(topo.pods)} pods, "
        f"{backend_name} agents following {store_path} "
        f"(svcnet lab exec --name {name} pod NS/NAME -- CMD)"
    )


def _start_follower(name: str, store_path: str, backend_name: str) -> None:
    import subprocess
    import sys

    from svcnet.lab.control import FOLLOW_MODULE, PACKAGE_ROOT, _spawn, _started, state_dir

    log = os.path.join(state_dir(name), "follow.log")
    args = [sys.executable, "-m", FOLLOW_MODULE, "--name", name, "--store", store_path]
    with open(log, "a", encoding="utf-8") as err:
        proc = _spawn([*args, "--backend", backend_name], err, cwd=PACKAGE_ROOT)
    if not _started(proc, 120.0):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
        raise CliError(f"lab {name}: the follower did not start (see {log})")
    _say(f"follower pid {proc.pid} (log {log})")


def _wait_for_agents(name: str, version: int, timeout: float) -> None:
    """Poll the agents' status files until every node's agent reports ``version``."""
    import time

    from svcnet.lab.follow import agents_in_step

    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        record = _record(name)
        agents = {str(k): int(v) for k, v in record.get("agents", {}).items()}
        done, why = agents_in_step(_topology(name), agents, version)
        if done:
            _say(f"every agent has programmed store version {version}")
            return
        time.sleep(0.05)
    raise CliError(
        f"lab {name}: agents not in step with store version {version} after {timeout:g} s: "
        f"{why} (logs in /run/svcnet/{name}/; svcnet lab down --name {name} removes the lab)"
    )


@lab_group.command("down")
@name_option
def lab_down(name: str) -> None:
    """Remove a lab: processes, namespaces, record (also after a crash)."""
    from svcnet.lab.control import down

    _need_root("svcnet lab down")
    bound = _record(name).get("store")
    removed = down(name)
    if isinstance(bound, str) and os.path.exists(bound):
        from svcnet.store import KUBELET_STORE, Store

        with contextlib.suppress(SvcnetError):  # the lab is gone either way
            Store(bound).set_kubelet(KUBELET_STORE)
    click.echo(
        f"lab {name}: removed {len(removed)} namespaces"
        if removed
        else f"lab {name}: nothing to remove"
    )


def _agent_lines(name: str, record: dict[str, Any]) -> list[str]:
    import time

    from svcnet.kernel import netns
    from svcnet.lab.control import our_follower, read_agent_status

    lines = []
    store = record.get("store")
    if store:
        from svcnet.store import Store

        try:
            current: object = Store(str(store)).version()
        except Exception as e:  # the status shows what it can
            current = f"unreadable ({e})"
        follower = record.get("follower")
        running = isinstance(follower, int) and our_follower(follower, name)
        lines.append(f"  store {store} at version {current}")
        lines.append(
            f"  follower pid {follower} {'running' if running else 'gone'}, "
            f"lab at version {record.get('version')}"
            + (f", error: {record['error']}" if record.get("error") else "")
        )
    agents = record.get("agents", {})
    for node_ns, pid in sorted(agents.items() if isinstance(agents, dict) else []):
        status = read_agent_status(str(node_ns)) or {}
        state = "running" if netns.alive(int(pid)) else "gone"
        last_sync = status.get("last_sync")
        last: dict[str, Any] = last_sync if isinstance(last_sync, dict) else {}
        at = last.get("time", status.get("written"))
        when = (
            time.strftime("%H:%M:%S", time.localtime(float(at)))
            if isinstance(at, (int, float))
            else "never"
        )
        took = f" ({last['duration_ms']} ms)" if last.get("duration_ms") is not None else ""
        lines.append(
            f"  agent {status.get('node', node_ns)}: pid {pid} {state}, "
            f"{_health(str(node_ns), status) if state == 'running' else 'health -'}, "
            f"version {status.get('version')}, last sync {when}{took}, "
            f"error {status.get('error') or 'none'}"
        )
    return lines


def _served(status: dict[str, Any], path: str) -> str | None:
    """The ``host:port`` of the agent's server for ``path`` (its status file)."""
    health = status.get("health")
    servers = health.get("servers") if isinstance(health, dict) else None
    if isinstance(servers, dict):
        for address, paths in servers.items():
            if isinstance(paths, list) and path in paths:
                return str(address)
    return None


def _health(node_ns: str, status: dict[str, Any]) -> str:
    """``health 200`` as the agent's own /healthz answers now (asked over HTTP in
    the node's namespace), or why it cannot be asked."""
    from svcnet.lab.control import agent_http_get

    address = _served(status, "/healthz")
    if address is None:
        return "health unknown (no /healthz)"
    try:
        code, _ = agent_http_get(node_ns, address, "/healthz")
    except Exception as e:  # the status shows what it can
        return f"health unreachable ({e})"
    return f"health {code} {'ok' if code == 200 else 'unhealthy'}"


@lab_group.command("status")
@name_option
def lab_status(name: str) -> None:
    """Show a lab's store, follower, agents (version, last sync, error),
    namespaces and pod servers."""
    from svcnet.kernel import netns
    from svcnet.lab.control import read_record
    from svcnet.lab.topology import prefix

    record = read_record(name)
    spaces = netns.listed(prefix(name)) if os.path.isdir(netns.NETNS_DIR) else []
    if not record and not spaces:
        click.echo(f"lab {name}: down")
        return
    click.echo(f"lab {name}: {len(spaces)} namespaces, backend {record.get('backend')}")
    for line in _agent_lines(name, record):
        click.echo(line)
    for ns in spaces:
        click.echo(f"  {ns}")
    for pod, pid in sorted(record.get("servers", {}).items()):
        state = "running" if netns.alive(int(pid)) else "gone"
        click.echo(f"  server {pod}: pid {pid} {state}")
    expected = set(record.get("namespaces", []))
    missing = sorted(expected - set(spaces))
    if missing:
        click.echo("  missing: " + ", ".join(missing))


@lab_group.command("metrics")
@click.argument("node")
@name_option
def lab_metrics(node: str, name: str) -> None:
    """Print NODE's agent's Prometheus metrics (its /metrics, fetched over HTTP
    inside the node's namespace)."""
    from svcnet.lab.control import agent_http_get, read_agent_status

    _need_root("svcnet lab metrics")
    topo = _topology(name)
    match = [n for n in topo.nodes if n.name == node]
    if not match:
        known = ", ".join(n.name for n in topo.nodes) or "none"
        raise CliError(f"lab {name}: no node {node!r} (nodes: {known})")
    status = read_agent_status(match[0].netns)
    if status is None:
        raise CliError(f"lab {name}: node {node} has no agent status (is the lab live?)")
    address = _served(status, "/metrics")
    if address is None:
        raise CliError(f"lab {name}: node {node}'s agent serves no /metrics")
    code, body = agent_http_get(match[0].netns, address, "/metrics")
    if code != 200:
        raise CliError(f"lab {name}: node {node}'s /metrics answered {code}")
    click.echo(body.decode("utf-8"), nl=False)


def _target_netns(name: str, kind: str, target: str) -> str:
    topo = _topology(name)
    if kind == "pod":
        pod = topo.pod(target)
        if pod is None:
            raise CliError(f"pod {target} is not in lab {name}")
        return str(pod.netns)
    if kind == "node":
        node = topo.node(target)
        if node is None:
            raise CliError(f"node {target} is not in lab {name}")
        return str(node.netns)
    from svcnet.lab.topology import ext_netns

    return ext_netns(name)


@lab_group.command("exec", context_settings={"ignore_unknown_options": True})
@name_option
@namespace_option
@click.argument("kind", type=click.Choice(["pod", "node", "ext"]))
@click.argument("target", required=False, default="")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name: str, namespace: str, kind: str, target: str, command: Sequence[str]) -> None:
    """Run COMMAND in a pod's, a node's or the external client's namespace.

    A pod is NS/NAME or NAME in namespace -n; e.g. ``svcnet lab exec pod client --
    curl -s 10.96.0.10``, ``svcnet lab exec ext -- curl -s 203.0.113.10``
    (``svcnet exec POD -- CMD`` is kubectl's spelling)."""
    _need_root("svcnet lab exec")
    if kind == "ext" and target:
        command = (target, *command)
    if kind == "pod" and target and "/" not in target:
        target = f"{namespace}/{target}"
    where = _target_netns(name, kind, target)
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise CliError("no command given")
    os.execvp("ip", ["ip", "netns", "exec", where, *args])


# -- svcnet demo ---------------------------------------------------------------------


@click.command("demo")
@click.option(
    "--count",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Connections per row.",
)
@click.option(
    "--memory",
    "force_memory",
    is_flag=True,
    help="Show what the rules would do without root or packets.",
)
@click.option(
    "--manifests",
    "directory",
    default=None,
    type=click.Path(file_okay=False),
    help="Demo manifests (default: examples/demo).",
)
def demo(count: int, force_memory: bool, directory: str | None) -> None:
    """Build a two-node lab, send real connections to a ClusterIP, a NodePort and
    a LoadBalancer from a pod, a node and outside, and show who answered."""
    from svcnet.lab import demo as demo_mod

    root = os.geteuid() == 0 and not force_memory
    if root:
        click.echo("svcnet demo: building a two-node lab (root: real packets)", err=True)
    else:
        click.echo(
            "svcnet demo: not root: showing what the rules would do, no packets sent "
            "(memory backend; counts sampled from the outcome's probabilities)",
            err=True,
        )
    result = demo_mod.run(
        count, directory=directory or demo_mod.EXAMPLES, say=_say, force_memory=force_memory
    )
    how = (
        f"real connections through {result.backend} rules"
        if result.mode == "kernel"
        else "sampled from the memory backend's outcomes, no packets sent"
    )
    click.echo(f"\n{result.count} connections per row, {how}:\n")
    click.echo(demo_mod.format_table(result))


COMMANDS: tuple[click.Command, ...] = (lab_group, demo)

__all__ = ["COMMANDS", "demo", "lab_group"]
