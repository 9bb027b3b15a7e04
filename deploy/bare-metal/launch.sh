#!/usr/bin/env bash
# Starts medusa-worker (or any MPI program) across the nodes of a hostfile with Open MPI's mpirun:
# R ranks on every node, ssh between nodes, and the settings of deploy/openmpi-mca.conf (transports,
# dead-node detection in ~10 s). The emulated-host tests launch every multi-host job through this
# script (with their own --rsh-agent), so what is tested is what an operator runs.
#
#   deploy/bare-metal/launch.sh --hostfile FILE --network CIDR [options] -- PROGRAM [ARGS...]
#
# Example, 4 nodes with one rank each, rank 0 (the HTTP server) on the first node of the hostfile:
#   deploy/bare-metal/launch.sh --hostfile deploy/bare-metal/hostfile.example --network 10.0.0.0/24 -- \
#       /opt/medusa/medusa-worker serve --model /models/model.gguf --host 0.0.0.0 --threads 16
#
# What every node needs: the same PROGRAM and model paths (or a shared filesystem), Open MPI's
# `orted` in the PATH of a non-interactive ssh session (Debian's openmpi-bin puts it in /usr/bin),
# and password-less ssh from the node that runs this script to every node of the hostfile.
#
# Options (the first five also read MEDUSA_HOSTFILE, MEDUSA_NETWORK, MEDUSA_RANKS_PER_NODE,
# MEDUSA_RSH_AGENT and MEDUSA_MCA_CONF):
#   --hostfile FILE       Nodes, one per line: the name or address ssh reaches it by; "#" comments.
#                         Rank r runs on node r / R, in file order: rank 0 on the first node.
#   --network CIDR        The private network the nodes share (e.g. 10.0.0.0/24). Both MPI's data
#                         (btl_tcp_if_include) and mpirun's control traffic (oob_tcp_if_include)
#                         are pinned to it, so that no other interface (docker0, a public address)
#                         is tried. The traffic is not encrypted: use a private network only.
#   --ranks-per-node R    Ranks on every node (default 1), see "Placing ranks" below.
#   --rsh-agent CMD       How mpirun runs a command on another node (default: ssh). CMD gets the
#                         node's name and a command line, as ssh does.
#   --mca-conf FILE       The Open MPI settings (default: deploy/openmpi-mca.conf).
#   --shared-cores        The ranks share cores with each other or with other busy processes (a
#                         test machine, a laptop): allow more ranks than cores and let a rank waiting
#                         for a message yield its core (mpi_yield_when_idle; without it one
#                         allreduce took 20 ms instead of 0.2 ms when 4 ranks shared 2 cores).
#   --dry-run             Print the mpirun command line instead of running it.
# Any other option before `--` goes to mpirun as it is (e.g. --map-by / --bind-to overrides, which
# come after this script's own and so win).
#
# Placing ranks (--map-by, --bind-to). One rank per node is the usual choice: the model is split
# over as few ranks as hold it, and a rank's own thread pool (medusa-worker --threads, one thread
# per physical core of the node) uses the whole node. Hence:
#   --map-by ppr:R:node   exactly R ranks on every node, ranks 0..R-1 on the first node, and so on
#                         (not Open MPI's default, which fills a node's cores before the next node).
#   --bind-to none        a rank and its threads may run on any core of the node. Open MPI's default
#                         binds each of up to 2 ranks to ONE core, which would confine a rank's whole
#                         thread pool to that core.
# On a node with two sockets (NUMA), two ranks per node, one per socket, keep each rank's weights
# in its own socket's memory: --ranks-per-node 2 plus `--map-by ppr:1:socket --bind-to socket`,
# with --threads = cores per socket. Then the allreduce between those two ranks goes through
# shared memory, between nodes through TCP.
#
# Environment: ranks on other nodes get only what mpirun forwards; MEDUSA_API_KEY (serve's API key)
# is forwarded when it is set. Open MPI refuses to run as root unless OMPI_ALLOW_RUN_AS_ROOT=1 and
# OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set (containers often run as root).
#
# Failures: any rank that fails or dies, a node's daemon that dies, or a node whose network goes
# quiet ends the whole job within ~10 s with a non-zero exit status and a line saying what happened
# (see deploy/openmpi-mca.conf).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hostfile=${MEDUSA_HOSTFILE:-}
network=${MEDUSA_NETWORK:-}
ranks_per_node=${MEDUSA_RANKS_PER_NODE:-1}
rsh_agent=${MEDUSA_RSH_AGENT:-}
mca_conf=${MEDUSA_MCA_CONF:-$here/../openmpi-mca.conf}
shared_cores=0
dry_run=0
extra=()

