//! The chat page and other files under `static/`.

use std::path::{Component, Path, PathBuf};

use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};

use super::{Body, text_response};

/// Serves `path` from `root`; `/` is `index.html`. Paths that try to leave
/// `root` (`..`, absolute parts) are not found.
pub async fn serve(root: &Path, path: &str, head_only: bool) -> Response<Body> {
    let Some(file) = resolve(root, path) else {
        return text_response(StatusCode::NOT_FOUND, "Not found");
    };
    let bytes = match tokio::fs::read(&file).await {
        Ok(bytes) => bytes,
        Err(_) => return text_response(StatusCode::NOT_FOUND, "Not found"),
    };
    let length = bytes.len();
    let mut response = Response::new(if head_only { Body::default() } else { Body::from(bytes) });
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The files change with every deploy and are small: always revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if head_only {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    // The chat page renders names and messages from strangers: forbid inline
    // and foreign scripts as a second line of defence behind textContent. The
    // examples are tutorial-style pages with inline scripts and are left alone.
    if file.extension().is_some_and(|e| e == "html") && !path.starts_with("/examples/") {
        headers.insert(
            hyper::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CHAT_PAGE_CSP),
        );
    }
    response
}

/// Same-origin scripts, styles, images and WebSocket only.
const CHAT_PAGE_CSP: &str = "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8().ok()?;
    let relative = decoded.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_owned()
    };
    let mut file = root.to_path_buf();
    for component in Path::new(&relative).components() {
        match component {
            Component::Normal(part) => file.push(part),
            _ => return None,
        }
    }
    Some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_the_root_only() {
        let root = Path::new("/srv/static");
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/static/index.html")));
        assert_eq!(
            resolve(root, "/rookery.js"),
            Some(PathBuf::from("/srv/static/rookery.js"))
        );
        assert_eq!(
            resolve(root, "/examples/"),
            Some(PathBuf::from("/srv/static/examples/index.html"))
        );
        assert_eq!(resolve(root, "/../secret"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/etc/passwd"), None);
    }
}
