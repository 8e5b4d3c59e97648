#!/usr/bin/env bash
# The test suite's own single-node SLURM cluster: munge, slurmctld and slurmd started by hand (no
# systemd here), no accounting (the runner must not need it: a cancelled job's result reaches
# submitit either way). Idempotent; prints the node's name on its last line.
#   SLURM_CPUS=N   CPUs declared for the node (default 4: more than a 2-core machine has, so that
#                  two 2-task jobs run at once, as on a real node shared by a sweep's jobs)
# Stop what it started with teardown.sh beside it.
set -euo pipefail
NODE=$(hostname -s)
CPUS=${SLURM_CPUS:-4}
export DEBIAN_FRONTEND=noninteractive
say() { echo "[slurm-test-setup] $*" >&2; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

missing=()
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get install -y -q "${missing[@]}" >/tmp/slurm-test-apt.log 2>&1 \
    || { apt-get update -qq >>/tmp/slurm-test-apt.log 2>&1 \
         && apt-get install -y -q "${missing[@]}" >>/tmp/slurm-test-apt.log 2>&1; }
fi
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts

[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
alive /run/munge/munged.pid || { say "starting munged"; runuser -u munge -- /usr/sbin/munged; }
for _ in $(seq 20); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
MEM=$(( $(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p') - 100 ))
OVERRIDES=""; [ "$CPUS" -gt "$(nproc)" ] && OVERRIDES="SlurmdParameters=config_overrides"
conf=$(mktemp)
cat >"$conf" <<CONF
ClusterName=runnertest
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=10
MpiDefault=none
$OVERRIDES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
restart=0
cmp -s "$conf" /etc/slurm/slurm.conf || { cp "$conf" /etc/slurm/slurm.conf; restart=1; }
rm -f "$conf"
stop() { alive "$1" || return 0; local pid; pid=$(cat "$1"); kill "$pid"
         for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
         kill -9 "$pid" 2>/dev/null || true; }
if [ "$restart" = 1 ]; then stop /run/slurm/slurmd.pid; stop /run/slurm/slurmctld.pid; fi
alive /run/slurm/slurmctld.pid || { say "starting slurmctld"; slurmctld; }
for _ in $(seq 40); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
alive /run/slurm/slurmd.pid || { say "starting slurmd"; slurmd; }
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
case "$state" in idle|mixed|allocated) ;; *) say "node $NODE is '$state'; see /var/log/slurm/"; exit 1 ;; esac
say "ready: node $NODE, $CPUS CPUs, partition debug, no accounting"
echo "$NODE"
