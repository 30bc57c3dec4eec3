"""KubeSource (svcnet.agent.kube) against the API stand-in (tests/kubeapi_standin.py):
list, watch, bookmarks, 410 Gone, dropped connections, stale and out-of-order events,
skipped objects; and an Agent following it with the memory backend."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

from kubeapi_standin import (
    StandIn,
    endpoint_json,
    node_json,
    service_json,
    slice_json,
)
from storehelp import wait

from svcnet.agent import Agent
from svcnet.agent.kube import KubeSource
from svcnet.model import SERVICE_PROXY_NAME_LABEL
from svcnet.probe import Probe, SourceKind
from svcnet.state import ClusterState
from svcnet.store import Change, ChangeType, WatchExpired

WEB = service_json(
    "web", "10.96.0.10", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
)
HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def web_slice(*ips: str, suffix: str = "abcde") -> dict[str, object]:
    return slice_json(WEB, suffix, [endpoint_json(ip, "node-a") for ip in ips], HTTP)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[StandIn]:
    with StandIn() as server:
        server.put(node_json("node-a", "192.168.56.11", "10.244.1.0/24", zone="a"), WEB)
        server.put(web_slice("10.244.1.5"))
        yield server


@pytest.fixture
def source(api: StandIn, tmp_path: Path) -> Iterator[KubeSource]:
    src = KubeSource(api.kubeconfig(str(tmp_path)), service_cidrs=("10.96.0.0/16",))
    yield src
    src.close()


def endpoints_of(state: ClusterState, name: str = "web") -> list[str]:
    return sorted(
        e.address for eps in state.service_endpoints("default", name).values() for e in eps
    )


def next_changes(src: KubeSource, count: int, timeout: float = 10.0) -> list[Change]:
    """The next ``count`` changes (fewer if ``timeout`` passes quietly)."""
    out: list[Change] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for change in src.watch(src.version, 0.5):
            out.append(change)
            if len(out) == count:
                break
    return out


def fold(state: ClusterState, changes: list[Change]) -> ClusterState:
    for change in changes:
        state = state.step(change.step)
    return state


def test_kube_source_standin_lists_like_kube_proxy(api: StandIn, source: KubeSource) -> None:
    api.put(
        service_json("other", "10.96.0.20", [{"port": 80}], labels={SERVICE_PROXY_NAME_LABEL: "x"})
    )
    fqdn = slice_json(WEB, "fqdn", [{"addresses": ["web.example.com"]}], HTTP, address_type="FQDN")
    api.put(fqdn)
    listing = source.list()
    state = listing.state
    assert state.config.api_authority
    # the other proxy's is listed (its addresses pass), never proxied
    assert sorted(state.services) == [("default", "other"), ("default", "web")]
    assert not state.services[("default", "other")].proxied
    assert endpoints_of(state) == ["10.244.1.5:8080"]
    node = state.nodes["node-a"]
    assert (node.addresses, node.pod_cidrs, node.zone) == (
        ("192.168.56.11",),
        ("10.244.1.0/24",),
        "a",
    )
    assert "EndpointSlice default/web-fqdn" in source.skipped  # logged and skipped
    assert listing.version == source.version == 1
    services_list = next(r for r in api.requests if r.startswith("/api/v1/services?"))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(services_list).query))
    assert query["labelSelector"] == "!service.kubernetes.io/headless"
    slices_list = next(r for r in api.requests if "/endpointslices?" in r)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(slices_list).query))
    assert query["labelSelector"] == (
        "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    )
    assert api.wait_watching(3)  # one watch per kind, from the listed resourceVersions
    watches = [r for r in api.requests if "watch=true" in r]
    assert len(watches) == 3 and all("allowWatchBookmarks=true" in w for w in watches)
    assert all(f"resourceVersion={api.rv}" in w for w in watches)


def test_kube_source_standin_watch_yields_numbered_changes(
    api: StandIn, source: KubeSource
) -> None:
    state = source.list().state
    assert api.wait_watching(3)
    api.put(web_slice("10.244.1.5", "10.244.1.6"))
    api.put(service_json("db", "10.96.0.30", [{"port": 5432, "protocol": "TCP"}]))
    api.delete("EndpointSlice", "default", "web-abcde")
    changes = next_changes(source, 3)
    # in order within a kind; the kinds are separate streams
    slices = [c.type for c in changes if c.key is not None and c.key.name == "web-abcde"]
    assert slices == [ChangeType.MODIFIED, ChangeType.DELETED]
    assert [c.version for c in changes] == [2, 3, 4]
    state = fold(state, changes)
    assert endpoints_of(state) == []
    assert ("default", "db") in state.services


def test_kube_source_standin_resumes_from_a_bookmark_after_a_drop(
    api: StandIn, source: KubeSource
) -> None:
    source.list()
    assert api.wait_watching(3)
    api.bookmark()
    marked = api.rv
    bookmarked = lambda: all(w.rv == str(marked) for w in source._watchers)  # noqa: E731
    wait("the bookmarks arrive", bookmarked, 15)
    api.drop()  # the connections are cut: the watchers reconnect (with backoff)
    resumed = lambda: sum(f"resourceVersion={marked}" in r for r in api.requests) == 3  # noqa: E731
    wait("the watches resume from the bookmark", resumed, 15)
    assert api.wait_watching(3)
    api.put(web_slice("10.244.1.7"))
    (change,) = next_changes(source, 1)
    assert change.type is ChangeType.MODIFIED


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_kube_source_standin_410_gone_expires_the_watch(
    api: StandIn, source: KubeSource, as_http: bool
) -> None:
    source.list()
    assert api.wait_watching(3)
    api.gone_as_http = as_http
    api.put(web_slice("10.244.1.9"))
    api.compact()  # the history is gone ...
    api.drop()  # ... and the watchers must reconnect from before it
    with pytest.raises(WatchExpired):
        next_changes(source, 1)
    listing = source.list()  # what the agent does next
    assert endpoints_of(listing.state) == ["10.244.1.9:8080"]
    assert listing.version == source.version


def test_kube_source_standin_410_on_list(api: StandIn, source: KubeSource) -> None:
    api.expire_next_list()
    with pytest.raises(WatchExpired):
        source.list()
    assert endpoints_of(source.list().state) == ["10.244.1.5:8080"]


def test_kube_source_standin_stale_and_out_of_order_events(
    api: StandIn, source: KubeSource
) -> None:
    state = source.list().state
    assert api.wait_watching(3)
    current = api.objects["/apis/discovery.k8s.io/v1/endpointslices"][("default", "web-abcde")]
    stale = dict(current, endpoints=[endpoint_json("10.244.1.99")])
    api.inject("MODIFIED", stale, rv=int(current["metadata"]["resourceVersion"]) - 1)
    api.inject("DELETED", web_slice("10.244.1.50", suffix="never-seen"))
    api.put(service_json("db", "10.96.0.30", [{"port": 5432}]))  # a marker after them
    changes = next_changes(source, 2, timeout=1.5)
    assert [(c.type, c.key.name if c.key else "") for c in changes] == [(ChangeType.ADDED, "db")]
    assert endpoints_of(fold(state, changes)) == ["10.244.1.5:8080"]


def test_kube_source_standin_an_object_turned_unusable_is_deleted(
    api: StandIn, source: KubeSource
) -> None:
    state = source.list().state
    assert api.wait_watching(3)
    broken = web_slice("10.244.1.5")
    broken["ports"] = [{"name": "http", "protocol": "TCP"}]  # an all-ports slice: refused
    api.put(broken)
    api.put(service_json("mine", "10.96.0.40", [{"port": 80}]))
    api.put(
        service_json("mine", "10.96.0.40", [{"port": 80}], labels={SERVICE_PROXY_NAME_LABEL: "x"})
    )
    changes = next_changes(source, 3)
    kinds = [(c.type, c.key.name if c.key else "") for c in changes]
    assert kinds == [
        (ChangeType.DELETED, "web-abcde"),
        (ChangeType.ADDED, "mine"),
        (ChangeType.MODIFIED, "mine"),  # it became another proxy's: kept, not proxied
    ]
    assert "EndpointSlice default/web-abcde" in source.skipped
    assert endpoints_of(fold(state, changes)) == []


def test_kube_source_standin_relists_periodically(api: StandIn, tmp_path: Path) -> None:
    src = KubeSource(api.kubeconfig(str(tmp_path)), relist_period=0.2)
    try:
        src.list()
        with pytest.raises(WatchExpired, match="periodic relist"):
            next_changes(src, 1, timeout=3)
        with pytest.raises(WatchExpired):  # an old version: list again
            next(src.watch(0, 0.1))
    finally:
        src.close()


def test_kube_source_standin_feeds_an_agent(
    api: StandIn, source: KubeSource, tmp_path: Path
) -> None:
    from svcnet_memory import MemoryBackend

    backend = MemoryBackend("node-a")
    agent = Agent(source, "node-a", backend, run_dir=str(tmp_path / "run"), min_sync_period=0.01)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    probe = Probe(SourceKind.NODE, "192.168.56.11", "node-a", "10.96.0.10", 80)

    def forwards_to(*addresses: str) -> Callable[[], bool]:
        return lambda: backend.evaluate(probe).endpoints == frozenset(addresses)

    try:
        wait("the first endpoint", forwards_to("10.244.1.5:8080"), 15)
        api.put(web_slice("10.244.1.5", "10.244.1.6"))
        wait("a second endpoint", forwards_to("10.244.1.5:8080", "10.244.1.6:8080"), 15)
        api.compact()
        api.drop()  # 410: the agent lists again
        api.put(web_slice("10.244.1.8"))
        wait("the relisted endpoint", forwards_to("10.244.1.8:8080"), 15)
    finally:
        agent.stop()
        thread.join(15)
    assert not thread.is_alive(), "the agent did not stop"
