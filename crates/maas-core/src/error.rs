use std::fmt;

/// What went wrong, in terms a caller can act on. The server maps each kind to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was malformed or out of range (400).
    InvalidInput,
    /// No credentials, or credentials that are unknown, revoked or expired (401).
    Unauthorized,
    /// Valid credentials without the role or scope the action needs (403).
    Forbidden,
    /// The model, version, alias, key or job does not exist (404).
    NotFound,
    /// The thing already exists or the request conflicts with current state (409).
    Conflict,
    /// The body or artifact is larger than allowed (413).
    PayloadTooLarge,
    /// Too many requests are waiting for the same model (429).
    Overloaded,
    /// An upstream source (HTTP server, package index, hub) failed or sent corrupt data (502).
    Upstream,
    /// A bug or an I/O failure on our side (500). Clients see a generic message.
    Internal,
}

impl ErrorKind {
    /// A stable machine-readable code, used in the API's error envelope.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The error type of every maas crate: a kind plus a message meant for the person reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// A one-line description that names the offending input where there is one.
    pub message: String,
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// A client mistake (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// Something that does not exist (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// A conflict with existing state (409).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// A failure of ours (500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// A failure of an upstream source (502).
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, message)
    }
    /// Missing or bad credentials (401).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// Not allowed for this role or scope (403).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
