//! Backend options given as `-o key=value` (restic's extended-option style) and how a
//! repository location string is parsed.

use super::LocationError;
use std::path::PathBuf;
use std::time::Duration;

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket (and key prefix).
    S3(S3Location),
}

impl Location {
    /// Whether the repository is in an S3 bucket (where Object Lock and S3 options apply).
    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3(_))
    }
}

/// The location in a form `--repo` accepts again, for status, logs and messages.
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s3) => f.write_str(&s3.display()),
        }
    }
}

/// An S3 repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `scheme://host[:port]` for S3-compatible servers; `None` for AWS or the endpoint
    /// from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// The location as restic would print it, for messages.
    pub fn display(&self) -> String {
        let tail = if self.prefix.is_empty() {
            self.bucket.clone()
        } else {
            format!("{}/{}", self.bucket, self.prefix)
        };
        match &self.endpoint {
            Some(e) => format!("s3:{e}/{tail}"),
            None => format!("s3://{tail}"),
        }
    }
}

/// Every form of repository location [`parse_location`] accepts, with what it names: the
/// `--repo` help and the message for an unknown form print this list.
pub const LOCATION_FORMS: &[(&str, &str)] = &[
    ("PATH or local:PATH", "a local directory"),
    (
        "s3:http://HOST[:PORT]/BUCKET[/PREFIX]",
        "an S3-compatible server (MinIO, Garage, Ceph, ...), path-style addressing",
    ),
    (
        "s3:https://HOST[:PORT]/BUCKET[/PREFIX]",
        "the same over https",
    ),
    (
        "s3:HOST[:PORT]/BUCKET[/PREFIX]",
        "the same as s3:https://...",
    ),
    (
        "s3://BUCKET[/PREFIX]",
        "AWS S3 (region from -o s3.region or AWS_REGION), or the endpoint in AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL",
    ),
];

/// Parse a repository location: a path, `local:PATH`, `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`,
/// `s3:HOST/BUCKET[/PREFIX]` (https) or `s3://BUCKET[/PREFIX]`.
pub fn parse_location(spec: &str) -> Result<Location, LocationError> {
    let err = |reason: &str| LocationError {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    if spec.is_empty() {
        return Err(err("is empty: pass --repo or set CAIRN_REPOSITORY"));
    }
    if let Some(p) = spec.strip_prefix("local:") {
        if p.is_empty() {
            return Err(err("has no path after `local:`"));
        }
        return Ok(Location::Local(PathBuf::from(p)));
    }
    let (endpoint, rest) = if let Some(rest) = spec.strip_prefix("s3://") {
        (None, rest)
    } else if let Some(rest) = spec.strip_prefix("s3:") {
        let (scheme, after) = if let Some(a) = rest.strip_prefix("http://") {
            ("http", a)
        } else if let Some(a) = rest.strip_prefix("https://") {
            ("https", a)
        } else {
            ("https", rest)
        };
        let Some((host, path)) = after.split_once('/') else {
            return Err(err(
                "names no bucket: write s3:http://HOST:PORT/BUCKET[/PREFIX]",
            ));
        };
        if host.is_empty() {
            return Err(err(
                "names no host: write s3:http://HOST:PORT/BUCKET[/PREFIX]",
            ));
        }
        (Some(format!("{scheme}://{host}")), path)
    } else if spec.contains("://") {
        let forms: Vec<&str> = LOCATION_FORMS.iter().map(|(f, _)| *f).collect();
        return Err(err(&format!(
            "is not a known form: use one of {}",
            forms.join(", ")
        )));
    } else {
        return Ok(Location::Local(PathBuf::from(spec)));
    };
    let rest = rest.trim_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(err("names no bucket"));
    }
    let valid_bucket = bucket.len() >= 3
        && bucket.len() <= 63
        && bucket.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        });
    if !valid_bucket {
        return Err(err(&format!(
            "bucket name {bucket:?} is invalid: 3 to 63 lower-case letters, digits, '.', '-'"
        )));
    }
    Ok(Location::S3(S3Location {
        endpoint,
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    }))
}

/// When the SDK adds request checksums. Some S3-compatible servers reject the newer
/// default (CRC32 trailers with aws-chunked encoding), so cairn sends them only when an
/// operation requires one; the data is authenticated end to end by cairn anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Only for operations that require a checksum (works with MinIO, Garage, Ceph).
    WhenRequired,
    /// Whenever the operation supports one (AWS's default).
    WhenSupported,
}

