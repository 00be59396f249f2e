//! A small client of the maas HTTP API: bearer auth, JSON in and out, and errors turned into
//! one readable line.

use anyhow::{anyhow, bail, Result};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Talks to one server with one key.
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(base: &str, api_key: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("maas-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        req
    }

    /// Sends a request and fails with the server's own message on a non-2xx answer.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let response = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach the maas server at {}: is `maas serve` running? (set --server or MAAS_URL)", self.base)
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                // The management and OpenAI APIs nest the message; the Open Inference Protocol
                // does not.
                v.pointer("/error/message")
                    .or_else(|| v.get("error"))
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| body.trim().to_owned());
        if status == StatusCode::UNAUTHORIZED && self.api_key.is_none() {
            bail!("{message} (HTTP 401); pass --api-key or set MAAS_API_KEY");
        }
        bail!("{message} (HTTP {})", status.as_u16())
    }

    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let response = self.send(req).await?;
        Ok(response.json().await?)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Response> {
        self.send(self.request(Method::DELETE, path)).await
    }
}

/// Escapes one path segment (model names and aliases are URL-safe, references may hold `@`/`:`).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
