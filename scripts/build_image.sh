#!/usr/bin/env bash
# Build songnet's image without a Docker engine, the way the test suite checks it: buildah
# (chroot isolation) on a debian:bookworm-slim reproduced from Debian's packages by debootstrap,
# with the CPU torch wheel from this machine's pip (TORCH_SOURCE=local).
#
#   scripts/build_image.sh [IMAGE]        # default localhost/songnet:test
#
# Needs root and debootstrap, buildah, podman (Debian packages). What is slow is cached under
# $SONGNET_IMAGE_CACHE (default /var/cache/songnet-ci): the base rootfs tarball (keyed by suite
# and month, so it picks up Debian's updates monthly) and the torch wheel (keyed by version);
# buildah's layer cache in /var/lib/containers keeps the venv layers while pyproject.toml and
# the torch pin are unchanged. Environment:
#   SONGNET_IMAGE_CACHE   cache folder
#   TORCH_PIP_ARGS        extra args for `pip download` of the torch wheel (e.g.
#                         "--index-url https://download.pytorch.org/whl/cpu"); default none
#   BUILD_CA_BUNDLE       the host CA bundle mounted for pip inside the build
#                         (default /etc/ssl/certs/ca-certificates.crt where it exists)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${1:-localhost/songnet:test}
CACHE=${SONGNET_IMAGE_CACHE:-/var/cache/songnet-ci}
SUITE=bookworm
BASE_IMAGE=localhost/debian:${SUITE}-slim
TORCH_VERSION=$(sed -n 's/^ *"torch==\([0-9.]*\)".*/\1/p' "$REPO/pyproject.toml" | head -n1)
CA_BUNDLE=${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}

say() { printf '[build_image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in debootstrap buildah podman; do
    command -v "$tool" > /dev/null || die "$tool is missing; install it: apt-get install -y debootstrap buildah podman"
done
[ "$(id -u)" = 0 ] || die "debootstrap and buildah's chroot isolation need root"
[ -n "$TORCH_VERSION" ] || die "no torch==X.Y.Z pin found in pyproject.toml"
mkdir -p "$CACHE"
# One build at a time per cache (CI and a developer on the same machine).
exec 9> "$CACHE/.lock"
flock 9

start=$SECONDS

# 1. The base image: debootstrap's minbase is what debian:bookworm-slim is built from.
base_key="$SUITE-minbase-$(date -u +%Y%m)"
base_tar="$CACHE/$base_key.tar"
if [ ! -s "$base_tar" ]; then
    say "debootstrap $SUITE (minbase) -> $base_tar"
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase "$SUITE" "$rootfs" http://deb.debian.org/debian > "$CACHE/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $CACHE/debootstrap.log"
    # The official image's sources: the release, its updates and security updates.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$rootfs"
    trap - EXIT
    find "$CACHE" -maxdepth 1 -name "$SUITE-minbase-*.tar" ! -name "$base_key.tar" -delete
fi
if [ "$(cat "$CACHE/base-image.key" 2>/dev/null)" != "$base_key" ] || ! buildah inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
    say "import $base_tar as $BASE_IMAGE"
    podman import --quiet "$base_tar" "$BASE_IMAGE" > /dev/null
    echo "$base_key" > "$CACHE/base-image.key"
fi

# 2. The CPU torch wheel, from this machine's pip (its index or find-links).
wheels="$CACHE/wheels-torch-$TORCH_VERSION"
if ! compgen -G "$wheels/torch-$TORCH_VERSION*.whl" > /dev/null; then
    say "pip download torch==$TORCH_VERSION -> $wheels"
    pip=("$REPO/.venv/bin/python" -m pip)
    [ -x "$REPO/.venv/bin/python" ] || pip=(python3 -m pip)
    # shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of arguments
    "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 ${TORCH_PIP_ARGS:-} "torch==$TORCH_VERSION" -d "$wheels.tmp"
    compgen -G "$wheels.tmp/torch-$TORCH_VERSION+cpu-*.whl" > /dev/null \
        || die "pip downloaded $(ls "$wheels.tmp"), not a CPU build; set TORCH_PIP_ARGS=\"--index-url https://download.pytorch.org/whl/cpu\""
    rm -rf "$wheels" && mv "$wheels.tmp" "$wheels"
fi

# 3. The build context: the project's files as git sees them (tracked and new, not ignored),
#    filtered by .dockerignore as a user's `docker build .` would be, plus the wheel.
context=$(mktemp -d "${TMPDIR:-/tmp}/songnet-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -cf -) | tar -C "$context" -xf -
ln "$wheels"/torch-*.whl "$context/deploy/wheels/" 2> /dev/null || cp "$wheels"/torch-*.whl "$context/deploy/wheels/"

# 4. The build. --format docker keeps HEALTHCHECK (OCI drops it); --layers reuses the venv.
ca_args=()
if [ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ]; then
    ca_args=(-v "$CA_BUNDLE:/etc/host-ca.crt:ro" --build-arg PIP_CERT=/etc/host-ca.crt)
fi
bud=(buildah bud --layers --force-rm --format docker --isolation chroot
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_SOURCE=local "${ca_args[@]}"
    -f "$context/Dockerfile")
old_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2> /dev/null || true)
# The build stage (the venv with torch and the dependencies) is tagged too: its cached steps
# are then an image's, which the pruning below keeps, and the next build reuses them.
say "buildah bud --target build -> $IMAGE-build"
"${bud[@]}" --target build -t "$IMAGE-build" "$context" >&2
say "buildah bud -> $IMAGE"
"${bud[@]}" -t "$IMAGE" "$context" >&2
new_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE")
# What no tagged image builds on any more (the image this one replaces; an old pyproject.toml's
# dependencies, a GB each) would otherwise pile up build after build.
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    buildah rmi "$old_id" > /dev/null 2>&1 || true
fi
buildah rmi --prune > /dev/null 2>&1 || true
say "built $IMAGE ($new_id) in $((SECONDS - start)) s"
echo "$IMAGE"
