//! Why a delivery could not become a job: one error type for both decoders, because its
//! text is what the poison table and the IAM engineer see, whatever the format was.

use super::model::{MAX_MESSAGE_BYTES, SCHEMA_V1};

/// Why a message could not become a job. The text goes to the poison table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("message is {0} bytes; the limit is {MAX_MESSAGE_BYTES} bytes")]
    TooLarge(usize),
    #[error("unsupported content type {0:?}: send application/json")]
    ContentType(String),
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("unknown schema {0:?}: this mailboxd understands \"{SCHEMA_V1}\"")]
    Schema(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("IdentityIQ XML could not be read: {0}")]
    Xml(String),
    /// A midPoint request that is nothing for mailboxd, or not one it can read.
    #[error("midPoint request refused: {0}")]
    Midpoint(String),
    /// An AMQP 1.0 body (`type` `amqp-1.0`) whose sections could not be read.
    #[error("{0}")]
    Amqp10(String),
}

impl EventError {
    /// A field that is present but breaks a rule.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> EventError {
        EventError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
