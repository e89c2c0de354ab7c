#!/usr/bin/env bash
# Builds the container image from the Dockerfile with the first of docker
# and podman that can reach its engine (`docker info`, `podman info`), with
# the version stamped in as `make build` stamps it.
#
#   scripts/image.sh [TAG]    # default credbroker:$VERSION
#
# VERSION defaults to `git describe --tags --always --dirty`, as in the
# Makefile. ENGINE=docker or ENGINE=podman chooses one. Without an engine
# it says how to get one and exits 1, having built nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
tag=${1:-credbroker:$version}

engine= tried=()
for e in ${ENGINE:-docker podman}; do
  if ! command -v "$e" >/dev/null 2>&1; then
    tried+=("$e: not installed")
  elif ! "$e" info >/dev/null 2>&1; then
    tried+=("$e: installed, but \`$e info\` fails: no engine it can reach")
  else
    engine=$e
    break
  fi
done
if [ -z "$engine" ]; then
  {
    echo "make image: no container engine to build with:"
    printf '  %s\n' "${tried[@]}"
    echo "Start Docker's daemon, or install Podman, which needs none (Debian: apt-get install podman),"
    echo "or build elsewhere from this directory:"
    echo "  docker build --build-arg VERSION=$version -t $tag ."
    echo "The binaries alone need no engine: make release."
  } >&2
  exit 1
fi
echo "\$ $engine build --build-arg VERSION=$version -t $tag ."
exec "$engine" build --build-arg "VERSION=$version" -t "$tag" .
