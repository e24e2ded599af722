"""Claude Code itself, for the tests that drive it: installed from npm when missing, run once.

The tests pin one release (the npm registry's ``@anthropic-ai/claude-code``) and install it into
the repository's ``.cache`` folder; a machine without npm fails the test (CI has Node). A turn
is ``claude -p PROMPT --model MODEL`` against a base URL, in a fresh ``HOME``, with telemetry
and the traffic a local gateway cannot answer turned off (notes/claude-code.md).
"""

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["CLAUDE_CODE", "claude_code", "claude_turn"]

CLAUDE_CODE = "2.1.197"
"""The Claude Code release the tests drive."""


def claude_code(cache: Path) -> Path:
    """The ``claude`` executable, installed under ``cache`` first when it is not there.

    Raises:
        RuntimeError: npm is missing, or the install failed.
    """
    folder = cache / f"claude-code-{CLAUDE_CODE}"
    binary = folder / "node_modules" / ".bin" / "claude"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm (Node.js) is needed to install Claude Code for this test")
        command = [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund"]
        subprocess.run([*command, f"@anthropic-ai/claude-code@{CLAUDE_CODE}"], check=True)
    return binary


async def claude_turn(
    binary: Path, base_url: str, model: str, home: Path, prompt: str = "say hi"
) -> tuple[int, str, str]:
    """Run one non-interactive turn; its exit code, standard output and standard error."""
    env = {
        "PATH": os.environ["PATH"],  # noqa: TID251 - where node is, passed on
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "any",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    claude = await asyncio.create_subprocess_exec(
        str(binary),
        *("-p", prompt, "--model", model),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await claude.communicate()
    assert claude.returncode is not None
    return claude.returncode, out.decode(), err.decode()
