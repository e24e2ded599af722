"""Every check of the repository, as nox sessions driven by one table of packages.

`nox` runs the default set (what CI runs); `nox -l` lists every session.
"""

import os
import re
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "venv"
nox.options.sessions = [
    "lint",
    "versions",
    "typecheck",
    "tests",
    "integration",
    "build",
    "engine",
]

ROOT = Path(__file__).parent
PYTHON = "3.11"


@dataclass(frozen=True)
class Package:
    """One published distribution of the monorepo."""

    folder: str
    dist: str
    import_name: str
    local_deps: tuple[str, ...]
    coverage_floor: int
    scripts: tuple[str, ...] = ()
    needs_engine: tuple[str, ...] = ()
    """Source globs only the engine session can run (vLLM, torch): outside the unit floor."""
    extras: tuple[str, ...] = ()
    """Its own extras that its tests need (installed with it, editable)."""

    @property
    def path(self) -> Path:
        return ROOT / "packages" / self.folder

    @property
    def project(self) -> dict[str, object]:
        with (self.path / "pyproject.toml").open("rb") as f:
            project: dict[str, object] = tomllib.load(f)["project"]
        return project

    @property
    def version(self) -> str:
        return str(self.project["version"])

    @property
    def dependencies(self) -> list[str]:
        deps = self.project.get("dependencies", [])
        assert isinstance(deps, list)
        return [str(d) for d in deps]

    def extra_dependencies(self, extras: list[str]) -> list[str]:
        """What its optional ``extras`` add."""
        optional = self.project.get("optional-dependencies", {})
        assert isinstance(optional, dict)
        return [str(dep) for extra in extras for dep in optional[extra]]

    def third_party(self) -> list[str]:
        """Every dependency from outside the repository that it needs, its local ones' included.

        A local dependency's extras count (``helexa-cortex-core[server]`` brings Hypercorn).
        """
        found: list[str] = []
        for package in self.closure():
            for dep in package.dependencies + package.extra_dependencies(list(package.extras)):
                local = LOCAL_DEP.match(dep)
                if local is None:
                    found.append(dep)
                else:
                    extras = [e.strip() for e in (local["extras"] or "").split(",") if e.strip()]
                    owner = next(p for p in PACKAGES.values() if p.dist == local["name"])
                    found += owner.extra_dependencies(extras)
        return list(dict.fromkeys(found))

    def closure(self) -> list["Package"]:
        """This package and every local package it depends on, dependencies first."""
        found: list[Package] = []
        for dep in self.local_deps:
            found += [p for p in PACKAGES[dep].closure() if p not in found]
        return [*found, self]


LOCAL_DEP = re.compile(r"^(?P<name>helexa-[a-z-]+)(\[(?P<extras>[^]]*)\])?")
"""A dependency on another package of the repository, with its extras."""

PACKAGES = {
    p.folder: p
    for p in (
        Package("cortex-core", "helexa-cortex-core", "cortex_core", (), 100, extras=("server",)),
        Package("cortex-gateway", "helexa-cortex-gateway", "cortex_gateway", ("cortex-core",), 90),
        Package(
            "neuron",
            "helexa-neuron",
            "cortex_neuron",
            ("cortex-core",),
            90,
            ("neuron",),
            (
                "*/cortex_neuron/engine/vllm.py",
                "*/cortex_neuron/engine/vllm_responses.py",
                "*/cortex_neuron/engine/processes.py",
                "*/cortex_neuron/engine/spare.py",
                "*/cortex_neuron/tiny/*",
            ),
        ),
        Package(
            "cortex-cli",
            "helexa-cortex-cli",
            "cortex_cli",
            ("cortex-core", "cortex-gateway"),
            90,
            ("cortex",),
        ),
    )
}

