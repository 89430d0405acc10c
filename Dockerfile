# syntax=docker/dockerfile:1
# celestial-server image: build the release binary, fetch the pinned ONNX Runtime library, and ship both
# (the model is embedded in the binary) on a minimal glibc base, as a non-root user.
#
#   docker build -t celestial-server .        # or: podman build --format docker -t celestial-server .
#   docker run --rm -p 3000:3000 --read-only celestial-server
#
# Every base image is a build argument, so a mirror or a pinned digest can be used instead.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG FETCH_IMAGE=docker.io/library/debian:bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- ONNX Runtime: the official library from the pinned PyPI wheel, checksum-verified by the same
# script the repository uses everywhere else (scripts/onnxruntime.sh holds the version and SHA-256).
FROM ${FETCH_IMAGE} AS onnxruntime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/onnxruntime.sh /usr/local/bin/onnxruntime.sh
RUN mkdir /out && lib=$(CELESTIAL_CACHE=/tmp/ort onnxruntime.sh) && cp "$lib" /out/

# --- Rust build: dependencies first, in their own layer, so a source change rebuilds only our crates.
FROM ${RUST_IMAGE} AS build
# nasm assembles libjpeg-turbo's SIMD code (the server's JPEG decoder, built from source by mozjpeg-sys).
# protoc compiles the Open Inference Protocol's gRPC definition (server/build.rs).
RUN command -v nasm >/dev/null && command -v protoc >/dev/null \
 || { apt-get update && apt-get install -y --no-install-recommends nasm protobuf-compiler && rm -rf /var/lib/apt/lists/*; }
WORKDIR /src
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
COPY Cargo.toml Cargo.lock ./
COPY server/Cargo.toml server/Cargo.toml
COPY deployer/Cargo.toml deployer/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
COPY tests/env/programs/Cargo.toml tests/env/programs/Cargo.toml
# celestial-common (the flags' shared syntax) is tiny and rarely changes: it comes whole, before the
# dependency layer.
COPY common common
RUN for c in server deployer tests tests/env/programs; do mkdir -p $c/src && echo 'fn main() {}' > $c/src/main.rs && touch $c/src/lib.rs; done \
 && echo 'fn main() {}' > server/build.rs \
 && cargo build --release --locked -p celestial-server \
 && rm -rf server/src server/build.rs target/release/.fingerprint/celestial-server-* \
      target/release/build/celestial-server-* target/release/deps/celestial_server-* \
      target/release/deps/libcelestial_server-*
COPY model/celestial-bodies.onnx model/celestial-bodies.onnx
COPY server server
RUN cargo build --release --locked -p celestial-server \
 && install -D -m 0755 target/release/celestial-server /out/celestial-server

# --- Runtime: binary + library side by side (the server looks for the library next to itself).
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="celestial-server" \
      org.opencontainers.image.description="BentoML-compatible celestial-bodies classifier server (Rust, ONNX Runtime)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /out/celestial-server /app/celestial-server
COPY --from=onnxruntime /out/ /app/
# The model also ships as a file, as in `deployer build`'s image, so both images serve it the same way
# (the binary embeds the same file as its default).
COPY model/celestial-bodies.onnx /app/model/celestial-bodies.onnx
ENV CELESTIAL_MODEL=/app/model/celestial-bodies.onnx
WORKDIR /app
USER 65532:65532
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/app/celestial-server", "healthcheck"]
ENTRYPOINT ["/app/celestial-server"]
