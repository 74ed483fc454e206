# syntax=docker/dockerfile:1
# The tern-broker image: the broker binary on distroless, running as uid 65532.
#
# Build from the repository root (BuildKit, for the cache mounts):
#   docker build -f docker/broker.Dockerfile -t ghcr.io/tern-mqtt/tern-broker:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Without --config the broker listens on 127.0.0.1:1883 only, which nothing outside the container can
# reach; the operator always passes `--config` with the file it renders. To try the image alone, mount a
# configuration that binds 0.0.0.0 (docs/configuration.md):
#   docker run -p 1883:1883 -v "$PWD/tern.yaml:/etc/tern/tern.yaml:ro" IMAGE --config /etc/tern/tern.yaml

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry, git and target caches survive between builds; the binary is copied out of the target
# cache in the same step, because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tern-broker \
    && install -D -m 0755 target/release/tern-broker /out/tern-broker

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tern-broker" \
      org.opencontainers.image.description="Tern: a clustered MQTT 3.1/3.1.1/5 broker" \
      org.opencontainers.image.url="https://github.com/tern-mqtt/tern" \
      org.opencontainers.image.source="https://github.com/tern-mqtt/tern" \
      org.opencontainers.image.documentation="https://github.com/tern-mqtt/tern/blob/main/docs/configuration.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/tern-broker /usr/local/bin/tern-broker
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# MQTT (1883), MQTT over TLS (8883) and HTTP (9090: /metrics, /healthz, /readyz, admin API), the ports
# the operator's clusters use by default. Listeners are configurable; this is documentation only.
EXPOSE 1883/tcp 8883/tcp 9090/tcp
ENTRYPOINT ["/usr/local/bin/tern-broker"]
