//! Pure translation of what Telegram delivers into what the dispatcher
//! reads: which messages are meant for this bot, the text with its mention
//! removed, and who and where it came from. Also the memory of update ids
//! already handled (Telegram may deliver one twice).

use marvin_core::chat::Message;
use teloxide::types::{Update, UpdateKind};

/// How many update ids are remembered to drop repeats.
pub const SEEN_CAPACITY: usize = 4096;

/// A Telegram text message, reduced to what addressing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The sender's user id (`from.id`); `None` for anonymous senders.
    pub from: Option<u64>,
    /// Whether the sender is a bot (never answered: no bot loops).
    pub from_bot: bool,
    /// The chat id (negative for groups).
    pub chat: i64,
    /// A one-to-one chat with the bot.
    pub private: bool,
    /// The message text.
    pub text: &'a str,
}

/// The text message an update carries, or `None` for any other update
/// (edits, callbacks, stickers, messages without text).
pub fn incoming_of(update: &Update) -> Option<Incoming<'_>> {
    let UpdateKind::Message(m) = &update.kind else {
        return None;
    };
    Some(Incoming {
        from: m.from.as_ref().map(|u| u.id.0),
        from_bot: m.from.as_ref().is_some_and(|u| u.is_bot),
        chat: m.chat.id.0,
        private: m.chat.is_private(),
        text: m.text()?,
    })
}

/// The dispatcher's [`Message`] for a Telegram message, or `None` when it
/// is not meant for this bot: in groups only slash commands and messages
/// that mention `@bot` count; in private chats every text does. `bot` is
/// the bot's user name without `@`.
pub fn to_message(m: &Incoming<'_>, bot: &str) -> Option<Message> {
    let from = m.from?;
    if m.from_bot {
        return None;
    }
    let text = m.text.trim();
    if text.is_empty() {
        return None;
    }
    let text = if text.starts_with('/') || m.private {
        // `/build@otherbot` is left to the parser, which knows it is not ours.
        strip_mention(text, bot).unwrap_or_else(|| text.to_string())
    } else {
        strip_mention(text, bot)?
    };
    Some(Message {
        identity: format!("telegram:{from}"),
        channel: format!("telegram:{}", m.chat),
        text,
        bot: Some(bot.to_string()),
    })
}

/// The text without the first `@bot` mention (a whole word, any case), or
/// `None` if the bot is not mentioned.
///
/// Compared on the text itself, ASCII case folded (Telegram user names are
/// ASCII): offsets into a lower-cased copy do not line up with the text
/// when lower-casing changes a character's length (`İ` grows, `K` the
/// Kelvin sign shrinks), and slicing the text at them panicked.
fn strip_mention(text: &str, bot: &str) -> Option<String> {
    let needle = format!("@{}", bot.trim_start_matches('@'));
    let mut from = 0;
    while let Some(i) = text[from..].find('@').map(|i| i + from) {
        let end = i + needle.len();
        if text
            .get(i..end)
            .is_some_and(|word| word.eq_ignore_ascii_case(&needle))
        {
            let before_ok = !is_name_char(text[..i].chars().next_back());
            let after_ok = !is_name_char(text[end..].chars().next());
            if before_ok && after_ok {
                return Some(join(&text[..i], &text[end..]));
            }
        }
        from = i + 1;
    }
    None
}

fn is_name_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The words before and after a mention, without the `:`/`,` people type
/// after one (`@bot: dev build`).
fn join(before: &str, after: &str) -> String {
    let before = before.trim();
    let after = after.trim_start_matches([':', ',']).trim();
    match (before.is_empty(), after.is_empty()) {
        (true, _) => after.to_string(),
        (false, true) => before.to_string(),
        (false, false) => format!("{before} {after}"),
    }
}

/// The update ids seen lately, so an update delivered twice (a retried
/// webhook, an overlapping poll) is handled once: marvin-core's one bounded
/// memory of ids, which forgets the oldest first.
#[derive(Debug)]
pub struct SeenUpdates(marvin_core::webhook::DeliverySeen);

