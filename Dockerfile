# tusker container image.
#
#   docker build -t tusker .
#   docker run -p 1080:1080 -v tusker-data:/data tusker
#
# Stage 1 builds a release binary; stage 2 is a slim runtime that runs it as
# an unprivileged user with its state under /data.

FROM rust:1-bookworm AS build
WORKDIR /src
# Manifests first, so the dependency layer is cached across source changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin tusker \
    && rm -rf src
COPY src ./src
# The placeholder build left stale artefacts for the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin tusker \
    && strip target/release/tusker

# The browser demo (`--demo`): its page and tus-js-client's bundle, which
# npm installs from the lock file.
FROM node:20-bookworm-slim AS demo
WORKDIR /demo
COPY demo/package.json demo/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY demo/*.html demo/*.js demo/*.css ./

FROM debian:bookworm-slim
# CA certificates for HTTPS object storage and hook endpoints.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tusker \
    && useradd --system --uid 10001 --gid tusker --home-dir /data --shell /usr/sbin/nologin tusker \
    && mkdir -p /data \
    && chown tusker:tusker /data
COPY --from=build /src/target/release/tusker /usr/local/bin/tusker
COPY --from=demo /demo /usr/share/tusker/demo
USER tusker:tusker
WORKDIR /data
# Listen on every interface inside the container; state under the volume.
ENV TUSKER_LISTEN=0.0.0.0:1080 \
    TUSKER_DATA_DIR=/data \
    TUSKER_DEMO_DIR=/usr/share/tusker/demo
EXPOSE 1080
VOLUME /data
# SIGTERM (docker stop) triggers the graceful shutdown; give it time with
# `docker stop --time 40` or `stop_grace_period` above --shutdown-timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tusker"]
CMD ["serve"]
