"""Deployments, ReplicaSets, the simulated scheduler and kubelet (svcnet.workloads):
kubernetes.io's Deployment + Service settles into ready pods and endpoints, scaling
picks victims in Kubernetes' order, a rollout restart keeps maxSurge/maxUnavailable
at every round, Recreate never mixes templates, nodeSelector and unschedulable pods,
garbage collection, manifests and refusals."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import pytest

from svcnet import workloads
from svcnet.errors import ValidationError
from svcnet.manifests import load, parse_object, to_manifest
from svcnet.model import (
    DELETION_COST_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    RESTARTED_AT_ANNOTATION,
    Deployment,
    Kind,
    Node,
    ObjectKey,
    Pod,
    PodPhase,
    ProbeHandler,
    ReplicaSet,
    StrategyType,
)
from svcnet.state import Apply, ClusterState, Delete
from svcnet.store import decode, encode, replay
from svcnet.workloads import names

NODES = """\
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {disk: hdd}}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {disk: ssd}}
spec: {podCIDR: 10.244.2.0/24}
"""

# kubernetes.io/docs/concepts/workloads/controllers/deployment/ and
# kubernetes.io/docs/concepts/services-networking/service/, as written there
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app: nginx
  ports:
    - protocol: TCP
      port: 80
      targetPort: 80
"""
KEY = ("default", "nginx-deployment")
SUFFIX = f"[{names.ALPHANUMS}]{{5}}"


def started(*texts: str, kubelet: bool = True) -> ClusterState:
    state = ClusterState.empty().step(Apply(load("---\n".join((NODES, *texts)))))
    return workloads.settle(state, kubelet=kubelet)


def deployment(state: ClusterState) -> Deployment:
    return state.deployments[KEY]


def change(state: ClusterState, **fields: Any) -> ClusterState:
    """Re-apply the Deployment with ``fields`` changed (the user's edit)."""
    return state.step(Apply((attrs.evolve(deployment(state), **fields),)))


def restarted(state: ClusterState, when: str) -> ClusterState:
    """``kubectl rollout restart``: a template annotation changes."""
    dep = deployment(state)
    notes = {**dep.template.annotations, RESTARTED_AT_ANNOTATION: when}
    return change(state, template=attrs.evolve(dep.template, annotations=notes))


def pods_of(state: ClusterState) -> list[Pod]:
    return sorted(
        (p for p in state.pods.values() if p.labels.get("app") == "nginx"), key=lambda p: p.name
    )


def current_hash(state: ClusterState) -> str:
    return workloads.template_hash(deployment(state).template)


def test_kubernetes_io_deployment_and_service_settle_into_three_ready_endpoints() -> None:
    state = started(DEPLOYMENT, SERVICE)
    hash_ = current_hash(state)
    assert re.fullmatch(f"[{names.ALPHANUMS}]+", hash_)
    (rs,) = state.replica_sets.values()
    assert rs.name == f"nginx-deployment-{hash_}" and rs.replicas == 3 and rs.revision == 1
    assert rs.owner is not None and (rs.owner.kind, rs.owner.name) == ("Deployment", KEY[1])
    assert deployment(state).revision == 1
    pods = pods_of(state)
    assert len(pods) == 3
    for pod in pods:
        assert re.fullmatch(f"nginx-deployment-{hash_}-{SUFFIX}", pod.name), pod.name
        assert pod.phase is PodPhase.RUNNING and pod.ready and pod.pod_ips_allocated
        assert pod.node_name in ("node-a", "node-b") and pod.labels[POD_TEMPLATE_HASH_LABEL]
        assert pod.owner is not None and pod.owner.name == rs.name
    assert {p.node_name for p in pods} == {"node-a", "node-b"}  # fewest pods first
    endpoints = state.service_endpoints("default", "my-service")[""]
    assert sorted(e.pod for e in endpoints) == [p.name for p in pods]
    assert all(e.ready and e.port == 80 for e in endpoints)
    # nothing left to do: settling again changes nothing, and a replay names alike
    assert workloads.settle(state) is state
    assert started(DEPLOYMENT, SERVICE) == state


