//! HTTP to a chump server for the CLI (reqwest, rustls): the base URL and
//! bearer token, JSON in and out, and every failure turned into a
//! [`CliError`] that knows its message and exit status.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::ClientArgs;

/// Why a client command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line or an input file is wrong (exit 2).
    Usage(String),
    /// The server answered with an error (exit 1).
    Server {
        status: StatusCode,
        msg: String,
        errors: Vec<(String, String)>,
    },
    /// The server could not be reached, or its answer was not chump's (exit 1).
    Transport(String),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Server { .. } | CliError::Transport(_) => 1,
        }
    }

    /// What goes on stderr: one line, then one line per field error.
    pub fn render(&self) -> String {
        match self {
            CliError::Usage(m) | CliError::Transport(m) => format!("chump: {m}\n"),
            CliError::Server {
                status,
                msg,
                errors,
            } => {
                let mut s = if msg.is_empty() {
                    format!("chump: the server answered {status}\n")
                } else {
                    format!("chump: {msg}\n")
                };
                for (field, reason) in errors {
                    let line = format!("{field}: {reason}");
                    // The summary may already say it (one bad field).
                    if !msg.contains(&line) {
                        s.push_str(&format!("  {line}\n"));
                    }
                }
                s
            }
        }
    }
}

/// A chump server at a base URL.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// Checks the URL and builds the HTTP client.
    pub fn new(args: &ClientArgs) -> Result<Client, CliError> {
        let raw = args.url.trim();
        let url = url::Url::parse(raw).map_err(|e| {
            CliError::Usage(format!(
                "--url / CHUMP_URL '{raw}' is not a URL ({e}); e.g. http://127.0.0.1:8000"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(CliError::Usage(format!(
                "--url / CHUMP_URL '{raw}' must be an http:// or https:// URL with a host"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(CliError::Usage(format!(
                "--url / CHUMP_URL '{raw}' must not have a query or fragment"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("chump-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Transport(format!("cannot set up HTTP: {e}")))?;
        let token = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(Client {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            token,
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<url::Url, CliError> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CliError::Usage(format!("bad URL {}{path}: {e}", self.base)))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        self.send(Method::POST, path, &[], body).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.send(Method::DELETE, path, query, None).await
    }

    /// `GET path` of a route that answers text (YAML): the body as is.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let (status, text) = self.request(Method::GET, path, &[], None).await?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(refusal(status, &text))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let (status, text) = self.request(method, path, query, body).await?;
        if !status.is_success() {
            return Err(refusal(status, &text));
        }
        serde_json::from_str::<Value>(&text).map_err(|_| {
            CliError::Transport(format!(
                "the server at {} answered {status} with something that is not JSON \
                 (is it a chump server?): {}",
                self.base,
                excerpt(&text)
            ))
        })
    }

    /// Sends a request; the status and the body's text.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<(StatusCode, String), CliError> {
        let url = self.url(path, query)?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(&e))?;
        Ok((status, text))
    }

    fn transport(&self, e: &reqwest::Error) -> CliError {
        // The innermost cause says what happened (connection refused, DNS...).
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if e.is_connect() {
            CliError::Transport(format!(
                "cannot reach the chump server at {}: {cause} \
                 (is it running? set --url or CHUMP_URL)",
                self.base
            ))
        } else if e.is_timeout() {
            CliError::Transport(format!(
                "the chump server at {} did not answer in time",
                self.base
            ))
        } else {
            CliError::Transport(format!(
                "request to the chump server at {} failed: {cause}",
                self.base
            ))
        }
    }
}

/// An error answer: its JSON `msg` and `errors`, or an excerpt.
fn refusal(status: StatusCode, text: &str) -> CliError {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.get("msg").is_some() => CliError::Server {
            status,
            msg: v["msg"]
                .as_str()
                .map_or_else(|| v["msg"].to_string(), str::to_string),
            errors: v
                .get("errors")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_string),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        _ => CliError::Server {
            status,
            msg: format!("the server answered {status}: {}", excerpt(text)),
            errors: Vec::new(),
        },
    }
}

/// The start of a body, on one line, for messages.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if one_line.trim().is_empty() {
        "(empty body)".into()
    } else {
        one_line.trim().to_string()
    }
}
