"""`svcnet sync --lab`: a lab bound to a store follows it through its agents, and a
lab keeps the backend it was set up with. In process (click's runner), with the
lab's record (svcnet.lab.control.read_record) given by the test: nothing is
created."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from click.testing import CliRunner

import svcnet.lab.control
from svcnet.cli.main import cli

DEMO = str(pathlib.Path(__file__).parent.parent / "tests" / "fixtures" / "demo")


def _invoke(store: pathlib.Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--store", str(store), *args])


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "store.db"
    result = _invoke(path, "apply", "-f", DEMO)
    assert result.exit_code == 0, result.output
    return path


def _record(monkeypatch: pytest.MonkeyPatch, record: dict[str, Any]) -> list[str]:
    asked: list[str] = []

    def read_record(lab: str) -> dict[str, Any]:
        asked.append(lab)
        return record

    monkeypatch.setattr(svcnet.lab.control, "read_record", read_record)
    return asked


def test_sync_refuses_a_lab_that_follows_its_store(
    store: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _record(monkeypatch, {"backend": "nftables", "store": "/tmp/lab-store.db"})
    result = _invoke(store, "sync", "--backend", "nftables", "--lab", "lab1")
    assert result.exit_code == 1, result.output
    assert asked == ["lab1"]
    assert (
        "error: lab lab1 follows its store through its agents; use `svcnet apply`"
        " (store: /tmp/lab-store.db)"
    ) in result.output
    assert "synced" not in result.output


def test_sync_refuses_another_backend_than_the_labs(
    store: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(monkeypatch, {"backend": "nftables"})
    result = _invoke(store, "sync", "--backend", "iptables", "--lab", "lab1")
    assert result.exit_code == 1, result.output
    assert "error: lab lab1 was set up with backend 'nftables'" in result.output
    assert "synced" not in result.output


def test_sync_into_a_lab_without_namespaces_says_so(
    store: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the matching backend gets past the checks to the lab's namespaces (none here)
    _record(monkeypatch, {"backend": "nftables"})
    result = _invoke(store, "sync", "--backend", "nftables", "--lab", "svcnet-h2-no-such-lab")
    assert result.exit_code == 1, result.output
    assert "has no namespace" in result.output and "svcnet lab up?" in result.output
