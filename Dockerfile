# The conventional rflink image, for machines with access to a registry (Docker Hub):
#
#   docker build -t rflink:bookworm .
#   RFLINK_IMAGE=rflink:bookworm docker compose up -d
#
# It compiles rflink in a rust:1.89-slim builder and runs it on debian:bookworm-slim as the
# non-root user rflink (uid 10001), with a shell and the usual tools for debugging. Without a
# registry (air-gapped machines, our CI), use scripts/docker-build instead: it builds the same
# binaries on the host and wraps them in a FROM scratch image (docker/Dockerfile.scratch).
# Both images have the same user, entrypoint, /data and health probe, so docker-compose.yml
# runs either.

FROM rust:1.89-slim AS build
# protoc and protobuf's well-known types: the etcd client of the `etcd` feature (HA) needs them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p rflink-dist --features etcd --bin rflink-node --bin rflink \
 && mkdir /out \
 && strip --strip-debug -o /out/rflink-node target/release/rflink-node \
 && strip --strip-debug -o /out/rflink target/release/rflink

FROM debian:bookworm-slim
RUN groupadd --gid 10001 rflink \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin rflink \
 && mkdir -p /data \
 && chown rflink:rflink /data
COPY --from=build /out/rflink-node /out/rflink /usr/local/bin/
USER 10001:10001
WORKDIR /data
EXPOSE 6123 6124 8081
ENTRYPOINT ["/usr/local/bin/rflink-node"]
CMD ["--help"]
