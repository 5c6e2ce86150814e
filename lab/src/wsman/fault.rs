//! The SOAP faults Windows' WS-Management service answers with, shaped like the recorded
//! traffic (tests/fixtures/winrm), and the reply envelope around a successful body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use winrm::soap::{self, esc};

pub(super) fn soap_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/soap+xml;charset=UTF-8"),
    );
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Microsoft-HTTPAPI/2.0"),
    );
    r
}

const REPLY_NS: &str = concat!(
    r#"xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
    r#"xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" "#,
    r#"xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" "#,
    r#"xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" "#,
    r#"xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd""#
);

pub(super) fn reply(action: &str, relates_to: &str, body: &str) -> String {
    format!(
        "<s:Envelope {REPLY_NS}><s:Header><a:Action>{}</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>{}</a:To><a:RelatesTo>{}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>",
        esc(action),
        soap::new_guid(),
        soap::ANONYMOUS,
        esc(relates_to)
    )
}

/// A WS-Management fault, shaped like the recorded Windows faults.
pub(super) struct Fault {
    action: &'static str,
    code: &'static str,
    subcode: &'static str,
    reason: &'static str,
    detail: Option<&'static str>,
    wsman_code: u32,
    message: String,
    /// Windows reports some faults (the shell quota) as a CIM `MSFT_WmiError` instead of a WSManFault.
    cim: bool,
}

const FAULT_ACTION_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";

const FAULT_ACTION_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";

