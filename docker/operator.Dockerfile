# syntax=docker/dockerfile:1
# The tern-operator image: the operator binary on distroless, running as uid 65532. The Helm chart in
# charts/tern-operator runs it with the `run` subcommand and its settings in environment variables.
#
# Build from the repository root (BuildKit, for the cache mounts):
#   docker build -f docker/operator.Dockerfile -t ghcr.io/tern-mqtt/tern-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry, git and target caches survive between builds; the binary is copied out of the target
# cache in the same step, because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tern-operator \
    && install -D -m 0755 target/release/tern-operator /out/tern-operator

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tern-operator" \
      org.opencontainers.image.description="Tern's Kubernetes operator: MqttCluster, MqttUser and MqttAcl" \
      org.opencontainers.image.url="https://github.com/tern-mqtt/tern" \
      org.opencontainers.image.source="https://github.com/tern-mqtt/tern" \
      org.opencontainers.image.documentation="https://github.com/tern-mqtt/tern/blob/main/docs/operator.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/tern-operator /usr/local/bin/tern-operator
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# HTTP: /metrics, /healthz, /readyz.
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/local/bin/tern-operator"]
