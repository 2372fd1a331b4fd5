//! `petal`: without a subcommand it opens the window (on `--model DIR` when
//! given); `sample`, `train`, `parity` and `bench` run headless (src/cli/).

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let result = match args.command {
        Some(command) => {
            // Headless commands present nothing, so they keep away from the
            // display server: Mesa's implicit device-selection Vulkan layer
            // otherwise connects to Wayland to rank GPUs, and prints
            // "error: XDG_RUNTIME_DIR is invalid or not set" where there is none.
            if std::env::var_os("NODEVICE_SELECT").is_none() {
                // SAFETY: no other thread exists yet.
                unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
            }
            // 512-bit lavapipe (16-lane convolutions) where the CPU runs it
            // faster, for headless work only: the window's graphics shaders
            // crashed LLVM at that width (see petal::gpu::prefer_wide_vectors).
            // SAFETY: no other thread exists yet, and no GPU instance.
            unsafe { petal::gpu::prefer_wide_vectors() };
            cli::run(&args.gpu, command)
        }
        None => args.gpu.options().and_then(|gpu| petal::app::run(petal::app::Launch { model: args.model, gpu })),
    };
    if let Err(e) = result {
        eprintln!("petal: error: {e:#}");
        std::process::exit(1);
    }
}
