#!/usr/bin/env bash
# Synthesize the base images the project builds on, from Debian packages only (no image pulls are
# possible here), and tag them in podman's local storage under the public names the Dockerfile and
# `deployer build` default to:
#
#   gcr.io/distroless/cc-debian12:nonroot   distroless-cc stand-in: extracted .debs (apt-get download +
#                                            dpkg-deb -x), passwd/group with nonroot 65532, USER 65532
#   debian:bookworm-slim                     debootstrap --variant=minbase bookworm, trimmed like -slim
#   rust:<major.minor>-slim-bookworm         the slim rootfs + gcc/libc6-dev/pkg-config + this machine's
#                                            active rustup toolchain in /usr/local (RUSTUP_HOME/CARGO_HOME)
#   localhost/celestial/distroless-cc-debian12-arm64:nonroot
#                                            the distroless stand-in from Debian's arm64 packages (only
#                                            `build-arm64`: the arm64 half of scripts/arm64-check's base index)
#
# Usage: images.sh build      build what is missing (each image is cached by a hash of its recipe:
#                             this script, the Debian package versions, the Rust toolchain version);
#                             prints "local-name recipe-key" for each image
#        images.sh list       print "local-name recipe-key" for each image
#        images.sh build-arm64  build the two halves of a multi-platform base when missing: the amd64
#                             distroless stand-in and the arm64 one (its own recipe key: this
#                             script's two distroless recipes and the arm64 package versions)
# The rootfs tarballs of the two small images are cached in ${CELESTIAL_CACHE:-~/.cache/celestial}/
# testenv/images/, so a lost podman storage is refilled by an import instead of a rebuild.
# Pushing to the loopback registry is done by `testenv up` (see push_images there).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/testenv/images
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers/containers.conf}
export CONTAINERS_REGISTRIES_CONF=${CONTAINERS_REGISTRIES_CONF:-$HERE/containers/registries.conf}
MIRROR=${TESTENV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
LABEL=dev.celestial.testenv.recipe

DISTROLESS=gcr.io/distroless/cc-debian12:nonroot
DISTROLESS_ARM64=localhost/celestial/distroless-cc-debian12-arm64:nonroot
DEBIAN=docker.io/library/debian:bookworm-slim
RUST_MM=$(rustc -V | awk '{print $2}' | cut -d. -f1,2)
RUST=docker.io/library/rust:$RUST_MM-slim-bookworm

DISTROLESS_DEBS=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 gcc-12-base libstdc++6 libssl3)
RUST_DEBS=(gcc libc6-dev pkg-config make)

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

# the versions apt would fetch now, so a Debian point release changes the keys (one apt-cache call)
policy() { apt-cache policy "${DISTROLESS_DEBS[@]}" "${RUST_DEBS[@]}" libc6 base-files debootstrap |
  awk '/^[^ ]/{p=$1} /Candidate:/{if ($2 != "(none)") print p, $2}'; }
POLICY=$(policy)
if [ "${1:-build}" = build ] && [ "$(wc -l <<<"$POLICY")" -lt 14 ]; then # no package lists yet (fresh machine)
  apt-get update -qq >&2 && POLICY=$(policy)
fi
candidate_versions() { local p; for p in "$@"; do grep "^$p: " <<<"$POLICY"; done; }
self_hash() { sed -n '/^# --- recipe:'"$1"'/,/^# --- end:'"$1"'/p' "$0"; }

key_distroless() { { self_hash distroless; candidate_versions "${DISTROLESS_DEBS[@]}"; } | sha256sum | cut -c1-16; }
# apt's view of Debian's arm64 packages: its own lists and cache under $CACHE/apt-arm64, refreshed
# when older than a day (the host's own apt state is not touched)
ARM64_STATE=$CACHE/apt-arm64
ARM64_APT=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root
  -o Dir::State::Lists="$ARM64_STATE/lists" -o Dir::Cache="$ARM64_STATE/cache"
  -o Dir::State::status="$ARM64_STATE/status")
