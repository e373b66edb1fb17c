//! Configuration: defaults < file (`--config`) < `TUSKER_*` environment
//! variables < command-line flags.
//!
//! Every option of `serve` is one clap argument; its id (the field name, in
//! snake_case) is also its key in the TOML file. A file value is handed to
//! the same clap parser as if it were a flag, unless the environment or the
//! command line set that option, so every option is validated one way.

use crate::events::{amqp::AmqpConfig, nats::NatsConfig, redis::RedisConfig, EventsConfig};
use crate::hooks::{HookConfig, HookType};
use clap::parser::ValueSource;
use clap::{
    ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

mod load;
pub use load::{load, redact, Action, ConfigError, Loaded};

/// tusker: a resumable upload server (tus 1.0 and the IETF draft) storing on
/// local disk or in object storage.
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
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    Config(ServeArgs),
    /// Apply the PostgreSQL schema migrations of `--meta` and exit (the
    /// server also applies them at start).
    Migrate(ServeArgs),
    /// Copy all upload state (uploads, tombstones, concatenation waiters,
    /// destinations, owed post-finish hooks and broker events) from one
    /// meta store to another, e.g. from a single node's sled to PostgreSQL,
    /// and exit. Stop the server that uses the source first.
    MigrateMeta(MigrateMetaArgs),
}

/// Options of `migrate-meta`.
#[derive(Debug, Clone, Args)]
pub struct MigrateMetaArgs {
    /// The store to copy from: sled:PATH.
    #[arg(long)]
    pub from: String,
    /// The store to copy into: postgres://... (migrated first).
    #[arg(long)]
    pub to: String,
}

/// The forwarded-header scheme a reverse proxy sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto`.
    #[default]
    XForwarded,
    /// RFC 7239 `Forwarded: for=…;host=…;proto=…`.
    Forwarded,
}

/// Where uploads on object storage stage the bytes that do not fill a
/// part yet (docs/storage.md, "Staged tails").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TailStaging {
    /// `local` with the sled meta store (one instance), `bucket` with
    /// PostgreSQL (several).
    Auto,
    /// `fdatasync`'d files under the data directory; parts upload in the
    /// background. Only the instance that staged a tail can continue it.
    Local,
    /// Segment objects in the bucket, visible to every instance. The
    /// default while `local` can hold buffer memory past its budget when
    /// the store stalls (docs/storage.md, "Staged tails").
    #[default]
    Bucket,
}

impl TailStaging {
    /// Whether tails are staged locally, given the meta store's kind.
    pub fn is_local(self, single_instance: bool) -> bool {
        match self {
            TailStaging::Auto => single_instance,
            TailStaging::Local => true,
            TailStaging::Bucket => false,
        }
    }
}

/// Which part sizes the object store accepts (docs/storage.md, "Part
/// policy").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PartPolicyArg {
    /// `equal` on Cloudflare R2 (known by its endpoint), `variable`
    /// everywhere else.
    #[default]
    Auto,
    /// Every part but the last has the same size.
    Equal,
    /// A request's remainder of 5 MiB or more becomes a part of its own.
    Variable,
}

