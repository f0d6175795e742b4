# bash completion for passlaunch. The candidates come from passlaunch itself
# (`passlaunch __complete WORD...`, launcher/cli/complete.h): subcommands,
# options, running VM names for ctl and latency, files for profiles.
_passlaunch() {
  local cur=${COMP_WORDS[COMP_CWORD]} line
  local -a lines
  mapfile -t lines < <("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
  COMPREPLY=()
  for line in "${lines[@]}"; do
    case $line in
      :files) { compopt -o filenames 2>/dev/null || true; }; mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur") ;;
      :dirs) { compopt -o filenames 2>/dev/null || true; }; mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -d -- "$cur") ;;
      *) COMPREPLY+=("$line") ;;
    esac
  done
}
complete -F _passlaunch passlaunch
