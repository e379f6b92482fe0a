//! Soak (issue #7): 2,000 `plan` and `status` commands, alternating, over
//! eleven environments, through `Chat::handle` in one process, on the real
//! Docker engine, real git repos and a real SQLite store. The process's
//! resident memory and open file descriptors are read after a warm-up of
//! 100 commands, every 500 commands and at the end; descriptors must not
//! grow and memory only within a bound (see [`RSS_GROWTH_LIMIT_KB`]).
//!
//! The only test of its binary, so the figures are this work's alone (tests
//! of one binary share a process).

mod common_e2e;
mod fleet;

use std::time::{Duration, Instant};

use fleet::{ENVS, channel, message, person};
use marvin_core::chat::{Chat, Reply, Tone};
use marvin_core::store::JobState;

/// How many commands in all.
const COMMANDS: usize = 2_000;
/// Commands before the first reading: the runtime's, the allocator's and
/// the connection pools' one-time growth is over by then.
const WARM_UP: usize = 100;
/// Commands in flight at once (a few people typing at the same time).
const CONCURRENT: usize = 4;
/// Descriptors the end may hold beyond the start: idle HTTP connections to
/// the engine and SQLite's files come and go with timing, not with work.
const FD_SLACK: usize = 8;
/// How much resident memory may grow between the warm-up and the end. Each
/// command's own allocations (a plan, a container list, an audit row, the
/// answer) are a few kilobytes and freed when it is answered; 1,900
/// commands leaking even 8 KB each would add ~15 MB. The allocator keeps
/// freed pages of its per-thread arenas and the SQLite page cache fills up
/// to its cap, which is the growth a healthy process shows; 16 MB leaves
/// room for that and still catches a per-command leak.
const RSS_GROWTH_LIMIT_KB: u64 = 16 * 1024;
/// The environments deployed before the soak.
const DEPLOYED: [&str; 2] = ["dev", "qa"];

/// VmRSS of this process, in kB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("the soak test reads /proc/self/status (Linux only)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/self/status has VmRSS")
}

/// Open file descriptors of this process.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("the soak test reads /proc/self/fd (Linux only)")
        .count()
}

struct Reading {
    after: usize,
    rss_kb: u64,
    fds: usize,
    elapsed: Duration,
}

/// Command `i`: `plan` on even, `status` on odd, the environment and person
/// turning round; in the environment's channel or naming it elsewhere.
async fn command(chat: &Chat, i: usize) -> Result<(), String> {
    let env = ENVS[(i / 2) % ENVS.len()];
    let verb = if i.is_multiple_of(2) {
        "plan"
    } else {
        "status"
    };
    let who = person(i % fleet::PEOPLE);
    let (where_, text) = if i.is_multiple_of(3) {
        ("slack:CGENERAL".to_string(), format!("{env} {verb}"))
    } else {
        (channel(env), format!("@marvin {verb}"))
    };
    match chat.handle(&message(&who, &where_, &text)).await {
        Reply::Answer(a) if a.tone == Tone::Info => {
            let block = a.block.unwrap_or_default();
            let expected = if verb == "plan" {
                a.text == format!("the plan for {env}:") && !block.is_empty()
            } else {
                a.text.starts_with(&format!("{env} ("))
                    && (!DEPLOYED.contains(&env)
                        || fleet::SERVICES.iter().all(|svc| {
                            block.contains(&format!("{svc} ")) && block.contains("running")
                        }))
            };
            if expected {
                Ok(())
            } else {
                Err(format!("#{i} {text:?} in {where_}: {} / {block}", a.text))
            }
        }
        other => Err(format!("#{i} {text:?} in {where_}: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_plans_and_statuses_hold_memory_and_descriptors() {
    let fx = fleet::fixture("soak").await;
    let chat = Chat::new(fx.runtime());
    // Two environments deployed, so status lists containers and plans
    // compare against them; the other nine plan from nothing.
    for env in DEPLOYED {
        let reply = chat
            .handle(&message(&person(0), &channel(env), "@marvin build"))
            .await;
        let Reply::Job(follow) = reply else {
            panic!("{env} build: {reply:?}");
        };
        let last = follow.finish().await;
        assert_eq!(last.state, JobState::Succeeded, "{env} build: {last:?}");
    }

    let start = Instant::now();
    let mut readings = Vec::new();
    let mut done = 0;
    while done < COMMANDS {
        let batch: Vec<_> = (done..(done + CONCURRENT).min(COMMANDS))
            .map(|i| {
                let chat = chat.clone();
                tokio::spawn(async move { command(&chat, i).await })
            })
            .collect();
        for t in batch {
            t.await
                .expect("a command's task")
                .unwrap_or_else(|e| panic!("{e}"));
            done += 1;
        }
        if done == WARM_UP || done.is_multiple_of(500) {
            let r = Reading {
                after: done,
                rss_kb: rss_kb(),
                fds: fds(),
                elapsed: start.elapsed(),
            };
            eprintln!(
                "soak: after {:>5} commands: VmRSS {:>7} kB, {:>3} open fds, {:>6.1} s",
                r.after,
                r.rss_kb,
                r.fds,
                r.elapsed.as_secs_f64()
            );
            readings.push(r);
        }
    }
    let total = start.elapsed();

    // Every command was audited, with its outcome.
    let audit = chat
        .runtime()
        .store()
        .audit_log(&fx.project, 10 * COMMANDS)
        .expect("read the audit log");
    assert_eq!(audit.len(), COMMANDS + 2, "audit entries");
    assert!(
        audit.iter().all(|e| e.outcome.is_some()),
        "every command's outcome is recorded"
    );

    let first = &readings[0];
    let last = readings.last().expect("readings");
    assert_eq!(first.after, WARM_UP);
    assert_eq!(last.after, COMMANDS);
    eprintln!(
        "soak: {COMMANDS} commands ({} plan, {} status), {CONCURRENT} at a time, in {:.1} s ({:.1} ms per command, {:.0} commands/s)",
        COMMANDS / 2,
        COMMANDS / 2,
        total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / COMMANDS as f64,
        COMMANDS as f64 / total.as_secs_f64()
    );
    eprintln!(
        "soak: VmRSS {} kB after warm-up → {} kB at the end ({:+} kB); fds {} → {}",
        first.rss_kb,
        last.rss_kb,
        last.rss_kb as i64 - first.rss_kb as i64,
        first.fds,
        last.fds
    );
    assert!(
        last.fds <= first.fds + FD_SLACK,
        "open descriptors grew from {} to {}",
        first.fds,
        last.fds
    );
    assert!(
        last.rss_kb <= first.rss_kb + RSS_GROWTH_LIMIT_KB,
        "resident memory grew from {} kB to {} kB, more than {RSS_GROWTH_LIMIT_KB} kB",
        first.rss_kb,
        last.rss_kb
    );
}
