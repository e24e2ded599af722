"""The discrete-event fleet of the placement benchmark: requests replayed through ``decide()``.

Each event (a request arrives, a request ends, a load ends, a waiter's pass-over bound passes)
changes the simulated fleet; after each one every model's queue is re-decided, oldest waiter
first, with a snapshot built fresh the way ``Router.snapshot`` builds it: each resident model's
footprint, devices, end of last request, requests running and its queue's waiters (``waiting``),
and the models in the way of a queue passed over for longer than ``max_pass_over_s`` marked
``yielding``. A decision is applied as ``control/routing.py`` applies it:

- ``Use(node)``: every waiter of that model starts there, busy for its service time;
- ``Load(node, devices, evict)``: the victims are unloaded (``unload_s``), then the load takes
  its time; its model's waiters stay queued and start when it is loaded (they join the load);
- ``Refuse(transient)``: the waiters stay queued and are re-decided at the next event.

A model serves any number of requests at once (an engine batches them). The offline reference
replays the same trace through the same ``decide()`` with the ``priority`` strategy and each
model's priority set, at each decision, from the future: see :func:`oracle_priority`.
"""

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cortex_gateway.placement.policy import Ask, Load, Refuse, Use, decide
from cortex_gateway.placement.snapshot import DeviceRoom, FleetSnapshot, ModelState, Need, NodeState
from cortex_gateway.placement.strategies import Strategy

GIB = 1024


@dataclass(frozen=True)
class Model:
    name: str
    gib: float
    priority: int = 100

    @property
    def mb(self) -> int:
        return math.ceil(self.gib * GIB)


@dataclass(frozen=True)
class Request:
    at: float
    model: str
    service_s: float


@dataclass(frozen=True)
class Settings:
    load_fixed_s: float = 15.0
    load_s_per_gib: float = 2.0
    unload_s: float = 2.0
    max_pass_over_s: float = 30.0

    def load_s(self, model: Model) -> float:
        return self.load_fixed_s + self.load_s_per_gib * model.gib


@dataclass
class _Resident:
    model: Model
    devices: tuple[int, ...]
    loading: bool = True
    active: int = 0
    last_used: float | None = None
    load_s: float | None = None


@dataclass
class Result:
    loads: int = 0
    reloads: int = 0
    reload_s: float = 0.0
    load_s: float = 0.0
    waits: list[float] = field(default_factory=list)
    refused: int = 0
    unserved: int = 0

    def p95_wait(self) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


Priority = Callable[[str, float], int]
"""The offline reference's priority of a model at a time (lower is evicted first)."""


def oracle_priority(trace: Sequence[Request], models: dict[str, Model], s: Settings) -> Priority:
    """Belady's farthest-next-use, generalised to sizes and costs, as models.toml priorities.

    A model's worth keeping at ``now`` is ``reload_s / (MiB x seconds to its next request)``:
    for equal sizes and costs this evicts the model used farthest in the future first, which is
    Belady's MIN; a model never used again is worth nothing. Scaled to an integer priority.
    """
    uses: dict[str, list[float]] = {}
    for r in trace:
        uses.setdefault(r.model, []).append(r.at)

    def priority(model: str, now: float) -> int:
        times = uses.get(model, [])
        i = bisect.bisect_right(times, now)
        if i == len(times):
            return 0
        spec = models[model]
        worth = s.load_s(spec) / (spec.mb * max(times[i] - now, 1e-3))
        return 1 + int(worth * 1e12)

    return priority


