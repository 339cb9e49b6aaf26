//! Every state a destination can be in, ordered from worst to best, and the daemon's
//! overall state: the worst of its destinations', with the destinations in it named.
//! `cairn status`'s header and systemd's STATUS= line both say it, so that one
//! destination retrying is never summarised as `idle` because another one is.

/// The states of a destination, worst first: one that does not answer, one that failed
/// and waits to try again, catching up on a journal, then the phases of a round that
/// runs, then changes waiting to settle, then nothing to do. A state missing here (a new
/// one not yet listed) ranks just after `retrying`, with the errors: shown rather than
/// hidden behind a busy or idle one.
pub const STATES: [&str; 8] = [
    "stalled",
    "retrying",
    "replaying",
    "scanning",
    "uploading",
    "committing",
    "waiting",
    "idle",
];

/// How bad `state` is: 0 is the worst. Unknown states rank as errors (see [`STATES`]).
pub fn severity(state: &str) -> usize {
    let rank = |name: &str| STATES.iter().position(|s| *s == name);
    match rank(state) {
        Some(i) => 2 * i,
        None => 2 * rank("retrying").unwrap_or(0) + 1,
    }
}

/// The overall state of destinations given as `(name, state)`: the worst state, and the
/// names of the destinations in it, in the order given. `idle` (and no names) when
/// there are no destinations.
pub fn worst<'a>(
    destinations: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (String, Vec<String>) {
    let all: Vec<(&str, &str)> = destinations.into_iter().collect();
    let Some(state) = all.iter().map(|(_, s)| *s).min_by_key(|s| severity(s)) else {
        return ("idle".into(), Vec::new());
    };
    let names = all
        .iter()
        .filter(|(_, s)| *s == state)
        .map(|(n, _)| n.to_string())
        .collect();
    (state.to_string(), names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_runs_from_stalled_to_idle_with_unknown_states_among_the_errors() {
        let ranks: Vec<usize> = STATES.iter().map(|s| severity(s)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert!(severity("failing") > severity("retrying"));
        assert!(severity("failing") < severity("replaying"));
    }

    #[test]
    fn the_worst_state_wins_and_names_its_destinations() {
        let (s, names) = worst([("a", "idle"), ("b", "retrying"), ("c", "scanning")]);
        assert_eq!((s.as_str(), names), ("retrying", vec!["b".to_string()]));
        let (s, names) = worst([("a", "waiting"), ("b", "idle"), ("c", "waiting")]);
        assert_eq!(
            (s.as_str(), names),
            ("waiting", vec!["a".to_string(), "c".to_string()])
        );
        let (s, names) = worst([("a", "uploading"), ("b", "committing")]);
        assert_eq!((s.as_str(), names), ("uploading", vec!["a".to_string()]));
        let (s, names) = worst([("a", "stalled"), ("b", "retrying")]);
        assert_eq!((s.as_str(), names), ("stalled", vec!["a".to_string()]));
        assert_eq!(worst([]), ("idle".to_string(), Vec::new()));
    }
}
