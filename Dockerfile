# Herald: a static binary on distroless, running as a non-root user.
#   docker build -t herald --build-arg VERSION=$(git describe --tags --always) .
#   docker run -p 6379:6379 -p 8080:8080 -v herald-data:/var/lib/herald herald
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Pure Go (Pebble included): CGO_ENABLED=0 gives a static binary.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/herald ./cmd/herald \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
# The data directory belongs to the nonroot user (65532) of the image.
COPY --from=build --chown=65532:65532 /out/data /var/lib/herald
USER 65532:65532
VOLUME /var/lib/herald
# Inside a container Herald must listen on every interface to be reached
# through published ports: this is explicit here, not a default. --raft-addr
# stays on loopback for one node; a cluster gives each node an address the
# others reach (see docker-compose.yml).
ENV HERALD_RESP_ADDR=0.0.0.0:6379 \
    HERALD_HTTP_ADDR=0.0.0.0:8080 \
    HERALD_DATA_DIR=/var/lib/herald
EXPOSE 6379 8080 16379
# SIGTERM: connections drain, a leader hands over leadership (give it the
# time: docker stop -t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