TEST_TOOLS = (
    "pytest",
    "pytest-asyncio",
    "pytest-cov",
    "pytest-timeout",
    "pytest-socket",
    "httpx",
    "psutil",
    "openai",  # the client in the tests of both daemons
    "anthropic",  # the client of the gateway's /v1/messages tests
    "pytest-randomly",  # every run in a new order: a test that needs another's state fails
    "selenium",  # drives Debian's chromium in the status page's browser test
    "hypothesis",  # the placement policy's property tests
)
# vLLM's CPU build pins a +cpu torch; the PyPI builds of these then break `import vllm`, and an
# extra cannot remove packages, so every engine venv drops them after installing.
# The test doubles: never part of a coverage floor (pyproject omits them too).
COVERAGE_DOUBLES = (
    "*/cortex_gateway/testing/*",
    "*/cortex_neuron/engine/fake.py",
    "*/cortex_neuron/engine/fake_responses.py",
    "*/cortex_neuron/testing.py",
)
BROKEN_BESIDE_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec", "triton")


def pins(*names: str) -> list[str]:
    """The pinned requirement for each tool, from requirements/dev.txt."""
    lines = (ROOT / "requirements" / "dev.txt").read_text().splitlines()
    requirements = [line.split("#")[0].strip() for line in lines]  # a pin may say why
    table = {r.split("==")[0]: r for r in requirements if "==" in r}
    return [table[name] for name in names]


def editable(*packages: Package) -> list[str]:
    """pip arguments installing ``packages`` and their local dependencies editable, in one go."""
    closure: list[Package] = []
    for package in packages:
        closure += [p for p in package.closure() if p not in closure]
    return [
        arg
        for p in closure
        for arg in ("-e", f"{p.path}[{','.join(p.extras)}]" if p.extras else str(p.path))
    ]


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install(*pins("ruff"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=False)
def versions(session: nox.Session) -> None:
    """All four packages share one version and pin each other exactly to it."""
    expected = {p.dist: p.version for p in PACKAGES.values()}
    if len(set(expected.values())) != 1:
        session.error(f"versions differ: {expected}")
    version = next(iter(expected.values()))
    for package in PACKAGES.values():
        for dep in package.dependencies:
            local = LOCAL_DEP.match(dep)
            if local is None:
                continue
            pin = dep[local.end() :].strip()
            if local["name"] not in expected or pin != f"=={version}":
                session.error(f"{package.dist} pins {dep!r}, expected {local['name']}=={version}")
    session.log(f"every package is at {version}, internal pins agree")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict, once per package over its src and tests, then the root tests and nox."""
    session.install(*editable(*PACKAGES.values()), *pins("mypy", "nox", *TEST_TOOLS))
    for package in PACKAGES.values():
        session.run("mypy", str(package.path / "src"), str(package.path / "tests"))
    session.run("mypy", "tests", "noxfile.py")


@nox.session(python=PYTHON)
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's unit tests (not the real engine), with its coverage floor.

    The floor is over what the unit tests can run: code that needs vLLM is measured by the
    engine session instead, which appends to this session's data (``nox -s engine``).
    """
    pkg = PACKAGES[package]
    session.install(*editable(pkg), *pins(*TEST_TOOLS))
    data = {"COVERAGE_FILE": str(ROOT / f".coverage.{package}")}
    session.run(
        "pytest",
        str(pkg.path / "tests"),
        "-m",
        "not engine and not gpu",
        f"--cov={pkg.import_name}",
        "--cov-report=",
        *session.posargs,
        env=data,
    )
    omit = [f"--omit={','.join(pkg.needs_engine)}"] if pkg.needs_engine else []
    session.run("coverage", "report", *omit, f"--fail-under={pkg.coverage_floor}", env=data)


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-package tests over loopback (gateway, neuron on the fake engine, CLI)."""
    session.install(*editable(*PACKAGES.values()), *pins(*TEST_TOOLS))
    session.run("pytest", "tests/integration", "-m", "not engine and not gpu", *session.posargs)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build the four wheels, then install each alone in a fresh venv and run its commands."""
    session.install(*pins("build", "twine"))
    dist = ROOT / "dist"
    for old in dist.glob("*.whl"):
        old.unlink()
    for package in PACKAGES.values():
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), str(package.path))
    session.run("twine", "check", "--strict", *map(str, dist.glob("*.whl")))
    for package in PACKAGES.values():
        venv = Path(session.create_tmp()) / f"alone-{package.folder}"
        session.run("python", "-m", "venv", "--clear", str(venv))
        pip = str(venv / "bin" / "pip")
        session.run(pip, "install", "--quiet", *package.third_party(), external=True)
        session.run(
            pip, "install", "--no-index", "--find-links", str(dist), package.dist, external=True
        )
        session.run(
            str(venv / "bin" / "python"), "-c", f"import {package.import_name}", external=True
        )
        for script in package.scripts:
            session.run(str(venv / "bin" / script), "--help", external=True)
        if package.folder == "cortex-gateway":  # the status page's files are package data
            session.run(str(venv / "bin" / "python"), "-c", STATUS_PAGE_CHECK, external=True)


