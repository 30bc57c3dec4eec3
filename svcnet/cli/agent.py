"""``svcnet agent``: run the node agent (:mod:`svcnet.agent`) in the foreground (I/O).

``svcnet [--store PATH] agent --node NAME --backend NAME (--netns NS | --host)``
lists the store, installs the node's plan, then follows the store's changes until
SIGTERM or SIGINT (exit 0, the rules stay; ``--cleanup`` removes them). A kernel
backend needs exactly one of ``--netns`` (an existing network namespace, a lab
node's say) and ``--host`` (this host's own root namespace, never implied); the
memory backend programs no kernel and needs neither. One agent per namespace: a
second one exits 1 naming the first one's pid. In the programmed namespace it also
serves ``/healthz`` and ``/livez`` (``--healthz-bind-address``), ``/metrics``
(``--metrics-bind-address``) and the health-check node ports, and cleans stale UDP
conntrack flows after each sync (``--no-conntrack-cleanup`` turns that off).

``--source kubernetes [--kubeconfig PATH] [--service-cidr CIDR]... [--cluster-cidr
CIDR]...`` reads a Kubernetes API server instead of the store
(:class:`svcnet.agent.kube.KubeSource`; the in-cluster configuration when no
kubeconfig is given), as a kube-proxy replacement.
Registered in :mod:`svcnet.cli.main`; the reference is ``docs/reference/agent.md``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import types
from typing import TYPE_CHECKING, Any

import click

from svcnet.cli.common import CliError, backend_class, current_store
from svcnet.errors import SvcnetError

if TYPE_CHECKING:
    from svcnet.agent.source import Source

NETNS_DIR = "/run/netns"  # where `ip netns add` puts the namespaces it names
HEALTHZ_ADDRESS = "0.0.0.0:10256"  # kube-proxy's --healthz-bind-address default
METRICS_ADDRESS = "127.0.0.1:10249"  # kube-proxy's --metrics-bind-address default


def _setup_logging(verbose: bool) -> tuple[logging.Logger, logging.Handler]:
    """Per-sync lines (INFO) on stderr; with -v each change too (DEBUG)."""
    from svcnet.agent import LOGGER

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return logger, handler


@click.command("agent")
@click.option("--node", required=True, metavar="NAME", help="The node this agent programs.")
@click.option("--backend", "backend_name", required=True, metavar="NAME", help="The data plane.")
@click.option(
    "--netns", metavar="NS", help="Program this network namespace (it must exist already)."
)
@click.option("--host", is_flag=True, help="Program this host's root network namespace (!).")
@click.option(
    "--min-sync-period",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="At most one sync per this many seconds; a burst coalesces (default 0.02).",
)
@click.option(
    "--sync-period",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="A full resync at least this often, repairing drift (default 30).",
)
@click.option(
    "--status-file",
    metavar="PATH",
    help="Where to write the status after each sync (default /run/svcnet/agents/<NS>.json).",
)
@click.option(
    "--run-dir",
    metavar="DIR",
    default=None,
    help="The directory of the agents' lock and status files (default /run/svcnet/agents).",
)
@click.option(
    "--healthz-bind-address",
    metavar="HOST:PORT",
    default=None,
    help="Serve /healthz and /livez here, in the node's namespace (kube-proxy's "
    "default 0.0.0.0:10256 for a kernel backend; '' turns it off).",
)
@click.option(
    "--metrics-bind-address",
    metavar="HOST:PORT",
    default=None,
    help="Serve Prometheus /metrics here, in the node's namespace (kube-proxy's "
    "default 127.0.0.1:10249 for a kernel backend; '' turns it off).",
)
@click.option(
    "--health-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="/healthz turns 503 when a change waits longer than this (default 2 x --sync-period).",
)
@click.option(
    "--conntrack-cleanup/--no-conntrack-cleanup",
    default=True,
    help="After each sync delete UDP flows to endpoints that no longer serve (default on).",
)
@click.option(
    "--source",
    "source_name",
    type=click.Choice(["store", "kubernetes"]),
    default="store",
    help="Where the cluster is read: svcnet's store (default) or a Kubernetes API server.",
)
@click.option(
    "--kubeconfig",
    metavar="PATH",
    help="With --source kubernetes: this kubeconfig (default: the in-cluster service account).",
)
@click.option(
    "--service-cidr",
    "service_cidrs",
    multiple=True,
    metavar="CIDR",
    help="With --source kubernetes: the service CIDR(s), one per family (kube-proxy's flag).",
)
@click.option(
    "--cluster-cidr",
    "cluster_cidrs",
    multiple=True,
    metavar="CIDR",
    help="With --source kubernetes: the pod CIDR(s) (kube-proxy's --cluster-cidr).",
)
@click.option("--cleanup", is_flag=True, help="Remove the rules on exit (default: they stay).")
@click.option("-v", "--verbose", is_flag=True, help="Log each change too, not only each sync.")
def agent_cmd(
    node: str,
    backend_name: str,
    netns: str | None,
    host: bool,
    min_sync_period: float | None,
    sync_period: float | None,
    status_file: str | None,
    run_dir: str | None,
    healthz_bind_address: str | None,
    metrics_bind_address: str | None,
    health_timeout: float | None,
    conntrack_cleanup: bool,
    source_name: str,
    kubeconfig: str | None,
    service_cidrs: tuple[str, ...],
    cluster_cidrs: tuple[str, ...],
    cleanup: bool,
    verbose: bool,
) -> None:
    """Keep NODE's data plane in step with the store, live (kube-proxy's job).

    Lists the store, installs NODE's plan, then applies each change as it is made
    (bursts coalesce), with a full resync every --sync-period and after a failed
    sync. SIGTERM or SIGINT ends it (exit 0); the rules stay unless --cleanup.
    """
    from svcnet.agent import AGENT_DIR, MIN_SYNC_PERIOD, SYNC_PERIOD, Agent

    cls = backend_class(backend_name)
    if netns is not None and host:
        raise click.UsageError("give --netns NS or --host, not both")
    if cls.capabilities.kernel and netns is None and not host:
        raise click.UsageError(
            f"backend {backend_name!r} programs a kernel: give --netns NS (a node's network "
            "namespace) or --host (this host's root namespace)"
        )
    if netns is not None and not os.path.exists(os.path.join(NETNS_DIR, netns)):
        raise CliError(f"network namespace {netns!r} does not exist (ip netns list)")
    from svcnet.agent.health import parse_address

    kernel = cls.capabilities.kernel
    if healthz_bind_address is None:
        healthz_bind_address = HEALTHZ_ADDRESS if kernel else ""
    if metrics_bind_address is None:
        metrics_bind_address = METRICS_ADDRESS if kernel else ""
    for option, value in (
        ("--healthz-bind-address", healthz_bind_address),
        ("--metrics-bind-address", metrics_bind_address),
    ):
        if value:
            try:
                parse_address(value)
            except SvcnetError as e:
                raise click.BadParameter(str(e), param_hint=option) from None
    if source_name != "kubernetes" and (kubeconfig or service_cidrs or cluster_cidrs):
        raise click.UsageError(
            "--kubeconfig, --service-cidr and --cluster-cidr go with --source kubernetes"
        )
    logger, handler = _setup_logging(verbose)
    try:
        source = _source(source_name, kubeconfig, service_cidrs, cluster_cidrs)
    except SvcnetError as e:
        logger.removeHandler(handler)
        raise CliError(str(e)) from None
    backend = cls(node, netns=netns) if netns is not None else cls(node)
    first: list[bool] = []

    def on_sync(report: Any) -> None:
        if not first:
            first.append(True)
            click.echo(
                f"agent: node {node} programmed store version {report.version} "
                f"({report.services} services) in {report.duration * 1000:.0f} ms",
                err=True,
            )

    try:
        agent = Agent(
            source,
            node,
            backend,
            min_sync_period=MIN_SYNC_PERIOD if min_sync_period is None else min_sync_period,
            sync_period=SYNC_PERIOD if sync_period is None else sync_period,
            run_dir=run_dir or AGENT_DIR,
            status_file=status_file,
            cleanup=cleanup,
            on_sync=on_sync,
            freeze_heap=True,  # this process is only an agent
            conntrack_cleanup=conntrack_cleanup and kernel,
            healthz_address=healthz_bind_address or None,
            metrics_address=metrics_bind_address or None,
            health_timeout=health_timeout,
        )

        def stop(signum: int, frame: types.FrameType | None) -> None:
            agent.stop()  # never blocks: safe here

        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            agent.run()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    finally:
        backend.close()
        close = getattr(source, "close", None)
        if close is not None:
            close()
        logger.removeHandler(handler)


def _source(
    name: str,
    kubeconfig: str | None,
    service_cidrs: tuple[str, ...],
    cluster_cidrs: tuple[str, ...],
) -> Source:
    """The agent's source: the store, or the Kubernetes API (kube-proxy's flags)."""
    if name != "kubernetes":
        from svcnet.agent import StoreSource

        return StoreSource(current_store())
    from svcnet.agent.kube import KubeSource
    from svcnet.model import ClusterConfig

    default = ClusterConfig()
    return KubeSource(
        kubeconfig,
        service_cidrs=service_cidrs or default.service_cidrs,
        cluster_cidrs=cluster_cidrs or default.cluster_cidrs,
    )


COMMANDS: tuple[click.Command, ...] = (agent_cmd,)

__all__ = ["COMMANDS", "agent_cmd"]
