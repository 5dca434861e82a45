# What the hack/ scripts share: logging, the cluster options and state folder, and processes
# recorded by pid, and pinned Python tools in a venv. Sourced by cluster.sh, test.sh, demo.sh,
# bench.sh, plot-bench.sh and schemathesis.sh.
# shellcheck shell=bash

# log MESSAGE...: a timestamped line on stderr.
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# die MESSAGE...: logs "error: MESSAGE" and exits 1.
die() {
  log "error: $*"
  exit 1
}

# --- clusters -----------------------------------------------------------------------------

# state_dir NAME: the state folder of the local cluster NAME (outside the repository).
state_dir() { echo "${XDG_STATE_HOME:-$HOME/.local/state}/datajob-operator/clusters/$1"; }

# The cluster options every script takes; a script may set defaults before parse_options.
NAME=${NAME:-}
PORT_BASE=${DATAJOB_PORT_BASE:-}

# parse_options HANDLER ARGS...: takes --name NAME and --port-base PORT (also as --opt=value)
# into NAME and PORT_BASE, and hands every other argument to `HANDLER ARG [REST...]`, which
# sets OPTION_ARGS to how many arguments it took (1, or $# to take the rest).
parse_options() {
  local handler=$1; shift
  while (($#)); do
    case $1 in
      --name) NAME=${2:?--name needs a value}; OPTION_ARGS=2 ;;
      --name=*) NAME=${1#*=}; OPTION_ARGS=1 ;;
      --port-base) PORT_BASE=${2:?--port-base needs a value}; OPTION_ARGS=2 ;;
      --port-base=*) PORT_BASE=${1#*=}; OPTION_ARGS=1 ;;
      *) "$handler" "$@" ;;
    esac
    shift "$OPTION_ARGS"
  done
}

# usage LAST_LINE: prints the calling script's header comment (lines 2 to LAST_LINE).
usage() { sed -n "2,${1}s/^# \{0,1\}//p" "$0"; }

# bad_usage LAST_LINE: the header comment on stderr, exit 2.
bad_usage() {
  usage "$1" >&2
  exit 2
}

# check_name: dies unless NAME is a short DNS label (it names folders, nodes and links).
check_name() {
  [[ $NAME =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || die "cluster name '$NAME' must be a short DNS label"
}

# cluster_command [EXTRA_OPTIONS...]: sets CLUSTER to the hack/cluster.sh command line for
# NAME (and PORT_BASE, when set), for "${CLUSTER[@]}" up|down|env|status.
cluster_command() {
  CLUSTER=("$ROOT/hack/cluster.sh" --name "$NAME")
  [[ -z ${PORT_BASE:-} ]] || CLUSTER+=(--port-base "$PORT_BASE")
  CLUSTER+=("$@")
}

# --- processes recorded by pid ------------------------------------------------------------
#
# A process started by spawn_recorded BASE ... is recorded in BASE.pid and BASE.exe (its
# resolved binary), and is ours only while /proc/PID/exe is still that binary, so a reused pid
# is never signalled. Nothing is ever stopped by name.

# alive PID: the process exists and is not a zombie (exited, waiting to be reaped).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# recorded_pid BASE: prints the pid recorded in BASE.pid if that process is alive and runs the
# binary recorded in BASE.exe; fails otherwise.
recorded_pid() {
  local base=$1 pid exe want
  [[ -f $base.pid ]] || return 1
  pid=$(<"$base.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  want=$(cat "$base.exe" 2>/dev/null || true)
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  exe=${exe% (deleted)}
  [[ -z $want || $exe == "$want" ]] || return 1
  echo "$pid"
}

# spawn_recorded BASE LOGFILE BINARY ARGS...: starts BINARY in a session of its own (closing
# the terminal does not stop it), output appended to LOGFILE after a line with the command,
# and records it under BASE. Waits (bounded) until the process runs BINARY, so recorded_pid
# does not take a starting process for a dead one. Dies if it exits at once.
spawn_recorded() {
  local base=$1 logfile=$2 bin=$3; shift 3
  local resolved; resolved=$(readlink -f "$bin")
  echo "# $(date -u +%FT%TZ) $bin $*" >>"$logfile"
  setsid "$resolved" "$@" >>"$logfile" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$base.pid"
  echo "$resolved" >"$base.exe"
  local deadline=$((SECONDS + 10)) exe
  while alive "$pid" && ((SECONDS < deadline)); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    [[ ${exe% (deleted)} == "$resolved" ]] && return 0
    sleep 0.01
  done
  if ! alive "$pid"; then
    log "$(basename "$bin") exited at once; last lines of $logfile:"
    tail -n 30 "$logfile" >&2
    die "$(basename "$bin") did not start"
  fi
  die "$(basename "$bin") (pid $pid) did not exec $resolved within 10s"
}

# stop_recorded BASE [GRACE_SECONDS]: SIGTERM to the process recorded under BASE, up to
# GRACE_SECONDS (default 15) for it to exit, then SIGKILL; removes the record. Succeeds when
# nothing of ours runs; dies if the process survives SIGKILL.
stop_recorded() {
  local base=$1 grace=${2:-15} pid deadline
  if pid=$(recorded_pid "$base"); then
    log "stopping $(basename "$base") (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if recorded_pid "$base" >/dev/null; then
      log "$(basename "$base") (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
      ! alive "$pid" || die "$(basename "$base") (pid $pid) survived SIGKILL"
    fi
  fi
  rm -f "$base.pid" "$base.exe"
}

# --- Python tools -------------------------------------------------------------------------

# python_venv DIR REQUIREMENT: makes DIR a virtualenv with the pinned REQUIREMENT from PyPI, on
# first use (needs python3 with venv). A venv counts once its install finished (the stamp); an
# interrupted one is made again.
python_venv() {
  local venv=$1 requirement=$2
  [[ -f $venv/.installed ]] && return 0
  command -v python3 >/dev/null || die "$requirement needs python3 (with the venv module)"
  log "installing $requirement into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  touch "$venv/.installed"
}