def test_step_alone_runs_no_controller() -> None:
    state = ClusterState.empty().step(Apply(load("---\n".join((NODES, DEPLOYMENT, SERVICE)))))
    assert KEY in state.deployments and not state.replica_sets and not state.pods
    bare = state.step(Apply([*load(NODES.split("---")[0]), Pod("default", "p", node_name="")]))
    assert bare.pods[("default", "p")].phase is None


SSD = DEPLOYMENT.replace(
    "    spec:\n      containers:", "    spec:\n      nodeSelector: {disk: ssd}\n      containers:"
)


def test_scale_up_then_down_keeps_what_kubernetes_keeps() -> None:
    state = workloads.settle(change(started(SSD, SERVICE), replicas=5))
    pods = pods_of(state)
    assert len(pods) == 5 and all(p.ready and p.node_name == "node-b" for p in pods)
    assert len(state.service_endpoints("default", "my-service")[""]) == 5
    # each pod but one loses on a rule of its own; the one that loses on none stays
    a, b, c, d, e = (p.name for p in pods)
    same = {name: {"ready_since": 10, "created": 2} for name in (a, b, c, d, e)}
    same[b]["annotations"] = {DELETION_COST_ANNOTATION: "-5"}  # cheaper to delete
    same[c]["restarts"] = 4  # restarted more
    same[d]["created"] = 3  # newer
    edits = tuple(attrs.evolve(state.pods[("default", n)], **f) for n, f in same.items())
    state = state.step(Apply(edits))
    state = state.step(workloads.mark_ready(state, ("default", a), False))  # not ready
    scaled = change(state, replicas=1)
    events = workloads.reconcile(scaled)
    deleted = [k.name for ev in events if isinstance(ev, Delete) for k in ev.keys]
    assert sorted(deleted) == sorted([a, b, c, d])
    ranked = workloads.rank_for_deletion(pods_of(scaled))
    assert [p.name for p in ranked] == [a, b, c, d, e]
    final = workloads.settle(scaled)
    assert [p.name for p in pods_of(final)] == [e]
    assert [x.pod for x in final.service_endpoints("default", "my-service")[""]] == [e]


def _pod(name: str, **fields: Any) -> Pod:
    base: dict[str, Any] = {
        "node_name": f"node-of-{name}",
        "phase": PodPhase.RUNNING,
        "ready": True,
        "created": 5,
        "ready_since": 5,
    }
    return Pod("default", name, **{**base, **fields})


def test_deletion_ranking_follows_active_pods_with_ranks() -> None:
    pods = [
        _pod("old-ready", created=1, ready_since=2),
        _pod("unassigned", node_name="", phase=PodPhase.PENDING, ready=False),
        _pod("pending", phase=PodPhase.PENDING, ready=False),
        _pod("unknown", phase=PodPhase.UNKNOWN, ready=False),
        _pod("not-ready", ready=False),
        _pod("cheap", annotations={DELETION_COST_ANNOTATION: "-1"}),
        _pod("doubled", node_name="n2"),  # two more of the set on n2
        _pod("fresh", ready_since=9),
        _pod("restarted", restarts=3),
        _pod("newer", created=7),
    ]
    related = [*pods, _pod("twin", node_name="n2"), _pod("twin2", node_name="n2")]
    order = [p.name for p in workloads.rank_for_deletion(pods, related)]
    assert order == [
        "unassigned",
        "pending",
        "unknown",
        "not-ready",
        "cheap",
        "doubled",
        "fresh",
        "restarted",
        "newer",
        "old-ready",
    ]


