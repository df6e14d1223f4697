//! The `fast` scenario of `oxpecker-bench` (with `--fast-logins N`): N clients log in over
//! SASL2 with SCRAM-SHA-256 and inline Bind2, each asking for a XEP-0484 FAST token; once all are
//! bound they close, and the same N log in again with their token (`--fast-mechanism`, by
//! default `HT-SHA-256-NONE`) instead of the password. Each round reports logins per second and
//! the server's CPU time per login (`/proc/PID/stat`, with `--cpu`), measured from the first
//! connection until every session of the round is bound. The client side of SCRAM runs PBKDF2
//! off the async workers; a token login costs the client one HMAC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use oxpecker::auth::fast::HtMechanism;
use oxpecker::auth::scram::{ScramClient, ScramHash, TLS_EXPORTER, TLS_SERVER_END_POINT};
use oxpecker::xmpp::element::escape;
use oxpecker::xmpp::parser::{Limits, StreamEvent, StreamParser};
use oxpecker::xmpp::{Element, ns};
use sha2::Sha256;
use tokio::io::{AsyncWriteExt, BufReader, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use super::{Args, Tls, TlsParser, expect_header, next_stanza, proc_sample, round, send};

/// Options of the `fast` scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct FastArgs {
    /// Accounts PREFIX0.. that log in with SCRAM-SHA-256 and then with a FAST token (0 = skip).
    #[arg(long, default_value_t = 0)]
    pub fast_logins: usize,
    /// The FAST mechanism of the token logins: HT-SHA-256-NONE, -EXPR (TLS 1.3) or -ENDP.
    #[arg(long, default_value = "HT-SHA-256-NONE")]
    pub fast_mechanism: String,
}

/// One round's figures.
struct Round {
    logins: usize,
    secs: f64,
    server_ms_per_login: Option<f64>,
}

/// A bound SASL2 session and, after a password login, its FAST token.
struct Bound {
    parser: TlsParser,
    writer: WriteHalf<Tls>,
    token: Option<String>,
}

/// Runs the scenario when `--fast-logins` asks for it; its JSON (null when skipped).
pub async fn scenario(args: &Arc<Args>, tls: &TlsConnector, tck: u64) -> Result<serde_json::Value> {
    let n = args.fast.fast_logins;
    if n == 0 {
        return Ok(serde_json::Value::Null);
    }
    let mech = HtMechanism::from_name(&args.fast.fast_mechanism)
        .ok_or_else(|| anyhow!("unknown FAST mechanism {}", args.fast.fast_mechanism))?;
    let pid = args.server_pid.filter(|_| args.cpu);
    let (scram, tokens) = login_round(args, tls, tck, pid, mech, vec![None; n]).await?;
    let tokens = tokens
        .into_iter()
        .map(|t| {
            t.map(Some)
                .ok_or_else(|| anyhow!("a SCRAM login got no FAST token"))
        })
        .collect::<Result<Vec<_>>>()?;
    let (fast, _) = login_round(args, tls, tck, pid, mech, tokens).await?;
    let show = |label: &str, r: &Round| {
        println!(
            "fast:    {label:<16} {} logins in {:.2} s -> {:.1} logins/s{}",
            r.logins,
            r.secs,
            r.logins as f64 / r.secs,
            r.server_ms_per_login
                .map(|v| format!(", server CPU {v:.3} ms/login"))
                .unwrap_or_default()
        );
    };
    show("SCRAM-SHA-256", &scram);
    show(mech.name(), &fast);
    let json = |r: &Round| {
        serde_json::json!({
            "logins": r.logins,
            "secs": round(r.secs, 3),
            "logins_per_sec": round(r.logins as f64 / r.secs, 1),
            "server_cpu_ms_per_login": r.server_ms_per_login.map(|v| round(v, 3)),
        })
    };
    Ok(serde_json::json!({
        "mechanism": mech.name(),
        "scram": json(&scram),
        "fast": json(&fast),
    }))
}