impl PartPolicyArg {
    /// The policy, `None` for `auto` (resolved once the store is known).
    pub fn chosen(self) -> Option<crate::data::object::PartPolicy> {
        use crate::data::object::PartPolicy;
        match self {
            PartPolicyArg::Auto => None,
            PartPolicyArg::Equal => Some(PartPolicy::Equal),
            PartPolicyArg::Variable => Some(PartPolicy::Variable),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Options of the server. Each is also read from `TUSKER_<OPTION>` and from
/// the configuration file (key = the option in snake_case).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with options (keys as the flags in snake_case, e.g.
    /// `base_path = "/files/"`). Environment variables and flags override it.
    #[arg(long, env = "TUSKER_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// With --behind-proxy: the one forwarded-header scheme the proxy sets
    /// (and clears when the client sends it). "x-forwarded" trusts
    /// X-Forwarded-For/-Host/-Proto only; "forwarded" trusts RFC 7239
    /// `Forwarded` only. The other scheme's headers are ignored.
    #[arg(
        long,
        env = "TUSKER_FORWARDED_HEADERS",
        value_enum,
        default_value = "x-forwarded"
    )]
    pub forwarded_headers: ForwardedHeaders,
    /// How long a request waits for an upload busy with another request
    /// (which is asked to stop) before answering 423.
    #[arg(long, env = "TUSKER_LOCK_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// A request body that sends nothing for this long is treated as broken
    /// (the bytes received so far are kept).
    #[arg(long, env = "TUSKER_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_idle_timeout: Duration,
    /// Slowest request body accepted, in bytes per second (suffixes as for
    /// sizes), measured over each --body-idle-timeout spent waiting for the
    /// client; slower bodies are cut like stalled ones (the bytes received
    /// are kept). 0 for no minimum.
    #[arg(long, env = "TUSKER_MIN_BODY_RATE", default_value = "0", value_parser = parse_size)]
    pub min_body_rate: u64,
    /// During a long PATCH, received bytes are made durable and the offset
    /// recorded at least every this many bytes, so a crash loses little.
    #[arg(long, env = "TUSKER_CHECKPOINT_SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub checkpoint_size: u64,
    /// Worker threads (default: one per CPU core).
    #[arg(long, env = "TUSKER_WORKERS")]
    pub workers: Option<usize>,
    /// Where upload state lives: sled:PATH (embedded, one instance; default
    /// sled:DATA_DIR/meta) or postgres://user:password@host/db (shared by
    /// several instances; the schema is migrated at start).
    #[arg(long, env = "TUSKER_META")]
    pub meta: Option<String>,
    /// With a PostgreSQL meta store: how long an upload's lease outlives
    /// its last heartbeat (a crashed instance's uploads are free again
    /// after this).
    #[arg(long, env = "TUSKER_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Where upload bytes go: file://DIR (default: DATA_DIR/uploads),
    /// s3://bucket/prefix, gs://bucket/prefix or az://container/prefix.
    /// Credentials come from the usual AWS_*, GOOGLE_* and AZURE_* variables.
    #[arg(long, env = "TUSKER_STORAGE")]
    pub storage: Option<String>,
    /// With file storage: write whole blocks with direct I/O (O_DIRECT)
    /// where the filesystem allows it, not through the page cache: about
    /// 40 % less CPU per GiB, no dirty pages; single-stream throughput then
    /// depends on the disk's direct writes (see docs/configuration.md).
    #[arg(long, env = "TUSKER_FILE_DIRECT_IO", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub file_direct_io: bool,
    /// With file storage: keep written upload bytes in the page cache. By
    /// default they are written with RWF_DONTCACHE where the kernel takes
    /// it (Linux 6.14+) and dropped once on disk.
    #[arg(long, env = "TUSKER_FILE_KEEP_CACHE", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub file_keep_cache: bool,
    /// With the sled meta store: bound of its page cache, in bytes
    /// (suffixes as for --max-size). Default 16MiB.
    #[arg(long, env = "TUSKER_META_CACHE_SIZE", value_parser = parse_size)]
    pub meta_cache_size: Option<u64>,
    /// With file storage: space kept free on the upload disk, in bytes
    /// (suffixes as for --max-size). A creation whose Upload-Length does
    /// not fit above it is refused with 507, and /readyz fails below it.
    /// Default: 1 GiB or 5 % of the disk, whichever is smaller.
    #[arg(long, env = "TUSKER_MIN_FREE_SPACE", value_parser = parse_size)]
    pub min_free_space: Option<u64>,
    /// S3 endpoint for MinIO, Cloudflare R2 or another S3-compatible server
    /// (otherwise AWS_ENDPOINT; plain http:// is allowed for it).
    #[arg(long, env = "TUSKER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (otherwise AWS_REGION / AWS_DEFAULT_REGION; R2 uses "auto").
    #[arg(long, env = "TUSKER_S3_REGION")]
    pub s3_region: Option<String>,
    /// Further S3 buckets, comma separated, that a pre-create hook may
    /// place an upload in (ChangeFileInfo.Storage.Bucket); same endpoint
    /// and credentials as --storage's bucket, which is always allowed.
    #[arg(long, env = "TUSKER_S3_ALLOWED_BUCKETS", value_delimiter = ',')]
    pub s3_allowed_buckets: Vec<String>,
    /// GET of a finished upload on object storage answers 307 Temporary
    /// Redirect to a presigned URL of its object, after the same access
    /// checks, instead of streaming the bytes through tusker.
    #[arg(long, env = "TUSKER_DOWNLOAD_REDIRECT", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub download_redirect: bool,
    /// How long a presigned download URL stays valid.
    #[arg(long, env = "TUSKER_DOWNLOAD_REDIRECT_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub download_redirect_ttl: Duration,
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
    /// Where object-storage uploads stage bytes short of a part: `local`
    /// (files in the data directory, one instance), `bucket` (segment
    /// objects, several instances; the default), or `auto` (local with
    /// sled, bucket with PostgreSQL).
    #[arg(long, env = "TUSKER_S3_TAIL_STAGING", value_enum, default_value_t = TailStaging::Bucket)]
    pub s3_tail_staging: TailStaging,
    /// Part sizes the object store accepts: `variable` (a request's rest of
    /// 5 MiB or more becomes its own part: S3, MinIO, GCS, Azure), `equal`
    /// (R2, and any store that demands equal parts), or `auto` (equal on
    /// R2's endpoint, variable elsewhere).
    #[arg(long, env = "TUSKER_S3_PART_POLICY", value_enum, default_value_t = PartPolicyArg::Auto)]
    pub s3_part_policy: PartPolicyArg,
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
    /// Publish upload events to NATS JetStream: nats://[user:password@]host:4222
    /// (tls:// for TLS; several servers comma separated). See docs/events.md.
    #[arg(long, env = "TUSKER_EVENTS_NATS")]
    pub events_nats: Option<String>,
    /// JetStream stream of the events (created when missing).
    #[arg(long, env = "TUSKER_EVENTS_NATS_STREAM", default_value = "TUSKER")]
    pub events_nats_stream: String,
    /// Subject prefix: events go to PREFIX.<event type>, e.g. tusker.post-finish.
    #[arg(long, env = "TUSKER_EVENTS_NATS_SUBJECT", default_value = "tusker")]
    pub events_nats_subject: String,
    /// Publish upload events to RabbitMQ: amqp://user:password@host:5672/%2f
    /// (amqps:// for TLS).
    #[arg(long, env = "TUSKER_EVENTS_AMQP")]
    pub events_amqp: Option<String>,
    /// Durable topic exchange of the events (declared when missing); the
    /// routing key is the event type.
    #[arg(long, env = "TUSKER_EVENTS_AMQP_EXCHANGE", default_value = "tusker")]
    pub events_amqp_exchange: String,
    /// Publish upload events to a Redis stream: redis://[:password@]host:6379
    /// (rediss:// for TLS).
    #[arg(long, env = "TUSKER_EVENTS_REDIS")]
    pub events_redis: Option<String>,
    /// Redis stream key of the events.
    #[arg(
        long,
        env = "TUSKER_EVENTS_REDIS_STREAM",
        default_value = "tusker:events"
    )]
    pub events_redis_stream: String,
    /// The Redis stream is trimmed to about this many entries (MAXLEN ~).
    #[arg(long, env = "TUSKER_EVENTS_REDIS_MAXLEN", default_value_t = 100_000)]
    pub events_redis_maxlen: u64,
    /// Events published to the brokers, comma separated (default: all):
    /// post-create, post-receive, post-finish, post-terminate.
    #[arg(long, env = "TUSKER_EVENTS", value_delimiter = ',', value_parser = parse_event_type)]
    pub events: Vec<HookType>,
    /// Best-effort events (post-create, post-receive) waiting per broker;
    /// beyond it they are dropped. post-finish and post-terminate are owed
    /// in the meta store instead.
    #[arg(long, env = "TUSKER_EVENTS_QUEUE", default_value_t = 10_000)]
    pub events_queue: usize,
    /// Limit of one publish to a broker (connecting and its ack included).
    #[arg(long, env = "TUSKER_EVENTS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub events_timeout: Duration,
    /// Attempts per event and broker before a best-effort event is dropped
    /// or an owed one waits for the next outbox pass.
    #[arg(long, env = "TUSKER_EVENTS_RETRIES", default_value_t = 3)]
    pub events_retries: usize,
    /// Log format: text or json (one object per line). Levels come from
    /// RUST_LOG (default "info").
    #[arg(long, env = "TUSKER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long running requests get to finish; running
    /// uploads are asked to persist what they received and answer at once.
    #[arg(long, env = "TUSKER_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// A client must send the complete request headers within this time
    /// ("0s" disables the limit).
    #[arg(long, env = "TUSKER_CLIENT_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub client_request_timeout: Duration,
    /// An idle keep-alive connection is closed after this ("0s": one
    /// request per connection).
    #[arg(long, env = "TUSKER_KEEP_ALIVE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub keep_alive_timeout: Duration,
    /// Largest request body (one PATCH, or a POST with data); 0 for no limit.
    /// A declared Content-Length above it is refused with 413; a chunked body
    /// is cut at the limit (the bytes before it are kept) and answered 413.
    #[arg(long, env = "TUSKER_MAX_BODY_SIZE", default_value = "0", value_parser = parse_size)]
    pub max_body_size: u64,
    /// Requests streaming data into uploads at once (PATCH, POST with a
    /// body); more are answered 503 with Retry-After. 0 for no limit.
    #[arg(long, env = "TUSKER_MAX_CONCURRENT_UPLOADS", default_value_t = 0)]
    pub max_concurrent_uploads: usize,
    /// Requests streaming data into uploads at once from one client address
    /// (behind `--behind-proxy`, the forwarded one); more are answered 429
    /// with Retry-After. 0 for no limit.
    #[arg(long, env = "TUSKER_MAX_UPLOADS_PER_CLIENT", default_value_t = 0)]
    pub max_uploads_per_client: usize,
    /// Uploads one client address may create per minute (POST on the
    /// upload collection, zero-length and final uploads included); more
    /// answer 429. 0 for no limit.
    #[arg(long, env = "TUSKER_MAX_CREATIONS_PER_CLIENT", default_value_t = 600)]
    pub max_creations_per_client: u32,
    /// Finished uploads (zero-length and final uploads included) are
    /// removed this long after they finished (e.g. 7d); "off" (the
    /// default) keeps them until they are terminated.
    #[arg(long, env = "TUSKER_EXPIRE_FINISHED_AFTER", default_value = "off", value_parser = parse_optional_duration)]
    pub expire_finished_after: OptionalDuration,
    /// Require `Authorization: Bearer <JWT>` signed with this shared secret
    /// (HS256, HS384 or HS512) on every upload request.
    #[arg(
        long,
        env = "TUSKER_AUTH_JWT_SECRET",
        conflicts_with = "auth_jwt_public_key"
    )]
    pub auth_jwt_secret: Option<String>,
    /// Require `Authorization: Bearer <JWT>` signed with the private key of
    /// this PEM public key (RSA: RS256/384/512, EC: ES256/384, Ed25519: EdDSA).
    #[arg(long, env = "TUSKER_AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<PathBuf>,
    /// With JWT auth: the token's `iss` must be this.
    #[arg(long, env = "TUSKER_AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// With JWT auth: the token's `aud` must contain this.
    #[arg(long, env = "TUSKER_AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
    /// Longest Upload-Metadata header accepted, in bytes; longer ones (or
    /// more than 256 keys) are answered 431.
    #[arg(long, env = "TUSKER_MAX_METADATA_SIZE", default_value = "4KiB", value_parser = parse_size)]
    pub max_metadata_size: u64,
    /// Serve the browser demo page under /demo/ (off by default). Needs its
    /// JavaScript dependency installed: `npm ci --prefix demo`.
    #[arg(long, env = "TUSKER_DEMO", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
    /// Directory of the demo page (the repository's demo/).
    #[arg(long, env = "TUSKER_DEMO_DIR", default_value = "./demo")]
    pub demo_dir: PathBuf,
}