@pytest.mark.parametrize(
    ("surge", "unavailable", "replicas"),
    [("25%", "25%", 4), (1, 0, 3), (0, 1, 3), ("50%", "10%", 6)],
)
def test_rollout_restart_replaces_every_pod_within_surge_and_unavailable(
    surge: int | str, unavailable: int | str, replicas: int
) -> None:
    state = started(DEPLOYMENT, SERVICE)
    strategy = attrs.evolve(
        deployment(state).strategy, max_surge=surge, max_unavailable=unavailable
    )
    state = workloads.settle(change(state, replicas=replicas, strategy=strategy))
    before = {p.name for p in pods_of(state)}
    assert len(before) == replicas
    max_surge, max_unavailable = workloads.fenceposts(deployment(state))
    state = restarted(state, "2026-12-05T20:00:00Z")
    waiting = workloads.deployment_status(state, deployment(state))
    assert not waiting.complete and waiting.new_replica_set == "" and waiting.updated == 0
    seen = 0
    for seen, now in enumerate(workloads.rounds(state), 1):  # noqa: B007
        pods = pods_of(now)
        assert len(pods) <= replicas + max_surge, [p.name for p in pods]
        assert sum(p.ready for p in pods) >= replicas - max_unavailable
        state = now
    assert seen > 1  # it rolled, not in one jump
    after = pods_of(state)
    assert len(after) == replicas and all(p.ready for p in after)
    assert not before & {p.name for p in after}
    new_hash = current_hash(state)
    assert {p.labels[POD_TEMPLATE_HASH_LABEL] for p in after} == {new_hash}
    assert deployment(state).revision == 2
    assert sorted((rs.revision, rs.replicas) for rs in state.replica_sets.values()) == [
        (1, 0),
        (2, replicas),
    ]
    endpoints = state.service_endpoints("default", "my-service")[""]
    assert sorted(e.pod for e in endpoints) == sorted(p.name for p in after)
    status = workloads.deployment_status(state, deployment(state))
    assert status.complete and (status.replicas, status.updated, status.available) == (
        replicas,
        replicas,
        replicas,
    )
    assert status.new_replica_set == f"nginx-deployment-{new_hash}"
    assert len(status.old_replica_sets) == 1 and status.unavailable == 0


def test_recreate_removes_old_pods_before_new_ones() -> None:
    state = started(DEPLOYMENT, SERVICE)
    recreate = attrs.evolve(deployment(state).strategy, type=StrategyType.RECREATE)
    state = workloads.settle(change(state, strategy=recreate))
    old_hash = current_hash(state)
    state = restarted(state, "2026-12-05T20:00:00Z")
    new_hash = current_hash(state)
    went_empty = False
    for now in workloads.rounds(state):
        hashes = {p.labels[POD_TEMPLATE_HASH_LABEL] for p in pods_of(now)}
        assert hashes in ({old_hash}, {new_hash}, set()), hashes
        went_empty = went_empty or not hashes
        state = now
    assert went_empty
    assert {p.labels[POD_TEMPLATE_HASH_LABEL] for p in pods_of(state)} == {new_hash}
    assert len(pods_of(state)) == 3 and all(p.ready for p in pods_of(state))


def test_node_selector_and_unschedulable_pods_say_why() -> None:
    state = started(SSD)
    assert {p.node_name for p in pods_of(state)} == {"node-b"}
    nvme = SSD.replace("disk: ssd", "disk: nvme")
    state = started(nvme)
    pods = pods_of(state)
    assert len(pods) == 3
    for pod in pods:
        assert pod.node_name == "" and pod.phase is PodPhase.PENDING and not pod.ready
        cond = pod.condition("PodScheduled")
        assert cond is not None and (cond.status, cond.reason) == ("False", "Unschedulable")
        assert cond.message == (
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        )
    # the condition round-trips through a manifest (what get/describe show)
    assert parse_object(to_manifest(pods[0])) == pods[0]
    # a node that fits arrives: the pods go there and run
    node_c = Node("node-c", labels={"disk": "nvme"}, pod_cidrs=("10.244.3.0/24",))
    state = workloads.settle(state.step(Apply((node_c,))))
    pods = pods_of(state)
    assert {p.node_name for p in pods} == {"node-c"} and all(p.ready for p in pods)
    assert all(p.condition("PodScheduled").status == "True" for p in pods)  # type: ignore[union-attr]


def test_not_ready_and_cordoned_nodes_get_no_pods() -> None:
    state = ClusterState.empty().step(Apply(load(NODES)))
    a, b = state.nodes["node-a"], state.nodes["node-b"]
    state = state.step(Apply((attrs.evolve(a, ready=False), attrs.evolve(b, unschedulable=True))))
    state = workloads.settle(state.step(Apply(load(DEPLOYMENT))))
    cond = pods_of(state)[0].condition("PodScheduled")
    assert cond is not None and cond.message == (
        "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
    )


