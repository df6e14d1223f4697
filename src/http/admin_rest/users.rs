//! Users: get, create-or-update, delete, change password or role, who is connected.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::Params;
use super::{ApiError, Ctx, body_object, existing_user, ok, reply, string_field, user_jid};
use crate::core::Core;
use crate::core::accounts::Role;
use crate::core::sessions::SessionHandle;
use crate::xmpp::Jid;

/// A session as mod_admin_rest shows it.
fn session_json(s: &SessionHandle) -> Value {
    let (ip, port) = match s.peer.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_canonical().to_string(), a.port()),
        Err(_) => (s.peer.clone(), 0),
    };
    json!({
        "resource": s.jid.resource().unwrap_or_default(),
        "id": s.id.to_string(),
        "ip": ip,
        "port": port,
        "secure": s.secure,
    })
}

/// Roster items in mod_admin_rest's shape: `["item", {jid, subscription, group, ask?, name?}]`.
pub async fn roster_json(core: &Core, jid: &Jid) -> Result<Vec<Value>, ApiError> {
    let items = core.roster_items(jid).await.map_err(|e| match e {
        crate::core::roster::RosterError::Storage(e) => ApiError::from(e),
        e => ApiError::Internal(e.to_string()),
    })?;
    Ok(items
        .into_iter()
        .map(|i| {
            let mut o = json!({
                "jid": i.jid,
                "subscription": i.subscription.as_str(),
                "group": i.groups,
            });
            if i.ask {
                o["ask"] = json!("subscribe");
            }
            if let Some(n) = i.name {
                o["name"] = json!(n);
            }
            json!(["item", o])
        })
        .collect())
}

/// `GET /user/{name}`: connection state, sessions and roster.
pub async fn get_user(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let mut sessions = core.sessions.resources(&jid);
    sessions.sort_by_key(|s| s.id);
    let mut listed: Vec<Value> = sessions.iter().map(|s| session_json(s)).collect();
    // Sessions on other cluster nodes, as the session directory knows them.
    listed.extend(core.remote_sessions(&jid).iter().map(|r| {
        json!({
            "resource": r.jid.resource().unwrap_or_default(),
            "secure": r.secure,
            "node": &*r.node,
        })
    }));
    let roster = roster_json(&core, &jid).await?;
    Ok(ok(json!({
        "user": {
            "connected": !listed.is_empty(),
            "sessions": listed,
            "roster": roster,
        }
    })))
}

