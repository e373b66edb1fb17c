//! tusker: a resumable upload server.
//!
//! Layers, top to bottom: [`http`] (actix-web glue) → [`upload`] (the engine)
//! → [`meta`] (upload state) and [`data`] (upload bytes); [`protocol`] is
//! pure header grammar used by the http layer.

pub mod auth;
pub mod config;
pub mod data;
pub mod error;
pub mod events;
pub mod hooks;
pub mod http;
pub mod meta;
pub mod model;
pub mod protocol;
pub mod runtime;
pub mod sys;
pub mod telemetry;
pub mod upload;

use actix_web::web;
use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use upload::{Engine, EngineConfig};

/// Errors while starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open meta store: {0}")]
    Meta(#[from] meta::MetaError),
    #[error("cannot listen for stop requests: {0}")]
    Lease(#[from] meta::LeaseError),
    #[error("cannot open data store: {0}")]
    Data(#[from] data::DataError),
    #[error("cannot set up hooks: {0}")]
    Hooks(#[from] hooks::HookError),
    #[error("cannot start the hook runtime: {0}")]
    HookRuntime(std::io::Error),
    #[error("cannot set up event sinks: {0}")]
    Events(#[from] events::SinkError),
    #[error("cannot set up JWT authorization: {0}")]
    Auth(#[from] auth::AuthSetupError),
    #[error("cannot serve the demo: {0}")]
    Demo(#[from] http::demo::DemoError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A started server. Dropping it does not stop it; call [`RunningServer::stop`]
/// or wait for a signal with [`RunningServer::wait`].
pub struct RunningServer {
    addrs: Vec<SocketAddr>,
    handle: actix_web::dev::ServerHandle,
    server: actix_web::dev::Server,
    sweeper: tokio::task::JoinHandle<()>,
    upkeep: tokio::task::JoinHandle<()>,
    cluster: Vec<tokio::task::JoinHandle<()>>,
    meta: meta::OpenedMeta,
    engine: Arc<Engine>,
}

/// Stops a server gracefully from anywhere (see [`RunningServer::shutdown_handle`]).
#[derive(Clone)]
pub struct ShutdownHandle {
    engine: Arc<Engine>,
    handle: actix_web::dev::ServerHandle,
}

impl ShutdownHandle {
    /// Stops accepting connections, asks running uploads to persist what
    /// they received and answer, and waits for running requests (at most
    /// the configured shutdown timeout). [`RunningServer::wait`] then
    /// flushes the meta store and returns.
    pub async fn graceful(&self) {
        self.engine.stop_all();
        self.handle.stop(true).await;
    }
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// A handle that can stop the server from elsewhere. Its graceful
    /// `stop(true)` waits for running requests without asking uploads to
    /// stop; [`RunningServer::shutdown_handle`] does both.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.handle.clone()
    }

    /// A handle for the graceful shutdown that signals trigger.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            engine: self.engine.clone(),
            handle: self.handle.clone(),
        }
    }

    /// Runs until the server stops (a handle's `stop` or a
    /// [`ShutdownHandle`]; the library installs no signal handler), then
    /// flushes the meta store.
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.sweeper.abort();
        self.engine
            .drain_hooks(std::time::Duration::from_secs(10))
            .await;
        self.engine
            .drain_events(std::time::Duration::from_secs(10))
            .await;
        self.upkeep.abort();
        for task in &self.cluster {
            task.abort();
        }
        if let Err(e) = self.meta.flush().await {
            tracing::error!(error = %e, "final meta flush failed");
        }
        tracing::info!("server stopped");
        result
    }
}

/// How often an instance of several looks for post-finish hooks that no
/// instance is delivering (a crashed instance's).
const OUTBOX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Blocking-pool threads per worker (file writes and syncs, meta store
/// work off the request's thread).
const BLOCKING_THREADS: usize = 32;

/// Binds every address `listen` resolves to.
fn bind(listen: &str) -> Result<Vec<std::net::TcpListener>, StartError> {
    use std::net::ToSocketAddrs;
    let err = |source| StartError::Bind {
        addr: listen.to_owned(),
        source,
    };
    let mut listeners = Vec::new();
    for addr in listen.to_socket_addrs().map_err(err)? {
        let listener = std::net::TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        listeners.push(listener);
    }
    if listeners.is_empty() {
        return Err(err(std::io::ErrorKind::AddrNotAvailable.into()));
    }
    Ok(listeners)
}

/// Opens the stores and binds the listener. Must run inside an actix
/// system (e.g. `#[actix_web::main]` or `actix_rt::System::new().block_on`).
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    if let Some(dir) = &config.demo_dir {
        http::demo::check(dir, &config.base_path)?;
    }
    let verifier = match &config.auth {
        Some(auth) => {
            let verifier = auth::Verifier::new(auth)?;
            tracing::info!(?verifier, "JWT authorization on");
            Some(Arc::new(verifier))
        }
        None => None,
    };
    let meta_url = meta::MetaUrl::parse(config.meta.as_deref(), &config.data_dir)?;
    let meta = meta::OpenedMeta::open(
        &meta_url,
        config.lease_ttl,
        config.meta_query_timeout(),
        config.meta_cache_size,
    )
    .await?;
    let mut storage_options = config.storage_options.clone();
    if config
        .tail_staging
        .is_local(matches!(meta_url, meta::MetaUrl::Sled(_)))
    {
        storage_options.tuning.tail_dir = Some(config.data_dir.join("object-tails"));
    }
    let data = data::open::open(
        config.storage.as_deref(),
        &config.data_dir,
        &storage_options,
    )?;
    if config.download_redirect.is_some() && data.kind() == "file" {
        return Err(StartError::Data(data::DataError::Backend(
            "--download-redirect needs object storage (s3://, gs:// or az://)".into(),
        )));
    }
    let metrics = telemetry::Metrics::new();
    let leases = meta.leases();
    let engine = Arc::new(build_engine(
        &config,
        &meta,
        data,
        &metrics,
        leases.as_ref(),
    )?);
    let cluster = match &leases {
        Some(leases) => cluster_tasks(&engine, leases).await?,
        None => Vec::new(),
    };
    match engine.resume_finish_hooks().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "re-delivering owed post-finish hooks"),
        Err(e) => tracing::error!(error = %e, "listing owed post-finish hooks failed"),
    }
    let state = app_state(&config, engine.clone(), metrics.clone(), verifier);
    let (server, addrs) = serve(&config, state, &metrics)?;
    let sweeper = tokio::task::spawn_local(metrics.instrument(upload::expiry::run_sweeper(
        engine.clone(),
        config.sweep_interval,
    )));
    let upkeep = tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics.upkeep();
        }
    });
    for addr in &addrs {
        tracing::info!(%addr, base_path = %config.base_path, data_dir = %config.data_dir.display(), "tusker listening");
        if config.demo_dir.is_some() {
            tracing::info!(url = %format!("http://{addr}{}/", http::demo::PREFIX), "demo page");
        }
    }
    Ok(RunningServer {
        addrs,
        handle: server.handle(),
        server,
        sweeper,
        upkeep,
        cluster,
        meta,
        engine,
    })
}

