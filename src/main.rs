//! The `vigil` binary: the demo app on the settings given by flags (see `vigil --help`).

mod demo;

use vigil::{Server, Settings};

fn main() {
    let settings = Settings::from_env_args_or_exit();
    // `RUST_LOG` picks the levels (default `info`, may's own logs at `warn`); see vigil::logging.
    if let Err(e) = vigil::logging::init(settings.log_format, settings.access_log) {
        eprintln!("vigil: could not install the logger: {e}");
    }
    let app = demo::app(settings.timeout);
    let result = Server::serve(settings, app);
    vigil::logging::flush();
    if let Err(e) = result {
        eprintln!("vigil: {e}");
        std::process::exit(1);
    }
}
