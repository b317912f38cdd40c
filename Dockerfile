# One image with both binaries: the operator (entrypoint) and the agent that
# the operator runs on each gateway node.
#   docker build -t nonstop:dev .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin nonstop-operator --bin nonstop-agent

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/nonstop-dev/nonstop" \
      org.opencontainers.image.title="nonstop"
COPY --from=build /src/target/release/nonstop-operator /src/target/release/nonstop-agent /usr/local/bin/
USER nonroot
ENTRYPOINT ["/usr/local/bin/nonstop-operator"]