/// Logs client `i` in for every entry of `tokens` (`None`: SCRAM asking for a token, `Some`:
/// that token), holds them until all are bound, then closes them; the figures and new tokens.
async fn login_round(
    args: &Arc<Args>,
    tls: &TlsConnector,
    tck: u64,
    pid: Option<u32>,
    mech: HtMechanism,
    tokens: Vec<Option<String>>,
) -> Result<(Round, Vec<Option<String>>)> {
    let before = pid.map(|p| proc_sample(&p.to_string(), tck)).transpose()?;
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let (args, tls) = (args.clone(), tls.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let r = tokio::time::timeout(
                Duration::from_secs(60),
                login(&args, &tls, i, mech, token.as_deref()),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow!("login timed out after 60 s")));
            (i, r)
        });
    }
    let mut bound = Vec::new();
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            let (i, r) = r?;
            bound.push((i, r.with_context(|| format!("{}{i}", args.user_prefix))?));
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(args.phase_timeout), collect)
        .await
        .map_err(|_| anyhow!("fast login round exceeded {} s", args.phase_timeout))??;
    let secs = started.elapsed().as_secs_f64();
    let after = pid.map(|p| proc_sample(&p.to_string(), tck)).transpose()?;
    let logins = bound.len();
    let server_ms_per_login = match (before, after) {
        (Some(a), Some(b)) if logins > 0 => {
            Some(1000.0 * (b.cpu_secs - a.cpu_secs) / logins as f64)
        }
        _ => None,
    };
    bound.sort_by_key(|(i, _)| *i);
    let mut new_tokens = Vec::with_capacity(logins);
    let mut closing = JoinSet::new();
    for (_, b) in bound {
        new_tokens.push(b.token);
        closing.spawn(close(b.parser, b.writer));
    }
    // Every stream is gone before the next round is measured.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    Ok((
        Round {
            logins,
            secs,
            server_ms_per_login,
        },
        new_tokens,
    ))
}

/// Ends a stream and waits for the server to end its side.
async fn close(mut parser: TlsParser, mut writer: WriteHalf<Tls>) {
    if writer.write_all(b"</stream:stream>").await.is_err() {
        return;
    }
    let _ = writer.flush().await;
    while let Ok(Ok(StreamEvent::Stanza(_))) =
        tokio::time::timeout(Duration::from_secs(5), parser.next()).await
    {}
}

/// HMAC-SHA-256 of `data` under `key`.
fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|e| anyhow!("{e}"))?;
    m.update(data);
    Ok(m.finalize().into_bytes().to_vec())
}

