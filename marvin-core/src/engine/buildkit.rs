//! BuildKit's progress, read from the build API's JSON stream: pure, no I/O.
//!
//! A BuildKit build (`POST /build?version=2`) reports progress as
//! `{"id":"moby.buildkit.trace","aux":"<base64>"}` lines, each a protobuf
//! `moby.buildkit.v1.StatusResponse`: vertices (steps) with their start,
//! completion, `cached` flag and error, and the steps' own output. [`Progress`]
//! turns them into job-log lines a person can follow:
//!
//! ```text
//! #2 [base 2/2] RUN make
//! #2 | compiling…
//! #2 [base 2/2] RUN make: done in 1.20s
//! #3 [stage-1 2/3] COPY . /app: CACHED
//! ```
//!
//! and remembers each step's last output lines for the failure report.

use std::collections::{HashMap, VecDeque};

/// How many output lines of a step a failure report keeps.
const STEP_TAIL: usize = 20;

/// What one line of the build API's JSON stream means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Lines for the job log (possibly none).
    Lines(Vec<String>),
    /// The built image's id (`moby.image.id`).
    ImageId(String),
    /// The build failed with the engine's message.
    Error(String),
}

/// The failed step of a build, for the failure report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedStep {
    /// The step as BuildKit names it (`[stage-1 3/3] RUN make`).
    pub name: String,
    /// Its last output lines.
    pub last_lines: Vec<String>,
    /// BuildKit's error for the step.
    pub error: String,
}

