//! Headless Chromium driven over WebDriver, for the dashboard's browser tests.
//!
//! WebDriver is plain HTTP and JSON: a dozen endpoints cover what the tests do (open a page,
//! find, click, type, run a script, take a screenshot), so the client is these few functions
//! on [`crate::http`] rather than a WebDriver crate with its own HTTP and TLS stacks.
//! [`ChromeDriver::start`] runs `chromedriver` on a free loopback port and stops it, by its
//! pid, when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use crate::http::{Call, fetch};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for something on a page may take before the test fails (a page that never
/// gets there would otherwise hang the test).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A `chromedriver` process, stopped when dropped.
pub struct ChromeDriver {
    child: Child,
    addr: SocketAddr,
}

/// Fails the test, saying how to get the browser.
fn missing(what: &str, why: impl std::fmt::Display) -> ! {
    panic!(
        "{what} is needed by the dashboard's browser tests and could not be started ({why}); \
         run ./test.sh, which installs the Debian packages chromium and chromium-driver"
    )
}

impl ChromeDriver {
    /// Starts `chromedriver` on a free loopback port and waits until it is ready.
    ///
    /// # Panics
    /// When `chromium` or `chromedriver` is missing: the message says to run `./test.sh`.
    pub async fn start() -> ChromeDriver {
        if chromium_binary().is_none() {
            missing(
                "chromium",
                "no chromium or chromium-browser on this machine",
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| missing("chromedriver", e));
        let driver = ChromeDriver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if tokio::net::TcpStream::connect(driver.addr).await.is_ok() {
                let status = fetch(driver.addr, Call::new(Method::GET, "/status")).await;
                let ready: Value = status.json();
                if ready["value"]["ready"] == json!(true) {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver never became ready on {}",
                driver.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // By pid: only the process this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
}

/// An element on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A browser window driven by a [`ChromeDriver`]; closed when dropped.
pub struct Browser {
    driver: SocketAddr,
    session: String,
    closed: bool,
}

impl Browser {
    /// Opens headless Chromium with a `width`×`height` window.
    pub async fn open(driver: &ChromeDriver, width: u32, height: u32) -> Browser {
        let mut options = json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--force-device-scale-factor=1",
                format!("--window-size={width},{height}"),
            ],
        });
        if let Some(binary) = chromium_binary() {
            options["binary"] = json!(binary);
        }
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
            }}
        });
        let answer = fetch(
            driver.addr,
            Call::new(Method::POST, "/session").json(&capabilities),
        )
        .await;
        let reply: Value = answer.json();
        let Some(session) = reply["value"]["sessionId"].as_str() else {
            missing("chromium", format!("chromedriver answered {}", answer.body));
        };
        Browser {
            driver: driver.addr,
            session: session.to_owned(),
            closed: false,
        }
    }

    /// A command's value, or WebDriver's error (`{"error": .., "message": ..}`).
    async fn try_command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let path = format!("/session/{}{path}", self.session);
        let mut call = Call::new(method, &path);
        if let Some(body) = &body {
            call = call.json(body);
        }
        let answer = fetch(self.driver, call).await;
        let mut reply: Value = answer.json();
        let value = reply["value"].take();
        if answer.status.is_success() {
            Ok(value)
        } else {
            Err(value)
        }
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body.clone())
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path} failed: {error}"))
    }

    /// Loads `url` and waits for it.
    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The first element that matches `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let body = json!({ "using": "css selector", "value": css });
        let path = format!("/session/{}/elements", self.session);
        let answer = fetch(self.driver, Call::new(Method::POST, &path).json(&body)).await;
        let reply: Value = answer.json();
        reply["value"]
            .as_array()?
            .first()?
            .get(ELEMENT)?
            .as_str()
            .map(|id| Element(id.to_owned()))
    }

    /// The first element that matches `css` (panics when none does).
    pub async fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .await
            .unwrap_or_else(|| panic!("no element matches `{css}` on the page"))
    }

    /// Clicks the first element that matches `css`, as a person would. The pages replace their
    /// live parts as events arrive, so an element found may be gone by the click: then it is
    /// found again.
    pub async fn click_on(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let element = self.find(css).await;
            let path = format!("/element/{}/click", element.0);
            match self.try_command(Method::POST, &path, Some(json!({}))).await {
                Ok(_) => return,
                Err(error)
                    if error["error"] == "stale element reference" && Instant::now() < deadline => {
                }
                Err(error) => panic!("clicking `{css}` failed: {error}"),
            }
        }
    }

    /// The visible text of the first element that matches `css` (read in one step, so a live
    /// update cannot get in between).
    pub async fn text_of(&self, css: &str) -> String {
        let text = self
            .execute(
                "const e = document.querySelector(arguments[0]); return e && e.innerText;",
                json!([css]),
            )
            .await;
        text.as_str()
            .unwrap_or_else(|| panic!("no element matches `{css}` on the page"))
            .to_owned()
    }

    /// Types `text` into an element.
    pub async fn type_into(&self, element: &Element, text: &str) {
        let path = format!("/element/{}/value", element.0);
        self.command(Method::POST, &path, Some(json!({ "text": text })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let body = json!({ "script": script, "args": args });
        self.command(Method::POST, "/execute/sync", Some(body))
            .await
    }

    /// Polls `script` until it returns something truthy, and returns that; fails the test
    /// saying `what` was awaited when [`PATIENCE`] runs out.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.execute(script, json!([])).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self
                    .execute(
                        "return location.href + '\\n' + document.body.innerText;",
                        json!([]),
                    )
                    .await;
                panic!(
                    "waited in vain for {what}; the page reads:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole page as PNG bytes (the window is made as tall as the page first).
    pub async fn screenshot(&self, width: u32) -> Vec<u8> {
        let height = self
            .execute("return document.documentElement.scrollHeight;", json!([]))
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 3000);
        let rect = json!({ "width": width, "height": height + 90 });
        self.command(Method::POST, "/window/rect", Some(rect)).await;
        let encoded = self.command(Method::GET, "/screenshot", None).await;
        decode_base64(encoded.as_str().expect("a base64 screenshot"))
    }

    /// Closes the browser.
    pub async fn close(mut self) {
        self.command(Method::DELETE, "", None).await;
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // A test that failed half-way: close the browser anyway, with a blocking request (no
        // async in drop), so no Chromium outlives the test.
        if let Ok(mut stream) = TcpStream::connect(self.driver) {
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session, self.driver
            );
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0u8; 512]);
            }
        }
    }
}

/// Standard base64 (what WebDriver screenshots are in).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for sixbits in text.bytes().filter_map(value) {
        acc = (acc << 6) | sixbits;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
        assert_eq!(decode_base64("aGk="), b"hi");
        assert_eq!(decode_base64("AP8/"), [0x00, 0xff, 0x3f]);
    }
}
