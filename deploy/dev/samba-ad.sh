#!/usr/bin/env bash
# A throwaway Active Directory for mailboxd's directory tests: Samba as an AD domain
# controller for CORP.EXAMPLE on 127.0.0.1 (LDAP 389, LDAPS 636, StartTLS), with the
# Exchange recipient attributes added to its schema and a certificate that names
# 127.0.0.1 and dc1.corp.example, issued by a CA written next to it.
#
#   samba-ad.sh install        Debian packages (idempotent)
#   samba-ad.sh start [DIR]    provision DIR (default /var/tmp/mailboxd-ad) unless it holds a
#                              running DC already; leaves DIR/ad.env for the tests
#   samba-ad.sh stop [DIR]
#
# Tests read DIR/ad.env (MAILBOXD_TEST_AD_DIR overrides DIR). Needs root: Samba binds 389/636.
set -euo pipefail

DIR=$(realpath -m "${2:-${MAILBOXD_TEST_AD_DIR:-/var/tmp/mailboxd-ad}}")
IP=127.0.0.1
REALM=CORP.EXAMPLE
BASE='DC=corp,DC=example'
HERE=$(cd "$(dirname "$0")" && pwd)
log() { printf '[samba-ad] %s\n' "$*" >&2; }

install() {
  if command -v samba >/dev/null && command -v samba-tool >/dev/null && command -v ldapsearch >/dev/null \
    && command -v ldbmodify >/dev/null; then
    return 0
  fi
  log "installing Samba AD DC and the LDAP tools"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    samba samba-ad-dc samba-ad-provision winbind krb5-user ldb-tools ldap-utils openssl >/dev/null
}

pid_alive() { [ -s "$DIR/run/samba.pid" ] && kill -0 "$(cat "$DIR/run/samba.pid")" 2>/dev/null; }
ldap_up() { ldapsearch -x -H "ldap://$IP" -b '' -s base dnsHostName >/dev/null 2>&1; }

stop() {
  if pid_alive; then
    local pid
    pid=$(cat "$DIR/run/samba.pid")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped the DC in $DIR"
  fi
}

# Kerberos for the WinRM tests: a service account holding the lab's SPN with AES keys only
# (sspi has no RC4), its keytab, and a client account; idempotent, run on every start.
kerberos() {
  local H="-H $DIR/private/sam.ldb" kt="$DIR/http.keytab"
  if [ -s "$kt" ] && [ -s "$DIR/krb-client.password" ] && grep -q MAILBOXD_TEST_KRB_KEYTAB "$DIR/ad.env"; then
    return 0
  fi
  samba-tool user create svc-winrm-lab "Svc-$(openssl rand -hex 12)" $H >/dev/null 2>&1 || true
  samba-tool user setexpiry svc-winrm-lab --noexpiry $H >/dev/null
  samba-tool spn add HTTP/lab.corp.example svc-winrm-lab $H >/dev/null 2>&1 || true
  printf 'dn: CN=svc-winrm-lab,CN=Users,%s\nchangetype: modify\nreplace: msDS-SupportedEncryptionTypes\nmsDS-SupportedEncryptionTypes: 24\n' "$BASE" \
    | ldbmodify $H >/dev/null
  rm -f "$kt"
  samba-tool domain exportkeytab "$kt" --principal=HTTP/lab.corp.example -s "$DIR/etc/smb.conf" >/dev/null
  chmod 600 "$kt"
  local pw
  pw="Krb-$(openssl rand -hex 12)"
  samba-tool user delete mailboxd-krb $H >/dev/null 2>&1 || true
  samba-tool user create mailboxd-krb "$pw" $H >/dev/null
  samba-tool user setexpiry mailboxd-krb --noexpiry $H >/dev/null
  printf '%s' "$pw" >"$DIR/krb-client.password"
  chmod 600 "$DIR/krb-client.password"
  sed -i '/^MAILBOXD_TEST_KRB_/d' "$DIR/ad.env"
  {
    echo "MAILBOXD_TEST_KRB_KDC=tcp://$IP:88"
    echo "MAILBOXD_TEST_KRB_SPN=HTTP/lab.corp.example"
    echo "MAILBOXD_TEST_KRB_KEYTAB=$kt"
    echo "MAILBOXD_TEST_KRB_USER=mailboxd-krb@$REALM"
    echo "MAILBOXD_TEST_KRB_PASSWORD_FILE=$DIR/krb-client.password"
  } >>"$DIR/ad.env"
  log "Kerberos: SPN HTTP/lab.corp.example (keytab $kt), client mailboxd-krb@$REALM"
}

