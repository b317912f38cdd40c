# One image with both binaries: the operator (the entrypoint) and the agent
# the operator runs on each gateway node (the chart's agent.image defaults to
# this image). Build and tag it with the crate's version:
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     -t ghcr.io/nonstop-dev/nonstop:0.1.0 .
#
# Or from binaries already built on the host by the build stage's own cargo
# command (how the lab builds it with buildah: the build stage needs the
# rust image and crates.io inside the builder, which the lab does not have):
#
#   cargo build --release --locked --workspace --bin nonstop-operator --bin nonstop-agent
#   docker build --build-arg BINARIES=prebuilt -t ghcr.io/nonstop-dev/nonstop:0.1.0 .
#
# Reproducible: the lock file is used as is (--locked), build paths are
# remapped out of the binaries, BuildKit takes file times from
# SOURCE_DATE_EPOCH; pin both base images by digest when releasing.

# Where the binaries come from: `build` (compiled here) or `prebuilt`.
ARG BINARIES=build

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_INCREMENTAL=0 \
    RUSTFLAGS="--remap-path-prefix=/src=. --remap-path-prefix=/usr/local/cargo=/cargo"
RUN cargo build --release --locked --workspace --bin nonstop-operator --bin nonstop-agent

FROM scratch AS prebuilt
COPY target/release/nonstop-operator target/release/nonstop-agent /src/target/release/

FROM ${BINARIES} AS binaries

# distroless/cc: glibc and nothing else (no shell, no package manager). Not a
# static binary on distroless/static: the musl target cannot be installed
# here (rustup downloads are not allowed; Debian's packages only), and a
# static glibc build cannot resolve names. The agent runs as root with only
# NET_BIND_SERVICE (the operator sets that per pod); the operator as nonroot.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/nonstop-dev/nonstop" \
      org.opencontainers.image.title="nonstop" \
      org.opencontainers.image.description="BGP gateways on Kubernetes that upgrade without withdrawing a route" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /src/target/release/nonstop-operator /src/target/release/nonstop-agent /usr/local/bin/
USER nonroot
ENTRYPOINT ["/usr/local/bin/nonstop-operator"]
