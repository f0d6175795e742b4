#!/usr/bin/env bash
# The bash completion (scripts/completions/passlaunch.bash) completes with the
# built binary as bash calls it: COMP_WORDS/COMP_CWORD in, COMPREPLY out.
# Usage: bash_completion.sh PASSLAUNCH_BINARY
set -euo pipefail
bin=$(realpath "$1")
src=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=/dev/null
source "$src/scripts/completions/passlaunch.bash"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
touch win11.json notes.txt
failed=0
expect() {  # expect "WANT" WORD...: completing the last WORD gives WANT
  local want=$1
  shift
  COMP_WORDS=("$bin" "$@")
  COMP_CWORD=$#
  COMPREPLY=()
  _passlaunch
  local got="${COMPREPLY[*]}"
  if [ "$got" != "$want" ]; then
    echo "passlaunch $*<TAB>: got '$got', want '$want'" >&2
    failed=1
  fi
}
expect "latency" la
expect "status" ctl demo st
expect "--dry-run" run --dr
expect "win11.json" run wi
expect "uring pread" latency --reader ""
expect "--version" --vers
[ $failed -eq 0 ] && echo "bash completion: ok"
exit $failed
