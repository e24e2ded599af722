"""`cortex serve` as the benchmarks run it: its own process, free loopback ports, no access
log; ready once its first poll has found the fleet."""

import subprocess
import sys
import time
from pathlib import Path


def cortex_serve(config: Path) -> tuple["subprocess.Popen[bytes]", str]:
    """Start `cortex serve --config config` (its log beside it); the process and its URL."""
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cortex_cli", "serve", "--config", str(config),
             "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--no-access-log"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text(errors="replace")
        if "serving" in text and "cortex gateway on " in text:
            return process, text.split("cortex gateway on ")[1].split(",")[0]
        time.sleep(0.01)
    process.kill()
    raise RuntimeError(log.read_text(errors="replace"))
