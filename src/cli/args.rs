//! Which verbs take the repository options, and what is said when they come where they
//! mean nothing. `--repo`, `--password-file`, `--password-command`, `--limit-upload`,
//! `--limit-download` and `-o` belong to the verbs that open a repository
//! ([`RepoArgs`](super::RepoArgs)); `daemon`, `config`, `status`, `completions` and `man`
//! do not offer them. Before the verb (`cairn --repo R snapshots`, the form from when they
//! were global) they are still read: moved after the verb before clap parses, so help and
//! completions never offer them there; before a verb that has no use for them they are
//! refused with the reason.

use cairn::error::EXIT_USAGE;
use std::ffi::OsString;

/// Repository options that take a value as the next argument, each with the name it is
/// reported under.
const WITH_VALUE: [(&str, &str); 8] = [
    ("--repo", "--repo"),
    ("-r", "--repo"),
    ("--password-file", "--password-file"),
    ("--password-command", "--password-command"),
    ("--limit-upload", "--limit-upload"),
    ("--limit-download", "--limit-download"),
    ("-o", "-o"),
    ("--option", "-o"),
];

/// The repository option `arg` is with its value attached (`--repo=R`, `-oKEY=V`), by
/// the name it is reported under; `None` when it is none.
fn attached(arg: &str) -> Option<&'static str> {
    let long = WITH_VALUE
        .iter()
        .filter(|(f, _)| f.starts_with("--"))
        .find(|(f, _)| arg.strip_prefix(f).is_some_and(|v| v.starts_with('=')))
        .map(|(_, name)| *name);
    long.or(match arg.get(..2) {
        Some("-r") if arg.len() > 2 => Some("--repo"),
        Some("-o") if arg.len() > 2 => Some("-o"),
        _ => None,
    })
}

/// The command line with repository options given before the verb (`cairn --repo R
/// snapshots`, the form from when they were global) moved to just after it, where the
/// verb's own options are; unchanged when there are none. Before a verb without
/// repository options they are refused, with what that verb uses instead. Doing this
/// before clap parses keeps the old form out of help and completions.
pub fn reorder(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut early: Vec<OsString> = Vec::new();
    let mut given: Vec<&'static str> = Vec::new();
    let mut kept: Vec<OsString> = Vec::new();
    let mut args = argv.into_iter();
    kept.extend(args.next());
    let mut verb = None;
    while let Some(a) = args.next() {
        let text = a.to_string_lossy().into_owned();
        if let Some((_, name)) = WITH_VALUE.iter().find(|(f, _)| *f == text) {
            given.push(name);
            early.push(a);
            early.extend(args.next());
        } else if let Some(name) = attached(&text) {
            given.push(name);
            early.push(a);
        } else if text.starts_with('-') && text != "--" {
            kept.push(a);
        } else {
            verb = Some((text, a));
            break;
        }
    }
    let (name, verb) = match verb {
        Some(v) if !early.is_empty() => v,
        verb => {
            let verb = verb.map(|(_, v)| v);
            return Ok(kept
                .into_iter()
                .chain(early)
                .chain(verb)
                .chain(args)
                .collect());
        }
    };
    if NO_REPOSITORY.contains(&name.as_str()) {
        given.dedup();
        return Err(format!(
            "{} given before `{name}`, which does not use {}: {}",
            given.join(", "),
            if given.len() == 1 { "it" } else { "them" },
            instead(&name)
        ));
    }
    kept.push(verb);
    kept.extend(early);
    kept.extend(args);
    Ok(kept)
}

/// What `verb` uses instead of the repository options, for the message that refuses
/// them.
fn instead(verb: &str) -> String {
    match verb {
        "daemon" | "config" => format!(
            "it takes its destinations, their options and passphrases from the configuration file (--config FILE); to override the passphrase file, put it after the verb: `cairn {verb}{} --password-file FILE`",
            if verb == "config" { " check" } else { "" }
        ),
        "status" => {
            "it asks the running daemon, found through its configuration (--config FILE) or its socket (--socket PATH)".into()
        }
        _ => "it works on no repository: leave them out".into(),
    }
}

/// The verbs without repository options.
const NO_REPOSITORY: [&str; 5] = ["daemon", "config", "status", "completions", "man"];

/// For clap's "unexpected argument" error about a repository option after a verb that has
/// none (`cairn daemon --repo R`), the sentence that says why and what to use instead;
/// `None` for any other error, which clap reports itself.
pub fn explain_misplaced(e: &clap::Error, argv: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split('=').next().unwrap_or(arg);
    let (flag, _) = WITH_VALUE.iter().find(|(f, _)| *f == flag)?;
    let verb = argv
        .iter()
        .skip(1)
        .find(|a| NO_REPOSITORY.contains(&a.as_str()))?;
    Some(format!(
        "{flag} means nothing to `cairn {verb}`: {}",
        instead(verb)
    ))
}

/// Parse the command line as `P`, explaining a repository option put after a verb that
/// has none; clap's own errors (and `--help`) end the process as clap does.
pub fn parse<P: clap::Parser>() -> P {
    let argv = match reorder(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("error: {why}");
            std::process::exit(EXIT_USAGE);
        }
    };
    let lossy: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match P::try_parse_from(argv) {
        Ok(p) => p,
        Err(e) => {
            if let Some(why) = explain_misplaced(&e, &lossy) {
                eprintln!("error: {why}");
                std::process::exit(EXIT_USAGE);
            }
            e.exit()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(args: &[&str]) -> Result<Vec<String>, String> {
        reorder(args.iter().map(OsString::from).collect())
            .map(|v| v.iter().map(|a| a.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn repository_options_before_the_verb_move_after_it_or_are_refused() {
        assert_eq!(
            re(&[
                "cairn",
                "-v",
                "--repo",
                "/r",
                "-os3.retries=2",
                "snapshots",
                "--json"
            ]),
            Ok(vec![
                "cairn",
                "-v",
                "snapshots",
                "--repo",
                "/r",
                "-os3.retries=2",
                "--json"
            ]
            .into_iter()
            .map(String::from)
            .collect())
        );
        let plain = ["cairn", "--json", "snapshots", "--repo", "/r"];
        assert_eq!(
            re(&plain),
            Ok(plain.iter().map(|s| s.to_string()).collect())
        );
        let e = re(&["cairn", "--repo", "/r", "-o", "x=1", "daemon"]).expect_err("refused");
        assert!(e.starts_with("--repo, -o given before `daemon`"), "{e}");
        assert!(e.contains("--config FILE"), "{e}");
        let e = re(&["cairn", "--password-file=/p", "status"]).expect_err("refused");
        assert!(e.contains("--socket PATH"), "{e}");
        let e = re(&[
            "cairn",
            "--password-command=pass x",
            "--limit-download",
            "5",
            "man",
        ])
        .expect_err("refused");
        assert!(
            e.starts_with("--password-command, --limit-download given before `man`"),
            "{e}"
        );
        assert_eq!(
            re(&[
                "cairn",
                "--limit-upload=10",
                "--password-command",
                "p",
                "stats"
            ]),
            Ok([
                "cairn",
                "stats",
                "--limit-upload=10",
                "--password-command",
                "p"
            ]
            .into_iter()
            .map(String::from)
            .collect())
        );
    }
}
