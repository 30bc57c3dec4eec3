"""The `svcnet` command: one package, explicit registration."""
