# credbroker's container image: the static binary on an empty base, run as
# a non-root user, writing only to its two volumes.
#
#   make image                                   # docker or podman; tagged credbroker:VERSION
#   docker build --build-arg VERSION=v1.2.3 -t credbroker:v1.2.3 .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v1.2.3 .
#
# Running it beside an app (the Kubernetes and ECS examples under deploy/
# do the same with their platform's words, and docs/security.md says why):
#
#   docker run --read-only --user 0 --cap-drop ALL --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH \
#     --security-opt no-new-privileges --pid container:APP \
#     -v credbroker-run:/run/credbroker -v credbroker-state:/var/lib/credbroker \
#     -v "$PWD/config:/etc/credbroker:ro" credbroker:VERSION
#
# - --pid container:APP: callers must be in the broker's PID namespace, or
#   the unix attestor cannot see them.
# - The image's user, 65532, serves callers of its own uid with no
#   capability at all. Callers of other uids need two: CAP_SYS_PTRACE to
#   read a caller's executable (/proc/PID/exe), CAP_DAC_READ_SEARCH to list
#   other users' open files (/proc/PID/fd), which TCP listeners need to find
#   their caller, and the socket API needs on kernels older than 6.5. A
#   container runtime gives a non-root user no effective capability from
#   --cap-add (it sets no ambient capabilities), so such a broker runs as
#   uid 0 with every other capability dropped, as above: root without
#   CAP_DAC_OVERRIDE or CAP_CHOWN, confined to what attestation needs.
# - The root filesystem can be read-only: the broker writes its socket to
#   /run/credbroker and its audit log, keys, head, checkpoint and lease
#   store to /var/lib/credbroker (the defaults of socket: and audit.path),
#   both declared volumes. They are root's, of group 65532 and writable by
#   it, so that a new named volume, which starts as a copy of them, is
#   writable by the image's user through its group and by root as their
#   owner, capabilities or not, and passes the broker's check that the
#   socket's directory belongs to root or to itself. Configuration and
#   secrets are read from /etc/credbroker, mounted read-only. socket_group
#   must be a gid: the image has no /etc/group to look a name up in.
# - Health: the image declares no HEALTHCHECK. It has no shell and no HTTP
#   client, and credbroker has no subcommand that probes its own admin
#   endpoint, so the orchestrator probes GET /healthz and /readyz on the
#   admin address (admin:, default 127.0.0.1:9901; a probe from outside the
#   container needs admin: set to an address it can reach), or runs
#   `credbroker get` of a credential the policies give the broker's own
#   uid, as deploy/ecs does.
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
# no shell: the socket's (0775, so that callers can reach the socket, whose
# own mode and group decide who may connect) and the audit log's (0770).
RUN mkdir -p /out/run/credbroker /out/var/lib/credbroker \
 && chmod 0775 /out/run/credbroker \
 && chmod 0770 /out/var/lib/credbroker

# Final stage: nothing but the binary, the CA certificates that verify
# upstreams (https, and TLS to databases), and the two directories.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/usr/local/bin/credbroker /usr/local/bin/credbroker
COPY --from=build --chown=0:65532 /out/run/ /run/
COPY --from=build --chown=0:65532 /out/var/lib/ /var/lib/
ENV PATH=/usr/local/bin
# 65532, as distroless's nonroot: a uid no host account is likely to have.
# Numeric, so that runtimes can check it is not root without an /etc/passwd.
# Its group, 65532, may write the two directories above.
USER 65532:65532
VOLUME ["/run/credbroker", "/var/lib/credbroker"]
ENTRYPOINT ["/usr/local/bin/credbroker", "run"]
CMD ["--config", "/etc/credbroker"]