STATUS_PAGE_CHECK = (
    "import importlib.resources as r; d = r.files('cortex_gateway.web') / 'static'; "
    "names = ('ui.html', 'ui.js', 'ui.css', 'favicon.svg'); "
    "assert all((d / n).is_file() for n in names), 'no static files'"
)
"""Run in the wheel's own venv: the status page's static files shipped in the wheel."""


def engine_venv(session: nox.Session) -> Path:
    """The one venv with vLLM's CPU build, shared by every session that runs the real engine.

    Built once (about two minutes) and rebuilt when what it needs changes; the four packages are
    installed editable without dependencies each time, so pip never reinstalls what the CPU
    build must not have.
    """
    venv = ROOT / ".nox" / "_engine"
    python, pip = str(venv / "bin" / "python"), str(venv / "bin" / "pip")
    third_party = sorted({dep for p in PACKAGES.values() for dep in p.third_party()})
    neuron = PACKAGES["neuron"].project["optional-dependencies"]
    assert isinstance(neuron, dict)
    wanted = [*neuron["cpu"], *third_party, *pins(*TEST_TOOLS)]
    stamp = venv / "cortex-requirements.txt"
    if not stamp.exists() or stamp.read_text() != "\n".join(wanted):
        session.run(sys.executable, "-m", "venv", "--clear", str(venv), external=True)
        session.run(pip, "install", "--quiet", *wanted, external=True)
        session.run(pip, "uninstall", "--yes", *BROKEN_BESIDE_CPU_TORCH, external=True)
        stamp.write_text("\n".join(wanted))
    session.run(
        pip, "install", "--quiet", "--no-deps", *editable(*PACKAGES.values()), external=True
    )
    return Path(python)


