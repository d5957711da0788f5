use clap::Parser;

fn main() {
    // SAFETY: nothing else runs yet; no thread can read the environment concurrently.
    unsafe { lakemeans::backend::gpu::quiet_probing() };
    let cli = lakemeans::cli::Cli::parse();
    if let Err(e) = lakemeans::cli::run(cli) {
        eprintln!("lakemeans: error: {e}");
        std::process::exit(e.exit_code());
    }
}
