"""The lab's commands: ``svcnet lab up|down|status|exec``, ``svcnet demo``,
``svcnet port-forward`` (I/O). (``svcnet scenario run --traffic`` is in
:mod:`svcnet.cli.scenario`.)

Registered in :mod:`svcnet.cli.main`. The lab's record (``/run/svcnet/<lab>/lab.json``)
keeps the manifests and the backend, so every command can rebuild what it needs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

import click

from svcnet.cli.common import CliError, backend_class


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


def _load_documents(paths: Sequence[str]) -> list[Any]:
    import glob

    import yaml

    docs: list[Any] = []
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "*.yaml"))) if os.path.isdir(p) else [p]
        for f in files:
            try:
                with open(f, encoding="utf-8") as fh:
                    docs += [d for d in yaml.safe_load_all(fh) if d is not None]
            except (OSError, yaml.YAMLError) as e:
                raise CliError(f"{f}: {e}") from e
    return docs


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


def _topology(name: str) -> Any:
    from svcnet.lab.topology import build

    return build(name, _state_of(_record(name).get("manifests", [])))


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
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@name_option
@click.option(
    "--backend",
    "backend_name",
    default="iptables",
    show_default=True,
    metavar="NAME",
    help="Kernel backend programming every node.",
)
def lab_up(paths: Sequence[str], name: str, backend_name: str) -> None:
    """Build (or update) a lab from manifest FILEs or directories."""
    from svcnet.lab.control import Lab

    _need_root("svcnet lab up")
    cls = backend_class(backend_name)
    if not cls.capabilities.kernel:
        raise CliError(f"backend {backend_name!r} programs no kernel; the lab needs one")
    docs = _load_documents(paths)
    state = _state_of(docs)
    lab = Lab(name, cls, progress=_say)
    lab.extra["manifests"] = docs
    topo = lab.up(state)
    for why in topo.skipped:
        click.echo(f"skipped {why}")
    click.echo(
        f"lab {name} is up: {len(topo.nodes)} nodes, {len(topo.pods)} pods, "
        f"{backend_name} rules (svcnet lab exec --name {name} pod NS/NAME -- CMD)"
    )


@lab_group.command("down")
@name_option
def lab_down(name: str) -> None:
    """Remove a lab: processes, namespaces, record (also after a crash)."""
    from svcnet.lab.control import down

    _need_root("svcnet lab down")
    removed = down(name)
    click.echo(
        f"lab {name}: removed {len(removed)} namespaces"
        if removed
        else f"lab {name}: nothing to remove"
    )


@lab_group.command("status")
@name_option
def lab_status(name: str) -> None:
    """Show a lab's namespaces and pod servers."""
    from svcnet.kernel import netns
    from svcnet.lab.control import read_record
    from svcnet.lab.topology import prefix

    record = read_record(name)
    spaces = netns.listed(prefix(name)) if os.path.isdir(netns.NETNS_DIR) else []
    if not record and not spaces:
        click.echo(f"lab {name}: down")
        return
    click.echo(f"lab {name}: {len(spaces)} namespaces, backend {record.get('backend')}")
    for ns in spaces:
        click.echo(f"  {ns}")
    for pod, pid in sorted(record.get("servers", {}).items()):
        state = "running" if netns.alive(int(pid)) else "gone"
        click.echo(f"  server {pod}: pid {pid} {state}")
    expected = set(record.get("namespaces", []))
    missing = sorted(expected - set(spaces))
    if missing:
        click.echo("  missing: " + ", ".join(missing))


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
@click.argument("kind", type=click.Choice(["pod", "node", "ext"]))
@click.argument("target", required=False, default="")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name: str, kind: str, target: str, command: Sequence[str]) -> None:
    """Run COMMAND in a pod's, a node's or the external client's namespace.

    e.g. ``svcnet lab exec pod default/client -- curl -s 10.96.0.10``,
    ``svcnet lab exec ext -- curl -s 203.0.113.10``."""
    _need_root("svcnet lab exec")
    if kind == "ext" and target:
        command = (target, *command)
    where = _target_netns(name, kind, target)
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise CliError("no command given")
    os.execvp("ip", ["ip", "netns", "exec", where, *args])


# -- svcnet port-forward -------------------------------------------------------------


def _relay(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join()
    a.close()
    b.close()


@click.command("port-forward")
@name_option
@click.option(
    "--from",
    "origin",
    default="ext",
    show_default=True,
    metavar="WHERE",
    help="Connect from: ext, node/NAME or pod/NS/NAME.",
)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Local address to listen on (host namespace).",
)
@click.argument("destination")
@click.argument("ports")
def port_forward(name: str, origin: str, address: str, destination: str, ports: str) -> None:
    """Forward LOCAL:REMOTE from this host to DESTINATION in a lab.

    DESTINATION is an address (a ClusterIP, a NodePort address, a LoadBalancer
    IP), svc/NS/NAME (its ClusterIP) or pod/NS/NAME; connections are made from
    the external client (default), a node or a pod, through the lab's rules.
    Only a user-space listener is opened on the host. Ctrl-C stops."""
    from svcnet.kernel import netns
    from svcnet.lab.topology import ext_netns

    _need_root("svcnet port-forward")
    local_s, _, remote_s = ports.partition(":")
    try:
        local, remote = int(local_s), int(remote_s or local_s)
    except ValueError as e:
        raise click.BadParameter("PORTS is LOCAL[:REMOTE]") from e
    record = _record(name)
    state = _state_of(record.get("manifests", []))
    if destination.startswith("svc/"):
        ns, _, svc = destination[4:].partition("/")
        service = state.services.get((ns, svc))
        if service is None or not service.cluster_ips:
            raise CliError(f"service {ns}/{svc} has no ClusterIP in lab {name}")
        dst_ip = service.cluster_ips[0]
    elif destination.startswith("pod/"):
        ns, _, pod_name = destination[4:].partition("/")
        pod = state.pods.get((ns, pod_name))
        if pod is None or not pod.pod_ips:
            raise CliError(f"pod {ns}/{pod_name} is not in lab {name}")
        dst_ip = pod.pod_ips[0]
    else:
        dst_ip = destination
    if origin == "ext":
        where = ext_netns(name)
    elif origin.startswith("node/"):
        where = _target_netns(name, "node", origin[5:])
    elif origin.startswith("pod/"):
        where = _target_netns(name, "pod", origin[4:])
    else:
        raise click.BadParameter("--from is ext, node/NAME or pod/NS/NAME")
    server = socket.create_server((address, local), reuse_port=False)
    click.echo(f"forwarding {address}:{local} -> {dst_ip}:{remote} from {where} (Ctrl-C stops)")
    try:
        while True:
            conn, _ = server.accept()
            with netns.entered(where):
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                upstream.settimeout(3.0)
                upstream.connect((dst_ip, remote))
                upstream.settimeout(None)
            except OSError as e:
                click.echo(f"connection to {dst_ip}:{remote} failed: {e}", err=True)
                conn.close()
                upstream.close()
                continue
            threading.Thread(target=_relay, args=(conn, upstream), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


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


COMMANDS: tuple[click.Command, ...] = (lab_group, demo, port_forward)

__all__ = ["COMMANDS", "demo", "lab_group", "port_forward"]
