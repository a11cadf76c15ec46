//! A small SMTP receiver on a socket you give it: the demo's "mail server" and the tests' way to
//! check that notification emails really go over SMTP. It speaks enough RFC 5321 for a client
//! like lettre (EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), keeps every
//! message in memory, and bounds line length, message size and stored messages.
//!
//! It can be told to answer the next transactions with a temporary (`451`) or permanent (`550`)
//! error, to exercise the outbox's retry and parking.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Longest accepted line (RFC 5321 says 1000 including CRLF; we allow some slack).
pub const MAX_LINE: usize = 4096;
/// Largest accepted message.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Messages kept; older ones are dropped first.
pub const MAX_STORED: usize = 10_000;

/// One received email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Headers and body as sent (CRLF line ends, dot-unstuffed).
    pub data: String,
}

impl ReceivedMail {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = found.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    found = Some(v.trim().to_owned());
                }
            }
        }
        found
    }

    /// The body after the header block.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    fail_code: AtomicU16,
    fail_count: AtomicU32,
}

/// Handle to a running sink; clone freely.
#[derive(Clone, Default)]
pub struct SmtpSink {
    shared: Arc<Shared>,
}

impl SmtpSink {
    /// Serves SMTP on `listener` until the returned task is aborted or the process ends.
    pub fn start(listener: TcpListener) -> (Self, tokio::task::JoinHandle<()>) {
        let sink = SmtpSink::default();
        let s = sink.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    if let Err(e) = s.session(stream).await {
                        tracing::debug!(error = %e, "smtp sink session ended with an error");
                    }
                });
            }
        });
        (sink, task)
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared
            .mails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `n` messages have arrived or `timeout` passes; returns them.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let msgs = self.messages();
            if msgs.len() >= n || tokio::time::Instant::now() >= deadline {
                return msgs;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Answers the next `count` MAIL commands with `code` (e.g. 451 temporary, 550 permanent).
    pub fn fail_next(&self, code: u16, count: u32) {
        self.shared.fail_code.store(code, Ordering::SeqCst);
        self.shared.fail_count.store(count, Ordering::SeqCst);
    }

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 pulsara-smtp-sink ESMTP ready\r\n")
            .await?;
        let mut from = String::new();
        let mut rcpt = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if read_line(&mut r, &mut line).await? == 0 {
                return Ok(());
            }
            let cmd = line.trim_end().to_owned();
            let upper = cmd.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-pulsara-smtp-sink\r\n250-8BITMIME\r\n250 SIZE 1048576\r\n"
            } else if upper.starts_with("HELO") {
                b"250 pulsara-smtp-sink\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                let left = self.shared.fail_count.load(Ordering::SeqCst);
                if left > 0 {
                    self.shared.fail_count.store(left - 1, Ordering::SeqCst);
                    let code = self.shared.fail_code.load(Ordering::SeqCst);
                    let msg = format!("{code} refused by test configuration\r\n");
                    w.write_all(msg.as_bytes()).await?;
                    continue;
                }
                from = angle(&cmd[10..]);
                rcpt.clear();
                b"250 OK\r\n"
            } else if upper.starts_with("RCPT TO:") {
                rcpt.push(angle(&cmd[8..]));
                b"250 OK\r\n"
            } else if upper == "DATA" {
                if rcpt.is_empty() {
                    w.write_all(b"503 need RCPT first\r\n").await?;
                    continue;
                }
                w.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                let mut too_big = false;
                loop {
                    line.clear();
                    if read_line(&mut r, &mut line).await? == 0 {
                        return Ok(());
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    let l = l.strip_prefix('.').unwrap_or(l);
                    if data.len() + l.len() + 2 > MAX_MESSAGE {
                        too_big = true;
                        continue;
                    }
                    data.push_str(l);
                    data.push_str("\r\n");
                }
                if too_big {
                    w.write_all(b"552 message too large\r\n").await?;
                    continue;
                }
                {
                    let mut mails = self.shared.mails.lock().unwrap_or_else(|p| p.into_inner());
                    if mails.len() >= MAX_STORED {
                        mails.remove(0);
                    }
                    mails.push(ReceivedMail {
                        mail_from: from.clone(),
                        rcpt_to: std::mem::take(&mut rcpt),
                        data,
                    });
                }
                self.shared.arrived.notify_waiters();
                b"250 OK queued\r\n"
            } else if upper == "RSET" {
                rcpt.clear();
                b"250 OK\r\n"
            } else if upper == "NOOP" {
                b"250 OK\r\n"
            } else if upper == "QUIT" {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                b"502 command not implemented\r\n"
            };
            w.write_all(reply).await?;
        }
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut String,
) -> std::io::Result<usize> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == MAX_LINE && !buf.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "SMTP line too long",
        ));
    }
    line.push_str(&String::from_utf8_lossy(&buf));
    Ok(n)
}

use tokio::io::AsyncReadExt as _;

fn angle(s: &str) -> String {
    let s = s.trim();
    let s = s.split_whitespace().next().unwrap_or("");
    s.trim_start_matches('<').trim_end_matches('>').to_owned()
}
