//! Destinations that use the same passphrase are built on the same master secret, so
//! every copy stores identical data identically and a blob damaged in one destination
//! can be read from another. This registry hands the secret of the first repository
//! opened (or created) to the workers that must create a new one, and makes sure that
//! at first start, when none exists yet, exactly one is created fresh and the others
//! are built on it.

use super::config::PasswordSource;
use crate::chunker::ChunkerParams;
use crate::crypto::MasterSecret;
use crate::repo::{InitOptions, Repository};
use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a new repository is built on.
#[derive(Clone)]
struct Template {
    secret: MasterSecret,
    chunker: ChunkerParams,
    pack_size: u32,
    /// Format version: copies on one set of keys keep one layout.
    version: u32,
}

/// A passphrase group: the destinations that read their passphrase from one source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Group {
    /// Destinations configured with this passphrase source.
    Source(PasswordSource),
    /// A destination the ring was not told about: a group of its own.
    Alone(String),
}

#[derive(Default)]
struct State {
    templates: HashMap<Group, Template>,
    /// Destinations whose first open attempt has finished (whatever its outcome).
    tried: HashSet<String>,
    /// Passphrase groups in which a worker is creating the first repository, and which.
    claimed: HashMap<Group, String>,
    /// Which destination opened each repository (by id): one repository under two
    /// names would be backed up twice, and its journals and records would disagree.
    holders: HashMap<crate::hash::Id, String>,
}

/// Shared by every worker of one daemon.
#[derive(Default)]
pub struct KeyRing {
    state: Mutex<State>,
    changed: Condvar,
    /// For each destination, its passphrase group and the other members.
    groups: HashMap<String, (Group, Vec<String>)>,
}

/// What a worker about to create a repository should do.
pub enum Plan {
    /// Build on this sibling's keys.
    Share(InitOptions),
    /// Create fresh keys, then [`Attempt::register`] the repository (or drop the
    /// attempt on failure, which lets a sibling try).
    Fresh(InitOptions),
}

