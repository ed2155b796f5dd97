#!/bin/sh
# Entry point of the compose broker. Merges the skyhook application user (RABBITMQ_USER,
# RABBITMQ_PASSWORD) into the topology from definitions.json, writes the result where
# rabbitmq.conf's load_definitions points, then runs the image's own entry point.
set -eu

topology=${SKYHOOK_TOPOLOGY_FILE:-/etc/rabbitmq/skyhook/definitions.json}
merged=${SKYHOOK_BOOT_DEFINITIONS_FILE:-/etc/rabbitmq/skyhook-definitions.json}
user=${RABBITMQ_USER:-skyhook}
password=${RABBITMQ_PASSWORD:-}

fail() {
  echo "start-rabbitmq.sh: $*" >&2
  exit 64
}

[ -n "$password" ] || fail "set RABBITMQ_PASSWORD"
# Both also appear in SKYHOOK_AMQP_URL and in JSON below: keep them URL- and JSON-safe.
case "$user$password" in
  *[!A-Za-z0-9._~-]*) fail "RABBITMQ_USER and RABBITMQ_PASSWORD may only use A-Z a-z 0-9 . _ ~ -" ;;
esac
[ "$(head -n 1 "$topology")" = "{" ] || fail "$topology must start with a line holding only {"

umask 077
{
  printf '{\n'
  printf '  "users": [{"name": "%s", "password": "%s", "tags": ["administrator"]}],\n' \
    "$user" "$password"
  printf '  "permissions": [{"user": "%s", "vhost": "/", ' "$user"
  printf '"configure": ".*", "write": ".*", "read": ".*"}],\n'
  tail -n +2 "$topology"
} > "$merged"
if [ "$(id -u)" = 0 ] && id rabbitmq > /dev/null 2>&1; then
  chown rabbitmq "$merged"
fi

exec docker-entrypoint.sh "$@"
