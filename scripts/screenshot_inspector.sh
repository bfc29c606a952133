#!/usr/bin/env bash
# Render one shipped example episode with `mem1 inspect` and screenshot it in headless Chromium.
#
#   scripts/screenshot_inspector.sh [OUT.png]      # default docs/inspector.png
#
# Needs Chromium from Debian packages (`apt-get install -y chromium`). The page is the static HTML
# export (self-contained: no network, no Jupyter): task dev-n4-s0-0 under mem1, turn 2, the mask row
# of a state token in the packed_dense layout, and the same task under full beside it. The PNG is
# re-encoded with a 64-colour palette to stay small. Exit status 0 only if the PNG was written.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/inspector.png}
PY=${PY:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
  echo "screenshot_inspector: chromium not found (apt-get install -y chromium)" >&2
  exit 1
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m mem1lite.cli inspect data/examples/teacher-mem1-n4.jsonl --episode 0 --turn 2 --token -18 \
  --layout packed_dense --compare data/examples/teacher-full-n4.jsonl --html "$work/inspector.html"
mkdir -p "$work/profile" "$(dirname "$OUT")"
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --screenshot="$work/raw.png" --window-size=1400,1000 \
  "file://$work/inspector.html" 2>"$work/chromium.log" || { cat "$work/chromium.log" >&2; exit 1; }
test -s "$work/raw.png" || { echo "screenshot_inspector: no screenshot written" >&2; exit 1; }
"$PY" - "$work/raw.png" "$OUT" <<'PYEOF'
import sys
from PIL import Image

Image.open(sys.argv[1]).convert("RGB").quantize(colors=64).save(sys.argv[2], optimize=True)
PYEOF
echo "wrote $OUT ($(du -k "$OUT" | cut -f1) KB)"
