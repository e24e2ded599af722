"""The README's first command, `bash scripts/demo.sh`, run with --once: it builds the tiny model,
starts the neuron and the gateway, sends an OpenAI chat, a streamed OpenAI chat and an Anthropic
message through the gateway, prints the answers, `cortex status` and the lines to paste, and
stops both. A second run reuses the venv and the model. Its failures are one line."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_gateway_port() -> int:
    """A free port whose next one, the demo's metrics port, is free too (after hundreds of tests,
    a random port's neighbour is often some closed client connection's)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,  # noqa: TID251 - the script's environment, passed on
        "VENV": str(Path(sys.executable).parent.parent),  # this venv has the stack installed
        "DEMO_DIR": str(tmp_path),
        "DEMO_NEURON_PORT": str(free_port()),
        "DEMO_GATEWAY_PORT": str(free_gateway_port()),
        **env,
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )


def check_output(out: str) -> None:
    """What a --once run prints: three answers, the first answer's time, the status, the exports."""
    assert re.search(r"^OpenAI chat \(cortex/tiny-chat\): .+$", out, re.M), out
    assert re.search(r"^OpenAI stream \(cortex/tiny-chat, \d+ chunks\): .+$", out, re.M)
    assert re.search(r"^Anthropic message \([\w/-]+, \w+\): .+$", out, re.M)
    assert re.search(r"^== first answer \d+\.\d s after the start$", out, re.M)
    status = out.split("== cortex status\n")[1]
    assert re.search(r"^local +up ", status, re.M)  # the node
    assert re.search(r"^cortex/tiny-chat +tiny +local loaded ", status, re.M)  # the model
    found = re.search(r"the gateway is at (http://127\.0\.0\.1:\d+)", out)
    assert found is not None
    url = found[1]
    assert f"export OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=any\n" in out
    assert f"export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=any\n" in out
    assert "\nclaude --model cortex/tiny-chat\n" in out


@pytest.mark.engine
def test_the_demo_answers_in_both_dialects_then_again_reusing_the_model(
    tmp_path: Path,
) -> None:
    for run in ("first", "second"):
        result = demo(tmp_path, "--once")
        assert result.returncode == 0, result.stderr
        print(f"--- {run} run\n{result.stdout}")  # the time to the first answer, on record (-s)
        check_output(result.stdout)
        assert "Traceback" not in (tmp_path / "neuron.log").read_text()
    assert "== reusing the tiny model" in result.stdout
    assert "== installing" not in result.stdout


def test_the_demo_runs_its_whole_flow_on_the_fake_engine(tmp_path: Path) -> None:
    """The script's own logic without vLLM: a venv whose `neuron` is daemons.py's, the neuron's
    own serve on its fake engine (the `cortex` and `python` are this venv's). A second run reuses
    the model."""
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    here = Path(sys.executable).parent
    (venv / "python").symlink_to(sys.executable)
    (venv / "cortex").symlink_to(here / "cortex")
    daemons = Path(__file__).with_name("daemons.py")
    (venv / "neuron").write_text(
        f'#!/bin/sh\n[ "$1" = serve ] && shift && set -- neuron "$@"\n'
        f'exec {sys.executable} {daemons} "$@"\n'
    )  # `neuron tiny-model DIR` / `neuron serve -c FILE` -> `daemons.py tiny-model|neuron ...`
    (venv / "neuron").chmod(0o755)
    for _ in range(2):
        result = demo(tmp_path / "demo", "--once", VENV=str(venv.parent))
        assert result.returncode == 0, result.stderr
        check_output(result.stdout)
        assert "OpenAI chat (cortex/tiny-chat): 'tok0 tok1 tok2" in result.stdout
    assert result.stdout.startswith("== reusing the tiny model in ")


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = demo(tmp_path, "--once", DEMO_GATEWAY_PORT=str(port))
    assert result.returncode == 1
    assert result.stderr == (
        f"demo: port {port} on 127.0.0.1 is in use: stop what holds it or set "
        "DEMO_NEURON_PORT / DEMO_GATEWAY_PORT\n"
    )
    assert result.stdout == ""


def test_a_python_older_than_3_11_is_one_line(tmp_path: Path) -> None:
    old = tmp_path / "python-3.9"
    old.write_text(
        "#!/bin/sh\n"
        'case "$2" in *sys.exit*) exit 1 ;; *version_info*) echo 3.9 ;; esac\n'  # what it's asked
    )
    old.chmod(0o755)
    result = demo(tmp_path, "--once", PYTHON=str(old))
    assert result.returncode == 1
    assert result.stderr == (
        f"demo: {old} is Python 3.9: cortex needs 3.11 or newer (set PYTHON=python3.11)\n"
    )


def test_a_full_disk_is_one_line(tmp_path: Path) -> None:
    """No venv yet and too little room for one: refused before pip starts."""
    df = tmp_path / "bin" / "df"
    df.parent.mkdir()
    df.write_text("#!/bin/sh\necho 'Filesystem 1M-blocks Used Available'\necho 'x 100 99 1'\n")
    df.chmod(0o755)
    venv = tmp_path / "venv"
    path = os.environ["PATH"]  # noqa: TID251 - the script's PATH, a df that reports a full disk
    result = demo(tmp_path, "--once", VENV=str(venv), PATH=f"{df.parent}:{path}")
    assert result.returncode == 1
    assert result.stderr == (
        f"demo: 1 MiB free where {venv} goes; installing needs about 5000 MiB\n"
    )
    assert not venv.exists()
