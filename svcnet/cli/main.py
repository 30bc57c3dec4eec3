"""The ``svcnet`` command (I/O lives here; the work is done by the library).

One click group, one subcommand (or subgroup) per verb. This module only builds
the group and registers, in one style, the ``COMMANDS`` of each subcommand module
(:mod:`~svcnet.cli.scenario`, :mod:`~svcnet.cli.objects`, :mod:`~svcnet.cli.rollout`,
:mod:`~svcnet.cli.plans`, :mod:`~svcnet.cli.dns`, :mod:`~svcnet.cli.lab`); those share
:mod:`svcnet.cli.common` (and :mod:`svcnet.cli.views`) and never import this
module. User errors — anything svcnet raises on purpose
(:class:`~svcnet.errors.SvcnetError`) — print a single line ``error: ...`` on
stderr and exit 1, never a traceback; an unknown backend exits 2 like any other
usage error. Commands that judge something (``scenario run``) exit 1 when the
verdict is negative.

Subcommands load lazily: a call imports only the module of the command it runs
(``svcnet get`` never imports the backends, the lab or the DNS server), and
``svcnet --help`` imports none, listing each command with its one-line help from
:data:`COMMAND_HELP` (tests/test_cli_startup.py checks it against the commands).
:data:`SUBCOMMAND_MODULES` imports and registers every module when read.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

import click

from svcnet.cli.common import SvcnetGroup, global_namespace_option, store_option

__all__ = ["COMMAND_HELP", "SUBCOMMAND_MODULES", "SvcnetGroup", "cli", "main"]

# the subcommand modules, in registration order (svcnet.cli.<name>)
MODULE_NAMES = (
    "scenario",
    "objects",
    "rollout",
    "plans",
    "dns",
    "lab",
    "forward",
    "agent",
    "lint",
    "audit",
)

# command -> (its module, its one-line help: the first sentence of its docstring)
COMMAND_HELP: dict[str, tuple[str, str]] = {
    "backends": ("scenario", "List the installed backends and whether each needs root."),
    "scenario": ("scenario", "Scenario files: backend-neutral statements of Service behaviour."),
    "apply": ("objects", "Apply every document of the FILEs at once (all or nothing)."),
    "delete": (
        "objects",
        "Delete the objects of FILEs, or KIND (svc, pod, node, endpointslice, deployment, "
        "replicaset) NAMEs, as kubectl does: every one that exists is deleted; each missing "
        "one is reported (``Error from server (NotFound)``, exit 1) unless "
        "--ignore-not-found.",
    ),
    "get": (
        "objects",
        "Show svc, pods, nodes, endpoints, endpointslices, deployments or replicasets (all, "
        "or NAMEs; RESOURCE/NAME works too), in kubectl's tables; with -w, then follow the "
        "store's changes until interrupted.",
    ),
    "describe": (
        "objects",
        "Describe a service (IPs, ports, endpoints per port, policies), a pod (node, IPs, "
        "containers, conditions), a node (addresses, pod CIDRs, its pods) or a deployment "
        "(replicas, strategy, its ReplicaSets).",
    ),
    "config": (
        "objects",
        "Show the cluster configuration, or change it (refused if allocations conflict).",
    ),
    "scale": (
        "rollout",
        "Set a Deployment's or ReplicaSet's replicas (``scale deployment/web --replicas 5``).",
    ),
    "rollout": ("rollout", "Restart a Deployment's pods, or wait for its rollout to finish."),
    "plan": ("plans", "Print the rule plan of each node (or one)."),
    "diff": (
        "plans",
        "What the data plane holds now against the plan compiled from the store, per node, "
        "in the plan's text (a unified diff; lines with + are what the next sync installs).",
    ),
    "sync": (
        "plans",
        "Install the current plan with a backend (memory, a lab's nodes, or --host).",
    ),
    "trace": (
        "plans",
        "What happens to a connection FROM (pod/NS/NAME, node/NAME, IP) TO IP:PORT[/PROTO].",
    ),
    "dns": ("dns", "Answer a DNS QUERY (TYPE: A, AAAA, SRV, CNAME, PTR, TXT; default A)."),
    "lab": ("lab", "A lab: nodes and pods as network namespaces, services as real rules."),
    "demo": (
        "lab",
        "Build a two-node lab, send real connections to a ClusterIP, a NodePort and a "
        "LoadBalancer from a pod, a node and outside, and show who answered.",
    ),
    "port-forward": (
        "forward",
        "Forward local ports to ONE pod of a lab, as kubectl port-forward does.",
    ),
    "exec": (
        "forward",
        "Run COMMAND in POD of a lab, as kubectl exec does: in the pod's network namespace, "
        "with the pod's /etc/resolv.conf; its exit status is COMMAND's.",
    ),
    "agent": ("agent", "Keep NODE's data plane in step with the store, live (kube-proxy's job)."),
    "audit": ("audit", "Check NODE's rules against the reference, probe by probe."),
    "lint": ("lint", "Lint manifests: what FILEs' objects will do that people rarely intend."),
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"svcnet.cli.{name}")


class LazyGroup(SvcnetGroup):
    """The ``svcnet`` group: each command is imported from its module (see
    :data:`COMMAND_HELP`) the first time it is looked up; the help lists them
    without importing any."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_HELP))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_HELP:
            self._register(_module(COMMAND_HELP[cmd_name][0]))
        return self.commands.get(cmd_name)

    def _register(self, module: ModuleType) -> None:
        for command in module.COMMANDS:
            if command.name not in self.commands:
                self.add_command(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(limit)))
            else:
                stub = click.Command(name, help=COMMAND_HELP[name][1])
                rows.append((name, stub.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svcnet", prog_name="svcnet")
@store_option
@global_namespace_option
def cli() -> None:
    """Kubernetes Service networking as a library: state, plans, data planes."""


def __getattr__(name: str) -> Any:
    """``SUBCOMMAND_MODULES``: every subcommand module, imported, its commands
    registered (PEP 562: only what reads it pays for the imports)."""
    if name != "SUBCOMMAND_MODULES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    modules = tuple(_module(m) for m in MODULE_NAMES)
    assert isinstance(cli, LazyGroup)
    for module in modules:
        cli._register(module)
    return modules


SUBCOMMAND_MODULES: tuple[ModuleType, ...]  # (see __getattr__)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``svcnet`` script and ``python -m svcnet``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="svcnet")
    raise SystemExit(0)  # click exits itself; this is for type checkers


if __name__ == "__main__":
    main()