/// The engine for `config` on the opened stores, with its hooks, event
/// sinks and, for a shared meta store, leases.
fn build_engine(
    config: &Config,
    meta: &meta::OpenedMeta,
    data: Arc<dyn data::DataStore>,
    metrics: &telemetry::Metrics,
    leases: Option<&Arc<dyn meta::LeaseStore>>,
) -> Result<Engine, StartError> {
    let mut engine = Engine::new(
        meta.store(),
        data,
        EngineConfig {
            max_size: config.max_size,
            min_free_space: config.min_free_space,
            expire_after: config.expire_after,
            expire_finished_after: config.expire_finished_after,
            max_concurrent_assemblies: upload::DEFAULT_ASSEMBLIES,
            lock_timeout: config.lock_timeout,
            body_idle_timeout: config.body_idle_timeout,
            min_body_rate: config.min_body_rate,
            checkpoint_bytes: config.checkpoint_size,
        },
    );
    if let Some(hooks) = &config.hooks {
        tracing::info!(url = %hooks.url, events = ?hooks.enabled, "hooks enabled");
        let hook_metrics = metrics.clone();
        let init: upload::ThreadInit = Arc::new(move || hook_metrics.install_on_current_thread());
        engine = engine
            .with_hooks(Arc::new(hooks::Hooks::new(hooks.clone())?), Some(init))
            .map_err(StartError::HookRuntime)?;
    }
    if let Some(events) = &config.events {
        let brokers: Vec<&str> = [
            events.nats.as_ref().map(|_| "nats"),
            events.amqp.as_ref().map(|_| "amqp"),
            events.redis.as_ref().map(|_| "redis"),
        ]
        .into_iter()
        .flatten()
        .collect();
        tracing::info!(?brokers, events = ?events.enabled, "event sinks enabled");
        let event_metrics = metrics.clone();
        let init: upload::ThreadInit = Arc::new(move || event_metrics.install_on_current_thread());
        engine = engine.with_events(Arc::new(events::Events::start(events, Some(init))?));
    }
    if let Some(leases) = leases {
        tracing::info!(
            instance = leases.instance(),
            "shared meta store: cross-instance leases on"
        );
        engine = engine.with_leases(leases.clone());
    }
    Ok(engine)
}

