"""kubectl-like commands over the CLI's store (I/O): ``apply``, ``delete``, ``get``,
``describe``, ``config`` — reading and changing the cluster state. (What the state
compiles to and its data planes: :mod:`svcnet.cli.plans`.)

The store is the one the group's ``--store PATH`` option names (default
``$SVCNET_STORE`` or ``~/.local/share/svcnet/store.db``; see
:mod:`svcnet.cli.common`). Every command that changes the state runs inside
:meth:`svcnet.store.Store.modify`: the store is locked from load to save, and a
step that fails (a validation error, a conflict) saves nothing. ``get -w`` lists,
then follows the store's change log (:meth:`svcnet.store.Store.watch`; semantics in
docs/reference/store.md).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import click

from svcnet import manifests
from svcnet.cli.common import current_store, existing_store, namespace_option
from svcnet.cli.kubectl_views import (
    describe_node,
    describe_pod,
    human_duration,
    parse_label_selector,
    plural,
    resource_name,
    slices_of_state,
)
from svcnet.cli.readpath import describe_listing, get_listing
from svcnet.cli.views import (
    UNKNOWN_AGE,
    describe_deployment,
    describe_service,
    endpoints_manifest,
    format_table,
    get_object,
    key_of,
    labels_of,
    object_rows,
    select_objects,
    watch_line,
    with_version,
)
from svcnet.errors import ManifestError, NotFoundError
from svcnet.manifests import precount
from svcnet.model import (
    ClusterConfig,
    Kind,
    KubeObject,
    Node,
    ObjectKey,
    Pod,
    ReplicaSet,
    Service,
    ServiceType,
)
from svcnet.state import Apply, ClusterState, Configure, Delete
from svcnet.state.room import ServiceClaim, refuse_exhausting
from svcnet.state.selectors import Selector
from svcnet.store import Listing, Store, WatchExpired, config_to_json

RESOURCES = {
    "svc": Kind.SERVICE, "service": Kind.SERVICE, "services": Kind.SERVICE,
    "po": Kind.POD, "pod": Kind.POD, "pods": Kind.POD,
    "no": Kind.NODE, "node": Kind.NODE, "nodes": Kind.NODE,
    "endpointslice": Kind.ENDPOINT_SLICE, "endpointslices": Kind.ENDPOINT_SLICE,
}  # fmt: skip
ENDPOINTS = ("ep", "endpoints")
# Deployments and ReplicaSets, in a tree whose model has them (svcnet.workloads)
for _kind, _spellings in (
    ("DEPLOYMENT", ("deploy", "deployment", "deployments", "deployment.apps", "deployments.apps")),
    ("REPLICA_SET", ("rs", "replicaset", "replicasets", "replicaset.apps", "replicasets.apps")),
):
    if hasattr(Kind, _kind):
        RESOURCES.update(dict.fromkeys(_spellings, getattr(Kind, _kind)))
KIND_NAMES = ", ".join(
    ["svc", "pod", "node", "endpointslice"]
    + [k for k in ("deployment", "replicaset") if k in RESOURCES]
)


# -- reading manifests ---------------------------------------------------------------


def _files(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(text, name) of every file: FILE, DIR (its *.yaml/*.yml/*.json) or '-'."""
    for p in paths:
        if p == "-":
            yield sys.stdin.read(), "<stdin>"
            continue
        if os.path.isdir(p):
            names = sorted(
                os.path.join(p, n) for n in os.listdir(p) if n.endswith((".yaml", ".yml", ".json"))
            )
        else:
            names = [p]
        for name in names:
            try:
                with open(name, encoding="utf-8") as f:
                    yield f.read(), name
            except (OSError, UnicodeDecodeError) as e:
                raise ManifestError(f"{name}: cannot read: {e}") from e


# what the server, not the writer, says of an object: not kept as applied
_SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")


