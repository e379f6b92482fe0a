//! Turning a command into Slack messages: the dispatcher's answer posted, or
//! a job's report posted and then edited in place, a failure's last log
//! lines in the thread.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use marvin_core::chat::{Answer, Chat, Follow, Message, Reply, Tone};
use marvin_core::render::{self, RenderOptions, Report, SlackMessage};
use marvin_core::store::JobState;
use slack_morphism::prelude::*;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::Client;
use crate::incoming::{BotIdentity, Incoming, SEEN_EVENTS, SeenEvents, command_of};

/// How often the final edit of a status message is tried.
const FINAL_TRIES: u32 = 3;

/// Answers commands; shared by the listeners.
pub(crate) struct Responder {
    chat: Chat,
    client: Arc<Client>,
    token: SlackApiToken,
    bot: BotIdentity,
    edit_interval: Duration,
    seen: Mutex<SeenEvents>,
    tasks: TaskTracker,
}

impl Responder {
    pub(crate) fn new(
        chat: Chat,
        client: Arc<Client>,
        token: SlackApiToken,
        bot: BotIdentity,
        edit_interval: Duration,
    ) -> Responder {
        Responder {
            chat,
            client,
            token,
            bot,
            edit_interval,
            seen: Mutex::new(SeenEvents::new(SEEN_EVENTS)),
            tasks: TaskTracker::new(),
        }
    }

    /// Take one event: if it is new and a command, start answering it (in
    /// the background, so Slack gets its acknowledgement at once). `retry`
    /// is Slack's retry number, for the log. Returns whether a command started.
    pub(crate) fn accept(
        self: &Arc<Self>,
        event: &SlackPushEventCallback,
        retry: Option<u32>,
    ) -> bool {
        let first = self
            .seen
            .lock()
            .expect("the seen-events lock is never held across a panic")
            .first_time(&event.event_id.0);
        if !first {
            tracing::info!(event = %event.event_id.0, retry, "a retried Slack event was already handled");
            return false;
        }
        let Some(command) = command_of(&event.event, &self.bot) else {
            return false;
        };
        tracing::debug!(event = %event.event_id.0, user = %command.user, channel = %command.channel, "command");
        let me = self.clone();
        self.tasks.spawn(async move { me.answer(command).await });
        true
    }

