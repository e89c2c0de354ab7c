#!/usr/bin/env bash
# The Vault test peer: builds the upstream Vault server (the nested module
# internal/vaulttest/server, Vault v1.21.0 from the Go module proxy) once into
# $CREDBROKER_PEERS/vault-1.21.0/vault and prints where it is. When the binary
# is already there it does nothing but print its path, so scripts/test.sh and
# internal/vaulttest.Start can both call it cheaply. The first build compiles
# Vault and every plugin it links (about 2,500 packages, 21 CPU-minutes): on
# two shared, busy cores it took 25 minutes; with a warm build cache, 30s.
#
#   CREDBROKER_PEERS=/somewhere scripts/peers/vault.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
version=1.21.0
peers=${CREDBROKER_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/credbroker-peers}
dir=$peers/vault-$version
bin=$dir/vault
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
src=$PWD/internal/vaulttest/server
echo "building Vault $version into $bin (first time only; a long compile)" >&2
start=$SECONDS
# Built to a temporary name and renamed, so an interrupted build never leaves
# a half-written binary that a later run would take as done. GOFLAGS is
# cleared: the nested module's go.sum is committed, and -mod=mod must not
# rewrite it.
tmp=$(mktemp "$dir/vault.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(cd "$src" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -o "$tmp" .)
chmod 0755 "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "built Vault $version in $((SECONDS - start))s" >&2
echo "$bin"
