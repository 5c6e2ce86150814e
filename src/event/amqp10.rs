//! The body of a message published over AMQP 1.0, as RabbitMQ hands it to a 0-9-1 consumer:
//! the `type` property is `amqp-1.0` and the body is the message's encoded sections (OASIS
//! AMQP 1.0, part 3 "Messaging", 3.2; encodings from part 1 "Types", 1.6). midPoint's JMS
//! text arrives as an `amqp-value` section holding a string; other senders use `data`.
//!
//! Only that subset is read: each section is a described type (`0x00`, then the descriptor
//! as a `smallulong`/`ulong` code or its symbolic name), the body a `str8`/`str32` string or
//! `vbin8`/`vbin32` binary (several `data` sections are one body, concatenated), and every
//! other section skipped whole by its own size (`list`/`map` 8 or 32, `list0`). Nothing
//! recurses and every length is checked against what is left, so no body can make it read
//! out of bounds or loop; anything else is refused with what was found where.

/// `amqp-1.0`: the `type` RabbitMQ gives such a delivery.
pub const MESSAGE_TYPE: &str = "amqp-1.0";

/// The descriptor codes of the sections (part 3, 3.2), low byte of `0x00000000:0x000000NN`.
const HEADER: u64 = 0x70;
const PROPERTIES: u64 = 0x73;
const DATA: u64 = 0x75;
const AMQP_SEQUENCE: u64 = 0x76;
const AMQP_VALUE: u64 = 0x77;
const FOOTER: u64 = 0x78;

/// What the sections carried that mailboxd reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unwrapped {
    /// The body: an `amqp-value` string's bytes, or the `data` sections concatenated.
    pub body: Vec<u8>,
    /// The properties section's `message-id`, when it is a string, a ulong or a uuid.
    pub message_id: Option<String>,
}

/// The body and message id of AMQP 1.0 encoded sections, or why they cannot be read.
pub fn unwrap(mut bytes: &[u8]) -> Result<Unwrapped, String> {
    let mut out = Unwrapped::default();
    let mut body_seen = false;
    while !bytes.is_empty() {
        let at = bytes.len();
        let mut r = Reader { bytes, at };
        if r.u8()? != 0x00 {
            return Err(r.err("a section (a described type, 0x00)"));
        }
        let code = r.descriptor()?;
        match code {
            DATA | AMQP_VALUE => {
                if code == AMQP_VALUE && body_seen {
                    return Err(r.err("one amqp-value section only"));
                }
                out.body.extend_from_slice(r.string_or_binary()?);
                body_seen = true;
            }
            PROPERTIES => out.message_id = r.first_list_item_as_id()?,
            AMQP_SEQUENCE => {
                return Err(
                    "an amqp-sequence body is not read by mailboxd: send text (amqp-value) or data"
                        .into(),
                );
            }
            HEADER..=FOOTER => r.skip_value()?,
            other => return Err(format!("unknown section descriptor 0x{other:x}")),
        }
        bytes = r.bytes;
    }
    if !body_seen {
        return Err("no amqp-value or data section: the message has no body".into());
    }
    Ok(out)
}

/// A cursor that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    /// How many bytes were left when this section started (for the error's position).
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, wanted: &str) -> String {
        let offset = self.at.saturating_sub(self.bytes.len());
        format!("AMQP 1.0 body: expected {wanted} at byte {offset} of the section")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!(
                "AMQP 1.0 body: a length of {n} bytes runs past the end ({} left)",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// A section's descriptor: `smallulong` (0x53), `ulong` (0x80), or the symbol
    /// (`sym8` 0xa3, `sym32` 0xb3) `amqp:<name>:<type>` mapped to its code.
    fn descriptor(&mut self) -> Result<u64, String> {
        match self.u8()? {
            0x53 => Ok(u64::from(self.u8()?)),
            0x80 => {
                let b = self.take(8)?;
                Ok(u64::from_be_bytes(
                    b.try_into().map_err(|_| self.err("a ulong"))?,
                ))
            }
            c @ (0xa3 | 0xb3) => {
                let n = if c == 0xa3 {
                    usize::from(self.u8()?)
                } else {
                    self.u32()?
                };
                let name = self.take(n)?;
                symbolic(name).ok_or_else(|| {
                    format!(
                        "unknown section descriptor {:?}",
                        String::from_utf8_lossy(name)
                    )
                })
            }
            _ => Err(self.err("a section descriptor (smallulong, ulong or symbol)")),
        }
    }

    /// The bytes of a `str8`/`str32` or `vbin8`/`vbin32` value.
    fn string_or_binary(&mut self) -> Result<&'a [u8], String> {
        let n = match self.u8()? {
            0xa0 | 0xa1 => usize::from(self.u8()?),
            0xb0 | 0xb1 => self.u32()?,
            _ => return Err(self.err("a string (str8, str32) or binary (vbin8, vbin32) body")),
        };
        self.take(n)
    }

    /// Skips a section's value by its size: `list0`, `list8`/`map8`, `list32`/`map32`, or
    /// `null`.
    fn skip_value(&mut self) -> Result<(), String> {
        match self.u8()? {
            0x40 | 0x45 => Ok(()),
            0xc0 | 0xc1 => {
                let n = usize::from(self.u8()?);
                self.take(n).map(drop)
            }
            0xd0 | 0xd1 => {
                let n = self.u32()?;
                self.take(n).map(drop)
            }
            _ => Err(self.err("a list or map (list0, list8, list32, map8, map32)")),
        }
    }

    /// The properties list's first field, `message-id` (part 3, 3.2.4), as text when it is
    /// a string, a ulong or a uuid; the rest of the list skipped by its size.
    fn first_list_item_as_id(&mut self) -> Result<Option<String>, String> {
        let (size, count_width) = match self.u8()? {
            0x45 => return Ok(None),
            0xc0 => (usize::from(self.u8()?), 1),
            0xd0 => (self.u32()?, 4),
            _ => return Err(self.err("the properties list (list0, list8, list32)")),
        };
        let mut list = Reader {
            bytes: self.take(size)?,
            at: size,
        };
        let count = if count_width == 1 {
            usize::from(list.u8()?)
        } else {
            list.u32()?
        };
        if count == 0 {
            return Ok(None);
        }
        let id = match list.u8()? {
            c @ (0xa1 | 0xb1) => {
                let n = if c == 0xa1 {
                    usize::from(list.u8()?)
                } else {
                    list.u32()?
                };
                Some(String::from_utf8_lossy(list.take(n)?).into_owned())
            }
            0x44 => Some("0".to_owned()),
            0x53 => Some(list.u8()?.to_string()),
            0x80 => {
                let b: [u8; 8] = list.take(8)?.try_into().map_err(|_| list.err("a ulong"))?;
                Some(u64::from_be_bytes(b).to_string())
            }
            0x98 => {
                let b: [u8; 16] = list.take(16)?.try_into().map_err(|_| list.err("a uuid"))?;
                Some(uuid::Uuid::from_bytes(b).to_string())
            }
            // null, binary or anything else: no id from here.
            _ => None,
        };
        Ok(id)
    }
}

