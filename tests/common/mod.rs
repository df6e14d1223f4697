//! Test harness: a real server in-process on ephemeral ports with a temporary data dir, and a raw
//! XML client over real sockets (plaintext, STARTTLS, SASL, bind).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oxpecker::Server;
use oxpecker::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server running for one test.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

/// The config used by tests: loopback, port 0 everywhere, a temp data dir, cheap SCRAM.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.data_dir = dir.to_path_buf();
    cfg.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.c2s.direct_tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.s2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    // Tests never ask a real resolver: remote domains are found through [s2s.hosts] or a test DNS server.
    cfg.s2s.dns = false;
    cfg.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.auth.scram_iterations = 4096;
    cfg.storage.cache_capacity_mb = 8;
    cfg
}

impl TestServer {
    /// Starts a server on defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `f` adjusts the test config.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        f(&mut config);
        config.validate().unwrap();
        let server = Server::start(config.clone()).await.unwrap();
        TestServer {
            server: Some(server),
            dir,
            config,
        }
    }

    /// Restarts on the same data dir (and same config, new ports).
    pub async fn restart(mut self) -> Self {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let server = Server::start(self.config.clone()).await.unwrap();
        self.server = Some(server);
        self
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn c2s(&self) -> SocketAddr {
        self.server().c2s_addrs[0]
    }

    pub fn direct_tls(&self) -> SocketAddr {
        self.server().direct_tls_addrs[0]
    }

    pub fn http(&self) -> SocketAddr {
        self.server().http_addrs[0]
    }

    /// The PEM of the server's (self-signed) certificate, for clients to trust.
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.server().cert.certificate).unwrap()
    }

    /// Starts a server after `f` adjusts the test config, with an account `NAME@localhost`
    /// (password [`PASSWORD`]) for each of `users`.
    pub async fn with_users(users: &[&str], f: impl FnOnce(&mut Config)) -> Self {
        let srv = Self::start_with(f).await;
        for u in users {
            srv.add_user(&format!("{u}@localhost"), PASSWORD).await;
        }
        srv
    }

    /// Creates an account through the account manager.
    pub async fn add_user(&self, jid: &str, password: &str) {
        let core = &self.server().core;
        let j = core.accounts.account_jid(jid).unwrap();
        core.accounts.create(&j, password).await.unwrap();
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.dir
    }
}

