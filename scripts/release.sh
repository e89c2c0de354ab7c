#!/usr/bin/env bash
# Builds the release binaries: credbroker for linux/amd64 and linux/arm64,
# static (CGO_ENABLED=0) and built as `make build` builds (the same flags;
# deploy/packaging_test.go holds them equal), with the version stamped in,
# and their SHA-256 checksums in SHA256SUMS, the format `sha256sum -c` reads.
#
#   scripts/release.sh [DIR]       # default dist/
#   VERSION=v1.2.3 scripts/release.sh
#
#   DIR/credbroker-linux-amd64
#   DIR/credbroker-linux-arm64
#   DIR/SHA256SUMS
#
# VERSION defaults to `git describe --tags --always --dirty`, as in the
# Makefile; `credbroker version` prints it. DIR's earlier release files are
# replaced; nothing else in it is touched. GO names the go command (go).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
GO=${GO:-go}
arches=(amd64 arm64)

mkdir -p "$out"
# Built under temporary names and renamed once all are built and summed, so
# that an interrupted release never leaves a binary that SHA256SUMS does not
# describe.
tmp=$(mktemp -d "$out/.release.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for arch in "${arches[@]}"; do
  echo "building credbroker $VERSION for linux/$arch"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -buildvcs=auto -ldflags "-s -w -X main.version=$VERSION" -o "$tmp/credbroker-linux-$arch" ./cmd/credbroker
done
(cd "$tmp" && sha256sum "${arches[@]/#/credbroker-linux-}" >SHA256SUMS)
for arch in "${arches[@]}"; do
  mv -f "$tmp/credbroker-linux-$arch" "$out/"
done
mv -f "$tmp/SHA256SUMS" "$out/SHA256SUMS"
echo "$out:"
(cd "$out" && cat SHA256SUMS)
