# songnet's container image: Debian bookworm's own python3, CPU-only torch, a non-root user.
#
#   docker build -t songnet .                                # torch from PyTorch's CPU index
#   docker build --build-arg TORCH_SOURCE=local -t songnet . # the wheel put in deploy/wheels/
#
# Running it (compose, the one-time `songnet auth`, backups, upgrades): deploy/README.md.

ARG BASE_IMAGE=debian:bookworm-slim

# --- build: a venv with torch and songnet's dependencies ----------------------------------------
FROM ${BASE_IMAGE} AS build

# Debian's python3, so the venv built here runs unchanged on the runtime stage's python3.
# Package versions are not pinned: bookworm's archive keeps only the latest security release
# of each, so a pinned version breaks every build after the next update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Where the CPU torch wheel comes from: a package index (by default PyTorch's CPU-only one; an
# unpinned torch from PyPI is a CUDA build of several GB), or `local` for the wheel put in
# deploy/wheels/ beforehand, for offline builds.
ARG TORCH_SOURCE=https://download.pytorch.org/whl/cpu
# A CA bundle for pip (a path inside the build, e.g. a mounted file) behind a TLS-inspecting proxy.
ARG PIP_CERT

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

SHELL ["/bin/sh", "-eu", "-c"]
RUN python3 -m venv /opt/songnet

# torch alone and without its dependencies (they come from PyPI with songnet's below): the big
# layer, rebuilt only when the torch pin or source changes.
COPY deploy/wheels/ /tmp/wheels/
RUN if [ -z "${PIP_CERT:-}" ]; then unset PIP_CERT; fi; \
    if [ "$TORCH_SOURCE" = local ]; then \
        set -- --no-index --find-links /tmp/wheels; \
    else \
        set -- --index-url "$TORCH_SOURCE"; \
    fi; \
    /opt/songnet/bin/pip install --no-deps "$@" torch==2.13.0; \
    rm -rf /tmp/wheels

# songnet's dependencies as pyproject.toml lists them; rebuilt only when it changes.
COPY pyproject.toml /src/
RUN if [ -z "${PIP_CERT:-}" ]; then unset PIP_CERT; fi; \
    /opt/songnet/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt; \
    /opt/songnet/bin/pip install -r /tmp/requirements.txt; \
    /opt/songnet/bin/pip check

# --- wheel: songnet itself, so a change to the code leaves the venv's layers as they are -------
FROM build AS wheel
ARG PIP_CERT
COPY README.md /src/
COPY songnet_core/ /src/songnet_core/
COPY service/ /src/service/
RUN if [ -z "${PIP_CERT:-}" ]; then unset PIP_CERT; fi; \
    /opt/songnet/bin/pip wheel --no-deps --wheel-dir /dist /src

# --- runtime -----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# tzdata: ZoneInfo for SONGNET_TIMEZONE; ca-certificates: TLS to Spotify.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tzdata ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 songnet \
    && useradd --uid 10001 --gid songnet --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin songnet \
    && mkdir -p /data /exports \
    && chown songnet:songnet /data /exports

COPY --from=build /opt/songnet /opt/songnet
COPY --from=wheel /dist/ /tmp/dist/
RUN /opt/songnet/bin/pip install --no-cache-dir --no-deps --no-index /tmp/dist/songnet-*.whl \
    && rm -rf /tmp/dist \
    && /opt/songnet/bin/songnet --help > /dev/null

ENV PATH=/opt/songnet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SONGNET_DATA_DIR=/data \
    SONGNET_EXPORT_DIR=/exports

USER 10001:10001
WORKDIR /data
VOLUME ["/data", "/exports"]

# Exit 0 while the daemon's heartbeat is fresh and no job is stuck.
HEALTHCHECK --interval=1m --timeout=20s --start-period=2m --retries=3 CMD ["songnet", "health"]

# Exec form, no shell in between: songnet is PID 1 and gets SIGTERM itself; it exits within
# 10 s (compose gives it 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["songnet"]
CMD ["run"]