def _as_written(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` as kept for ``get -o yaml``: without ``status`` and the server's
    metadata (a dump of ``get -o yaml`` applied again is the same object)."""
    out = {k: v for k, v in doc.items() if k != "status"}
    meta = out.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if k not in _SERVER_METADATA}
    return out


def _shown(obj: KubeObject, applied: Mapping[str, Any] | None) -> dict[str, Any]:
    return manifests.as_applied(manifests.to_manifest(obj), applied)


def read_objects(paths: Sequence[str]) -> list[KubeObject]:
    """Every object in ``paths``, validated (ManifestError/ValidationError otherwise)."""
    return [obj for obj, _ in read_documents(paths)]


def read_documents(paths: Sequence[str]) -> list[tuple[KubeObject, Mapping[str, Any]]]:
    """As :func:`read_objects`, each object with its document as written."""
    return _validated(list(_files(paths)))


def _validated(texts: Sequence[tuple[str, str]]) -> list[tuple[KubeObject, Mapping[str, Any]]]:
    """The objects of ``texts`` ((text, name) pairs) with their documents."""
    out: list[tuple[KubeObject, Mapping[str, Any]]] = []
    for text, name in texts:
        out.extend(manifests.load_documents(text, filename=name))
    return out


# Input this large is counted against the free ClusterIPs before it is validated
# (svcnet.manifests.precount): 70,000 Services take seconds to validate, and a file
# that exhausts the service CIDR is refused at once. Smaller input is validated
# first; the step's own count refuses it as quickly.
QUICK_COUNT_BYTES = 1 << 20


def _quick_claims(texts: Sequence[tuple[str, str]]) -> list[ServiceClaim] | None:
    """The ClusterIP claims of all texts, when the input is large and every text
    can be read quickly; else None."""
    if sum(len(text) for text, _ in texts) < QUICK_COUNT_BYTES:
        return None
    out: list[ServiceClaim] = []
    for text, _ in texts:
        found = precount.claims(text)
        if found is None:
            return None
        out.extend(found)
    return out


def _apply_objects(objects: Sequence[KubeObject]) -> Apply:
    items: Any = tuple(objects)  # attrs types Apply's converter parameter loosely
    return Apply(items)


# -- apply / delete ------------------------------------------------------------------

filename_option = click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    type=click.Path(exists=True, allow_dash=True),
    help="Manifest file, directory or '-' for stdin (repeatable).",
)


def _ref(obj: KubeObject | ObjectKey) -> str:
    key = obj if isinstance(obj, ObjectKey) else obj.key
    return f"{resource_name(key.kind.value)}/{key.name}"


@click.command("apply")
@filename_option
def apply_cmd(files: Sequence[str]) -> None:
    """Apply every document of the FILEs at once (all or nothing)."""
    if not files:
        raise click.UsageError("give manifests with -f FILE|DIR|-")
    texts = list(_files(files))
    quick = _quick_claims(texts)
    documents = _validated(texts) if quick is None else []
    if quick is None and not documents:
        raise ManifestError("no objects in " + ", ".join(files))
    from svcnet.workloads.applying import keep_reported

    with current_store().modify() as session:
        old = session.state
        if quick is not None:  # refused before validation when it cannot fit
            refuse_exhausting(old, quick)
            documents = _validated(texts)
            if not documents:
                raise ManifestError("no objects in " + ", ".join(files))
        written = {obj.key: _as_written(doc) for obj, doc in documents}
        # what the scheduler, kubelet and controllers reported stays (kubectl apply)
        objects = [
            keep_reported(get_object(old, obj.key), obj, has_status="status" in doc)
            for obj, doc in documents
        ]
        new = old.step(_apply_objects(objects))
        before_docs = session.applied(written)
        session.save(new)
        session.save_applied(written)
    seen: set[ObjectKey] = set()
    for obj in objects:
        if obj.key in seen:
            continue
        seen.add(obj.key)
        before, after = get_object(old, obj.key), get_object(new, obj.key)
        if before is None:
            verb = "created"
        elif after is not None and _shown(before, before_docs.get(obj.key)) == _shown(
            after, written[obj.key]
        ):
            verb = "unchanged"  # what get -o yaml shows is the same
        else:
            verb = "configured"
        click.echo(f"{_ref(obj)} {verb}")


@click.command("delete")
@filename_option
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@namespace_option
@click.option(
    "--ignore-not-found", is_flag=True, help="Say nothing of objects that do not exist (exit 0)."
)
def delete_cmd(
    files: Sequence[str],
    kind: str | None,
    names: Sequence[str],
    namespace: str,
    ignore_not_found: bool,
) -> None:
    """Delete the objects of FILEs, or KIND (svc, pod, node, endpointslice,
    deployment, replicaset) NAMEs, as
    kubectl does: every one that exists is deleted; each missing one is reported
    (``Error from server (NotFound)``, exit 1) unless --ignore-not-found."""
    if files and kind:
        raise click.UsageError("give either -f FILE or KIND NAME..., not both")
    if files:
        keys = list(dict.fromkeys(o.key for o in read_objects(files)))
    elif kind and names:
        k = RESOURCES.get(kind.lower())
        if k is None:
            raise click.BadParameter(f"{kind!r}: expected {KIND_NAMES}", param_hint="KIND")
        keys = list(
            dict.fromkeys(ObjectKey(k, "" if k is Kind.NODE else namespace, n) for n in names)
        )
    else:
        raise click.UsageError("give -f FILE or KIND NAME...")
    with existing_store().modify() as session:
        present = [key for key in keys if get_object(session.state, key) is not None]
        if present:
            session.save(session.state.step(Delete(tuple(present))))
    found = set(present)
    missing = False
    for key in keys:
        if key in found:
            click.echo(f'{resource_name(key.kind.value)} "{key.name}" deleted')
        elif not ignore_not_found:
            missing = True
            click.echo(
                f'Error from server (NotFound): {plural(key.kind.value)} "{key.name}" not found',
                err=True,
            )
    if missing:
        raise SystemExit(1)


# -- get -----------------------------------------------------------------------------


def _select(
    state: ClusterState,
    r: str,
    name: str | Sequence[str] | None,
    namespace: str,
    all_ns: bool,
    selector: Selector | None = None,
) -> tuple[str, list[Any]]:
    """(what ``get`` shows: a kind's value or ``endpoints``, the objects it lists):
    all, one NAME or several (in the order given, NotFoundError for a missing one)."""
    if name is not None and not isinstance(name, str):
        if not name:
            return _select(state, r, None, namespace, all_ns, selector)
        found: dict[ObjectKey, Any] = {}
        what = ""
        for n in name:
            what, items = _select(state, r, n, namespace, all_ns, selector)
            found.update((key_of(o), o) for o in items)
        return what, list(found.values())
    if r in ENDPOINTS:
        items = select_objects(state, Kind.SERVICE, name, namespace, all_ns, selector)
        return "endpoints", [s for s in items if s.type is not ServiceType.EXTERNAL_NAME]
    return RESOURCES[r].value, select_objects(
        state, RESOURCES[r], name, namespace, all_ns, selector
    )


def _doc(
    state: ClusterState,
    what: str,
    obj: Any,
    version: int | None,
    applied: Mapping[ObjectKey, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    if what == "endpoints":
        return endpoints_manifest(state, obj)
    if isinstance(obj, dict):  # an EndpointSlice (applied, or the controller's)
        return with_version(obj, version)
    doc = manifests.to_manifest(obj)
    if applied is not None:
        doc = manifests.as_applied(doc, _applied_base(state, obj, applied))
    return with_version(doc, version)


def _applied_base(
    state: ClusterState, obj: Any, applied: Mapping[ObjectKey, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """What ``obj`` was applied as; for an object a controller made, its owner's
    template (a Deployment's pods carry the containers and images written there)."""
    doc = applied.get(obj.key)
    if doc is not None:
        return doc
    owner = getattr(obj, "owner", None)
    if owner is None:
        return None
    ns = obj.key.namespace
    if isinstance(obj, ReplicaSet):
        parent = applied.get(ObjectKey(Kind.DEPLOYMENT, ns, owner.name))
        spec = parent.get("spec") if parent is not None else None
        if not isinstance(spec, Mapping) or not isinstance(spec.get("template"), Mapping):
            return None
        return {"spec": {"template": spec["template"]}}
    rs = state.replica_sets.get((ns, owner.name))
    if rs is None:
        return None
    base = _applied_base(state, rs, applied)
    spec = base.get("spec") if base is not None else None
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if not isinstance(template, Mapping):
        return None
    return {k: template[k] for k in ("metadata", "spec") if isinstance(template.get(k), Mapping)}


def _echo_doc(doc: Any, output: str, separate: bool) -> None:
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False).rstrip("\n")
        click.echo(("---\n" if separate else "") + text)


def _ref_name(what: str, obj: Any) -> str:
    """``-o name``: ``pod/web-1``, ``service/web``, ``endpoints/web``,
    ``endpointslice.discovery.k8s.io/web-x7k2p``."""
    kind = "Endpoints" if what == "endpoints" else what
    return f"{resource_name(kind)}/{key_of(obj).name}"


def _created(store: Store, key: ObjectKey | None = None) -> dict[ObjectKey, float]:
    """When objects were created (``Store.created``), or nothing when this store
    does not record it."""
    created = getattr(store, "created", None)
    if created is None:
        return {}
    try:
        got = created(key) if key is not None else created()
    except TypeError:
        return {}
    if isinstance(got, Mapping):
        return dict(got)
    if isinstance(got, (int, float)) and key is not None:
        return {key: float(got)}
    return {}


class _Ages:
    """kubectl's AGE of an object from the store's creation times (``<unknown>``
    when it has none): every object's, or only ``keys``' read at first; others
    (objects first seen while watching) are looked up once."""

    def __init__(self, store: Store, keys: Iterable[ObjectKey] | None = None) -> None:
        self.store = store
        created_of = getattr(store, "created_of", None)
        if keys is not None and created_of is not None:
            self.known: dict[ObjectKey, float] = created_of(keys)
        else:
            self.known = _created(store)
        self.asked: set[ObjectKey] = set()

    def at(self, key: ObjectKey) -> float | None:
        """When ``key`` was created (epoch seconds), if the store knows."""
        found = self.known.get(key)
        if found is None and key not in self.asked:
            self.asked.add(key)
            self.known.update(_created(self.store, key))
            found = self.known.get(key)
        return found

    def __call__(self, key: ObjectKey) -> str:
        at = self.at(key)
        return UNKNOWN_AGE if at is None else human_duration(time.time() - at)


@click.command("get")
@click.argument("resource")
@click.argument("names", nargs=-1)
@namespace_option
@click.option("-A", "--all-namespaces", "all_ns", is_flag=True, help="Every namespace.")
@click.option(
    "-l",
    "--selector",
    metavar="SELECTOR",
    help="Only objects whose labels match (k=v, k!=v, k in (a,b), k notin (a,b), k, !k).",
)
@click.option("--show-labels", is_flag=True, help="Add a LABELS column.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json", "wide", "name"]), default=None)
@click.option(
    "-w", "--watch", is_flag=True, help="After the list, print each change as it happens."
)
@click.option("--watch-only", is_flag=True, help="Print each change, without the list first.")
@click.option(
    "--output-watch-events", "events", is_flag=True, help="Prefix each change with its type."
)
def get_cmd(
    resource: str,
    names: tuple[str, ...],
    namespace: str,
    all_ns: bool,
    selector: str | None,
    show_labels: bool,
    output: str | None,
    watch: bool,
    watch_only: bool,
    events: bool,
) -> None:
    """Show svc, pods, nodes, endpoints, endpointslices, deployments or replicasets
    (all, or NAMEs; RESOURCE/NAME works too), in kubectl's tables; with -w, then
    follow the store's changes until interrupted."""
    if "/" in resource and not names:
        resource, _, one = resource.partition("/")
        names = (one,)
    r = resource.lower()
    if r not in ENDPOINTS and r not in RESOURCES:
        raise click.BadParameter(
            f"{resource!r}: expected {KIND_NAMES}, endpoints",
            param_hint="RESOURCE",
        )
    view = _View(
        r, names, namespace, all_ns, output, show_labels,
        parse_label_selector(selector) if selector is not None else None,
    )  # fmt: skip
    store = existing_store()
    listing: Listing | None = None
    if not (watch or watch_only):  # a watch steps the whole state: it lists it
        with store.reader() as reader:
            if reader is not None:
                kind = None if r in ENDPOINTS else RESOURCES[r]
                docs = output in ("yaml", "json")
                listing = get_listing(reader, kind, names, namespace, all_ns, docs)
    if listing is None:
        listing = store.list()
        ages = _Ages(store)
    else:
        ages = _Ages(store, listing.versions)
    if output in ("yaml", "json"):
        view.applied = store.applied()
    if not watch_only:
        _print_list(listing, view, ages)
    if watch or watch_only:
        try:
            _follow(store, listing, view, ages, events)
        except KeyboardInterrupt:
            return


class _View:
    """What one ``get`` shows: resource, name, namespaces, labels, output."""

    def __init__(
        self,
        r: str,
        names: tuple[str, ...],
        namespace: str,
        all_ns: bool,
        output: str | None,
        show_labels: bool,
        selector: Selector | None,
    ) -> None:
        self.r, self.names, self.namespace, self.all_ns = r, names, namespace, all_ns
        self.output, self.show_labels, self.selector = output, show_labels, selector
        # -o yaml|json: the documents the objects were applied with (Store.applied)
        self.applied: dict[ObjectKey, dict[str, Any]] | None = None

    def rows(
        self, state: ClusterState, what: str, items: list[Any], ages: _Ages
    ) -> list[list[str]]:
        """The table of ``items``, with a NAMESPACE column under -A."""
        rows = object_rows(state, what, items, self.output == "wide", ages, self.show_labels)
        if self.all_ns and what != Kind.NODE.value:
            rows = [["NAMESPACE", *rows[0]]] + [
                [key_of(o).namespace, *row] for o, row in zip(items, rows[1:], strict=True)
            ]
        return rows


def _print_list(listing: Listing, view: _View, ages: _Ages) -> None:
    state = listing.state
    what, items = _select(state, view.r, view.names, view.namespace, view.all_ns, view.selector)
    output = view.output
    if output in ("yaml", "json"):
        docs = [_doc(state, what, o, listing.versions.get(key_of(o)), view.applied) for o in items]
        doc: Any = (
            docs[0]
            if len(view.names) == 1
            else with_version({"apiVersion": "v1", "kind": "List", "items": docs}, listing.version)
        )
        _echo_doc(doc, output, separate=False)
        return
    if not items:
        where = "" if view.all_ns or what == Kind.NODE.value else f" in {view.namespace} namespace"
        click.echo(f"No resources found{where}.", err=True)
        return
    if output == "name":
        click.echo("\n".join(_ref_name(what, o) for o in items))
        return
    click.echo(format_table(view.rows(state, what, items, ages)))


def _follow(store: Store, listing: Listing, view: _View, ages: _Ages, events: bool) -> None:
    """Print one line (or document) per change of what ``get`` shows, as it happens:
    list, then :meth:`Store.watch` from the list's version, applying each change to
    the state in memory (a watcher that fell behind lists again)."""
    r, names, namespace, all_ns, output = (
        view.r, set(view.names), view.namespace, view.all_ns, view.output
    )  # fmt: skip
    kind = None if r in ENDPOINTS else RESOURCES[r]
    state, since = listing.state, listing.version

    def in_scope(obj: Any) -> bool:
        key = key_of(obj)
        return (
            (not names or key.name in names)
            and (all_ns or key.kind is Kind.NODE or key.namespace == namespace)
            and (view.selector is None or view.selector.matches(labels_of(obj)))
        )

    def show(st: ClusterState, what: str, obj: Any, event: str, version: int | None) -> None:
        if output in ("yaml", "json"):
            if view.applied is not None and not isinstance(obj, dict):
                view.applied.update(store.applied(key_of(obj)))  # applied since the list
            _echo_doc(_doc(st, what, obj, version, view.applied), output, separate=output == "yaml")
            return
        if output == "name":
            click.echo(_ref_name(what, obj))
            return
        click.echo(watch_line(view.rows(st, what, [obj], ages), event if events else None))

    while True:
        try:
            for change in store.watch(since):
                old, state, since = state, state.step(change.step), change.version
                if kind is Kind.ENDPOINT_SLICE:
                    _slice_changes(old, state, change, view, in_scope, show)
                    continue
                if kind is not None:
                    obj = change.object
                    if obj is not None and obj.key.kind is kind and in_scope(obj):
                        show(state, kind.value, obj, change.type.value, change.version)
                    continue
                # endpoints follow services, pods and slices: those of the change's
                # namespace (every namespace for a node or a configuration change)
                obj = change.object
                near = None if obj is None or obj.key.kind is Kind.NODE else obj.key.namespace
                for svc_key in sorted(set(old.services) | set(state.services)):
                    before, after = old.services.get(svc_key), state.services.get(svc_key)
                    svc = after or before
                    if svc is None or svc.type is ServiceType.EXTERNAL_NAME:
                        continue
                    if not in_scope(svc) or near not in (None, svc.namespace):
                        continue
                    if after is None:
                        show(old, "endpoints", before, "DELETED", None)
                    elif before is None:
                        show(state, "endpoints", after, "ADDED", None)
                    elif endpoints_manifest(old, before) != endpoints_manifest(state, after):
                        show(state, "endpoints", after, "MODIFIED", None)
        except WatchExpired:
            listing = store.list()
            state, since = listing.state, listing.version
            what, items = _select(state, r, None, namespace, all_ns, view.selector)
            for obj in items:
                if in_scope(obj):
                    show(state, what, obj, "MODIFIED", listing.versions.get(key_of(obj)))


def _slice_changes(
    old: ClusterState,
    new: ClusterState,
    change: Any,
    view: _View,
    in_scope: Callable[[Any], bool],
    show: Callable[[ClusterState, str, Any, str, int | None], None],
) -> None:
    """The EndpointSlice events of one change: applied slices and the ones the
    controller keeps (they change with pods and services), in the change's
    namespace (every namespace for a node or a configuration change)."""
    obj = change.object
    near = None if obj is None or obj.key.kind is Kind.NODE else obj.key.namespace
    scope = None if view.all_ns else view.namespace
    if near is not None and scope is not None and near != scope:
        return
    where = near if near is not None else scope

    def by_key(st: ClusterState) -> dict[ObjectKey, dict[str, Any]]:
        return {key_of(d): d for d in slices_of_state(st, where)}

    before, after = by_key(old), by_key(new)
    what = Kind.ENDPOINT_SLICE.value
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        version = change.version if obj is not None and obj.key == key else None
        if a is None:
            if b is not None and in_scope(b):
                show(old, what, b, "DELETED", None)
        elif (b is None or a != b) and in_scope(a):
            show(new, what, a, "ADDED" if b is None else "MODIFIED", version)


# -- describe ------------------------------------------------------------------------

DESCRIBABLE = {
    "svc": Kind.SERVICE, "service": Kind.SERVICE, "services": Kind.SERVICE,
    "po": Kind.POD, "pod": Kind.POD, "pods": Kind.POD,
    "no": Kind.NODE, "node": Kind.NODE, "nodes": Kind.NODE,
    **{k: v for k, v in RESOURCES.items() if v.value == "Deployment"},
}  # fmt: skip


@click.command("describe")
@click.argument("resource")
@click.argument("name", required=False)
@namespace_option
def describe_cmd(resource: str, name: str | None, namespace: str) -> None:
    """Describe a service (IPs, ports, endpoints per port, policies), a pod (node,
    IPs, containers, conditions), a node (addresses, pod CIDRs, its pods) or a
    deployment (replicas, strategy, its ReplicaSets)."""
    if "/" in resource and name is None:
        resource, _, name = resource.partition("/")
    if not name:
        raise click.UsageError("give RESOURCE NAME or RESOURCE/NAME")
    kind = DESCRIBABLE.get(resource.lower())
    if kind is None:
        raise click.BadParameter(
            f"{resource!r}: expected svc, pod, node or deployment", param_hint="RESOURCE"
        )
    store = existing_store()
    key = ObjectKey(kind, "" if kind is Kind.NODE else namespace, name)
    with store.reader() as reader:
        listing = describe_listing(reader, kind, key) if reader is not None else None
    state = listing.state if listing is not None else store.load()
    obj = get_object(state, key)
    if obj is None:
        raise NotFoundError(str(key))
    ages = _Ages(store, listing.versions if listing is not None else None)
    if isinstance(obj, Service):
        lines = describe_service(state, obj)
    elif isinstance(obj, Pod):
        lines = describe_pod(state, obj, ages, ages.at)
    elif isinstance(obj, Node):
        lines = describe_node(state, obj, ages, ages.at)
    else:
        lines = describe_deployment(state, obj, ages, ages.at)
    click.echo("\n".join(lines))


# -- config --------------------------------------------------------------------------


def _config_text(config: ClusterConfig) -> str:
    import yaml

    return yaml.safe_dump({"config": config_to_json(config)}, sort_keys=False).rstrip("\n")


def _config_from_file(path: str, current: ClusterConfig) -> ClusterConfig:
    import yaml

    from svcnet.scenario.format import parse_config

    text, name = next(_files([path]))
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{name}{line}: {e.problem}") from e
    except yaml.YAMLError as e:
        raise ManifestError(f"{name}: {e}") from e
    if isinstance(doc, dict) and "config" in doc:
        doc = doc["config"]
    if not isinstance(doc, dict):
        raise ManifestError(f"{name}: expected a mapping (a scenario's `config`)")
    merged = {**config_to_json(current), **doc}  # keys not given keep their value
    return parse_config(merged, name)


def _cidrs(value: str, what: str) -> tuple[str, ...]:
    out = []
    for part in value.split(","):
        try:
            out.append(str(ipaddress.ip_network(part.strip(), strict=False)))
        except ValueError as e:
            raise click.BadParameter(f"{part!r} is not a CIDR", param_hint=what) from e
    return tuple(out)


@click.command("config")
@click.option("--service-cidrs", metavar="CIDR[,CIDR]")
@click.option("--cluster-cidrs", metavar="CIDR[,CIDR]")
@click.option("--node-port-range", metavar="LOW-HIGH")
@click.option("--lb-pool", metavar="CIDR[,CIDR]")
@click.option("--cluster-domain", metavar="DOMAIN")
@click.option("--masquerade-all/--no-masquerade-all", default=None)
@click.option(
    "-f",
    "--filename",
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="A scenario-style `config` document (keys not given keep their value).",
)
def config_cmd(
    service_cidrs: str | None,
    cluster_cidrs: str | None,
    node_port_range: str | None,
    lb_pool: str | None,
    cluster_domain: str | None,
    masquerade_all: bool | None,
    file: str | None,
) -> None:
    """Show the cluster configuration, or change it (refused if allocations conflict)."""
    import attrs

    changes: dict[str, Any] = {}
    if service_cidrs is not None:
        changes["service_cidrs"] = _cidrs(service_cidrs, "--service-cidrs")
    if cluster_cidrs is not None:
        changes["cluster_cidrs"] = _cidrs(cluster_cidrs, "--cluster-cidrs")
    if lb_pool is not None:
        changes["load_balancer_pool"] = _cidrs(lb_pool, "--lb-pool")
    if node_port_range is not None:
        lo, sep, hi = node_port_range.partition("-")
        if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
            raise click.BadParameter("expected LOW-HIGH", param_hint="--node-port-range")
        changes["node_port_range"] = (int(lo), int(hi))
    if cluster_domain is not None:
        changes["cluster_domain"] = cluster_domain.strip(".").lower()
    if masquerade_all is not None:
        changes["masquerade_all"] = masquerade_all
    if not changes and file is None:
        click.echo(_config_text(current_store().load().config))
        return
    with current_store().modify() as session:
        config = session.state.config
        if file is not None:
            config = _config_from_file(file, config)
        config = attrs.evolve(config, **changes)
        session.save(session.state.step(Configure(config)))
    click.echo(_config_text(config))


COMMANDS: tuple[click.Command, ...] = (apply_cmd, delete_cmd, get_cmd, describe_cmd, config_cmd)

__all__ = ["COMMANDS", "read_objects"]
