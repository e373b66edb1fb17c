//! Command line and environment configuration.

use crate::hooks::{HookConfig, HookType};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// tusker: a resumable upload server (tus 1.0) storing on local disk.
#[derive(Debug, Parser)]
#[command(
    name = "tusker",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the upload server (the default).
    Serve(ServeArgs),
}

/// Options of the server. Each is also read from `TUSKER_<OPTION>`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port).
    #[arg(long, env = "TUSKER_LISTEN", default_value = "127.0.0.1:1080")]
    pub listen: String,
    /// URL path under which uploads live.
    #[arg(long, env = "TUSKER_BASE_PATH", default_value = "/files/")]
    pub base_path: String,
    /// Directory for state (DIR/meta, sled) and bytes (DIR/uploads).
    #[arg(long, env = "TUSKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Largest upload accepted, in bytes (suffixes K, M, G, T, KiB, MiB, GiB,
    /// TiB allowed); advertised as Tus-Max-Size. Unlimited when unset.
    #[arg(long, env = "TUSKER_MAX_SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Unfinished uploads are removed this long after their last write
    /// (e.g. 24h, 90m); "off" keeps them forever.
    #[arg(long, env = "TUSKER_EXPIRE_AFTER", default_value = "24h", value_parser = parse_optional_duration)]
    pub expire_after: OptionalDuration,
    /// Origins allowed by CORS, comma separated; "*" allows any.
    #[arg(
        long,
        env = "TUSKER_CORS_ALLOW_ORIGIN",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_allow_origin: Vec<String>,
    /// Trust Forwarded / X-Forwarded-Host / X-Forwarded-Proto from a reverse
    /// proxy when building upload URLs.
    #[arg(long, env = "TUSKER_BEHIND_PROXY", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub behind_proxy: bool,
    /// How long a request waits for an upload busy with another request
    /// (which is asked to stop) before answering 423.
    #[arg(long, env = "TUSKER_LOCK_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// A request body that sends nothing for this long is treated as broken
    /// (the bytes received so far are kept).
    #[arg(long, env = "TUSKER_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Duration,
    /// Worker threads (default: one per CPU core).
    #[arg(long, env = "TUSKER_WORKERS")]
    pub workers: Option<usize>,
    /// Where upload bytes go: file://DIR (default: DATA_DIR/uploads),
    /// s3://bucket/prefix, gs://bucket/prefix or az://container/prefix.
    /// Credentials come from the usual AWS_*, GOOGLE_* and AZURE_* variables.
    #[arg(long, env = "TUSKER_STORAGE")]
    pub storage: Option<String>,
    /// S3 endpoint for MinIO, Cloudflare R2 or another S3-compatible server
    /// (otherwise AWS_ENDPOINT; plain http:// is allowed for it).
    #[arg(long, env = "TUSKER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (otherwise AWS_REGION / AWS_DEFAULT_REGION; R2 uses "auto").
    #[arg(long, env = "TUSKER_S3_REGION")]
    pub s3_region: Option<String>,
    /// Object-storage part size; at least 5MiB, raised per upload so the
    /// declared length fits in 10,000 parts. Deferred-length uploads use it
    /// as is, so they can reach 10,000 x this size.
    #[arg(long, env = "TUSKER_PART_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Parts of one upload sent to object storage at once.
    #[arg(long, env = "TUSKER_PART_CONCURRENCY", default_value_t = 4)]
    pub part_concurrency: usize,
    /// Memory for part buffers across all uploads; beyond it, request bodies
    /// are read more slowly instead of buffering more.
    #[arg(long, env = "TUSKER_BUFFER_MEMORY", default_value = "512MiB", value_parser = parse_size)]
    pub buffer_memory: u64,
    /// Attempts per object-storage call before the request fails with 503.
    #[arg(long, env = "TUSKER_STORAGE_RETRIES", default_value_t = 6)]
    pub storage_retries: usize,
    /// Longest pause between two attempts (exponential backoff with jitter).
    #[arg(long, env = "TUSKER_STORAGE_RETRY_MAX_DELAY", default_value = "8s", value_parser = humantime::parse_duration)]
    pub storage_retry_max_delay: Duration,
    /// Timeout of one object-storage request (e.g. one part upload).
    #[arg(long, env = "TUSKER_STORAGE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub storage_timeout: Duration,
    /// URL that receives hook events as JSON POSTs in the format of tusd's
    /// HTTP hooks.
    #[arg(long, env = "TUSKER_HOOKS_HTTP")]
    pub hooks_http: Option<String>,
    /// Events sent to the hook receiver, comma separated (default: all but
    /// pre-access): pre-create, post-create, post-receive, pre-finish,
    /// post-finish, pre-terminate, post-terminate, pre-access.
    #[arg(long, env = "TUSKER_HOOKS_ENABLED_EVENTS", value_delimiter = ',', value_parser = parse_hook_type)]
    pub hooks_enabled_events: Vec<HookType>,
    /// Client request header copied onto hook requests (repeatable), e.g.
    /// Authorization.
    #[arg(long, env = "TUSKER_HOOKS_FORWARD_HEADER", value_delimiter = ',')]
    pub hooks_forward_header: Vec<String>,
    /// Timeout of one hook call; a pre-hook never holds a request longer.
    #[arg(long, env = "TUSKER_HOOKS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub hooks_timeout: Duration,
    /// Attempts to deliver a post-hook (exponential backoff with jitter).
    #[arg(long, env = "TUSKER_HOOKS_RETRIES", default_value_t = 5)]
    pub hooks_retries: usize,
    /// post-receive hooks at most this often per upload.
    #[arg(long, env = "TUSKER_PROGRESS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,
}