/// Every tunable of the storage stack, with defaults that work for AWS, MinIO and Garage.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Access key id; with `secret_access_key`, used instead of the AWS credential chain
    /// (per-destination credentials).
    pub access_key_id: Option<String>,
    /// Secret access key paired with `access_key_id`.
    pub secret_access_key: Option<crate::secret::SecretString>,
    /// S3 region; `None` uses the AWS environment/profile, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing; `None` means path-style for custom endpoints, virtual-host
    /// style for AWS.
    pub path_style: Option<bool>,
    /// Storage class for uploaded objects (e.g. `STANDARD_IA`).
    pub storage_class: Option<String>,
    /// Extra PEM CA bundle to trust (self-signed MinIO/Garage).
    pub ca_bundle: Option<PathBuf>,
    /// Request checksum policy.
    pub checksum: ChecksumMode,
    /// Sign every upload's body hash, also over HTTPS: for TLS that ends at a proxy which
    /// passes the body on over a hop nothing checks.
    pub always_sign_payload: bool,
    /// Requests in flight at once, across all operations.
    pub connections: usize,
    /// Time limit of one request attempt.
    pub timeout: Duration,
    /// Attempts per operation (1 = no retry).
    pub attempts: u32,
    /// First retry delay; doubles each attempt, with full jitter, capped at 30 s.
    pub retry_delay: Duration,
    /// Objects at least this large are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each part.
    pub part_size: u64,
    /// Parts uploaded at once for one object.
    pub part_concurrency: usize,
    /// Upload bandwidth cap in bytes per second (average), if any.
    pub upload_limit: Option<u64>,
    /// Download bandwidth cap in bytes per second (average), if any.
    pub download_limit: Option<u64>,
    /// AWS shared-config profile to take credentials and region from.
    pub profile: Option<String>,
    /// S3 Object Lock retention given to every uploaded object.
    pub object_lock: Option<ObjectLock>,
}

/// S3 Object Lock retention for uploaded objects (the bucket must have Object Lock on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    /// Governance (a privileged credential may lift it) or compliance (nobody may).
    pub compliance: bool,
    /// How long each object is protected from deletion and overwrite.
    pub period: Duration,
}

impl ObjectLock {
    /// Parse `governance:30d` or `compliance:1y` (a humantime duration after the colon).
    pub fn parse(v: &str) -> Result<Self, String> {
        let bad = || {
            format!("object lock {v:?}: write MODE:DURATION, e.g. governance:30d or compliance:90d")
        };
        let (mode, dur) = v.split_once(':').ok_or_else(bad)?;
        let compliance = match mode.trim() {
            "governance" => false,
            "compliance" => true,
            _ => return Err(bad()),
        };
        let period = humantime::parse_duration(dur.trim()).map_err(|_| bad())?;
        if period < Duration::from_secs(24 * 3600) {
            return Err(format!(
                "object lock {v:?}: S3 retention is counted in days; give at least 1d"
            ));
        }
        Ok(ObjectLock { compliance, period })
    }
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            access_key_id: None,
            secret_access_key: None,
            region: None,
            path_style: None,
            storage_class: None,
            ca_bundle: None,
            checksum: ChecksumMode::WhenRequired,
            always_sign_payload: false,
            connections: 8,
            timeout: Duration::from_secs(120),
            attempts: 6,
            retry_delay: Duration::from_millis(250),
            multipart_threshold: 64 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
            upload_limit: None,
            download_limit: None,
            profile: None,
            object_lock: None,
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(format!("option {key}={v}: expected true or false")),
    }
}

/// A byte size like `64MiB`, `512K` or `1GiB`; the error names `key`.
pub fn parse_size(key: &str, v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("GiB").or_else(|| v.strip_suffix('G')) {
        (n, 1024 * 1024 * 1024)
    } else if let Some(n) = v.strip_suffix("MiB").or_else(|| v.strip_suffix('M')) {
        (n, 1024 * 1024)
    } else if let Some(n) = v.strip_suffix("KiB").or_else(|| v.strip_suffix('K')) {
        (n, 1024)
    } else {
        (v, 1)
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("option {key}={v}: expected a size like 64MiB"))
}

fn parse_count(key: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("option {key}={v}: expected a positive number"))
}

