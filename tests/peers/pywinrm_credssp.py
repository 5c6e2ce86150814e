"""pywinrm over CredSSP (requests-credssp) against the lab: SPNEGO and raw NTLM inside CredSSP,
messages encrypted with the CredSSP TLS session over HTTP (and plain when switched off),
plain inside HTTPS; a wrong password and an old CredSSP version refused.

Usage: python3 pywinrm_credssp.py HTTP_ENDPOINT HTTPS_ENDPOINT CA_FILE USER DOMAIN
(password in $LAB_PASSWORD). Prints one line per check; exits non-zero on the first failure.
"""
import os
import sys

import winrm
from requests_credssp.exceptions import NTStatusException

from peercheck import check  # tests/peers/peercheck.py (the script's folder is on sys.path)


def session(url, user, password, mechanism="auto", **kw):
    s = winrm.Session(url, auth=(user, password), transport="credssp", **kw)
    # Session/Protocol do not pass these through to the transport (pywinrm 0.5.0).
    s.protocol.transport.credssp_auth_mechanism = mechanism
    # 5: this client too refuses a host without the CVE-2018-0886 fix.
    s.protocol.transport.credssp_minimum_version = 5
    return s


def main():
    http, https, ca, user, domain = sys.argv[1:6]
    password = os.environ["LAB_PASSWORD"]
    hostname = (0, b"LAB-IQSVC01\r\n")

    # pywinrm's default inner mechanism (SPNEGO: last token and pubKeyAuth in one TSRequest).
    s = session(http, user, password, message_encryption="always")
    r = s.run_cmd("hostname")
    check("credssp/http encrypted hostname", (r.status_code, r.std_out), hostname)
    r = s.run_cmd("whoami")
    check("credssp/http encrypted whoami", r.std_out, f"lab-iqsvc01\\{user}\r\n".encode())
    # Above 16 KiB of reply: multipart/x-multi-encrypted, one TLS record per chunk.
    big = "x" * 9000
    r = s.run_cmd("echo", [big, big])
    check("credssp/http multi-part reply", len(r.std_out), len(big) * 2 + 3)

    # Raw NTLM inside CredSSP (mstsc's shape), the account given with its domain.
    s = session(http, f"{domain}\\{user}", password, mechanism="ntlm", message_encryption="always")
    r = s.run_cmd("hostname")
    check("credssp/http raw NTLM, DOMAIN\\user", (r.status_code, r.std_out), hostname)

    # Message encryption off over HTTP: the lab (AllowUnencrypted) answers in plain text.
    s = session(http, user, password, message_encryption="never")
    r = s.run_cmd("hostname")
    check("credssp/http unencrypted hostname", (r.status_code, r.std_out), hostname)

    # HTTPS: CredSSP's TLS inside the verified outer TLS; the bodies travel plain inside it.
    s = session(https, user, password, server_cert_validation="validate", ca_trust_path=ca)
    r = s.run_cmd("hostname")
    check("credssp/https hostname", (r.status_code, r.std_out), hostname)

    for name, u, pw in [
        ("credssp wrong password", user, "wrong-" + password),
        ("credssp foreign domain", f"EVIL\\{user}", password),
    ]:
        bad = session(http, u, pw, message_encryption="always")
        try:
            bad.run_cmd("hostname")
            check(name, "accepted", "STATUS_LOGON_FAILURE")
        except NTStatusException as e:
            # Windows' own status for a bad user name or password, in the TSRequest errorCode.
            check(name, hex(e.args[0]), "0xc000006d")


if __name__ == "__main__":
    main()
