#!/usr/bin/env bash
# Installs this project and starts training runs on one machine with one or
# more GPUs. One process drives all the local GPUs (the trainer's mesh spans
# every visible device), so no jax.distributed set-up is needed.
#
# Every subcommand takes --dry-run, which prints the exact commands, one per
# line and shell-quoted so they can be pasted, instead of running them. Run
# with -h for the usage.

set -euo pipefail

readonly PROG="${0##*/}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: $PROG SUBCOMMAND [options] [--dry-run]

Training inverters (python -m inverter.main) on one multi-GPU host.

Subcommands:
  install [--venv DIR]
      pip install -U 'jax[cuda12]', then pip install -e of this checkout
      ($REPO_ROOT). With --venv, into a virtual environment at DIR, created
      if missing.
  run --config FILE[:ARG] --workdir DIR [--data-dir DIR] [--venv DIR]
      [--log-dir DIR] [-- EXTRA_FLAGS...]
      Start, in the background (nohup), in the current directory (paths are
      relative to it; run from the checkout's root for configs/...):
        python3 -m inverter.main --config=FILE --workdir=DIR
            [--config.data.data_dir=DIR] EXTRA_FLAGS
      logging to LOG_DIR/<UTC timestamp>.log (default LOG_DIR:
      ~/inverter_logs). Running the same command again resumes from the
      workdir's latest checkpoint. EXTRA_FLAGS example:
      --config.batch_size=256 (the global batch; it must be divisible by the
      number of GPUs).

Options for every subcommand:
  --venv DIR      use the Python of the virtual environment at DIR
  --dry-run       print the commands instead of running them
  -h, --help      this message

Environment: CUDA_VISIBLE_DEVICES passes through to the trainer and selects
the GPUs it uses (all of them when unset). PYTHON names the interpreter
when no --venv is given (default: python3).
EOF
}

DRY_RUN=0

# Options parsed by parse_args.
VENV="" CONFIG="" WORKDIR="" DATA_DIR="" LOG_DIR="$HOME/inverter_logs"
EXTRA=()

# parse_args ALLOWED_OPTIONS ARGS...: fills the globals above. ALLOWED_OPTIONS
# is a space-separated list of the options this subcommand accepts beyond
# --venv, --dry-run and --help ('--' allows extra flags after it).
parse_args() {
  local allowed=" $1 --venv --dry-run --help -h " opt value inline
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
      *) usage_error "unexpected argument '$opt'" ;;
    esac
    [[ "$allowed" == *" $opt "* ]] || usage_error "unknown option '$opt'"
    case "$opt" in
      -h|--help|--dry-run)
        ((!inline)) || usage_error "option '$opt' takes no value"
        if [[ "$opt" == --dry-run ]]; then DRY_RUN=1; else usage; exit 0; fi ;;
      *)
        if ((!inline)); then
          [[ $# -ge 2 && "$2" != -* ]] ||
            usage_error "option '$opt' needs a value"
          value="$2"
          shift
        fi
        case "$opt" in
          --venv) VENV="$value" ;;
          --config) CONFIG="$value" ;;
          --workdir) WORKDIR="$value" ;;
          --data-dir) DATA_DIR="$value" ;;
          --log-dir) LOG_DIR="$value" ;;
        esac ;;
    esac
    shift
  done
}

# The interpreter to use: the venv's, $PYTHON, or python3.
python_bin() {
  if [[ -n "$VENV" ]]; then
    printf '%s\n' "$VENV/bin/python"
  else
    printf '%s\n' "${PYTHON:-python3}"
  fi
}

cmd_install() {
  parse_args "" "$@"
  local python
  python="$(python_bin)"
  if [[ -n "$VENV" && ! -x "$python" ]]; then
    run_cmd python3 -m venv "$VENV"
  fi
  run_cmd "$python" -m pip install -U 'jax[cuda12]'
  run_cmd "$python" -m pip install -e "$REPO_ROOT"
}

cmd_run() {
  parse_args "--config --workdir --data-dir --log-dir --" "$@"
  require --config "$CONFIG"
  require --workdir "$WORKDIR"
  local python train log
  python="$(python_bin)"
  train=("$python" -m inverter.main "--config=$CONFIG" "--workdir=$WORKDIR")
  [[ -z "$DATA_DIR" ]] || train+=("--config.data.data_dir=$DATA_DIR")
  train+=("${EXTRA[@]}")
  log="$LOG_DIR/$(date -u +%Y%m%d-%H%M%S).log"
  if ((DRY_RUN)); then
    # CUDA_VISIBLE_DEVICES is inherited; it is printed so that the pasted
    # command selects the same GPUs.
    local env_prefix=""
    if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
      env_prefix="CUDA_VISIBLE_DEVICES=$(shquote "$CUDA_VISIBLE_DEVICES") "
    fi
    shjoin mkdir -p "$LOG_DIR"
    echo "${env_prefix}nohup $(shjoin "${train[@]}") > $(shquote "$log")" \
      "2>&1 < /dev/null &"
    return 0
  fi
  command -v "$python" >/dev/null 2>&1 ||
    { echo "$PROG: error: '$python' not found; run '$PROG install'" \
        "first or pass --venv/PYTHON." >&2; exit 1; }
  mkdir -p "$LOG_DIR"
  nohup "${train[@]}" > "$log" 2>&1 < /dev/null &
  echo "Started pid $! (GPUs: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<all>})."
  echo "Log:    $log"
  echo "Follow: tail -F $(shquote "$log")"
  echo "Rerun this command to resume from the latest checkpoint in $WORKDIR."
}

main() {
  (($#)) || usage_error "missing SUBCOMMAND (install or run)"
  local sub="$1"
  shift
  case "$sub" in
    -h|--help|help) usage ;;
    install) cmd_install "$@" ;;
    run) cmd_run "$@" ;;
    *) usage_error "unknown subcommand '$sub' (expected install or run)" ;;
  esac
}

main "$@"
