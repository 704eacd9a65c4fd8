#!/usr/bin/env bash
# Wraps mpirun with what phi-cluster needs on any machine:
#  - root is allowed (containers, CI) through OpenMPI's two permission variables;
#  - more ranks than cores work (--oversubscribe), with no core binding, which on a small
#    machine would pin several ranks to one core;
#  - idle ranks yield their core (mpi_yield_when_idle) while waiting in MPI;
#  - OMP_NUM_THREADS per rank defaults to cores / ranks (at least 1); set PHI_THREADS_PER_RANK
#    to override;
#  - the operator's SIGTERM/SIGINT becomes SIGUSR1, which mpirun forwards to every rank without
#    killing any: rank 0 drains (finishes in-flight requests, then releases the other ranks) and
#    every rank exits 0. A second SIGTERM/SIGINT is passed on as SIGTERM (immediate stop).
#  - when a rank fails, mpirun SIGTERMs the others and SIGKILLs them PHI_KILL_TIMEOUT seconds
#    later (default 3). OpenMPI waits out that whole period even when every rank is already gone,
#    so it bounds how fast a failed cluster exits and is kept short.
# Usage: scripts/mpirun.sh -np N <program> [args...]
set -euo pipefail

np=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n) np="$2"; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -n "$np" ] || { echo "scripts/mpirun.sh: give -np N" >&2; exit 2; }

cores=$(nproc)
threads=${PHI_THREADS_PER_RANK:-$(( cores / np > 0 ? cores / np : 1 ))}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Loopback-only transports: no network interface probing, no warnings on machines without one.
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_odls_base_sigkill_timeout=${PHI_KILL_TIMEOUT:-3}
fwd=(-x OMP_NUM_THREADS="$threads")
[ -n "${PHI_CPU_ISA:-}" ] && fwd+=(-x PHI_CPU_ISA)
[ -n "${PHI_DEBUG_DUMP:-}" ] && fwd+=(-x PHI_DEBUG_DUMP)
[ -n "${PHI_SOURCE_DIR:-}" ] && fwd+=(-x PHI_SOURCE_DIR)

mpirun --oversubscribe --bind-to none "${fwd[@]}" "${args[@]}" &
pid=$!
signals=0
on_signal() {
  signals=$((signals + 1))
  if [ "$signals" -eq 1 ]; then kill -USR1 "$pid" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
}
trap on_signal TERM INT
# `wait` returns early when a trapped signal arrives; keep waiting until mpirun itself is gone.
while :; do
  rc=0
  wait "$pid" || rc=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
