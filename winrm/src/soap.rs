//! WS-Management / WinRS SOAP: namespaces, actions, building requests and reading replies.
//! Shared by the client and the lab's server. The faults a host reports are read here too
//! ([`WsmanFault`]); `error` sorts them into the kinds a caller acts on, so `soap` needs
//! nothing from `error`.

use xml::Element;

pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const NS_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
pub const NS_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
pub const NS_WSMV: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
pub const NS_TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
pub const NS_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
pub const NS_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
pub const NS_CONFIG: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";

pub const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
pub const RESOURCE_CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
pub const RESOURCE_CONFIG: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";

pub const ACTION_CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
pub const ACTION_DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
pub const ACTION_GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
pub const ACTION_COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
pub const ACTION_SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
pub const ACTION_RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
pub const ACTION_SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";

pub const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
pub const SIGNAL_CTRL_C: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c";
pub const STATE_DONE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";
pub const STATE_RUNNING: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running";

/// WSManFault codes mailboxd acts on.
pub const CODE_OPERATION_TIMEOUT: u32 = 2_150_858_793;
pub const CODE_INVALID_SELECTORS: u32 = 2_150_858_843;
pub const CODE_QUOTA_LIMIT: u32 = 2_150_859_173;
pub const CODE_INVALID_HEADER: u32 = 2_150_858_767;
pub const CODE_INVALID_PARAMETER: u32 = 87;
/// HRESULT 0x80338111: the request exceeded MaxEnvelopeSizekb.
pub const CODE_ENVELOPE_TOO_LARGE: u32 = 2_150_859_025;
/// Win32 ERROR_ACCESS_DENIED in a WSManFault.
pub const CODE_ACCESS_DENIED: u32 = 5;

/// Escapes text for an XML element or attribute value.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// An upper-case GUID, as Windows writes them.
pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// `PT20S`, `PT0.500S`
pub fn xs_duration(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("PT{}S", d.as_secs())
    } else {
        format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
    }
}

/// Parses the `PTnS` / `PTn.nnnS` / `PnDTnHnMnS` forms WinRM uses. Negative or malformed → None.
pub fn parse_xs_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let mult = units.iter().find(|(u, _)| *u == c)?.1;
                let v: f64 = num.parse().ok()?;
                secs += v * mult;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    take(date, &[('D', 86400.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    if date.is_empty() && time.is_empty() {
        return None;
    }
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

/// The header fields of one request.
pub struct RequestHeader<'a> {
    pub to: &'a str,
    pub action: &'a str,
    pub resource_uri: &'a str,
    pub message_id: &'a str,
    pub session_id: &'a str,
    pub max_envelope_size: u32,
    pub operation_timeout: std::time::Duration,
    pub shell_id: Option<&'a str>,
    pub options: &'a [(&'a str, &'a str)],
}

/// A complete request envelope around `body` (already-escaped XML, may be empty).
pub fn request(h: &RequestHeader<'_>, body: &str) -> String {
    let mut x = String::with_capacity(1500 + body.len());
    x.push_str(concat!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
        r#"xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
        r#"xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" "#,
        r#"xmlns:wsmv="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" "#,
        r#"xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header>"#
    ));
    x.push_str(&format!(
        r#"<wsa:Action s:mustUnderstand="true">{}</wsa:Action>"#,
        esc(h.action)
    ));
    x.push_str(r#"<wsmv:DataLocale s:mustUnderstand="false" xml:lang="en-US"/>"#);
    x.push_str(r#"<wsman:Locale s:mustUnderstand="false" xml:lang="en-US"/>"#);
    x.push_str(&format!(
        r#"<wsman:MaxEnvelopeSize s:mustUnderstand="true">{}</wsman:MaxEnvelopeSize>"#,
        h.max_envelope_size
    ));
    x.push_str(&format!(
        "<wsa:MessageID>{}</wsa:MessageID>",
        esc(h.message_id)
    ));
    x.push_str(&format!(
        "<wsman:OperationTimeout>{}</wsman:OperationTimeout>",
        xs_duration(h.operation_timeout)
    ));
    x.push_str(&format!(
        r#"<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">{ANONYMOUS}</wsa:Address></wsa:ReplyTo>"#
    ));
    x.push_str(&format!(
        r#"<wsman:ResourceURI s:mustUnderstand="true">{}</wsman:ResourceURI>"#,
        esc(h.resource_uri)
    ));
    x.push_str(&format!(
        r#"<wsmv:SessionId s:mustUnderstand="false">{}</wsmv:SessionId>"#,
        esc(h.session_id)
    ));
    x.push_str(&format!("<wsa:To>{}</wsa:To>", esc(h.to)));
    if !h.options.is_empty() {
        x.push_str(r#"<wsman:OptionSet s:mustUnderstand="true">"#);
        for (name, value) in h.options {
            x.push_str(&format!(
                r#"<wsman:Option Name="{}">{}</wsman:Option>"#,
                esc(name),
                esc(value)
            ));
        }
        x.push_str("</wsman:OptionSet>");
    }
    if let Some(shell) = h.shell_id {
        x.push_str(&format!(
            r#"<wsman:SelectorSet><wsman:Selector Name="ShellId">{}</wsman:Selector></wsman:SelectorSet>"#,
            esc(shell)
        ));
    }
    x.push_str("</s:Header>");
    if body.is_empty() {
        x.push_str("<s:Body/>");
    } else {
        x.push_str("<s:Body>");
        x.push_str(body);
        x.push_str("</s:Body>");
    }
    x.push_str("</s:Envelope>");
    x
}

/// A WS-Management fault as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsmanFault {
    /// The WSManFault `Code` (e.g. 2150858793 = operation timeout), when present.
    pub code: Option<u32>,
    /// The SOAP subcode's local name, e.g. `TimedOut`, `QuotaLimit`, `InvalidSelectors`.
    pub subcode: String,
    pub reason: String,
    pub message: Option<String>,
    pub machine: Option<String>,
}

impl std::fmt::Display for WsmanFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.subcode)?;
        if let Some(c) = self.code {
            write!(f, " (code {c})")?;
        }
        let text = self.message.as_deref().unwrap_or(&self.reason);
        write!(f, ": {}", text.trim())
    }
}