/// With a shared meta store: the tasks that take stop requests from other
/// instances and take over the owed post-finish hooks of crashed ones.
async fn cluster_tasks(
    engine: &Arc<Engine>,
    leases: &Arc<dyn meta::LeaseStore>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StartError> {
    let mut cluster = Vec::new();
    // Other instances ask this one to stop a request through here.
    let mut stops = leases.stop_requests().await?;
    let target = engine.clone();
    cluster.push(tokio::task::spawn_local(async move {
        while let Some(id) = stops.recv().await {
            tracing::debug!(upload = %id, "another instance asks to stop a request");
            target.signal_stop(&id);
        }
    }));
    // Owed post-finish hooks of crashed instances are taken over.
    let outbox = engine.clone();
    cluster.push(tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(OUTBOX_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = outbox.resume_finish_hooks().await {
                tracing::warn!(error = %e, "outbox pass failed");
            }
        }
    }));
    Ok(cluster)
}

/// What every worker's handlers share.
fn app_state(
    config: &Config,
    engine: Arc<Engine>,
    metrics: telemetry::Metrics,
    verifier: Option<Arc<auth::Verifier>>,
) -> web::Data<http::AppState> {
    web::Data::new(http::AppState {
        engine,
        settings: http::HttpSettings {
            base_path: config.base_path.clone(),
            behind_proxy: config.behind_proxy,
            forwarded: config.forwarded_headers,
            cors_allow_origin: config.cors_allow_origin.clone(),
            max_body_size: config.max_body_size,
            max_metadata_size: config.max_metadata_size,
            demo_dir: config.demo_dir.clone(),
            download_redirect: config.download_redirect,
        },
        metrics,
        upload_slots: config
            .max_concurrent_uploads
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
        client_slots: config
            .max_uploads_per_client
            .map(|n| Arc::new(http::slots::ClientSlots::new(n))),
        creation_limit: config
            .max_creations_per_client
            .map(|n| Arc::new(http::admission::CreationLimit::new(n))),
        auth: verifier,
    })
}

/// Binds the listeners and starts the HTTP server on them.
fn serve(
    config: &Config,
    state: web::Data<http::AppState>,
    metrics: &telemetry::Metrics,
) -> Result<(actix_web::dev::Server, Vec<SocketAddr>), StartError> {
    let listeners = bind(&config.listen)?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let mut builder = actix_server::Server::build();
    // Lets idle keep-alive connections close at once on a graceful stop.
    let shutdown = builder.graceful_shutdown_signal();
    // Signals are handled by the binary (graceful upload stop, then exit).
    builder = builder
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs());
    if let Some(n) = config.workers {
        builder = builder.workers(n.max(1));
    }
    // actix-server's default is 512 blocking threads over all workers.
    // With thousands of uploads finishing together every one of them was
    // started, each with its stack and malloc state, while their syncs
    // queue at the same disk anyway.
    builder = builder.worker_max_blocking_threads(BLOCKING_THREADS);
    for listener in listeners {
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let (state, shutdown, worker_metrics) = (state.clone(), shutdown.clone(), metrics.clone());
        let timeouts = http::ConnectionTimeouts {
            client_request: config.client_request_timeout,
            keep_alive: config.keep_alive_timeout,
        };
        builder = builder
            .listen("tusker", listener, move || {
                // Runs on each worker thread as it starts.
                worker_metrics.install_on_current_thread();
                http::service(state.clone(), addr, shutdown.clone(), timeouts)
            })
            .map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })?;
    }
    Ok((builder.run(), addrs))
}
