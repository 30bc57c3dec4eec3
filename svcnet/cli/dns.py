"""``svcnet dns QUERY [TYPE] [--from NS/POD] -f FILE...``: answer a DNS query from
the cluster state (I/O: reads manifests; the answer comes from :mod:`svcnet.dns`).

The state is the CLI's store (``svcnet --store PATH``, see :mod:`svcnet.store`),
or, overriding it, the manifests given with ``-f`` (files or ``-`` for stdin,
applied in order, all at once).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from typing import Any

import click

from svcnet import dns as _dns
from svcnet import manifests
from svcnet.cli.common import current_store
from svcnet.errors import NotFoundError
from svcnet.model import KubeObject
from svcnet.state import Apply, ClusterState

QTYPES = ("A", "AAAA", "SRV", "CNAME", "PTR", "TXT")


def _state_from_files(files: Sequence[str]) -> ClusterState:
    objects: list[KubeObject] = []
    for path in files:
        if path == "-":
            text, name = sys.stdin.read(), "<stdin>"
        else:
            with open(path, encoding="utf-8") as f:
                text, name = f.read(), path
        objects.extend(manifests.load(text, filename=name))
    state = ClusterState.empty()
    items: Any = tuple(objects)  # attrs types Apply's converter=tuple parameter as Iterable[_T_co]
    return state.step(Apply(items)) if objects else state


def _address(text: str) -> str | None:
    """``text`` as an IP address (normalised), or None when it is a name."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@click.command("dns")
@click.argument("query")
@click.argument("qtype", metavar="[TYPE]", required=False, type=click.Choice(QTYPES, False))
@click.option(
    "--from",
    "from_pod",
    metavar="NS/POD",
    help="Resolve as this pod's resolver does (its namespace's search path, ndots 5).",
)
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="Build the state from these manifests instead of the store (repeatable; '-' = stdin).",
)
def dns_cmd(query: str, qtype: str | None, from_pod: str | None, files: Sequence[str]) -> None:
    """Answer a DNS QUERY (TYPE: A, AAAA, SRV, CNAME, PTR, TXT; default A).

    QUERY may be an IP address: its reverse name is asked (10.96.0.10 ->
    10.0.96.10.in-addr.arpa), for PTR by default. Prints one record per line,
    after the CNAME links an alias followed ("NAME. CNAME TARGET.");
    NXDOMAIN or REFUSED is printed on stderr with exit status 1; an existing
    name without such records prints nothing.
    """
    address = _address(query)
    if address is not None:
        query = _dns.reverse_name(address) + "."
    qtype = (qtype or ("PTR" if address is not None else "A")).upper()
    state = _state_from_files(files) if files else current_store().load()
    pod = None
    if from_pod is not None:
        ns, sep, name = from_pod.partition("/")
        if not sep or not ns or not name:
            raise click.BadParameter("expected NS/POD", param_hint="--from")
        pod = state.pods.get((ns, name))
        if pod is None:
            raise NotFoundError(f"Pod {ns}/{name}")
    answer = _dns.resolve(state, query, qtype, from_pod=pod)
    if answer.rcode != _dns.NOERROR:
        click.echo(f"{answer.rcode} {answer.name}", err=True)
        click.get_current_context().exit(1)
    for owner, target in answer.chain:
        click.echo(f"{owner}. CNAME {target}")
    for record in answer.records:
        click.echo(record)


COMMANDS: tuple[click.Command, ...] = (dns_cmd,)
