//! `ternctl`: parses the command line and hands it to the library.

use clap::Parser;

fn main() {
    let cli = tern_ctl::Cli::parse();
    std::process::exit(tern_ctl::run(cli));
}
