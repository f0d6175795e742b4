# Shared by scripts/start, stop and toggle: find passlaunch and a VM's
# profile, and log to the journal (or syslog, or a file when neither runs).

# The installed copy names the installed binary here (scripts/CMakeLists.txt);
# from the tree: PATH, else the build dir.
PL_INSTALLED_PASSLAUNCH=
PASSLAUNCH=${PASSLAUNCH:-${PL_INSTALLED_PASSLAUNCH:-$(command -v passlaunch || echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/launcher/passlaunch")}}
PROFILE_DIR=${PASSLAUNCH_PROFILES:-/etc/passlaunch}

# pl_profile NAME|PATH -> the profile file
pl_profile() {
  case "$1" in
    */*|*.json) echo "$1" ;;
    *) echo "$PROFILE_DIR/$1.json" ;;
  esac
}

# pl_name NAME|PATH -> the VM name (the profile's "name", or the argument)
pl_name() {
  case "$1" in
    */*|*.json) sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n 1 ;;
    *) echo "$1" ;;
  esac
}

# pl_log TAG COMMAND... : runs COMMAND detached, its output to the journal.
pl_detach() {
  local tag=$1
  shift
  if [ -S /run/systemd/journal/socket ] && command -v systemd-cat >/dev/null; then
    setsid systemd-cat -t "$tag" "$@" </dev/null >/dev/null 2>&1 &
  elif command -v logger >/dev/null && [ -S /dev/log ]; then
    setsid bash -c '"$@" 2>&1 | logger -t "$0"' "$tag" "$@" </dev/null >/dev/null 2>&1 &
  else
    local log=${XDG_RUNTIME_DIR:-/tmp}/$tag.log
    setsid "$@" </dev/null >>"$log" 2>&1 &
  fi
}
