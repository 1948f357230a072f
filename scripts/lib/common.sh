# Shared by the scripts in scripts/ (sourced, not run).
UV_VERSION=0.13.9
UV="$PWD/.tools/uv/bin/uv"
# No managed Python downloads (unreachable here): uv uses the machine's python3.
export UV_PYTHON_DOWNLOADS=never
export UV_PYTHON=python3
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$PWD/ansible.cfg"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Runs a named stage and reports its time: stage NAME COMMAND...
stage() {
  local name=$1 start=$SECONDS
  shift
  log "$name"
  "$@"
  log "$name: done in $((SECONDS - start)) s"
}
