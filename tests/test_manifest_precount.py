"""The quick count of ClusterIP claims (svcnet.manifests.precount) and the early
refusal of a range-exhausting file by ``svcnet apply`` (issue 13).

The count is a lower bound of what the validated objects claim: every Service it
counts as taking a dynamic ClusterIP does take one, of the primary family, and it
reads the same keys in the same order as the loader. ``apply`` refuses a file the
count says cannot fit with the step's own error, and leaves the store as it was.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import svcnet
from svcnet.cli.objects import QUICK_COUNT_BYTES
from svcnet.manifests import precount
from svcnet.model import IPFamily, Service
from svcnet.state.room import ServiceClaim, claim_of

NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,6}[a-z0-9])?", fullmatch=True)
SPEC_EXTRAS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]),
        "clusterIP": st.sampled_from(["None", "10.96.7.7", ""]),
        "ipFamilies": st.just(["IPv4"]),
        "ipFamilyPolicy": st.just("SingleStack"),
        "sessionAffinity": st.just("ClientIP"),
    },
)


@st.composite
def service_docs(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs = []
    for name in draw(st.lists(NAMES, min_size=1, max_size=6)):
        meta: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            meta["namespace"] = draw(st.sampled_from(["default", "team-a", "kube-system"]))
        if draw(st.booleans()):
            meta["labels"] = {"app": name, "tier": "web"}
        spec = {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
        spec.update(draw(SPEC_EXTRAS))
        if spec.get("type", "ClusterIP") != "ClusterIP" and spec.get("clusterIP") == "None":
            del spec["clusterIP"]  # only a ClusterIP service may be headless
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
    if draw(st.booleans()):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n"},
        }
        docs.insert(draw(st.integers(0, len(docs))), pod)
    return docs


def validated_claims(docs: list[dict[str, Any]]) -> list[ServiceClaim]:
    return [claim_of(o) for o in svcnet.load(docs) if isinstance(o, Service)]


def agrees(quick: tuple[ServiceClaim, ...], full: list[ServiceClaim]) -> None:
    assert [(c.namespace, c.name) for c in quick] == [(c.namespace, c.name) for c in full]
    for q, f in zip(quick, full, strict=True):
        if q.dynamic:  # counted: the object takes a dynamic ClusterIP, of the primary family
            assert f.dynamic and f.family is None, (q, f)


@settings(max_examples=60, deadline=None)
@given(service_docs(), st.sampled_from(["yaml", "json", "json-list"]))
def test_count_is_a_lower_bound_of_the_validated_claims(
    docs: list[dict[str, Any]], form: str
) -> None:
    if form == "yaml":
        text = yaml.safe_dump_all(docs)
    elif form == "json":
        text = json.dumps(docs[0]) if len(docs) == 1 else json.dumps(docs)
        docs = docs[:1] if len(docs) == 1 else docs
    else:
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2)
    counted = precount.claims(text)
    if counted is None:  # any JSON is read; YAML unless it quotes or uses flow style
        assert form == "yaml" and ("'" in text or "{" in text), text
        return
    agrees(counted, validated_claims(docs))
    plain = [c for c in validated_claims(docs) if c.dynamic and c.family is None]
    no_fields = [
        d for d in docs if d["kind"] == "Service" and not {"clusterIP", "ipFamilies",
                                                           "ipFamilyPolicy"} & set(d["spec"])
    ]  # fmt: skip
    assert sum(c.dynamic for c in counted) == len(no_fields) <= len(plain)


@pytest.mark.parametrize(
    "text",
    [
        'apiVersion: v1\nkind: Service\nmetadata:\n  name: "web"\nspec: {}\n',  # quotes
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n",  # flow mapping
        "apiVersion: v1\nkind: Service  # svc\nmetadata:\n  name: web\n",  # comment
        "base: &b\n  name: web\nkind: Service\nmetadata: *b\n",  # anchor and alias
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n...\n",  # document end
        "- apiVersion: v1\n  kind: Service\n  metadata:\n    name: web\n",  # a list
        "apiVersion: v1\nkind: List\nitems:\n- kind: Service\n",  # a List: not scanned
        "apiVersion: v1\nkind: Service\nkind: Service\nmetadata:\n  name: web\n",  # dup key
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: yes\n",  # a boolean name
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  name: api\n",  # dup key
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: 0123\n",
    ],
)
def test_texts_the_scan_does_not_read(text: str) -> None:
    """Anything but plain block style is left to the loader and the step."""
    assert precount.yaml_claims(text) is None


def test_the_scan_reads_other_orders_and_lists_at_the_key_indentation() -> None:
    text = (
        "kind: Service\nspec:\n    ports:\n    - port: 80\n    type: NodePort\n"
        "apiVersion: v1\nmetadata:\n    namespace: shop\n    labels:\n        app: web\n"
        "    name: web\n---\nkind: ConfigMap\nmetadata:\n  name: c\n"
    )
    assert precount.yaml_claims(text) == (ServiceClaim("shop", "web", True),)
    agrees(precount.yaml_claims(text) or (), validated_claims(list(yaml.safe_load_all(text))[:1]))


# -- svcnet apply -f of a file that cannot fit -----------------------------------------


def _run(store: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcnet", "--store", str(store), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _big_file(tmp: pathlib.Path, count: int, fmt: str) -> pathlib.Path:
    """``count`` plain Services, padded with annotations past the size at which
    ``apply`` counts before validating."""
    pad = {f"note{i}": "x" * 64 for i in range(QUICK_COUNT_BYTES // (count * 60) + 1)}
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"s{i}", "annotations": pad},
            "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80}]},
        }
        for i in range(count)
    ]
    path = tmp / f"services.{fmt}"
    if fmt == "yaml":
        path.write_text(yaml.safe_dump_all(docs))
    else:
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert path.stat().st_size >= QUICK_COUNT_BYTES
    return path


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_apply_refuses_a_range_exhausting_file_before_validating_it(
    tmp_path: pathlib.Path, fmt: str
) -> None:
    store = tmp_path / "store.db"
    assert _run(store, "config", "--service-cidrs", "10.96.0.0/24").returncode == 0
    seed = tmp_path / "seed.yaml"
    seed.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: s1\nspec:\n  ports:\n"
                    "  - port: 80\n")  # fmt: skip
    assert _run(store, "apply", "-f", str(seed)).returncode == 0
    before = _run(store, "get", "svc", "-o", "json").stdout
    # 254 addresses, one taken by s1 (in the file too: an update, no new address)
    proc = _run(store, "apply", "-f", str(_big_file(tmp_path, 255, fmt)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    expected = "Service default/s254: spec.clusterIP: no IPv4 ClusterIP left in service CIDR"
    assert expected in proc.stderr, proc.stderr
    assert _run(store, "get", "svc", "-o", "json").stdout == before  # nothing changed
    # one fewer fits: the same path accepts it, every service with an address
    proc = _run(store, "apply", "-f", str(_big_file(tmp_path, 254, fmt)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("created") == 253 and "service/s1 configured" in proc.stdout
    listed = json.loads(_run(store, "get", "svc", "-o", "json").stdout)["items"]
    assert len({s["spec"]["clusterIP"] for s in listed}) == 254


def test_the_early_refusal_is_the_steps_own() -> None:
    """Counted from the text or from the validated objects, the refusal is the same
    error."""
    docs = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
         "spec": {"ports": [{"port": 80}]}}
        for i in range(20)
    ]  # fmt: skip
    config = svcnet.ClusterConfig(service_cidrs=("10.96.0.0/28",))  # 14 addresses
    state = svcnet.ClusterState.empty(config)
    from svcnet.errors import ValidationError
    from svcnet.state.room import refuse_exhausting

    with pytest.raises(ValidationError) as by_step:
        state.step(svcnet.Apply(tuple(svcnet.load(docs))))
    counted = precount.claims(yaml.safe_dump_all(docs))
    assert counted is not None
    with pytest.raises(ValidationError) as by_count:
        refuse_exhausting(state, counted)
    assert str(by_count.value) == str(by_step.value)
    assert "Service default/s14" in str(by_step.value)


# -- the count itself: refuse_exhausting against a plain reading of its rule ----------

FAMILIES = [None, IPFamily.IPv4, IPFamily.IPv6]


def reference_refusal(
    free: dict[IPFamily, int], existing: set[tuple[str, str]], claims: list[ServiceClaim]
) -> tuple[str, IPFamily] | None:
    """Which service runs out first, claim by claim: updates and repeats take
    nothing; each new dynamic claim takes one address of its family."""
    left, seen = dict(free), set()
    for c in claims:
        key = (c.namespace, c.name)
        if key in existing or key in seen:
            continue
        seen.add(key)
        fam = c.family or IPFamily.IPv4
        if c.dynamic and fam in left:
            left[fam] -= 1
            if left[fam] < 0:
                return c.name, fam
    return None


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.booleans(), st.sampled_from(FAMILIES)),
        max_size=12,
    ),
    st.sets(st.sampled_from("abcdefgh"), max_size=3),
)
def test_refuse_exhausting_names_the_first_claim_that_runs_out(
    drawn: list[tuple[str, bool, IPFamily | None]], existing: set[str]
) -> None:
    # a few addresses per family; the existing services hold one IPv4 address each
    config = svcnet.ClusterConfig(service_cidrs=("10.96.0.0/29", "fd00::/126"))
    state = svcnet.ClusterState.empty(config)
    if existing:
        docs = [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
             "spec": {"ports": [{"port": 80}]}}
            for name in sorted(existing)
        ]  # fmt: skip
        state = state.step(svcnet.Apply(tuple(svcnet.load(docs))))
    claims = [ServiceClaim("default", name, dyn, fam) for name, dyn, fam in drawn]
    # what the allocator has free, plus what updates give back first (one IPv4 each)
    free = {fam: pool.free_count for fam, pool in state._svc_alloc.cluster_ips.items()}
    free[IPFamily.IPv4] += len(existing & {c.name for c in claims})
    expected = reference_refusal(free, {("default", n) for n in existing}, claims)
    from svcnet.errors import ValidationError
    from svcnet.state.room import refuse_exhausting

    if expected is None:
        refuse_exhausting(state, claims)
        return
    with pytest.raises(ValidationError) as err:
        refuse_exhausting(state, claims)
    name, fam = expected
    assert f"Service default/{name}:" in str(err.value) and fam.value in str(err.value)