impl SeenUpdates {
    /// A memory of at most `capacity` update ids (at least one).
    pub fn new(capacity: usize) -> SeenUpdates {
        SeenUpdates(marvin_core::webhook::DeliverySeen::new(capacity))
    }

    /// Remember `id`; `true` if it is new, `false` if it was seen already.
    pub fn first_time(&mut self, id: u32) -> bool {
        self.0.first_time(&id.to_string())
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "marvin_bot";

    fn group(text: &str) -> Incoming<'_> {
        Incoming {
            from: Some(42),
            from_bot: false,
            chat: -100123,
            private: false,
            text,
        }
    }

    fn private(text: &str) -> Incoming<'_> {
        Incoming {
            private: true,
            chat: 42,
            ..group(text)
        }
    }

    fn text_of(m: &Incoming<'_>) -> Option<String> {
        to_message(m, BOT).map(|m| m.text)
    }

    #[test]
    fn group_messages_count_only_when_they_mention_the_bot_or_are_commands() {
        assert_eq!(text_of(&group("dev build")), None);
        assert_eq!(
            text_of(&group("@marvin_bot dev build")).as_deref(),
            Some("dev build")
        );
        assert_eq!(
            text_of(&group("@Marvin_Bot: dev build")).as_deref(),
            Some("dev build")
        );
        assert_eq!(
            text_of(&group("please @marvin_bot dev build")).as_deref(),
            Some("please dev build")
        );
        assert_eq!(text_of(&group("@marvin_bot_two dev build")), None);
        assert_eq!(text_of(&group("/build dev")).as_deref(), Some("/build dev"));
        assert_eq!(
            text_of(&group("/build@marvin_bot dev")).as_deref(),
            Some("/build@marvin_bot dev")
        );
        // Left for the parser to refuse as another bot's.
        assert_eq!(
            text_of(&group("/build@other_bot dev")).as_deref(),
            Some("/build@other_bot dev")
        );
    }

    #[test]
    fn private_chats_take_plain_text() {
        assert_eq!(text_of(&private("dev build")).as_deref(), Some("dev build"));
        assert_eq!(
            text_of(&private("@marvin_bot dev build")).as_deref(),
            Some("dev build")
        );
        assert_eq!(text_of(&private("   ")), None);
    }

    #[test]
    fn identity_and_channel_carry_the_telegram_ids() {
        let m = to_message(&group("/status dev"), BOT).expect("a command");
        assert_eq!(m.identity, "telegram:42");
        assert_eq!(m.channel, "telegram:-100123");
        assert_eq!(m.bot.as_deref(), Some(BOT));
    }

    #[test]
    fn bots_and_anonymous_senders_are_not_answered() {
        let from_bot = Incoming {
            from_bot: true,
            ..private("dev build")
        };
        assert_eq!(to_message(&from_bot, BOT), None);
        let anonymous = Incoming {
            from: None,
            ..group("/build dev")
        };
        assert_eq!(to_message(&anonymous, BOT), None);
    }

    #[test]
    fn non_ascii_text_keeps_its_words() {
        assert_eq!(
            text_of(&group("Grüße @marvin_bot dev build")).as_deref(),
            Some("Grüße dev build")
        );
    }

    #[test]
    fn text_whose_lower_case_has_other_offsets_does_not_panic() {
        // Found by the `telegram` fuzz target: `İ` lower-cases to three bytes
        // and `K` (Kelvin) to one, so the lengths agree but the offsets do not.
        assert_eq!(text_of(&group("İİ@marvin_bot K")).as_deref(), Some("İİ K"));
        assert_eq!(
            text_of(&group("İİ @Marvin_Bot K dev build")).as_deref(),
            Some("İİ K dev build")
        );
        assert_eq!(
            text_of(&private("K @marvin_bot: status")).as_deref(),
            Some("K status")
        );
    }

    #[test]
    fn a_repeated_update_id_is_seen_once_and_memory_stays_bounded() {
        let mut seen = SeenUpdates::new(3);
        assert!(seen.first_time(1));
        assert!(!seen.first_time(1));
        for id in 2..=10 {
            assert!(seen.first_time(id));
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.first_time(10));
        assert!(seen.first_time(1), "forgotten once out of the window");
    }
}
