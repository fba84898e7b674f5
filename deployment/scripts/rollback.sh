#!/usr/bin/env bash
# deployment/scripts/rollback.sh <env> <role> [<tag>] — the runbook's manual entry point, kept
# with its exact interface, now a thin wrapper around `rollwatch rollback`: the tag is validated
# and looked up in the registry before anything runs, the runbook's pull and `up -d
# --remove-orphans` run in /opt/<app>/<env>/<role> (locally or over ssh, as configured), .env is
# updated, /health must answer status=ok, and the rollback is recorded.
# Without <tag>: the newest known-good tag, else the env's fallback (develop / main).
# Exit codes: 0 rolled back, 1 the rollback ran and failed, 2 refused (nothing was changed).
set -euo pipefail
if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 <staging|production> <backend|frontend> [<tag>]" >&2
  exit 2
fi
exec "${ROLLWATCH_BIN:-rollwatch}" rollback "$1" "$2" ${3:+"$3"}
