"""kubectl's workload verbs over the CLI's store (I/O): ``scale`` and ``rollout
restart|status`` for Deployments (and ``scale`` for ReplicaSets).

``scale`` and ``rollout restart`` change the object in one
:meth:`svcnet.store.Store.modify` (the store's controllers, :mod:`svcnet.workloads`,
then make or remove the pods); ``rollout status`` reads the store and, with
``--watch`` (the default), follows its changes until the rollout is done or
``--timeout`` passes.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import attrs
import click

from svcnet.cli.common import CliError, existing_store, namespace_option
from svcnet.cli.kubectl_views import plural, resource_name
from svcnet.cli.views import rollout_status, workload_map
from svcnet.errors import ValidationError
from svcnet.state import Apply
from svcnet.store import Store, WatchExpired

__all__ = ["COMMANDS"]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_KINDS = {
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "deployment.apps": "Deployment",
    "rs": "ReplicaSet", "replicaset": "ReplicaSet", "replicasets": "ReplicaSet",
    "replicaset.apps": "ReplicaSet",
}  # fmt: skip


def _target(resource: str, name: str | None, allowed: tuple[str, ...]) -> tuple[str, str]:
    """(kind, name) of ``TYPE/NAME`` or ``TYPE NAME``; usage error otherwise."""
    if "/" in resource and name is None:
        resource, _, name = resource.partition("/")
    kind = _KINDS.get(resource.lower())
    if kind is None or kind not in allowed:
        spelled = " or ".join(k.lower() for k in allowed)
        raise click.BadParameter(f"{resource!r}: expected {spelled}", param_hint="TYPE/NAME")
    if not name:
        raise click.UsageError("give TYPE/NAME or TYPE NAME")
    return kind, name


class _NotFound(CliError):
    """kubectl's NotFound line (no ``error:`` prefix), exit 1."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'Error from server (NotFound): {plural(kind)} "{name}" not found')

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


def _change(kind: str, name: str, namespace: str, **changes: Any) -> None:
    """Replace the workload with ``changes`` applied, in one store transaction."""
    with existing_store().modify() as session:
        state = session.state
        obj = workload_map(state, kind).get((namespace, name))
        if obj is None:
            raise _NotFound(kind, name)
        session.save(state.step(Apply((attrs.evolve(obj, **changes),))))


@click.command("scale")
@click.argument("resource", metavar="TYPE/NAME")
@click.argument("name", required=False)
@click.option("--replicas", type=int, required=True, help="The number of replicas wanted.")
@namespace_option
def scale_cmd(resource: str, name: str | None, replicas: int, namespace: str) -> None:
    """Set a Deployment's or ReplicaSet's replicas (``scale deployment/web --replicas 5``)."""
    kind, name = _target(resource, name, ("Deployment", "ReplicaSet"))
    if replicas < 0:
        raise ValidationError(
            f"{kind} {namespace}/{name}", "spec.replicas",
            f"Invalid value: {replicas}: must be greater than or equal to 0",
        )  # fmt: skip
    _change(kind, name, namespace, replicas=replicas)
    click.echo(f"{resource_name(kind)}/{name} scaled")


@click.group("rollout")
def rollout_group() -> None:
    """Restart a Deployment's pods, or wait for its rollout to finish."""


@rollout_group.command("restart")
@click.argument("resource", metavar="TYPE/NAME")
@click.argument("name", required=False)
@namespace_option
def restart_cmd(resource: str, name: str | None, namespace: str) -> None:
    """Replace every pod of a Deployment, as kubectl does: stamp the pod template with
    ``kubectl.kubernetes.io/restartedAt`` (a new template: a new ReplicaSet)."""
    kind, name = _target(resource, name, ("Deployment",))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with existing_store().modify() as session:
        state = session.state
        dep = workload_map(state, kind).get((namespace, name))
        if dep is None:
            raise _NotFound(kind, name)
        annotations = {**dep.template.annotations, RESTARTED_AT: now}
        template = attrs.evolve(dep.template, annotations=annotations)
        session.save(state.step(Apply((attrs.evolve(dep, template=template),))))
    click.echo(f"{resource_name(kind)}/{name} restarted")


def _status(store: Store, namespace: str, name: str) -> tuple[int, bool, str]:
    listing = store.list()
    dep = workload_map(listing.state, "Deployment").get((namespace, name))
    if dep is None:
        raise _NotFound("Deployment", name)
    done, line = rollout_status(listing.state, dep)
    return listing.version, done, line


@rollout_group.command("status")
@click.argument("resource", metavar="TYPE/NAME")
@click.argument("name", required=False)
@namespace_option
@click.option(
    "-w/-W", "--watch/--no-watch", default=True, show_default=True,
    help="Wait for the rollout to finish (else print the status once).",
)  # fmt: skip
@click.option(
    "--timeout", type=float, default=0.0, show_default=True,
    help="Give up after this many seconds (0: wait as long as it takes).",
)  # fmt: skip
def status_cmd(
    resource: str, name: str | None, namespace: str, watch: bool, timeout: float
) -> None:
    """Print a Deployment's rollout progress as kubectl does, until it has rolled
    out (exit 1 if --timeout passes first)."""
    _, name = _target(resource, name, ("Deployment",))
    store = existing_store()
    version, done, line = _status(store, namespace, name)
    click.echo(line)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while watch and not done:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise CliError("timed out waiting for the condition")
        try:
            for _ in store.watch(version, timeout=left):
                break  # something changed: look again
        except WatchExpired:
            pass
        version, done, now = _status(store, namespace, name)
        if now != line:
            click.echo(now)
            line = now


COMMANDS: tuple[click.Command, ...] = (scale_cmd, rollout_group)
