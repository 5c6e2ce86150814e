# syntax=docker/dockerfile:1
# mailboxd: a small runtime image, non-root, read-only-root-filesystem friendly.
# Build:  docker build -t mailboxd .
# Run:    docker run --read-only -v /etc/mailboxd:/etc/mailboxd:ro mailboxd run --config /etc/mailboxd/mailboxd.toml

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The image carries the lab by default (the compose stack runs `mailboxd lab` from it);
# `--build-arg FEATURES=production` builds the daemon alone, with no lab or acceptor code and
# no test failpoints (MAILBOXD_FAILPOINT, src/failpoint.rs).
ARG FEATURES=default
# Dependencies first, so a source change does not rebuild them: the workspace's manifests
# with empty crates.
COPY Cargo.toml Cargo.lock ./
COPY xml/Cargo.toml xml/
COPY winrm/Cargo.toml winrm/
COPY ps-templates/Cargo.toml ps-templates/
COPY lab/Cargo.toml lab/
RUN for c in . xml winrm ps-templates lab; do mkdir -p $c/src && touch $c/src/lib.rs; done \
    && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked 2>/dev/null || true
COPY . .
RUN touch src/main.rs src/lib.rs */src/lib.rs \
    && cargo build --release --locked --bin mailboxd \
       $([ "$FEATURES" = production ] && echo --no-default-features)

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin mailboxd
COPY --from=build /src/target/release/mailboxd /usr/local/bin/mailboxd
USER 10001:10001
# The admin listener (dashboard, /healthz, /readyz, /metrics, /api/v1).
EXPOSE 8080
ENV MAILBOXD__ADMIN__LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/mailboxd"]
CMD ["run", "--config", "/etc/mailboxd/mailboxd.toml"]
