//! `GET /dashboard`: the operator's page (SPEC §6.3) — endpoints, live metrics, monitoring
//! and a playground — as plain HTML + JS + CSS compiled into the binary with
//! `include_str!` (no CDN, no build step, nothing fetched at run time).
//!
//! Auth split: the page and its assets are open routes ([`is_open_path`]); they hold no
//! data. Everything shown comes from the authenticated APIs (`/metrics`,
//! `/api/2.0/serving-endpoints`, `/v1/...`), which the page calls with a bearer token the
//! user types when a call answers 401; the token lives only in the browser's
//! `sessionStorage`, never on the server.
//!
//! Caching: assets change only with the binary, so they are sent with
//! `Cache-Control: no-cache` and a strong `ETag` (a hash of the content, computed once);
//! a browser revalidates and gets `304 Not Modified` while the binary is the same, and
//! never runs a stale `app.js` against a newer server. Cost: one hash per asset per process.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file the dashboard serves, by URL path.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/dashboard",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../assets/dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/dashboard/app.js"),
    },
    Asset {
        path: "/dashboard/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/dashboard/style.css"),
    },
    Asset {
        path: "/dashboard/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../assets/dashboard/favicon.svg"),
    },
];

/// True for the dashboard's own URLs (the page and its assets), which need no token.
pub fn is_open_path(path: &str) -> bool {
    path == "/dashboard/" || ASSETS.iter().any(|a| a.path == path)
}

/// The page and asset routes (merged into the app's router).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new().route("/dashboard/", get(|| async { redirect_to_page() }));
    for (i, a) in ASSETS.iter().enumerate() {
        r = r.route(a.path, get(move |headers: HeaderMap| async move { serve(i, &headers) }));
    }
    r
}

/// `/dashboard/` → `/dashboard` (the page's asset URLs are absolute, either works; one
/// canonical address keeps bookmarks and `sessionStorage` in one place).
fn redirect_to_page() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/dashboard")]).into_response()
}

/// The asset's `ETag`: a quoted prefix of its SHA-256.
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = Sha256::digest(a.body.as_bytes());
                let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    });
    tags.get(i).map_or("\"\"", String::as_str)
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let Some(a) = ASSETS.get(i) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let tag = etag(i);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_static(tag)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut r = (common, [(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type))], a.body).into_response();
    if a.content_type.starts_with("text/html") {
        // The page loads only its own scripts and styles and talks only to this server.
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        );
        r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_paths_are_exactly_the_assets() {
        for p in ["/dashboard", "/dashboard/", "/dashboard/app.js", "/dashboard/style.css", "/dashboard/favicon.svg"] {
            assert!(is_open_path(p), "{p}");
        }
        for p in ["/dashboard/x", "/dashboard/../metrics", "/dashboardx", "/metrics", "/dashboard/app.js/"] {
            assert!(!is_open_path(p), "{p}");
        }
    }

    #[test]
    fn etags_are_distinct_and_quoted() {
        let tags: Vec<&str> = (0..ASSETS.len()).map(etag).collect();
        for t in &tags {
            assert!(t.starts_with('"') && t.ends_with('"') && t.len() == 26, "{t}");
        }
        let mut uniq = tags.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), tags.len());
    }

    /// The app's router with one API key and no endpoints.
    fn app() -> Router {
        let opts = crate::ServeOptions {
            endpoints: Vec::new(),
            loader: std::sync::Arc::new(crate::entity::NoModels),
            engine_config: Default::default(),
            keys: std::sync::Arc::new(crate::auth::ApiKeys::from_env_value("secret")),
            request_timeout: std::time::Duration::from_secs(5),
            max_body_bytes: 1 << 20,
            drain_timeout: std::time::Duration::from_secs(1),
            version: "test".into(),
            follow_interval: std::time::Duration::from_secs(60),
            registry: None,
            tables_dir: None,
        };
        let state = crate::build_state(&opts).expect("state");
        crate::app::router(state)
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(axum::body::Body::empty()).expect("request");
        app().oneshot(req).await.expect("infallible")
    }

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn page_and_assets_are_open_with_their_content_types() {
        for (path, ct) in [
            ("/dashboard", "text/html; charset=utf-8"),
            ("/dashboard/app.js", "text/javascript; charset=utf-8"),
            ("/dashboard/style.css", "text/css; charset=utf-8"),
            ("/dashboard/favicon.svg", "image/svg+xml"),
        ] {
            let r = get(path, &[]).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&r, header::CONTENT_TYPE), ct, "{path}");
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache", "{path}");
            assert!(header(&r, header::ETAG).starts_with('"'), "{path}");
        }
        let page = get("/dashboard", &[]).await;
        assert!(header(&page, header::CONTENT_SECURITY_POLICY).contains("default-src 'self'"));
        let body = axum::body::to_bytes(page.into_body(), 1 << 20).await.expect("body");
        assert!(String::from_utf8_lossy(&body).contains("/dashboard/app.js"));
        let r = get("/dashboard/", &[]).await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header(&r, header::LOCATION), "/dashboard");
    }

    #[tokio::test]
    async fn revalidation_answers_304() {
        let first = get("/dashboard/app.js", &[]).await;
        let tag = header(&first, header::ETAG).to_string();
        let again = get("/dashboard/app.js", &[("if-none-match", &tag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, header::ETAG), tag);
        let stale = get("/dashboard/app.js", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn data_routes_still_need_the_token() {
        for path in ["/metrics", "/api/2.0/serving-endpoints", "/api/2.0/keel/monitoring", "/dashboard/nope"] {
            let r = get(path, &[]).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(header(&r, header::WWW_AUTHENTICATE), "Bearer", "{path}");
        }
        let r = get("/metrics", &[("authorization", "Bearer secret")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = get("/dashboard/nope", &[("authorization", "Bearer secret")]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn monitoring_route_answers_with_no_data_directory() {
        let r = get("/api/2.0/keel/monitoring", &[("authorization", "Bearer secret")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["tables"], serde_json::json!([]));
        assert_eq!(v["message"], crate::monitoring::NO_TABLES, "{v}");
    }

    #[test]
    fn assets_reference_only_embedded_files() {
        let html = ASSETS[0].body;
        for a in &ASSETS[1..] {
            assert!(html.contains(a.path), "index.html links {}", a.path);
        }
        // Nothing is loaded from elsewhere.
        for a in ASSETS {
            assert!(!a.body.contains("https://") && !a.body.contains("//cdn"), "{} loads no remote URL", a.path);
        }
    }
}
