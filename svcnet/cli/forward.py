"""``svcnet port-forward`` and ``svcnet exec`` as kubectl's (I/O).

Registered in :mod:`svcnet.cli.main`. Both take ``TYPE/NAME`` (``pod``, ``svc`` or
``service``, ``deployment`` or ``deploy``; a bare NAME is a pod) in the namespace
``-n`` names (``default``); ``TYPE/NS/NAME`` (the README's ``svc/default/web``)
names the namespace itself.

port-forward does what ``kubectl port-forward`` does (kubectl's
``portforward.go`` and ``polymorphichelpers``, read for the behaviour):

* it resolves TYPE/NAME to ONE pod when it starts: the pod itself, or of the pods
  the service's (the Deployment's) selector matches, the most active one as
  kubectl sorts them (assigned, Running, ready, ready the longest, fewest restarts,
  the oldest), here only among ready pods the lab has built;
* each ``[LOCAL:]REMOTE`` pair is translated as kubectl does: for a service, REMOTE
  is a service port (number or name; ``PORT`` alone listens on the service port),
  forwarded to its ``targetPort`` on the chosen pod (a named targetPort resolved on
  the pod's containers); for a pod, a named REMOTE is a container port's name;
  ``:REMOTE`` and ``0:REMOTE`` listen on a random local port; ports only UDP
  serves are refused (port-forward carries TCP);
* every connection goes straight to that pod: a socket made in the pod's network
  namespace connects to its loopback address (the node's address for a
  hostNetwork pod), as the kubelet dials ``localhost:PORT`` in the pod; no service
  rule is involved;
* it prints ``Forwarding from 127.0.0.1:8080 -> 80`` per listener and ``Handling
  connection for 8080`` per connection, and exits 1 (``lost connection to pod``)
  when the pod goes away: deleted or replaced in the lab's store, or its network
  namespace gone. Ctrl-C stops it (exit 0).

A destination given as an address (a ClusterIP, a NodePort address, ...) is
svcnet's own extension: connections are made to it from ``--from`` (the external
client by default), through the lab's rules.

exec runs a command in the pod's network namespace with ``ip netns exec``, which
shows the pod's ``/etc/netns/<ns>/resolv.conf`` as /etc/resolv.conf, so names
resolve as in the pod; the command's exit status is the command's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import selectors
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import attrs
import click

from svcnet.cli.common import CliError, namespace_option
from svcnet.cli.lab import _lab_state, _need_root, _record, _target_netns, _topology, name_option
from svcnet.errors import NotFoundError, ValidationError
from svcnet.model import Deployment, ObjectKey, Pod, PodPhase, Protocol, Service
from svcnet.state import ClusterState

__all__ = [
    "COMMANDS",
    "PortPair",
    "Target",
    "choose_pod",
    "exec_cmd",
    "parse_target",
    "port_forward",
    "split_port",
    "translate_ports",
]

KINDS = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "service": "service",
    "services": "service",
    "svc": "service",
    "deployment": "deployment",
    "deployments": "deployment",
    "deploy": "deployment",
    "deployment.apps": "deployment",
    "deployments.apps": "deployment",
}
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME, as kubectl checks
POLL = 0.2  # seconds between two looks at the pod
_PHASE_RANK = {PodPhase.RUNNING: 0, PodPhase.UNKNOWN: 1, PodPhase.PENDING: 2}


# -- what to forward to (pure) --------------------------------------------------------


@attrs.frozen
class Target:
    """``TYPE/NAME`` resolved to a kind, a namespace and a name."""

    kind: str  # "pod", "service" or "deployment"
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def parse_target(text: str, namespace: str = "default") -> Target:
    """``TYPE/NAME``, ``TYPE/NS/NAME`` or ``NAME`` (a pod) in ``namespace``."""
    parts = text.split("/")
    if len(parts) == 1:
        kind, ns, name = "pod", namespace, parts[0]
    elif len(parts) in (2, 3):
        kind_text = parts[0].lower()
        if kind_text not in KINDS:
            raise ValidationError(
                "port-forward",
                "TYPE/NAME",
                f"unknown resource type {parts[0]!r} in {text!r} "
                "(pod, svc or service, deploy or deployment)",
            )
        kind = KINDS[kind_text]
        ns, name = (namespace, parts[1]) if len(parts) == 2 else (parts[1], parts[2])
    else:
        raise ValidationError("port-forward", "TYPE/NAME", f"{text!r}: use TYPE/NAME or NAME")
    if not name or not ns:
        raise ValidationError("port-forward", "TYPE/NAME", f"{text!r}: a name is missing")
    return Target(kind, ns, name)


@attrs.frozen
class PortPair:
    """One forward: ``local`` (0: a random port) to ``remote`` on the pod; ``spec``
    as the user wrote it."""

    local: int
    remote: int
    spec: str


def _port_number(text: str, spec: str, what: str, low: int) -> int:
    if not text.isdigit() or not low <= int(text) <= 65535:
        raise ValidationError("port-forward", "PORT", f"{spec!r}: {what} must be {low}-65535")
    return int(text)


def split_port(spec: str) -> tuple[int | None, str]:
    """``[LOCAL:]REMOTE`` -> (LOCAL, REMOTE): LOCAL None when not given, 0 for ``:R``
    (a random port); REMOTE a number or a port name, not yet resolved."""
    parts = spec.split(":")
    if len(parts) > 2 or not parts[-1]:
        raise ValidationError("port-forward", "PORT", f"{spec!r}: use [LOCAL:]REMOTE")
    remote = parts[-1]
    if not remote.isdigit() and not PORT_NAME.match(remote):
        raise ValidationError(
            "port-forward", "PORT", f"{spec!r}: remote port {remote!r} is no number and no name"
        )
    if remote.isdigit():
        _port_number(remote, spec, "the remote port", 1)
    if len(parts) == 1:
        return None, remote
    return (_port_number(parts[0], spec, "the local port", 0) if parts[0] else 0), remote


def _pod_ports(pod: Pod) -> str:
    return ", ".join(f"{p.name or '-'} {p.port}/{p.protocol.value}" for p in pod.ports) or "none"


def _svc_ports(svc: Service) -> str:
    return ", ".join(f"{p.name or '-'} {p.port}/{p.protocol.value}" for p in svc.ports) or "none"


def _container_port(pod: Pod, name: str) -> int:
    for cp in pod.ports:
        if cp.name == name:
            return cp.port
    raise ValidationError(
        f"pod {pod.namespace}/{pod.name}",
        "spec.containers[].ports",
        f"no container port named {name!r} (ports: {_pod_ports(pod)})",
    )


def _udp_only(numbers: Sequence[tuple[int, Protocol]]) -> set[int]:
    udp = {n for n, proto in numbers if proto is Protocol.UDP}
    return udp - {n for n, proto in numbers if proto is Protocol.TCP}


def translate_ports(
    specs: Sequence[str], pod: Pod, service: Service | None = None
) -> list[PortPair]:
    """kubectl's port translation: each ``[LOCAL:]REMOTE`` of ``specs`` to the pod
    port it forwards to (through ``service``'s ports and targetPorts when the
    command named a service)."""
    pairs = []
    for spec in specs:
        local, remote = split_port(spec)
        if service is None:
            number = int(remote) if remote.isdigit() else _container_port(pod, remote)
            if number in _udp_only([(p.port, p.protocol) for p in pod.ports]):
                raise ValidationError(
                    f"pod {pod.namespace}/{pod.name}",
                    "spec.containers[].ports",
                    f"port {number} ({remote}) is UDP only: port-forward carries TCP",
                )
            pairs.append(PortPair(number if local is None else local, number, spec))
            continue
        where = f"service {service.namespace}/{service.name}"
        if remote.isdigit():
            port = int(remote)
        else:
            named = [sp for sp in service.ports if sp.name == remote]
            if not named:
                raise ValidationError(
                    where,
                    "spec.ports",
                    f"no port named {remote!r} (ports: {_svc_ports(service)})",
                )
            port = named[0].port
        if port in _udp_only([(sp.port, sp.protocol) for sp in service.ports]):
            raise ValidationError(
                where, "spec.ports", f"port {port} ({remote}) is UDP only: port-forward carries TCP"
            )
        if service.headless:  # kubectl forwards a headless service's port as it is
            target = port
        else:
            declared = [sp for sp in service.ports if sp.port == port]
            if not declared:
                raise ValidationError(
                    where, "spec.ports", f"no port {port} (ports: {_svc_ports(service)})"
                )
            tp = declared[0].target_port
            if tp is None:
                target = port
            elif isinstance(tp, int):
                target = tp
            else:
                target = _container_port(pod, tp)
        pairs.append(PortPair(port if local is None else local, target, spec))
    return pairs


def _selector_of(
    state: ClusterState, target: Target
) -> tuple[Callable[[Pod], bool], Service | Deployment]:
    """A predicate for the pods ``target`` (a service or a Deployment) selects, and
    the object itself; NotFoundError / ValidationError when it cannot select."""
    key = (target.namespace, target.name)
    if target.kind == "service":
        svc = state.services.get(key)
        if svc is None:
            raise NotFoundError(f"service {target.namespace}/{target.name}")
        selector = svc.selector
        if not selector:
            raise ValidationError(
                f"service {target.namespace}/{target.name}",
                "spec.selector",
                "none: port-forward needs a service with a selector (its pods are chosen by it)",
            )
        return (
            lambda p: (
                p.namespace == svc.namespace
                and all(p.labels.get(k) == v for k, v in selector.items())
            )
        ), svc
    deployment = state.deployments.get(key)
    if deployment is None:
        raise NotFoundError(f"deployment {target.namespace}/{target.name}")
    dsel = deployment.selector
    return (lambda p: p.namespace == target.namespace and dsel.matches(p.labels)), deployment


def choose_pod(
    state: ClusterState,
    target: Target,
    in_lab: Callable[[Pod], bool],
    created: Mapping[ObjectKey, float] | None = None,
    need_ready: bool = True,
) -> tuple[Pod, Service | None]:
    """The one pod ``target`` names, and the service when it is one. For a service
    or a Deployment: of the pods it selects that the lab has built, the first in
    kubectl's order (``rank``; ``created``: creation times, from the store, after
    the pods' own logical ones); only a ready pod unless ``need_ready`` is False
    (exec)."""
    if target.kind == "pod":
        pod = state.pods.get((target.namespace, target.name))
        if pod is None:
            raise NotFoundError(f"pod {target.namespace}/{target.name}")
        if pod.phase is not None and pod.phase is not PodPhase.RUNNING:
            raise ValidationError(
                f"pod {target.namespace}/{target.name}",
                "status.phase",
                f"the pod is not running (phase {pod.phase.value})",
            )
        return pod, None
    selects, obj = _selector_of(state, target)
    matched = [p for p in state.pods.values() if selects(p)]
    where = f"{target.kind} {target.namespace}/{target.name}"
    if not matched:
        raise ValidationError(where, "spec.selector", "no pod matches it")
    built = [p for p in matched if in_lab(p)]
    usable = [p for p in built if (p.ready and not p.terminating) or not need_ready]
    if not usable:
        states = ", ".join(
            f"{p.name} {'not in the lab' if p not in built else 'not ready'}"
            for p in sorted(matched, key=lambda p: p.name)
        )
        raise ValidationError(where, "spec.selector", f"no ready pod ({states})")
    when = created or {}

    def rank(p: Pod) -> tuple[object, ...]:
        """kubectl's choice (ActivePods, most active first): assigned, Running,
        ready, ready the longest, fewest restarts, the oldest; then the name."""
        ready = p.ready and not p.terminating
        phase = _PHASE_RANK.get(p.phase, 3) if p.phase is not None else (0 if ready else 2)
        return (
            not p.node_name,
            phase,
            not ready,
            (p.ready_since == 0, p.ready_since),
            p.restarts,
            (p.created == 0, p.created),
            when.get(p.key, math.inf),
            p.name,
        )

    return min(usable, key=rank), (obj if isinstance(obj, Service) else None)


# -- the lab: which state, which pods are built, is the pod still there (I/O) ----------


@attrs.frozen
class Resolved:
    """The chosen pod in lab ``lab``, where its sockets are made and dialled."""

    lab: str
    pod: Pod
    netns: str  # the pod's namespace (its node's for a hostNetwork pod)
    address: str  # what a socket in ``netns`` dials: loopback, or the node's address
    store: str | None  # the store the lab follows (None: the lab's own state file)
    version: int  # the store's version the choice was made at


def _cluster(lab: str) -> tuple[ClusterState, str | None, int, dict[ObjectKey, float]]:
    """The state the lab follows: its store's (as the API server answers kubectl),
    or, for a lab bound to none, the state it was last made to match."""
    from svcnet.store import Store

    record = _record(lab)
    path = record.get("store")
    if isinstance(path, str) and path:
        store = Store(path)
        listing = store.list()
        return listing.state, path, listing.version, store.created()
    return _lab_state(lab), None, 0, {}


def resolve(lab: str, target: Target, need_ready: bool = True) -> tuple[Resolved, Service | None]:
    """``target`` resolved to one pod the lab has built (NotFoundError,
    ValidationError or CliError naming what is missing)."""
    from svcnet.kernel import netns

    state, store, version, created = _cluster(lab)
    topo = _topology(lab)

    def built(pod: Pod) -> bool:
        lab_pod = topo.pod(f"{pod.namespace}/{pod.name}")
        return (
            lab_pod is not None
            and (pod.host_network or lab_pod.ip in pod.pod_ips)
            and netns.exists(lab_pod.netns)
        )

    pod, service = choose_pod(state, target, built, created, need_ready)
    lab_pod = topo.pod(f"{pod.namespace}/{pod.name}")
    if lab_pod is None or not built(pod):
        raise CliError(f"pod {pod.namespace}/{pod.name} is not in lab {lab}")
    address = lab_pod.ip if lab_pod.host_network else "127.0.0.1"
    return Resolved(lab, pod, lab_pod.netns, address, store, version), service


class PodWatch:
    """Tells when the pod a forward was set up for goes away: deleted or replaced
    (another address or node) in the store, or its network namespace gone."""

    def __init__(self, chosen: Resolved) -> None:
        from svcnet.store import Store

        self.chosen = chosen
        self.store = Store(chosen.store) if chosen.store else None
        self.poller = self.store.poller(chosen.version) if self.store else None

    def _changed(self, now: Pod | None) -> str | None:
        pod = self.chosen.pod
        if now is None:
            return "deleted"
        if (now.pod_ips, now.node_name) != (pod.pod_ips, pod.node_name):
            return "replaced"
        return None

    def gone(self) -> str | None:
        """Why the pod is gone, or None while it is there."""
        from svcnet.kernel import netns
        from svcnet.store import ChangeType, WatchExpired

        pod = self.chosen.pod
        if not netns.exists(self.chosen.netns):
            return f"its network namespace {self.chosen.netns} is gone"
        if self.poller is None or self.store is None:
            return None
        try:
            changes = self.poller.poll()
        except WatchExpired:  # fell behind a compacted log: look at the pod itself
            listing = self.store.list()
            self.poller.close()
            self.poller = self.store.poller(listing.version)
            why = self._changed(listing.state.pods.get((pod.namespace, pod.name)))
            return f"{why} in the store" if why else None
        for change in changes:
            if change.key == pod.key:
                now = None if change.type is ChangeType.DELETED else change.object
                why = self._changed(now if isinstance(now, Pod) else None)
                if why:
                    return f"{why} in the store"
        return None

    def close(self) -> None:
        if self.poller is not None:
            self.poller.close()


# -- forwarding (I/O) ----------------------------------------------------------------


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until each side has closed its half."""

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