#[derive(Debug, Default)]
struct Step {
    /// The number shown in the log, given when the step first shows.
    number: Option<usize>,
    name: String,
    /// Start time in nanoseconds since the epoch.
    started: Option<i128>,
    announced: bool,
    finished: bool,
    error: String,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

/// The progress of one BuildKit build.
#[derive(Debug, Default)]
pub struct Progress {
    steps: HashMap<String, Step>,
    shown: usize,
    /// Digests of steps that failed, in the order they failed.
    failed: Vec<String>,
}

impl Progress {
    /// Read one line of the build API's JSON stream.
    pub fn feed_json_line(&mut self, line: &str) -> Message {
        let line = line.trim();
        if line.is_empty() {
            return Message::Lines(Vec::new());
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => return Message::Lines(vec![line.to_string()]),
        };
        if let Some(error) = value.get("errorDetail").and_then(|d| d.get("message")) {
            return Message::Error(error.as_str().unwrap_or_default().to_string());
        }
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            return Message::Error(error.to_string());
        }
        match value.get("id").and_then(|i| i.as_str()) {
            Some("moby.buildkit.trace") => {
                let aux = value.get("aux").and_then(|a| a.as_str()).unwrap_or("");
                return Message::Lines(self.feed_trace(aux));
            }
            Some("moby.image.id") => {
                if let Some(id) = value
                    .get("aux")
                    .and_then(|a| a.get("ID"))
                    .and_then(|i| i.as_str())
                {
                    return Message::ImageId(id.to_string());
                }
            }
            _ => {}
        }
        let text = value.get("stream").and_then(|s| s.as_str()).unwrap_or("");
        Message::Lines(
            text.lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// Read one `moby.buildkit.trace` payload (base64 of a `StatusResponse`).
    /// Undecodable payloads are skipped: progress is not worth failing a build.
    pub fn feed_trace(&mut self, base64: &str) -> Vec<String> {
        let Some(bytes) = decode_base64(base64) else {
            return Vec::new();
        };
        match StatusResponse::decode(&bytes) {
            Some(status) => self.apply(status),
            None => Vec::new(),
        }
    }

    /// The step that failed, if one did (the first one).
    pub fn failed_step(&self) -> Option<FailedStep> {
        let step = self.steps.get(self.failed.first()?)?;
        Some(FailedStep {
            name: step.name.clone(),
            last_lines: step.tail.iter().cloned().collect(),
            error: step.error.clone(),
        })
    }

    /// The failure report's lines: the failed step, its last output lines and
    /// the engine's message (once).
    pub fn failure_lines(&self, engine_error: &str) -> Vec<String> {
        let engine_error = engine_error.trim();
        let mut lines = Vec::new();
        if let Some(step) = self.failed_step() {
            lines.push(format!("step {} failed; its last output:", step.name));
            if step.last_lines.is_empty() {
                lines.push("(no output)".to_string());
            }
            lines.extend(step.last_lines.iter().map(|l| format!("  {l}")));
            if !step.error.is_empty() && !engine_error.contains(step.error.as_str()) {
                lines.push(step.error.clone());
            }
        }
        if !engine_error.is_empty() {
            lines.push(engine_error.to_string());
        }
        lines
    }

    fn apply(&mut self, status: StatusResponse) -> Vec<String> {
        let mut out = Vec::new();
        for v in status.vertexes {
            let step = self.steps.entry(v.digest.clone()).or_default();
            if !v.name.is_empty() {
                step.name = v.name;
            }
            if let Some(t) = v.started {
                step.started = Some(t);
            }
            if step.finished {
                continue;
            }
            if v.cached {
                step.finished = true;
                let n = number(step, &mut self.shown);
                out.push(format!("#{n} {}: CACHED", step.name));
                continue;
            }
            if step.started.is_some() && !step.announced {
                step.announced = true;
                let n = number(step, &mut self.shown);
                out.push(format!("#{n} {}", step.name));
            }
            if let Some(done) = v.completed {
                step.finished = true;
                let n = number(step, &mut self.shown);
                if let Some(line) = flush(step) {
                    out.push(format!("#{n} | {line}"));
                }
                let took = step
                    .started
                    .map(|s| format!(" in {:.2}s", (done - s).max(0) as f64 / 1e9))
                    .unwrap_or_default();
                if v.error.is_empty() {
                    out.push(format!("#{n} {}: done{took}", step.name));
                } else {
                    out.push(format!("#{n} {}: ERROR{took}: {}", step.name, v.error));
                    step.error = v.error;
                    self.failed.push(v.digest);
                }
            }
        }
        for log in status.logs {
            let step = self.steps.entry(log.vertex).or_default();
            step.partial.extend_from_slice(&log.msg);
            let mut lines = Vec::new();
            while let Some(end) = step.partial.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = step.partial.drain(..=end).collect();
                if let Some(line) = clean(&raw) {
                    lines.push(line);
                }
            }
            if lines.is_empty() {
                continue;
            }
            let n = number(step, &mut self.shown);
            for line in lines {
                out.push(format!("#{n} | {line}"));
                remember(step, line);
            }
        }
        for w in status.warnings {
            let step = self.steps.entry(w.vertex).or_default();
            let n = number(step, &mut self.shown);
            out.push(format!(
                "#{n} WARNING: {}",
                String::from_utf8_lossy(&w.short)
            ));
        }
        out
    }
}

fn number(step: &mut Step, shown: &mut usize) -> usize {
    *step.number.get_or_insert_with(|| {
        *shown += 1;
        *shown
    })
}

fn remember(step: &mut Step, line: String) {
    if step.tail.len() == STEP_TAIL {
        step.tail.pop_front();
    }
    step.tail.push_back(line);
}

/// The step's unfinished last line, ended.
fn flush(step: &mut Step) -> Option<String> {
    let raw = std::mem::take(&mut step.partial);
    let line = clean(&raw)?;
    remember(step, line.clone());
    Some(line)
}

/// One output line: the text after the last carriage return, without the line end.
fn clean(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    let text = text.rsplit('\r').next().unwrap_or("").trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// `moby.buildkit.v1.StatusResponse`, the fields Marvin shows.
#[derive(Debug, Default)]
struct StatusResponse {
    vertexes: Vec<Vertex>,
    logs: Vec<VertexLog>,
    warnings: Vec<VertexWarning>,
}

#[derive(Debug, Default)]
struct Vertex {
    digest: String,
    name: String,
    cached: bool,
    /// Nanoseconds since the epoch.
    started: Option<i128>,
    completed: Option<i128>,
    error: String,
}

#[derive(Debug, Default)]
struct VertexLog {
    vertex: String,
    msg: Vec<u8>,
}

#[derive(Debug, Default)]
struct VertexWarning {
    vertex: String,
    short: Vec<u8>,
}

impl StatusResponse {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut out = StatusResponse::default();
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Bytes(b)) => out.vertexes.push(Vertex::decode(b)?),
                (3, Value::Bytes(b)) => out.logs.push(VertexLog::decode(b)?),
                (4, Value::Bytes(b)) => out.warnings.push(VertexWarning::decode(b)?),
                _ => {}
            }
        }
        Some(out)
    }
}

