"""The lab: cluster states made real in network namespaces, with real traffic.

I/O lives here (namespaces, veth links, routes, pod server processes, sockets),
never in the core. :mod:`svcnet.lab.topology` is the pure part (what to build);
:mod:`svcnet.lab.control` builds and tears down (:class:`~svcnet.lab.control.Lab`,
:func:`~svcnet.lab.control.down`); :mod:`svcnet.lab.prober` sends probes as real
packets and checks scenario probes (``svcnet scenario run --traffic``);
:mod:`svcnet.lab.demo` is ``svcnet demo``; :mod:`svcnet.lab.follow` keeps a live
lab (``svcnet lab up``) in step with its store and runs its node agents.
Submodules are imported on demand, so ``import svcnet.lab`` costs nothing.
"""

from __future__ import annotations

__all__: list[str] = []
