//! What Marvin takes from Slack's events: which ones are commands (mentions
//! of the bot, direct messages from people), who sent them, where, and the
//! text without the bot's mention; and the bounded memory of event ids that
//! makes Slack's retries harmless. Pure: no I/O.

use slack_morphism::prelude::{SlackChannelType, SlackEventCallbackBody};

/// The bot's own identity, from `auth.test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    /// The bot user's id (`U…`): mentions of it are stripped, its messages ignored.
    pub user_id: String,
    /// The bot's id (`B…`), when Slack gave one.
    pub bot_id: Option<String>,
    /// The bot user's name, when Slack gave one: `help` names it.
    pub name: Option<String>,
}

/// A command addressed to Marvin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's user id (`U…`).
    pub user: String,
    /// The channel (`C…`, `G…`, or `D…` for a direct message).
    pub channel: String,
    /// The command text, the bot's mention removed.
    pub text: String,
    /// The thread the message was in, if any: answers go there.
    pub thread_ts: Option<String>,
}

impl Incoming {
    /// The chat identity of the sender (`slack:U…`).
    pub fn identity(&self) -> String {
        format!("slack:{}", self.user)
    }

    /// The chat channel (`slack:C…`), which marvin.yml may bind to an environment.
    pub fn chat_channel(&self) -> String {
        format!("slack:{}", self.channel)
    }
}

/// The command in an event, or `None` when the event is not one: another
/// kind of event, a message in a channel that does not mention the bot (the
/// mention arrives as its own `app_mention` event), an edit or other
/// subtype, or a message from the bot itself or any other bot.
pub fn command_of(event: &SlackEventCallbackBody, bot: &BotIdentity) -> Option<Incoming> {
    match event {
        SlackEventCallbackBody::AppMention(m) => {
            // In a direct message the `message` event below answers it.
            if m.channel.0.starts_with('D') || m.user.0 == bot.user_id {
                return None;
            }
            Some(Incoming {
                user: m.user.0.clone(),
                channel: m.channel.0.clone(),
                text: strip_mention(m.content.text.as_deref().unwrap_or(""), &bot.user_id),
                thread_ts: m.origin.thread_ts.as_ref().map(|t| t.0.clone()),
            })
        }
        SlackEventCallbackBody::Message(m) => {
            let is_im = m.origin.channel_type.as_ref() == Some(&SlackChannelType("im".into()));
            if !is_im || m.subtype.is_some() || m.sender.bot_id.is_some() || m.hidden == Some(true)
            {
                return None;
            }
            let user = m.sender.user.as_ref()?.0.clone();
            if user == bot.user_id {
                return None;
            }
            let text = m.content.as_ref()?.text.as_deref()?;
            Some(Incoming {
                user,
                channel: m.origin.channel.as_ref()?.0.clone(),
                text: strip_mention(text, &bot.user_id),
                thread_ts: m.origin.thread_ts.as_ref().map(|t| t.0.clone()),
            })
        }
        _ => None,
    }
}

/// The text without the bot's mention (`<@UBOT>` or `<@UBOT|marvin>`), trimmed.
/// Other people's mentions stay: they may be arguments.
pub fn strip_mention(text: &str, bot_user: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('>') {
            Some(end) if after[..end].split('|').next() == Some(bot_user) => {
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("<@");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    // Slack escapes these three in message text.
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The event ids seen lately, so a retried event (Slack's `X-Slack-Retry-Num`,
/// or a Socket Mode envelope sent again) starts nothing twice: marvin-core's
/// one bounded memory of ids, which forgets the oldest first.
pub type SeenEvents = marvin_core::webhook::DeliverySeen;

/// How many event ids are remembered by default (Slack retries within minutes).
pub const SEEN_EVENTS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> BotIdentity {
        BotIdentity {
            user_id: "UBOT".into(),
            bot_id: Some("BBOT".into()),
            name: Some("shipit".into()),
        }
    }

    fn event(json: serde_json::Value) -> SlackEventCallbackBody {
        serde_json::from_value(json).expect("a valid Slack event")
    }

    #[test]
    fn a_mention_becomes_a_command_without_the_mention() {
        let e = event(serde_json::json!({
            "type": "app_mention", "user": "U1", "channel": "C1",
            "text": "<@UBOT> dev build", "ts": "1.2", "event_ts": "1.2"
        }));
        assert_eq!(
            command_of(&e, &bot()),
            Some(Incoming {
                user: "U1".into(),
                channel: "C1".into(),
                text: "dev build".into(),
                thread_ts: None,
            })
        );
    }

    #[test]
    fn a_direct_message_becomes_a_command_and_bots_are_ignored() {
        let dm = |extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "type": "message", "channel": "D1", "channel_type": "im",
                "user": "U1", "text": "dev status", "ts": "1.2"
            });
            for (k, x) in extra.as_object().expect("an object") {
                v[k] = x.clone();
            }
            command_of(&event(v), &bot())
        };
        assert_eq!(
            dm(serde_json::json!({})).map(|i| i.text),
            Some("dev status".into())
        );
        assert_eq!(dm(serde_json::json!({"bot_id": "B2"})), None, "another bot");
        assert_eq!(dm(serde_json::json!({"user": "UBOT"})), None, "itself");
        assert_eq!(
            dm(serde_json::json!({"subtype": "message_changed"})),
            None,
            "an edit"
        );
        assert_eq!(dm(serde_json::json!({"subtype": "bot_message"})), None);
        assert_eq!(
            dm(serde_json::json!({"channel_type": "channel", "channel": "C1"})),
            None,
            "a channel message without a mention"
        );
    }

    #[test]
    fn a_mention_in_a_direct_message_is_answered_once() {
        let e = event(serde_json::json!({
            "type": "app_mention", "user": "U1", "channel": "D1",
            "text": "<@UBOT> help", "ts": "1.2"
        }));
        assert_eq!(command_of(&e, &bot()), None);
    }

    #[test]
    fn only_the_bots_own_mention_is_stripped() {
        assert_eq!(strip_mention("<@UBOT> dev build", "UBOT"), "dev build");
        assert_eq!(
            strip_mention("<@UBOT|marvin>   dev   build", "UBOT"),
            "dev build"
        );
        assert_eq!(
            strip_mention("hey <@UBOT> lock dev <@U2>", "UBOT"),
            "hey lock dev <@U2>"
        );
        assert_eq!(strip_mention("<@UBOT", "UBOT"), "<@UBOT");
        assert_eq!(
            strip_mention("run x &lt;y&gt; &amp;", "UBOT"),
            "run x <y> &"
        );
    }

    #[test]
    fn seen_events_forget_the_oldest_beyond_capacity() {
        let mut seen = SeenEvents::new(2);
        assert!(seen.first_time("a"));
        assert!(!seen.first_time("a"));
        assert!(seen.first_time("b"));
        assert!(seen.first_time("c"));
        assert_eq!(seen.len(), 2);
        assert!(seen.first_time("a"), "a was forgotten");
        assert!(!seen.first_time("c"));
    }
}
