//! The `chump` binary: parses the command line and runs the command.

use chump::config::{Cli, Command, Config};
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::from_args(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("chump: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            chump::logging::init(config.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("chump: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                chump::server::cancel_on_signals(shutdown.clone());
                chump::server::run(config, shutdown).await
            });
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "chump failed");
                    eprintln!("chump: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Client(command) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("chump: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            runtime.block_on(chump::cli::run(command))
        }
    }
}
