//! A tiny blocking RESP2 client for tests that inspect a Redis server many times a second
//! (`SCAN`, `MEMORY USAGE`, `INFO`), where one `redis-cli` process per command is too slow,
//! and that must hold one connection (whose own memory then stays constant).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n ...` (`None`: the nil bulk).
    Bulk(Option<Vec<u8>>),
    /// `*n ...` (`None`: the nil array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (bulk or simple), if it is text.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The reply as an integer, if it is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// One connection to a server.
pub struct Resp {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Resp {
    /// Connects to `url` (`redis://host:port`, no password).
    pub fn connect(url: &str) -> Resp {
        let address = url.trim_start_matches("redis://");
        let address = address.split('/').next().unwrap_or(address);
        let writer = TcpStream::connect(address).expect("connect to redis");
        let reader = BufReader::new(writer.try_clone().expect("clone the stream"));
        Resp { writer, reader }
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("write to redis");
        read_reply(&mut self.reader)
    }

    /// One field of `INFO <section>` as an integer.
    pub fn info_int(&mut self, section: &str, field: &str) -> i64 {
        let info = self.cmd(&["INFO", section]).text().unwrap_or_default();
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every key matching `pattern` (`SCAN`, COUNT 1000).
    pub fn scan(&mut self, pattern: &str) -> Vec<String> {
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let reply = self.cmd(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
            let Reply::Array(Some(parts)) = reply else {
                panic!("SCAN replied {reply:?}");
            };
            cursor = parts[0].text().expect("a cursor");
            if let Reply::Array(Some(found)) = &parts[1] {
                keys.extend(found.iter().filter_map(Reply::text));
            }
            if cursor == "0" {
                keys.sort();
                keys.dedup();
                return keys;
            }
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read from redis");
    assert!(!line.is_empty(), "redis closed the connection");
    line.trim_end_matches(['\r', '\n']).to_owned()
}

/// Reads one RESP2 reply.
pub fn read_reply(reader: &mut impl BufRead) -> Reply {
    let line = read_line(reader);
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().expect("an integer reply")),
        "$" => {
            let len: i64 = rest.parse().expect("a bulk length");
            if len < 0 {
                return Reply::Bulk(None);
            }
            let mut data = vec![0; usize::try_from(len).expect("a length") + 2];
            reader.read_exact(&mut data).expect("a bulk");
            data.truncate(data.len() - 2);
            Reply::Bulk(Some(data))
        }
        "*" => {
            let len: i64 = rest.parse().expect("an array length");
            if len < 0 {
                return Reply::Array(None);
            }
            Reply::Array(Some((0..len).map(|_| read_reply(reader)).collect()))
        }
        other => panic!("unexpected RESP type {other:?} in {line:?}"),
    }
}
