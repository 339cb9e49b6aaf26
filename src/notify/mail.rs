//! The mail an event becomes: plain text, the event's title as the subject, its
//! message and fields as the body. Pure: building it needs no server.

use super::channel::EmailConfig;
use super::event::Event;
use lettre::Message;
use lettre::message::Mailbox;

/// Parse an address as a mail header takes it (`ops@example.org` or
/// `Ops <ops@example.org>`), or say what is wrong with it.
pub fn mailbox(key: &str, address: &str) -> Result<Mailbox, String> {
    address.parse::<Mailbox>().map_err(|e| {
        format!("`{key}` = {address:?} is not a mail address ({e}): write it like \"backups@example.org\"")
    })
}

/// The mail for `event`.
pub fn message(m: &EmailConfig, event: &Event) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(mailbox("from", &m.from)?)
        .subject(event.title())
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in &m.to {
        b = b.to(mailbox("to", to)?);
    }
    b.body(event.text())
        .map_err(|e| format!("the mail could not be built: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::EventKind;

    #[test]
    fn a_mail_has_the_title_as_subject_and_the_fields_in_its_body() {
        let m = EmailConfig {
            host: "127.0.0.1".into(),
            port: 25,
            implicit_tls: false,
            starttls: false,
            from: "cairn <cairn@example.org>".into(),
            to: vec!["ops@example.org".into(), "oncall@example.org".into()],
            username: None,
            password_file: None,
        };
        let e = Event::new(
            EventKind::Stale,
            "web-1",
            "no snapshot of /srv in lan for 25h",
        )
        .destination("lan")
        .source("/srv");
        let text = String::from_utf8(message(&m, &e).expect("mail").formatted()).expect("utf-8");
        assert!(
            text.contains("Subject: cairn on web-1: backup stale (lan)"),
            "{text}"
        );
        assert!(
            text.contains("To: ops@example.org, oncall@example.org"),
            "{text}"
        );
        assert!(text.contains("source: /srv"), "{text}");
        assert!(mailbox("to", "not an address").is_err());
    }
}
