"""Whether a batch of services can fit the service CIDRs: the step's early refusal.

A batch of new services that need more dynamic ClusterIPs than are free would be
refused by :meth:`ClusterState.step` anyway, after allocating for every service
before the one that finds none (a 70,000-service file took 45 s to be refused).
:func:`refuse_exhausting` counts ahead and raises that same error at once, naming
the service at which the count runs out. The step runs it over its validated
services; ``svcnet apply`` runs it over the services a manifest text claims before
the text is validated (:mod:`svcnet.manifests.precount`), so a range-exhausting file
is refused without building its objects.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence

from svcnet.model import IPFamily, Kind, ObjectKey, Service, ServiceType, ip_family

if typing.TYPE_CHECKING:
    from svcnet.state.cluster import ClusterState

__all__ = ["ServiceClaim", "claim_of", "refuse_exhausting"]


class ServiceClaim(typing.NamedTuple):
    """What one service of a batch asks of the ClusterIP allocator.

    ``dynamic``: it takes a dynamic ClusterIP (no address given, not headless, not
    ExternalName), of ``family`` (None: the cluster's primary family); only the
    first family counts, so a count over claims is a lower bound of what the batch
    takes. (A named tuple: a 70,000-service file makes 70,000 of them, and an
    attrs class takes 2.7 µs each to build, a tuple 0.3 µs.)"""

    namespace: str
    name: str
    dynamic: bool
    family: IPFamily | None = None


def claim_of(svc: Service) -> ServiceClaim:
    """The claim of a validated service."""
    dynamic = not (svc.type is ServiceType.EXTERNAL_NAME or svc.headless or svc.cluster_ips)
    family = svc.ip_families[0] if svc.ip_families else None
    return ServiceClaim(svc.namespace, svc.name, dynamic, family)


def refuse_exhausting(state: ClusterState, claims: Iterable[ServiceClaim]) -> None:
    """Raise the allocator's "no ClusterIP left" error when ``claims`` (a batch's
    services, in the order the step applies them) need more dynamic ClusterIPs than
    ``state`` (a :class:`~svcnet.state.ClusterState`) has free. Services already in
    the state are updates: they take no new address, and give theirs back first."""
    alloc = state._svc_alloc
    if not alloc.families or state.config.api_authority:
        return  # no allocator, or the API server's addresses are taken as given
    batch: Sequence[ServiceClaim] = claims if isinstance(claims, Sequence) else list(claims)
    services = state.services
    free = {fam: pool.free_count for fam, pool in alloc.cluster_ips.items()}
    # updates: they take no new address, and may give theirs back first
    olds = {}
    if services:
        for claim in batch:
            key = (claim.namespace, claim.name)
            old = services.get(key)
            if old is not None:
                olds[key] = old
    for old in olds.values():
        for ip in old.cluster_ips:
            back = ip_family(ip)
            free[back] = free.get(back, 0) + 1
    primary = alloc.families[0]
    left = free.pop(primary, 0)  # the primary family's count, kept apart: most claims
    keys = [(claim.namespace, claim.name) for claim in batch]
    if (
        not olds
        and len(set(keys)) == len(keys)
        and not any(c.dynamic and c.family not in (None, primary) for c in batch)
    ):
        # new services only, each once, all on the primary family (a file applied
        # to a store without them): the claims in order, and the one that runs out
        primaries = [claim for claim in batch if claim.dynamic]
        if len(primaries) > left:
            raise alloc.no_cluster_ip_left(_shown(primaries[max(left, 0)]), primary)
        return
    seen: set[tuple[str, str]] = set()
    for claim in batch:
        key = (claim.namespace, claim.name)
        if key in seen or key in olds:
            continue
        seen.add(key)
        if not claim.dynamic:
            continue
        fam = claim.family
        if fam is None or fam is primary:
            left -= 1
            if left < 0:
                raise alloc.no_cluster_ip_left(_shown(claim), primary)
            continue
        if fam not in free:
            continue  # refused by the step itself, with its own message
        free[fam] -= 1
        if free[fam] < 0:
            raise alloc.no_cluster_ip_left(_shown(claim), fam)


def _shown(claim: ServiceClaim) -> str:
    return str(ObjectKey(Kind.SERVICE, claim.namespace, claim.name))
