//! Load (issue #7): 200 commands from 20 people across 11 environments
//! arrive within three seconds, concurrently, through the entry point every
//! chat front end uses (`Chat::handle`), on the real Docker engine, real git
//! repos and a real SQLite store. Every command must become exactly one job,
//! every job must succeed, the jobs of one environment must never overlap,
//! and each build key must be built once however many environments ask for
//! it at the same time.
//!
//! The arrival order is random; the seed is printed and `MARVIN_LOAD_SEED`
//! repeats a run.

mod common_e2e;
mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fleet::{ENVS, PEOPLE, SERVICES, channel, message, person};
use marvin_core::chat::{Chat, Reply};
use marvin_core::engine::Engine;
use marvin_core::render::Report;
use marvin_core::runtime::JobSummary;
use marvin_core::store::{Job, JobState};
use marvin_tests::rng::Rng;

/// How many commands arrive.
const COMMANDS: usize = 200;
/// They arrive within this many milliseconds of the first.
const SPREAD_MS: u64 = 3_000;
/// Longest a job may take from its command to its final report.
const JOB_DEADLINE: Duration = Duration::from_secs(150);

/// One command of the run: who, where, what, and after how long.
struct Planned {
    delay_ms: u64,
    identity: String,
    channel: String,
    text: String,
    env: &'static str,
    verb: &'static str,
}

/// The commands, in a seeded random order: mostly `build`, some `run hello`;
/// most typed in the environment's own channel, some naming the environment
/// from a channel bound to none.
fn commands(rng: &mut Rng) -> Vec<Planned> {
    (0..COMMANDS)
        .map(|_| {
            let env = ENVS[rng.below(ENVS.len() as u64) as usize];
            let identity = person(rng.below(PEOPLE as u64) as usize);
            let verb = if rng.below(10) == 0 { "run" } else { "build" };
            let words = if verb == "run" { "run hello" } else { "build" };
            let (channel, text) = if rng.below(4) == 0 {
                ("slack:CGENERAL".to_string(), format!("{env} {words}"))
            } else {
                (channel(env), format!("@marvin {words}"))
            };
            Planned {
                delay_ms: rng.below(SPREAD_MS),
                identity,
                channel,
                text,
                env,
                verb,
            }
        })
        .collect()
}

/// What one spawned command came back with.
struct Outcome {
    planned: Planned,
    job: u64,
    env: String,
    last: Report,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_commands_from_twenty_people_in_eleven_environments() {
    let fx = fleet::fixture("load").await;
    let chat = Chat::new(fx.runtime());
    let (mut rng, seed) = Rng::from_env("MARVIN_LOAD_SEED");
    eprintln!("load: seed {seed} (MARVIN_LOAD_SEED={seed} repeats this run)");
    let planned = commands(&mut rng);

    let start = Instant::now();
    let tasks: Vec<_> = planned
        .into_iter()
        .map(|p| {
            let chat = chat.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
                let msg = message(&p.identity, &p.channel, &p.text);
                let follow = match chat.handle(&msg).await {
                    Reply::Job(f) => f,
                    other => {
                        return Err(format!(
                            "{} in {} said {:?}: {other:?}",
                            p.identity, p.channel, p.text
                        ));
                    }
                };
                let (job, env) = (follow.job, follow.env.clone());
                match tokio::time::timeout(JOB_DEADLINE, follow.finish()).await {
                    Ok(last) => Ok(Outcome {
                        planned: p,
                        job: job as u64,
                        env,
                        last,
                    }),
                    Err(_) => Err(format!(
                        "job #{job} ({:?} in {}) did not end within {JOB_DEADLINE:?}",
                        p.text, p.channel
                    )),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut problems = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => problems.push(e),
            Err(e) => problems.push(format!("a command's task died: {e}")),
        }
    }
    let wall = start.elapsed();
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    assert_eq!(outcomes.len(), COMMANDS);

    // Every command became exactly one job, of its own environment and verb.
    let ids: BTreeSet<u64> = outcomes.iter().map(|o| o.job).collect();
    assert_eq!(ids.len(), COMMANDS, "seed {seed}: job ids repeat");
    for o in &outcomes {
        assert_eq!(o.env, o.planned.env, "seed {seed}: job #{}", o.job);
        assert_eq!(
            o.last.state,
            JobState::Succeeded,
            "seed {seed}: job #{} ({} in {}) ended {:?}",
            o.job,
            o.planned.text,
            o.planned.channel,
            o.last
        );
    }

    // The store holds exactly those jobs, each finished as reported.
    let store = chat.runtime().store();
    let jobs: Vec<Job> = store
        .jobs(&fx.project, None, 10 * COMMANDS)
        .expect("list the project's jobs");
    let stored: BTreeSet<u64> = jobs.iter().map(|j| j.id as u64).collect();
    assert_eq!(
        stored, ids,
        "seed {seed}: the store's jobs are the replies' jobs"
    );
    let by_id: BTreeMap<u64, &Outcome> = outcomes.iter().map(|o| (o.job, o)).collect();
    for j in &jobs {
        let o = by_id[&(j.id as u64)];
        assert_eq!(j.state, JobState::Succeeded, "seed {seed}: job #{}", j.id);
        assert_eq!(j.env, o.planned.env, "seed {seed}: job #{}", j.id);
        assert_eq!(j.verb, o.planned.verb, "seed {seed}: job #{}", j.id);
        assert_eq!(j.who, o.planned.identity, "seed {seed}: job #{}", j.id);
        assert_eq!(j.origin, o.planned.channel, "seed {seed}: job #{}", j.id);
    }
    // Each command was audited once, allowed, with its job's outcome.
    let audit = store
        .audit_log(&fx.project, 10 * COMMANDS)
        .expect("read the audit log");
    assert_eq!(audit.len(), COMMANDS, "seed {seed}: audit entries");
    assert!(
        audit.iter().all(|e| e.decision == "allowed"),
        "seed {seed}: {audit:#?}"
    );

    // One environment's jobs never overlap: each starts after the previous ended.
    let mut per_env: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for j in &jobs {
        per_env.entry(j.env.as_str()).or_default().push(j);
    }
    let mut overlaps = Vec::new();
    for (env, list) in per_env.iter_mut() {
        list.sort_by_key(|j| (j.started_ms, j.id));
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (a_end, b_start) = (a.finished_ms.unwrap(), b.started_ms.unwrap());
            if b_start < a_end {
                overlaps.push(format!(
                    "{env}: #{} ran {}..{} and #{} started at {}",
                    a.id,
                    a.started_ms.unwrap(),
                    a_end,
                    b.id,
                    b_start
                ));
            }
        }
        // And they started in the order they were asked for.
        let order: Vec<i64> = list.iter().map(|j| j.id).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "seed {seed}: {env} ran out of order");
    }
    assert!(overlaps.is_empty(), "seed {seed}: {overlaps:#?}");

