"""``kubectl apply`` leaves what the control plane wrote alone (pure).

Applying a manifest without a ``status`` replaces what the user wrote, not what
the scheduler, the kubelet and the controllers reported since: a pod stays bound
to its node, Running and Ready, a Deployment keeps its revision. (The API server
gets this from ``status`` being a subresource and from apply's three-way merge,
which keeps fields the user never set.) ``ClusterState.step(Apply)`` itself
replaces whole objects, as scenario files expect; the store's writers call
:func:`keep_reported` first.
"""

from __future__ import annotations

import attrs

from svcnet.model import Deployment, KubeObject, Pod, ReplicaSet

__all__ = ["keep_reported"]


def keep_reported(old: KubeObject | None, new: KubeObject, *, has_status: bool) -> KubeObject:
    """``new`` as applied over ``old``: with no ``status`` in its document
    (``has_status`` False) it keeps what was reported on ``old``."""
    if old is None or has_status or type(old) is not type(new):
        return new
    if isinstance(new, Pod) and isinstance(old, Pod):
        return attrs.evolve(
            new,
            node_name=new.node_name or old.node_name,
            phase=old.phase,
            ready=old.ready,
            ready_since=old.ready_since,
            conditions=new.conditions or old.conditions,
            restarts=old.restarts,
            created=old.created,
            status_reported=old.status_reported,
        )
    if isinstance(new, Deployment) and isinstance(old, Deployment):
        return attrs.evolve(new, revision=new.revision or old.revision)
    if isinstance(new, ReplicaSet) and isinstance(old, ReplicaSet):
        return attrs.evolve(
            new, revision=new.revision or old.revision, created=new.created or old.created
        )
    return new