class Simulation:
    """One fleet, one strategy (or the offline reference), one trace."""

    def __init__(
        self,
        fleet: Sequence[tuple[str, Sequence[int]]],
        models: Sequence[Model],
        settings: Settings,
        strategy: Strategy,
        oracle: Priority | None = None,
    ) -> None:
        self._devices = {name: tuple(sizes) for name, sizes in fleet}
        self._resident: dict[str, dict[str, _Resident]] = {name: {} for name, _ in fleet}
        self._models = {m.name: m for m in models}
        self._s = settings
        self._strategy: Strategy = "priority" if oracle is not None else strategy
        self._oracle = oracle
        self._queues: dict[str, deque[Request]] = {}
        self._events: list[tuple[float, int, str, tuple[str, str]]] = []
        self._seq = 0
        self._now = 0.0
        self._ever: set[str] = set()
        self.result = Result()

    def _at(self, when: float, kind: str, what: tuple[str, str] = ("", "")) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, what))

    def run(self, trace: Sequence[Request]) -> Result:
        pending = deque(trace)
        give_up = (trace[-1].at if trace else 0.0) + 3600.0  # an overloaded fleet never drains
        while (pending or self._events) and self._now < give_up:
            if pending and (not self._events or pending[0].at <= self._events[0][0]):
                request = pending.popleft()
                self._now = request.at
                queue = self._queues.setdefault(request.model, deque())
                queue.append(request)
                # Only a first waiter needs a decision (the others' was taken and stands), and
                # only the oldest waiter's pass-over bound matters.
                if len(queue) == 1:
                    self._at(request.at + self._s.max_pass_over_s + 1e-6, "tick")
                    if self._decide(request.model, self._snapshot()):
                        self._pump()
            else:
                self._now, _, kind, (node, model) = heapq.heappop(self._events)
                self._event(kind, node, model)
                self._pump()
        self.result.unserved = sum(len(q) for q in self._queues.values())
        return self.result

    def _event(self, kind: str, node: str, model: str) -> None:
        resident = self._resident.get(node, {}).get(model)
        if resident is None:  # a tick (a waiter's pass-over bound), or a victim's old event
            return
        if kind == "served":
            resident.active -= 1
            resident.last_used = self._now
        elif kind == "loaded":
            resident.loading = False

    def _pump(self) -> None:
        """Re-decide every queue, oldest waiter first, until no decision changes anything."""
        changed = True
        while changed:
            changed = False
            snapshot = self._snapshot()
            for _, model in sorted((q[0].at, m) for m, q in self._queues.items() if q):
                if self._queues[model] and self._decide(model, snapshot):
                    changed = True
                    snapshot = self._snapshot()

    def _decide(self, model: str, snapshot: FleetSnapshot) -> bool:
        """Decide for ``model``'s queue and apply it; whether the fleet changed."""
        queue = self._queues[model]
        decision = decide(snapshot, self._ask(model))
        if isinstance(decision, Use):
            resident = self._resident[decision.node][model]
            while queue:
                request = queue.popleft()
                self.result.waits.append(self._now - request.at)
                resident.active += 1
                self._at(self._now + request.service_s, "served", (decision.node, model))
            return True
        if isinstance(decision, Load):
            if decision.devices is None:
                return False  # joined the load under way: nothing changes
            self._load(decision.node, model, decision.devices, decision.evict)
            return True
        assert isinstance(decision, Refuse)
        if not decision.transient:
            self.result.refused += len(queue)
            queue.clear()
            return True
        return False

    def _load(self, node: str, model: str, devices: tuple[int, ...], evict: Sequence[str]) -> None:
        for victim in evict:
            del self._resident[node][victim]
        spec = self._models[model]
        took = self._s.load_s(spec)
        self._resident[node][model] = _Resident(spec, devices, load_s=took)
        self.result.loads += 1
        self.result.load_s += took
        if model in self._ever:
            self.result.reloads += 1
            self.result.reload_s += took
        self._ever.add(model)
        self._at(self._now + (self._s.unload_s if evict else 0.0) + took, "loaded", (node, model))

    def _ask(self, model: str) -> Ask:
        spec = self._models[model]
        return Ask(model, need=Need(spec.mb), strategy=self._strategy)

    def _snapshot(self) -> FleetSnapshot:
        fleet = FleetSnapshot(tuple(self._node(n) for n in self._devices), self._now)
        passed = [
            m
            for m, q in self._queues.items()
            if q and self._now - q[0].at > self._s.max_pass_over_s
        ]
        if not passed:
            return fleet
        # in_the_way(fleet, ask) is decide() over the fleet with every model idle: that idle
        # fleet is built once here rather than once per passed-over queue (the same decisions).
        idle = FleetSnapshot(tuple(self._node(n, idle=True) for n in self._devices), self._now)
        yielding: set[tuple[str, str]] = set()
        for model in passed:
            decision = decide(idle, self._ask(model))
            if isinstance(decision, Load):
                yielding |= {(decision.node, victim) for victim in decision.evict}
        return fleet.yielding(yielding) if yielding else fleet

    def _node(self, name: str, *, idle: bool = False) -> NodeState:
        residents = self._resident[name]
        used = [0] * len(self._devices[name])
        for r in residents.values():
            for d in r.devices:
                used[d] += math.ceil(r.model.mb / len(r.devices))
        rooms = tuple(
            DeviceRoom(i, total, total - used[i]) for i, total in enumerate(self._devices[name])
        )
        models = {
            m: ModelState(
                model=m,
                status="loading" if r.loading else "loaded",
                memory_mb=r.model.mb,
                devices=r.devices,
                last_used=r.last_used,
                active=0 if idle else r.active,
                priority=self._oracle(m, self._now) if self._oracle else r.model.priority,
                load_seconds=r.load_s,
                loading=r.loading,
                waiting=0 if idle else len(self._queues.get(m, ())),
            )
            for m, r in residents.items()
        }
        for m in self._models:  # every node's neuron can load every model of the catalogue
            models.setdefault(m, ModelState(model=m, status="available"))
        return NodeState(name=name, up=True, devices=rooms, models=models)
