"""The API server's authority (``ClusterConfig.authority == "api"``): objects as given.

On a real cluster the API server has already allocated every address and port
and checked every range; svcnet, proxying only, takes them as they are. These
helpers are what :mod:`svcnet.state.cluster` does instead of allocating (pure).
"""

from __future__ import annotations

import attrs

from svcnet.errors import ValidationError
from svcnet.model import ClusterConfig, Service, ServiceType, ip_family

__all__ = ["as_given", "check_switch"]


def as_given(svc: Service) -> Service:
    """``svc`` as the API server stored it, with the derived fields svcnet's
    allocator would have filled: no ClusterIP for ExternalName and headless
    services, the LoadBalancer addresses from ``status.loadBalancer.ingress``
    (none for other types), the IP families of the ClusterIPs when unset."""
    if svc.type is ServiceType.EXTERNAL_NAME:
        return attrs.evolve(svc, cluster_ips=(), headless=False, load_balancer_ips=())
    cluster_ips = () if svc.headless else svc.cluster_ips
    families = svc.ip_families or tuple(ip_family(ip) for ip in cluster_ips)
    lb_ips = svc.status_ingress if svc.type is ServiceType.LOAD_BALANCER else ()
    if (cluster_ips, families, lb_ips) == (svc.cluster_ips, svc.ip_families, svc.load_balancer_ips):
        return svc
    return attrs.evolve(
        svc, cluster_ips=cluster_ips, ip_families=families, load_balancer_ips=lb_ips
    )


def check_switch(old: ClusterConfig, new: ClusterConfig, empty: bool) -> None:
    """Refuse changing the authority of a state that holds objects: what one
    authority allocated (or took as given) the other cannot account for."""
    if old.authority is not new.authority and not empty:
        raise ValidationError(
            "ClusterConfig",
            "authority",
            f"cannot change from {old.authority.value!r} to {new.authority.value!r} "
            "while the state holds objects (start from an empty state)",
            value=new.authority.value,
        )
