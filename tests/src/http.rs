//! A small HTTP/1.1 client for the dashboard's tests and the WebDriver client: one connection
//! per request, on hyper's client connection (already in the tree through axum), plain text
//! bodies, and a streamed body for server-sent events.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the JSON expected ({e}): {}", self.body))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: &'a str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body.
    pub json: Option<String>,
}

impl<'a> Call<'a> {
    /// A request with `method` to `path`.
    pub fn new(method: Method, path: &'a str) -> Self {
        Call {
            method,
            path,
            headers: Vec::new(),
            json: None,
        }
    }

    /// With `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("authorization", format!("Bearer {token}")));
        self
    }

    /// With another `Host` than the address connected to.
    pub fn host(mut self, host: &str) -> Self {
        self.headers.push(("host", host.to_owned()));
        self
    }

    /// With a JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.json = Some(body.to_string());
        self
    }
}

async fn send(addr: SocketAddr, call: Call<'_>) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(call.method).uri(call.path);
    if !call.headers.iter().any(|(name, _)| *name == "host") {
        request = request.header("host", addr.to_string());
    }
    for (name, value) in call.headers {
        request = request.header(name, value);
    }
    let body = match call.json {
        Some(json) => {
            request = request.header("content-type", HeaderValue::from_static("application/json"));
            Full::new(Bytes::from(json))
        }
        None => Full::new(Bytes::new()),
    };
    sender
        .send_request(request.body(body).expect("a valid request"))
        .await
        .unwrap_or_else(|e| panic!("request to {addr} failed: {e}"))
}

/// Sends `call` to `addr` and reads the whole answer.
pub async fn fetch(addr: SocketAddr, call: Call<'_>) -> Answer {
    let response = send(addr, call).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body arrives")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    fetch(addr, Call::new(Method::GET, path)).await
}

/// `POST path`, with the token when given.
pub async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let call = Call::new(Method::POST, path);
    fetch(addr, token.map_or(call.clone(), |t| call.bearer(t))).await
}

/// An answer whose body is read as it comes (server-sent events).
pub struct Streamed {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    body: Incoming,
    /// Everything read so far.
    pub text: String,
}

impl Streamed {
    /// Reads until the text read so far contains `needle`; `false` if the stream ended first.
    pub async fn read_until(&mut self, needle: &str) -> bool {
        while !self.text.contains(needle) {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.text.push_str(&String::from_utf8_lossy(data));
                    }
                }
                Some(Err(_)) | None => return false,
            }
        }
        true
    }

    /// Reads until the stream ends; `true` if it ended cleanly.
    pub async fn read_to_end(&mut self) -> bool {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.text.push_str(&String::from_utf8_lossy(data));
                    }
                }
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    }
}

/// `GET path`, its body left to read.
pub async fn stream(addr: SocketAddr, path: &str) -> Streamed {
    let response = send(addr, Call::new(Method::GET, path)).await;
    Streamed {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.into_body(),
        text: String::new(),
    }
}