def _addresses(value: str) -> list[str]:
    """``--address``: comma-separated IP addresses or ``localhost`` (127.0.0.1)."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if item == "localhost":
            item = "127.0.0.1"
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ValidationError(
                "port-forward", "--address", f"{item!r}: an IP address or localhost"
            ) from None
        if item not in out:
            out.append(item)
    return out


def listen(
    addresses: Sequence[str], pairs: Sequence[PortPair]
) -> list[tuple[socket.socket, PortPair]]:
    """One listener per address and pair (a random port for local 0, the same
    random port on every address); CliError naming the address and port in use."""
    out: list[tuple[socket.socket, PortPair]] = []
    try:
        for pair in pairs:
            port = pair.local
            for address in addresses:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                try:
                    sock = socket.create_server((address, port), family=family)
                except OSError as e:
                    shown = f"[{address}]" if family == socket.AF_INET6 else address
                    why = (e.strerror or str(e)).lower()
                    raise CliError(
                        f"unable to listen on {shown}:{port} (for {pair.spec}): {why}"
                    ) from None
                out.append((sock, attrs.evolve(pair, local=sock.getsockname()[1])))
                port = sock.getsockname()[1]
    except BaseException:
        for sock, _ in out:
            sock.close()
        raise
    return out


def _shown(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def _connect(where: str, address: str, port: int) -> socket.socket:
    """A TCP connection to ``address:port`` from a socket made in namespace ``where``."""
    from svcnet.kernel import netns

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with netns.entered(where):
        upstream = socket.socket(family, socket.SOCK_STREAM)
    try:
        upstream.settimeout(5.0)
        upstream.connect((address, port))
        upstream.settimeout(None)
    except OSError:
        upstream.close()
        raise
    return upstream


def _handle(conn: socket.socket, where: str, address: str, pair: PortPair, to: str) -> None:
    try:
        upstream = _connect(where, address, pair.remote)
    except Exception as e:  # one failed connection ends that connection only, as kubectl's
        click.echo(f"error forwarding port {pair.remote} to {to}: {e}", err=True)
        conn.close()
        return
    _relay(conn, upstream)


def forward(
    listeners: Sequence[tuple[socket.socket, PortPair]],
    where: str,
    address: str,
    to: str,
    gone: Callable[[], str | None] = lambda: None,
) -> str:
    """Accept on every listener and relay each connection to ``address`` from a
    socket made in ``where``; look at ``gone`` every :data:`POLL` seconds and return
    its answer once it has one."""
    sel = selectors.DefaultSelector()
    for sock, pair in listeners:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, pair)
    next_look = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= next_look:
                why = gone()
                if why:
                    return why
                next_look = now + POLL
            for key, _ in sel.select(timeout=max(0.0, next_look - now)):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                conn.setblocking(True)
                accepted: PortPair = key.data
                click.echo(f"Handling connection for {accepted.local}")
                threading.Thread(
                    target=_handle, args=(conn, where, address, accepted, to), daemon=True
                ).start()
    finally:
        sel.close()
        for sock, _ in listeners:
            sock.close()


# -- svcnet port-forward --------------------------------------------------------------


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@click.command("port-forward")
@name_option
@namespace_option
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Addresses to listen on in this host's namespace (comma-separated IP "
    "addresses or localhost).",
)
@click.option(
    "--from",
    "origin",
    default="ext",
    show_default=True,
    metavar="WHERE",
    help="For an address destination only: connect from ext, node/NAME or pod/NS/NAME.",
)
@click.argument("destination", metavar="TYPE/NAME")
@click.argument("ports", nargs=-1, required=True, metavar="[LOCAL:]REMOTE...")
def port_forward(
    name: str, namespace: str, address: str, origin: str, destination: str, ports: Sequence[str]
) -> None:
    """Forward local ports to ONE pod of a lab, as kubectl port-forward does.

    TYPE/NAME is pod/NAME (or NAME), svc/NAME or deployment/NAME in namespace -n
    (svc/NS/NAME works too); a service or a Deployment picks one ready pod when the
    command starts and every connection goes to it. Each [LOCAL:]REMOTE listens on
    LOCAL (random for :REMOTE, the same as REMOTE for PORT alone) and forwards to
    REMOTE: a service port (number or name) mapped to its targetPort on the pod, or
    a pod's container port (number or name). Exits 1 when the pod goes away; Ctrl-C
    stops.

    An address as the destination (a ClusterIP, a NodePort address) forwards
    through the lab's rules instead, from --from (the external client by default).
    """
    _need_root("svcnet port-forward")
    addresses = _addresses(address)
    if _is_address(destination):
        _forward_to_address(name, addresses, origin, destination, ports)
        return
    if origin != "ext":
        raise CliError("--from applies to an address destination only (TYPE/NAME goes to the pod)")
    target = parse_target(destination, namespace)
    chosen, service = resolve(name, target)
    pairs = translate_ports(ports, chosen.pod, service)
    listeners = listen(addresses, pairs)
    pod = f"pod {chosen.pod.namespace}/{chosen.pod.name}"
    for sock, pair in listeners:
        click.echo(f"Forwarding from {_shown(sock)} -> {pair.remote}")
    if target.kind != "pod":
        click.echo(f"{target}: forwarding to {pod}", err=True)
    watch = PodWatch(chosen)
    try:
        why = forward(listeners, chosen.netns, chosen.address, pod, watch.gone)
    except KeyboardInterrupt:
        return
    finally:
        watch.close()
    raise CliError(f"lost connection to {pod}: {why}")


def _forward_to_address(
    name: str, addresses: Sequence[str], origin: str, destination: str, ports: Sequence[str]
) -> None:
    from svcnet.lab.topology import ext_netns

    pairs = []
    for spec in ports:
        local, remote = split_port(spec)
        if not remote.isdigit():
            raise ValidationError("port-forward", "PORT", f"{spec!r}: a port name needs TYPE/NAME")
        pairs.append(PortPair(int(remote) if local is None else local, int(remote), spec))
    if origin == "ext":
        where = ext_netns(name)
        _record(name)
    elif origin.startswith("node/"):
        where = _target_netns(name, "node", origin[5:])
    elif origin.startswith("pod/"):
        where = _target_netns(name, "pod", origin[4:])
    else:
        raise CliError("--from is ext, node/NAME or pod/NS/NAME")
    listeners = listen(addresses, pairs)
    for sock, pair in listeners:
        click.echo(f"Forwarding from {_shown(sock)} -> {destination}:{pair.remote} (from {where})")
    with contextlib.suppress(KeyboardInterrupt):
        forward(listeners, where, destination, destination)


# -- svcnet exec ----------------------------------------------------------------------


def exec_argv(where: str, command: Sequence[str]) -> list[str]:
    """``ip netns exec WHERE COMMAND...`` (the command after a leading ``--``);
    CliError when there is none or it is not found (exit 127, as a shell's)."""
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise CliError("no command given (svcnet exec POD -- COMMAND...)")
    if shutil.which(args[0]) is None:
        raise CliError(f'exec: "{args[0]}": executable file not found in $PATH', exit_code=127)
    return ["ip", "netns", "exec", where, *args]


@click.command("exec", context_settings={"ignore_unknown_options": True})
@name_option
@namespace_option
@click.option("-i", "--stdin", is_flag=True, help="Accepted as kubectl's (stdin is always passed).")
@click.option("-t", "--tty", is_flag=True, help="Accepted as kubectl's (the terminal is passed).")
@click.argument("pod", metavar="POD")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(
    name: str, namespace: str, stdin: bool, tty: bool, pod: str, command: Sequence[str]
) -> None:
    """Run COMMAND in POD of a lab, as kubectl exec does: in the pod's network
    namespace, with the pod's /etc/resolv.conf; its exit status is COMMAND's.

    POD is NAME, pod/NAME, svc/NAME or deployment/NAME (one of its pods) in
    namespace -n, e.g. ``svcnet exec client -- curl -s http://web``."""
    del stdin, tty
    _need_root("svcnet exec")
    chosen, _ = resolve(name, parse_target(pod, namespace), need_ready=False)
    argv = exec_argv(chosen.netns, command)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


COMMANDS: tuple[click.Command, ...] = (port_forward, exec_cmd)