    /// Wait (at most `within`) for the commands being answered to finish.
    pub(crate) async fn drain(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} Slack replies still running at shutdown",
                self.tasks.len()
            );
        }
    }

    async fn answer(&self, command: Incoming) {
        let message = Message {
            identity: command.identity(),
            channel: command.chat_channel(),
            text: command.text.clone(),
            bot: self.bot.name.clone(),
        };
        match self.chat.handle(&message).await {
            Reply::Ignored => {}
            Reply::Answer(answer) => {
                let redactor = self.chat.runtime().redactor();
                let msg = render::answer_slack(&answer, &redactor);
                self.post(&command.channel, command.thread_ts.as_deref(), &msg)
                    .await;
            }
            Reply::Job(follow) => {
                self.follow(&command.channel, command.thread_ts.as_deref(), follow)
                    .await
            }
        }
    }

    /// Post the report, edit it as the job progresses (at most once per
    /// interval; the final report always), then the failure's log in the thread.
    pub(crate) async fn follow(&self, channel: &str, thread_ts: Option<&str>, mut follow: Follow) {
        let options = RenderOptions::default();
        let redactor = follow.redactor.clone();
        let render = |r: &Report| render::slack(r, &options, &redactor);
        let Some(first) = follow.next().await else {
            return;
        };
        let Some(ts) = self.post(channel, thread_ts, &render(&first)).await else {
            // Nothing to edit: post the final report on its own.
            let last = follow.finish().await;
            if last != first {
                self.post(channel, thread_ts, &render(&last)).await;
            }
            return;
        };
        let mut last = first;
        let mut shown = true;
        let mut edited_at = Instant::now();
        while !last.is_final() {
            tokio::select! {
                next = follow.next() => match next {
                    None => break,
                    Some(report) => {
                        last = report;
                        shown = false;
                        if !last.is_final() && edited_at.elapsed() >= self.edit_interval {
                            self.update(channel, &ts, &render(&last), 1).await;
                            edited_at = Instant::now();
                            shown = true;
                        }
                    }
                },
                _ = tokio::time::sleep_until(edited_at + self.edit_interval), if !shown => {
                    self.update(channel, &ts, &render(&last), 1).await;
                    edited_at = Instant::now();
                    shown = true;
                }
            }
        }
        if !shown {
            tokio::time::sleep_until(edited_at + self.edit_interval).await;
            self.update(channel, &ts, &render(&last), FINAL_TRIES).await;
        }
        if last.state == JobState::Failed {
            let msg = render::answer_slack(&failure_log(&last), &redactor);
            self.post(channel, Some(&ts), &msg).await;
        }
    }

    /// `chat.postMessage`; the new message's `ts`, or `None` if Slack refused.
    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        msg: &SlackMessage,
    ) -> Option<String> {
        let request =
            SlackApiChatPostMessageRequest::new(SlackChannelId(channel.into()), content(msg))
                .opt_thread_ts(thread_ts.map(|t| SlackTs(t.into())));
        match self
            .client
            .open_session(&self.token)
            .chat_post_message(&request)
            .await
        {
            Ok(posted) => Some(posted.ts.0),
            Err(e) => {
                tracing::warn!(channel, "chat.postMessage failed: {e}");
                None
            }
        }
    }

    /// `chat.update`, tried up to `tries` times a second apart.
    async fn update(&self, channel: &str, ts: &str, msg: &SlackMessage, tries: u32) {
        let request = SlackApiChatUpdateRequest::new(
            SlackChannelId(channel.into()),
            content(msg),
            SlackTs(ts.into()),
        );
        for attempt in 1..=tries.max(1) {
            match self
                .client
                .open_session(&self.token)
                .chat_update(&request)
                .await
            {
                Ok(_) => return,
                Err(e) if attempt == tries.max(1) => {
                    tracing::warn!(channel, ts, "chat.update failed: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

/// The message body: mrkdwn text and, when Slack's block types read them, the blocks.
fn content(msg: &SlackMessage) -> SlackMessageContent {
    let content = SlackMessageContent::new().with_text(msg.text.clone());
    match serde_json::from_value::<Vec<SlackBlock>>(msg.blocks.clone()) {
        Ok(blocks) if !blocks.is_empty() => content.with_blocks(blocks),
        _ => content,
    }
}

/// The thread reply of a failed job: its last log lines and where the full log is.
fn failure_log(report: &Report) -> Answer {
    let pointer = format!("`marvin logs {} {}`", report.env, report.job);
    Answer {
        tone: Tone::Error,
        text: if report.last_lines.is_empty() {
            format!("Job #{} failed; its log: {pointer}", report.job)
        } else {
            format!(
                "Last log lines of job #{}; the full log: {pointer}",
                report.job
            )
        },
        block: (!report.last_lines.is_empty()).then(|| report.last_lines.join("\n")),
        mentions: Vec::new(),
        data: None,
    }
}

/// Posts to Slack channels on Marvin's own initiative (trigger-started jobs,
/// notices) for `marvin serve`: the same messages as answers to commands.
pub(crate) struct SlackPoster {
    pub(crate) responder: Arc<Responder>,
}

#[async_trait::async_trait]
impl marvin_core::channels::Poster for SlackPoster {
    fn scheme(&self) -> &str {
        "slack"
    }

    async fn notice(&self, channel: &str, text: &str) -> Result<(), String> {
        let answer = Answer {
            tone: Tone::Info,
            text: text.to_string(),
            block: None,
            mentions: Vec::new(),
            data: None,
        };
        let msg = render::answer_slack(&answer, &self.responder.chat.runtime().redactor());
        match self.responder.post(channel, None, &msg).await {
            Some(_) => Ok(()),
            None => Err(format!("chat.postMessage to {channel} failed")),
        }
    }

    async fn job(&self, channel: &str, follow: Follow) -> Result<(), String> {
        self.responder.follow(channel, None, follow).await;
        Ok(())
    }
}
