#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/) from the project's own samples:
docs/events.md, tests/data/, the WinRM fixtures and the PowerShell result lines. The binary
seeds (AMQP properties, LDAP entries) are encoded here. Re-run after a sample changes;
the fuzzer adds what it finds to the same folders when told to (see README, "Fuzzing")."""
import pathlib
import re
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
WINRM_FIXTURES = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def json_examples():
    text = (ROOT / "docs" / "events.md").read_text()
    return [m.group(1) for m in re.finditer(r"```json\n(.*?)```", text, re.S)]


def xml_examples():
    text = (ROOT / "docs" / "events.md").read_text()
    return [m.group(1) for m in re.finditer(r"```xml\n(.*?)```", text, re.S)]


# --- AMQP basic properties (AMQP 0-9-1 §4.2.6.1, RabbitMQ's field types) ---
def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def value(v):
    if isinstance(v, bool):
        return b"t" + bytes([v])
    if isinstance(v, int):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, bytes):
        return b"x" + longstr(v)
    if isinstance(v, str):
        return b"S" + longstr(v.encode())
    if isinstance(v, list):
        return b"A" + longstr(b"".join(value(x) for x in v))
    if isinstance(v, dict):
        return b"F" + table(v)
    raise TypeError(v)


def table(d):
    return longstr(b"".join(shortstr(k) + value(v) for k, v in d.items()))


def properties(content_type=None, headers=None, reply_to=None, message_id=None):
    flags, out = 0, b""
    if content_type is not None:
        flags |= 1 << 15
        out += shortstr(content_type)
    if headers is not None:
        flags |= 1 << 13
        out += table(headers)
    flags |= 1 << 12
    out += bytes([2])  # delivery_mode: persistent
    if reply_to is not None:
        flags |= 1 << 9
        out += shortstr(reply_to)
    if message_id is not None:
        flags |= 1 << 7
        out += shortstr(message_id)
    return struct.pack(">H", flags) + out


# --- AMQP 1.0 message sections (OASIS AMQP 1.0 part 3, 3.2; encodings part 1, 1.6) ---
def section(code, encoded):
    return bytes([0x00, 0x53, code]) + encoded


def amqp10_string(text):
    b = text.encode()
    if len(b) < 256:
        return bytes([0xA1, len(b)]) + b
    return bytes([0xB1]) + struct.pack(">I", len(b)) + b


def amqp10_value(text):
    return section(0x77, amqp10_string(text))


def amqp10_properties(message_id):
    s = amqp10_string(message_id)
    return section(0x73, bytes([0xC0, len(s) + 1, 0x01]) + s)


HEADER_DURABLE = section(0x70, bytes([0xC0, 0x02, 0x01, 0x41]))


# --- LDAP SearchResultEntry (RFC 4511 §4.5.2) in BER ---
def ber(tag, content):
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def octets(b):
    return ber(0x04, b if isinstance(b, bytes) else b.encode())


def entry(dn, attrs):
    parts = b"".join(
        ber(0x30, octets(k) + ber(0x31, b"".join(octets(v) for v in vs)))
        for k, vs in attrs.items()
    )
    return ber(0x64, octets(dn) + ber(0x30, parts))


def main():
    jsons = json_examples()
    for i, j in enumerate(jsons):
        put("json_event", f"events-md-{i}.json", j)
    for f in sorted((ROOT / "tests" / "data" / "poison").glob("*.json")):
        if f.stat().st_size > 16384:  # bigger than the fuzzers' -max_len
            continue
        put("json_event", f"poison-{f.name}", f.read_bytes())
    for f in sorted((ROOT / "tests" / "data" / "iiq").glob("*.xml")):
        put("iiq_event", f.name, f.read_bytes())
        put("xml_tree", f"iiq-{f.name}", f.read_bytes())
    for f in sorted((ROOT / "tests" / "data" / "poison").glob("*.xml")):
        put("iiq_event", f"poison-{f.name}", f.read_bytes())
    for i, x in enumerate(xml_examples()):
        put("iiq_event", f"events-md-{i}.xml", x)

    headers = {"x-source": "identityiq", "x-retry": 1, "x-trace": {"span": "a1"},
               "x-tags": ["joiner", True], "x-raw": b"\x00\x01"}
    for f in sorted((ROOT / "tests" / "data" / "isc").glob("*.json")):
        put("isc_event", f.name, f.read_bytes())
    for f in sorted((ROOT / "tests" / "data" / "midpoint").glob("*.json")):
        put("midpoint_event", f.name, f.read_bytes())
        text = f.read_text()
        put("amqp10_body", f"value-{f.stem}", amqp10_value(text))
        put("amqp10_body", f"full-{f.stem}",
            HEADER_DURABLE + amqp10_properties(f"ID:{f.stem}") + amqp10_value(text))
        data = f.read_bytes()
        put("amqp10_body", f"data-{f.stem}",
            section(0x75, bytes([0xB0]) + struct.pack(">I", len(data)) + data))
    put("amqp_delivery", "json-with-headers", properties(
        "application/json", headers, "amq.gen-Xa2", "m-1") + jsons[0].encode())
    put("amqp_delivery", "json-no-properties", struct.pack(">H", 0) + jsons[1].encode())
    put("amqp_delivery", "refused-with-headers", properties(
        "application/json", headers, None, "m-2") + b'{"schema":"mailboxd.event/v2"}')
    iiq = (ROOT / "tests" / "data" / "iiq" / "create.xml").read_bytes()
    put("amqp_delivery", "iiq-xml", properties("application/xml", {}, None, "iiq-1") + iiq)

    job = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    put("ps_result", "enabled.txt", f'MAILBOXD-RESULT {{"job_id":"{job}","status":"enabled","remote_routing_address":"jdoe@tenant.mail.onmicrosoft.com"}}\r\n')
    put("ps_result", "errors.txt",
        "WARNING: The command completed successfully but no settings have been modified.\r\n"
        f'MAILBOXD-RESULT {{"job_id":"{job}","status":"error","category":"NotSpecified","reason":"ManagementObjectNotFoundException","error_id":"2B5D8D29,Microsoft.Exchange.Management.RecipientTasks.EnableRemoteMailbox","message":"The operation could not be performed because object \'jdoe\' could not be found. S3cret!"}}\r\n'
        f'MAILBOXD-RESULT {{"job_id":"{job}","status":"error","reason":"PSRemotingTransportException","error_id":"WSMan-InvalidShellID","message":"FailureCategory=WSMan-InvalidShellID"}}\r\n'
        "MAILBOXD-RESULT {broken\r\nMAILBOXD-DONE 1\r\n")
    put("ps_result", "session.txt",
        'MAILBOXD-RESULT {"scope":"session","status":"error","reason":"PSRemotingTransportException","message":"Connecting to remote server failed: Exceeded throttling budget. Retry after 30 seconds. 0x8009030e"}\r\n')
    put("ps_result", "fatal.txt", "MAILBOXD-FATAL Cannot invoke method. Method invocation is supported only on core types in this language mode.\r\n")

    put("ldap_entry", "user.ber", entry("CN=John Doe,OU=Staff,DC=corp,DC=example", {
        "sAMAccountName": ["jdoe"], "userPrincipalName": ["jdoe@corp.example"],
        "objectGUID": [bytes(range(16))], "userAccountControl": ["514"],
        "msExchRecipientTypeDetails": ["2147483648"], "msExchHideFromAddressLists": ["TRUE"],
        "targetAddress": ["SMTP:jdoe@tenant.mail.onmicrosoft.com"], "mail": ["jdoe@corp.example"],
        "proxyAddresses": ["SMTP:jdoe@corp.example", "smtp:j.doe@corp.example"],
        "mS-DS-ConsistencyGuid": [b"\xff" * 16], "msExchArchiveGUID": [b"\x01" * 16],
        "msExchArchiveName": ["In-Place Archive - John Doe"]}))
    put("ldap_entry", "rootdse.ber", entry("", {"dnsHostName": ["dc1.corp.example"]}))
    put("ldap_entry", "bad-dn.ber", entry(b"\xff\xfe", {"cn": [b"\xff"]}))

    # Authorization header values as the HTTP intake reads them (RFC 6750, RFC 7617).
    put("http_authorization", "bearer", "Bearer mF_9.B5f-4.1JqM")
    put("http_authorization", "basic", "Basic aXNjOnBhOnNz")
    put("http_authorization", "basic-not-base64", "bAsIc !!!")
    put("http_authorization", "basic-not-utf8", "Basic //79")
    put("http_authorization", "two-tokens", "Bearer a b")
    put("http_authorization", "other-scheme", "Digest username=\"x\"")

    # traceparent header values (W3C Trace Context §3.2), valid and refused.
    put("traceparent", "w3c-example", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    put("traceparent", "later-version", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
    put("traceparent", "version-ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    put("traceparent", "zero-trace", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
    put("traceparent", "upper-case", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
    put("traceparent", "multibyte-at-55", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u00e9")

    # Retry-After values a receiver of an HTTP outcome channel may send (RFC 9110 §10.2.3).
    put("retry_after", "seconds", "120")
    put("retry_after", "http-date", "Wed, 21 Oct 2015 07:28:00 GMT")
    put("retry_after", "huge", "99999999999999999999999")
    put("retry_after", "negative", "-5")
    put("retry_after", "not-utf8", b"\xff\xfe1")
    put("retry_after", "far-date", "Fri, 31 Dec 9999 23:59:59 GMT")

    if WINRM_FIXTURES:
        for f in sorted(WINRM_FIXTURES.glob("*.xml")):
            if "response" in f.name or f.name.startswith("fault"):
                put("winrm_reply", f.name, f.read_bytes())
            put("xml_tree", f"winrm-{f.name}", f.read_bytes())


main()
