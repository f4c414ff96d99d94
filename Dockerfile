# syntax=docker/dockerfile:1
#
# chump's container image: build with the Rust toolchain, run on a small
# Debian base with CA certificates and the kustomize binary, as a non-root
# user.
#
#   docker build -t ghcr.io/chump-dev/chump:0.1.0 .
#
# The build needs network access (crates and the kustomize release); the
# tests and CI never build this image.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build

# aws-lc-rs (TLS to the API server and git hosts) builds C code.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace (see .dockerignore): cargo loads every target the
# manifests declare, tests and benches included, even to build one binary.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chump \
 && install -m 0755 target/release/chump /usr/local/bin/chump

# ---------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS kustomize

ARG KUSTOMIZE_VERSION=5.5.0
# Set by BuildKit for the platform being built (amd64, arm64); amd64 for
# the legacy builder.
ARG TARGETARCH

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/kustomize
# The official release, checked against the release's checksums.txt.
RUN set -eu; \
    base="https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2Fv${KUSTOMIZE_VERSION}"; \
    file="kustomize_v${KUSTOMIZE_VERSION}_linux_${TARGETARCH:-amd64}.tar.gz"; \
    curl -fsSLo "$file" "$base/$file"; \
    curl -fsSLo checksums.txt "$base/checksums.txt"; \
    grep " $file\$" checksums.txt | sha256sum -c -; \
    tar -xzf "$file" kustomize; \
    install -m 0755 kustomize /usr/local/bin/kustomize; \
    /usr/local/bin/kustomize version

# ---------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 chump \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/chump \
        --no-create-home --shell /usr/sbin/nologin chump \
 && mkdir -p /data /var/cache/chump /var/lib/chump \
 && chown 65532:65532 /data /var/cache/chump /var/lib/chump

COPY --from=kustomize /usr/local/bin/kustomize /usr/local/bin/kustomize
COPY --from=build /usr/local/bin/chump /usr/local/bin/chump

# In a pod, chump talks to the API server with its service account (no
# KUBECONFIG). deploy/base sets these too, and mounts /data (a volume for
# SQLite) and /var/cache/chump (the git cache).
ENV CHUMP_BIND=0.0.0.0:8000 \
    CHUMP_DATABASE=sqlite:///data/chump.db \
    CHUMP_WORKDIR=/var/cache/chump \
    CHUMP_KUSTOMIZE=/usr/local/bin/kustomize \
    CHUMP_LOG_FORMAT=json \
    HOME=/var/lib/chump

USER 65532:65532
WORKDIR /var/lib/chump
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["chump", "serve"]
