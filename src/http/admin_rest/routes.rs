//! The route table of the admin API, and the one rule for requests that match no route.
//!
//! mod_admin_rest dispatches on the first path segment, the *route family* (`user` in
//! `/user/bob/role`): an unknown family is 404 `"Invalid request path"`; a known family without
//! the method is 405 `"Invalid request method"` (`HEAD` included: no family has it); a known
//! family and method whose path has no handler (`PATCH /user/bob`, `DELETE /groups`) is 404
//! again. [`check`] applies that rule before the router runs, and the router's own fallbacks
//! only ever see the last case, so no handler repeats it.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

use super::{
    ApiError, clients, data, groups, messages, modules, muc, openapi, reload, roster, s2s, users,
    vcards, whitelist,
};
use super::{hosts, server, sessions};
use crate::core::Core;

macro_rules! routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route of the API as (method, path relative to the base), in OpenAPI path syntax.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// The axum router of [`ROUTES`]; any request it cannot place is `Invalid request path`.
        pub fn build_router() -> Router<Arc<Core>> {
            let router = Router::new();
            $(let router = router.route($path, on(MethodFilter::$method, $handler));)*
            router
                .fallback(invalid_path)
                .method_not_allowed_fallback(invalid_path)
        }
    };
}

routes! {
    GET "/ping" => openapi::ping,
    GET "/openapi.json" => openapi::spec,
    GET "/user/{name}" => users::get_user,
    POST "/user/{name}" => users::add_user,
    DELETE "/user/{name}" => users::delete_user,
    PATCH "/user/{name}/{attribute}" => users::patch_user,
    GET "/user/{name}/connected" => users::user_connected,
    GET "/user_connected/{name}" => users::user_connected_alias,
    GET "/users" => users::connected_users,
    GET "/users/count" => users::connected_count,
    GET "/all-users" => users::all_users,
    GET "/roster/{name}" => roster::get_roster,
    POST "/roster/{name}" => roster::add_contact,
    DELETE "/roster/{name}" => roster::remove_contact,
    POST "/message/{name}" => messages::send_message,
    POST "/message" => messages::multicast,
    POST "/broadcast" => messages::broadcast,
    GET "/modules" => modules::list,
    GET "/modules/count" => modules::count,
    GET "/module/{name}" => modules::get,
    PUT "/module/{name}" => modules::load,
    DELETE "/module/{name}" => modules::unload,
    GET "/whitelist" => whitelist::list,
    PUT "/whitelist" => whitelist::missing_ip,
    DELETE "/whitelist" => whitelist::missing_ip,
    PUT "/whitelist/{ip}" => whitelist::add,
    DELETE "/whitelist/{ip}" => whitelist::remove,
    PUT "/reload" => reload::reload,
    PUT "/groups" => groups::create,
    GET "/groups" => groups::list,
    PUT "/groups/{id}" => groups::create_with_id,
    DELETE "/groups/{id}" => groups::delete,
    PUT "/groups/{id}/members/{member}" => groups::add_member,
    DELETE "/groups/{id}/members/{member}" => groups::remove_member,
    POST "/groups/{id}/sync" => groups::sync,
    GET "/vcards/{name}" => vcards::get,
    PUT "/vcards/{name}" => vcards::set,
    DELETE "/vcards/{name}" => vcards::delete,
    DELETE "/data" => data::delete_data,
    DELETE "/certs" => data::delete_certs,
    GET "/sessions" => sessions::list,
    DELETE "/sessions/{jid}" => sessions::close,
    GET "/hosts" => hosts::list,
    PUT "/hosts/{vhost}" => hosts::activate,
    DELETE "/hosts/{vhost}" => hosts::deactivate,
    GET "/server" => server::info,
    POST "/server/shutdown" => server::shutdown,
    GET "/muc" => muc::list,
    GET "/muc/{room}" => muc::get,
    PUT "/muc/{room}" => muc::create,
    DELETE "/muc/{room}" => muc::destroy,
    GET "/muc/{room}/affiliation/{jid}" => muc::get_affiliation,
    PUT "/muc/{room}/affiliation/{jid}" => muc::set_affiliation,
    GET "/muc/{room}/role/{nick}" => muc::get_role,
    GET "/s2s" => s2s::list,
    DELETE "/s2s/{local}/{remote}" => s2s::close,
    GET "/user/{name}/clients" => clients::list,
    DELETE "/user/{name}/clients/{id}" => clients::revoke,
}

async fn invalid_path() -> ApiError {
    ApiError::InvalidPath
}

/// The route family of a path relative to the base: its first segment (`/user/bob` → `user`).
pub fn family(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split('/').next().unwrap_or_default()
}

/// The rule for what the router cannot place, applied to every request once it is authenticated.
///
/// `path` is relative to the base, with trailing slashes already removed; `trailing_slash` says
/// whether there were any. `Ok` means the router decides (and its fallbacks answer 404).
pub fn check(method: &Method, path: &str, trailing_slash: bool) -> Result<(), ApiError> {
    let family = family(path);
    let mut known = false;
    let mut allowed = false;
    for (m, p) in ROUTES {
        if self::family(p) == family {
            known = true;
            allowed |= *m == method.as_str();
        }
    }
    if !known {
        return Err(ApiError::InvalidPath);
    }
    if !allowed {
        return Err(ApiError::InvalidMethod);
    }
    // `/message/` names an empty recipient (404, as in mod_admin_rest); only the bare `/message`
    // is the multicast that Oxpecker added.
    if trailing_slash && path == "/message" {
        return Err(ApiError::InvalidPath);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, path: &str) -> Option<u16> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let trailing = path.len() > 1 && path.ends_with('/');
        let path = path.trim_end_matches('/');
        check(&method, path, trailing)
            .err()
            .map(|e| e.status().as_u16())
    }

    #[test]
    fn families_answer_like_mod_admin_rest() {
        // (method, path, what `check` answers: None = the router decides)
        let cases: &[(&str, &str, Option<u16>)] = &[
            ("GET", "/ping", None),
            ("HEAD", "/ping", Some(405)),
            ("OPTIONS", "/users", Some(405)),
            ("POST", "/ping", Some(405)),
            ("GET", "/", Some(404)),
            ("GET", "/nope", Some(404)),
            ("HEAD", "/nope", Some(404)),
            ("GET", "/NAME/connected", Some(404)),
            ("PATCH", "/user/bob", None),
            ("PUT", "/user/bob", Some(405)),
            ("GET", "/groups", None),
            ("PATCH", "/groups", Some(405)),
            ("POST", "/groups/x", None),
            ("DELETE", "/groups", None),
            ("POST", "/message/", Some(404)),
            ("POST", "/message", None),
            ("GET", "/message/bob", Some(405)),
            ("PATCH", "/users", Some(405)),
        ];
        for (m, p, want) in cases {
            assert_eq!(status(m, p), *want, "{m} {p}");
        }
    }

    #[test]
    fn routes_are_unique_and_have_a_family() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r), "duplicate route {r:?}");
            assert!(!family(r.1).is_empty(), "{r:?}");
        }
    }
}
