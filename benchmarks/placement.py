"""The placement benchmark of issue 8: request traces replayed through the gateway's ``decide()``.

Four seeded traces over a catalogue of 20 models (1.5 to 44 GiB) on simulated fleets of 2 to 8
nodes with mixed device sizes (24, 48, 80 GiB), each replayed once per strategy (``lru``,
``priority``, ``cost``) and once by the offline reference (Belady's farthest-next-use
generalised to sizes and costs, :func:`placement_sim.oracle_priority`). Reports loads, reload
seconds (loads of a model loaded before: its first load is the same for every policy) and the
95th percentile of the time a request waits before it starts; a Markdown table on stdout, a PNG
plot, and with ``--write`` the table in docs/benchmarks.md between the placement markers.

    python benchmarks/placement.py [--write] [--plot docs/placement.png]

Run it through `nox -s bench_placement`.
"""

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from placement_sim import Model, Request, Result, Settings, Simulation, oracle_priority

HERE = Path(__file__).parent
DOCS = HERE.parent / "docs"
BEGIN, END = "<!-- placement:begin -->", "<!-- placement:end -->"
STRATEGIES = ("lru", "priority", "cost")
SIZES_GIB = (1.5, 3, 3, 5, 7, 7, 8, 9, 14, 15, 16, 16, 18, 20, 22, 24, 28, 32, 40, 44)
HOUR = 1800.0


def catalogue(rng: random.Random) -> list[Model]:
    """20 models; popularity rank (the list's order) shuffled against size; the 4 most popular
    at the start carry priority 200 (an operator marking its production models), the rest 100."""
    sizes = list(SIZES_GIB)
    rng.shuffle(sizes)
    return [Model(f"m{i:02d}", gib, 200 if i < 4 else 100) for i, gib in enumerate(sizes)]


def zipf_weights(n: int, s: float) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def service(rng: random.Random) -> float:
    return min(rng.expovariate(1 / 4.0), 60.0)


def poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    times, t = [], start + rng.expovariate(rate)
    while t < end:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def zipf_trace(rng: random.Random, models: Sequence[Model]) -> list[Request]:
    weights = zipf_weights(len(models), 1.1)
    return [
        Request(t, rng.choices(models, weights)[0].name, service(rng))
        for t in poisson(rng, 0.3, 0, HOUR)
    ]


def bursts_trace(rng: random.Random, models: Sequence[Model]) -> list[Request]:
    weights = zipf_weights(len(models), 1.1)
    trace = [
        Request(t, rng.choices(models, weights)[0].name, service(rng))
        for t in poisson(rng, 0.1, 0, HOUR)
    ]
    for start in range(0, int(HOUR), 90):
        hot = rng.choice(models).name
        trace += [Request(start + rng.uniform(0, 15), hot, service(rng)) for _ in range(20)]
    return sorted(trace, key=lambda r: r.at)


