# vertex-proxy: a small static-ish binary on distroless. Cloud Run needs linux/amd64.

# --- build --------------------------------------------------------------------------------
FROM --platform=linux/amd64 rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a change to src/ does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# The same build command CI runs (.ci/run).
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# --- runtime ------------------------------------------------------------------------------
# glibc and CA certificates, no shell, runs as uid 65532.
FROM --platform=linux/amd64 gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/vertex-proxy /usr/local/bin/vertex-proxy
USER nonroot:nonroot
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vertex-proxy"]
