//! What people read: plans and job summaries as plain text (docs/commands.md).
//! Pure: data in, text out.

use serde::Serialize;

use crate::plan::{BuildAction, DeployAction};
use crate::resolve::Plan;
use crate::source::Commit;

/// The `--json` form of a plan (issue #2's documented shape).
#[derive(Debug, Serialize)]
pub struct PlanJson<'a> {
    /// Environment name.
    pub environment: &'a str,
    /// Commits per repo.
    pub commits: Vec<CommitJson<'a>>,
    /// Build or reuse per built service.
    pub builds: &'a [crate::plan::BuildStep],
    /// Create/recreate/keep/remove per container.
    pub deploy: &'a [crate::plan::DeployStep],
    /// True when no engine answered and nothing was assumed to exist.
    pub assumed_empty_engine: bool,
    /// Things that work but deserve a look (unset compose variables).
    pub warnings: &'a [String],
}

/// A commit in `--json` output: the id is `commit`, as issue #2 documents it
/// (the stored [`Commit`] calls it `id`).
#[derive(Debug, Serialize)]
pub struct CommitJson<'a> {
    /// The repo's name.
    pub repo: &'a str,
    /// The full hex id.
    pub commit: &'a str,
    /// The author's name.
    pub author: &'a str,
    /// The author date, RFC 3339.
    pub date: &'a str,
    /// The first line of the message.
    pub subject: &'a str,
}

impl<'a> From<&'a Commit> for CommitJson<'a> {
    fn from(c: &'a Commit) -> Self {
        CommitJson {
            repo: &c.repo,
            commit: &c.id,
            author: &c.author,
            date: &c.date,
            subject: &c.subject,
        }
    }
}

impl<'a> From<&'a Plan> for PlanJson<'a> {
    fn from(p: &'a Plan) -> Self {
        PlanJson {
            environment: &p.environment,
            commits: p.commits.iter().map(CommitJson::from).collect(),
            builds: &p.builds,
            deploy: &p.deploy,
            assumed_empty_engine: p.assumed_empty_engine,
            warnings: &p.warnings,
        }
    }
}

/// One line per repo: `backend  0379baf  黄鸿 2017-05-05 10:27  fix login`.
pub fn commit_lines(commits: &[Commit]) -> Vec<String> {
    let width = commits
        .iter()
        .map(|c| c.repo.chars().count())
        .max()
        .unwrap_or(0);
    commits
        .iter()
        .map(|c| {
            // On a char boundary: never panic on an id that is not hex.
            let short =
                c.id.char_indices()
                    .nth(7)
                    .map_or(&c.id[..], |(i, _)| &c.id[..i]);
            let date = c.date.get(..16).unwrap_or(&c.date).replace('T', " ");
            format!(
                "{:width$}  {short}  {} {date}  {}",
                c.repo, c.author, c.subject
            )
        })
        .collect()
}

/// A plan as a readable table.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = format!("Plan for {} ({})", plan.environment, plan.project);
    if !plan.only.is_empty() {
        out.push_str(&format!(" — only {}", plan.only.join(", ")));
    }
    out.push('\n');
    for line in commit_lines(&plan.commits) {
        out.push_str(&format!("  {line}\n"));
    }
    if plan.assumed_empty_engine {
        out.push_str("  (no Docker engine answered: assumed no images and no containers exist)\n");
    }
    for warning in &plan.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    let width = plan
        .builds
        .iter()
        .map(|b| b.service.len())
        .chain(plan.deploy.iter().map(|d| d.service.len()))
        .max()
        .unwrap_or(0);
    if !plan.builds.is_empty() {
        out.push_str("Images:\n");
        for b in &plan.builds {
            let action = match b.action {
                BuildAction::Build => "build",
                BuildAction::Reuse => "reuse",
            };
            out.push_str(&format!(
                "  {action:<9}{:width$}  {}  ({})\n",
                b.service,
                b.image,
                b.reason.describe()
            ));
        }
    }
    if !plan.deploy.is_empty() {
        out.push_str("Containers:\n");
        for d in &plan.deploy {
            out.push_str(&format!("  {:<9}{}\n", deploy_word(d.action), d.service));
        }
    }
    let c = plan.counts();
    out.push_str(&format!(
        "{} to build, {} reused · {} to create, {} to recreate, {} unchanged, {} to remove\n",
        c.build, c.reuse, c.create, c.recreate, c.keep, c.remove
    ));
    out
}

/// The verb for a deploy action.
pub fn deploy_word(a: DeployAction) -> &'static str {
    match a {
        DeployAction::Create => "create",
        DeployAction::Recreate => "recreate",
        DeployAction::Keep => "keep",
        DeployAction::Remove => "remove",
    }
}

