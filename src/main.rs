//! The `lookout` binary: all logic lives in the library; errors print as one line.

fn main() {
    if let Err(error) = lookout::cli::main() {
        if error.is::<lookout::cli::InputEndedEarly>() {
            // Not a failure of lookout: the outputs are complete up to the cut.
            eprintln!("{error}");
            std::process::exit(lookout::cli::EXIT_INPUT_ENDED_EARLY);
        }
        if let Some(incomplete) = error.downcast_ref::<lookout::cli::batch_cmd::BatchIncomplete>() {
            // A batch that ran: some drives failed (each recorded) or it was interrupted.
            eprintln!("{incomplete}");
            std::process::exit(incomplete.code);
        }
        // The whole context chain on one line, without a backtrace or a repeated cause.
        eprintln!("error: {}", lookout::cli::one_line(&error));
        std::process::exit(1);
    }
}