/// Every option `-o KEY=VALUE` (and a destination's `options` table) accepts, with the
/// form of its value and what it sets. The one list of keys: [`BackendOptions::set`]
/// refuses any other key, and `--help` and the unknown-key message print this list, so the
/// help cannot offer a key the parser lacks, nor leave one out.
pub const OPTION_KEYS: &[(&str, &str, &str)] = &[
    (
        "s3.region",
        "REGION",
        "bucket region (default: from the AWS environment, else us-east-1; `garage` for Garage)",
    ),
    (
        "s3.path-style",
        "true|false",
        "path-style (host/bucket/key) or virtual-host addressing (default: path-style for an explicit endpoint)",
    ),
    (
        "s3.storage-class",
        "CLASS",
        "storage class of uploads, e.g. STANDARD_IA",
    ),
    (
        "s3.ca-bundle",
        "FILE",
        "PEM file with the CA of a self-signed server, added to the system roots",
    ),
    (
        "s3.checksum",
        "when-required|when-supported",
        "when uploads carry the SDK's checksums (default: when-required)",
    ),
    (
        "s3.sign-payload",
        "auto|always",
        "sign each upload's body hash over https too (default: auto, over http only)",
    ),
    (
        "s3.connections",
        "N",
        "requests in flight at once (default: 8)",
    ),
    (
        "s3.timeout",
        "DURATION",
        "limit for one request attempt (default: 120s)",
    ),
    ("s3.retries", "N", "attempts per request (default: 6)"),
    (
        "s3.retry-delay",
        "DURATION",
        "first backoff, doubling, at most 30 s (default: 250ms)",
    ),
    (
        "s3.multipart-threshold",
        "SIZE",
        "objects this large go up in parts (default: 64MiB)",
    ),
    ("s3.part-size", "SIZE", "size of each part (default: 16MiB)"),
    (
        "s3.part-concurrency",
        "N",
        "parts of one object uploaded at once (default: 4)",
    ),
    (
        "s3.profile",
        "NAME",
        "AWS shared-config profile for credentials and region",
    ),
    (
        "s3.object-lock",
        "MODE:DURATION",
        "S3 Object Lock on every upload, e.g. governance:30d",
    ),
    (
        "upload-limit",
        "SIZE",
        "upload bandwidth cap per second, e.g. 10MiB (0: none)",
    ),
    (
        "download-limit",
        "SIZE",
        "download bandwidth cap per second, e.g. 10MiB (0: none)",
    ),
];

