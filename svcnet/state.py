"""INTERFACE STUB — to be implemented (see the docstrings). Do not change the public API
without telling the integrator.

Public API that svcnet.plan, svcnet.semantics, svcnet.scenario and the CLI rely on:

    @attrs.frozen
    class ClusterState:
        config: ClusterConfig
        nodes: PMap[str, Node]
        pods: PMap[tuple[str, str], Pod]                 # (namespace, name)
        services: PMap[tuple[str, str], Service]         # allocations filled in
        slices: PMap[tuple[str, str], EndpointSlice]
        endpoints: PMap[tuple[str, str], PMap[str, tuple[Endpoint, ...]]]
            # per service (namespace, name), per service-port name ("" for an unnamed
            # single port): the endpoints of that port, all families, sorted;
            # ready/serving/terminating folded as SEMANTICS.md says (publishNotReadyAddresses
            # already makes ready True); zone filled from the node label (pods) or the slice.
            # ExternalName services have no entry; a proxied-or-not service with a selector
            # or slices has an entry for every port (possibly empty tuples).
        revision: int                                    # +1 per accepted event

        @classmethod
        def empty(cls, config: ClusterConfig = ClusterConfig()) -> ClusterState
        def step(self, event: Event) -> ClusterState     # raises SvcnetError (ValidationError,
                                                         # ConflictError, NotFoundError); self unchanged
        def service_endpoints(self, namespace: str, name: str) -> Mapping[str, tuple[Endpoint, ...]]
        def changed_since(self, revision: int) -> Changed | None
            # what changed after `revision` (None: too old to tell; recompile everything)

    @attrs.frozen
    class Changed:
        services: frozenset[tuple[str, str]]   # services whose spec, allocation or endpoints changed
                                               # (deleted ones included)
        nodes: frozenset[str]                  # nodes added, removed or changed
        config: bool                           # the cluster configuration changed

    Events (frozen):
        Apply(objects: tuple[KubeObject, ...])   # all or nothing; replacing keeps allocations
        Delete(keys: tuple[ObjectKey, ...])      # all or nothing; unknown key -> NotFoundError
        Configure(config: ClusterConfig)         # refused if an existing allocation falls outside
    Event = Apply | Delete | Configure

    def step(state: ClusterState, event: Event) -> ClusterState   # same as state.step(event)
"""
