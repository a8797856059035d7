# syntax=docker/dockerfile:1
#
# pgporter container image.
#
#   docker build -t pgporter .
#   docker run --rm -p 6432:6432 -v "$PWD/myconf:/etc/pgporter:ro" pgporter
#
# The image expects its configuration at /etc/pgporter/pgporter.ini (mount a directory holding
# pgporter.ini and the userlist.txt it names; relative paths resolve against that directory).
# Inside a container set `listen_addr = 0.0.0.0` (or `*`) so the published port is reachable,
# and `unix_socket_dir = /tmp` or empty: the process runs as the unprivileged user `pgporter`.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pgporter \
 && install -D -m 0755 target/release/pgporter /out/pgporter

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system pgporter \
 && useradd --system --gid pgporter --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pgporter \
 && mkdir -p /etc/pgporter
COPY --from=build /out/pgporter /usr/local/bin/pgporter
USER pgporter
EXPOSE 6432
ENTRYPOINT ["pgporter"]
CMD ["/etc/pgporter/pgporter.ini"]
