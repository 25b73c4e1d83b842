//! The `vertex-proxy` binary: parses the command line and runs the library.

use std::process::ExitCode;

use vertex_proxy::config::{Mode, ProcessEnv};

const USAGE: &str = "\
vertex-proxy: an OpenAI-compatible proxy in front of Vertex AI

Usage:
  vertex-proxy          serve, configured from the environment (see README.md)
  vertex-proxy demo     serve in front of a built-in stand-in for Vertex; no Google account needed
  vertex-proxy --help   show this help
  vertex-proxy --version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Mode::Vertex,
        ["demo"] => Mode::Demo,
        ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ["-V" | "--version"] => {
            println!("vertex-proxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("vertex-proxy: unknown arguments {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    vertex_proxy::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vertex-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vertex_proxy::app::run(&ProcessEnv, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vertex-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
