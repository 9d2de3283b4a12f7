# syntax=docker/dockerfile:1
#
# Relay's container image: a static binary on distroless, running as a
# non-root user, listening on 0.0.0.0:8000.
#
#   docker build -t relay .
#   docker run -d --name relay -p 8000:8000 \
#     -e RELAY_API_KEYS="$(openssl rand -hex 24)" \
#     -e RELAY_PUBLIC_URL=wss://relay.example.com \
#     --read-only --ulimit nofile=65536:65536 --stop-timeout 15 relay
#
# An API key is REQUIRED: the image listens on 0.0.0.0, and Relay refuses
# to serve its open API on a non-loopback address, so without
# RELAY_API_KEYS (comma-separated, 16+ characters each) or
# RELAY_API_KEYS_FILE (a mounted file, one key a line) the container exits
# at once with status 2 and says so. No key or secret is baked in: pass
# them at `docker run` (-e, --env-file, or a mounted secret file).
#
# The HEALTHCHECK runs `relay health`, which GETs /health on the port of
# RELAY_ADDR (there is no curl or shell in the image); `relay health
# -readyz` checks /readyz for an orchestrator's readiness probe. Change
# the port with -e RELAY_ADDR=0.0.0.0:PORT, not with -addr or a config
# file, which the health check does not see (or set RELAY_SERVER too).
#
# `docker build` is not run in this repository's CI (no Docker engine);
# deploy/dockerfile_test.go checks this file without one: see
# docs/operations.md, "Packaging and deployment".

# The exact Go release go.mod asks for (its `go` line), so the build never
# downloads another toolchain. Debian 12, as the runtime image below.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
# BuildKit sets TARGETOS/TARGETARCH for `docker buildx build --platform`;
# empty, they mean the build machine's own.
ARG TARGETOS
ARG TARGETARCH
# A static, stripped binary with no build paths in it. .git is not in the
# build context (.dockerignore), so the VCS revision is not stamped:
# `relay version` in the image prints the Go version only.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/relay ./cmd/relay

# distroless/static: CA certificates, tzdata and /etc/passwd (with the
# nonroot user, 65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /relay
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
ENV RELAY_ADDR=0.0.0.0:8000
EXPOSE 8000
# docker stop sends SIGTERM: Relay stops gracefully within
# RELAY_SHUTDOWN_TIMEOUT (10s); give `docker stop` / Kubernetes'
# terminationGracePeriodSeconds more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/relay", "health"]
ENTRYPOINT ["/relay"]
CMD ["serve"]
