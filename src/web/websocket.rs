//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket`: the `xmpp` subprotocol, one element per
//! text message, `<open/>`/`<close/>` framing, on the c2s negotiation and session.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::OwnedSemaphorePermit;

use super::framing::{self, ClientFrame, Frame, Frames, STREAM_CLOSE};
use super::{Web, WebPeer};
use crate::c2s::duplex::{self, Carrier, DUPLEX_BUFFER};
use crate::core::sessions::Transport;

/// The WebSocket subprotocol of RFC 7395.
const SUBPROTOCOL: &str = "xmpp";

/// `GET /xmpp-websocket`: upgrades to a WebSocket speaking the `xmpp` subprotocol.
pub async fn upgrade(Extension(web): Extension<Arc<Web>>, req: Request) -> Response {
    let cfg = web.core.config.load_full();
    if !cfg.web.websocket {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (mut parts, _) = req.into_parts();
    let origin = WebPeer::of(&web.core, &parts.extensions, &parts.headers);
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws.protocols([SUBPROTOCOL]),
        Err(rejection) => return rejection.into_response(),
    };
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "the `xmpp` WebSocket subprotocol is required (RFC 7395)",
        )
            .into_response();
    }
    let Some(slot) = web.slot() else {
        tracing::warn!(peer = %origin.client, "connection limit reached; refusing a WebSocket");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    // Room for a stanza over the limit, so the parser can answer it with policy-violation.
    let max = cfg
        .c2s
        .max_stanza_size
        .saturating_mul(2)
        .saturating_add(4096);
    let carrier = origin.carrier(Transport::WebSocket);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(web, carrier, socket, slot))
}

/// Carries one client stream between `socket` and the c2s negotiation and session.
async fn run(web: Arc<Web>, carrier: Carrier, socket: WebSocket, slot: OwnedSemaphorePermit) {
    let (server_io, web_io) = tokio::io::duplex(DUPLEX_BUFFER);
    let stream = tokio::spawn(duplex::serve(web.core.clone(), carrier, server_io));
    let (from_server, mut to_server) = tokio::io::split(web_io);
    let (mut sink, mut source) = socket.split();
    let reader = tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                // Binary frames are not XMPP (RFC 7395 §3.2); a close frame or error ends it.
                Ok(Message::Binary(_) | Message::Close(_)) | Err(_) => break,
            };
            let (data, last) = match framing::client_frame(&text) {
                ClientFrame::Open(header) => (header, false),
                ClientFrame::Close => (STREAM_CLOSE.to_string(), true),
                ClientFrame::Xml => (text.to_string(), false),
            };
            if to_server.write_all(data.as_bytes()).await.is_err() || last {
                break;
            }
        }
        // End of input: after `<close/>` the stream ends; otherwise the connection counts as lost.
        let _ = to_server.shutdown().await;
    });
    let mut frames = Frames::new(BufReader::new(from_server));
    while let Some(frame) = frames.next().await {
        let closing = matches!(frame, Frame::Close);
        let text = framing::websocket_text(&frame);
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
        if closing {
            break;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
    reader.abort();
    let _ = stream.await;
    drop(slot);
}
