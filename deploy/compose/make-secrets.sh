#!/usr/bin/env bash
# Creates the secrets deploy/compose.yaml mounts, once: random passwords and the admin
# token in deploy/compose/secrets/ (ignored by git). Run it before `docker compose up`;
# an existing file is kept, so running it again changes nothing.
#
# The directory is 0700 (only you); the files in it are 0644 because compose mounts file
# secrets as they are on the host, and the containers read them as their own users
# (postgres 999, rabbitmq 999, mailboxd 10001).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir" && chmod 0700 "$dir"
gen() { # make NAME: a random hex value (URL-safe: it goes into URLs unescaped)
  local f="$dir/$1"
  [ -s "$f" ] || { umask 022; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$f"; }
  chmod 0644 "$f"
}
for name in postgres-password rabbitmq-password rabbitmq-admin-password lab-password admin-token; do
  gen "$name"
done
# RabbitMQ users, imported at boot with the topology (definitions in JSON; the values are hex).
users="$dir/rabbitmq-users.json"
if [ ! -s "$users" ]; then
  cat > "$users" <<JSON
{
  "users": [
    {"name": "mailboxd", "password": "$(cat "$dir/rabbitmq-password")", "tags": []},
    {"name": "admin", "password": "$(cat "$dir/rabbitmq-admin-password")", "tags": ["administrator"]}
  ],
  "permissions": [
    {"user": "mailboxd", "vhost": "/", "configure": "^(iam\\\\.events|mailboxd\\\\..*)\$", "write": "^(iam\\\\.events|mailboxd\\\\..*|amq\\\\.default)\$", "read": "^(iam\\\\.events|mailboxd\\\\..*)\$"},
    {"user": "admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
JSON
fi
chmod 0644 "$users"
echo "secrets in $dir (the RabbitMQ UI: user admin, password in rabbitmq-admin-password)"
