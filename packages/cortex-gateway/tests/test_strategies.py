"""The eviction strategies' orderings: which idle model goes first, which victims cost least."""

import pytest

from cortex_gateway.placement.snapshot import ModelState
from cortex_gateway.placement.strategies import (
    Strategy,
    reload_seconds,
    victim_key,
    victims_cost,
)

NOW = 10_000.0


def model(
    name: str,
    *,
    used: float | None = NOW - 100,
    mb: int = 10_000,
    priority: int = 100,
    load_s: float | None = 20.0,
) -> ModelState:
    return ModelState(
        model=name,
        status="loaded",
        memory_mb=mb,
        last_used=used,
        priority=priority,
        load_seconds=load_s,
    )


def first(strategy: Strategy, *states: ModelState) -> str:
    return min(states, key=lambda s: victim_key(s, strategy, NOW)).model


@pytest.mark.parametrize(
    ("strategy", "states", "expected"),
    [
        ("lru", (model("old", used=NOW - 500), model("new", used=NOW - 5)), "old"),
        ("lru", (model("never", used=None), model("old", used=NOW - 500)), "never"),
        (
            "lru",
            (model("old", used=NOW - 500, priority=900), model("new", used=NOW - 5, priority=1)),
            "old",
        ),
        (
            "priority",
            (model("old", used=NOW - 500, priority=900), model("new", used=NOW - 5, priority=1)),
            "new",
        ),
        (
            "priority",
            (model("a", used=NOW - 500, priority=50), model("b", used=NOW - 5, priority=50)),
            "a",
        ),
        # cost: what a reload costs per MiB held, discounted by idleness
        ("cost", (model("cheap", load_s=5.0), model("dear", load_s=60.0)), "cheap"),
        ("cost", (model("small", mb=2_000), model("big", mb=40_000)), "big"),
        ("cost", (model("idle", used=NOW - 3600), model("recent", used=NOW - 1)), "idle"),
        ("cost", (model("never", used=None), model("recent", used=NOW - 1)), "never"),
    ],
)
def test_the_victim_that_goes_first(
    strategy: Strategy, states: tuple[ModelState, ...], expected: str
) -> None:
    assert first(strategy, *states) == expected
    assert first(strategy, *reversed(states)) == expected


@pytest.mark.parametrize("strategy", ["lru", "priority", "cost"])
def test_no_victims_cost_least_and_more_victims_cost_more(strategy: Strategy) -> None:
    one = (model("a"),)
    two = (model("a"), model("b"))
    assert victims_cost((), strategy, NOW) < victims_cost(one, strategy, NOW)
    assert victims_cost(one, strategy, NOW) < victims_cost(two, strategy, NOW)


@pytest.mark.parametrize(
    ("strategy", "cheaper", "dearer"),
    [
        ("lru", (model("old", used=NOW - 900),), (model("new", used=NOW - 1),)),
        ("priority", (model("low", priority=10),), (model("high", priority=500),)),
        ("cost", (model("cheap", load_s=5.0),), (model("dear", load_s=90.0),)),
        ("cost", (model("a", load_s=5.0), model("b", load_s=5.0)), (model("c", load_s=60.0),)),
    ],
)
def test_the_node_whose_victims_cost_least(
    strategy: Strategy, cheaper: tuple[ModelState, ...], dearer: tuple[ModelState, ...]
) -> None:
    assert victims_cost(cheaper, strategy, NOW) < victims_cost(dearer, strategy, NOW)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (model("m", load_s=12.5), 12.5),
        (model("m", load_s=None, mb=8_000), 8.0),
        (ModelState(model="m", status="loaded"), 0.0),
    ],
)
def test_reload_seconds_are_measured_else_estimated(state: ModelState, expected: float) -> None:
    assert reload_seconds(state) == pytest.approx(expected)
