"""``cortex serve`` in this process: it serves, stops on SIGTERM, and refuses bad set-ups."""

import logging
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from cortex_cli.main import main

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``serve`` configures logging for the process; give the next test the logging it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder, body: str = "") -> str:
    path = folder / "cortex.toml"
    path.write_text(body, encoding="utf-8")
    return str(path)


def signal_when_serving(url: str, signum: int) -> threading.Thread:
    def run() -> None:
        for _ in range(500):
            try:
                urllib.request.urlopen(url, timeout=1).close()
            except urllib.error.HTTPError:
                break  # it answers (503: no neuron is healthy)
            except OSError:
                threading.Event().wait(0.02)
                continue
            break
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_a_signal_and_exits_0(tmp_path, signum):
    port = free_port()
    config = write_config(tmp_path, "[gateway]\nlisten = '0.0.0.0:1'\n")
    helper = signal_when_serving(f"http://127.0.0.1:{port}/health", signum)
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "-c",
            config,
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
    )
    helper.join()
    assert result.exit_code == 0, result.output
    assert f'"message":"cortex gateway on http://127.0.0.1:{port}, metrics on' in result.output


def test_a_config_error_is_one_line_and_exit_1(tmp_path):
    config = write_config(tmp_path, "[gateway]\nlisten = 'nowhere'\n")
    result = CliRunner().invoke(main, ["serve", "-c", config])
    assert result.exit_code == 1
    assert f"Error: {config}: gateway.listen: expected HOST:PORT, got 'nowhere'" in result.output


def test_a_flag_is_checked_like_the_file(tmp_path):
    result = CliRunner().invoke(main, ["serve", "-c", write_config(tmp_path), "--listen", "x"])
    assert result.exit_code == 1
    assert "command line: gateway.listen: expected HOST:PORT, got 'x'" in result.output


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        result = CliRunner().invoke(
            main,
            [
                "serve",
                "-c",
                write_config(tmp_path),
                "--listen",
                address,
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        )
    assert result.exit_code == 1
    assert f"Error: cannot listen on {address}: Address already in use" in result.output


def test_an_unreadable_chat_template_is_refused(tmp_path):
    (tmp_path / "models.toml").write_text(
        '[[models]]\nid = "m"\nchat_template = "missing.jinja"\n', encoding="utf-8"
    )
    config = write_config(tmp_path, 'models_config = "models.toml"\n')
    result = CliRunner().invoke(
        main, ["serve", "-c", config, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
    )
    assert result.exit_code == 1
    assert "models[0].chat_template: cannot read chat template" in result.output
    assert str(tmp_path / "missing.jinja") in result.output
