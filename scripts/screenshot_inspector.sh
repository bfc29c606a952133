#!/usr/bin/env bash
# Screenshot the trajectory inspector in headless Chromium: the static page, or the live widget.
#
#   scripts/screenshot_inspector.sh [OUT.png]         # static page (default docs/inspector.png, the README's)
#   scripts/screenshot_inspector.sh --lab [OUT.png]   # the live widget in JupyterLab (default runs/inspector-lab.png)
#
# Needs Chromium from Debian packages (`apt-get install -y chromium`); nothing goes to the network.
# The static page shows the headline picture: one N = 16 test task played by the headline model under
# mem1 (data/examples/sft-n16-hop2-mem1-n16.jsonl, scripts/make_example_trajectories.sh) at turn 20,
# the mask row of a state token, and the teacher on the same task under full context beside it. The
# widget shows task dev-n4-s0-0 of data/examples under mem1 and full.
#
# - static: `mem1 inspect ... --html` writes the self-contained page, `chromium --screenshot` shoots it.
# - --lab: a throwaway JupyterLab (temporary config/runtime/settings folders, a free local port,
#   no token) opens a one-cell notebook that builds the Inspector; Chromium is driven over the
#   DevTools protocol to run the cell, waits until the widget's panes are in the page, and shoots.
#   This checks the real widget front end (ipywidgets' HTML views), not only our HTML strings.
#
# The PNG is re-encoded with a 64-colour palette to stay small. Exit status 0 only if it was written.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=static
if [ "${1:-}" = "--lab" ]; then MODE=lab; shift; fi
if [ "$MODE" = lab ]; then OUT=${1:-runs/inspector-lab.png}; else OUT=${1:-docs/inspector.png}; fi
# the static page is tall: the side-by-side with full context sits below the focused turn
if [ "$MODE" = static ]; then WINDOW=${WINDOW:-1400,1720}; fi
PY=${PY:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
  echo "screenshot_inspector: chromium not found (apt-get install -y chromium)" >&2
  exit 1
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
work=$(mktemp -d)
lab_pid=""
cleanup() {
  if [ -n "$lab_pid" ]; then kill "$lab_pid" 2>/dev/null && wait "$lab_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/profile" "$(dirname "$OUT")"
CHROME_FLAGS=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=${WINDOW:-1400,1000})

if [ "$MODE" = static ]; then
  "$PY" -m mem1lite.cli inspect data/examples/sft-n16-hop2-mem1-n16.jsonl --episode 0 --turn 20 --token -18 \
    --compare data/examples/teacher-full-n16.jsonl --html "$work/inspector.html"
  timeout 120 "$CHROMIUM" "${CHROME_FLAGS[@]}" --screenshot="$work/raw.png" \
    "file://$work/inspector.html" 2>"$work/chromium.log" || { cat "$work/chromium.log" >&2; exit 1; }
else
  cat >"$work/inspector.py" <<PYEOF
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%
from mem1lite.inspector_widget import Inspector

insp = Inspector.from_paths(["$PWD/data/examples/teacher-mem1-n4.jsonl", "$PWD/data/examples/teacher-full-n4.jsonl"])
insp.turn.value = 2
insp.token.value += 14
insp.layout.value = "packed_dense"
insp
PYEOF
  "$PY" -m jupytext --to ipynb "$work/inspector.py" >/dev/null
  port=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  mkdir -p "$work/settings/@jupyterlab/apputils-extension"
  echo '{"fetchNews": "false", "checkForUpdates": false}' \
    >"$work/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
  JUPYTER_CONFIG_DIR="$work/cfg" JUPYTER_RUNTIME_DIR="$work/rt" IPYTHONDIR="$work/ipy" \
    JUPYTERLAB_SETTINGS_DIR="$work/settings" JUPYTER_DATA_DIR="$work/data" \
    "$PY" -m jupyterlab --no-browser --ip 127.0.0.1 --port "$port" --ServerApp.token= \
    --ServerApp.password= --allow-root --LabApp.expose_app_in_browser=True \
    --ServerApp.root_dir="$work" >"$work/lab.log" 2>&1 &
  lab_pid=$!
  "$PY" - "$CHROMIUM" "http://127.0.0.1:$port/lab/tree/inspector.ipynb" "$work/raw.png" "${CHROME_FLAGS[@]}" \
    <<'PYEOF' || { tail -20 "$work/lab.log" >&2; exit 1; }
"""Drive headless Chromium over the DevTools protocol: open the notebook, run it, wait, screenshot."""
import base64, json, socket, subprocess, sys, time, urllib.request

import websocket  # websocket-client, a jupyter_server dependency

chromium, url, out, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
flags = [f for f in flags if not f.startswith("--window-size")] + ["--window-size=1400,1000"]
chrome = subprocess.Popen([chromium, *flags, f"--remote-debugging-port={port}", "about:blank"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait(predicate, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit(f"screenshot_inspector: timed out waiting for {what}")


try:
    wait(lambda: urllib.request.urlopen(url, timeout=2).status == 200, 90, "JupyterLab")
    tabs = wait(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json")), 30, "Chromium")
    ws = websocket.create_connection(next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"],
                                     suppress_origin=True, timeout=120)
    counter = [0]

    def call(method, **params):
        counter[0] += 1
        ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == counter[0]:
                return msg.get("result", {})

    def js(expression):
        return call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)[
            "result"].get("value")

    call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
    call("Page.navigate", url=url)
    # headless Chromium has no focus, so no "current" widget: find the notebook panel and activate it
    kernel_ready = """(() => { const a = window.jupyterapp;
        const w = a && Array.from(a.shell.widgets('main')).find(x => x.sessionContext);
        if (w) a.shell.activateById(w.id);
        const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
        return !!(k && k.connectionStatus === 'connected' && k.status === 'idle'); })()"""
    wait(lambda: js(kernel_ready), 120, "the notebook's kernel")
    js("window.jupyterapp.commands.execute('notebook:run-all-cells'); true")  # not awaited
    panes = wait(lambda: js("document.querySelectorAll('.jp-OutputArea .mi .mi-pane').length"), 120, "the widget")
    time.sleep(1.0)  # let the layout settle
    js("window.jupyterapp.shell.collapseLeft && window.jupyterapp.shell.collapseLeft()")
    time.sleep(0.5)
    open(out, "wb").write(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
    print(f"widget rendered in JupyterLab: {panes} token panes")
finally:
    chrome.terminate()
    chrome.wait(timeout=30)
PYEOF
fi
test -s "$work/raw.png" || { echo "screenshot_inspector: no screenshot written" >&2; exit 1; }
"$PY" - "$work/raw.png" "$OUT" <<'PYEOF'
import sys
from PIL import Image

Image.open(sys.argv[1]).convert("RGB").quantize(colors=64).save(sys.argv[2], optimize=True)
PYEOF
echo "wrote $OUT ($(du -k "$OUT" | cut -f1) KB)"
