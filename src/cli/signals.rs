//! Ctrl-C and SIGTERM: the first asks the run to stop with every output complete, the second
//! exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The Ctrl-C / SIGTERM flag (installed once per process); a second Ctrl-C exits at once.
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if handler_flag.swap(true, Ordering::SeqCst) {
                eprintln!("interrupted again: exiting without finishing");
                std::process::exit(130);
            }
            eprintln!("stopping: finishing outputs (Ctrl-C again to exit at once)");
        });
        if let Err(e) = installed {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
        flag
    })
    .clone()
}