/// The final report of a job (docs/commands.md), as plain text:
///
/// ```text
/// ✅ develop build #42 succeeded in 1m32s — local:alice
///    backend  0379baf  黄鸿 2017-05-05 10:27  fix login
///    built 1: web (41s) · reused 4 · recreated 1 · unchanged 4
/// ```
pub fn summary_text(s: &crate::runtime::JobSummary) -> String {
    use crate::store::JobState;
    let state = s.state.unwrap_or(JobState::Running);
    let (icon, word) = match state {
        JobState::Succeeded => ("✅", "succeeded"),
        JobState::Failed => ("❌", "failed"),
        JobState::Cancelled => ("⏹", "was cancelled"),
        JobState::Interrupted => ("⚠️", "was interrupted"),
        JobState::Queued => ("⏳", "is queued"),
        JobState::Running => ("⏳", "is running"),
    };
    let what = if s.args.is_empty() {
        s.verb.clone()
    } else {
        format!("{} {}", s.verb, s.args.join(" "))
    };
    let mut out = format!(
        "{icon} {} {what} #{} {word} in {}",
        s.env,
        s.job,
        crate::duration::format(std::time::Duration::from_millis(s.duration_ms))
    );
    if let (JobState::Failed, Some(step)) = (state, &s.failed_step) {
        out.push_str(&format!(" at {step}"));
    }
    out.push_str(&format!(" — {}\n", s.who));
    for line in commit_lines(&s.commits) {
        out.push_str(&format!("   {line}\n"));
    }
    if s.verb != "run" {
        let mut parts = Vec::new();
        let built: Vec<String> = s
            .built
            .iter()
            .map(|(svc, ms)| {
                format!(
                    "{svc} ({})",
                    crate::duration::format(std::time::Duration::from_millis(*ms))
                )
            })
            .collect();
        if built.is_empty() {
            parts.push("built 0".to_string());
        } else {
            parts.push(format!("built {}: {}", built.len(), built.join(", ")));
        }
        parts.push(format!("reused {}", s.reused.len()));
        if !s.created.is_empty() {
            parts.push(format!(
                "created {}: {}",
                s.created.len(),
                s.created.join(", ")
            ));
        }
        parts.push(if s.recreated.is_empty() {
            "recreated 0".to_string()
        } else {
            format!(
                "recreated {}: {}",
                s.recreated.len(),
                s.recreated.join(", ")
            )
        });
        if !s.removed.is_empty() {
            parts.push(format!(
                "removed {}: {}",
                s.removed.len(),
                s.removed.join(", ")
            ));
        }
        parts.push(format!("unchanged {}", s.unchanged.len()));
        out.push_str(&format!("   {}\n", parts.join(" · ")));
    }
    if let Some(code) = s.exit_code {
        out.push_str(&format!("   exit code {code}\n"));
    }
    if !s.rolled_back.is_empty() {
        out.push_str(&format!(
            "   put back in service: {}\n",
            s.rolled_back.join(", ")
        ));
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("   {e}\n"));
    }
    if state == JobState::Failed && !s.last_lines.is_empty() {
        out.push_str("   last lines:\n");
        for l in &s.last_lines {
            out.push_str(&format!("     {l}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DeployStep;

    #[test]
    fn a_commit_id_that_is_not_hex_is_shortened_on_a_char_boundary() {
        // Found by tests/properties.rs: slicing bytes panicked inside `é`.
        let c = Commit {
            repo: "app".into(),
            id: "abcdeéfgh".into(),
            author: "a".into(),
            date: "d".into(),
            subject: "s".into(),
        };
        assert_eq!(commit_lines(&[c]), ["app  abcdeéf  a d  s"]);
    }

    #[test]
    fn the_text_plan_keeps_a_space_between_the_longest_action_and_the_service() {
        let plan = Plan {
            project: "p".into(),
            environment: "dev".into(),
            commits: Vec::new(),
            builds: Vec::new(),
            deploy: vec![
                DeployStep {
                    service: "api".into(),
                    action: DeployAction::Recreate,
                },
                DeployStep {
                    service: "web".into(),
                    action: DeployAction::Keep,
                },
            ],
            only: Vec::new(),
            assumed_empty_engine: false,
            build_specs: Default::default(),
            desired: Vec::new(),
            waves: Vec::new(),
            warnings: Vec::new(),
        };
        let text = plan_text(&plan);
        assert!(text.contains("  recreate api\n"), "{text}");
        assert!(text.contains("  keep     web\n"), "{text}");
    }

    #[test]
    fn plan_json_names_the_commit_id_commit() {
        let plan = Plan {
            project: "cloudmatrix".into(),
            environment: "dev".into(),
            commits: vec![Commit {
                repo: "backend".into(),
                id: "0379baf0000000000000000000000000000000000".into(),
                author: "黄鸿".into(),
                date: "2017-05-05T10:27:00+08:00".into(),
                subject: "fix login".into(),
            }],
            builds: Vec::new(),
            deploy: Vec::new(),
            only: Vec::new(),
            assumed_empty_engine: true,
            warnings: vec!["docker-compose.yml: services.web.image: variable `TAG` is not set; using an empty string".into()],
            build_specs: Default::default(),
            desired: Vec::new(),
            waves: Vec::new(),
        };
        let json = serde_json::to_value(PlanJson::from(&plan)).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({
                "environment": "dev",
                "commits": [{
                    "repo": "backend",
                    "commit": "0379baf0000000000000000000000000000000000",
                    "author": "黄鸿",
                    "date": "2017-05-05T10:27:00+08:00",
                    "subject": "fix login",
                }],
                "builds": [],
                "deploy": [],
                "assumed_empty_engine": true,
                "warnings": ["docker-compose.yml: services.web.image: variable `TAG` is not set; using an empty string"],
            })
        );
    }
}
