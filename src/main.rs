//! The `lookout` binary: all logic lives in the library; errors print as one line.

fn main() {
    if let Err(error) = lookout::cli::main() {
        if error.is::<lookout::cli::InputEndedEarly>() {
            // Not a failure of lookout: the outputs are complete up to the cut.
            eprintln!("{error}");
            std::process::exit(lookout::cli::EXIT_INPUT_ENDED_EARLY);
        }
        // The whole context chain on one line, without a backtrace or a repeated cause.
        eprintln!("error: {}", lookout::cli::one_line(&error));
        std::process::exit(1);
    }
}
