"""Kernel plumbing for the lab, the harness, the scenario runner and backends: network
namespaces, entering them, capability checks (I/O)."""