/// A rustls client config trusting exactly the test server's certificate.
pub fn client_tls(cert_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw XML client: sends text, reads until a marker appears.
pub struct RawClient {
    pub io: Box<dyn Io>,
    pub buf: String,
    pub jid: String,
}

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

impl RawClient {
    /// A plaintext TCP connection.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        RawClient {
            io: Box::new(tcp),
            buf: String::new(),
            jid: String::new(),
        }
    }

    pub async fn send(&mut self, s: &str) {
        self.io.write_all(s.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Sends without failing if the peer already closed.
    pub async fn try_send(&mut self, s: &str) -> bool {
        self.io.write_all(s.as_bytes()).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Reads until `marker` is in the buffer; returns and consumes everything up to and including it.
    pub async fn read_until(&mut self, marker: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pos) = self.buf.find(marker) {
                let end = pos + marker.len();
                let out = self.buf[..end].to_string();
                self.buf.drain(..end);
                return out;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {marker:?}; have {:?}", self.buf))
                .unwrap_or(0);
            if n == 0 {
                panic!(
                    "connection closed waiting for {marker:?}; have {:?}",
                    self.buf
                );
            }
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Reads the next complete top-level element named `name` (e.g. "iq"), skipping anything before it.
    pub async fn read_stanza(&mut self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let open = format!("<{name}");
        let close = format!("</{name}>");
        loop {
            if let Some(start) = self.buf.find(&open)
                && let Some(gt) = self.buf[start..].find('>')
            {
                let gt = start + gt;
                let end = if self.buf[..gt].ends_with('/') {
                    Some(gt + 1)
                } else {
                    self.buf[gt..].find(&close).map(|c| gt + c + close.len())
                };
                if let Some(end) = end {
                    let out = self.buf[start..end].to_string();
                    self.buf.drain(..end);
                    return out;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for <{name}>; have {:?}", self.buf))
                .unwrap_or(0);
            if n == 0 {
                panic!(
                    "connection closed waiting for <{name}>; have {:?}",
                    self.buf
                );
            }
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Reads everything until the server closes the connection (or 10 s pass).
    pub async fn read_to_close(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Err(_) => panic!("server did not close; have {:?}", self.buf),
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Opens a stream and reads its features.
    pub async fn open(&mut self) -> String {
        self.send(HEADER).await;
        self.read_until("</stream:features>").await
    }

    /// Stream open + STARTTLS + TLS handshake (trusting `cert`); returns the secure stream's features.
    pub async fn starttls(&mut self, cert: &[u8]) -> String {
        self.open().await;
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        self.read_until("<proceed").await;
        self.read_until("/>").await;
        let io = std::mem::replace(&mut self.io, Box::new(empty::placeholder()));
        let connector = tokio_rustls::TlsConnector::from(client_tls(cert));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, io).await.unwrap();
        self.io = Box::new(tls);
        self.open().await
    }

    /// SASL PLAIN; returns the server's answer element text.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> String {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await;
        self.read_sasl_outcome().await
    }

    /// Reads up to the end of `<success .../>` or `<failure>...</failure>`.
    pub async fn read_sasl_outcome(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = self.buf.find("<success")
                && let Some(e) = self.buf[p..]
                    .find("/>")
                    .or_else(|| self.buf[p..].find("</success>"))
            {
                {
                    let end = p + e;
                    let out = self.buf[..end].to_string();
                    let close = self.buf[end..]
                        .find('>')
                        .map(|i| end + i + 1)
                        .unwrap_or(end);
                    self.buf.drain(..close);
                    return out;
                }
            }
            if let Some(p) = self.buf.find("</failure>") {
                let out = self.buf[..p + 10].to_string();
                self.buf.drain(..p + 10);
                return out;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .expect("sasl outcome timeout")
                .unwrap_or(0);
            assert!(n > 0, "closed during SASL: {:?}", self.buf);
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    /// Restarts the stream after SASL and binds `resource`; returns the bound JID.
    pub async fn bind(&mut self, resource: &str) -> String {
        self.open().await;
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let reply = self.read_until("</iq>").await;
        let start = reply.find("<jid>").expect("bind result") + 5;
        let end = reply.find("</jid>").unwrap();
        self.jid = reply[start..end].to_string();
        self.jid.clone()
    }

    /// Full login over STARTTLS + PLAIN + bind.
    pub async fn login(server: &TestServer, user: &str, password: &str, resource: &str) -> Self {
        let mut c = RawClient::connect(server.c2s()).await;
        c.starttls(&server.cert_pem()).await;
        let r = c.auth_plain(user, password).await;
        assert!(r.contains("<success"), "{r}");
        c.bind(resource).await;
        c
    }
}

/// A duplex placeholder used while swapping the transport.
mod empty {
    pub fn placeholder() -> tokio::io::DuplexStream {
        tokio::io::duplex(1).0
    }
}

/// The password of the accounts made by [`TestServer::with_users`].
pub const PASSWORD: &str = "pw";

/// A JID written in a test.
pub fn jid(s: &str) -> oxpecker::xmpp::Jid {
    oxpecker::xmpp::Jid::parse(s).unwrap()
}

/// Logs `user` (of localhost, password [`PASSWORD`]) in and binds `resource`.
pub async fn login(srv: &TestServer, user: &str, resource: &str) -> RawClient {
    RawClient::login(srv, user, PASSWORD, resource).await
}

/// Logs in and sends initial presence (so bare-JID messages are delivered), reading up to its echo.
pub async fn online(srv: &TestServer, user: &str, resource: &str) -> RawClient {
    let mut c = login(srv, user, resource).await;
    c.send("<presence/>").await;
    read_until_contains(&mut c, "presence", &format!("{user}@localhost/{resource}")).await;
    c
}

/// Waits until the account `bare` (`user@host`) has no session left on the server.
pub async fn wait_offline(srv: &TestServer, bare: &str) {
    let j = jid(bare);
    for _ in 0..200 {
        if !srv.server().core.sessions.is_online(&j) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{bare} still online");
}

/// Reads `<name>` stanzas until one contains `needle` (at most 50 are skipped).
pub async fn read_until_contains(c: &mut RawClient, name: &str, needle: &str) -> String {
    for _ in 0..50 {
        let s = c.read_stanza(name).await;
        if s.contains(needle) {
            return s;
        }
    }
    panic!("no <{name}> containing {needle:?}");
}

/// Proves no message is queued for `c`: everything before a ping's reply holds no `<message`.
pub async fn nothing_pending(c: &mut RawClient) {
    c.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = c.read_until("id=\"sync\"").await;
    assert!(!next.contains("<message"), "unexpected: {next}");
    c.read_until("/>").await;
}
