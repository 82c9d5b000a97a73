# rollcache container image.
# Build: docker build -t REGISTRY/rollcache:TAG .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin rollcache

# distroless/cc: glibc and libgcc only, no shell or package manager — nothing for an attacker to use,
# and the binary needs nothing else (TLS is rustls, no OpenSSL).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/rollcache /usr/local/bin/rollcache
# uid 0: containerd's socket is root:root 0660, and uid 0 reaches it as its owner without any capability.
# The DaemonSet drops every capability, forbids privilege escalation and mounts the root fs read-only.
USER 0
EXPOSE 9847
ENTRYPOINT ["rollcache"]
CMD ["run"]
