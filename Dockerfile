# One image, one binary, a role per subcommand.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --bin beacon && cp "${CARGO_TARGET_DIR:-target}/debug/beacon" /beacon

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/beacon beacon && mkdir -p /var/lib/beacon && chown beacon /var/lib/beacon
COPY --from=build /beacon /usr/local/bin/beacon
USER beacon
ENV BEACON_DATA_DIR=/var/lib/beacon
ENTRYPOINT ["beacon"]
CMD ["standalone"]