/// `POST /user/{name}` `{"password", "regip"?}`: 201 when created, 200 when it existed (password updated).
pub async fn add_user(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let jid = user_jid(&core, &ctx.host, &name)?;
    let body = body_object(&headers, &body)?;
    let password = string_field(&body, "password")?;
    let regip = body
        .get("regip")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| ctx.ip.to_string());
    if core.accounts.exists(&jid).await? {
        core.accounts.set_password(&jid, password).await?;
        return Ok(ok(format!(
            "User <{jid}> already existed, password updated"
        )));
    }
    match core.accounts.create(&jid, password).await {
        Ok(()) => {}
        // Created concurrently: same outcome as "already existed".
        Err(crate::core::accounts::AccountError::Exists(_)) => {
            core.accounts.set_password(&jid, password).await?;
            return Ok(ok(format!(
                "User <{jid}> already existed, password updated"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(%jid, %regip, "account registered over admin_rest");
    Ok(reply(
        StatusCode::CREATED,
        format!("User registered: {jid}"),
    ))
}

/// `DELETE /user/{name}`: deletes the account and closes its sessions; 200 either way.
pub async fn delete_user(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = user_jid(&core, &ctx.host, &name)?;
    // The same deletion as everywhere: sessions closed, roster, groups and module data removed.
    if !core.delete_account(&jid).await? {
        return Ok(ok(format!("User does not exist: {jid}")));
    }
    Ok(ok(format!("User deleted: {jid}")))
}

/// `PATCH /user/{name}/password` `{"password"}` and `PATCH /user/{name}/role` `{"role"}`.
pub async fn patch_user(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params((name, attribute)): Params<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if attribute != "password" && attribute != "role" {
        return Err(ApiError::InvalidPath);
    }
    let jid = existing_user(&core, &ctx.host, &name).await?;
    let body = body_object(&headers, &body)?;
    if attribute == "password" {
        let password = string_field(&body, "password")?;
        core.accounts.set_password(&jid, password).await?;
    } else {
        let name = string_field(&body, "role")?;
        let role = Role::parse(name).ok_or_else(|| {
            ApiError::other(
                StatusCode::BAD_REQUEST,
                "unknown_role",
                format!(
                    "Unknown role: {name} (known: {})",
                    Role::ALL.map(Role::as_str).join(", ")
                ),
            )
        })?;
        core.accounts.set_role(&jid, Some(role)).await?;
    }
    Ok(ok(format!("User modified: {jid}")))
}

async fn connected(core: &Core, jid: &Jid) -> Result<Response, ApiError> {
    if core.is_online_anywhere(jid) {
        Ok(ok(json!({ "connected": true })))
    } else {
        Err(ApiError::WithResult {
            status: StatusCode::NOT_FOUND,
            code: "not_connected",
            result: json!({ "connected": false }),
        })
    }
}

/// `GET /user/{name}/connected`: 200 `{"connected": true}`, 404 `{"connected": false}`.
pub async fn user_connected(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = existing_user(&core, &ctx.host, &name).await?;
    connected(&core, &jid).await
}

/// `GET /user_connected/{name}`: like `/user/{name}/connected`, unknown users are simply not connected.
pub async fn user_connected_alias(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
    Params(name): Params<String>,
) -> Result<Response, ApiError> {
    let jid = user_jid(&core, &ctx.host, &name)?;
    connected(&core, &jid).await
}

/// `GET /users`: one `{username, resource}` per session of the host.
pub async fn connected_users(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Response {
    let mut users: Vec<(String, String)> = core
        .sessions
        .all(Some(&ctx.host))
        .iter()
        .map(|s| {
            (
                s.jid.node().unwrap_or_default().to_string(),
                s.jid.resource().unwrap_or_default().to_string(),
            )
        })
        .collect();
    users.extend(core.all_remote_sessions(Some(&ctx.host)).iter().map(|r| {
        (
            r.jid.node().unwrap_or_default().to_string(),
            r.jid.resource().unwrap_or_default().to_string(),
        )
    }));
    users.sort();
    let list: Vec<Value> = users
        .into_iter()
        .map(|(u, r)| json!({ "username": u, "resource": r }))
        .collect();
    ok(json!({ "count": list.len(), "users": list }))
}

/// `GET /users/count`: the number of distinct users online on the host.
pub async fn connected_count(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Response {
    let users = core.online_users_everywhere(Some(&ctx.host));
    ok(json!({ "count": users.len() }))
}

/// A role as Prosody shows it (`name`, `priority`), plus Oxpecker's own name as `oxpecker`.
fn role_json(role: Role) -> Value {
    json!({
        "name": role.prosody_name(),
        "priority": role.prosody_priority(),
        "oxpecker": role.as_str(),
    })
}

/// `GET /all-users`: `{"users": [{jid, role, secondary_roles}], "count": n}` for every account of the host.
pub async fn all_users(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<Ctx>,
) -> Result<Response, ApiError> {
    let cfg = core.config.load();
    let mut out = Vec::new();
    for user in core.accounts.list(&ctx.host).await? {
        let Ok(jid) = Jid::new(Some(&user), &ctx.host, None) else {
            continue;
        };
        let Some(rec) = core.accounts.get(&jid).await? else {
            continue;
        };
        let role = if cfg.is_admin(jid.as_str()) {
            Role::Operator
        } else {
            rec.role.unwrap_or(Role::Registered)
        };
        out.push(json!({
            "jid": jid.to_string(),
            "role": role_json(role),
            "secondary_roles": [],
        }));
    }
    Ok(ok(json!({ "count": out.len(), "users": out })))
}
