# fish completion for passlaunch. The candidates come from passlaunch itself
# (`passlaunch __complete WORD...`, launcher/cli/complete.h): subcommands,
# options, running VM names for ctl and latency, files for profiles.
function __passlaunch_complete
    set -l args (commandline -opc)
    set -l cur (commandline -ct)
    set -l cmd $args[1]
    set -e args[1]
    for line in ($cmd __complete $args "$cur" 2>/dev/null)
        switch $line
            case :files
                __fish_complete_path "$cur"
            case :dirs
                __fish_complete_directories "$cur"
            case '*'
                echo $line
        end
    end
end
complete -c passlaunch -f -a '(__passlaunch_complete)'
