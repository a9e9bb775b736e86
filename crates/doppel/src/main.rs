//! The `doppel` command: `doppel serve` runs the engine; every other
//! subcommand is a client of the engine's HTTP API.

mod cli;
mod serve;
mod transport;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "doppel",
    version,
    about = "Doppel: thin, instant copies of any dataset, provisioned anywhere."
)]
#[command(
    after_help = "Examples:\n  doppel serve --data-dir /var/lib/doppel\n  doppel plugin install artifact.json\n  doppel plugin list -o json"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: metadata store, storage pool, plugin workers and the HTTP API.
    Serve(serve::ServeArgs),
    /// Print the OpenAPI document of the HTTP API (what `docs/openapi.json` holds).
    #[command(hide = true)]
    Openapi,
    /// Serve one remote mount for the engine (started by it, never by hand).
    #[command(hide = true)]
    MountKeeper { socket: std::path::PathBuf },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Serve(a) => serve::run(a),
        Command::Openapi => {
            print!("{}", doppel_api::openapi_json());
            std::process::ExitCode::SUCCESS
        }
        Command::MountKeeper { socket } => doppel_engine::keeper::main(socket),
        Command::Client(c) => cli::run(c),
    }
}