fn parse_hook_type(s: &str) -> Result<HookType, String> {
    HookType::parse(s).ok_or_else(|| format!("unknown hook event {s:?}"))
}

/// A duration that may be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    match s.trim() {
        "off" | "never" | "0" => Ok(OptionalDuration(None)),
        s => humantime::parse_duration(s)
            .map(|d| OptionalDuration(Some(d)))
            .map_err(|e| e.to_string()),
    }
}

/// Parses a byte size: `1048576`, `10M` (decimal), `10MiB` (binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub base_path: String,
    pub data_dir: PathBuf,
    pub max_size: Option<u64>,
    pub expire_after: Option<Duration>,
    pub cors_allow_origin: Vec<String>,
    pub behind_proxy: bool,
    pub lock_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub workers: Option<usize>,
    /// How often expired uploads are swept.
    pub sweep_interval: Duration,
    /// `--storage`; `None` is local files under `data_dir/uploads`.
    pub storage: Option<String>,
    pub storage_options: crate::data::open::StorageOptions,
    /// Hook delivery; `None` when no receiver is configured.
    pub hooks: Option<HookConfig>,
}

impl Config {
    /// Defaults for a server storing under `data_dir` (used by tests).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::from(ServeArgs::parse_from(["tusker"]));
        config.data_dir = data_dir.into();
        config
    }
}

impl ServeArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(args: I) -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::parse_from(args).serve
    }
}

/// `/files` → `/files/`; always starts and ends with `/`.
pub fn normalize_base_path(p: &str) -> String {
    let trimmed = p.trim().trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}/")
    }
}

impl From<ServeArgs> for Config {
    fn from(a: ServeArgs) -> Self {
        let sweep_interval = a
            .expire_after
            .0
            .map(|d| (d / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)))
            .unwrap_or(Duration::from_secs(60));
        Config {
            listen: a.listen,
            base_path: normalize_base_path(&a.base_path),
            data_dir: a.data_dir,
            max_size: a.max_size,
            expire_after: a.expire_after.0,
            cors_allow_origin: a.cors_allow_origin,
            behind_proxy: a.behind_proxy,
            lock_timeout: a.lock_timeout,
            body_idle_timeout: a.body_idle_timeout,
            workers: a.workers,
            sweep_interval,
            storage: a.storage,
            hooks: a.hooks_http.map(|url| HookConfig {
                url,
                enabled: if a.hooks_enabled_events.is_empty() {
                    HookType::DEFAULT.into_iter().collect()
                } else {
                    a.hooks_enabled_events.into_iter().collect()
                },
                forward_headers: a.hooks_forward_header,
                timeout: a.hooks_timeout,
                post_attempts: a.hooks_retries.max(1),
                progress_interval: a.progress_interval,
            }),
            storage_options: crate::data::open::StorageOptions {
                s3_endpoint: a.s3_endpoint,
                s3_region: a.s3_region,
                request_timeout: Some(a.storage_timeout),
                tuning: crate::data::object::ObjectTuning {
                    part_size: a.part_size,
                    part_concurrency: a.part_concurrency.max(1),
                    buffer_memory: a.buffer_memory,
                    retry_attempts: a.storage_retries.max(1),
                    retry_max_delay: a.storage_retry_max_delay,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn base_paths() {
        assert_eq!(normalize_base_path("/files/"), "/files/");
        assert_eq!(normalize_base_path("files"), "/files/");
        assert_eq!(normalize_base_path("/"), "/");
        assert_eq!(normalize_base_path("/a/b"), "/a/b/");
    }

    #[test]
    fn defaults() {
        let c = Config::new("/tmp/x");
        assert_eq!(c.listen, "127.0.0.1:1080");
        assert_eq!(c.base_path, "/files/");
        assert_eq!(c.expire_after, Some(Duration::from_secs(86400)));
        assert!(!c.behind_proxy);
    }

    #[test]
    fn cli_parses() {
        Cli::parse_from([
            "tusker",
            "--listen",
            "0.0.0.0:1",
            "--max-size",
            "1GiB",
            "--expire-after",
            "off",
        ]);
        let cli = Cli::parse_from(["tusker", "serve", "--behind-proxy"]);
        assert!(matches!(cli.command, Some(Command::Serve(a)) if a.behind_proxy));
    }
}
