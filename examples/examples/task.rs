//! Run a task from marvin.yml in an environment; exit with the task's code.
//!
//! `cargo run -p marvin-examples --example task -- path/to/marvin.yml ENV TASK [ARG…]`

use marvin_core::report;
use marvin_core::runtime::JobKind;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, env, task, rest @ ..] = args.as_slice() else {
        eprintln!("usage: task MARVIN_YML ENV TASK [ARG…]");
        return std::process::ExitCode::from(2);
    };
    let kind = JobKind::Run {
        task: task.clone(),
        args: rest.to_vec(),
    };
    let result = async {
        let runtime = marvin_examples::runtime(marvin_examples::load(config.as_ref())?)?;
        marvin_examples::run(&runtime, env, kind).await
    }
    .await;
    match result {
        Ok(summary) => {
            print!("{}", report::summary_text(&summary));
            // The task's own exit code; 1 when it never ran.
            let code = summary.exit_code.unwrap_or(1).clamp(0, 255) as u8;
            std::process::ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("task: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
