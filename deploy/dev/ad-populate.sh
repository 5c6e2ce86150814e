#!/usr/bin/env bash
# Fills the test AD (deploy/dev/samba-ad.sh) with N users in OU=reconcile-N for the
# reconciliation benchmark: 90 % with a visible remote mailbox, 5 % without a mailbox,
# 5 % disabled and still visible. Prints the OU's DN.
#   ad-populate.sh N
set -euo pipefail
N=${1:?usage: ad-populate.sh N}
DIR=${MAILBOXD_TEST_AD_DIR:-/var/tmp/mailboxd-ad}
# shellcheck disable=SC1091
. "$DIR/ad.env"
OU="OU=reconcile-$N,$MAILBOXD_TEST_AD_BASE_DN"
export LDAPTLS_CACERT=$MAILBOXD_TEST_AD_CA_FILE
if ldapsearch -LLL -x -H "ldaps://$MAILBOXD_TEST_AD_HOST" -D "$MAILBOXD_TEST_AD_BIND_DN" \
    -y "$MAILBOXD_TEST_AD_PASSWORD_FILE" -b "$OU" -s base dn >/dev/null 2>&1; then
  echo "$OU"; exit 0
fi
{
  printf 'dn: %s\nobjectClass: top\nobjectClass: organizationalUnit\n\n' "$OU"
  awk -v n="$N" -v ou="$OU" 'BEGIN {
    for (i = 0; i < n; i++) {
      sam = sprintf("b%d-%06d", n, i)
      printf "dn: CN=%s,%s\nobjectClass: user\nsAMAccountName: %s\n", sam, ou, sam
      k = i % 20
      if (k == 0) { printf "userAccountControl: 544\n\n"; continue }
      printf "userAccountControl: %d\n", (k == 1 ? 546 : 544)
      printf "msExchRecipientTypeDetails: 2147483648\nmsExchRemoteRecipientType: 1\n"
      printf "targetAddress: SMTP:%s@tenant.mail.onmicrosoft.com\n\n", sam
    }
  }'
} >"$DIR/populate-$N.ldif"
start=$(date +%s)
ldapadd -c -x -H "ldaps://$MAILBOXD_TEST_AD_HOST" -D "$MAILBOXD_TEST_AD_BIND_DN" \
  -y "$MAILBOXD_TEST_AD_PASSWORD_FILE" -f "$DIR/populate-$N.ldif" >/dev/null
echo "added $N users in $(( $(date +%s) - start )) s" >&2
echo "$OU"