impl Vertex {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut out = Vertex::default();
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Bytes(b)) => out.digest = text(b),
                (3, Value::Bytes(b)) => out.name = text(b),
                (4, Value::Varint(v)) => out.cached = v != 0,
                (5, Value::Bytes(b)) => out.started = Some(timestamp(b)?),
                (6, Value::Bytes(b)) => out.completed = Some(timestamp(b)?),
                (7, Value::Bytes(b)) => out.error = text(b),
                _ => {}
            }
        }
        Some(out)
    }
}

impl VertexLog {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut out = VertexLog::default();
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Bytes(b)) => out.vertex = text(b),
                (4, Value::Bytes(b)) => out.msg = b.to_vec(),
                _ => {}
            }
        }
        Some(out)
    }
}

impl VertexWarning {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut out = VertexWarning::default();
        for field in Fields::new(bytes) {
            match field? {
                (1, Value::Bytes(b)) => out.vertex = text(b),
                (3, Value::Bytes(b)) => out.short = b.to_vec(),
                _ => {}
            }
        }
        Some(out)
    }
}

/// `google.protobuf.Timestamp` as nanoseconds since the epoch.
fn timestamp(bytes: &[u8]) -> Option<i128> {
    let (mut seconds, mut nanos) = (0i128, 0i128);
    for field in Fields::new(bytes) {
        match field? {
            (1, Value::Varint(v)) => seconds = i128::from(v as i64),
            (2, Value::Varint(v)) => nanos = i128::from(v as i64 as i32),
            _ => {}
        }
    }
    Some(seconds * 1_000_000_000 + nanos)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A protobuf field's value, by wire type.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message: `(number, value)`, `None` when malformed.
struct Fields<'a> {
    rest: &'a [u8],
    broken: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields {
            rest: bytes,
            broken: false,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn field(&mut self) -> Option<(u64, Value<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken || self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        self.broken = field.is_none();
        Some(field)
    }
}

/// Standard base64 with optional padding; `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Docker 20.10 (`POST /build?version=2`): three stages,
    /// `RUN --mount=type=cache`, `COPY --from`, the last `RUN` exits 3.
    const RUN_FAILS: &str = include_str!("testdata/buildkit-run-fails.jsonl");
    /// The same Dockerfile with the last `RUN` fixed, built right after: the
    /// earlier steps are `CACHED`.
    const CACHED_OK: &str = include_str!("testdata/buildkit-cached-ok.jsonl");
    /// `COPY --link` without a `# syntax=` line: the built-in frontend refuses it.
    const COPY_LINK: &str = include_str!("testdata/buildkit-copy-link.jsonl");

    /// Every log line, the image id and the error of a captured stream.
    fn run(stream: &str) -> (Progress, Vec<String>, Option<String>, Option<String>) {
        let mut progress = Progress::default();
        let (mut lines, mut id, mut error) = (Vec::new(), None, None);
        for line in stream.lines() {
            match progress.feed_json_line(line) {
                Message::Lines(l) => lines.extend(l),
                Message::ImageId(i) => id = Some(i),
                Message::Error(e) => error = Some(e),
            }
        }
        (progress, lines, id, error)
    }

    #[test]
    fn a_failing_run_step_is_reported_with_its_name_and_output() {
        let (progress, lines, id, error) = run(RUN_FAILS);
        assert_eq!(id, None);
        let error = error.expect("the stream ends in an error");
        assert!(error.contains("exit code: 3"), "{error}");
        let failed = progress.failed_step().expect("a step failed");
        assert_eq!(
            failed.name,
            "[stage-2 2/2] RUN echo about to fail && exit 3"
        );
        assert_eq!(failed.last_lines, vec!["about to fail"]);
        let report = progress.failure_lines(&error);
        assert_eq!(
            report[..2],
            [
                "step [stage-2 2/2] RUN echo about to fail && exit 3 failed; its last output:"
                    .to_string(),
                "  about to fail".to_string()
            ]
        );
        assert_eq!(report.last(), Some(&error));
        let log = lines.join("\n");
        assert!(
            log.contains("| about to fail")
                && log.contains("RUN echo about to fail && exit 3: ERROR"),
            "{log}"
        );
    }

    #[test]
    fn steps_show_once_started_and_once_finished_with_their_output() {
        let (_, lines, _, _) = run(RUN_FAILS);
        let log = lines.join("\n");
        let starts = lines
            .iter()
            .filter(|l| l.ends_with("] RUN echo one && echo two >&2"))
            .count();
        assert_eq!(starts, 1, "one start line:\n{log}");
        let done: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("] RUN echo one && echo two >&2: done in "))
            .collect();
        assert_eq!(done.len(), 1, "one finish line with a duration:\n{log}");
        assert!(done[0].ends_with('s'), "{}", done[0]);
        // stdout and stderr of the step, and the cache mount's output.
        for out in ["| one", "| two", "| cached-mount"] {
            assert!(log.contains(out), "{out} in:\n{log}");
        }
        // Nothing of the protobuf or the JSON.
        for noise in ["sha256:", "moby.", "{\"", "\u{fffd}"] {
            assert!(!log.contains(noise), "{noise:?} in:\n{log}");
        }
        // Every line carries its step number.
        assert!(lines.iter().all(|l| l.starts_with('#')), "{log}");
    }

    #[test]
    fn a_rebuild_shows_cached_steps_and_the_image_id() {
        let (progress, lines, id, error) = run(CACHED_OK);
        assert_eq!(error, None);
        assert_eq!(progress.failed_step(), None);
        assert!(
            id.as_deref().is_some_and(|i| i.starts_with("sha256:")),
            "{id:?}"
        );
        let log = lines.join("\n");
        assert!(
            log.contains("[base 2/2] RUN echo one && echo two >&2: CACHED"),
            "{log}"
        );
        assert!(
            log.contains("RUN echo about to fail && echo done: done in "),
            "the changed step runs:\n{log}"
        );
        assert!(log.contains("| done"), "{log}");
        assert!(log.contains("Successfully tagged bkprobe-test:3"), "{log}");
    }

    #[test]
    fn a_frontend_refusal_keeps_the_engines_words() {
        let (progress, _, _, error) = run(COPY_LINK);
        let error = error.expect("refused");
        assert!(error.contains("Unknown flag: link"), "{error}");
        assert_eq!(progress.failed_step(), None);
        assert_eq!(progress.failure_lines(&error), vec![error.clone()]);
    }

    #[test]
    fn output_split_across_messages_and_carriage_returns_makes_whole_lines() {
        let mut p = Progress::default();
        let vertex = |digest: &str, name: &str, started: bool, completed: bool| {
            let mut v = Vec::new();
            field_bytes(&mut v, 1, digest.as_bytes());
            field_bytes(&mut v, 3, name.as_bytes());
            let ts = |secs: u8| vec![0x08, secs];
            if started {
                field_bytes(&mut v, 5, &ts(10));
            }
            if completed {
                field_bytes(&mut v, 6, &ts(12));
            }
            let mut msg = Vec::new();
            field_bytes(&mut msg, 1, &v);
            msg
        };
        let log = |digest: &str, text: &str| {
            let mut l = Vec::new();
            field_bytes(&mut l, 1, digest.as_bytes());
            field_bytes(&mut l, 4, text.as_bytes());
            let mut msg = Vec::new();
            field_bytes(&mut msg, 3, &l);
            msg
        };
        let mut lines = Vec::new();
        for msg in [
            vertex("d1", "RUN x", true, false),
            log("d1", "hal"),
            log("d1", "f\n10%\r50%\r100%\nlast"),
            vertex("d1", "RUN x", true, true),
        ] {
            lines.extend(p.feed_trace(&encode_base64(&msg)));
        }
        assert_eq!(
            lines,
            vec![
                "#1 RUN x",
                "#1 | half",
                "#1 | 100%",
                "#1 | last",
                "#1 RUN x: done in 2.00s"
            ]
        );
    }

    #[test]
    fn malformed_payloads_are_skipped() {
        let mut p = Progress::default();
        assert!(p.feed_trace("not base64!").is_empty());
        assert!(p.feed_trace(&encode_base64(&[0x0a, 0x05, 0x01])).is_empty());
        assert_eq!(
            p.feed_json_line("plain text"),
            Message::Lines(vec!["plain text".to_string()])
        );
    }

    fn field_bytes(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push(number << 3 | 2);
        out.push(u8::try_from(bytes.len()).expect("short test field"));
        out.extend_from_slice(bytes);
    }

    fn encode_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
