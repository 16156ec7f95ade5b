#!/usr/bin/env bash
# Creates and deploys this server as a Clever Cloud Rust application with
# the `clever` CLI (clever-tools, logged in with `clever login`). Run it from
# the repository's root, on the commit to deploy.
#
# Usage: clevercloud/deploy.sh --app NAME --domain DOMAIN [options]
#   --app NAME              application name (also its clever alias)
#   --domain DOMAIN         public domain, e.g. NAME.cleverapps.io; APP_URL
#                           becomes https://DOMAIN/
#   --consumer-key KEY      the operator's OAuth consumer (with its secret:
#   --consumer-secret SECRET  --consumer-secret, or OAUTH_CONSUMER_SECRET in
#                           the environment, which keeps it out of the shell
#                           history); without them visitors bring their own
#   --redis                 create a Redis add-on, link it (sessions shared
#                           between instances) and set a generated SESSION_KEY
#   --metrics               set a generated METRICS_TOKEN (printed masked;
#                           read it back with `clever env`)
#   --region ZONE           Clever Cloud region (default: the CLI's, par)
#   --org ORG               organisation id or name (default: your account)
#   --dry-run               print the commands instead of running them
#   -h, --help              this help
#
# Secrets are never printed: commands show them as ****.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "deploy.sh: $*" >&2
  echo "Run with --help for the usage." >&2
  exit 2
}

app=""
domain=""
consumer_key=""
consumer_secret="${OAUTH_CONSUMER_SECRET:-}"
redis=false
metrics=false
region=""
org=""
dry_run=false

while [ $# -gt 0 ]; do
  case "$1" in
    --app) app="${2:-}"; shift 2 || die "--app needs a value" ;;
    --domain) domain="${2:-}"; shift 2 || die "--domain needs a value" ;;
    --consumer-key) consumer_key="${2:-}"; shift 2 || die "--consumer-key needs a value" ;;
    --consumer-secret) consumer_secret="${2:-}"; shift 2 || die "--consumer-secret needs a value" ;;
    --redis) redis=true; shift ;;
    --metrics) metrics=true; shift ;;
    --region) region="${2:-}"; shift 2 || die "--region needs a value" ;;
    --org) org="${2:-}"; shift 2 || die "--org needs a value" ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

[ -n "$app" ] || die "--app is required"
[ -n "$domain" ] || die "--domain is required"
case "$domain" in
  */*|*:*|*" "*) die "--domain takes a bare domain like myapp.cleverapps.io, not a URL" ;;
esac
if [ -n "$consumer_key" ] && [ -z "$consumer_secret" ]; then
  die "--consumer-key needs its secret (--consumer-secret or OAUTH_CONSUMER_SECRET)"
fi
if [ -z "$consumer_key" ] && [ -n "$consumer_secret" ]; then
  die "a consumer secret was given without --consumer-key"
fi
if ! $dry_run && ! command -v clever >/dev/null 2>&1; then
  die "the clever CLI is missing: npm install -g clever-tools, then clever login"
fi

# A 256-bit random value in hex, from the kernel (no openssl needed).
random_hex() {
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# Runs (or prints) a command. The argument after a literal --secret is a
# secret: passed as it is, printed as ****.
run() {
  local shown=() real=() secret=false arg
  for arg in "$@"; do
    if [ "$arg" = "--secret" ]; then
      secret=true
      continue
    fi
    real+=("$arg")
    if $secret; then shown+=("****"); else shown+=("$arg"); fi
    secret=false
  done
  echo "+ ${shown[*]}"
  if ! $dry_run; then
    "${real[@]}"
  fi
}

placement=()
[ -n "$region" ] && placement+=(--region "$region")
[ -n "$org" ] && placement+=(--org "$org")

run clever create --type rust "$app" --alias "$app" "${placement[@]}"
run clever domain add "$domain" --alias "$app"
run clever env set APP_URL "https://$domain/" --alias "$app"
run clever env set CC_HEALTH_CHECK_PATH /health --alias "$app"
run clever env set CC_CACHE_DEPENDENCIES true --alias "$app"
run clever env set LOG_FORMAT json --alias "$app"
if [ -n "$consumer_key" ]; then
  run clever env set OAUTH_CONSUMER_KEY "$consumer_key" --alias "$app"
  run clever env set OAUTH_CONSUMER_SECRET --secret "$consumer_secret" --alias "$app"
fi
if $redis; then
  run clever addon create redis-addon "$app-redis" --plan s_mono --link "$app" "${placement[@]}"
  run clever env set SESSION_KEY --secret "$(random_hex)" --alias "$app"
fi
if $metrics; then
  run clever env set METRICS_TOKEN --secret "$(random_hex)" --alias "$app"
fi
run clever deploy --alias "$app"
echo "Done: https://$domain/ (the OAuth consumer's base URL must be https://$domain/)"