@nox.session(python=False)
def engine(session: nox.Session) -> None:
    """The real-engine tests (marker `engine`): vLLM's CPU build serving the tiny model.

    Under coverage; the data is reported alone, then appended to the neuron's unit-test data
    where that exists. ``nox -s engine -- --subprocesses`` also measures the `neuron serve`
    subprocesses (so engine/vllm.py counts), at a price: on Python 3.11 the tracer follows
    vLLM's engine-core processes too and slows generation several times over (the first run
    took 12 min and its long streams outlived the 60 s drain timeouts).
    """
    python = engine_venv(session)
    posargs = list(session.posargs)
    subprocesses = "--subprocesses" in posargs
    if subprocesses:
        posargs.remove("--subprocesses")
    tmp = Path(session.create_tmp())
    rcfile = tmp / "engine.coveragerc"
    data = tmp / ".coverage.engine"
    omit = ",".join(COVERAGE_DOUBLES)
    patch = "patch = subprocess\n" if subprocesses else ""
    rcfile.write_text(
        f"[run]\nbranch = true\n{patch}parallel = true\n"
        f"source_pkgs = cortex_neuron, cortex_core\ndata_file = {data}\nomit = {omit}\n"
        "[report]\nshow_missing = true\nskip_covered = true\n"
    )
    for old in tmp.glob(".coverage.engine*"):
        old.unlink()
    coverage = [str(python), "-m", "coverage"]
    session.run(
        *coverage,
        "run",
        f"--rcfile={rcfile}",
        "-m",
        "pytest",
        "-m",
        "engine",
        "packages/neuron/tests",
        "tests/integration",
        *posargs,
        external=True,
    )
    session.run(*coverage, "combine", f"--rcfile={rcfile}", external=True)
    session.run(*coverage, "report", f"--rcfile={rcfile}", external=True)
    unit = ROOT / ".coverage.neuron"
    if unit.exists():
        both = ROOT / ".coverage.neuron+engine"
        session.run(
            *coverage,
            "combine",
            "--keep",
            f"--data-file={both}",
            str(unit),
            str(data),
            external=True,
        )
        session.run(
            *coverage,
            "report",
            f"--data-file={both}",
            "--include=*/cortex_neuron/*",
            f"--omit={omit}",
            external=True,
        )


@nox.session(python=PYTHON, default=False)
def gpu(session: nox.Session) -> None:
    """Opt-in, on a host with NVIDIA GPUs: NVML discovery against nvidia-smi (tests/gpu)."""
    session.install(*editable(PACKAGES["neuron"]), *pins(*TEST_TOOLS))
    session.run("pytest", "-m", "gpu", "tests/gpu", *session.posargs)


@nox.session(python=False, default=False)
def bench_neuron(session: nox.Session) -> None:
    """The neuron against `vllm serve` on the tiny model (benchmarks/neuron.py; not a test)."""
    python = engine_venv(session)
    session.run(str(python), "benchmarks/neuron.py", *session.posargs, external=True)


@nox.session(python=PYTHON, default=False)
def bench_cold_start(session: nox.Session) -> None:
    """A cold start against vLLM's own server start (benchmarks/cold_start.py; not a test)."""
    python = engine_venv(session)
    session.run(str(python), "benchmarks/cold_start.py", *session.posargs, external=True)


@nox.session(python=PYTHON, default=False)
def bench_gateway(session: nox.Session) -> None:
    """Gateway benchmark (not a test, not a default session): see docs/benchmarks.md."""
    if shutil.which("wrk") is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            session.skip("wrk is missing and cannot be installed here: apt-get install wrk")
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)
    session.install(*editable(PACKAGES["cortex-cli"]))
    # LiteLLM in a venv of its own, so that its pins never change what the gateway runs on.
    litellm = Path(session.create_tmp()) / "litellm"
    session.run("python", "-m", "venv", "--clear", str(litellm))
    try:
        session.run(
            str(litellm / "bin" / "pip"), "install", "--quiet", "litellm[proxy]", external=True
        )
        args = ["--litellm", str(litellm / "bin" / "litellm")]
    except nox.command.CommandFailed:
        args = ["--litellm-failure", "litellm[proxy] did not install"]
    session.run("python", "benchmarks/gateway.py", *args, *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_soak(session: nox.Session) -> None:
    """500 streams for 60 s through `cortex serve` to fake neurons: docs/reliability.md."""
    session.install(*editable(PACKAGES["cortex-cli"]), *pins("psutil"))
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_fleet(session: nox.Session) -> None:
    """100 fake neurons x 10 models behind `cortex serve`: docs/reliability.md."""
    session.install(*editable(PACKAGES["cortex-cli"]))
    session.run("python", "benchmarks/fleet.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_placement(session: nox.Session) -> None:
    """Placement benchmark (a trace simulator over decide()): see docs/benchmarks.md."""
    session.install(*editable(PACKAGES["cortex-gateway"]), "matplotlib")
    session.run("python", "benchmarks/placement.py", *session.posargs)
