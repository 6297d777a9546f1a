//! [`RedisUrl`]: a Redis URL whose password never leaves it: not in `Debug`, `Display`,
//! errors or logs. Errors of the `redis` crate are passed on as their kind and a message with
//! the password cut out.

use std::fmt;

use crate::RedisError;

/// A Redis URL (`redis://[:password@]host:port/db` or `redis+unix:///path`). Prints with its
/// password replaced by `***`.
#[derive(Clone)]
pub struct RedisUrl {
    url: String,
    password: Option<String>,
}

impl RedisUrl {
    /// Parses a URL.
    pub fn new(url: impl Into<String>) -> Result<Self, RedisError> {
        let url = url.into();
        let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|_| RedisError::BadUrl { url: redact_url(&url) })?;
        let password = info.redis.password.clone().filter(|p| !p.is_empty());
        Ok(Self { url, password })
    }

    /// The URL in the environment variable `name` (the way to pass a password: never on a
    /// command line, where `ps` shows it).
    pub fn from_env(name: &str) -> Result<Self, RedisError> {
        let url = std::env::var(name).map_err(|_| RedisError::MissingEnv { name: name.to_owned() })?;
        Self::new(url)
    }

    /// The full URL, password included: for a client or a child's environment only.
    pub(crate) fn secret(&self) -> &str {
        &self.url
    }

    /// Opens a client.
    pub(crate) fn client(&self) -> Result<redis::Client, RedisError> {
        redis::Client::open(self.url.as_str()).map_err(|e| self.error("open a client", &e))
    }

    /// Opens a connection.
    pub(crate) fn connect(&self) -> Result<redis::Connection, RedisError> {
        self.client()?.get_connection().map_err(|e| self.error("connect", &e))
    }

    /// A [`RedisError::Redis`] for `error`, with the password cut out of its message.
    pub(crate) fn error(&self, action: &'static str, error: &redis::RedisError) -> RedisError {
        RedisError::Redis { action, url: self.to_string(), message: self.redact(&error.to_string()) }
    }

    /// A [`RedisError::Redis`] for any other failure (of the worker's own connection), with
    /// the password cut out of its message.
    pub(crate) fn failed(&self, action: &'static str, error: &dyn fmt::Display) -> RedisError {
        RedisError::Redis { action, url: self.to_string(), message: self.redact(&error.to_string()) }
    }

    /// `text` with every occurrence of the password replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.password {
            Some(password) => text.replace(password.as_str(), "***"),
            None => text.to_owned(),
        }
    }
}

/// A URL with whatever sits between `://` and `@` replaced, for a URL that did not parse.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.redact(&self.url)))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_prints() {
        let url = RedisUrl::new("redis://:hunter2secret@127.0.0.1:1/0").unwrap();
        for text in [url.to_string(), format!("{url:?}"), url.redact("auth hunter2secret failed")] {
            assert!(!text.contains("hunter2secret"), "{text}");
        }
        let error = RedisUrl::new("redis://user:hunter2secret@[bad").unwrap_err();
        assert!(!error.to_string().contains("hunter2secret"), "{error}");
    }
}
