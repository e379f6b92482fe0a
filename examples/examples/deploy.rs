//! Build and deploy one environment, printing progress; exit 1 if it fails.
//!
//! `cargo run -p marvin-examples --example deploy -- path/to/marvin.yml ENV [SERVICE…]`

use marvin_core::report;
use marvin_core::runtime::JobKind;
use marvin_core::store::JobState;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, env, services @ ..] = args.as_slice() else {
        eprintln!("usage: deploy MARVIN_YML ENV [SERVICE…]");
        return std::process::ExitCode::from(2);
    };
    let kind = JobKind::Build {
        services: services.to_vec(),
        force: false,
    };
    let result = async {
        let runtime = marvin_examples::runtime(marvin_examples::load(config.as_ref())?)?;
        marvin_examples::run(&runtime, env, kind).await
    }
    .await;
    match result {
        Ok(summary) => {
            print!("{}", report::summary_text(&summary));
            if summary.state == Some(JobState::Succeeded) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("deploy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