fn parse_event_type(s: &str) -> Result<HookType, String> {
    HookType::parse(s)
        .filter(|t| crate::events::EVENT_TYPES.contains(t))
        .ok_or_else(|| {
            format!("unknown event {s:?}: expected post-create, post-receive, post-finish or post-terminate")
        })
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
    /// See [`Args::min_free_space`]; `None` for the default.
    pub min_free_space: Option<u64>,
    /// See [`Args::meta_cache_size`]; `None` for the default.
    pub meta_cache_size: Option<u64>,
    pub expire_after: Option<Duration>,
    pub cors_allow_origin: Vec<String>,
    pub behind_proxy: bool,
    pub forwarded_headers: ForwardedHeaders,
    pub lock_timeout: Duration,
    pub body_idle_timeout: Duration,
    /// Slowest body accepted (bytes per second of waiting); `None` for none.
    pub min_body_rate: Option<u64>,
    pub workers: Option<usize>,
    /// Durability checkpoint interval of long PATCHes, in bytes.
    pub checkpoint_size: u64,
    /// How often expired uploads are swept.
    pub sweep_interval: Duration,
    /// `--meta`; `None` is sled under `data_dir/meta`.
    pub meta: Option<String>,
    /// Lease lifetime without heartbeat (PostgreSQL meta store).
    pub lease_ttl: Duration,
    /// `--storage`; `None` is local files under `data_dir/uploads`.
    pub storage: Option<String>,
    pub storage_options: crate::data::open::StorageOptions,
    /// `--download-redirect`: how long presigned download URLs are valid;
    /// `None` streams downloads through tusker.
    pub download_redirect: Option<Duration>,
    /// `--s3-tail-staging`; resolved against the meta store at start.
    pub tail_staging: TailStaging,
    /// Hook delivery; `None` when no receiver is configured.
    pub hooks: Option<HookConfig>,
    /// Event sinks; `None` when no broker is configured.
    pub events: Option<EventsConfig>,
    pub log_format: LogFormat,
    /// How long a graceful stop waits for running requests.
    pub shutdown_timeout: Duration,
    /// Limit for receiving request headers; zero disables it.
    pub client_request_timeout: Duration,
    /// Idle keep-alive connections are closed after this; zero disables
    /// keep-alive.
    pub keep_alive_timeout: Duration,
    /// Per-request body limit; `None` for none.
    pub max_body_size: Option<u64>,
    /// Cap on requests streaming into uploads; `None` for none.
    pub max_concurrent_uploads: Option<usize>,
    /// Per-client cap on requests streaming into uploads; `None` for none.
    pub max_uploads_per_client: Option<usize>,
    /// Creations per client address and minute; `None` for no limit.
    pub max_creations_per_client: Option<u32>,
    /// Finished uploads expire this long after finishing; `None` keeps them.
    pub expire_finished_after: Option<Duration>,
    /// JWT authorization, when a key is configured.
    pub auth: Option<crate::auth::AuthConfig>,
    /// Longest `Upload-Metadata` header, in bytes.
    pub max_metadata_size: usize,
    /// The demo page's directory when `--demo` is on.
    pub demo_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults for a server storing under `data_dir` (used by tests).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::from(ServeArgs::parse_from(["tusker"]));
        config.data_dir = data_dir.into();
        config
    }

    /// Bound of each PostgreSQL call: within a request's lock wait, and
    /// short enough that a lease heartbeat gives up before the lease
    /// expires (half the lease lifetime); at least 500 ms.
    pub fn meta_query_timeout(&self) -> Duration {
        self.lock_timeout
            .min(self.lease_ttl / 2)
            .max(Duration::from_millis(500))
    }
}

