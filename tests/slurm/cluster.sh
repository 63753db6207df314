#!/usr/bin/env bash
# A private single-node Slurm cluster for the test suite, with all its state under one directory.
#
#   cluster.sh up [--accounting] DIR   install missing packages, start munged, (mariadbd, slurmdbd,)
#                                      slurmctld and slurmd; wait until the node is idle
#   cluster.sh down DIR                stop every daemon started here, by the pid in its pid file
#   cluster.sh status DIR              one line per daemon; exit 0 when all run, 3 otherwise
#   cluster.sh stop-ctld|start-ctld|suspend-ctld|resume-ctld DIR
#                                      failure injection: SIGTERM/restart or SIGSTOP/SIGCONT slurmctld
#
# Then `. DIR/env.sh` (exports SLURM_CONF) and use sbatch/squeue/sacct as usual.
# Needs root (slurmd launches jobs, munged runs as the munge user) and Debian's packages, which it
# installs with apt-get through scripts/slurm-deps.sh when missing. Facts behind the settings:
# /work/shared/notes/slurm.md (Slurm 22.05 from Debian 12, no systemd, no cgroups).
#
# DIR and every directory above it must be searchable by all (munged insists on that for its
# socket), so use e.g. `mktemp -d /tmp/slurm.XXXX`, not pytest's 0700 /tmp/pytest-of-root.
# Daemons use free high ports picked at `up` and are reached via 127.0.0.1 only (slurmd, slurmdbd
# and mariadbd listen on 127.0.0.1; slurmctld 22.05 listens on all addresses regardless of
# CommunicationParameters=NoInAddrAny), so this cluster cannot clash with a system Slurm or another
# test cluster. Nothing is ever stopped by name: `down` signals only the pids recorded under DIR,
# after checking each is the right program. A failed `up` stops what it started.
# Exit status: 0 ok, 1 error, 2 usage, 3 `status` found a daemon not running, 4 cannot run here
# (not root, or missing packages that cannot be installed).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NODE_CPUS=${ORCH_SLURM_CPUS:-8}   # more than the 2 real cores so that several jobs run at once
NODE_GPUS=4   # stand-in GPUs for gres/gpu accounting (AllocTRES, sacct)
UP_TIMEOUT_S=${ORCH_SLURM_UP_TIMEOUT_S:-60}
STOP_TIMEOUT_S=30
CLUSTER_NAME=orchtest

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
usage() {
  sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---- pids ---------------------------------------------------------------------------------------
# name -> pid file and program (checked against /proc/PID/exe so that a reused pid is never hit)
pidfile() {
  case "$1" in
    munged) echo "$DIR/munge/munged.pid" ;;
    mariadbd) echo "$DIR/mysql/mariadbd.pid" ;;
    slurmdbd) echo "$DIR/run/slurmdbd.pid" ;;
    slurmctld) echo "$DIR/run/slurmctld.pid" ;;
    slurmd) echo "$DIR/run/slurmd.pid" ;;
  esac
}

daemons() {  # in start order
  if [ -e "$DIR/accounting" ]; then
    echo munged mariadbd slurmdbd slurmctld slurmd
  else
    echo munged slurmctld slurmd
  fi
}

pid_of() {  # prints the pid when that daemon runs (stopped counts as running), else nothing
  local name=$1 file pid exe
  file=$(pidfile "$name")
  [ -s "$file" ] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] || return 0
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 0
  exe=$(basename "${exe% (deleted)}")
  # Debian installs slurmctld/slurmd/slurmdbd as alternatives for slurmctld-wlm and so on.
  case "$exe" in "$name" | "$name"-*) echo "$pid" ;; esac
  return 0
}

proc_state() {  # R/S/D/T/... from /proc/PID/stat
  local rest
  rest=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "?"; return; }
  rest=${rest##*) }
  echo "${rest%% *}"
}

