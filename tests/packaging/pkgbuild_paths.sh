#!/usr/bin/env bash
# The Arch PKGBUILD (scripts/packaging/arch/PKGBUILD, which cannot be built
# here) installs exactly the paths `cmake --install` does: its package() is
# run as makepkg would run it ($srcdir, $pkgdir), over this build dir, and the
# two DESTDIR trees must list the same files.
# Usage: pkgbuild_paths.sh BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

DESTDIR=$tmp/cmake cmake --install "$build" --prefix /usr >/dev/null

mkdir -p "$tmp/src"
ln -s "$build" "$tmp/src/build"
(
  cd "$tmp/src"
  startdir=$src/scripts/packaging/arch srcdir=$tmp/src pkgdir=$tmp/arch
  # shellcheck source=/dev/null
  source "$startdir/PKGBUILD"
  # The build dir is configured for /usr/local; install both trees for /usr.
  cmake() { if [ "$1" = --install ]; then command cmake "$@" --prefix /usr; else command cmake "$@"; fi; }
  package >/dev/null
)

list() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort); }
if ! diff -u <(list "$tmp/cmake") <(list "$tmp/arch") >"$tmp/diff"; then
  echo "PKGBUILD's package() and cmake --install install different paths (- cmake, + PKGBUILD):" >&2
  cat "$tmp/diff" >&2
  exit 1
fi
# The PKGBUILD's version is the project's.
want=$(sed -n 's/^project(passlaunch VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
got=$(sed -n 's/^pkgver=//p' "$src/scripts/packaging/arch/PKGBUILD")
[ "$want" = "$got" ] || { echo "PKGBUILD pkgver=$got, CMakeLists.txt says $want" >&2; exit 1; }
echo "PKGBUILD installs the same $(list "$tmp/cmake" | wc -l) paths as cmake --install"
