#!/usr/bin/env bash
# Slurm health check / prolog: run cardbench's gate on this node; drain the node, with the
# first failing check as the reason, when the gate does not pass.
#
#   slurm.conf, as a health check (runs on idle nodes only, so it never disturbs a job):
#     HealthCheckProgram=/usr/local/sbin/cardbench-healthcheck.sh
#     HealthCheckInterval=3600
#     HealthCheckNodeState=IDLE
#   or as a prolog (before each job; a node that fails is drained and the job requeued):
#     Prolog=/usr/local/sbin/cardbench-healthcheck.sh
#
# Slurm ignores a health check's exit code: the program drains the node itself
# (https://slurm.schedmd.com/slurm.conf.html#OPT_HealthCheckProgram). A prolog that
# exits non-zero gets the node drained by Slurm ("Prolog error") and the job requeued
# (https://slurm.schedmd.com/prolog_epilog.html); draining first keeps our reason, as
# slurmctld leaves an already drained node's reason alone (validate_node_specs in
# https://github.com/SchedMD/slurm/blob/master/src/slurmctld/node_mgr.c). So this script
# drains, then exits with accept's code: 0 pass, 1 FAIL, 2 INCONCLUSIVE.
#
# Settings: slurm.conf passes no arguments and slurmd hardly any environment, so each can come
# from the environment or from a file of NAME=value lines, CARDBENCH_CONFIG (default
# /etc/default/cardbench), read as plain text and never run; the environment wins.
#   CARDBENCH                  the cardbench command (default: cardbench on PATH; a prolog has
#                              almost no PATH, so give the full path, e.g. /opt/cardbench/bin/cardbench)
#   CARDBENCH_RESULTS          results directory (default /var/lib/cardbench/results)
#   CARDBENCH_PROFILE          accept profile (default gate: the checks that fit in a minute;
#                              set but empty: accept's own default, no --profile)
#   CARDBENCH_PROMETHEUS       also write this node_exporter .prom file (default: none)
#   CARDBENCH_TIMEOUT          seconds before the gate counts as hung (default 55: Slurm kills
#                              a health check after 60 s)
#   CARDBENCH_ON_INCONCLUSIVE  drain (default) or pass. INCONCLUSIVE means the gate could not
#                              prove the node healthy (no NVML, a check that could not run);
#                              draining keeps jobs off a node nobody has vouched for, `pass`
#                              keeps it in service and only logs.
set -uo pipefail

config=${CARDBENCH_CONFIG:-/etc/default/cardbench}
if [[ -r $config ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line =~ ^(CARDBENCH[A-Z_]*)=(.*)$ ]] || continue
        name=${BASH_REMATCH[1]}
        [[ -v $name ]] && continue
        # printf -v assigns the text as it is: no expansion, no command substitution.
        printf -v "$name" '%s' "${BASH_REMATCH[2]}"
        export "${name?}"
    done <"$config"
fi

# A prolog runs with no search path (prolog_epilog.html): add the usual places after any given.
PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CARDBENCH=${CARDBENCH:-cardbench}
RESULTS=${CARDBENCH_RESULTS:-/var/lib/cardbench/results}
PROFILE=${CARDBENCH_PROFILE-gate}
TIMEOUT=${CARDBENCH_TIMEOUT:-55}
ON_INCONCLUSIVE=${CARDBENCH_ON_INCONCLUSIVE:-drain}
# The reason is shown by `sinfo -R` and `scontrol show node`: one line, kept short enough to read.
REASON_MAX=200

case $ON_INCONCLUSIVE in
    drain | pass) ;;
    *) echo "cardbench-healthcheck: CARDBENCH_ON_INCONCLUSIVE='$ON_INCONCLUSIVE': expected drain or pass" >&2
       exit 3 ;;
esac
case $TIMEOUT in
    '' | *[!0-9]*) echo "cardbench-healthcheck: CARDBENCH_TIMEOUT='$TIMEOUT': expected whole seconds" >&2
                   exit 3 ;;
esac

node=${SLURMD_NODENAME:-$(hostname -s)}
output=$(mktemp)
trap 'rm -f "$output"' EXIT

args=(accept)
[[ -n $PROFILE ]] && args+=(--profile "$PROFILE")
args+=(--out "$RESULTS")
[[ -n ${CARDBENCH_PROMETHEUS:-} ]] && args+=(--prometheus "$CARDBENCH_PROMETHEUS")
if command -v timeout >/dev/null; then
    timeout --kill-after=5 "$TIMEOUT" "$CARDBENCH" "${args[@]}" >"$output" 2>&1
else
    "$CARDBENCH" "${args[@]}" >"$output" 2>&1
fi
code=$?
cat "$output"

# The first check row with this verdict, after the device of its card ("cuda:3 FAIL matmul-bf16 ...").
# accept prints "<device> <name>...: VERDICT" per card, then a table whose rows start with the verdict.
first_row() {
    awk -v want="$1" '
        /: (PASS|FAIL|INCONCLUSIVE)$/ { device = $1; next }
        $1 == want { $1 = $1; print device " " $0; exit }' "$output"
}
last_line() {
    awk 'NF { line = $0 } END { $0 = line; $1 = $1; print }' "$output"
}

case $code in
    0) exit 0 ;;
    1) detail=$(first_row FAIL) ;;
    2) if [[ $ON_INCONCLUSIVE == pass ]]; then
           echo "cardbench-healthcheck: INCONCLUSIVE on $node; CARDBENCH_ON_INCONCLUSIVE=pass keeps it in service"
           exit 0
       fi
       detail=$(first_row INCONCLUSIVE) ;;
    124 | 137) detail="the gate did not finish within ${TIMEOUT} s" ;;
    126 | 127) detail="cannot run '$CARDBENCH' (exit $code)" ;;
    *) detail="exit $code" ;;
esac
[[ -n $detail ]] || detail="exit $code: $(last_line)"
# One printable line: control characters (a newline, an escape sequence) become spaces.
reason="cardbench: $(printf '%s' "$detail" | tr -c '[:print:]' ' ')"
reason=${reason:0:REASON_MAX}

# The reason travels as one argument, never through eval or a shell: quotes, $( ) and
# backquotes in a check name or message stay text.
if ! scontrol update nodename="$node" state=drain reason="$reason"; then
    echo "cardbench-healthcheck: could not drain $node (reason: $reason)" >&2
fi
exit "$code"