die() { printf 'launch.sh: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --hostfile) [ $# -ge 2 ] || die "--hostfile needs a file"; hostfile=$2; shift 2 ;;
        --network) [ $# -ge 2 ] || die "--network needs a CIDR"; network=$2; shift 2 ;;
        --ranks-per-node) [ $# -ge 2 ] || die "--ranks-per-node needs a number"; ranks_per_node=$2; shift 2 ;;
        --rsh-agent) [ $# -ge 2 ] || die "--rsh-agent needs a command"; rsh_agent=$2; shift 2 ;;
        --mca-conf) [ $# -ge 2 ] || die "--mca-conf needs a file"; mca_conf=$2; shift 2 ;;
        --shared-cores) shared_cores=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; break ;;
        *) extra+=("$1"); shift ;;
    esac
done
[ $# -ge 1 ] || die "usage: launch.sh --hostfile FILE --network CIDR [options] -- PROGRAM [ARGS...]"
[ -n "$hostfile" ] || die "--hostfile is required (or MEDUSA_HOSTFILE)"
[ -r "$hostfile" ] || die "cannot read hostfile $hostfile"
[ -n "$network" ] || die "--network is required (or MEDUSA_NETWORK): the nodes' private network, e.g. 10.0.0.0/24"
[[ "$network" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "--network must be an IPv4 CIDR such as 10.0.0.0/24, got '$network'"
[[ "$ranks_per_node" =~ ^[1-9][0-9]*$ ]] || die "--ranks-per-node must be a positive number, got '$ranks_per_node'"
[ -r "$mca_conf" ] || die "cannot read the Open MPI settings $mca_conf"

# Nodes: first word of every line that is not blank or a comment.
nodes=$(sed -e 's/#.*//' "$hostfile" | awk 'NF { print $1 }' | wc -l)
[ "$nodes" -ge 1 ] || die "hostfile $hostfile names no node"

args=(--hostfile "$hostfile" -np "$((nodes * ranks_per_node))"
      --map-by "ppr:$ranks_per_node:node" --bind-to none)
# Every "name = value" line of the settings file.
while IFS= read -r line; do
    line=${line%%#*}
    [[ "$line" =~ ^[[:space:]]*([A-Za-z0-9_]+)[[:space:]]*=[[:space:]]*([^[:space:]]+)[[:space:]]*$ ]] || {
        [[ "$line" =~ ^[[:space:]]*$ ]] || die "$mca_conf: cannot read line '$line' (expected name = value)"
        continue
    }
    args+=(--mca "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
done < "$mca_conf"
args+=(--mca btl_tcp_if_include "$network" --mca oob_tcp_if_include "$network")
[ -z "$rsh_agent" ] || args+=(--mca plm_rsh_agent "$rsh_agent")
[ "$shared_cores" -eq 0 ] || args+=(--oversubscribe --mca mpi_yield_when_idle 1)
[ -z "${MEDUSA_API_KEY:-}" ] || args+=(-x MEDUSA_API_KEY)
args+=(${extra[@]+"${extra[@]}"})

if [ "$dry_run" -eq 1 ]; then
    printf '%q ' mpirun "${args[@]}" "$@"
    printf '\n'
    exit 0
fi
exec mpirun "${args[@]}" "$@"
