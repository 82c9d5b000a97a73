# syntax=docker/dockerfile:1
# rollcache image: docker build -t REGISTRY/rollcache:VERSION .

FROM rust:1-bookworm AS build
# build.rs compiles the CRI protos with protoc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds; the binary is copied out
# because the cached target/ is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rollcache --bin rollcache \
    && install -D -m 0755 target/release/rollcache /out/rollcache

# distroless/cc rather than debian-slim: glibc and libgcc are all the binary links (TLS is rustls,
# no OpenSSL), and the pod holds the containerd socket, so an image without shell, package manager
# or other tools leaves the least to misuse. Operators need no shell: the binary is the tool
# (`kubectl exec POD -- rollcache status`, `... rollcache prefetch ...`).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/rollcache /usr/local/bin/rollcache
# uid 0 on purpose: the containerd socket is root:root 0660, and uid 0 reaches it as its owner
# without any capability. The DaemonSet drops every capability, forbids privilege escalation and
# mounts the root filesystem read-only (daemonset/base/daemonset.yaml says the same).
USER 0:0
EXPOSE 9847
ENTRYPOINT ["rollcache"]
CMD ["run"]
