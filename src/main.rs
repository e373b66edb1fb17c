use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tusker::config::{self, Action, Config, ConfigError, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Exit code when a second signal cuts the graceful shutdown short:
/// 128 + the signal number, as shells report a death by that signal.
fn forced_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Waits for SIGTERM or SIGINT; returns the signal number.
async fn next_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> i32 {
    tokio::select! {
        _ = term.recv() => 15,
        _ = int.recv() => 2,
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let timeout = config.shutdown_timeout;
    let server = tusker::start(config).await?;
    let shutdown = server.shutdown_handle();
    actix_web::rt::spawn(async move {
        let first = next_signal(&mut term, &mut int).await;
        tracing::info!(
            signal = first,
            timeout_secs = timeout.as_secs(),
            "shutting down: no new connections; running uploads persist what they received (a second signal exits at once)"
        );
        tokio::select! {
            _ = shutdown.graceful() => {}
            second = next_signal(&mut term, &mut int) => {
                tracing::warn!(signal = second, "second signal: exiting without waiting");
                std::process::exit(forced_exit_code(second));
            }
        }
    });
    server.wait().await?;
    Ok(())
}

/// Runs an administrative command to completion.
fn admin(
    task: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tusker failed");
            ExitCode::FAILURE
        }
    }
}

/// `tusker migrate`: brings the configured meta store's schema up to date.
async fn migrate(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let url = tusker::meta::MetaUrl::parse(config.meta.as_deref(), &config.data_dir)?;
    match url {
        tusker::meta::MetaUrl::Postgres(_) => {
            tusker::meta::OpenedMeta::open(
                &url,
                config.lease_ttl,
                config.meta_query_timeout(),
                config.meta_cache_size,
            )
            .await?;
            tracing::info!("schema migrations applied");
        }
        tusker::meta::MetaUrl::Sled(_) => {
            tracing::info!("sled needs no migrations; nothing to do")
        }
    }
    Ok(())
}

/// `tusker migrate-meta`: copies a sled store into PostgreSQL.
async fn migrate_meta(from: String, to: String) -> Result<(), Box<dyn std::error::Error>> {
    let report = tusker::meta::migrate_meta(&from, &to).await?;
    tracing::info!(
        uploads = report.uploads,
        tombstones = report.tombstones,
        waiters = report.waiters,
        destinations = report.destinations,
        owed_post_finish = report.outbox,
        owed_events = report.event_debts,
        "meta store copied"
    );
    Ok(())
}

/// glibc's allocator gives freed memory back to the kernel once 128 KiB sit
/// free at the top of a heap, and serves blocks of 128 KiB and more with a
/// fresh `mmap` each. A streaming PATCH frees a batch of received chunks
/// (about 1 MiB) every few hundred microseconds and actix-http allocates
/// read buffers of up to 128 KiB, so the same memory went back and forth:
/// some 50,000 page faults per GiB received. Keeping up to 8 MiB free per
/// heap and mapping only blocks of 4 MiB and more removes nearly all of them
/// (a fifth less CPU per GiB in the single-stream benchmark).
///
/// Skipped when the operator sets either threshold through the environment
/// (`GLIBC_TUNABLES`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`).
///
/// glibc also gives every thread that allocates while the others hold
/// theirs an arena (heap) of its own, up to 8 per core, and each arena
/// keeps up to the trim threshold free. The blocking pool's threads
/// (file writes, syncs, meta store reads) are many when thousands of
/// uploads finish together, so the arenas are capped at [`ARENAS`],
/// unless `MALLOC_ARENA_MAX` or the `arena_max` tunable says otherwise.
/// Returns whether the settings were applied.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() -> bool {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    let tunables = tunables.to_string_lossy();
    let tuned_by_env = ["trim_threshold", "mmap_threshold"]
        .iter()
        .any(|t| tunables.contains(t))
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
    let arenas_by_env =
        tunables.contains("arena_max") || std::env::var_os("MALLOC_ARENA_MAX").is_some();
    // SAFETY: mallopt only changes allocator parameters; it runs before any
    // thread is started.
    unsafe {
        if !arenas_by_env {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
        if tuned_by_env {
            return false;
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) == 1
    }
}

/// malloc arenas at most (see [`tune_allocator`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() -> bool {
    false
}

fn main() -> ExitCode {
    let allocator_tuned = tune_allocator();
    let loaded = match config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            init_logging(LogFormat::Text);
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    if loaded.action == Action::PrintConfig {
        let mut out = std::io::stdout().lock();
        return match out.write_all(loaded.to_toml().as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    init_logging(loaded.args.log_format);
    tracing::debug!(allocator_tuned, "malloc trim and mmap thresholds");
    match loaded.action.clone() {
        Action::Migrate => return admin(migrate(Config::from(loaded.args))),
        Action::MigrateMeta { from, to } => return admin(migrate_meta(from, to)),
        Action::Serve | Action::PrintConfig => {}
    }
    let config = Config::from(loaded.args);
    let result = actix_web::rt::System::new().block_on(serve(config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tusker failed");
            ExitCode::FAILURE
        }
    }
}