def test_bare_pod_is_scheduled_and_run_without_a_lab_and_with_one() -> None:
    bare = "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec: {containers: [{name: c}]}\n"
    state = started(bare)
    pod = state.pods[("default", "client")]
    assert pod.node_name and pod.pod_ips and pod.phase is PodPhase.RUNNING and pod.ready
    # in a lab (kubelet=False) the pods are placed but not ready until the lab says so
    lab = started(DEPLOYMENT, SERVICE, kubelet=False)
    pods = pods_of(lab)
    assert len(pods) == 3 and all(p.node_name and p.pod_ips and not p.ready for p in pods)
    assert not [e for e in lab.service_endpoints("default", "my-service")[""] if e.ready]
    lab = lab.step(workloads.mark_ready(lab, pods[0].key, True))
    ready = [e.pod for e in lab.service_endpoints("default", "my-service")[""] if e.ready]
    assert ready == [pods[0].name]
    assert lab.pods[("default", pods[0].name)].phase is PodPhase.RUNNING


def test_deleted_pod_is_replaced_and_deleted_deployment_leaves_nothing() -> None:
    state = started(DEPLOYMENT, SERVICE)
    victim = pods_of(state)[0]
    state = workloads.settle(state.step(Delete((victim.key,))))
    pods = pods_of(state)
    assert len(pods) == 3 and victim.name not in {p.name for p in pods}
    state = workloads.settle(state.step(Delete((ObjectKey(Kind.DEPLOYMENT, *KEY),))))
    assert not state.replica_sets and not pods_of(state)
    assert not any(state.service_endpoints("default", "my-service").values())


def test_workload_manifests_round_trip_and_through_the_store_encoding() -> None:
    state = started(DEPLOYMENT, SERVICE)
    objects = [*state.deployments.values(), *state.replica_sets.values(), *pods_of(state)]
    for obj in objects:
        again = parse_object(to_manifest(obj))
        if isinstance(obj, Pod):
            again = attrs.evolve(again, pod_ips_allocated=obj.pod_ips_allocated)
        assert again == obj
        manifest, flags = encode(obj)
        assert decode(json.loads(manifest), json.loads(flags)) == obj
    rich = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, annotations: {team: blue}}
