# syntax=docker/dockerfile:1
# visionlake for servers: one image for ingest, workers and the dashboard (`visionlake serve`), with
# the extras a deployment on Kafka, PostgreSQL and S3 needs. No sample media: videos, cameras and
# image folders come from outside (a stream URL, a mounted folder). See docs/deploy.md.
#
#   docker build -t visionlake .
#   docker run --rm visionlake --help

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a virtual environment in /opt/visionlake ------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# only what the package is built from (.dockerignore lets nothing else into the context)
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/visionlake \
 && /opt/visionlake/bin/pip install ".[kafka,postgres,s3,dashboard,metrics]"
# tracking (`worker --track`): trackers and supervision require opencv-python (OpenCV 5), which would
# replace the opencv-python-headless 4.x pinned in pyproject.toml, so they go in without their
# dependencies, with the few they use (as `scripts/setup.sh track` does); then the check that OpenCV
# is still the headless 4.x and every built-in detector loads
RUN /opt/visionlake/bin/pip install requests tqdm defusedxml \
 && /opt/visionlake/bin/pip install --no-deps "trackers==2.6.1" "supervision==0.31.2" "pydeprecate==0.13.0" \
 && ! /opt/visionlake/bin/pip show -q opencv-python \
 && /opt/visionlake/bin/python -c "import cv2, trackers; assert cv2.__version__.startswith('4.'), cv2.__version__" \
 && /opt/visionlake/bin/visionlake detectors

# --- runtime: the environment and a user, nothing else ----------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 visionlake \
 && useradd --system --uid 10001 --gid visionlake --home-dir /home/visionlake --create-home \
      --shell /usr/sbin/nologin visionlake \
 && mkdir -p /var/lib/visionlake \
 && chown visionlake:visionlake /var/lib/visionlake
COPY --from=build /opt/visionlake /opt/visionlake
# VISIONLAKE_HOME: the lake directory (visionlake.toml, and the embedded backends when no URL is set);
# the URLs come from VISIONLAKE_LOG, VISIONLAKE_CATALOG and VISIONLAKE_ARCHIVE
ENV PATH=/opt/visionlake/bin:$PATH \
    VISIONLAKE_HOME=/var/lib/visionlake \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/visionlake
# 8000: `serve`; 9780: a worker's --metrics-port; 9790: an ingest's --metrics-port
EXPOSE 8000 9780 9790
# HEALTHCHECK_URL (set per service: the dashboard's /login, a worker's or an ingest's /metrics) is
# fetched when set; without it the check is that the program starts
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD if [ -n "$HEALTHCHECK_URL" ]; then python -c 'import os, urllib.request; urllib.request.urlopen(os.environ["HEALTHCHECK_URL"], timeout=5)'; else visionlake --version; fi
ENTRYPOINT ["visionlake"]
CMD ["--help"]
