//! The merchant dashboard, embedded in the binary: `GET /` is its page, `/dashboard/app.js` and
//! `/dashboard/app.css` its script and style, built by `web/build.mjs` from `web/dashboard/`
//! (CI fails when they drift from their sources). The page reads everything through the public
//! Insights API over gRPC-web, on the same origin, and loads nothing from elsewhere.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/app.css");

/// Same-origin only: the page's script and style and its calls to the API (the CSV download is
/// a `blob:` link, which needs no source); no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; form-action 'self'; \
                      base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { page() }))
        .route(
            "/dashboard/app.js",
            get(|| async { asset("application/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
