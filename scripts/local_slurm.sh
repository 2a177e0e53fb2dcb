#!/usr/bin/env bash
# A real single-node SLURM on localhost, for tests of the SLURM profile (tests/test_slurm.py) and for
# trying the profile by hand. Not for production clusters.
#
#   scripts/local_slurm.sh start    install (if missing) and start munged, slurmctld, slurmd -N localhost;
#                                   returns once the node is idle
#   scripts/local_slurm.sh stop     cancel our jobs, stop exactly the daemons start launched (by their
#                                   PID files), restore a pre-existing /etc/slurm/slurm.conf
#   scripts/local_slurm.sh status   daemons (by PID file) and sinfo; exit 0 when all run, 3 otherwise
#
# Environment:
#   LOCAL_SLURM_DIR   state, spool, logs, PID files, munge key and socket (default /tmp/local-slurm)
#
# Why it looks like this (see docs/cluster.md, "How the local SLURM test works"):
#   - the config must be /etc/slurm/slurm.conf: the executor plugin's job step strips SLURM_CONF before
#     its inner srun, so a config elsewhere fails every job;
#   - no slurmdbd: sacct does not work, use `--slurm-status-command squeue` (MinJobAge=1800 keeps finished
#     jobs visible to squeue);
#   - munged runs on its own key and socket under LOCAL_SLURM_DIR (AuthInfo=socket=...), so a site's
#     munge is never touched;
#   - daemons listen on 127.0.0.1 only; no cgroups, no gres, no accounting.
# Exit codes: 0 ok, 1 failure (message on stderr), 2 not root, 3 SLURM packages cannot be installed
# (start) / not running (status).
set -uo pipefail

DIR=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by talking-nerf-pipeline scripts/local_slurm.sh"
PKGS=(slurmctld slurmd slurm-client munge)
DAEMONS=(slurmd slurmctld munged)   # stop order

die() { echo "local_slurm.sh: $1" >&2; exit "${2:-1}"; }
log() { echo "local_slurm.sh: $*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (it installs Debian packages, writes $CONF and runs slurmctld/slurmd with SlurmUser=root); run it with sudo or in CI as root" 2
  fi
}

# PID from DIR/<daemon>.pid if that process is alive and is that daemon; empty otherwise.
live_pid() {
  local name=$1 f="$DIR/$1.pid" pid comm
  [ -s "$f" ] || return 0
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
  [ "$comm" = "$name" ] && echo "$pid"
  return 0
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
  command -v munged >/dev/null 2>&1 || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "SLURM is not installed and apt-get is not available (need: ${PKGS[*]})" 3
  log "installing ${missing[*]} (apt-get)"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
  export DEBIAN_FRONTEND=noninteractive
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1; then
    "${apt[@]}" update >>"$DIR/apt.log" 2>&1
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1 ||
      die "apt-get could not install ${missing[*]} (see $DIR/apt.log): $(tail -n 2 "$DIR/apt.log" | tr '\n' ' ')" 3
  fi
}

write_conf() {
  local cpus mem_kb mem
  cpus=$(nproc)
  [ "$cpus" -lt 2 ] && cpus=2   # rules ask for up to 2 threads; nothing pins CPUs here (task/none)
  mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  mem=$((mem_kb * 9 / 10 / 1024))   # 90% of RAM in MB
  [ "$mem" -lt 8000 ] && mem=8000    # rules ask for up to 6000 MB; memory is not enforced (no cgroups)
  mkdir -p /etc/slurm
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    cp -p "$CONF" "$DIR/slurm.conf.orig"
    log "saved the existing $CONF to $DIR/slurm.conf.orig (restored by stop)"
  elif [ -e "$CONF" ] && [ "$(conf_state_dir)" != "$DIR" ]; then
    log "replacing $CONF left by an earlier local cluster (state dir $(conf_state_dir)), removed by stop"
  fi
  cat >"$CONF.tmp.$$" <<EOF
$MARK
# state dir: $DIR ; removed or restored by 'scripts/local_slurm.sh stop'
ClusterName=localtest
SlurmctldHost=localhost(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=1800
SlurmdParameters=config_overrides
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp.$$" "$CONF"
}

start_munged() {
  mkdir -p "$DIR/munge"
  chmod 700 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
  fi
  munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
    >>"$DIR/log/start.log" 2>&1 || die "munged did not start (see $DIR/log/munged.log)"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $end ] && return 1
    sleep 0.5
  done
}

