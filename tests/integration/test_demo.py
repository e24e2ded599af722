"""The README's first command, `bash scripts/demo.sh`, run with --once: it builds the tiny model,
starts the neuron and the gateway, sends one chat through the gateway and stops both."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_demo_serves_a_chat_through_the_gateway(tmp_path: Path) -> None:
    env = {
        **os.environ,  # noqa: TID251 - the script's environment, passed on
        "VENV": str(Path(sys.executable).parent.parent),  # this venv has the stack installed
        "DEMO_DIR": str(tmp_path),
        "DEMO_NEURON_PORT": str(free_port()),
        "DEMO_GATEWAY_PORT": str(free_port()),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"object":"chat.completion"' in result.stdout
    assert '"model":"cortex/tiny-chat"' in result.stdout
    assert "Traceback" not in (tmp_path / "neuron.log").read_text()