/// The code of a section named by its symbolic descriptor (part 3, 3.2).
fn symbolic(name: &[u8]) -> Option<u64> {
    Some(match name {
        b"amqp:header:list" => HEADER,
        b"amqp:delivery-annotations:map" => 0x71,
        b"amqp:message-annotations:map" => 0x72,
        b"amqp:properties:list" => PROPERTIES,
        b"amqp:application-properties:map" => 0x74,
        b"amqp:data:binary" => DATA,
        b"amqp:amqp-sequence:list" => AMQP_SEQUENCE,
        b"amqp:amqp-value:*" => AMQP_VALUE,
        b"amqp:footer:map" => FOOTER,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `amqp-value` section holding `text` as a `str8` (or `str32` when longer).
    pub(crate) fn amqp_value(text: &str) -> Vec<u8> {
        let mut out = vec![0x00, 0x53, 0x77];
        match u8::try_from(text.len()) {
            Ok(n) => out.extend([0xa1, n]),
            Err(_) => {
                out.push(0xb1);
                out.extend((text.len() as u32).to_be_bytes());
            }
        }
        out.extend(text.as_bytes());
        out
    }

    #[test]
    fn an_amqp_value_string_after_header_and_properties_is_the_body() {
        // header: list8 of one `true` (durable); properties: list8 whose message-id is "id1".
        let mut bytes = vec![0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41];
        bytes.extend([
            0x00, 0x53, 0x73, 0xc0, 0x06, 0x01, 0xa1, 0x03, b'i', b'd', b'1',
        ]);
        bytes.extend(amqp_value(r#"{"operation":"add"}"#));
        // application-properties: an empty map8; footer: map32 with no entries.
        bytes.extend([0x00, 0x53, 0x74, 0xc1, 0x01, 0x00]);
        bytes.extend([0x00, 0x53, 0x78, 0xd1, 0, 0, 0, 4, 0, 0, 0, 0]);
        let got = unwrap(&bytes).unwrap();
        assert_eq!(got.body, br#"{"operation":"add"}"#);
        assert_eq!(got.message_id.as_deref(), Some("id1"));
        let long = "x".repeat(300);
        assert_eq!(unwrap(&amqp_value(&long)).unwrap().body, long.as_bytes());
    }

    #[test]
    fn data_sections_are_one_body_and_symbolic_descriptors_are_read() {
        let mut bytes = vec![0x00, 0x53, 0x75, 0xa0, 0x02, b'{', b'}'];
        bytes.extend([0x00, 0xa3, 16]);
        bytes.extend(b"amqp:data:binary");
        bytes.extend([0xb0, 0, 0, 0, 1, b'\n']);
        // A ulong message id, as a uuid-less sender may use.
        bytes.extend([0x00, 0x53, 0x73, 0xc0, 0x03, 0x01, 0x53, 0x07]);
        let got = unwrap(&bytes).unwrap();
        assert_eq!(got.body, b"{}\n");
        assert_eq!(got.message_id.as_deref(), Some("7"));
    }

    #[test]
    fn what_is_not_read_is_refused_with_where() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                vec![0x00, 0x53, 0x77, 0xb1, 0xff, 0xff, 0xff, 0xff, b'x'],
                "runs past the end",
            ),
            (vec![0x00, 0x53, 0x77, 0xa1], "runs past the end"),
            (vec![0x00, 0x53, 0x76, 0x45], "amqp-sequence"),
            (vec![0x00, 0x53, 0x70, 0x45], "no body"),
            (vec![0x00, 0x53, 0x99, 0x45], "unknown section descriptor"),
            (
                vec![0x00, 0x53, 0x77, 0x71, 0, 0, 0, 1],
                "expected a string",
            ),
            (vec![0x53, 0x77], "expected a section"),
            (
                vec![0x00, 0x53, 0x70, 0xd0, 0x7f, 0xff, 0xff, 0xff],
                "runs past the end",
            ),
            (
                [amqp_value("a"), amqp_value("b")].concat(),
                "one amqp-value",
            ),
        ];
        for (bytes, want) in cases {
            let err = unwrap(&bytes).unwrap_err();
            assert!(
                err.contains(want),
                "{bytes:x?}: {err:?} should say {want:?}"
            );
        }
    }
}