    // Identical build keys are built once across all 200 jobs: every
    // environment tracks main, so every job wants the same three keys.
    let summaries: Vec<JobSummary> = jobs
        .iter()
        .map(|j| {
            serde_json::from_value(j.result.clone().expect("a finished job has a summary"))
                .expect("the summary reads back")
        })
        .collect();
    let mut built: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for s in &summaries {
        for (service, _) in &s.built {
            built.entry(service.as_str()).or_default().push(s.job);
        }
    }
    let expected: BTreeMap<&str, usize> = SERVICES.iter().map(|s| (*s, 1)).collect();
    let counted: BTreeMap<&str, usize> = built.iter().map(|(s, j)| (*s, j.len())).collect();
    assert_eq!(
        counted, expected,
        "seed {seed}: each service's key built once; built by jobs {built:?}"
    );
    let builds = summaries
        .iter()
        .filter(|s| s.verb == "build")
        .collect::<Vec<_>>();
    for s in &builds {
        let mut images: Vec<&str> = s
            .built
            .iter()
            .map(|(svc, _)| svc.as_str())
            .chain(s.reused.iter().map(String::as_str))
            .collect();
        images.sort();
        assert_eq!(
            images, SERVICES,
            "seed {seed}: build #{} built or reused each image once",
            s.job
        );
    }
    let keys = fx
        .engine
        .image_keys(&fx.project)
        .await
        .expect("list the project's images");
    assert_eq!(keys.len(), SERVICES.len(), "seed {seed}: {keys:?}");
    // Every environment ended up running the three services.
    for env in ENVS {
        if per_env.contains_key(env) && per_env[env].iter().any(|j| j.verb == "build") {
            let running = fx.services(env).await;
            assert_eq!(
                running.keys().map(String::as_str).collect::<Vec<_>>(),
                SERVICES,
                "seed {seed}: {env}"
            );
        }
    }

    // Figures.
    let first_created = jobs.iter().map(|j| j.created_ms).min().unwrap();
    let last_finished = jobs.iter().filter_map(|j| j.finished_ms).max().unwrap();
    let store_wall = Duration::from_millis((last_finished - first_created) as u64);
    let runs = outcomes.iter().filter(|o| o.planned.verb == "run").count();
    eprintln!(
        "load: {COMMANDS} commands ({} build, {runs} run) from {PEOPLE} people over {} environments within {SPREAD_MS} ms",
        COMMANDS - runs,
        ENVS.len()
    );
    eprintln!(
        "load: first command → last job finished {:.1} s (store: first job created → last finished {:.1} s); {:.2} jobs/s",
        wall.as_secs_f64(),
        store_wall.as_secs_f64(),
        COMMANDS as f64 / store_wall.as_secs_f64()
    );
    eprintln!(
        "load: images built {}: {built:?}",
        built.values().map(Vec::len).sum::<usize>()
    );
    eprintln!(
        "load: {:<8} {:>4} {:>9} {:>11} {:>11} {:>11}",
        "env", "jobs", "max queue", "mean run ms", "max run ms", "max wait ms"
    );
    for (env, list) in &per_env {
        let max_queue = list
            .iter()
            .map(|j| {
                let t = j.created_ms;
                list.iter()
                    .filter(|o| o.created_ms <= t && o.started_ms.unwrap() > t)
                    .count()
            })
            .max()
            .unwrap_or(0);
        let runs: Vec<i64> = list
            .iter()
            .map(|j| j.finished_ms.unwrap() - j.started_ms.unwrap())
            .collect();
        let waits = list.iter().map(|j| j.started_ms.unwrap() - j.created_ms);
        eprintln!(
            "load: {env:<8} {:>4} {max_queue:>9} {:>11} {:>11} {:>11}",
            list.len(),
            runs.iter().sum::<i64>() / runs.len() as i64,
            runs.iter().max().unwrap(),
            waits.max().unwrap()
        );
    }
}
