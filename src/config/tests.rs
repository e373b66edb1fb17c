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
fn redaction() {
    assert_eq!(redact("hooks_secret", "abc"), "REDACTED");
    assert_eq!(redact("api_token", "abc"), "REDACTED");
    assert_eq!(
        redact("meta", "postgres://tusker:pw@db:5432/tusker"),
        "postgres://tusker:REDACTED@db:5432/tusker"
    );
    assert_eq!(redact("x", "https://tok@h/p@q"), "https://REDACTED@h/p@q");
    assert_eq!(redact("x", "s3://bucket/a@b"), "s3://bucket/a@b");
    assert_eq!(redact("listen", "0.0.0.0:1080"), "0.0.0.0:1080");
}

#[test]
fn meta_options_and_subcommands() {
    let loaded = load([
        "tusker",
        "--meta",
        "postgres://u:pw@db/t",
        "--lease-ttl",
        "4s",
    ])
    .unwrap();
    assert_eq!(loaded.action, Action::Serve);
    let config = Config::from(loaded.args);
    assert_eq!(config.meta.as_deref(), Some("postgres://u:pw@db/t"));
    assert_eq!(config.lease_ttl, Duration::from_secs(4));
    assert_eq!(Config::new("/d").meta, None);

    let loaded = load(["tusker", "migrate", "--meta", "postgres://db/t"]).unwrap();
    assert_eq!(loaded.action, Action::Migrate);
    let loaded = load([
        "tusker",
        "migrate-meta",
        "--from",
        "sled:/d/meta",
        "--to",
        "postgres://db/t",
    ])
    .unwrap();
    assert_eq!(
        loaded.action,
        Action::MigrateMeta {
            from: "sled:/d/meta".into(),
            to: "postgres://db/t".into()
        }
    );
    assert!(load(["tusker", "migrate-meta", "--from", "sled:/d"]).is_err());
}

#[test]
fn event_options() {
    assert!(Config::new("/d").events.is_none());
    let loaded = load([
        "tusker",
        "--events-redis",
        "redis://:pw@127.0.0.1:6379",
        "--events-amqp",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "--events",
        "post-finish,post-terminate",
        "--events-redis-maxlen",
        "50",
    ])
    .unwrap();
    assert!(loaded
        .to_toml()
        .contains("events_amqp = \"amqp://guest:REDACTED@"));
    let events = Config::from(loaded.args).events.unwrap();
    assert!(events.nats.is_none());
    assert_eq!(events.redis.as_ref().unwrap().max_len, 50);
    assert_eq!(events.redis.unwrap().stream, "tusker:events");
    assert_eq!(events.amqp.unwrap().exchange, "tusker");
    assert_eq!(
        events.enabled.into_iter().collect::<Vec<_>>(),
        vec![HookType::PostFinish, HookType::PostTerminate]
    );
    // Pre-hooks are answers, not notifications.
    assert!(load([
        "tusker",
        "--events-nats",
        "nats://h",
        "--events",
        "pre-create"
    ])
    .is_err());
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