wait_pidfile() {  # name timeout_s: wait until the daemon has written its pid file and runs
  local name=$1 deadline=$((SECONDS + $2))
  while [ -z "$(pid_of "$name")" ]; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

stop_daemons() {  # names...: SIGTERM each by pid, wait for all, SIGKILL after STOP_TIMEOUT_S
  local name pid pids=() names=() deadline
  for name in "$@"; do
    pid=$(pid_of "$name")
    if [ -z "$pid" ]; then
      rm -f "$(pidfile "$name")"
      continue
    fi
    kill -CONT "$pid" 2>/dev/null || true   # a suspended daemon would never act on SIGTERM
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    names+=("$name")
  done
  deadline=$((SECONDS + STOP_TIMEOUT_S))
  local i
  for i in "${!pids[@]}"; do
    while kill -0 "${pids[$i]}" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        say "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for ${STOP_TIMEOUT_S} s; sending SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
        sleep 0.2
        break
      fi
      sleep 0.05
    done
    rm -f "$(pidfile "${names[$i]}")"
    say "stopped ${names[$i]} (pid ${pids[$i]})"
  done
}

log_tails() {
  local f
  for f in "$DIR"/log/*.log "$DIR"/munge/munged.log "$DIR"/mysql/mariadbd.log; do
    [ -s "$f" ] || continue
    echo "---- tail of $f" >&2
    tail -n 15 "$f" >&2
  done
}

# ---- helpers ------------------------------------------------------------------------------------
free_port() {  # a TCP port nothing on this machine uses now, and not one already chosen here
  local port used
  used=$(ss -Htan 2>/dev/null | awk '{n=split($4,a,":"); print a[n]}' || true)
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 40000))
    grep -qx "$port" <<<"$used" && continue
    grep -qw "$port" <<<"${CHOSEN_PORTS:-}" && continue
    CHOSEN_PORTS="${CHOSEN_PORTS:-} $port"
    echo "$port"
    return 0
  done
  die "no free TCP port found"
}

check_searchable() {
  # munged refuses a socket unless every directory above it is searchable by all (o+x); pytest's
  # own /tmp/pytest-of-root is 0700, so test clusters live in their own directory under /tmp.
  local d=$DIR mode
  while [ "$d" != "/" ]; do
    mode=$(stat -c %a "$d")
    if (( (8#$mode & 1) == 0 )); then
      die "$d has mode $mode: munged needs every directory above its socket to be searchable by all (o+x); use a DIR under /tmp (e.g. mktemp -d /tmp/slurm.XXXX)"
    fi
    d=$(dirname "$d")
  done
}

wait_for() {  # timeout_s what command...: run command until it succeeds
  local timeout_s=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "error: $what not reached within ${timeout_s} s"
      log_tails
      exit 1
    fi
    sleep 0.2
  done
}

node_idle() {
  local states  # one line per partition
  states=$(SLURM_CONF="$DIR/slurm.conf" timeout 15 sinfo -h -N -n "$NODE" -o %T 2>/dev/null) || return 1
  [ "$(sort -u <<<"$states")" = "idle" ]
}

probe_started() {
  local pending
  pending=$(SLURM_CONF="$DIR/slurm.conf" timeout 15 squeue -h -t PD -n cluster.sh-probe -o %A) || return 1
  [ -z "$pending" ]
}

ctld_answers() { SLURM_CONF="$DIR/slurm.conf" timeout 15 scontrol ping 2>/dev/null | grep -q "is UP"; }

start_slurmctld() {
  SLURM_CONF="$DIR/slurm.conf" slurmctld -f "$DIR/slurm.conf" \
    || { log_tails; die "slurmctld did not start"; }
  wait_pidfile slurmctld 15 || { log_tails; die "slurmctld wrote no pid file"; }
  wait_for 30 "slurmctld answering" ctld_answers
  say "slurmctld running (pid $(pid_of slurmctld))"
}

# ---- up -----------------------------------------------------------------------------------------
write_slurm_conf() {
  local hw real_mem real_cpus
  hw=$(slurmd -C | head -n 1)
  real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  real_cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  local cpus=$NODE_CPUS
  [ "${real_cpus:-0}" -gt "$cpus" ] && cpus=$real_cpus
  cat >"$DIR/slurm.conf" <<EOF
# Generated by tests/slurm/cluster.sh for a private single-node test cluster; all state in $DIR.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
# Listen on the addresses named here (127.0.0.1), not on every interface.
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
# No cgroups and no systemd here (notes/slurm.md): track job processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# What runs used (sacct's TotalCPU and MaxRSS, issue 12), sampled each second so that short
# test jobs have a peak; proctrack/linuxproc is what the linux plugin reads from.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
# Stand-in GPUs (gres.conf): AllocTRES and sacct carry gres/gpu as on a GPU node.
GresTypes=gpu
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
# Submit-to-finish 0.4-1 s instead of 3 s.
SchedulerParameters=batch_sched_delay=0
# In 22.05 this is ignored under SchedulerParameters.
DependencyParameters=kill_invalid_depend
# Let CPUs= below exceed the real cores, so that several jobs run at once.
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
MessageTimeout=10
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
EOF
  if [ "$ACCOUNTING" -eq 1 ]; then
    cat >>"$DIR/slurm.conf" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With a private munge socket slurmctld must be told the socket here too, otherwise
# "REQUEST_PERSIST_INIT has authentication error" (notes/slurm.md).
AccountingStoragePass=$SOCK
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu
EOF
  fi
  # slurmd drops a file-less GPU from its list (the node goes INVAL): one stand-in file per GPU.
  # Nothing opens them (TaskPlugin=task/none: no device cgroup); they give each GPU an index.
  mkdir -p "$DIR/gpus"
  local i
  for ((i = 0; i < NODE_GPUS; i++)); do : >"$DIR/gpus/nvidia$i"; done
  printf 'NodeName=%s Name=gpu File=%s/gpus/nvidia[0-%s]\n' "$NODE" "$DIR" "$((NODE_GPUS - 1))" >"$DIR/gres.conf"
  cat >>"$DIR/slurm.conf" <<EOF
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=${real_mem:-1000} Gres=gpu:$NODE_GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
# Stands for a GPU queue in the fallback tests: one CPU of the node, so a second job waits
# (Reason=Resources) while the others' partitions have room; a test may set it DOWN.
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP MaxCPUsPerNode=1
EOF
}

start_munged() {
  mkdir -p "$DIR/munge"
  chmod 755 "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
  chown -R munge:munge "$DIR/munge"
  chmod 600 "$DIR/munge/munge.key"
  runuser -u munge -- munged --socket="$SOCK" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || { log_tails; die "munged did not start"; }
  wait_pidfile munged 10 || { log_tails; die "munged wrote no pid file"; }
  munge -n -S "$SOCK" | unmunge -S "$SOCK" >/dev/null || { log_tails; die "munge round trip failed"; }
  say "munged running (pid $(pid_of munged)), socket $SOCK"
}

start_mariadbd() {
  local my=$DIR/mysql
  mkdir -p "$my/data"
  chown -R mysql:mysql "$my"
  chmod 750 "$my"
  if [ ! -d "$my/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$my/data" --skip-test-db \
      --auth-root-authentication-method=socket --innodb-log-file-size=8M >"$DIR/log/mariadb-install-db.log" 2>&1 \
      || { tail -n 20 "$DIR/log/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
  fi
  # mariadbd does not daemonize: detach it into its own session; it writes its own pid file.
  setsid mariadbd --no-defaults --user=mysql --datadir="$my/data" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --skip-name-resolve --socket="$my/mysqld.sock" --pid-file="$my/mariadbd.pid" \
    --log-error="$my/mariadbd.log" --skip-log-bin --innodb-buffer-pool-size=32M \
    --innodb-log-file-size=8M </dev/null >/dev/null 2>&1 &
  wait_for 30 "mariadbd answering on $my/mysqld.sock" \
    mariadb --no-defaults -S "$my/mysqld.sock" -u root -e 'SELECT 1'
  wait_pidfile mariadbd 10 || { log_tails; die "mariadbd wrote no pid file"; }
  mariadb --no-defaults -S "$my/mysqld.sock" -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
  say "mariadbd running (pid $(pid_of mariadbd)), 127.0.0.1:$DB_PORT"
}

start_slurmdbd() {
  umask 077
  cat >"$DIR/slurmdbd.conf" <<EOF
# Generated by tests/slurm/cluster.sh; mode 600 because it holds the database password.
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  umask 022
  chmod 600 "$DIR/slurmdbd.conf"
  # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF.
  SLURM_CONF="$DIR/slurm.conf" slurmdbd || { log_tails; die "slurmdbd did not start"; }
  wait_pidfile slurmdbd 15 || { log_tails; die "slurmdbd wrote no pid file"; }
  wait_for 30 "slurmdbd answering" env SLURM_CONF="$DIR/slurm.conf" sacctmgr -n list cluster
  say "slurmdbd running (pid $(pid_of slurmdbd)), 127.0.0.1:$DBD_PORT"
}

add_associations() {
  # AccountingStorageEnforce=associations: jobs need cluster, account and user in the database
  # before slurmctld accepts them. QOS "tests" is valid for root; anything else is invalid.
  local s=(env SLURM_CONF="$DIR/slurm.conf" sacctmgr -i -Q)
  "${s[@]}" add cluster "$CLUSTER_NAME" >/dev/null
  "${s[@]}" add qos tests >/dev/null
  "${s[@]}" add account tests Cluster="$CLUSTER_NAME" Description=tests Organization=tests >/dev/null
  "${s[@]}" add user root Account=tests Cluster="$CLUSTER_NAME" >/dev/null
  "${s[@]}" modify user root set qos=normal,tests defaultqos=normal >/dev/null
  say "accounting: cluster $CLUSTER_NAME, account tests, user root, QOS normal and tests"
}

cmd_up() {
  if [ "$(id -u)" -ne 0 ]; then
    say "error: must run as root (slurmd launches jobs as their users; munged runs as the munge user)"
    exit 4
  fi
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [ -s "$DIR/slurm.conf" ]; then
    local running=() stopped=() name
    for name in $(daemons); do
      if [ -n "$(pid_of "$name")" ]; then running+=("$name"); else stopped+=("$name"); fi
    done
    if [ ${#stopped[@]} -eq 0 ]; then
      local have=0
      [ -e "$DIR/accounting" ] && have=1
      [ "$have" -eq "$ACCOUNTING" ] \
        || die "a cluster is up in $DIR with accounting=$have; run 'cluster.sh down $DIR' first"
      say "already up in $DIR (${running[*]})"
      echo "$DIR/env.sh"
      return 0
    fi
    if [ ${#running[@]} -gt 0 ]; then
      die "partly up in $DIR (running: ${running[*]}; not running: ${stopped[*]}); run 'cluster.sh down $DIR' first"
    fi
  fi
  chmod 755 "$DIR"
  check_searchable

  local deps=(bash "$REPO/scripts/slurm-deps.sh")
  [ "$ACCOUNTING" -eq 1 ] && deps+=(--accounting)
  # Exit status 4 tells the pytest fixture "cannot install here": it skips rather than fails.
  "${deps[@]}" || { say "error: missing Debian packages could not be installed (see above)"; exit 4; }
  getent passwd munge >/dev/null || die "no munge user after installing munge"
  if [ "$ACCOUNTING" -eq 1 ]; then
    getent passwd mysql >/dev/null || die "no mysql user after installing mariadb-server"
  fi

  # From here on a failure stops whatever this call started (pids under DIR), then exits.
  trap 'rc=$?; trap - EXIT; if [ $rc -ne 0 ]; then say "up failed; stopping what it started"; stop_all; fi; exit $rc' EXIT
  NODE=$(hostname -s)
  SOCK=$DIR/munge/munge.socket.2
  [ ${#SOCK} -lt 100 ] || die "munge socket path too long for a Unix socket: $SOCK"
  # A fresh start: job ids restart at 1, so old accounting records must go too.
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log" "$DIR/accounting" "$DIR/mysql"
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
  CTLD_PORT=$(free_port)
  SLURMD_PORT=$(free_port)
  if [ "$ACCOUNTING" -eq 1 ]; then
    DBD_PORT=$(free_port)
    DB_PORT=$(free_port)
    DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    : >"$DIR/accounting"
  fi
  write_slurm_conf
  printf '# source me: the test cluster in %s\nexport SLURM_CONF=%q\n' "$DIR" "$DIR/slurm.conf" \
    >"$DIR/env.sh"

  start_munged
  if [ "$ACCOUNTING" -eq 1 ]; then
    start_mariadbd
    start_slurmdbd
    add_associations
  fi
  start_slurmctld
  SLURM_CONF="$DIR/slurm.conf" slurmd -f "$DIR/slurm.conf" || { log_tails; die "slurmd did not start"; }
  wait_pidfile slurmd 15 || { log_tails; die "slurmd wrote no pid file"; }
  wait_for "$UP_TIMEOUT_S" "node $NODE idle in sinfo" node_idle
  # slurmctld schedules nothing until its first periodic pass, about 5 s after it starts (jobs
  # submitted earlier pend with reason None): run one probe job so that `up` returns a cluster
  # that starts jobs at once. It shows in sacct as job 1, named cluster.sh-probe.
  SLURM_CONF="$DIR/slurm.conf" sbatch --quiet --job-name=cluster.sh-probe --output=/dev/null \
    --wrap true || { log_tails; die "sbatch of the probe job failed"; }
  wait_for "$UP_TIMEOUT_S" "probe job started" probe_started
  say "up in $DIR: node $NODE idle, slurmctld 127.0.0.1:$CTLD_PORT$([ "$ACCOUNTING" -eq 1 ] && echo ", slurmdbd 127.0.0.1:$DBD_PORT, mariadbd 127.0.0.1:$DB_PORT"); run: . $DIR/env.sh"
  echo "$DIR/env.sh"
}

# ---- down / status / ctld -----------------------------------------------------------------------
cancel_jobs() {
  # slurmstepd and job processes outlive slurmd: cancel this cluster's jobs while slurmctld can
  # still act on that (it may have been stopped or suspended by a failure-injection test).
  local pid ids
  pid=$(pid_of slurmctld)
  [ -n "$pid" ] || return 0
  kill -CONT "$pid" 2>/dev/null || true
  ids=$(SLURM_CONF="$DIR/slurm.conf" timeout 15 squeue -h -o %A 2>/dev/null) || return 0
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086
  SLURM_CONF="$DIR/slurm.conf" timeout 15 scancel $ids 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while [ $SECONDS -lt $deadline ]; do
    ids=$(SLURM_CONF="$DIR/slurm.conf" timeout 15 squeue -h -t running,completing -o %A 2>/dev/null) || break
    [ -z "$ids" ] && break
    sleep 0.2
  done
}

stop_all() {
  # All at once: each takes about 2 s to exit, and a test cluster's last accounting messages
  # need not survive (slurmctld keeps them in its state dir if slurmdbd is gone first).
  # shellcheck disable=SC2046
  stop_daemons $(daemons | tr ' ' '\n' | tac)
}

cmd_down() {
  [ -d "$DIR" ] || die "no such directory: $DIR"
  DIR=$(cd "$DIR" && pwd)
  cancel_jobs
  stop_all
  say "down: $DIR (left in place)"
}

cmd_status() {
  [ -d "$DIR" ] || die "no such directory: $DIR"
  DIR=$(cd "$DIR" && pwd)
  local all=0 name pid state
  for name in $(daemons); do
    pid=$(pid_of "$name")
    if [ -z "$pid" ]; then
      echo "$name stopped"
      all=3
    else
      state=$(proc_state "$pid")
      if [ "$state" = "T" ]; then echo "$name suspended pid=$pid"; else echo "$name running pid=$pid"; fi
    fi
  done
  if [ -s "$DIR/slurm.conf" ] && [ -n "$(pid_of slurmctld)" ] && [ "$(proc_state "$(pid_of slurmctld)")" != "T" ]; then
    SLURM_CONF="$DIR/slurm.conf" timeout 15 sinfo -h -N -o 'node %N %T' 2>/dev/null | sort -u || echo "node unknown"
  fi
  return $all
}

need_cluster() {
  [ -s "$DIR/slurm.conf" ] || die "no cluster in $DIR (run 'cluster.sh up $DIR')"
  DIR=$(cd "$DIR" && pwd)
}

cmd_stop_ctld() { need_cluster; stop_daemons slurmctld; }

cmd_start_ctld() {
  need_cluster
  local pid
  pid=$(pid_of slurmctld)
  if [ -n "$pid" ]; then
    say "slurmctld already running (pid $pid)"
    return 0
  fi
  start_slurmctld
}

cmd_signal_ctld() {  # SIGSTOP or SIGCONT
  need_cluster
  local pid
  pid=$(pid_of slurmctld)
  [ -n "$pid" ] || die "slurmctld is not running in $DIR"
  kill "-$1" "$pid"
  say "sent SIG$1 to slurmctld (pid $pid)"
}

# ---- main ---------------------------------------------------------------------------------------
[ $# -ge 1 ] || usage
cmd=$1
shift
ACCOUNTING=0
if [ "$cmd" = up ] && [ "${1:-}" = --accounting ]; then
  ACCOUNTING=1
  shift
fi
[ $# -eq 1 ] || usage
DIR=$1
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stop-ctld) cmd_stop_ctld ;;
  start-ctld) cmd_start_ctld ;;
  suspend-ctld) cmd_signal_ctld STOP ;;
  resume-ctld) cmd_signal_ctld CONT ;;
  *) usage ;;
esac
