//! The `lookout` binary: all logic lives in the library; errors print as one line.

fn main() {
    if let Err(error) = lookout::cli::main() {
        // `{:#}` prints the whole context chain on one line, without a backtrace.
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
