#!/usr/bin/env bash
# Creates Cloud TPU VMs, installs this project on every worker, starts and
# follows training runs, and deletes the VMs, with the gcloud CLI.
#
# Every subcommand takes --dry-run, which prints the exact commands, one per
# line and shell-quoted so they can be pasted, instead of running them (no
# gcloud needed). Run with -h for the usage.

set -euo pipefail

readonly PROG="${0##*/}"
# Relative to the home directory of the user on each TPU worker.
readonly REMOTE_REPO_DIR="inverter"
readonly REMOTE_LOG_DIR="inverter_logs"
GCLOUD="${GCLOUD:-gcloud}"
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: $PROG SUBCOMMAND NAME --zone ZONE [options] [--dry-run]

Cloud TPU VMs for training inverters (python -m inverter.main).

Subcommands:
  create NAME --zone Z --accelerator-type TYPE --version RUNTIME
         [--spot | --preemptible]
      Create a TPU VM (slice). TYPE e.g. v4-8, v5litepod-8; RUNTIME e.g.
      tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e).
  install NAME --zone Z [--repo URL] [--ref REF]
      On every worker: clone (or update) the project into ~/$REMOTE_REPO_DIR,
      check out REF (default: the remote's default branch), then
      pip install -U 'jax[tpu]' and pip install -e . of the project.
      URL defaults to this checkout's 'origin' remote.
  run NAME --zone Z --config FILE[:ARG] --workdir DIR [--data-dir DIR]
      [-- EXTRA_FLAGS...]
      On every worker at once, in the background (nohup):
        python3 -m inverter.main --config=FILE --workdir=DIR --distributed=on
            [--config.data.data_dir=DIR] EXTRA_FLAGS
      logging to ~/$REMOTE_LOG_DIR/<UTC timestamp>.log on each worker. Use a
      gs:// workdir (every worker of a multi-host slice must see it).
      --distributed=on makes the workers join one jax.distributed run. Running
      the same command again resumes from the workdir's latest checkpoint.
      EXTRA_FLAGS example: --config.batch_size=256 (the global batch; it
      must be divisible by the number of devices).
  tail NAME --zone Z [--worker N]
      Follow the newest log on worker N (default 0).
  delete NAME --zone Z
      Delete the TPU VM (gcloud asks for confirmation).

Options for every subcommand:
  --zone Z        the TPU's zone (required), e.g. us-central2-b
  --project P     the Google Cloud project (default: gcloud's configured one)
  --dry-run       print the commands instead of running them
  -h, --help      this message

Environment: GCLOUD names the gcloud binary (default: gcloud).
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

DRY_RUN=0

require_gcloud() {
  ((DRY_RUN)) && return 0
  command -v "$GCLOUD" >/dev/null 2>&1 || die "'$GCLOUD' not found. Install" \
    "the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run" \
    "'gcloud auth login', or set GCLOUD to its path; --dry-run prints the" \
    "commands without it."
}

# Options parsed by parse_args (shared by all subcommands).
NAME="" ZONE="" PROJECT="" ACCEL="" VERSION="" REPO="" REF="" CONFIG=""
WORKDIR="" DATA_DIR="" WORKER="0" SPOT=0 PREEMPTIBLE=0
EXTRA=()

# parse_args ALLOWED_OPTIONS ARGS...: fills the globals above. ALLOWED_OPTIONS
# is a space-separated list of the options this subcommand accepts beyond
# --zone, --project, --dry-run and --help ('--' allows extra flags after it).
parse_args() {
  local allowed=" $1 --zone --project --dry-run --help -h " opt value inline
  shift
  while (($#)); do
    opt="$1"
    value=""
    inline=0
    case "$opt" in
      --)
        [[ "$allowed" == *" -- "* ]] || usage_error "unexpected '--'"
        shift
        EXTRA=("$@")
        break ;;
      --*=*) value="${opt#*=}"; opt="${opt%%=*}"; inline=1 ;;
      -*) ;;
      *)
        [[ -z "$NAME" ]] || usage_error "unexpected argument '$opt'"
        NAME="$opt"
        shift
        continue ;;
    esac
    [[ "$allowed" == *" $opt "* ]] || usage_error "unknown option '$opt'"
    case "$opt" in
      -h|--help|--dry-run|--spot|--preemptible)
        ((!inline)) || usage_error "option '$opt' takes no value"
        case "$opt" in
          -h|--help) usage; exit 0 ;;
          --dry-run) DRY_RUN=1 ;;
          --spot) SPOT=1 ;;
          --preemptible) PREEMPTIBLE=1 ;;
        esac ;;
      *)
        if ((!inline)); then
          [[ $# -ge 2 && "$2" != -* ]] ||
            usage_error "option '$opt' needs a value"
          value="$2"
          shift
        fi
        case "$opt" in
          --zone) ZONE="$value" ;;
          --project) PROJECT="$value" ;;
          --accelerator-type) ACCEL="$value" ;;
          --version) VERSION="$value" ;;
          --repo) REPO="$value" ;;
          --ref) REF="$value" ;;
          --config) CONFIG="$value" ;;
          --workdir) WORKDIR="$value" ;;
          --data-dir) DATA_DIR="$value" ;;
          --worker) WORKER="$value" ;;
        esac ;;
    esac
    shift
  done
  [[ -n "$NAME" ]] || usage_error "missing the TPU NAME argument"
  require --zone "$ZONE"
}

# Joins shell statements with '; ' into one line (the remote --command).
statements() {
  local IFS=$'\x1f'
  local joined="$*"
  printf '%s' "${joined//$'\x1f'/; }"
}

