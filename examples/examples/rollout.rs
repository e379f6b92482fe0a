//! Deploy several environments in order, stopping at the first that fails.
//!
//! `cargo run -p marvin-examples --example rollout -- path/to/marvin.yml ENV…`

use marvin_core::report;
use marvin_core::runtime::JobKind;
use marvin_core::store::JobState;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, envs @ ..] = args.as_slice() else {
        eprintln!("usage: rollout MARVIN_YML ENV…");
        return std::process::ExitCode::from(2);
    };
    if envs.is_empty() {
        eprintln!("usage: rollout MARVIN_YML ENV…");
        return std::process::ExitCode::from(2);
    }
    let runtime = match marvin_examples::load(config.as_ref()).and_then(marvin_examples::runtime) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rollout: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for (i, env) in envs.iter().enumerate() {
        println!("== {env} ({} of {})", i + 1, envs.len());
        let kind = JobKind::Build {
            services: vec![],
            force: false,
        };
        let ok = match marvin_examples::run(&runtime, env, kind).await {
            Ok(summary) => {
                print!("{}", report::summary_text(&summary));
                summary.state == Some(JobState::Succeeded)
            }
            Err(e) => {
                eprintln!("rollout: {env}: {e}");
                false
            }
        };
        if !ok {
            let skipped = &envs[i + 1..];
            if !skipped.is_empty() {
                println!(
                    "rollout stopped at {env}; not deployed: {}",
                    skipped.join(", ")
                );
            }
            return std::process::ExitCode::FAILURE;
        }
    }
    println!("rollout done: {}", envs.join(" → "));
    std::process::ExitCode::SUCCESS
}
