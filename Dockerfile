# The demo app (examples/demo) in a small image. Used by docker-compose.yml:
#   docker compose up --build
# Build stage: the whole workspace is needed to resolve it, only the demo is compiled.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# No debug info in the image (the workspace keeps it for profiling release builds).
RUN CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --locked -p tollgate-demo

# Run stage: the binary, CA roots (for rediss:// URLs), an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home demo
COPY --from=build /src/target/release/demo /usr/local/bin/demo
USER demo
# Listen on every interface inside the container; docker-compose.yml publishes the ports on
# the host's 127.0.0.1 only.
ENV HOST=0.0.0.0 \
    PORT=8081
EXPOSE 8081
# SIGTERM (docker stop) shuts the server down gracefully.
ENTRYPOINT ["/usr/local/bin/demo"]