/// The keys of [`OPTION_KEYS`], comma-separated, for messages.
pub fn option_key_names() -> String {
    OPTION_KEYS
        .iter()
        .map(|(k, _, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

impl BackendOptions {
    /// Apply `-o key=value` options from the command line; the error names the option
    /// and what it accepts.
    pub fn apply(&mut self, options: &[String]) -> Result<(), String> {
        for o in options {
            let Some((key, value)) = o.split_once('=') else {
                return Err(format!("option {o:?} is not KEY=VALUE"));
            };
            self.set(key, value)?;
        }
        Ok(())
    }

    /// Hold S3 Object Lock retention on every upload. S3 requires a checksum on every
    /// write that carries a lock, so this also asks for checksums whenever supported.
    pub fn set_object_lock(&mut self, lock: ObjectLock) {
        self.object_lock = Some(lock);
        self.checksum = ChecksumMode::WhenSupported;
    }

    /// Set one option by its name (the `-o` names, which are also the keys of a
    /// destination's `options` table); the error names the option and what it accepts.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let (key, value) = (key.trim(), value.trim());
        if !OPTION_KEYS.iter().any(|(k, _, _)| *k == key) {
            return Err(format!(
                "unknown option {key:?}: known are {}",
                option_key_names()
            ));
        }
        let dur = || {
            humantime::parse_duration(value)
                .map_err(|e| format!("option {key}={value}: {e} (write it like 30s)"))
        };
        match key {
            "s3.region" => self.region = Some(value.to_string()),
            "s3.path-style" => self.path_style = Some(parse_bool(key, value)?),
            "s3.storage-class" => self.storage_class = Some(value.to_string()),
            "s3.ca-bundle" => self.ca_bundle = Some(PathBuf::from(value)),
            "s3.sign-payload" => {
                self.always_sign_payload = match value {
                    "auto" => false,
                    "always" => true,
                    _ => {
                        return Err(format!(
                            "option {key}={value}: expected auto (sign over http only) or always"
                        ));
                    }
                }
            }
            "s3.checksum" => {
                self.checksum = match value {
                    "when-required" => ChecksumMode::WhenRequired,
                    "when-supported" => ChecksumMode::WhenSupported,
                    _ => {
                        return Err(format!(
                            "option {key}={value}: expected when-required or when-supported"
                        ));
                    }
                }
            }
            "s3.connections" => self.connections = parse_count(key, value)? as usize,
            "s3.timeout" => self.timeout = dur()?,
            "s3.retries" => self.attempts = parse_count(key, value)? as u32,
            "s3.retry-delay" => self.retry_delay = dur()?,
            "s3.multipart-threshold" => {
                self.multipart_threshold = parse_size(key, value)?.max(5 * 1024 * 1024)
            }
            "s3.part-size" => self.part_size = parse_size(key, value)?.max(5 * 1024 * 1024),
            "s3.part-concurrency" => self.part_concurrency = parse_count(key, value)? as usize,
            "s3.profile" => self.profile = Some(value.to_string()),
            "s3.object-lock" => self.set_object_lock(ObjectLock::parse(value)?),
            "upload-limit" => self.upload_limit = Some(parse_size(key, value)?).filter(|n| *n > 0),
            "download-limit" => {
                self.download_limit = Some(parse_size(key, value)?).filter(|n| *n > 0)
            }
            // OPTION_KEYS lists a key this match lacks: `every_listed_option_key_is_parsed`
            // fails on it.
            _ => return Err(format!("option {key:?} is listed but not implemented")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_forms() {
        assert_eq!(
            parse_location("/srv/repo").expect("path"),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            parse_location("local:rel/repo").expect("local"),
            Location::Local("rel/repo".into())
        );
        let Location::S3(s) =
            parse_location("s3:http://127.0.0.1:9000/backups/host1/").expect("s3")
        else {
            panic!("not s3")
        };
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("backups", "host1"));
        let Location::S3(s) = parse_location("s3://bucket-1").expect("aws") else {
            panic!("not s3")
        };
        assert_eq!((s.endpoint, s.prefix.as_str()), (None, ""));
        let Location::S3(s) = parse_location("s3:s3.example.com/b12/p").expect("https") else {
            panic!("not s3")
        };
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.com"));
        assert!(parse_location("s3:http://host").is_err());
        assert!(parse_location("s3://UPPER").is_err());
        assert!(parse_location("ftp://x/y").is_err());
    }

    #[test]
    fn every_listed_option_key_is_parsed() {
        let sample = |form: &str| match form {
            "true|false" => "true",
            "when-required|when-supported" => "when-supported",
            "auto|always" => "always",
            "N" => "3",
            "DURATION" => "5s",
            "SIZE" => "8MiB",
            "MODE:DURATION" => "governance:30d",
            _ => "x",
        };
        for (key, form, _) in OPTION_KEYS {
            let mut o = BackendOptions::default();
            o.set(key, sample(form))
                .unwrap_or_else(|e| panic!("{key}={}: {e}", sample(form)));
        }
    }

    #[test]
    fn options_parse_and_name_mistakes() {
        let mut o = BackendOptions::default();
        o.apply(&[
            "s3.region=garage".into(),
            "s3.path-style=false".into(),
            "s3.timeout=5s".into(),
            "s3.part-size=8MiB".into(),
        ])
        .expect("valid");
        assert_eq!(o.region.as_deref(), Some("garage"));
        assert_eq!(o.path_style, Some(false));
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.part_size, 8 << 20);
        let e = o.apply(&["s3.regoin=x".into()]).expect_err("unknown");
        assert!(e.contains("s3.regoin"), "{e}");
        assert!(o.apply(&["s3.retries=0".into()]).is_err());
        assert!(!o.always_sign_payload);
        o.apply(&["s3.sign-payload=always".into()]).expect("valid");
        assert!(o.always_sign_payload);
        let e = o.apply(&["s3.sign-payload=yes".into()]).expect_err("bad");
        assert!(e.contains("auto") && e.contains("always"), "{e}");
        o.apply(&["download-limit=2MiB".into(), "upload-limit=512K".into()])
            .expect("valid");
        assert_eq!(
            (o.download_limit, o.upload_limit),
            (Some(2 << 20), Some(512 << 10))
        );
        o.apply(&["download-limit=0".into()]).expect("valid");
        assert_eq!(o.download_limit, None);
        let e = o.apply(&["download-limit=fast".into()]).expect_err("bad");
        assert!(e.contains("download-limit=fast"), "{e}");
    }
}
