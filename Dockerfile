# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY config ./config
COPY openapi ./openapi
RUN cargo build --release --locked --bin oxpecker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin oxpecker \
 && mkdir -p /data /etc/oxpecker \
 && chown oxpecker:oxpecker /data
COPY --from=build /src/target/release/oxpecker /usr/local/bin/oxpecker
# Listen on all interfaces inside the container; data (store, certificate) lives in the volume.
RUN printf 'data_dir = "/data"\n[c2s]\nlisten = ["0.0.0.0:5222"]\ndirect_tls_listen = ["0.0.0.0:5223"]\n[http]\nlisten = ["0.0.0.0:5280"]\n' > /etc/oxpecker/oxpecker.toml
USER oxpecker
VOLUME ["/data"]
EXPOSE 5222 5223 5280
ENV OXPECKER_CONFIG=/etc/oxpecker/oxpecker.toml
ENTRYPOINT ["/usr/local/bin/oxpecker"]
CMD ["serve"]
