"""pywinrm over Kerberos (pykerberos, a ticket from the ccache kinit filled) against the lab.

Usage: KRB5_CONFIG=… KRB5CCNAME=… python3 pywinrm_kerberos.py ENDPOINT SPN_HOST [CA_FILE]
Over https (CA_FILE: the lab's certificate) requests-kerberos binds the logon to the TLS
channel (send_cbt, its default), which a Strict listener requires.
Prints one line per check; exits non-zero on the first failure.
"""
import sys

import winrm

from peercheck import check  # tests/peers/peercheck.py (the script's folder is on sys.path)


def main():
    endpoint, spn_host = sys.argv[1:3]
    tls = {"ca_trust_path": sys.argv[3]} if len(sys.argv) > 3 else {}
    s = winrm.Session(
        endpoint,
        auth=(None, None),
        transport="kerberos",
        # Sealed over http; over https the messages travel plain inside TLS, as Windows does.
        message_encryption="always" if not tls else "auto",
        kerberos_hostname_override=spn_host,
        **tls,
    )
    r = s.run_cmd("hostname")
    check("kerberos hostname", (r.status_code, r.std_out), (0, b"LAB-IQSVC01\r\n"))
    r = s.run_cmd("whoami")
    check("kerberos whoami", r.std_out, b"lab-iqsvc01\\mailboxd-krb\r\n")
    r = s.run_cmd("echo", ["Zoë"])
    check("kerberos utf-8 echo", r.std_out, "Zoë\r\n".encode())


if __name__ == "__main__":
    main()
