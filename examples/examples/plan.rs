//! Print what `build` would do in an environment; touches nothing.
//!
//! `cargo run -p marvin-examples --example plan -- path/to/marvin.yml ENV`

use marvin_core::marvin::PlanOptions;
use marvin_core::report;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, env] = args.as_slice() else {
        eprintln!("usage: plan MARVIN_YML ENV");
        return std::process::ExitCode::from(2);
    };
    let result = async {
        let marvin = marvin_examples::load(config.as_ref())?;
        marvin
            .plan(env, &PlanOptions::default())
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(plan) => {
            print!("{}", report::plan_text(&plan));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plan: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
