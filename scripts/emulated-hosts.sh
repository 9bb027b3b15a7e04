#!/usr/bin/env bash
# Emulated hosts: N "machines" on this one, each a Linux network namespace with its own hostname,
# joined by veth pairs to a switch (a bridge in a namespace of its own). Open MPI between them runs
# over real TCP. Nothing is created in the root network namespace, and the hosts' addresses
# (10.231.0.0/24: host I is 10.231.0.I) exist only inside their namespaces, so concurrent runs
# never see each other. Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), iproute2 and util-linux.
#
# A run is named RUN = <owner pid>-<tag> (letters, digits): its namespaces are mtp-RUN-h1 ...
# mtp-RUN-hN (hostnames host1 ... hostN) and mtp-RUN-sw (the switch). `up` first sweeps runs whose
# owner process no longer exists, so a test killed before its cleanup leaves nothing for long.
#
#   emulated-hosts.sh check                      exit 0 if this machine allows it, else say why (exit 1)
#   emulated-hosts.sh network                    print the hosts' network (CIDR)
#   emulated-hosts.sh up RUN N [RATE]            create hosts 1..N; RATE (tc syntax: 1gbit, 10gbit)
#                                                limits every link both ways
#   emulated-hosts.sh down RUN                   kill every process in the run's namespaces, remove them
#   emulated-hosts.sh sweep                      `down` every run whose owner pid is gone
#   emulated-hosts.sh exec RUN I COMMAND...      run COMMAND as host I (its network, its hostname)
#   emulated-hosts.sh rsh-agent RUN HOST CMD...  Open MPI's plm_rsh_agent: run CMD (a shell command
#                                                line, as ssh gets it) on HOST (hostI or its address)
#   emulated-hosts.sh link RUN I up|down         switch host I's cable (its switch port) on or off
#   emulated-hosts.sh rate RUN RATE|unlimited    change every link's rate limit
#   emulated-hosts.sh pids RUN                   the processes in the run's host namespaces: "I PID CMD"
#   emulated-hosts.sh list                       the runs that exist, with their owner's state
set -euo pipefail

PREFIX=mtp
NETWORK_BASE=10.231.0
NETWORK="$NETWORK_BASE.0/24"

die() { printf 'emulated-hosts: %s\n' "$*" >&2; exit 1; }

check_run_name() {
    [[ "$1" =~ ^[0-9]+-[A-Za-z0-9]+$ ]] || die "run name '$1' must be <owner pid>-<tag> (letters and digits)"
}

host_ns() { printf '%s-%s-h%s' "$PREFIX" "$1" "$2"; }
switch_ns() { printf '%s-%s-sw' "$PREFIX" "$1"; }

namespace_exists() { [ -e "/run/netns/$1" ]; }

# The namespaces of RUN, hosts first.
run_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-$1-(h[0-9]+|sw)\$" | sort -r || true
}

# Bucket of a token-bucket filter: ~200 us of traffic at RATE (smaller buckets collapse throughput
# on this kind of VM, measured), at least 64 KiB so that one TSO/GSO segment fits.
tbf_burst() {
    local rate=$1 bits
    case "$rate" in
        *gbit) bits=$(( ${rate%gbit} * 1000000000 )) ;;
        *mbit) bits=$(( ${rate%mbit} * 1000000 )) ;;
        *kbit) bits=$(( ${rate%kbit} * 1000 )) ;;
        *) die "rate '$rate': give a whole number of kbit, mbit or gbit (e.g. 10gbit)" ;;
    esac
    local bytes=$(( bits / 8 / 5000 ))
    [ "$bytes" -ge 65536 ] || bytes=65536
    echo "$bytes"
}

