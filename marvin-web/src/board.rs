//! What the page shows of one environment, as plain data (pure): its live
//! state, its lock and its last result, and whether the visitor may press
//! its button. [`card_html`] renders it; the page and the live updates use
//! the same function, so they never disagree.

use marvin_core::access::{self, Decision};
use marvin_core::command::Verb;
use marvin_core::config::{Environment, Project};
use marvin_core::locks;
use marvin_core::source::Commit;
use marvin_core::store::{Job, JobState, Lock};
use serde::Serialize;

/// An environment's live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Live {
    /// Nothing queued or running.
    Idle,
    /// A job waits for the environment's slot.
    Queued {
        /// The job.
        job: i64,
    },
    /// A job waits for an admin's approval.
    AwaitingApproval {
        /// The job.
        job: i64,
    },
    /// A job runs.
    Running {
        /// The job.
        job: i64,
        /// Its current step (`fetch`, `build`, `deploy`, …).
        step: Option<String>,
    },
}

/// One environment's card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Card {
    /// Environment name.
    pub env: String,
    /// Its aliases.
    pub aliases: Vec<String>,
    /// Whether it is protected.
    pub protected: bool,
    /// What happens now.
    pub live: Live,
    /// Its lock, in words (`dev is locked by …, until …`), and the holder.
    pub lock: Option<(String, String)>,
    /// The newest finished job.
    pub last: Option<LastJob>,
    /// What the button does for this visitor: `None`, no button.
    pub button: Option<Button>,
}

/// The last finished job, as the card shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastJob {
    /// Job id.
    pub job: i64,
    /// Final state.
    pub state: JobState,
    /// `build`, `run migrate`, …
    pub what: String,
    /// Who asked.
    pub who: String,
    /// When it finished (unix millis).
    pub finished_ms: i64,
    /// Commits it built from.
    pub commits: Vec<Commit>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The button, for a signed-in visitor who may use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Button {
    /// Its label: `Build`, or `Ask to build` on a protected environment.
    pub label: String,
    /// Why it cannot be pressed now (someone else's lock), if so.
    pub disabled: Option<String>,
}

/// Everything [`card`] needs, read from the store by the caller.
pub struct Facts<'a> {
    /// The environment.
    pub env: &'a Environment,
    /// Its queued and running jobs, oldest first.
    pub active: &'a [Job],
    /// Whether the oldest queued job waits for an approval.
    pub awaiting_approval: bool,
    /// The current step of the running job.
    pub step: Option<String>,
    /// The newest finished job.
    pub last_finished: Option<&'a Job>,
    /// The lock in force.
    pub lock: Option<&'a Lock>,
    /// Now (unix millis).
    pub now_ms: i64,
}

/// The card of one environment for a visitor (`None`: not signed in).
pub fn card(project: &Project, facts: &Facts<'_>, visitor: Option<&str>) -> Card {
    let env = facts.env;
    let running = facts.active.iter().find(|j| j.state == JobState::Running);
    let live = match (running, facts.active.first()) {
        (Some(j), _) => Live::Running {
            job: j.id,
            step: facts.step.clone(),
        },
        (None, Some(j)) if facts.awaiting_approval => Live::AwaitingApproval { job: j.id },
        (None, Some(j)) => Live::Queued { job: j.id },
        (None, None) => Live::Idle,
    };
    let lock = facts
        .lock
        .filter(|l| l.in_force(facts.now_ms))
        .map(|l| (locks::describe(l, facts.now_ms), l.holder.clone()));
    let last = facts.last_finished.map(|j| LastJob {
        job: j.id,
        state: j.state,
        what: if j.args.is_empty() {
            j.verb.clone()
        } else {
            format!("{} {}", j.verb, j.args.join(" "))
        },
        who: j.who.clone(),
        finished_ms: j.finished_ms.unwrap_or(j.created_ms),
        commits: j
            .result
            .as_ref()
            .and_then(|r| r.get("commits"))
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default(),
        error: j.error.clone(),
    });
    let button = visitor.and_then(|who| {
        let build = Verb::Build {
            services: vec![],
            force: false,
        };
        let label = match access::decide(project, who, Some(env), &build, None) {
            Decision::Allow => "Build",
            Decision::NeedsApproval => "Ask to build",
            Decision::Deny { .. } => return None,
        };
        let disabled = match &lock {
            Some((words, holder)) if holder != who => Some(words.clone()),
            _ => None,
        };
        Some(Button {
            label: label.to_string(),
            disabled,
        })
    });
    Card {
        env: env.name.clone(),
        aliases: env.aliases.clone(),
        protected: env.protected,
        live,
        lock,
        last,
        button,
    }
}

