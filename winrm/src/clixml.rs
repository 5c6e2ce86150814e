//! PowerShell writes its error, warning and progress records to stderr as `#< CLIXML`
//! documents when its host is not interactive. Operators need the text, not the XML.

use quick_xml::events::Event;

/// Undoes PowerShell's `_xHHHH_` escapes (CR, LF and other characters XML cannot carry).
fn unescape_ps(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("_x") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let code = tail
            .get(2..6)
            .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
            .filter(|_| tail.get(6..7) == Some("_"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32);
        match code {
            Some(c) => {
                out.push(c);
                rest = &tail[7..];
            }
            None => {
                out.push_str("_x");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out.replace("\r\n", "\n")
}

/// The readable text of a stderr stream: the error and warning strings of every `#< CLIXML`
/// document (progress records dropped), plain text kept as it is.
pub fn readable(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    if !text.contains("#< CLIXML") {
        return text.trim().to_owned();
    }
    let mut lines: Vec<String> = Vec::new();
    for (i, part) in text.split("#< CLIXML").enumerate() {
        if i == 0 {
            // Whatever a native command printed before PowerShell's first record.
            if !part.trim().is_empty() {
                lines.push(part.trim().to_owned());
            }
            continue;
        }
        lines.extend(records(part));
    }
    lines.concat().trim().to_owned()
}

/// The `<S S="Error|Warning|Verbose|Debug|Information">` strings of one document.
fn records(doc: &str) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut out = Vec::new();
    let mut stream: Option<String> = None;
    let mut depth_in_obj = 0usize;
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == "Obj" => depth_in_obj += 1,
            Ok(Event::End(e)) if e.local_name().as_ref() == "Obj" => {
                depth_in_obj = depth_in_obj.saturating_sub(1)
            }
            // Top-level strings only: those inside an <Obj> (progress records) are not messages.
            Ok(Event::Start(e)) if e.local_name().as_ref() == "S" && depth_in_obj == 0 => {
                stream = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.local_name().as_ref() == "S")
                    .map(|a| a.value.as_ref().to_ascii_lowercase());
                text.clear();
            }
            Ok(Event::Text(t)) if stream.is_some() => text.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) if stream.is_some() => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    text.push_str(match r.xml10_content().as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == "S" => {
                if let Some(kind) = stream.take() {
                    let msg = unescape_ps(&text);
                    match kind.as_str() {
                        "error" => out.push(msg),
                        "warning" => out.push(format!("WARNING: {msg}")),
                        "verbose" => out.push(format!("VERBOSE: {msg}")),
                        "debug" => out.push(format!("DEBUG: {msg}")),
                        _ => out.push(msg),
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_warnings_become_text_and_progress_goes() {
        let stderr = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T></TN><MS><S N=\"Activity\">Preparing modules for first use.</S></MS></Obj><S S=\"Error\">Write-Error : bad &amp; worse_x000D__x000A_</S><S S=\"Error\">second line_x000D__x000A_</S><S S=\"warning\">tab_x0009_here_x000D__x000A_</S></Objs>";
        assert_eq!(
            readable(stderr.as_bytes()),
            "Write-Error : bad & worse\nsecond line\nWARNING: tab\there"
        );
        assert_eq!(readable(b"plain text\r\n"), "plain text");
        assert_eq!(unescape_ps("a_x00_b_xZZZZ_c"), "a_x00_b_xZZZZ_c");
    }

    #[test]
    fn the_recorded_windows_stderr_reads_as_powershell_printed_it() {
        let raw = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">Write-Error \"Error\" : Error_x000D__x000A_</S><S S=\"Error\">    + CategoryInfo          : NotSpecified: (:) [Write-Error], WriteErrorExcep _x000D__x000A_</S><S S=\"Error\">   tion_x000D__x000A_</S></Objs>";
        let text = readable(raw.as_bytes());
        assert!(
            text.starts_with("Write-Error \"Error\" : Error\n    + CategoryInfo"),
            "{text}"
        );
        assert!(!text.contains("<S"), "{text}");
    }
}