def diurnal_trace(rng: random.Random, models: Sequence[Model]) -> list[Request]:
    """Zipf popularity whose ranking rotates by 4 models every 5 minutes (a shifting day)."""
    weights = zipf_weights(len(models), 1.1)
    trace = []
    for t in poisson(rng, 0.3, 0, HOUR):
        shift = 4 * int(t // 300)
        ranked = [models[(i + shift) % len(models)] for i in range(len(models))]
        trace.append(Request(t, rng.choices(ranked, weights)[0].name, service(rng)))
    return trace


def agentic_trace(rng: random.Random, models: Sequence[Model]) -> list[Request]:
    """Two agents, each cycling planner → coder → critic (three models), plus background."""
    agents = [m.name for m in models if m.gib in (14, 15, 18)]
    trace = []
    for _agent in range(2):
        t = rng.uniform(0, 30)
        step = 0
        while t < HOUR:
            trace.append(Request(t, agents[step % 3], rng.uniform(4, 10)))
            t += rng.uniform(20, 40)
            step += 1
    others = [m for m in models if m.gib <= 9]
    trace += [
        Request(t, rng.choice(others).name, service(rng)) for t in poisson(rng, 0.02, 0, HOUR)
    ]
    return sorted(trace, key=lambda r: r.at)


@dataclass(frozen=True)
class Scenario:
    name: str
    fleet: tuple[tuple[str, tuple[int, ...]], ...]
    build: object


def gib(*sizes: int) -> tuple[int, ...]:
    return tuple(s * 1024 for s in sizes)


SCENARIOS = (
    Scenario(
        "zipf",
        (("a", gib(80)), ("b", gib(48)), ("c", gib(24, 24)), ("d", gib(24))),
        zipf_trace,
    ),
    Scenario("bursts", (("a", gib(80)), ("b", gib(48, 24))), bursts_trace),
    Scenario(
        "diurnal",
        (
            *((f"n{i}", gib(24)) for i in range(6)),
            *(("n6", gib(48)), ("n7", gib(48))),
        ),
        diurnal_trace,
    ),
    Scenario("agentic", (("a", gib(24)), ("b", gib(24))), agentic_trace),
)


def run(scenario: Scenario, seed: int, settings: Settings) -> tuple[int, dict[str, Result]]:
    rng = random.Random(f"{scenario.name}-{seed}")
    models = catalogue(rng)
    trace = scenario.build(rng, models)  # type: ignore[operator]
    results = {}
    for strategy in STRATEGIES:
        results[strategy] = Simulation(scenario.fleet, models, settings, strategy).run(trace)
    oracle = oracle_priority(trace, {m.name: m for m in models}, settings)
    results["offline"] = Simulation(scenario.fleet, models, settings, "lru", oracle).run(trace)
    return len(trace), results


def fleet_text(fleet: Sequence[tuple[str, Sequence[int]]]) -> str:
    return " + ".join("x".join(str(d // 1024) for d in devices) for _, devices in fleet)


def table(rows: Sequence[tuple[Scenario, int, dict[str, Result]]]) -> str:
    lines = [
        "| trace | fleet (GiB per device) | requests | policy | loads | reloads | reload s "
        "| vs offline | vs lru | p95 wait s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, count, results in rows:
        offline, lru = results["offline"].reload_s, results["lru"].reload_s
        for policy, r in results.items():
            lines.append(
                f"| {scenario.name} | {fleet_text(scenario.fleet)} | {count} | {policy} "
                f"| {r.loads} | {r.reloads} | {r.reload_s:,.0f} | {ratio(r.reload_s, offline)} "
                f"| {ratio(r.reload_s, lru)} | {r.p95_wait():.1f} |"
            )
    return "\n".join(lines)


def ratio(value: float, base: float) -> str:
    return "-" if base == 0 else f"{value / base:.2f}x"


def verdicts(rows: Sequence[tuple[Scenario, int, dict[str, Result]]]) -> str:
    lines = []
    for scenario, _, results in rows:
        best = min(STRATEGIES, key=lambda s: results[s].reload_s)
        b, o, lru = results[best].reload_s, results["offline"].reload_s, results["lru"].reload_s
        within = b <= 1.2 * o
        under = b <= 0.8 * lru
        lines.append(
            f"- {scenario.name}: best {best}, {ratio(b, o)} the offline reference "
            f"({'met' if within else 'missed'}: ≤ 1.20x), {ratio(b, lru)} lru "
            f"({'met' if under else 'missed'}: ≤ 0.80x)"
        )
    return "\n".join(lines)


def plot(rows: Sequence[tuple[Scenario, int, dict[str, Result]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = (*STRATEGIES, "offline")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.2
    for i, policy in enumerate(policies):
        xs = [j + (i - 1.5) * width for j in range(len(rows))]
        ax1.bar(xs, [r[policy].reload_s for _, _, r in rows], width, label=policy)
        ax2.bar(xs, [r[policy].p95_wait() for _, _, r in rows], width, label=policy)
    for ax, title in ((ax1, "reload seconds"), (ax2, "p95 queue wait (s)")):
        ax.set_xticks(range(len(rows)), [s.name for s, _, _ in rows])
        ax.set_title(title)
    ax1.legend()
    fig.suptitle("cortex placement: strategies against the offline reference")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load-fixed-s", type=float, default=Settings.load_fixed_s)
    parser.add_argument("--load-s-per-gib", type=float, default=Settings.load_s_per_gib)
    parser.add_argument("--plot", type=Path, default=DOCS / "placement.png")
    parser.add_argument("--write", action="store_true", help="put the table in benchmarks.md")
    args = parser.parse_args()
    settings = Settings(load_fixed_s=args.load_fixed_s, load_s_per_gib=args.load_s_per_gib)
    started = time.perf_counter()
    rows = [(s, *run(s, args.seed, settings)) for s in SCENARIOS]
    text = f"{table(rows)}\n\n{verdicts(rows)}"
    print(text)
    print(f"\n({time.perf_counter() - started:.1f} s)")
    plot(rows, args.plot)
    if args.write:
        doc = DOCS / "benchmarks.md"
        body = doc.read_text()
        head, _, rest = body.partition(BEGIN)
        _, _, tail = rest.partition(END)
        doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
