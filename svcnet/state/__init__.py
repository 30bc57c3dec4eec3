"""Cluster state and its pure transitions: events, selectors, endpoints, allocation."""

from __future__ import annotations

from svcnet.state.cluster import (
    LOG_SIZE,
    Apply,
    ClusterState,
    Configure,
    Delete,
    EndpointMap,
    Event,
    NsName,
    Touched,
    step,
)

__all__ = [
    "LOG_SIZE",
    "Apply",
    "ClusterState",
    "Configure",
    "Delete",
    "EndpointMap",
    "Event",
    "NsName",
    "Touched",
    "step",
]
