//! The one path every update takes, whichever way it arrived: drop repeats,
//! pick out messages meant for the bot, hand them to the dispatcher, and
//! post what comes back (a job's report sent once, then edited in place).

use std::sync::Mutex;
use std::time::Duration;

use marvin_core::chat::{Chat, Reply};
use marvin_core::render::{self, RenderOptions};
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::prelude::*;
use teloxide::types::{ChatId, MessageId, ParseMode, ReplyParameters, UpdateKind};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::address::{self, SEEN_CAPACITY, SeenUpdates};
use crate::mask_token;

/// Least time between two edits of one report (Telegram's flood limits).
const EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a failed send of a report is tried.
const ATTEMPTS: u32 = 4;

/// Takes updates from polling or the webhook.
pub(crate) struct Handler {
    chat: Chat,
    bot: Bot,
    username: String,
    token: String,
    seen: Mutex<SeenUpdates>,
    tasks: Mutex<JoinSet<()>>,
}

impl Handler {
    pub(crate) fn new(chat: Chat, bot: Bot, username: String, token: String) -> Handler {
        Handler {
            chat,
            bot,
            username,
            token,
            seen: Mutex::new(SeenUpdates::new(SEEN_CAPACITY)),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Handle one update (at most once per update id), in a task of its own.
    pub(crate) fn accept(&self, update: Update) {
        if !self
            .seen
            .lock()
            .expect("the seen-updates lock is never poisoned")
            .first_time(update.id.0)
        {
            tracing::debug!("update {} was delivered again; dropped", update.id.0);
            return;
        }
        let UpdateKind::Message(m) = &update.kind else {
            return;
        };
        let Some(incoming) = address::incoming_of(&update) else {
            return;
        };
        let Some(message) = address::to_message(&incoming, &self.username) else {
            return;
        };
        let post = Post {
            chat: self.chat.clone(),
            bot: self.bot.clone(),
            token: self.token.clone(),
            to: m.chat.id,
            reply_to: Some(m.id),
        };
        let mut tasks = self
            .tasks
            .lock()
            .expect("the task set lock is never poisoned");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let reply = post.chat.handle(&message).await;
            post.reply(reply).await;
        });
    }

    /// Wait up to `within` for the replies still being posted.
    pub(crate) async fn drain(&self, within: Duration) {
        let mut tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .expect("the task set lock is never poisoned"),
        );
        if tasks.is_empty() {
            return;
        }
        tracing::info!("waiting for {} report(s) to finish", tasks.len());
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("stopped following job reports after {}s", within.as_secs());
        }
    }
}

/// Where one reply goes.
struct Post {
    chat: Chat,
    bot: Bot,
    token: String,
    to: ChatId,
    reply_to: Option<MessageId>,
}

impl Post {
    async fn reply(&self, reply: Reply) {
        match reply {
            Reply::Ignored => {}
            Reply::Answer(answer) => {
                let html = render::answer_telegram_html(&answer, &self.chat.runtime().redactor());
                if let Err(e) = self.send(&html).await {
                    self.warn("sendMessage", &e);
                }
            }
            Reply::Job(mut follow) => {
                let opts = RenderOptions::default();
                let mut posted: Option<MessageId> = None;
                let mut shown = String::new();
                while let Some(report) = follow.next().await {
                    let html = render::telegram_html(&report, &opts, &follow.redactor);
                    let last = report.is_final();
                    if html != shown {
                        let sent = Instant::now();
                        match posted {
                            None => posted = self.send_report(&html, last).await,
                            Some(id) => self.edit_report(id, &html, last).await,
                        }
                        shown = html;
                        if !last {
                            // The next report is the newest one after this pause.
                            tokio::time::sleep_until(sent + EDIT_INTERVAL).await;
                        }
                    }
                }
            }
        }
    }

    async fn send(&self, html: &str) -> Result<Message, RequestError> {
        let request = self
            .bot
            .send_message(self.to, html)
            .parse_mode(ParseMode::Html);
        match self.reply_to {
            Some(id) => {
                request
                    .reply_parameters(ReplyParameters {
                        allow_sending_without_reply: Some(true),
                        ..ReplyParameters::new(id)
                    })
                    .await
            }
            None => request.await,
        }
    }

    /// Send the report's first message; a final one is tried harder.
    async fn send_report(&self, html: &str, last: bool) -> Option<MessageId> {
        for attempt in 1..=ATTEMPTS {
            match self.send(html).await {
                Ok(m) => return Some(m.id),
                Err(e) => {
                    self.warn("sendMessage", &e);
                    if !last && attempt >= 2 {
                        // The next report will try again.
                        return None;
                    }
                    pause(&e, attempt).await;
                }
            }
        }
        None
    }

    /// Edit the report in place; "not modified" is success, and the final
    /// report is tried until it lands or attempts run out.
    async fn edit_report(&self, id: MessageId, html: &str, last: bool) {
        for attempt in 1..=ATTEMPTS {
            let result = self
                .bot
                .edit_message_text(self.to, id, html)
                .parse_mode(ParseMode::Html)
                .await;
            match result {
                Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => return,
                Err(e) => {
                    self.warn("editMessageText", &e);
                    if !last {
                        return;
                    }
                    pause(&e, attempt).await;
                }
            }
        }
    }

    fn warn(&self, method: &str, e: &RequestError) {
        tracing::warn!(
            "{method} to chat {} failed: {}",
            self.to,
            mask_token(&e.to_string(), &self.token)
        );
    }
}

/// How long to wait before trying again: what Telegram asks for, else a
/// growing pause.
async fn pause(e: &RequestError, attempt: u32) {
    let wait = match e {
        RequestError::RetryAfter(s) => s.duration(),
        _ => Duration::from_millis(500 * u64::from(attempt)),
    };
    tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
}

/// Posts to Telegram chats on Marvin's own initiative (trigger-started jobs,
/// notices) for `marvin serve`: the same messages as answers to commands.
pub(crate) struct TelegramPoster {
    pub(crate) chat: Chat,
    pub(crate) bot: Bot,
    pub(crate) token: String,
}

impl TelegramPoster {
    fn post(&self, channel: &str) -> Result<Post, String> {
        let id: i64 = channel
            .parse()
            .map_err(|_| format!("`telegram:{channel}` is not a chat id"))?;
        Ok(Post {
            chat: self.chat.clone(),
            bot: self.bot.clone(),
            token: self.token.clone(),
            to: ChatId(id),
            reply_to: None,
        })
    }
}

#[async_trait::async_trait]
impl marvin_core::channels::Poster for TelegramPoster {
    fn scheme(&self) -> &str {
        "telegram"
    }

    async fn notice(&self, channel: &str, text: &str) -> Result<(), String> {
        let post = self.post(channel)?;
        let answer = marvin_core::chat::Answer {
            tone: marvin_core::chat::Tone::Info,
            text: text.to_string(),
            block: None,
            mentions: Vec::new(),
            data: None,
        };
        let html = render::answer_telegram_html(&answer, &self.chat.runtime().redactor());
        post.send(&html)
            .await
            .map(|_| ())
            .map_err(|e| mask_token(&e.to_string(), &self.token))
    }

    async fn job(&self, channel: &str, follow: marvin_core::chat::Follow) -> Result<(), String> {
        self.post(channel)?.reply(Reply::Job(follow)).await;
        Ok(())
    }
}
