# credbroker's container image: the static binary on an empty base, run as
# a non-root user, writing only to its two volumes.
#
#   make image                                   # docker or podman; tagged credbroker:VERSION
#   docker build --build-arg VERSION=v1.2.3 -t credbroker:v1.2.3 .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v1.2.3 .
#
# Running it beside an app (the Kubernetes and ECS examples under deploy/
# do the same with their platform's words):
#
#   docker run --read-only --cap-drop ALL --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH \
#     --pid container:APP -v credbroker-run:/run/credbroker -v credbroker-state:/var/lib/credbroker \
#     -v "$PWD/config:/etc/credbroker:ro" credbroker:VERSION
#
# - --pid container:APP: callers must be in the broker's PID namespace, or
#   the unix attestor cannot see them (README, "Privileges the broker
#   needs").
# - SYS_PTRACE lets a non-root broker read the executable of a caller of
#   another uid (/proc/PID/exe); DAC_READ_SEARCH lets it list other users'
#   open files (/proc/PID/fd), which TCP listeners need to find their
#   caller, and which the unix attestor needs on kernels older than 6.5.
#   A broker whose callers all run as its own uid needs neither.
# - The root filesystem can be read-only: the broker writes its socket to
#   /run/credbroker and its audit log, keys, head, checkpoint and lease
#   store to /var/lib/credbroker (the defaults of socket: and audit.path),
#   both declared volumes, owned by the image's user so that a new named
#   volume starts out writable by it. Configuration and secrets are read
#   from /etc/credbroker, mounted read-only. socket_group must be a gid:
#   the image has no /etc/group to look a name up in.
# - Health: the image declares no HEALTHCHECK. It has no shell and no HTTP
#   client, and credbroker has no subcommand that probes its own admin
#   endpoint, so the orchestrator probes GET /healthz and /readyz on the
#   admin address (admin:, default 127.0.0.1:9901; a probe from outside the
#   container needs admin: set to an address it can reach).
#
# The bases are pinned by explicit tag, not by digest: golang's tag names
# the exact Go release go.mod asks for (deploy/packaging_test.go holds the
# two equal), and the final stage is scratch, which has nothing to pin. A
# registry's digest cannot be resolved where this file is written and
# tested; a build pipeline that wants digests pins them with its own
# updater (Renovate, Dependabot) on top of these tags.

# Build stage: the Makefile's build command, its flags checked equal to the
# Makefile's by deploy/packaging_test.go. It runs on the build machine's
# platform and cross-compiles for the target's (no emulation: CGO_ENABLED=0).
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
# VERSION is stamped into the binary as `make build` does (git describe);
# .git is not in the build context, so `make image` passes it.
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=auto -ldflags "-s -w -X main.version=${VERSION}" -o /out/usr/local/bin/credbroker ./cmd/credbroker
# The directories the broker writes, made here because the final stage has
# no shell: the socket's (0755, so that callers can reach the socket, whose
# own mode and group decide who may connect) and the audit log's (0700).
RUN mkdir -p /out/run/credbroker /out/var/lib/credbroker \
 && chmod 0755 /out/run/credbroker \
 && chmod 0700 /out/var/lib/credbroker

# Final stage: nothing but the binary, the CA certificates that verify
# upstreams (https, and TLS to databases), and the two directories.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/usr/local/bin/credbroker /usr/local/bin/credbroker
COPY --from=build --chown=65532:65532 /out/run/ /run/
COPY --from=build --chown=65532:65532 /out/var/lib/ /var/lib/
ENV PATH=/usr/local/bin
# 65532, as distroless's nonroot: a uid no host account is likely to have.
# Numeric, so that runtimes can check it is not root without an /etc/passwd.
USER 65532:65532
VOLUME ["/run/credbroker", "/var/lib/credbroker"]
ENTRYPOINT ["/usr/local/bin/credbroker", "run"]
CMD ["--config", "/etc/credbroker"]
