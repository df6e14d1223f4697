//! `Server`: opens the store, builds the managers, starts every listener, and shuts down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::core::Core;
use crate::core::modules::ModuleError;
use crate::storage::{StorageError, Store};
use crate::tls::{self, TlsError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// TLS could not be set up.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration names a module or option no module has.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A configured module failed to load.
    #[error("{0}")]
    Module(#[from] ModuleError),
    /// The cluster could not be joined (`[cluster] nats_url` unusable).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The control socket could not be opened.
    #[error("control socket: {0}")]
    Control(std::io::Error),
}

/// A running server.
pub struct Server {
    /// The shared managers.
    pub core: Arc<Core>,
    /// Bound STARTTLS client addresses (useful with port 0).
    pub c2s_addrs: Vec<SocketAddr>,
    /// Bound direct-TLS client addresses.
    pub direct_tls_addrs: Vec<SocketAddr>,
    /// Bound STARTTLS server-to-server addresses (`s2s.listen`).
    pub s2s_addrs: Vec<SocketAddr>,
    /// Bound direct-TLS server-to-server addresses (`s2s.direct_tls_listen`).
    pub s2s_direct_tls_addrs: Vec<SocketAddr>,
    /// Bound HTTP addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// Bound HTTPS addresses (`http.tls_listen`).
    pub https_addrs: Vec<SocketAddr>,
    /// The certificate in use.
    pub cert: tls::CertPaths,
    tracker: TaskTracker,
}

async fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, StartError> {
    let mut out = Vec::new();
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
        out.push(l);
    }
    Ok(out)
}

/// Creates the data directory (certificates and the control socket live there).
fn create_data_dir(config: &Config) -> Result<(), StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })
}

/// One line per listener, then where the data and the certificate are.
fn log_startup(
    data_dir: &std::path::Path,
    cert: &tls::CertPaths,
    self_signed: bool,
    listeners: &[(&str, &[SocketAddr])],
) {
    for (what, addrs) in listeners {
        for addr in *addrs {
            tracing::info!("listening for {what} on {addr}");
        }
    }
    tracing::info!("data directory {}", data_dir.display());
    let kind = if self_signed {
        "self-signed"
    } else {
        "configured"
    };
    tracing::info!(
        "certificate {} ({kind}), key {}",
        cert.certificate.display(),
        cert.key.display()
    );
}

impl Server {
    /// Starts a server for `config`.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        config.check_modules(&crate::modules::BUILTIN.catalog())?;
        create_data_dir(&config)?;
        let store_dir = config.store_dir();
        let storage = config.storage.clone();
        let store =
            tokio::task::spawn_blocking(move || Store::open_configured(&store_dir, &storage))
                .await
                .map_err(|e| StartError::Storage(StorageError::Io(e.to_string())))??;
        Server::start_with_store(config, store).await
    }

    /// Starts a server for `config` on an already open `store` (e.g. a backend wrapped by a
    /// test) instead of opening the sled store in the data directory.
    pub async fn start_with_store(config: Config, store: Store) -> Result<Server, StartError> {
        config.check_modules(&crate::modules::BUILTIN.catalog())?;
        create_data_dir(&config)?;
        let data_dir = config.data_dir.clone();
        let hosts: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
        let cert = tls::ensure_certificate(
            config
                .tls
                .certificate
                .as_deref()
                .zip(config.tls.key.as_deref()),
            &data_dir,
            &hosts,
        )?;
        let acceptor = TlsAcceptor::from(tls::server_config(&cert)?);
        let client_tls = crate::c2s::ClientTls {
            acceptor: acceptor.clone(),
            end_point: tls::end_point_of(&cert)?,
        };
        // Read before any listener binds: the system trust store can take a moment to load.
        let trust = crate::s2s::cert::Trust::load(&config.s2s)?;
        let c2s = bind_all(&config.c2s.listen).await?;
        let direct = bind_all(&config.c2s.direct_tls_listen).await?;
        let s2s = bind_all(&config.s2s.listen).await?;
        let s2s_direct = bind_all(&config.s2s.direct_tls_listen).await?;
        let http = bind_all(&config.http.listen).await?;
        let https = bind_all(&config.http.tls_listen).await?;
        let core = Core::new(config, store, crate::modules::BUILTIN)?;
        let tracker = core.tasks.clone();
        let addrs = |ls: &[TcpListener]| {
            ls.iter()
                .filter_map(|l| l.local_addr().ok())
                .collect::<Vec<_>>()
        };
        let (c2s_addrs, direct_tls_addrs, http_addrs) = (addrs(&c2s), addrs(&direct), addrs(&http));
        let _ = core.http_bound.set(http_addrs.clone());
        // The admin allowlists are read once, before the HTTP listeners serve: requests read memory.
        core.allowlists.load().await?;
        for l in c2s {
            tracker.spawn(crate::c2s::serve(
                core.clone(),
                l,
                client_tls.clone(),
                false,
                tracker.clone(),
            ));
        }
        for l in direct {
            tracker.spawn(crate::c2s::serve(
                core.clone(),
                l,
                client_tls.clone(),
                true,
                tracker.clone(),
            ));
        }
        let (s2s_addrs, s2s_direct_tls_addrs) = (addrs(&s2s), addrs(&s2s_direct));
        let federation = crate::s2s::S2s::new(&core, &cert, trust)?;
        let _ = core.federation.set(federation.clone());
        for l in s2s {
            tracker.spawn(federation.clone().serve(l, false));
        }
        for l in s2s_direct {
            tracker.spawn(federation.clone().serve(l, true));
        }
        let https_addrs = addrs(&https);
        let web =
            crate::http::Http::new(core.clone()).with_routes(crate::web::routes(core.clone()));
        for l in http {
            tracker.spawn(web.clone().serve(l));
        }
        for l in https {
            tracker.spawn(web.clone().serve_tls(l, acceptor.clone()));
        }
        // A node of a cluster joins it before it serves (NATS itself may come later).
        crate::cluster::Node::start(&core).await?;
        let control = crate::control::listen(&data_dir).map_err(StartError::Control)?;
        tracker.spawn(crate::control::serve(core.clone(), control));
        core.activate();
        let self_signed = core.config.load().tls.certificate.is_none();
        log_startup(
            &data_dir,
            &cert,
            self_signed,
            &[
                ("clients (STARTTLS)", &c2s_addrs),
                ("clients (direct TLS)", &direct_tls_addrs),
                ("servers (STARTTLS)", &s2s_addrs),
                ("servers (direct TLS)", &s2s_direct_tls_addrs),
                ("HTTP", &http_addrs),
                ("HTTPS", &https_addrs),
            ],
        );
        tracing::info!(hosts = ?hosts, version = env!("CARGO_PKG_VERSION"), "oxpecker started");
        Ok(Server {
            core,
            c2s_addrs,
            direct_tls_addrs,
            s2s_addrs,
            s2s_direct_tls_addrs,
            http_addrs,
            https_addrs,
            cert,
            tracker,
        })
    }

    /// Stops accepting, closes every session with `system-shutdown`, waits for tasks, flushes the store.
    pub async fn shutdown(self) {
        let reason = self.core.stop.reason().filter(|r| !r.is_empty());
        self.core
            .deactivate(reason.as_deref().unwrap_or("shutdown"));
        self.core.shutdown.cancel();
        self.core.sessions.close_all(self.core.shutdown_error());
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        if let Err(e) = self.core.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        crate::control::remove(&self.core.config.load().data_dir);
        tracing::info!("oxpecker stopped");
    }
}