/// `ServeArgs` alone, for the second parse that includes the file's values.
#[derive(Parser)]
#[command(name = "tusker")]
pub(crate) struct Only {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

impl ServeArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(args: I) -> Self {
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
    /// Flags to settings, one field at a time in `Config`'s order: a flat
    /// mapping, longer than 100 lines because it reads best whole.
    fn from(a: ServeArgs) -> Self {
        let sweep_interval = a
            .expire_after
            .0
            .map(|d| (d / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)))
            .unwrap_or(Duration::from_secs(60));
        let events = (a.events_nats.is_some()
            || a.events_amqp.is_some()
            || a.events_redis.is_some())
        .then(|| EventsConfig {
            nats: a.events_nats.map(|url| NatsConfig {
                url,
                stream: a.events_nats_stream,
                subject: a.events_nats_subject,
            }),
            amqp: a.events_amqp.map(|url| AmqpConfig {
                url,
                exchange: a.events_amqp_exchange,
            }),
            redis: a.events_redis.map(|url| RedisConfig {
                url,
                stream: a.events_redis_stream,
                max_len: a.events_redis_maxlen,
            }),
            enabled: if a.events.is_empty() {
                crate::events::EVENT_TYPES.into_iter().collect()
            } else {
                a.events.into_iter().collect()
            },
            queue: a.events_queue.max(1),
            timeout: a.events_timeout,
            attempts: a.events_retries.max(1),
            progress_interval: a.progress_interval,
        });
        Config {
            events,
            listen: a.listen,
            base_path: normalize_base_path(&a.base_path),
            data_dir: a.data_dir,
            max_size: a.max_size,
            min_free_space: a.min_free_space,
            meta_cache_size: a.meta_cache_size,
            expire_after: a.expire_after.0,
            cors_allow_origin: a.cors_allow_origin,
            behind_proxy: a.behind_proxy,
            forwarded_headers: a.forwarded_headers,
            lock_timeout: a.lock_timeout,
            body_idle_timeout: a.body_idle_timeout,
            min_body_rate: Some(a.min_body_rate).filter(|&n| n > 0),
            workers: a.workers,
            checkpoint_size: a.checkpoint_size.max(1),
            sweep_interval,
            meta: a.meta,
            lease_ttl: a.lease_ttl,
            storage: a.storage,
            download_redirect: a
                .download_redirect
                .then_some(a.download_redirect_ttl.max(Duration::from_secs(1))),
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
            log_format: a.log_format,
            shutdown_timeout: a.shutdown_timeout,
            client_request_timeout: a.client_request_timeout,
            keep_alive_timeout: a.keep_alive_timeout,
            max_body_size: Some(a.max_body_size).filter(|&n| n > 0),
            max_concurrent_uploads: Some(a.max_concurrent_uploads).filter(|&n| n > 0),
            max_uploads_per_client: Some(a.max_uploads_per_client).filter(|&n| n > 0),
            max_creations_per_client: Some(a.max_creations_per_client).filter(|&n| n > 0),
            expire_finished_after: a.expire_finished_after.0,
            auth: crate::auth::AuthConfig::from_args(
                a.auth_jwt_secret,
                a.auth_jwt_public_key,
                a.auth_jwt_issuer,
                a.auth_jwt_audience,
            ),
            max_metadata_size: usize::try_from(a.max_metadata_size).unwrap_or(usize::MAX),
            demo_dir: a.demo.then_some(a.demo_dir),
            storage_options: crate::data::open::StorageOptions {
                s3_endpoint: a.s3_endpoint,
                s3_region: a.s3_region,
                s3_allowed_buckets: a
                    .s3_allowed_buckets
                    .into_iter()
                    .map(|b| b.trim().to_owned())
                    .filter(|b| !b.is_empty())
                    .collect(),
                file_direct_io: a.file_direct_io,
                file_keep_cache: a.file_keep_cache,
                request_timeout: Some(a.storage_timeout),
                part_policy: a.s3_part_policy.chosen(),
                tuning: crate::data::object::ObjectTuning {
                    part_size: a.part_size,
                    part_concurrency: a.part_concurrency.max(1),
                    buffer_memory: a.buffer_memory,
                    retry_attempts: a.storage_retries.max(1),
                    retry_max_delay: a.storage_retry_max_delay,
                    tail_dir: None,
                    part_policy: crate::data::object::PartPolicy::Equal,
                },
            },
            tail_staging: a.s3_tail_staging,
        }
    }
}

#[cfg(test)]
mod tests;