impl KeyRing {
    /// A registry for destinations `(name, where its passphrase comes from)`.
    pub fn new(members: &[(String, PasswordSource)]) -> Self {
        let groups = members
            .iter()
            .map(|(name, source)| {
                let others = members
                    .iter()
                    .filter(|(n, s)| s == source && n != name)
                    .map(|(n, _)| n.clone())
                    .collect();
                (name.clone(), (Group::Source(source.clone()), others))
            })
            .collect();
        KeyRing {
            groups,
            ..KeyRing::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn group(&self, dest: &str) -> (Group, Vec<String>) {
        self.groups
            .get(dest)
            .cloned()
            .unwrap_or_else(|| (Group::Alone(dest.to_string()), Vec::new()))
    }

    /// Begin `dest`'s attempt to open (or create) its repository, once its storage and
    /// passphrase are at hand. However the attempt then ends without
    /// [`Attempt::register`] (an error, a refusal, a stop), dropping it tells the ring,
    /// so siblings waiting on this destination go on.
    pub fn attempt(&self, dest: &str) -> Attempt<'_> {
        Attempt {
            ring: self,
            dest: dest.to_string(),
            registered: false,
        }
    }

    /// Record that `dest` opened `repo` (an existing repository or one it created).
    fn register(&self, dest: &str, repo: &Repository) {
        let (group, _) = self.group(dest);
        let mut s = self.lock();
        s.tried.insert(dest.to_string());
        if s.claimed.get(&group).is_some_and(|c| c == dest) {
            s.claimed.remove(&group);
        }
        s.templates.entry(group).or_insert_with(|| Template {
            secret: repo.keys().secret().clone(),
            chunker: repo.config().chunker,
            pack_size: repo.config().pack_size,
            version: repo.config().version,
        });
        drop(s);
        self.changed.notify_all();
    }

    /// Claim the repository `id` for `dest`; the name of the destination that holds it
    /// already, if another one does (the same repository configured under two names).
    pub fn claim(&self, dest: &str, id: crate::hash::Id) -> Result<(), String> {
        let mut s = self.lock();
        match s.holders.get(&id) {
            Some(other) if other != dest => Err(other.clone()),
            _ => {
                s.holders.retain(|_, holder| holder != dest);
                s.holders.insert(id, dest.to_string());
                Ok(())
            }
        }
    }

    /// Record that `dest`'s attempt finished without a repository.
    fn release(&self, dest: &str) {
        let (group, _) = self.group(dest);
        let mut s = self.lock();
        s.tried.insert(dest.to_string());
        if s.claimed.get(&group).is_some_and(|c| c == dest) {
            s.claimed.remove(&group);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Decide how `dest` creates its repository, waiting (at most `patience`) for
    /// siblings that may still bring an existing one, and for as long as it takes for a
    /// sibling that is creating the group's first one. `None` when `stop` is raised.
    pub fn plan(
        &self,
        dest: &str,
        base: InitOptions,
        patience: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Option<Plan> {
        let (group, others) = self.group(dest);
        let deadline = Instant::now() + patience;
        let mut s = self.lock();
        s.tried.insert(dest.to_string());
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            if let Some(t) = s.templates.get(&group) {
                let mut o = base;
                o.secret = Some(t.secret.clone());
                o.chunker = t.chunker;
                o.pack_size = t.pack_size;
                o.version = t.version;
                return Some(Plan::Share(o));
            }
            let now = Instant::now();
            let claimed = s.claimed.get(&group).is_some_and(|c| c != dest);
            let untried = others.iter().any(|o| !s.tried.contains(o)) && now < deadline;
            if !claimed && !untried {
                s.claimed.insert(group, dest.to_string());
                return Some(Plan::Fresh(base));
            }
            // Wake at least every second to notice a stop.
            s = self
                .changed
                .wait_timeout(s, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A destination's attempt to open its repository, in progress; see [`KeyRing::attempt`].
pub struct Attempt<'a> {
    ring: &'a KeyRing,
    dest: String,
    registered: bool,
}

impl Attempt<'_> {
    /// The attempt succeeded with `repo`: its keys become the group's template.
    pub fn register(mut self, repo: &Repository) {
        self.ring.register(&self.dest, repo);
        self.registered = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.registered {
            self.ring.release(&self.dest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn pw(file: &str) -> PasswordSource {
        PasswordSource::File(file.into())
    }

    fn base() -> InitOptions {
        InitOptions::new("t".into(), "h".into(), "u".into())
    }

    #[test]
    fn a_repository_is_held_by_one_destination_at_a_time() {
        let ring = KeyRing::new(&[("a".into(), pw("pw")), ("b".into(), pw("pw"))]);
        let (x, y) = (crate::hash::Id([1; 32]), crate::hash::Id([2; 32]));
        assert_eq!(ring.claim("a", x), Ok(()));
        assert_eq!(ring.claim("a", x), Ok(()), "claiming again is fine");
        assert_eq!(ring.claim("b", x), Err("a".to_string()));
        // a moves to another repository (another disk): x is free again.
        assert_eq!(ring.claim("a", y), Ok(()));
        assert_eq!(ring.claim("b", x), Ok(()));
    }

    #[test]
    fn exactly_one_of_a_group_starts_fresh_and_a_stop_ends_the_wait() {
        let ring = Arc::new(KeyRing::new(&[
            ("a".into(), pw("pw")),
            ("b".into(), pw("pw")),
            ("c".into(), pw("other")),
        ]));
        let stop = AtomicBool::new(false);
        // c has no sibling: fresh at once.
        assert!(matches!(
            ring.plan("c", base(), Duration::from_secs(60), &stop),
            Some(Plan::Fresh(_))
        ));
        // b has not been tried yet, so a waits (up to its patience) and then claims.
        let t = Instant::now();
        assert!(matches!(
            ring.plan("a", base(), Duration::from_millis(200), &stop),
            Some(Plan::Fresh(_))
        ));
        assert!(t.elapsed() >= Duration::from_millis(200));
        // While a holds the claim, b waits; a stop ends the wait with nothing.
        let r2 = ring.clone();
        // Timed from here, not from inside the thread, which a loaded machine may start
        // late.
        let started = Instant::now();
        let waiter = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            let plan = r2.plan("b", base(), Duration::from_millis(10), &stop);
            (plan.is_none(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        // a gives up without a repository: b may now claim and start fresh.
        drop(ring.attempt("a"));
        let (none, waited) = waiter.join().expect("join");
        assert!(!none);
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            ring.plan("a", base(), Duration::from_secs(60), &stop)
                .is_none()
        );
    }
}
