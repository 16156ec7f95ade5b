# The server in a small image: build with the Rust toolchain, run on Debian
# slim with only CA certificates (for the API's TLS) and the one binary.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /app

# Dependencies first, in their own layer: a dummy crate with the real
# manifest builds every dependency, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources; templates and static files are compiled into the binary.
COPY src ./src
COPY templates ./templates
COPY static ./static
# COPY keeps the files' old times: touch them so cargo rebuilds the crate.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked

FROM debian:bookworm-slim
# Pinning the CA bundle would freeze it; it must follow Debian's updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /app/target/release/oauth-consumer-server /usr/local/bin/oauth-consumer-server
USER 10001
ENV PORT=8080
EXPOSE 8080
# The binary checks itself: the image has no curl or wget.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["oauth-consumer-server", "healthcheck"]
CMD ["oauth-consumer-server"]
