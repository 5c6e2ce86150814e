"""pypsrp (a second independent WinRM client) against the lab.

Usage: python3 pypsrp_lab.py HOST PORT USER   (password in $LAB_PASSWORD)
Basic, then NTLM with message encryption.
"""
import os
import sys

from pypsrp.client import Client
from pypsrp.shell import Process, SignalCode, WinRS
from pypsrp.wsman import WSMan

from peercheck import check  # tests/peers/peercheck.py (the script's folder is on sys.path)


def main():
    host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    password = os.environ["LAB_PASSWORD"]
    opts = dict(port=port, username=user, password=password, ssl=False, auth="basic", encryption="never")

    c = Client(host, **opts)
    check("execute_cmd hostname", c.execute_cmd("hostname"), ("LAB-IQSVC01\r\n", "", 0))
    check("execute_cmd echo", c.execute_cmd("echo hi there"), ("hi there\r\n", "", 0))
    out, err, rc = c.execute_cmd("nosuch")
    check("execute_cmd unknown", (out, rc), ("", 1))
    check("unknown stderr", err.startswith("'nosuch' is not recognized"), True)

    wsman = WSMan(host, **opts)
    with WinRS(wsman, codepage=65001, no_profile=True) as shell:
        p = Process(shell, "cmd.exe", ["/c", "echo", "raw"])
        p.invoke()
        p.signal(SignalCode.CTRL_C)
        check("WinRS process", (p.rc, p.stdout, p.stderr), (0, b"raw\r\n", b""))

    # pypsrp reads winrm/config to size its envelopes.
    wsman.update_max_payload_size()
    check("config MaxEnvelopeSizekb", wsman.max_envelope_size, 512000)

    # NTLM (pyspnego) with every message sealed, on plain HTTP.
    ntlm = dict(opts, auth="ntlm", encryption="always")
    c = Client(host, **ntlm)
    check("ntlm sealed hostname", c.execute_cmd("hostname"), ("LAB-IQSVC01\r\n", "", 0))
    check("ntlm sealed whoami", c.execute_cmd("whoami")[0], f"lab-iqsvc01\\{user}\r\n")


if __name__ == "__main__":
    main()
