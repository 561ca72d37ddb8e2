//! A webhook receiver for examples and tests: a plain-HTTP listener on loopback that keeps
//! every request, answers 500 to the first `fail_first` ones (to exercise retries) and 200
//! afterwards, and passes each request on as it arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use fedsilo::webhooks::signature;

/// One request received: its headers (lowercase names) and body.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value (empty when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Whether its `X-Fedsilo-Signature` is right for `secret`, and its timestamp within
    /// five minutes of now (an older one is a replay).
    pub fn signed_with(&self, secret: &[u8]) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.header(signature::TIMESTAMP_HEADER)
            .parse()
            .is_ok_and(|ts| {
                signature::verify_fresh(
                    secret,
                    ts,
                    &self.body,
                    self.header(signature::SIGNATURE_HEADER),
                    now,
                    300,
                )
            })
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn read_request(s: &TcpStream) -> Option<Received> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = vec![];
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(16 << 20)];
    r.read_exact(&mut body).ok()?;
    Some(Received { headers, body })
}

/// A running receiver.
#[derive(Debug)]
pub struct WebhookReceiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Every request so far, in order.
    pub requests: Arc<Mutex<Vec<Received>>>,
    /// Each request as it arrives.
    pub arrivals: Receiver<Received>,
}

impl WebhookReceiver {
    /// Listens on a free loopback port; answers 500 to the first `fail_first` requests.
    pub fn start(fail_first: usize) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(vec![]));
        let keep = requests.clone();
        let (tx, arrivals) = channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let Some(req) = read_request(&s) else {
                    continue;
                };
                let n = {
                    let mut all = keep.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(req.clone());
                    all.len()
                };
                let status = if n <= fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
                if n > fail_first {
                    let _ = tx.send(req);
                }
            }
        });
        Ok(Self {
            port,
            requests,
            arrivals,
        })
    }
}
