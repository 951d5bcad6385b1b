//! Channel transports. Each send ends in success, a transient failure (retry later on the
//! same channel) or a permanent one (try the recipient's next channel).

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::json;

use crate::config::{Settings, SmsFormat, SmtpTls};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Transient(String),
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient(e) => write!(f, "transient: {e}"),
            SendError::Permanent(e) => write!(f, "permanent: {e}"),
        }
    }
}

/// A rendered message, every part of it; each channel takes what it needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub sms: String,
}

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Email {
    /// The SMTP transport from settings, or `None` when no SMTP host is configured.
    pub fn from_settings(s: &Settings) -> Result<Option<Email>, String> {
        let Some(host) = &s.smtp_host else { return Ok(None) };
        let from: Mailbox = s
            .mail_from
            .parse()
            .map_err(|e| format!("mail_from {:?}: {e}", s.mail_from))?;
        let tls = match s.smtp_tls {
            SmtpTls::None => Tls::None,
            mode => {
                let params = TlsParameters::new(host.clone()).map_err(|e| format!("TLS for {host}: {e}"))?;
                if mode == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(s.smtp_port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(15)));
        if let (Some(u), Some(p)) = (&s.smtp_username, &s.smtp_password) {
            b = b.credentials(Credentials::new(u.clone(), p.expose().to_string()));
        }
        Ok(Some(Email {
            transport: b.build(),
            from,
        }))
    }

    pub async fn send(&self, to: &str, m: &Rendered) -> Result<(), SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("address {to:?}: {e}")))?;
        let msg = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(m.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(m.html.clone()),
                    ),
            )
            .map_err(|e| SendError::Permanent(format!("cannot build message: {e}")))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}

/// Classifies an HTTP gateway's answer: 2xx ok; 429 and 5xx transient; other 4xx permanent.
fn classify(status: u16, body: &str) -> Result<(), SendError> {
    let detail = format!(
        "gateway answered {status}: {}",
        body.chars().take(200).collect::<String>()
    );
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(SendError::Transient(detail)),
        _ => Err(SendError::Permanent(detail)),
    }
}

async fn finish(
    res: Result<
        awc::ClientResponse<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
        >,
        awc::error::SendRequestError,
    >,
) -> Result<(), SendError> {
    match res {
        Ok(mut resp) => {
            let body = resp
                .body()
                .limit(4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            classify(resp.status().as_u16(), &body)
        }
        Err(e) => Err(SendError::Transient(e.to_string())),
    }
}

pub async fn send_sms(client: &awc::Client, s: &Settings, url: &str, to: &str, text: &str) -> Result<(), SendError> {
    let req = client.post(url);
    let res = match s.sms_format {
        SmsFormat::Twilio => {
            let req = match (&s.sms_username, &s.sms_password) {
                (Some(u), Some(p)) => req.basic_auth(u, p.expose()),
                _ => req,
            };
            req.send_form(&[("To", to), ("From", s.sms_from.as_str()), ("Body", text)])
                .await
        }
        SmsFormat::Json => {
            let req = match &s.sms_password {
                Some(p) => req.bearer_auth(p.expose()),
                None => req,
            };
            req.send_json(&json!({"to": to, "from": s.sms_from, "text": text}))
                .await
        }
    };
    finish(res).await
}

pub async fn send_push(
    client: &awc::Client,
    s: &Settings,
    url: &str,
    target: &str,
    m: &Rendered,
    data: serde_json::Value,
) -> Result<(), SendError> {
    let req = match &s.push_token {
        Some(t) => client.post(url).bearer_auth(t.expose()),
        None => client.post(url),
    };
    finish(
        req.send_json(&json!({"target": target, "title": m.subject, "body": m.sms, "data": data}))
            .await,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_answers_are_classified() {
        assert_eq!(classify(201, ""), Ok(()));
        assert!(matches!(classify(503, ""), Err(SendError::Transient(_))));
        assert!(matches!(classify(429, ""), Err(SendError::Transient(_))));
        assert!(matches!(classify(400, "bad number"), Err(SendError::Permanent(_))));
    }
}