spec:
  replicas: 2
  revisionHistoryLimit: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 2, maxUnavailable: "50%"}}
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front, edge]}]
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      containers:
      - name: web
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
"""
    (dep,) = load(rich)
    assert isinstance(dep, Deployment)
    assert dep.strategy.max_surge == 2 and dep.strategy.max_unavailable == "50%"
    probe = dep.template.readiness_probe
    assert probe is not None and probe.handler is ProbeHandler.HTTP_GET and probe.port == "http"
    assert probe.path == "/healthz" and probe.period_seconds == 2
    assert parse_object(to_manifest(dep)) == dep
    rs_doc = to_manifest(dep) | {"kind": "ReplicaSet"}
    del rs_doc["spec"]["strategy"], rs_doc["spec"]["revisionHistoryLimit"]
    rs = parse_object(rs_doc)
    assert isinstance(rs, ReplicaSet) and parse_object(to_manifest(rs)) == rs


def _refusal(text: str, field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        load(text)
    assert info.value.field == field, str(info.value)
    assert fragment in info.value.message, str(info.value)
    assert info.value.obj == "Deployment default/nginx-deployment"


def test_refusals_name_object_field_and_value() -> None:
    _refusal(
        DEPLOYMENT.replace(
            "      labels:\n        app: nginx\n    spec",
            "      labels:\n        app: web\n    spec",
        ),
        "spec.template.metadata.labels",
        "{'app': 'web'}: `selector` (app=nginx) does not match template `labels`",
    )
    _refusal(DEPLOYMENT.replace("replicas: 3", "replicas: -1"), "spec.replicas", "-1")
    recreate = "  strategy: {type: Recreate, rollingUpdate: {maxSurge: 1}}\n"
    _refusal(DEPLOYMENT + recreate, "spec.strategy.rollingUpdate", "'Recreate'")
    zero = "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0%}}\n"
    _refusal(DEPLOYMENT + zero, "spec.strategy.rollingUpdate.maxUnavailable", "'0%'")
    odd = "  strategy: {rollingUpdate: {maxSurge: '3'}}\n"
    _refusal(DEPLOYMENT + odd, "spec.strategy.rollingUpdate.maxSurge", "'3'")
    probe = "        readinessProbe: {exec: {command: [true]}}\n"
    port = "        - containerPort: 80\n"
    exec_probe = DEPLOYMENT.replace(port, port + probe)
    _refusal(exec_probe, "spec.template.spec.containers[0].readinessProbe.exec", "tcpSocket")
    # the state refuses objects built in Python too, and a selector change
    state = started(DEPLOYMENT)
    dep = deployment(state)
    with pytest.raises(ValidationError) as info:
        state.step(Apply((attrs.evolve(dep, replicas=-2),)))
    assert (info.value.obj, info.value.field) == (str(dep.key), "spec.replicas")
    template = attrs.evolve(dep.template, labels={"app": "nginx", "tier": "x"})
    other = attrs.evolve(dep, selector=dep.selector.with_label("tier", "x"), template=template)
    with pytest.raises(ValidationError, match=r"spec\.selector: field is immutable"):
        state.step(Apply((other,)))


def test_mark_ready_names_a_missing_pod() -> None:
    with pytest.raises(Exception, match="Pod default/ghost not found"):
        workloads.mark_ready(ClusterState.empty(), ("default", "ghost"), True)


def test_kubelet_leaves_reported_pods_alone() -> None:
    def pod(name: str, status: str) -> str:
        return (
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
            f"spec: {{nodeName: node-a, containers: [{{name: c}}]}}\nstatus: {status}\n"
        )

    state = started(
        pod("given-ready", '{conditions: [{type: Ready, status: "True"}]}'),
        pod("given-not-ready", '{conditions: [{type: Ready, status: "False"}]}'),
        pod("running-not-ready", '{phase: Running, conditions: [{type: Ready, status: "False"}]}'),
        pod("no-status", "{}"),
    )
    ready = {name: (p.phase, p.ready) for (_, name), p in state.pods.items()}
    assert ready == {
        "given-ready": (None, True),
        "given-not-ready": (None, False),
        "no-status": (PodPhase.RUNNING, True),
        "running-not-ready": (PodPhase.RUNNING, False),
    }


def test_a_store_replay_of_the_objects_keeps_the_workloads_settled() -> None:
    """The store reloads a state as one Apply of its objects (decoded manifests):
    Deployments, ReplicaSets and their pods come back, and settling changes nothing."""
    state = started(DEPLOYMENT, SERVICE)
    objects = [
        *state.nodes.values(),
        *state.services.values(),
        *state.deployments.values(),
        *state.replica_sets.values(),
        *state.pods.values(),
    ]
    coded = [encode(obj) for obj in objects]
    back = replay(state.config, [decode(json.loads(m), json.loads(f)) for m, f in coded])
    assert dict(back.deployments) == dict(state.deployments)
    assert dict(back.replica_sets) == dict(state.replica_sets)
    assert dict(back.pods) == dict(state.pods)
    assert back.endpoints == state.endpoints
    assert workloads.settle(back) is back


def test_a_replicaset_applied_alone_makes_and_collects_its_pods() -> None:
    frontend = """\
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: frontend}
spec:
  replicas: 2
  selector: {matchLabels: {tier: frontend}}
  template:
    metadata: {labels: {tier: frontend}}
    spec: {containers: [{name: php, image: php:5}]}
"""
    state = started(frontend)
    pods = sorted(state.pods.values(), key=lambda p: p.name)
    assert len(pods) == 2 and all(re.fullmatch(f"frontend-{SUFFIX}", p.name) for p in pods)
    assert all(p.ready and p.labels.as_dict() == {"tier": "frontend"} for p in pods)
    rs = state.replica_sets[("default", "frontend")]
    state = workloads.settle(state.step(Delete((rs.key,))))
    assert not state.pods and not state.replica_sets
