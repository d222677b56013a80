//! The members' endpoints (PROTOCOL.md §11): `POST /register`, `POST /login`,
//! `POST /logout` and `GET /me`, and the `rookery_session` cookie.
//!
//! Bodies are JSON, urlencoded or multipart (see [`super::form`]); answers are
//! JSON, errors `{"message":"…"}` with §11's texts. Hashing and verifying
//! passwords is slow on purpose, so [`register`] and [`login`] run the
//! account calls on the blocking pool, never on the runtime's workers.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue, RETRY_AFTER, SET_COOKIE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::body;
use super::form::Form;
use super::{Body, error_response, json_response};
use crate::accounts::{AccountError, Accounts};
use crate::app::App;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "rookery_session";

/// `POST /register`: `username`, `password`, optional `name` → `201 {"user"}`.
pub async fn register(request: Request<Incoming>, app: &App) -> Response<Body> {
    let form = match read_form(request, app, &["username", "password", "name"]).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let field = |name: &str| form.get(name).unwrap_or_default().to_owned();
    let (username, password, name) = (
        field("username"),
        field("password"),
        form.get("name").map(str::to_owned),
    );
    let result = blocking(&app.accounts, move |accounts| {
        accounts.register(&username, &password, name.as_deref())
    })
    .await;
    match result {
        Ok(user) => no_store(json_response(StatusCode::CREATED, &json!({ "user": user.username }))),
        Err(error) => account_error(error),
    }
}

/// `POST /login`: `username`, `password` → `200 {"user","name"}` and the cookie.
pub async fn login(request: Request<Incoming>, app: &App, peer: SocketAddr) -> Response<Body> {
    let form = match read_form(request, app, &["username", "password"]).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let field = |name: &str| form.get(name).unwrap_or_default().to_owned();
    let (username, password) = (field("username"), field("password"));
    let result = blocking(&app.accounts, move |accounts| {
        accounts.login(&username, &password, peer.ip())
    })
    .await;
    match result {
        Ok(login) => {
            let body = json!({ "user": login.user.username, "name": login.user.display_name });
            let mut response = no_store(json_response(StatusCode::OK, &body));
            let cookie = cookie(&login.session, app.accounts.session_lifetime_seconds(), app);
            set_cookie(&mut response, &cookie);
            response
        }
        Err(error) => account_error(error),
    }
}

/// `POST /logout`: revokes the session on the server and clears the cookie;
/// `204` whether or not there was a session.
pub fn logout(request: &Request<Incoming>, app: &App) -> Response<Body> {
    if let Some(session) = session_cookie(request.headers())
        && let Err(error) = app.accounts.logout(&session)
    {
        return account_error(error);
    }
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    set_cookie(&mut response, &cookie("", 0, app));
    no_store(response)
}

/// `GET /me`: `200 {"user","name"}` for a live session, else `401 Not logged in`.
pub fn me(request: &Request<Incoming>, app: &App) -> Response<Body> {
    let user = match session_cookie(request.headers()).map(|s| app.accounts.session_user(&s)) {
        Some(Ok(user)) => user,
        Some(Err(error)) => return account_error(error),
        None => None,
    };
    match user {
        Some(user) => no_store(json_response(
            StatusCode::OK,
            &json!({ "user": user.username, "name": user.display_name }),
        )),
        None => error_response(StatusCode::UNAUTHORIZED, "Not logged in"),
    }
}

/// The `rookery_session` value from the request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value: `HttpOnly` (no script reads it), `SameSite=Strict`
/// (no other site's page sends it), `Path=/`, `Secure` when configured.
fn cookie(value: &str, max_age: u64, app: &App) -> String {
    let secure = if app.config.accounts.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

fn set_cookie(response: &mut Response<Body>, cookie: &str) {
    // The value is [A-Za-z0-9] and fixed text, always a valid header.
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
}

/// Answers about accounts must not be kept by caches.
fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Runs an account call on the blocking pool.
async fn blocking<T: Send + 'static>(
    accounts: &Arc<Accounts>,
    call: impl FnOnce(&Accounts) -> Result<T, AccountError> + Send + 'static,
) -> Result<T, AccountError> {
    let accounts = Arc::clone(accounts);
    match tokio::task::spawn_blocking(move || call(&accounts)).await {
        Ok(result) => result,
        Err(error) => Err(AccountError::Store(crate::accounts::StoreError::Backend(format!(
            "account task failed: {error}"
        )))),
    }
}

async fn read_form(request: Request<Incoming>, app: &App, wanted: &[&str]) -> Result<Form, Response<Body>> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = body::read(request.into_body(), app.config.limits.max_message_bytes)
        .await
        .map_err(|error| error_response(error.status(), &error.to_string()))?;
    Form::parse(content_type.as_deref(), bytes, wanted)
        .await
        .map_err(|error| error_response(StatusCode::BAD_REQUEST, &error.to_string()))
}

/// The one mapping of account errors to HTTP answers.
fn account_error(error: AccountError) -> Response<Body> {
    let status = match &error {
        AccountError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        AccountError::UsernameTaken => StatusCode::CONFLICT,
        AccountError::RegistrationClosed => StatusCode::FORBIDDEN,
        AccountError::InvalidCredentials => StatusCode::UNAUTHORIZED,
        AccountError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        AccountError::NoSuchUser(_) => StatusCode::NOT_FOUND,
        // The store is down (Redis unreachable, a disk error): the client
        // may retry; nothing was changed.
        AccountError::Store(_) => {
            tracing::error!(%error, "account request failed in the store");
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        }
        AccountError::Hash(_) => {
            tracing::error!(%error, "account request failed");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "Password hashing failed");
        }
    };
    let mut response = error_response(status, &error.to_string());
    if let AccountError::TooManyAttempts(retry) = error {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry.seconds()));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(COOKIE, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(session_cookie(&headers(&[])), None);
        assert_eq!(
            session_cookie(&headers(&["a=1; rookery_session=abc; b=2"])),
            Some("abc".into())
        );
        assert_eq!(
            session_cookie(&headers(&["a=1", "rookery_session=\"xyz\""])),
            Some("xyz".into())
        );
        assert_eq!(session_cookie(&headers(&["rookery_session="])), None);
        assert_eq!(session_cookie(&headers(&["xrookery_session=abc"])), None);
    }
}