# State dir recorded in our /etc/slurm/slurm.conf (empty when the config is not ours or absent).
conf_state_dir() {
  grep -qF "$MARK" "$CONF" 2>/dev/null || return 0
  sed -n 's/^# state dir: \(.*\) ; removed or restored.*/\1/p' "$CONF"
}

node_idle() { [ "$(sinfo -h -n localhost -o %t 2>/dev/null)" = "idle" ]; }

cmd_start() {
  need_root
  if [ -n "$(live_pid slurmctld)" ] && [ -n "$(live_pid slurmd)" ] && [ -n "$(live_pid munged)" ]; then
    log "already running (state in $DIR)"
    return 0
  fi
  for d in "${DAEMONS[@]}"; do
    [ -n "$(live_pid "$d")" ] && die "$d from an earlier start is still running: run '$0 stop' first"
  done
  local other
  other=$(conf_state_dir)
  if [ -n "$other" ] && [ "$other" != "$DIR" ] && [ -n "$(DIR=$other live_pid slurmctld)" ]; then
    die "another local cluster is running (LOCAL_SLURM_DIR=$other): stop it first with 'LOCAL_SLURM_DIR=$other $0 stop'"
  fi
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  chmod 755 "$DIR"
  install_packages
  write_conf
  start_munged
  wait_for 10 munged test -S "$DIR/munge/munge.socket" || die "munged socket did not appear (see $DIR/log/munged.log)"
  slurmctld -i >>"$DIR/log/start.log" 2>&1 || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  wait_for 30 slurmctld scontrol ping || die "slurmctld does not answer (see $DIR/log/slurmctld.log)"
  slurmd -N localhost >>"$DIR/log/start.log" 2>&1 || die "slurmd did not start (see $DIR/log/slurmd.log)"
  if ! wait_for 60 "idle node" node_idle; then
    sinfo -N -l >&2 || true
    die "node 'localhost' did not become idle within 60 s (see $DIR/log/slurmd.log, $DIR/log/slurmctld.log)"
  fi
  log "SLURM is up: partition debug, node localhost ($(sinfo -h -n localhost -o '%c CPUs, %m MB')), state in $DIR"
}

stop_pid() {  # stop_pid NAME: TERM, wait up to 15 s, then KILL
  local name=$1 pid i
  pid=$(live_pid "$name")
  [ -n "$pid" ] || { rm -f "$DIR/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 30); do
    [ -d "/proc/$pid" ] || break
    sleep 0.5
  done
  if [ -d "/proc/$pid" ]; then
    log "$name ($pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
  fi
  rm -f "$DIR/$name.pid"
}

cmd_stop() {
  need_root
  local other
  other=$(conf_state_dir)
  if [ -n "$other" ] && [ "$other" != "$DIR" ] && [ -z "$(live_pid slurmctld)" ]; then
    die "$CONF belongs to a cluster started with LOCAL_SLURM_DIR=$other: run 'LOCAL_SLURM_DIR=$other $0 stop'"
  fi
  if [ -n "$(live_pid slurmctld)" ]; then
    # jobs still running (a test that failed half-way): cancel them so no slurmstepd is left behind
    if [ -n "$(squeue -h -t RUNNING,PENDING,COMPLETING -o %i 2>/dev/null)" ]; then
      log "cancelling jobs still queued: $(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
      scancel --full -p debug 2>/dev/null || true
      wait_for 20 "jobs to end" sh -c '[ -z "$(squeue -h -t RUNNING,PENDING,COMPLETING -o %i)" ]' ||
        log "jobs still listed after 20 s"
    fi
  fi
  for d in "${DAEMONS[@]}"; do stop_pid "$d"; done
  if [ -e "$DIR/slurm.conf.orig" ]; then
    mv -f "$DIR/slurm.conf.orig" "$CONF"
    log "restored the previous $CONF"
  elif [ -e "$CONF" ] && grep -qF "$MARK" "$CONF"; then
    rm -f "$CONF"
  fi
  log "stopped (logs kept in $DIR/log)"
}

cmd_status() {
  local ok=0 d pid
  for d in munged slurmctld slurmd; do
    pid=$(live_pid "$d")
    if [ -n "$pid" ]; then echo "$d: running (pid $pid)"; else echo "$d: not running"; ok=3; fi
  done
  [ $ok -eq 0 ] && sinfo -N -o "%N %t %c %m" 2>/dev/null
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status   (state in \$LOCAL_SLURM_DIR, default /tmp/local-slurm)" >&2; exit 1 ;;
esac