impl Fault {
    pub(super) fn invalid_selectors(message: &str) -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:InvalidSelectors",
            reason: "The WS-Management service cannot process the request because the request contained invalid selectors for the resource. ",
            detail: Some(
                "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
            ),
            wsman_code: soap::CODE_INVALID_SELECTORS,
            message: message.to_owned(),
            cim: false,
        }
    }

    pub(super) fn unknown_shell() -> Fault {
        Fault::invalid_selectors(
            "The request for the Windows Remote Shell with ShellId specified failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation. ",
        )
    }

    pub(super) fn unknown_command() -> Fault {
        Fault::invalid_selectors(
            "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. Either the command has completed execution or the client specified an invalid command identifier. ",
        )
    }

    pub(super) fn invalid_header(message: String) -> Fault {
        Fault {
            action: FAULT_ACTION_ADDRESSING,
            code: "s:Sender",
            subcode: "a:InvalidMessageInformationHeader",
            reason: "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers. ",
            detail: None,
            wsman_code: soap::CODE_INVALID_HEADER,
            message,
            cim: false,
        }
    }

    pub(super) fn timed_out() -> Fault {
        let m = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ";
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Receiver",
            subcode: "w:TimedOut",
            reason: m,
            detail: None,
            wsman_code: soap::CODE_OPERATION_TIMEOUT,
            message: m.to_owned(),
            cim: false,
        }
    }

    pub(super) fn quota(max: usize) -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:QuotaLimit",
            reason: "The WS-Management service cannot process the request. The maximum number of concurrent shells for this user has been exceeded. Close existing shells or raise the quota for this user. ",
            detail: None,
            wsman_code: soap::CODE_QUOTA_LIMIT,
            message: format!(
                "The WS-Management service cannot process the request. This user is allowed a maximum number of {max} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. "
            ),
            cim: true,
        }
    }

    pub(super) fn access_denied() -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:AccessDenied",
            reason: "Access is denied. ",
            detail: None,
            wsman_code: 5,
            message: "Access is denied. ".into(),
            cim: false,
        }
    }

    /// A host whose Group Policy "Allow Remote Shell Access" is Disabled (CIS Level 2,
    /// "Ensure Allow Remote Shell Access is set to Disabled") refuses every shell. The message
    /// is Windows' own (jpboyce/cb_cis_windows_2016#5); the SOAP code, subcode and WSManFault
    /// code of this refusal are not public: the lab uses the generic Receiver/InternalError
    /// shape with code 0 rather than invent a number, and mailboxd recognises the message.
    pub(super) fn shells_not_allowed() -> Fault {
        const TEXT: &str = "The WS-Management service cannot process the request. The service is configured to not accept any remote shell requests. ";
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Receiver",
            subcode: "w:InternalError",
            reason: TEXT,
            detail: None,
            wsman_code: 0,
            message: TEXT.into(),
            cim: false,
        }
    }

    pub(super) fn invalid_parameter() -> Fault {
        Fault {
            action: FAULT_ACTION_WSMAN,
            code: "s:Sender",
            subcode: "w:InvalidParameter",
            reason: "The parameter is incorrect. ",
            detail: Some("http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue"),
            wsman_code: soap::CODE_INVALID_PARAMETER,
            message: "The parameter is incorrect. ".into(),
            cim: false,
        }
    }

    pub(super) fn action_not_supported(action: &str) -> Fault {
        Fault {
            action: FAULT_ACTION_ADDRESSING,
            code: "s:Sender",
            subcode: "a:ActionNotSupported",
            reason: "The action is not supported by the service. ",
            detail: None,
            wsman_code: 2_150_858_771,
            message: format!(
                "The WS-Management service cannot process the request because the action {action} is not supported. "
            ),
            cim: false,
        }
    }

    /// The detail block as the recorded quota fault has it.
    pub(super) fn cim_detail(&self) -> String {
        let m = esc(&self.message);
        let code = self.wsman_code;
        format!(
            concat!(
                r#"<p:MSFT_WmiError b:IsCIM_Error="true" xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError" xsi:type="p:MSFT_WmiError_Type" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
                r#"<p:CIMStatusCode xsi:type="cim:cimUnsignedInt">27</p:CIMStatusCode>"#,
                r#"<p:Message xsi:type="cim:cimString">{m}</p:Message>"#,
                r#"<p:MessageID xsi:type="cim:cimString">HRESULT 0x{code:08x}</p:MessageID>"#,
                r#"<p:error_Category xsi:type="cim:cimUnsignedInt">30</p:error_Category>"#,
                r#"<p:error_Code xsi:type="cim:cimUnsignedInt">{code}</p:error_Code>"#,
                r#"<p:error_Type xsi:type="cim:cimString">HRESULT</p:error_Type>"#,
                r#"<p:error_WindowsErrorMessage xsi:type="cim:cimString">{m}</p:error_WindowsErrorMessage>"#,
                r#"</p:MSFT_WmiError>"#
            ),
            m = m,
            code = code
        )
    }

    pub(super) fn render(&self, relates_to: Option<&str>, machine: &str) -> Response {
        let detail = self
            .detail
            .map(|d| format!("<w:FaultDetail>{d}</w:FaultDetail>"))
            .unwrap_or_default();
        let wsman_fault = if self.cim {
            self.cim_detail()
        } else {
            format!(
                "<f:WSManFault xmlns:f=\"{}\" Code=\"{}\" Machine=\"{}\"><f:Message>{}</f:Message></f:WSManFault>",
                soap::NS_FAULT,
                self.wsman_code,
                esc(machine),
                esc(&self.message)
            )
        };
        let relates = relates_to
            .map(|r| format!("<a:RelatesTo>{}</a:RelatesTo>", esc(r)))
            .unwrap_or_default();
        let body = format!(
            "<s:Envelope {REPLY_NS}><s:Header><a:Action>{}</a:Action><a:MessageID>uuid:{}</a:MessageID><a:To>{}</a:To>{relates}</s:Header><s:Body><s:Fault><s:Code><s:Value>{}</s:Value><s:Subcode><s:Value>{}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang=\"en-US\">{}</s:Text></s:Reason><s:Detail>{detail}{wsman_fault}</s:Detail></s:Fault></s:Body></s:Envelope>",
            self.action,
            soap::new_guid(),
            soap::ANONYMOUS,
            self.code,
            self.subcode,
            esc(self.reason),
        );
        soap_response(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}
