#!/usr/bin/env bash
# Helpers shared by the launch scripts (sourced, not run): usage errors,
# shell quoting for --dry-run output, and running or printing commands.
# The sourcing script defines PROG and DRY_RUN.

usage_error() {
  echo "$PROG: $*" >&2
  echo "Run '$PROG --help' for the usage." >&2
  exit 2
}

# Prints one word quoted for a POSIX shell; plain words stay as they are.
shquote() {
  local word="$1"
  local plain='^[A-Za-z0-9_./:=@%+,-]+$'
  if [[ "$word" =~ $plain ]]; then
    printf '%s' "$word"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# Prints a command line: its words quoted and joined by spaces.
shjoin() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(shquote "$word")"
  done
  printf '%s\n' "$out"
}

# Runs a command, or prints it under --dry-run.
run_cmd() {
  if ((DRY_RUN)); then
    shjoin "$@"
  else
    "$@"
  fi
}

require() {
  local flag="$1" value="$2"
  [[ -n "$value" ]] || usage_error "missing required option $flag"
}
