#!/usr/bin/env bash
# Installs (from Debian's packages and PyPI) and starts what mailboxd's tests need on this
# machine: PostgreSQL, RabbitMQ, pywinrm + pypsrp (independent WinRM clients the tests
# run against the lab), aiosmtpd (an SMTP server that captures mail) and the deployment
# checks' validators (docker-compose, kubernetes-validate, jsonschema). Idempotent: what is already running is left alone. Needs root for
# installs; a machine that already has everything needs nothing.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$what did not come up within ${secs}s"; return 1
}

# --- PostgreSQL (trust auth on 127.0.0.1 for the postgres user, as the tests expect) ---
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
if ! command -v pg_isready >/dev/null 2>&1 || ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    # Throwaway test server: trust loopback connections.
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for 60 PostgreSQL pg_up
fi
log "PostgreSQL ready"

# --- RabbitMQ ---
rmq_up() { rabbitmq-diagnostics -q check_port_connectivity; }
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  log "installing RabbitMQ"
  apt_install rabbitmq-server
fi
if ! rmq_up >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_for 120 RabbitMQ rmq_up
fi
# AMQP 1.0 on the same port, for the AMQP 1.0 client test (midPoint's JMS path over AMQP 1.0,
# tests/it/midpoint.rs); enabling is idempotent and needs no restart.
if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_amqp1_0; then
  rabbitmq-plugins enable rabbitmq_amqp1_0 >/dev/null
fi
log "RabbitMQ ready (with AMQP 1.0)"

# --- Python peers for the independent-client tests (WinRM clients run against the lab) ---
# requests-credssp is pywinrm's CredSSP transport (tests/it/winrm_credssp.rs).
# python-qpid-proton (Apache Qpid Proton) is the AMQP 1.0 client of tests/peers/amqp10_send.py.
if ! python3 -c 'import winrm, requests_credssp, pypsrp, aiosmtpd, yaml, schemathesis, proton' >/dev/null 2>&1 || ! command -v schemathesis >/dev/null 2>&1; then
  log "installing pywinrm, requests-credssp, pypsrp, aiosmtpd and python-qpid-proton"
  python3 -m pip install -q pywinrm requests-credssp pypsrp aiosmtpd pyyaml schemathesis python-qpid-proton
fi
log "pywinrm (with requests-credssp), pypsrp, aiosmtpd (the SMTP sink the alert tests start) and Qpid Proton ready"

# --- pykerberos (pywinrm's Kerberos transport, built against MIT krb5) and kinit ---
if ! python3 -c 'import kerberos' >/dev/null 2>&1 || ! command -v kinit >/dev/null 2>&1; then
  log "installing pykerberos and krb5-user"
  apt_install libkrb5-dev gcc krb5-user
  python3 -m pip install -q pykerberos
fi
log "pykerberos and kinit ready"

# --- Deployment checks (tests/it/deploy_artifacts.rs): a compose implementation for
# `compose config` (Debian's docker-compose where the docker compose plugin is missing; no
# Docker engine is needed) and kubernetes-validate (the Kubernetes schemas ship in the wheel,
# nothing is fetched at run time) with jsonschema (also the event schema's validator) ---
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  log "installing docker-compose"
  apt_install docker-compose
fi
if ! python3 -c 'import kubernetes_validate, jsonschema' >/dev/null 2>&1; then
  log "installing kubernetes-validate and jsonschema"
  python3 -m pip install -q kubernetes-validate jsonschema
fi
log "compose validator, kubernetes-validate and jsonschema ready"

# --- Headless Chromium and chromedriver for the dashboard's browser test (Debian's) ---
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi
log "chromium and chromedriver ready"

# --- Samba as an AD domain controller (the directory tests' real LDAP server) ---
bash "$(dirname "$0")/samba-ad.sh" start
