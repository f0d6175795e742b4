# Shared by scripts/start, stop and toggle: find passlaunch and a VM's
# profile, and log to the journal (or syslog, or a file when neither runs).

# The installed copy names the installed binary here (scripts/CMakeLists.txt);
# from the tree: PATH, else the build dir.
PL_INSTALLED_PASSLAUNCH=
PASSLAUNCH=${PASSLAUNCH:-${PL_INSTALLED_PASSLAUNCH:-$(command -v passlaunch || echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/launcher/passlaunch")}}
PROFILE_DIR=${PASSLAUNCH_PROFILES:-/etc/passlaunch}
# The syslog socket, used when no journal runs (tests point it elsewhere).
SYSLOG_SOCKET=${PASSLAUNCH_SYSLOG_SOCKET:-/dev/log}

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

# pl_detach TAG COMMAND... : runs COMMAND detached, its output to the journal
# (systemd-cat, when journald's socket exists), else to syslog (logger), else
# appended to $XDG_RUNTIME_DIR/TAG.log.
pl_detach() {
  local tag=$1
  shift
  if [ -S /run/systemd/journal/socket ] && command -v systemd-cat >/dev/null; then
    setsid systemd-cat -t "$tag" "$@" </dev/null >/dev/null 2>&1 &
  elif command -v logger >/dev/null && [ -S "$SYSLOG_SOCKET" ]; then
    setsid bash -c 'tag=$1 socket=$2; shift 2; "$@" 2>&1 | logger -t "$tag" -u "$socket"' \
      bash "$tag" "$SYSLOG_SOCKET" "$@" </dev/null >/dev/null 2>&1 &
  else
    local log=${XDG_RUNTIME_DIR:-/tmp}/$tag.log
    setsid "$@" </dev/null >>"$log" 2>&1 &
  fi
}
