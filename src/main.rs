//! The `vertex-proxy` binary: parses the command line and runs the library.

use std::io::Read;
use std::process::ExitCode;

use vertex_proxy::cli::{self, Command, USAGE};
use vertex_proxy::config::ProcessEnv;

fn main() -> ExitCode {
    let code = run();
    // Log lines still queued (the last requests' lines, the shutdown lines) are written
    // before the process exits.
    vertex_proxy::log::flush();
    code
}

fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("vertex-proxy: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => print!("{USAGE}"),
        Command::Version => println!("vertex-proxy {}", env!("CARGO_PKG_VERSION")),
        Command::Keygen { id } => match cli::new_key() {
            Ok(key) => print!("{}", cli::keygen_text(&key, id.as_deref())),
            Err(e) => return fail(&format!("cannot read the OS random source: {e}")),
        },
        Command::HashKey => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                return fail(&format!("cannot read stdin: {e}"));
            }
            match cli::hash_key(&input) {
                Ok(hash) => println!("{hash}"),
                Err(e) => return fail(&e),
            }
        }
        Command::Check => {
            let checked = runtime().map(|rt| rt.block_on(vertex_proxy::app::check(&ProcessEnv)));
            // What startup logged comes before the verdict.
            vertex_proxy::log::flush();
            match checked {
                Ok(Ok(summary)) => println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                ),
                Ok(Err(errors)) => return fail(&errors.to_string()),
                Err(e) => return fail(&e),
            }
        }
        Command::Serve(mode) => {
            let served = runtime().map(|rt| rt.block_on(vertex_proxy::app::run(&ProcessEnv, mode)));
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return fail(&e.to_string()),
                Err(e) => return fail(&e),
            }
        }
    }
    ExitCode::SUCCESS
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // Each stream holds two sockets (client and Vertex); a soft limit of 1024 descriptors would
    // refuse connections near Cloud Run's 1000 concurrent requests. Raise it to the hard limit,
    // as Go programs do by default; failing that, carry on with what there is.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    vertex_proxy::install_crypto_provider();
    // Current-thread: the server starts one more such runtime per extra core (server.rs).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn fail(message: &str) -> ExitCode {
    vertex_proxy::log::flush();
    eprintln!("vertex-proxy: {}", message.trim_end());
    ExitCode::FAILURE
}
