//! BuildKit builds over the engine's build API (`POST /build?version=2`).
//!
//! bollard's `build_image` can ask for builder version 2, but without its
//! `buildkit` feature it reads each `moby.buildkit.trace` message's `aux` as
//! an image id and fails on it; with the feature it drags in a gRPC stack and
//! changes `BuildInfo` for the whole workspace. So this sends the request
//! itself, over the same engine address, and reads the JSON stream with
//! [`super::buildkit::Progress`]. A tar context needs no BuildKit session.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

use super::buildkit::{Message, Progress};
use super::{BuildRequest, DockerEngine, EngineError};

/// Time to the response headers, as for bollard's requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What to tell a user whose engine refuses BuildKit.
pub(super) const LEGACY_HINT: &str = "if this Docker engine cannot run BuildKit builds, \
     set `settings.builder: legacy` in marvin.yml to use its legacy builder";

impl DockerEngine {
    /// Build with BuildKit; each progress line goes to `log`. Returns the image id.
    pub(super) async fn build_with_buildkit(
        &self,
        req: BuildRequest,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<String, EngineError> {
        let version = self.api().await?.client_version();
        let mut params = vec![
            ("version", "2".to_string()),
            ("t", req.tag.clone()),
            ("dockerfile", req.dockerfile.clone()),
            ("rm", "1".to_string()),
            ("forcerm", "1".to_string()),
        ];
        if !req.build_args.is_empty() {
            params.push(("buildargs", json(&req.build_args)));
        }
        if !req.labels.is_empty() {
            params.push(("labels", json(&req.labels)));
        }
        if let Some(target) = &req.target {
            params.push(("target", target.clone()));
        }
        if let Some(platform) = &req.platform {
            params.push(("platform", platform.clone()));
        }
        let path = format!(
            "/v{}.{}/build?{}",
            version.major_version,
            version.minor_version,
            query(&params)
        );
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, "docker")
            .header(hyper::header::CONTENT_TYPE, "application/x-tar")
            .body(Full::new(Bytes::from(req.context_tar)))
            .map_err(|e| EngineError::Api(format!("building {}: {e}", req.tag)))?;
        let doing = format!("building {}", req.tag);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.send(request))
            .await
            .map_err(|_| EngineError::Unreachable {
                host: self.host().to_string(),
                cause: format!("{doing}: no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            })??;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(refused(&req.tag, status, &bytes));
        }
        let mut progress = Progress::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut failure = None;
        let mut handle = |line: &[u8], progress: &mut Progress| match progress
            .feed_json_line(&String::from_utf8_lossy(line))
        {
            Message::Lines(lines) => lines.iter().for_each(|l| log(l)),
            Message::ImageId(_) => {}
            Message::Error(e) => failure = Some(e),
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| EngineError::Unreachable {
                host: self.host().to_string(),
                cause: format!("{doing}: {e}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                handle(&line, &mut progress);
            }
        }
        handle(&pending, &mut progress);
        if let Some(error) = failure {
            // A failed step's error is in its ERROR line already; a refusal
            // before any step (a Dockerfile the frontend rejects) is not.
            if progress.failed_step().is_none() {
                log(error.trim());
            }
            let last_lines = progress.failure_lines(&error);
            return Err(EngineError::BuildFailed {
                tag: req.tag,
                last_lines,
            });
        }
        self.image_id(&req.tag).await
    }

    /// One request on a new connection to the engine.
    async fn send(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, EngineError> {
        let host = self.host();
        let unreachable = |cause: String| EngineError::Unreachable {
            host: host.to_string(),
            cause,
        };
        if let Some(path) = host.strip_prefix("unix://") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            exchange(TokioIo::new(stream), request)
                .await
                .map_err(unreachable)
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let stream = tokio::net::TcpStream::connect(addr.trim_end_matches('/'))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            exchange(TokioIo::new(stream), request)
                .await
                .map_err(unreachable)
        } else {
            Err(EngineError::Api(format!(
                "BuildKit builds need a unix:// or tcp:// engine address, not {host}; \
                 set `settings.builder: legacy` in marvin.yml to build with the legacy builder"
            )))
        }
    }
}

async fn exchange<T>(
    io: TokioIo<T>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // Drives the connection until the response body is read.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// The engine's refusal, with the way out when it is BuildKit it refuses.
fn refused(tag: &str, status: StatusCode, body: &[u8]) -> EngineError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let lower = message.to_ascii_lowercase();
    let mut last_lines = vec![format!(
        "the engine refused the build ({status}): {message}"
    )];
    if lower.contains("buildkit") || lower.contains("version") || lower.contains("session") {
        last_lines.push(LEGACY_HINT.to_string());
    }
    EngineError::BuildFailed {
        tag: tag.to_string(),
        last_lines,
    }
}

fn json(map: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a string map always serialises")
}

/// `a=1&b=x%20y`: every byte but the unreserved ones percent-encoded.
fn query(params: &[(&str, String)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query(&[
                ("t", "marvin/p-api:ab12".into()),
                ("buildargs", r#"{"A":"x y&z"}"#.into())
            ]),
            "t=marvin%2Fp-api%3Aab12&buildargs=%7B%22A%22%3A%22x%20y%26z%22%7D"
        );
    }

    #[test]
    fn a_refused_buildkit_build_names_the_setting() {
        let e = refused(
            "t:1",
            StatusCode::BAD_REQUEST,
            br#"{"message":"buildkit not supported by daemon"}"#,
        );
        let text = e.to_string();
        assert!(text.contains("buildkit not supported by daemon"), "{text}");
        assert!(text.contains("settings.builder: legacy"), "{text}");
        let other = refused(
            "t:1",
            StatusCode::NOT_FOUND,
            b"{\"message\":\"no such file\"}",
        );
        assert!(!other.to_string().contains("settings.builder"), "{other}");
    }
}