/// STARTTLS, then one SASL2 login of client `i` with inline Bind2: SCRAM-SHA-256 asking for
/// a `mech` token when `token` is `None`, else `mech` with that token.
async fn login(
    args: &Args,
    tls: &TlsConnector,
    i: usize,
    mech: HtMechanism,
    token: Option<&str>,
) -> Result<Bound> {
    let username = format!("{}{i}", args.user_prefix);
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to=\"{}\" version='1.0'>",
        escape(&args.domain, true)
    );
    let tcp = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    tcp.set_nodelay(true)?;
    let mut p = StreamParser::new(BufReader::new(tcp), Limits::default());
    p.get_mut().get_mut().write_all(header.as_bytes()).await?;
    expect_header(&mut p).await?;
    next_stanza(&mut p).await?;
    let starttls = format!("<starttls xmlns='{}'/>", ns::TLS);
    p.get_mut().get_mut().write_all(starttls.as_bytes()).await?;
    if !next_stanza(&mut p).await?.is("proceed", ns::TLS) {
        bail!("STARTTLS refused");
    }
    let tcp = p.into_inner().into_inner();
    let name = rustls_pki_types::ServerName::try_from(args.domain.clone())?;
    let stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let cb = binding(&stream, mech)?;
    let (rd, mut w) = tokio::io::split(stream);
    w.write_all(header.as_bytes()).await?;
    let mut p = StreamParser::new(BufReader::new(rd), Limits::default());
    expect_header(&mut p).await?;
    let features = next_stanza(&mut p).await?;
    let offers_fast = features
        .get_child("authentication", ns::SASL2)
        .and_then(|a| a.get_child("inline", ns::SASL2))
        .and_then(|i| i.get_child("fast", ns::FAST))
        .is_some_and(|f| f.children().any(|m| m.text_content() == mech.name()));
    if !offers_fast {
        bail!("{} not offered in SASL2 <fast/>", mech.name());
    }
    let agent = format!(
        "<user-agent id='bench-fast-{i}'><software>oxpecker-bench</software></user-agent>\
         <bind xmlns='{}'><tag>bench</tag></bind>",
        ns::BIND2
    );
    let success = match token {
        None => {
            let mut scram = ScramClient::new(ScramHash::Sha256, &username, &args.password);
            let first = STANDARD.encode(scram.client_first());
            send(
                &mut w,
                &format!(
                    "<authenticate xmlns='{}' mechanism='SCRAM-SHA-256'><initial-response>{first}</initial-response>{agent}<request-token xmlns='{}' mechanism='{}'/></authenticate>",
                    ns::SASL2,
                    ns::FAST,
                    mech.name()
                ),
            )
            .await?;
            let ch = next_stanza(&mut p).await?;
            if !ch.is("challenge", ns::SASL2) {
                bail!("SASL2: expected a challenge, got {}", ch.to_xml(ns::CLIENT));
            }
            let challenge = STANDARD.decode(ch.text_content().trim())?;
            // PBKDF2 over the account's iterations: keep it off the async workers.
            let (scram, reply) = tokio::task::spawn_blocking(move || {
                let r = scram.client_final(&challenge);
                (scram, r)
            })
            .await?;
            let reply = reply.map_err(|e| anyhow!("SCRAM: {e:?}"))?;
            send(
                &mut w,
                &format!(
                    "<response xmlns='{}'>{}</response>",
                    ns::SASL2,
                    STANDARD.encode(reply)
                ),
            )
            .await?;
            let ok = success(&mut p).await?;
            scram
                .verify_server_final(&additional(&ok)?)
                .map_err(|e| anyhow!("server signature: {e:?}"))?;
            ok
        }
        Some(token) => {
            let mut label = b"Initiator".to_vec();
            label.extend_from_slice(&cb);
            let mut initial = username.as_bytes().to_vec();
            initial.push(0);
            initial.extend_from_slice(&hmac(token.as_bytes(), &label)?);
            send(
                &mut w,
                &format!(
                    "<authenticate xmlns='{}' mechanism='{}'><initial-response>{}</initial-response>{agent}<fast xmlns='{}'/></authenticate>",
                    ns::SASL2,
                    mech.name(),
                    STANDARD.encode(initial),
                    ns::FAST
                ),
            )
            .await?;
            let ok = success(&mut p).await?;
            let mut label = b"Responder".to_vec();
            label.extend_from_slice(&cb);
            if additional(&ok)? != hmac(token.as_bytes(), &label)? {
                bail!("the server's FAST proof does not match");
            }
            ok
        }
    };
    if success.get_child("bound", ns::BIND2).is_none() {
        bail!("inline bind refused: {}", success.to_xml(ns::CLIENT));
    }
    let token = success
        .get_child("token", ns::FAST)
        .and_then(|t| t.get_attr("token"))
        .map(str::to_string);
    if token.is_none() && success.get_child("token", ns::FAST).is_some() {
        bail!("a FAST token without its value");
    }
    Ok(Bound {
        parser: p,
        writer: w,
        token,
    })
}

/// The channel-binding data `mech` covers on `stream`, as the client computes it.
fn binding(stream: &Tls, mech: HtMechanism) -> Result<Vec<u8>> {
    let conn = stream.get_ref().1;
    match mech.binding_type() {
        None => Ok(Vec::new()),
        Some(TLS_EXPORTER) => Ok(conn
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)?
            .to_vec()),
        Some(TLS_SERVER_END_POINT) => conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(oxpecker::tls::server_end_point)
            .ok_or_else(|| anyhow!("no tls-server-end-point for the server's certificate")),
        Some(other) => bail!("the bench cannot compute {other}"),
    }
}

/// Reads the SASL2 `<success/>`; a `<failure/>` is an error.
async fn success(p: &mut TlsParser) -> Result<Element> {
    let el = next_stanza(p).await?;
    if !el.is("success", ns::SASL2) {
        bail!("SASL2 failed: {}", el.to_xml(ns::CLIENT));
    }
    Ok(el)
}

/// The decoded `<additional-data/>` of a SASL2 `<success/>`.
fn additional(success: &Element) -> Result<Vec<u8>> {
    let data = success
        .get_child("additional-data", ns::SASL2)
        .ok_or_else(|| anyhow!("no additional-data in <success/>"))?;
    Ok(STANDARD.decode(data.text_content().trim())?)
}
