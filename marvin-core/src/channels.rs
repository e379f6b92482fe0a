//! Posting to an environment's channels on Marvin's own initiative — a
//! push-triggered job's report, a skipped schedule, a container that needs
//! attention, a message from monitoring (issue #5) — as opposed to answering
//! a command. Each chat front end that can post implements [`Poster`];
//! [`deliver`] sends a [`Notice`] to every channel of its environment that
//! some poster serves (`slack:C…` to Slack, `telegram:-100…` to Telegram).

use std::sync::Arc;

use crate::chat::{Chat, Follow};
use crate::store::Job;
use crate::triggers::Notice;

/// A front end that posts to channels of one scheme (`slack`, `telegram`).
#[async_trait::async_trait]
pub trait Poster: Send + Sync {
    /// The channel scheme it serves: `slack` for `slack:C123`.
    fn scheme(&self) -> &str;

    /// Post a plain notice to a channel (its id, without the scheme).
    async fn notice(&self, channel: &str, text: &str) -> Result<(), String>;

    /// Post a job's report to a channel and keep it updated until it ends.
    async fn job(&self, channel: &str, follow: Follow) -> Result<(), String>;
}

/// The environment a notice is about, and the text for a plain one.
fn parts(notice: &Notice) -> (&str, Option<String>) {
    match notice {
        Notice::Started { env, .. } => (env, None),
        Notice::Skipped { env, text }
        | Notice::Attention { env, text }
        | Notice::Failed { env, text } => (env, Some(text.clone())),
        Notice::Message { env, text } => (env, Some(format!("📣 {text}"))),
    }
}

/// Post a job's report to every channel of its environment that a poster
/// serves — except the one the command came from, which already has it —
/// and keep it up to date in the background. Every job gets here: pushes,
/// polls, schedules, the web button, the console, Python. Returns how many
/// channels it went to.
pub fn deliver_job(chat: &Chat, posters: &[Arc<dyn Poster>], job: &Job) -> usize {
    let project = &chat.runtime().marvin().project;
    let Ok(environment) = project.environment(&job.env) else {
        return 0;
    };
    let mut sent = 0;
    for channel in &environment.channels {
        if *channel == job.origin {
            continue;
        }
        let Some((scheme, id)) = channel.split_once(':') else {
            continue;
        };
        let Some(poster) = posters.iter().find(|p| p.scheme() == scheme) else {
            continue;
        };
        let follow = match chat.follow_job(job.id) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("following job #{} for {channel}: {e}", job.id);
                continue;
            }
        };
        let poster = Arc::clone(poster);
        let id = id.to_string();
        let channel = channel.clone();
        tokio::spawn(async move {
            if let Err(e) = poster.job(&id, follow).await {
                tracing::warn!("posting a report to {channel}: {e}");
            }
        });
        sent += 1;
    }
    sent
}

/// Send a notice to every channel of its environment that a poster serves
/// (redacted like everything else Marvin emits). [`Notice::Started`] is left
/// to [`deliver_job`], which sees every job. Returns how many channels it
/// went to.
pub async fn deliver(chat: &Chat, posters: &[Arc<dyn Poster>], notice: &Notice) -> usize {
    let project = &chat.runtime().marvin().project;
    let (env, text) = parts(notice);
    let Ok(environment) = project.environment(env) else {
        return 0;
    };
    let redactor = chat.runtime().redactor();
    let mut sent = 0;
    for channel in &environment.channels {
        let Some((scheme, id)) = channel.split_once(':') else {
            continue;
        };
        let Some(poster) = posters.iter().find(|p| p.scheme() == scheme) else {
            continue;
        };
        match (&text, notice) {
            (Some(text), _) => {
                let text = redactor.redact(text);
                if let Err(e) = poster.notice(id, &text).await {
                    tracing::warn!("posting to {channel}: {e}");
                    continue;
                }
            }
            (None, _) => continue,
        }
        sent += 1;
    }
    sent
}
