//! The `lookout` binary: all logic lives in the library; errors print as one line.

fn main() {
    if let Err(error) = lookout::cli::main() {
        if error.is::<lookout::cli::InputEndedEarly>() {
            // Not a failure of lookout: the outputs are complete up to the cut.
            eprintln!("{error}");
            std::process::exit(lookout::cli::EXIT_INPUT_ENDED_EARLY);
        }
        // `{:#}` prints the whole context chain on one line, without a backtrace.
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
