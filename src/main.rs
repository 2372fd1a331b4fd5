//! `petal`: without a subcommand it opens the window (on `--model DIR` when
//! given); `sample`, `train`, `parity` and `bench` run headless (src/cli/).

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let result = match args.command {
        Some(command) => cli::run(&args.gpu, command),
        None => args.gpu.options().and_then(|gpu| petal::app::run(petal::app::Launch { model: args.model, gpu })),
    };
    if let Err(e) = result {
        eprintln!("petal: error: {e:#}");
        std::process::exit(1);
    }
}