/// `2017-05-05T10:27:00+08:00` → `2017-05-05 10:27`.
fn short_date(date: &str) -> String {
    date.replacen('T', " ", 1).chars().take(16).collect()
}

/// HTML escaping for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The state word a test or a person reads: `idle`, `queued`,
/// `awaiting approval`, `running: build`, `succeeded`, `failed`, `locked`.
pub fn state_word(card: &Card) -> String {
    match &card.live {
        Live::Running { step: Some(s), .. } => format!("running: {s}"),
        Live::Running { step: None, .. } => "running".into(),
        Live::Queued { .. } => "queued".into(),
        Live::AwaitingApproval { .. } => "awaiting approval".into(),
        Live::Idle => match &card.last {
            Some(l) => l.state.as_str().into(),
            None => "idle".into(),
        },
    }
}

/// The inside of an environment's card (the element `#env-NAME` holds it).
/// `csrf` is the visitor's form token; the button is a form posting it.
pub fn card_html(card: &Card, csrf: Option<&str>, now_ms: i64) -> String {
    let mut h = String::new();
    let state = state_word(card);
    let class = state.split(':').next().unwrap_or("").replace(' ', "-");
    h.push_str(&format!(
        "<h2>{}{}{}</h2>",
        esc(&card.env),
        if card.aliases.is_empty() {
            String::new()
        } else {
            format!(" <small>({})</small>", esc(&card.aliases.join(", ")))
        },
        if card.protected {
            " <span class=\"tag\">protected</span>"
        } else {
            ""
        }
    ));
    h.push_str(&format!(
        "<p class=\"state {class}\" data-state=\"{}\">{}</p>",
        esc(&state),
        esc(&match &card.live {
            Live::Running { job, .. } | Live::Queued { job } | Live::AwaitingApproval { job } => {
                format!("{state} (job #{job})")
            }
            Live::Idle => state.clone(),
        })
    ));
    if let Some((words, _)) = &card.lock {
        h.push_str(&format!("<p class=\"lock\">🔒 {}</p>", esc(words)));
    }
    if let Some(last) = &card.last {
        let ago_ms = (now_ms - last.finished_ms).max(0) as u64;
        let ago = if ago_ms < 1_000 {
            "just now".to_string()
        } else {
            format!(
                "{} ago",
                marvin_core::duration::format(std::time::Duration::from_millis(
                    ago_ms / 1_000 * 1_000
                ))
            )
        };
        h.push_str(&format!(
            "<p class=\"last\">last: <a href=\"/jobs/{id}\">#{id} {what}</a> {state} — {who}, {ago}</p>",
            id = last.job,
            what = esc(&last.what),
            state = last.state.as_str(),
            who = esc(&last.who),
        ));
        if !last.commits.is_empty() {
            h.push_str("<ul class=\"commits\">");
            for c in &last.commits {
                h.push_str(&format!(
                    "<li><b>{}</b> <code>{}</code> {} {} — {}</li>",
                    esc(&c.repo),
                    esc(&c.id[..c.id.len().min(7)]),
                    esc(&c.author),
                    esc(&short_date(&c.date)),
                    esc(&c.subject)
                ));
            }
            h.push_str("</ul>");
        }
        if let (JobState::Failed, Some(e)) = (last.state, &last.error) {
            h.push_str(&format!("<p class=\"error\">{}</p>", esc(e)));
        }
    }
    if let (Some(button), Some(csrf)) = (&card.button, csrf) {
        let busy = !matches!(card.live, Live::Idle);
        let disabled = button.disabled.is_some() || busy;
        h.push_str(&format!(
            "<form method=\"post\" action=\"/envs/{env}/build\" class=\"build\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"build-{env}\"{dis}>{label}</button></form>",
            env = esc(&card.env),
            csrf = esc(csrf),
            dis = if disabled { " disabled" } else { "" },
            label = esc(&button.label),
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const YML: &str = "\
project: shop
repos:
  app: {url: /srv/app.git}
environments:
  dev: {aliases: [develop]}
  prod: {protected: true}
people:
  default_role: viewer
  admins: ['web:ann']
  developers: ['web:dan']
";

    fn project() -> Project {
        Project::parse(YML, "marvin.yml").unwrap()
    }

    fn job(id: i64, state: JobState) -> Job {
        Job {
            id,
            project: "shop".into(),
            env: "dev".into(),
            verb: "build".into(),
            args: vec![],
            who: "web:dan".into(),
            origin: "web".into(),
            trigger: "person".into(),
            state,
            created_ms: 1_000,
            started_ms: Some(1_000),
            finished_ms: Some(61_000),
            result: Some(serde_json::json!({"commits": [
                {"repo": "app", "id": "0379bafeeeeeee", "author": "黄鸿", "date": "2017-05-05 10:27", "subject": "fix <login>"}
            ]})),
            error: None,
        }
    }

    fn facts<'a>(
        env: &'a Environment,
        active: &'a [Job],
        last: Option<&'a Job>,
        lock: Option<&'a Lock>,
    ) -> Facts<'a> {
        Facts {
            env,
            active,
            awaiting_approval: false,
            step: Some("build".into()),
            last_finished: last,
            lock,
            now_ms: 120_000,
        }
    }

    #[test]
    fn a_visitor_who_is_not_signed_in_sees_state_but_no_button() {
        let p = project();
        let dev = p.environment("dev").unwrap();
        let last = job(7, JobState::Succeeded);
        let c = card(&p, &facts(dev, &[], Some(&last), None), None);
        assert_eq!(c.button, None);
        let html = card_html(&c, None, 120_000);
        assert!(!html.contains("<button"), "{html}");
        assert!(!html.contains("<form"), "{html}");
        assert!(html.contains("data-state=\"succeeded\""), "{html}");
        assert!(html.contains("fix &lt;login&gt;"), "escaped: {html}");
        assert!(html.contains("<code>0379baf</code> 黄鸿"), "{html}");
    }

    #[test]
    fn the_button_follows_the_permission_rules() {
        let p = project();
        let dev = p.environment("dev").unwrap();
        let prod = p.environment("prod").unwrap();
        let none: [Job; 0] = [];
        let label = |env, who| {
            card(&p, &facts(env, &none, None, None), Some(who))
                .button
                .map(|b| b.label)
        };
        assert_eq!(label(dev, "web:dan").as_deref(), Some("Build"));
        assert_eq!(label(prod, "web:dan").as_deref(), Some("Ask to build"));
        assert_eq!(label(prod, "web:ann").as_deref(), Some("Build"));
        assert_eq!(label(dev, "web:vic"), None, "viewers get no button");
    }

    #[test]
    fn running_queued_locked_and_failed_read_as_such() {
        let p = project();
        let dev = p.environment("dev").unwrap();
        let running = [job(8, JobState::Running), job(9, JobState::Queued)];
        let c = card(&p, &facts(dev, &running, None, None), Some("web:dan"));
        assert_eq!(state_word(&c), "running: build");
        let html = card_html(&c, Some("tok"), 120_000);
        assert!(html.contains(" disabled>Build</button>"), "busy: {html}");

        let queued = [job(9, JobState::Queued)];
        let mut f = facts(dev, &queued, None, None);
        assert_eq!(state_word(&card(&p, &f, None)), "queued");
        f.awaiting_approval = true;
        assert_eq!(state_word(&card(&p, &f, None)), "awaiting approval");

        let lock = Lock {
            project: "shop".into(),
            env: "dev".into(),
            holder: "web:ann".into(),
            reason: "demo <b>".into(),
            since_ms: 0,
            until_ms: Some(3_720_000),
        };
        let mut failed = job(10, JobState::Failed);
        failed.error = Some("build of web failed".into());
        let c = card(
            &p,
            &facts(dev, &[], Some(&failed), Some(&lock)),
            Some("web:dan"),
        );
        let html = card_html(&c, Some("tok"), 120_000);
        assert!(
            html.contains("dev is locked by web:ann: demo &lt;b&gt;"),
            "{html}"
        );
        assert!(
            html.contains(" disabled>Build</button>"),
            "someone else's lock: {html}"
        );
        assert!(html.contains("build of web failed"), "{html}");
        // The holder may still build.
        let c = card(
            &p,
            &facts(dev, &[], Some(&failed), Some(&lock)),
            Some("web:ann"),
        );
        assert!(!card_html(&c, Some("tok"), 120_000).contains("disabled"));
    }
}