/// A parsed envelope: its header and body elements.
pub struct Envelope {
    pub header: Element,
    pub body: Element,
}

impl Envelope {
    pub fn parse(text: &str) -> Result<Envelope, String> {
        let root = xml::parse(text).map_err(|e| e.to_string())?;
        if !root.is(NS_SOAP, "Envelope") {
            return Err(format!(
                "root element is {{{}}}{}, not a SOAP 1.2 Envelope",
                root.ns, root.name
            ));
        }
        let header = root.child(NS_SOAP, "Header").cloned().unwrap_or_default();
        let body = root
            .child(NS_SOAP, "Body")
            .cloned()
            .ok_or("the envelope has no Body")?;
        Ok(Envelope { header, body })
    }

    pub fn header_text(&self, ns: &str, name: &str) -> Option<&str> {
        self.header.child(ns, name).map(Element::trimmed_text)
    }

    pub fn action(&self) -> Option<&str> {
        self.header_text(NS_ADDRESSING, "Action")
    }

    pub fn relates_to(&self) -> Option<&str> {
        self.header_text(NS_ADDRESSING, "RelatesTo")
    }

    /// The value of the `ShellId` selector, if any.
    pub fn selector(&self, name: &str) -> Option<&str> {
        self.header
            .child(NS_WSMAN, "SelectorSet")?
            .children_named(NS_WSMAN, "Selector")
            .find(|s| s.attr("Name") == Some(name))
            .map(Element::trimmed_text)
    }

    pub fn option(&self, name: &str) -> Option<&str> {
        self.header
            .child(NS_WSMAN, "OptionSet")?
            .children_named(NS_WSMAN, "Option")
            .find(|s| s.attr("Name") == Some(name))
            .map(Element::trimmed_text)
    }

    /// The SOAP fault in the body, if this is one.
    pub fn fault(&self) -> Option<WsmanFault> {
        let f = self.body.child(NS_SOAP, "Fault")?;
        let subcode = f
            .path(&[(NS_SOAP, "Code"), (NS_SOAP, "Subcode"), (NS_SOAP, "Value")])
            .or_else(|| f.path(&[(NS_SOAP, "Code"), (NS_SOAP, "Value")]))
            .map(|v| {
                let t = v.trimmed_text();
                t.rsplit(':').next().unwrap_or(t).to_owned()
            })
            .unwrap_or_default();
        let reason = f
            .path(&[(NS_SOAP, "Reason"), (NS_SOAP, "Text")])
            .map(|t| t.trimmed_text().to_owned())
            .unwrap_or_default();
        let detail = f.child(NS_SOAP, "Detail");
        let wsman = detail.and_then(|d| d.find(NS_FAULT, "WSManFault"));
        let code = wsman
            .and_then(|w| w.attr("Code"))
            .and_then(|c| c.trim().parse().ok())
            .or_else(|| {
                // CIM-style detail (e.g. quota): <p:error_Code>2150859173</p:error_Code>
                detail
                    .and_then(|d| find_local(d, "error_Code"))
                    .and_then(|e| e.trimmed_text().parse().ok())
            });
        let message = wsman
            .and_then(|w| w.find(NS_FAULT, "Message").or(Some(w)))
            .map(|m| collect_text(m).trim().to_owned())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                detail
                    .and_then(|d| find_local(d, "Message"))
                    .map(|m| m.trimmed_text().to_owned())
            });
        let machine = wsman.and_then(|w| w.attr("Machine")).map(str::to_owned);
        Some(WsmanFault {
            code,
            subcode,
            reason,
            message,
            machine,
        })
    }
}

fn find_local<'a>(el: &'a Element, name: &str) -> Option<&'a Element> {
    for c in &el.children {
        if c.name == name {
            return Some(c);
        }
        if let Some(f) = find_local(c, name) {
            return Some(f);
        }
    }
    None
}

fn collect_text(el: &Element) -> String {
    let mut t = el.text.clone();
    for c in &el.children {
        t.push_str(&collect_text(c));
    }
    t
}
