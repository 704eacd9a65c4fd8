#!/usr/bin/env bash
# Wraps mpirun with what phi-cluster needs on any machine:
#  - root is allowed (containers, CI) through OpenMPI's two permission variables;
#  - more ranks than cores work (--oversubscribe), with no core binding, which on a small
#    machine would pin several ranks to one core; each rank then sizes its threads from its CPU
#    affinity mask and the ranks sharing it (phi-worker logs this, and warns when ranks share cores);
#  - idle ranks yield their core (mpi_yield_when_idle) while waiting in MPI;
#  - transports (PHI_MPI_TRANSPORT):
#      unset/auto  one host: shared memory (btl self,vader), no network interface probing.
#                  several hosts (--hostfile, or --host naming another machine): OpenMPI chooses
#                  (UCX or InfiniBand where present, TCP otherwise); PHI_MPI_IF=eth1[,...] restricts
#                  the TCP interfaces (btl_tcp_if_include, oob_tcp_if_include) and PHI_UCX_DEVICES
#                  UCX's devices (UCX_NET_DEVICES, e.g. mlx5_0:1).
#      tcp         TCP only (pml ob1, btl self,tcp) on PHI_MPI_IF, by default loopback (lo), which
#                  OpenMPI otherwise excludes: tests the multi-host path on one machine.
#      shm         shared memory only (one host).
#  - OMP_NUM_THREADS per rank defaults to cores / ranks on one host (at least 1); set
#    PHI_THREADS_PER_RANK to override (phi-worker itself follows `threads_per_rank` in its config,
#    else its affinity mask);
#  - the operator's SIGTERM/SIGINT becomes SIGUSR1, which mpirun forwards to every rank without
#    killing any: rank 0 drains (finishes in-flight requests, then releases the other ranks) and
#    every rank exits 0. A second SIGTERM/SIGINT is passed on as SIGTERM (immediate stop).
#  - when a rank fails, mpirun SIGTERMs the others and SIGKILLs them PHI_KILL_TIMEOUT seconds
#    later (default 1). OpenMPI waits out that period even when every rank is already gone, and
#    (measured with OpenMPI 4.1) the survivors' SIGTERM itself comes only one period after the
#    failure, so it bounds how fast clients hear of a lost rank and is kept short. SIGTERM at a
#    rank is teardown (coordinator/app/signals.h): rank 0 tells its clients within it.
# Usage: scripts/mpirun.sh [--hostfile FILE | --host h1:slots,h2:slots] -np N <program> [args...]
#        (MPMD: ... -np 1 prog args : -np 1 env PHI_CPU_ISA=avx2 prog args)
set -euo pipefail

np=0
multi_host=0
args=()
this_host=$(hostname)
is_local() { case "$1" in localhost|127.0.0.1|::1|"$this_host"|"${this_host%%.*}") return 0 ;; *) return 1 ;; esac; }
note_hosts() {  # comma-separated host[:slots] list
  local h
  for h in ${1//,/ }; do is_local "${h%%:*}" || multi_host=1; done
}
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n|--np|-c) np=$((np + $2)); args+=("$1" "$2"); shift 2 ;;
    --host|-host|-H) note_hosts "$2"; args+=("$1" "$2"); shift 2 ;;
    --hostfile|-hostfile|--machinefile|-machinefile|--default-hostfile)
      [ -r "$2" ] || { echo "scripts/mpirun.sh: cannot read the hostfile $2" >&2; exit 2; }
      while read -r h _; do
        case "$h" in ''|'#'*) ;; *) is_local "$h" || multi_host=1 ;; esac
      done <"$2"
      args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ "$np" -gt 0 ] || { echo "scripts/mpirun.sh: give -np N" >&2; exit 2; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_odls_base_sigkill_timeout=${PHI_KILL_TIMEOUT:-1}
transport=${PHI_MPI_TRANSPORT:-auto}
case "$transport" in
  auto) [ "$multi_host" -eq 1 ] && transport=network || transport=shm ;;
  tcp|shm) ;;
  *) echo "scripts/mpirun.sh: PHI_MPI_TRANSPORT=$transport: use auto, tcp or shm" >&2; exit 2 ;;
esac
if [ "$transport" = shm ] && [ "$multi_host" -eq 1 ]; then
  echo "scripts/mpirun.sh: PHI_MPI_TRANSPORT=shm cannot reach other hosts; use auto or tcp" >&2; exit 2
fi
fwd=()
case "$transport" in
  shm)
    # Loopback-only transports: no network interface probing, no warnings on machines without one.
    export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none ;;
  tcp)
    export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=${PHI_MPI_IF:-lo}
    [ "$multi_host" -eq 1 ] && export OMPI_MCA_oob_tcp_if_include=${PHI_MPI_IF:-lo}
    echo "scripts/mpirun.sh: TCP transport (pml ob1, btl self,tcp on ${PHI_MPI_IF:-lo})" >&2 ;;
  network)
    if [ -n "${PHI_MPI_IF:-}" ]; then
      export OMPI_MCA_btl_tcp_if_include=$PHI_MPI_IF OMPI_MCA_oob_tcp_if_include=$PHI_MPI_IF
    fi
    if [ -n "${PHI_UCX_DEVICES:-}" ]; then
      export UCX_NET_DEVICES=$PHI_UCX_DEVICES
      fwd+=(-x UCX_NET_DEVICES)
    fi ;;
esac

# Threads: on one host, cores / ranks; across hosts this host's core count says nothing about
# the others, so only an explicit PHI_THREADS_PER_RANK is passed on.
if [ -n "${PHI_THREADS_PER_RANK:-}" ]; then
  fwd+=(-x OMP_NUM_THREADS="$PHI_THREADS_PER_RANK")
elif [ "$multi_host" -eq 0 ]; then
  cores=$(nproc)
  fwd+=(-x OMP_NUM_THREADS="$(( cores / np > 0 ? cores / np : 1 ))")
fi
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