# Limits both directions of every link of RUN to RATE (or removes the limits): egress of each host's
# eth0 (what it sends) and egress of its switch port (what it receives).
set_rate() {
    local run=$1 rate=$2 ns i
    local sw; sw=$(switch_ns "$run")
    for ns in $(run_namespaces "$run"); do
        [[ "$ns" == *-sw ]] && continue
        i=${ns##*-h}
        if [ "$rate" = unlimited ]; then
            ip -n "$ns" link show eth0 >/dev/null
            tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
            tc -n "$sw" qdisc del dev "h$i" root 2>/dev/null || true
        else
            local burst; burst=$(tbf_burst "$rate")
            tc -n "$ns" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
            tc -n "$sw" qdisc replace dev "h$i" root tbf rate "$rate" burst "$burst" latency 50ms
        fi
    done
}

cmd_check() {
    command -v ip >/dev/null || die "ip (iproute2) not found: run scripts/setup.sh"
    command -v unshare >/dev/null || die "unshare (util-linux) not found"
    command -v tc >/dev/null || die "tc (iproute2) not found: run scripts/setup.sh"
    local probe="$PREFIX-$$-check-sw"
    if ! err=$(ip netns add "$probe" 2>&1); then
        die "cannot create a network namespace here ($err)"
    fi
    if ! err=$(ip netns exec "$probe" unshare --uts true 2>&1); then
        ip netns del "$probe" 2>/dev/null || true
        die "cannot enter a network namespace with a UTS namespace of its own here ($err)"
    fi
    if ! err=$(ip -n "$probe" link add probe0 type veth peer name probe1 2>&1); then
        ip netns del "$probe" 2>/dev/null || true
        die "cannot create veth pairs here ($err)"
    fi
    ip netns del "$probe"
}

cmd_up() {
    [ $# -ge 2 ] && [ $# -le 3 ] || die "usage: up RUN N [RATE]"
    local run=$1 count=$2 rate=${3:-}
    check_run_name "$run"
    [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] && [ "$count" -le 250 ] || die "host count must be 1...250, got '$count'"
    [ -z "$(run_namespaces "$run")" ] || die "run $run already exists"
    [ -z "$rate" ] || tbf_burst "$rate" >/dev/null
    cmd_sweep
    # Whatever fails below (set -e ends the script), leave nothing half made.
    # ($run is checked to be letters, digits and a dash: safe to expand into the trap now.)
    trap "cmd_down $run >/dev/null 2>&1 || true" EXIT
    local sw; sw=$(switch_ns "$run")
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    local i ns
    for ((i = 1; i <= count; i++)); do
        ns=$(host_ns "$run" "$i")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Both ends are created inside the run's namespaces: port hI on the switch, eth0 on host I.
        ip -n "$sw" link add "h$i" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "h$i" master br0
        ip -n "$sw" link set "h$i" up
        ip -n "$ns" addr add "$NETWORK_BASE.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    [ -z "$rate" ] || set_rate "$run" "$rate"
    trap - EXIT
}

# Kills every process in RUN's namespaces until none is left (a dying mpirun may start nothing new,
# but a process can fork between listing and killing), then removes the namespaces.
cmd_down() {
    [ $# -eq 1 ] || die "usage: down RUN"
    local run=$1 ns pids attempt
    check_run_name "$run"
    local namespaces; namespaces=$(run_namespaces "$run")
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        pids=""
        for ns in $namespaces; do pids+=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"; done
        [ -n "${pids// /}" ] || break
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
    for ns in $namespaces; do
        ip netns del "$ns" 2>/dev/null || true
    done
    for ns in $namespaces; do
        if namespace_exists "$ns"; then die "could not remove namespace $ns"; fi
    done
}

cmd_sweep() {
    local run owner
    for run in $(ip netns list 2>/dev/null | awk '{print $1}' | sed -nE "s/^$PREFIX-([0-9]+-[A-Za-z0-9]+)-(h[0-9]+|sw)\$/\1/p" | sort -u); do
        owner=${run%%-*}
        if ! kill -0 "$owner" 2>/dev/null && [ ! -d "/proc/$owner" ]; then
            cmd_down "$run" || true
        fi
    done
}

cmd_exec() {
    [ $# -ge 3 ] || die "usage: exec RUN I COMMAND..."
    local run=$1 i=$2; shift 2
    check_run_name "$run"
    local ns; ns=$(host_ns "$run" "$i")
    namespace_exists "$ns" || die "no host $i in run $run"
    # unshare --uts: a hostname of its own (Open MPI names nodes by it); exec all the way down, so
    # the caller's child process is COMMAND itself and its signals reach it.
    exec ip netns exec "$ns" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "host$i" "$@"
}

cmd_rsh_agent() {
    [ $# -ge 3 ] || die "usage: rsh-agent RUN HOST COMMAND..."
    local run=$1 host=$2; shift 2
    check_run_name "$run"
    local i
    case "$host" in
        host[0-9]*) i=${host#host} ;;
        "$NETWORK_BASE".[0-9]*) i=${host#"$NETWORK_BASE".} ;;
        *) die "unknown host '$host' (expected hostI or $NETWORK_BASE.I)" ;;
    esac
    local ns; ns=$(host_ns "$run" "$i")
    namespace_exists "$ns" || die "no host $host in run $run"
    # Like ssh: the words after the host form one command line for the remote shell.
    exec ip netns exec "$ns" unshare --uts -- sh -c 'hostname "$0" && exec sh -c "$1"' "host$i" "$*"
}

cmd_link() {
    [ $# -eq 3 ] || die "usage: link RUN I up|down"
    local run=$1 i=$2 state=$3
    check_run_name "$run"
    [[ "$state" == up || "$state" == down ]] || die "link state must be up or down, got '$state'"
    ip -n "$(switch_ns "$run")" link set "h$i" "$state"
}

cmd_rate() {
    [ $# -eq 2 ] || die "usage: rate RUN RATE|unlimited"
    check_run_name "$1"
    set_rate "$1" "$2"
}

cmd_pids() {
    [ $# -eq 1 ] || die "usage: pids RUN"
    local run=$1 ns pid
    check_run_name "$run"
    for ns in $(run_namespaces "$run"); do
        [[ "$ns" == *-sw ]] && continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            printf '%s %s %s\n' "${ns##*-h}" "$pid" "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)"
        done
    done
}

cmd_list() {
    local run owner
    for run in $(ip netns list 2>/dev/null | awk '{print $1}' | sed -nE "s/^$PREFIX-([0-9]+-[A-Za-z0-9]+)-(h[0-9]+|sw)\$/\1/p" | sort -u); do
        owner=${run%%-*}
        if kill -0 "$owner" 2>/dev/null || [ -d "/proc/$owner" ]; then echo "$run owner alive"; else echo "$run owner gone"; fi
    done
}

[ $# -ge 1 ] || die "usage: $0 check|network|up|down|sweep|exec|rsh-agent|link|rate|pids|list ... (see the top of this file)"
verb=$1; shift
case "$verb" in
    check) cmd_check "$@" ;;
    network) echo "$NETWORK" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    sweep) cmd_sweep ;;
    exec) cmd_exec "$@" ;;
    rsh-agent) cmd_rsh_agent "$@" ;;
    link) cmd_link "$@" ;;
    rate) cmd_rate "$@" ;;
    pids) cmd_pids "$@" ;;
    list) cmd_list ;;
    *) die "unknown command '$verb' (see the top of $0)" ;;
esac
