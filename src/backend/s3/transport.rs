//! Why a request got no answer at all: the connection was refused, reset, timed out, the
//! host name did not resolve, or TLS failed, told apart by walking the error's causes by
//! type (std::io::Error kinds, rustls errors) rather than by reading the SDK's debug text.
//!
//! [`super::errors`] turns the [`Transport`] into the one sentence a user reads, so that
//! no SDK or hyper structure reaches the terminal.

use crate::error::causes;
use std::error::Error as StdError;
use std::io;

/// What went wrong on the way to the server, as far as the causes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transport {
    /// Nothing listens at the address (a wrong port, a stopped server).
    Refused,
    /// The connection was reset or closed before an answer came.
    Reset,
    /// No answer in time.
    TimedOut,
    /// No route to the host, or the network is down.
    Unreachable,
    /// The endpoint's host name did not resolve.
    Dns,
    /// The server's certificate was refused; the text says why, in words.
    Certificate(&'static str),
    /// The TLS handshake failed otherwise (often a plain-HTTP server behind https://).
    Tls,
    /// None of the above; the text is the causes' own words.
    Other(String),
}

/// A certificate problem in words (rustls's own Display of some of them is a debug
/// structure).
fn certificate(e: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "it is signed by an authority this machine does not trust",
        C::Expired | C::ExpiredContext { .. } => "it has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "it is not valid yet (is this machine's clock right?)"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "it is not issued for the endpoint's host name"
        }
        C::Revoked => "it has been revoked",
        C::BadSignature => "its signature is wrong",
        _ => "it is not valid",
    }
}

/// Classify a failure that got no answer by its causes. The most telling cause wins: a
/// rustls error over the io::Error that carries it, an io::Error kind over the words of
/// the errors around it.
pub(super) fn classify(err: &(dyn StdError + 'static)) -> Transport {
    let mut by_kind = None;
    let mut dns = false;
    for cause in causes(err) {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(c) => Transport::Certificate(certificate(c)),
                _ => Transport::Tls,
            };
        }
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            use io::ErrorKind as K;
            let kind = match io.kind() {
                K::ConnectionRefused => Some(Transport::Refused),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    Some(Transport::Reset)
                }
                K::TimedOut => Some(Transport::TimedOut),
                K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => {
                    Some(Transport::Unreachable)
                }
                _ => None,
            };
            by_kind = by_kind.or(kind);
        }
        // hyper-util's connector names a failed lookup so; its error type is private,
        // and the resolver's io::Error has no kind of its own.
        dns |= cause.to_string() == "dns error";
    }
    if let Some(t) = by_kind {
        return t;
    }
    if dns {
        return Transport::Dns;
    }
    Transport::Other(plain_text(err))
}

/// The causes' own words on one line, each once, for a failure nothing above names. No
/// debug structures: only what each cause displays.
pub(super) fn plain_text(err: &(dyn StdError + 'static)) -> String {
    let mut line = String::new();
    for cause in causes(err) {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a text and a cause, as the connector's errors are.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn causes_are_classified_by_type_below_wrappers() {
        let refused = Wrapped(
            "client error (Connect)",
            Box::new(Wrapped(
                "tcp connect error",
                Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
            )),
        );
        assert_eq!(classify(&refused), Transport::Refused);
        let reset = io::Error::other(Wrapped(
            "connection error",
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
        ));
        assert_eq!(classify(&reset), Transport::Reset);
        let cert = Wrapped(
            "client error (Connect)",
            Box::new(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            )),
        );
        assert!(matches!(classify(&cert), Transport::Certificate(w) if w.contains("authority")));
        let dns = Wrapped(
            "client error (Connect)",
            Box::new(Wrapped(
                "dns error",
                Box::new(io::Error::other("failed to lookup address information")),
            )),
        );
        assert_eq!(classify(&dns), Transport::Dns);
        let other = Wrapped("client error", Box::new(io::Error::other("odd")));
        assert_eq!(
            classify(&other),
            Transport::Other("client error: odd".into())
        );
    }
}
