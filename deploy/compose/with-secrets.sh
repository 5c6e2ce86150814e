#!/bin/sh
# Entry point of the mailboxd containers in deploy/compose.yaml. mailboxd reads its WinRM,
# LDAP, SMTP and admin secrets from *_file paths itself, but the database and broker
# passwords are part of their URLs: this adds them from the compose secrets, so that no
# password is in compose.yaml, in the TOML or on a command line, then runs mailboxd.
# (MAILBOXD_SECRETS_DIR and MAILBOXD_BIN exist for tests/it/deploy_artifacts.rs.)
set -eu
dir="${MAILBOXD_SECRETS_DIR:-/run/secrets}"
secret() { tr -d '\r\n' < "$dir/$1"; }
MAILBOXD__DATABASE__URL="postgres://mailboxd:$(secret postgres-password)@${MAILBOXD_DB_HOST:-postgres}:5432/mailboxd"
MAILBOXD__AMQP__URL="amqp://mailboxd:$(secret rabbitmq-password)@${MAILBOXD_MQ_HOST:-rabbitmq}:5672/%2f"
export MAILBOXD__DATABASE__URL MAILBOXD__AMQP__URL
exec "${MAILBOXD_BIN:-/usr/local/bin/mailboxd}" "$@"
