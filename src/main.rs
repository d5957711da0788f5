use clap::Parser;

fn main() {
    let cli = lakemeans::cli::Cli::parse();
    if let Err(e) = lakemeans::cli::run(cli) {
        eprintln!("lakemeans: error: {e}");
        std::process::exit(e.exit_code());
    }
}
