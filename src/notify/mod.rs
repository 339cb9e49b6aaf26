//! Telling the operator: the events cairn raises ([`event`]), the notifiers that carry
//! them and what each sends ([`channel`], [`mail`]), one delivery ([`send`]) and
//! delivery in the background with retries and a health record ([`hub`]). Which state
//! changes raise which event is the daemon's ([`crate::daemon::alerts`]).

pub mod channel;
pub mod event;
pub mod hub;
pub mod mail;
pub mod send;

pub use channel::{Channel, EmailConfig, NotifierConfig};
pub use event::{Event, EventKind};
pub use hub::{Hub, NotifierHealth};
pub use send::{NotifyError, Sender};