start() {
  install
  if pid_alive && ldap_up && [ -s "$DIR/ad.env" ]; then
    log "DC already running from $DIR"
    kerberos
    return 0
  fi
  stop || true
  if ldap_up; then
    log "something else answers LDAP on $IP:389; stop it first"; return 1
  fi
  local t0 pw=${MAILBOXD_TEST_AD_PASSWORD:-Passw0rd!Test}
  t0=$(date +%s%N)
  rm -rf "$DIR"
  mkdir -p "$DIR/run" "$DIR/log" "$DIR/tls"
  # --targetdir keeps the whole domain out of /var/lib/samba; DNS is not needed for LDAP.
  if ! samba-tool domain provision --use-rfc2307 --realm="$REALM" --domain=CORP \
      --server-role=dc --dns-backend=NONE --adminpass="$pw" --host-name=dc1 \
      --targetdir="$DIR" --host-ip="$IP" \
      --option="interfaces = $IP" --option="bind interfaces only = yes" \
      --option="pid directory = $DIR/run" --option="ncalrpc dir = $DIR/run/ncalrpc" \
      --option="winbindd socket directory = $DIR/run/winbindd" \
      --option="log file = $DIR/log/samba.log" >"$DIR/provision.log" 2>&1; then
    tail -20 "$DIR/provision.log" >&2; return 1
  fi
  # Samba's own certificate has no subjectAltName, which rustls rejects: issue one that names
  # the DC by IP and host name, from a CA the tests trust.
  (
    cd "$DIR/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=mailboxd test AD CA' \
      -keyout ca.key -out ca.pem -addext 'basicConstraints=critical,CA:TRUE' \
      -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj '/CN=dc1.corp.example' -keyout key.pem -out req.csr 2>/dev/null
    printf 'subjectAltName=DNS:dc1.corp.example,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile ext.cnf -out cert.pem 2>/dev/null
    chmod 600 key.pem ca.key
  )
  # provision drops some --option values; set what the tests rely on in [global]:
  # plain simple binds allowed (the tests also cover LDAPS/StartTLS), our certificate.
  sed -i "s|^\[global\]\$|[global]\n\tldap server require strong auth = no\n\ttls enabled = yes\n\ttls keyfile = $DIR/tls/key.pem\n\ttls certfile = $DIR/tls/cert.pem\n\ttls cafile = $DIR/tls/ca.pem|" \
    "$DIR/etc/smb.conf"
  # Exchange attributes: two runs, because ldbmodify applies a file in one transaction and
  # the class change cannot see attributes added in the same one.
  ldbmodify -H "$DIR/private/sam.ldb" --option="dsdb:schema update allowed=true" \
    "$HERE/ad/exch-attrs.ldif" >"$DIR/log/schema.log" 2>&1
  ldbmodify -H "$DIR/private/sam.ldb" --option="dsdb:schema update allowed=true" \
    "$HERE/ad/exch-class.ldif" >>"$DIR/log/schema.log" 2>&1
  # Test accounts get simple passwords.
  samba-tool domain passwordsettings set --complexity=off --min-pwd-length=1 \
    --history-length=0 --min-pwd-age=0 -s "$DIR/etc/smb.conf" >/dev/null
  samba -D -M single -s "$DIR/etc/smb.conf"
  # `samba -D` returns 0 even when the daemon dies a moment later: watch the pid too.
  for _ in $(seq 1 300); do
    ldap_up && break
    if [ -s "$DIR/run/samba.pid" ] && ! pid_alive; then tail -20 "$DIR/log/samba.log" >&2; return 1; fi
    sleep 0.1
  done
  ldap_up || { log "LDAP did not answer within 30 s"; tail -20 "$DIR/log/samba.log" >&2; return 1; }
  printf '%s' "$pw" >"$DIR/admin.password"
  chmod 600 "$DIR/admin.password"
  cat >"$DIR/ad.env" <<EOF
MAILBOXD_TEST_AD_HOST=$IP
MAILBOXD_TEST_AD_NAME=dc1.corp.example
MAILBOXD_TEST_AD_BASE_DN=$BASE
MAILBOXD_TEST_AD_BIND_DN=Administrator@corp.example
MAILBOXD_TEST_AD_PASSWORD_FILE=$DIR/admin.password
MAILBOXD_TEST_AD_CA_FILE=$DIR/tls/ca.pem
MAILBOXD_TEST_AD_SMB_CONF=$DIR/etc/smb.conf
EOF
  log "DC for $REALM up on $IP in $(( ($(date +%s%N) - t0) / 1000000 )) ms ($DIR)"
  kerberos
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop [DIR]" >&2; exit 2 ;;
esac