arm64_apt_update() {
  mkdir -p "$ARM64_STATE/lists/partial" "$ARM64_STATE/cache/archives/partial"; touch "$ARM64_STATE/status"
  if [ -z "$(find "$ARM64_STATE/lists" -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null)" ]; then
    apt-get "${ARM64_APT[@]}" update -qq >&2 || die "apt-get update (arm64) failed"
  fi
}
key_distroless_arm64() {
  { self_hash distroless; self_hash distroless_arm64
    apt-cache "${ARM64_APT[@]}" policy "${DISTROLESS_DEBS[@]}" |
      awk '/^[^ ]/{p=$1} /Candidate:/{if ($2 != "(none)") print p, $2}'; } | sha256sum | cut -c1-16
}
key_debian() { { self_hash debian; candidate_versions libc6 base-files debootstrap; echo "$MIRROR"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null; } | sha256sum | cut -c1-16; }
key_rust() {
  { self_hash rust; key_debian; candidate_versions "${RUST_DEBS[@]}"; rustc -vV; cat "$HERE/images/rust.Containerfile"; } |
    sha256sum | cut -c1-16
}

have_image() { # name key -> true when podman storage holds NAME built from recipe KEY
  [ "$(podman image inspect --format "{{index .Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$2" ]
}

tar_rootfs() { # dir out.tar: deterministic order and owners
  tar --sort=name --numeric-owner --owner=0 --group=0 --xattrs -C "$1" -cf "$2" .
}

# --- recipe:distroless
# The rootfs tarball from DISTROLESS_DEBS; the apt-get options after TARBALL choose another
# architecture's packages (build_distroless_arm64).
distroless_rootfs() { # tarball [apt-get options...]
  local tarball=$1; shift
  if [ ! -f "$tarball" ]; then
    local work; work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
    mkdir -p "$work/debs" "$work/root"
    (cd "$work/debs" && apt-get -o APT::Sandbox::User=root "$@" download "${DISTROLESS_DEBS[@]}" >/dev/null) || die "apt-get download failed"
    for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/root"; done
    local r=$work/root
    # what distroless adds on top of the packages
    mkdir -p "$r/home/nonroot" "$r/tmp" "$r/root" "$r/etc/ssl/certs"
    chmod 1777 "$r/tmp"; chmod 700 "$r/root"
    cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat > "$r/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
    printf 'hosts: files dns\n' > "$r/etc/nsswitch.conf"
    # ca-certificates' postinst would build the bundle; do it the way update-ca-certificates does
    find "$r/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat > "$r/etc/ssl/certs/ca-certificates.crt"
    [ -s "$r/etc/ssl/certs/ca-certificates.crt" ] || die "empty CA bundle"
    ln -sf /usr/share/zoneinfo/Etc/UTC "$r/etc/localtime"
    # no package manager in a distroless image: drop docs, manuals and maintainer data
    rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/info" "$r/usr/share/lintian" \
      "$r/usr/share/ca-certificates" "$r/usr/share/gcc" "$r/usr/share/locale"
    chown -R 0:0 "$r"; chown 65532:65532 "$r/home/nonroot"; chmod 700 "$r/home/nonroot"
    find "$r" -newermt @0 -exec touch -h -d @0 {} + 2>/dev/null || true
    mkdir -p "$CACHE"; tar_rootfs "$r" "$tarball.tmp"; mv "$tarball.tmp" "$tarball"
  fi
}
import_distroless() { # tarball key name [podman import options...]
  local tarball=$1 key=$2 name=$3; shift 3
  podman import -q "$@" \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change "LABEL $LABEL=$key" \
    --change 'LABEL org.opencontainers.image.description=distroless-cc-debian12-stand-in-synthesized-from-Debian-packages' \
    "$tarball" "$name" >/dev/null
}
build_distroless() {
  local key=$1
  distroless_rootfs "$CACHE/distroless-$key.tar"
  import_distroless "$CACHE/distroless-$key.tar" "$key" "$DISTROLESS"
}
# --- end:distroless

# --- recipe:distroless_arm64
# The same recipe from Debian's arm64 packages, for the arm64 half of a multi-platform image
# (scripts/arm64-check). apt reads them through its own state in the cache (ARM64_APT), so the
# host's dpkg gets no foreign architecture.
build_distroless_arm64() {
  local key=$1
  distroless_rootfs "$CACHE/distroless_arm64-$key.tar" "${ARM64_APT[@]}"
  import_distroless "$CACHE/distroless_arm64-$key.tar" "$key" "$DISTROLESS_ARM64" --arch arm64
}
# --- end:distroless_arm64

# --- recipe:debian
build_debian() {
  local key=$1 tarball=$CACHE/debian-$key.tar
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/setup installs it)"
    local work; work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
    debootstrap --variant=minbase "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
      { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    local r=$work/root
    # what the official -slim image does: no docs/manuals/locales now or later, clean apt caches
    mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
    cat > "$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat > "$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' > "$r/etc/apt/apt.conf.d/docker-no-languages"
    printf 'APT::Install-Recommends "false";\n' > "$r/etc/apt/apt.conf.d/docker-no-recommends"
    rm -f "$r/etc/apt/sources.list"
    cat > "$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    rm -rf "$r/usr/share/man"/* "$r/usr/share/info"/* "$r/usr/share/locale"/* \
      "$r/var/cache/apt"/*.bin "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/* \
      "$r/var/log"/*.log "$r/var/log/apt"/* "$r/debootstrap"
    : > "$r/etc/hostname"; : > "$r/etc/resolv.conf"
    # This machine's own trust anchors (/usr/local/share/ca-certificates: here, the sandbox egress
    # proxy's CA), so that builds on this stand-in reach the same package registries the host reaches.
    # They enter the image's bundle when ca-certificates is installed in it (the Rust image, a fetch stage).
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
      mkdir -p "$r/usr/local/share/ca-certificates"
      cp /usr/local/share/ca-certificates/*.crt "$r/usr/local/share/ca-certificates/"
    fi
    mkdir -p "$CACHE"; tar_rootfs "$r" "$tarball.tmp"; mv "$tarball.tmp" "$tarball"
  fi
  podman import -q --change 'CMD ["bash"]' --change "LABEL $LABEL=$key" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$DEBIAN" >/dev/null
}
# --- end:debian

# --- recipe:rust
build_rust() {
  local key=$1 sysroot tc work
  sysroot=$(rustc --print sysroot)
  tc=$(rustc -vV | awk '/^release:/{print $2}')-$(rustc -vV | awk '/^host:/{print $2}')
  work=$(mktemp -d); trap 'rm -rf "$work"; trap - RETURN' RETURN
  mkdir -p "$work/toolchain"
  # the active toolchain without its HTML docs (~800 MB of share/doc)
  cp -a "$sysroot"/{bin,lib,libexec,etc} "$work/toolchain/"
  mkdir -p "$work/toolchain/share"; cp -a "$sysroot/share/zsh" "$work/toolchain/share/" 2>/dev/null || true
  podman build -q --network host --pull=never --layers=false \
    --build-arg BASE="$DEBIAN" --build-arg TOOLCHAIN="$tc" \
    --build-arg RUST_VERSION="$(rustc -V | awk '{print $2}')" \
    --label "$LABEL=$key" -f "$HERE/images/rust.Containerfile" -t "$RUST" "$work" >/dev/null
}
# --- end:rust

ensure() { # name key builder
  local name=$1 key=$2 builder=$3 t0=$SECONDS
  if have_image "$name" "$key"; then return 0; fi
  local old; old=$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  log "building $name (recipe $key)"
  "$builder" "$key"
  have_image "$name" "$key" || die "$name was not built"
  # rootfs tarballs of older recipes of this image
  local prefix=${builder#build_}
  find "$CACHE" -maxdepth 1 -name "$prefix-*.tar" ! -name "$prefix-$key.tar" -delete 2>/dev/null || true
  # the previous build of this image, now untagged: remove it (only it) so storage does not grow
  if [ -n "$old" ] && [ "$(podman image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
    podman rmi "$old" >/dev/null 2>&1 || true   # not -f: it may be in use by a container
  fi
  local size; size=$(podman image inspect --format '{{.Size}}' "$name")
  log "built $name in $((SECONDS - t0))s, $((size / 1000000)) MB"
}

case "${1:-build}" in
  build)
    mkdir -p "$CACHE"; exec 8>"$CACHE/.lock"; flock 8   # one builder at a time per machine
    ensure "$DISTROLESS" "$(key_distroless)" build_distroless
    ensure "$DEBIAN" "$(key_debian)" build_debian
    ensure "$RUST" "$(key_rust)" build_rust
    echo "$DISTROLESS $(key_distroless)"; echo "$DEBIAN $(key_debian)"; echo "$RUST $(key_rust)"
    ;;
  list)
    echo "$DISTROLESS $(key_distroless)"; echo "$DEBIAN $(key_debian)"; echo "$RUST $(key_rust)" ;;
  build-arm64)
    mkdir -p "$CACHE"; exec 8>"$CACHE/.lock"; flock 8
    arm64_apt_update
    ensure "$DISTROLESS" "$(key_distroless)" build_distroless
    ensure "$DISTROLESS_ARM64" "$(key_distroless_arm64)" build_distroless_arm64
    echo "$DISTROLESS $(key_distroless)"; echo "$DISTROLESS_ARM64 $(key_distroless_arm64)"
    ;;
  *) echo "usage: $0 build|list|build-arm64" >&2; exit 2 ;;
esac
