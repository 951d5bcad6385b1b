//! A real SMTP server for tests: speaks RFC 5321 over TCP (EHLO, MAIL, RCPT, DATA, QUIT),
//! stores what it receives, and can answer DATA with a temporary or permanent failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Mail {
    #[allow(dead_code)]
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// When the server accepted it: tests measure latency from this, not by polling often.
    pub received_at: std::time::Instant,
}

impl Mail {
    /// The message with quoted-printable soft breaks and escapes undone.
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let mut out = String::new();
        let mut chars = joined.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '=' {
                let hex: String = chars.clone().take(2).collect();
                if hex.len() == 2 && hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    if let Ok(b) = u8::from_str_radix(&hex, 16) {
                        out.push(b as char);
                        chars.next();
                        chars.next();
                        continue;
                    }
                }
            }
            out.push(c);
        }
        out
    }
}

#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    /// DATA commands still to answer with 451 (temporary).
    pub fail_temporarily: Arc<AtomicUsize>,
    /// DATA commands still to answer with 550 (permanent).
    pub fail_permanently: Arc<AtomicUsize>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind SMTP");
        let server = SmtpServer {
            port: listener.local_addr().unwrap().port(),
            mails: Arc::default(),
            fail_temporarily: Arc::default(),
            fail_permanently: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            // Bounded: a test server lives for one test.
            for _ in 0..10_000 {
                let Ok((sock, _)) = listener.accept().await else { break };
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(30), s.session(sock)).await;
                });
            }
        });
        server
    }

    async fn session(&self, sock: tokio::net::TcpStream) -> std::io::Result<()> {
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r);
        w.write_all(b"220 test.local ESMTP ready\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let cmd = line.trim_end().to_string();
            let upper = cmd.to_ascii_uppercase();
            if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                w.write_all(b"250-test.local\r\n250 8BITMIME\r\n").await?;
            } else if upper.starts_with("MAIL FROM:") {
                from = cmd[10..].trim().to_string();
                to.clear();
                w.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("RCPT TO:") {
                to.push(cmd[8..].trim().to_string());
                w.write_all(b"250 OK\r\n").await?;
            } else if upper == "DATA" {
                w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(
                        line.strip_prefix('.')
                            .filter(|_| line.starts_with(".."))
                            .unwrap_or(&line),
                    );
                }
                let take = |n: &AtomicUsize| {
                    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                        .is_ok()
                };
                if take(&self.fail_permanently) {
                    w.write_all(b"550 5.1.1 mailbox unavailable\r\n").await?;
                } else if take(&self.fail_temporarily) {
                    w.write_all(b"451 4.3.0 try again later\r\n").await?;
                } else {
                    self.mails.lock().unwrap().push(Mail {
                        received_at: std::time::Instant::now(),
                        from: from.clone(),
                        to: to.clone(),
                        data,
                    });
                    w.write_all(b"250 OK queued\r\n").await?;
                }
            } else if upper == "QUIT" {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                w.write_all(b"250 OK\r\n").await?;
            } else {
                w.write_all(b"502 command not implemented\r\n").await?;
            }
        }
    }

    /// Waits (bounded) for a mail whose decoded text contains `needle`.
    pub async fn wait_for(&self, needle: &str, within: Duration) -> Option<Mail> {
        crate::helpers::bounded(within, || async {
            self.mails
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|m| m.decoded().contains(needle))
                .cloned()
        })
        .await
    }
}

/// The pickup code and QR token in a deposit notification's text.
pub fn secrets_in(mail: &Mail) -> (String, String) {
    let text = mail.decoded();
    let code = text
        .split("Your pickup code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .expect("a pickup code in the mail")
        .to_string();
    let qr = text
        .split("/qr/")
        .nth(1)
        .map(|rest| {
            rest.chars()
                // base64url parts, joined by dots in a signed (1.1) token
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .collect()
        })
        .expect("a QR link in the mail");
    (code, qr)
}