# The gcloud flags every subcommand passes: zone and (optional) project.
location_flags() {
  LOCATION=("--zone=$ZONE")
  [[ -z "$PROJECT" ]] || LOCATION+=("--project=$PROJECT")
}

# ssh_on WORKER SCRIPT: runs SCRIPT in the login shell of worker WORKER
# (a number, or 'all' for every worker of the slice at once).
ssh_on() {
  local worker="$1" script="$2"
  location_flags
  run_cmd "$GCLOUD" compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" \
    "--worker=$worker" "--command=$script"
}

cmd_create() {
  parse_args "--accelerator-type --version --spot --preemptible" "$@"
  require --accelerator-type "$ACCEL"
  require --version "$VERSION"
  ((SPOT + PREEMPTIBLE < 2)) ||
    usage_error "choose one of --spot and --preemptible"
  require_gcloud
  location_flags
  local cmd=("$GCLOUD" compute tpus tpu-vm create "$NAME" "${LOCATION[@]}"
    "--accelerator-type=$ACCEL" "--version=$VERSION")
  if ((SPOT)); then cmd+=(--spot); fi
  if ((PREEMPTIBLE)); then cmd+=(--preemptible); fi
  run_cmd "${cmd[@]}"
}

cmd_install() {
  parse_args "--repo --ref" "$@"
  if [[ -z "$REPO" ]]; then
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    REPO="$(git -C "$here" remote get-url origin 2>/dev/null)" ||
      usage_error "missing required option --repo (this checkout has no" \
        "'origin' remote to default to)"
  fi
  require_gcloud
  local dir="\"\$HOME/$REMOTE_REPO_DIR\"" repo
  repo="$(shquote "$REPO")"
  ssh_on all "$(statements \
    "set -e" \
    "if [ ! -d $dir/.git ]; then git clone $repo $dir; fi" \
    "cd $dir" \
    "git remote set-url origin $repo" \
    "git fetch origin $(shquote "${REF:-HEAD}")" \
    "git checkout --detach FETCH_HEAD" \
    "python3 -m pip install -U \"jax[tpu]\"" \
    "python3 -m pip install -e ." \
    "echo \"\$(hostname): installed \$(git rev-parse --short HEAD)\"")"
}

cmd_run() {
  parse_args "--config --workdir --data-dir --" "$@"
  require --config "$CONFIG"
  require --workdir "$WORKDIR"
  require_gcloud
  if [[ "$WORKDIR" != gs://* ]]; then
    echo "$PROG: note: workdir '$WORKDIR' is on the workers' local disks:" \
      "a multi-host slice needs shared storage (gs://), and local files are" \
      "lost when the TPU VM is deleted." >&2
  fi
  # --distributed=on: every worker joins one jax.distributed run; JAX finds
  # the coordinator and the worker ids of the slice itself.
  local train=(python3 -m inverter.main "--config=$CONFIG"
    "--workdir=$WORKDIR" --distributed=on)
  [[ -z "$DATA_DIR" ]] || train+=("--config.data.data_dir=$DATA_DIR")
  train+=("${EXTRA[@]}")
  local stamp
  stamp="$(date -u +%Y%m%d-%H%M%S)"
  # The pgrep pattern is anchored so that it matches a trainer's command line
  # and not the shell running this script, whose text contains it too.
  ssh_on all "$(statements \
    "set -e" \
    "if pid=\$(pgrep -u \"\$(id -u)\" -f \"^python3 -m inverter[.]main\"); then echo \"\$(hostname): inverter.main is already running (pid \$pid); wait for it or stop it first\" >&2; exit 1; fi" \
    "mkdir -p \"\$HOME/$REMOTE_LOG_DIR\"" \
    "log=\"\$HOME/$REMOTE_LOG_DIR/$stamp.log\"" \
    "cd \"\$HOME/$REMOTE_REPO_DIR\"" \
    "nohup $(shjoin "${train[@]}") > \"\$log\" 2>&1 < /dev/null & echo \"\$(hostname): started pid \$!, log \$log\"")"
  if ((!DRY_RUN)); then
    echo "Follow worker 0: $PROG tail $NAME --zone $ZONE"
    echo "Rerun this command to resume from the latest checkpoint in $WORKDIR."
  fi
}

cmd_tail() {
  parse_args "--worker" "$@"
  [[ "$WORKER" =~ ^[0-9]+$ ]] ||
    usage_error "--worker must be a worker number, got '$WORKER'"
  require_gcloud
  ssh_on "$WORKER" "$(statements \
    "log=\$(ls -1 \"\$HOME/$REMOTE_LOG_DIR\"/*.log 2>/dev/null | tail -n 1)" \
    "if [ -z \"\$log\" ]; then echo \"\$(hostname): no logs in ~/$REMOTE_LOG_DIR\" >&2; exit 1; fi" \
    "echo \"== \$(hostname): \$log\"" \
    "exec tail -n 100 -F \"\$log\"")"
}

cmd_delete() {
  parse_args "" "$@"
  require_gcloud
  location_flags
  run_cmd "$GCLOUD" compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}"
}

main() {
  (($#)) ||
    usage_error "missing SUBCOMMAND (create, install, run, tail or delete)"
  local sub="$1"
  shift
  case "$sub" in
    -h|--help|help) usage ;;
    create) cmd_create "$@" ;;
    install) cmd_install "$@" ;;
    run) cmd_run "$@" ;;
    tail) cmd_tail "$@" ;;
    delete) cmd_delete "$@" ;;
    *) usage_error "unknown subcommand '$sub' (expected create, install," \
         "run, tail or delete)" ;;
  esac
}

main "$@"
