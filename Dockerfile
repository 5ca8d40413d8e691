# Build: docker build -t jitbot .   Run: see docker-compose.yml
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY migrations migrations
# Cargo.toml declares the benches: cargo refuses a manifest whose targets are missing.
COPY benches benches
COPY src src
RUN cargo build --release --locked --bin jitbot

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/jitbot --create-home jitbot
COPY --from=build /src/target/release/jitbot /usr/local/bin/jitbot
COPY manifest /etc/jitbot
USER jitbot
WORKDIR /var/lib/jitbot
ENV JIT_POLICY=/etc/jitbot/policy.yaml \
    JIT_LISTEN=0.0.0.0:3000
EXPOSE 3000
ENTRYPOINT ["jitbot"]
CMD ["serve"]
