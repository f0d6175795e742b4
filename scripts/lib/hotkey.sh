# Shared by scripts/start, stop and toggle: find passlaunch, turn the argument
# into `passlaunch start|stop` arguments, and get root through sudo -n when
# we are not root (scripts/sudoers/passlaunch grants exactly that).
# passlaunch itself checks the name, the profile and logs to the journal.

# The installed copy names the installed binary here (scripts/CMakeLists.txt);
# from the tree: PATH, else the build dir.
PL_INSTALLED_PASSLAUNCH=
PASSLAUNCH=${PASSLAUNCH:-${PL_INSTALLED_PASSLAUNCH:-$(command -v passlaunch || echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/launcher/passlaunch")}}

# pl_args NAME|DIR/NAME.json -> sets PL_ARGS (the start arguments) and PL_NAME.
# A path is root's own use: `start --config-dir DIR NAME` (refused under sudo).
pl_args() {
  case "$1" in
    */*.json)
      PL_NAME=$(basename "$1" .json)
      PL_ARGS=(--config-dir "$(dirname "$1")" "$PL_NAME") ;;
    */* | *.json)
      echo "passlaunch: expected a VM name or DIR/NAME.json, got $1" >&2
      exit 2 ;;
    *)
      PL_NAME=$1
      PL_ARGS=("$1") ;;
  esac
}

# pl_sudo: "sudo -n" unless we are root already.
PL_SUDO=()
[ "$(id -u)" -eq 0 ] || PL_SUDO=(sudo -n)
