#!/usr/bin/env bash
# Builds the MinIO server that providers/aws tests use as a real STS and S3
# peer, once, into the peer cache outside the clone, and prints where it is.
# A second run finds the binary and does nothing else. The build comes from
# the Go module proxy only (GOPROXY without a "direct" fallback), at a pinned
# pseudo-version, with the local Go toolchain. internal/miniotest runs this
# script itself when the binary is missing, so `go test ./providers/aws/`
# works on its own.
#
#   CREDBROKER_PEERS=/some/dir scripts/peers/minio.sh
set -euo pipefail
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
peers=${CREDBROKER_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/credbroker-peers}
dir=$peers/minio-$MINIO_VERSION
bin=$dir/minio
if [ -x "$bin" ]; then
  echo "minio: $bin"
  exit 0
fi
mkdir -p "$peers"
# One build at a time: test packages that start MinIO in parallel, or
# scripts/test.sh beside a `go test`, wait for the first build and reuse it.
exec 9>"$peers/.minio-$MINIO_VERSION.lock"
flock 9
if [ -x "$bin" ]; then
  echo "minio: $bin"
  exit 0
fi
# Build into a temporary directory and rename, so a build that is
# interrupted never leaves a half-written binary at the cached path.
tmp=$(mktemp -d "$peers/.minio-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "minio: building $MINIO_VERSION from the Go module proxy (several minutes on two cores)"
(
  cd "$tmp"
  GOBIN="$tmp/bin" GOPROXY=https://proxy.golang.org GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install "github.com/minio/minio@$MINIO_VERSION"
)
mkdir -p "$dir"
mv "$tmp/bin/minio" "$bin"
echo "minio: built in $((SECONDS - start))s: $bin"
