# Shared by scripts/test and scripts/demo: install what is missing, then build.
# Everything comes from Debian's packages; nothing is downloaded at build time.

PL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PL_BUILD=${PL_BUILD:-$PL_ROOT/build}

PL_PACKAGES=(
  cmake ninja-build g++ pkg-config
  libboost-dev nlohmann-json3-dev libcli11-dev liburing-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpci-dev pci.ids libnl-route-3-dev libkmod-dev libpugixml-dev
  qemu-system-x86 qemu-utils ovmf
  linux-image-cloud-amd64 busybox-static cpio gzip
  fakeroot qemu-guest-agent mtools xorriso
  iproute2 kmod procps systemd util-linux bsdutils swtpm
  sudo nodejs passwd
  clang libbpf-dev bpftool linux-perf libbpf-tools
)

# Installs the packages that are not installed yet; quiet and fast when all are.
pl_install_deps() {
  local missing=() p
  for p in "${PL_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "passlaunch: installing ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pl_build [CMAKE-ARGS...]: configure (cheap when nothing changed) and build.
pl_build() {
  cmake -S "$PL_ROOT" -B "$PL_BUILD" -G Ninja "$@" >/dev/null
  cmake --build "$PL_BUILD"
}
